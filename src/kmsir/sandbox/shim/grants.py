"""Grants as AWS lists them: ListGrants paged with ``Limit``/``Marker`` (1-100, default 50),
each grant with its ``CreationDate`` (moto lists every grant at once, without one)."""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from kmsir.sandbox.shim.common import error, find_key


def create_grant(original: Callable[..., Any]) -> Callable[..., Any]:
    """Remember when each grant was made: ListGrants reports ``CreationDate`` in AWS."""

    @functools.wraps(original)
    def wrapper(self: Any, key_id: str, *args: Any, **kwargs: Any) -> Any:
        grant_id, token = original(self, key_id, *args, **kwargs)
        key = find_key(self, key_id, aliases=True)
        key.grants[grant_id].kmsir_created = datetime.now(timezone.utc).timestamp()
        return grant_id, token

    return wrapper


def list_grants(original: Callable[..., str]) -> Callable[..., str]:
    """ListGrants: one page of ``Limit`` grants from ``Marker``, with their ``CreationDate``."""

    @functools.wraps(original)
    def wrapper(self: Any) -> str:
        limit = self._get_param("Limit")
        if limit is None:
            limit = 50
        if not isinstance(limit, int) or not 1 <= limit <= 100:
            raise error("ValidationException", "Limit must be between 1 and 100.")
        marker = self._get_param("Marker")
        try:
            offset = int(base64.urlsafe_b64decode(marker.encode()).decode()) if marker else 0
            if offset < 0:
                raise ValueError(offset)
        except (ValueError, UnicodeDecodeError):
            raise error(
                "InvalidMarkerException",
                "The request was rejected because the "
                "marker that specifies where pagination should next begin is not "
                "valid.",
            ) from None
        body = json.loads(original(self))
        grants = body.get("Grants", [])
        key = find_key(self.kms_backend, self._get_param("KeyId"), aliases=True)
        for grant in grants:
            created = getattr(key.grants.get(grant.get("GrantId")), "kmsir_created", None)
            if created is not None:
                grant["CreationDate"] = created
        page = grants[offset : offset + limit]
        truncated = offset + limit < len(grants)
        result: dict[str, Any] = {"Grants": page, "Truncated": truncated}
        if truncated:
            result["NextMarker"] = base64.urlsafe_b64encode(str(offset + limit).encode()).decode()
        return json.dumps(result)

    return wrapper

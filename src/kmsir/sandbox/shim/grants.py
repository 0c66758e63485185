"""Grants as AWS keeps them: who may make, list, retire and revoke them, and their ids.

moto makes a grant on a key in any state, with an 8-character id; lists every grant at once,
without ``CreationDate``; lets any caller retire any grant, and answers nothing at all for a
grant id it does not know. Following the API reference of CreateGrant, ListGrants, RetireGrant
and RevokeGrant:

- CreateGrant needs a key that is usable, or Unavailable (the key-state table); the grant id
  is 64 hex characters, derived from moto's seeded draws (a scenario keeps its ids, and the
  ids of everything made after its grants);
- ListGrants pages with ``Limit``/``Marker`` (1-100, default 50) and reports ``CreationDate``;
- RetireGrant (by token, or by key and grant id) is allowed to the grant's retiring
  principal, to its grantee when the grant allows ``RetireGrant``, and to the account the
  grant was made in (whose principals the account may delegate it to with IAM, which the
  sandbox does not evaluate); anyone else gets ``AccessDeniedException``;
- RetireGrant/RevokeGrant of a grant the key does not have: ``NotFoundException``; of a token
  no grant has: ``InvalidGrantTokenException``.

``create_grant``, ``revoke_grant`` wrap moto's ``KmsBackend``; ``list_grants`` and
``retire_grant`` its ``KmsResponse`` (where the caller and the request's parameters are).
``journaled_params`` lets a resumed run of an older release name its grants by their old ids.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from kmsir.sandbox.shim.common import error, find_key
from kmsir.sandbox.shim.key_state import require_grantable


def grant_id(moto_id: str, token: str, key_arn: str) -> str:
    """A grant id as AWS writes it (64 hex characters), from what moto drew for the grant:
    deterministic under the sandbox's seeded random, and drawing nothing more from it."""
    return hashlib.sha256(f"{key_arn}#{moto_id}#{token}".encode()).hexdigest()


def create_grant(original: Callable[..., Any]) -> Callable[..., Any]:
    """CreateGrant: only on a key that allows it; a 64-hex id; remember when it was made
    (ListGrants reports ``CreationDate`` in AWS)."""

    @functools.wraps(original)
    def wrapper(self: Any, key_id: str, *args: Any, **kwargs: Any) -> Any:
        key = find_key(self, key_id, aliases=False)
        require_grantable(key)
        moto_id, token = original(self, key_id, *args, **kwargs)
        grant = key.grants.pop(moto_id)
        grant.id = grant_id(moto_id, token, key.arn)
        grant.kmsir_moto_id = moto_id  # the id journals of runs before 64-hex ids hold
        grant.kmsir_created = datetime.now(timezone.utc).timestamp()
        key.grants[grant.id] = grant
        return grant.id, token

    return wrapper


def journaled_params(
    operation: str, params: dict[str, Any], account: str, region: str
) -> dict[str, Any]:
    """The parameters of a call a journal holds, as they name the re-seeded world: a grant id
    from before grants had AWS's 64-hex ids (moto's 8-character draw, which the re-seeded
    world draws again) becomes the id that grant has now, so a resumed old run revokes or
    retires what it did before. Anything else is returned as it is."""
    grant_ref = params.get("GrantId")
    if operation not in ("RevokeGrant", "RetireGrant") or not isinstance(grant_ref, str):
        return params
    from moto.kms.models import kms_backends

    try:
        key = find_key(kms_backends[account][region], str(params.get("KeyId")), aliases=False)
    except Exception:  # not this world's key: the call is replayed as it was
        return params
    for grant in key.grants.values():
        if getattr(grant, "kmsir_moto_id", None) == grant_ref:
            return {**params, "GrantId": grant.id}
    return params


def _grant_of(key: Any, grant_id: Any) -> Any:
    grant = key.grants.get(grant_id) if isinstance(grant_id, str) else None
    if grant is None:
        raise error("NotFoundException", f"Grant ID {grant_id} not found for key {key.arn}.")
    return grant


def revoke_grant(original: Callable[..., Any]) -> Callable[..., Any]:
    """RevokeGrant: the key by id or ARN; a grant it does not have is ``NotFoundException``."""

    @functools.wraps(original)
    def wrapper(self: Any, key_id: str, grant_id: str) -> Any:
        key = find_key(self, key_id, aliases=False)
        _grant_of(key, grant_id)
        return original(self, key.id, grant_id)

    return wrapper


def _covers(principal: Any, caller: str) -> bool:
    """Whether a grant's principal names the caller (or the caller's account, as its root)."""
    if not isinstance(principal, str) or not principal:
        return False
    account = caller.split(":")[4] if caller.count(":") >= 5 else ""
    return principal == caller or principal == f"arn:aws:iam::{account}:root"


def may_retire(caller_arn: str, grant: Any, key: Any) -> bool:
    """RetireGrant's rule: the retiring principal, the grantee if the grant allows
    RetireGrant, and the account the grant was made in."""
    from kmsir.keypolicy import principal_arn

    caller = principal_arn(caller_arn)
    if _covers(grant.retiring_principal, caller):
        return True
    if "RetireGrant" in (grant.operations or []) and _covers(grant.grantee_principal, caller):
        return True
    return caller.split(":")[4:5] == [key.account_id]


def _key_backend(backend: Any, key_ref: str) -> Any:
    """The backend holding the key ``key_ref`` names: RetireGrant is cross-account, and a
    key ARN names its account and Region (moto would look in the caller's only)."""
    parts = key_ref.split(":")
    if not key_ref.startswith("arn:") or len(parts) < 6:
        return backend
    from moto.kms.models import kms_backends

    try:
        return kms_backends[parts[4]][parts[3]]
    except KeyError:
        raise error("NotFoundException", f"Key '{key_ref}' does not exist") from None


def _by_token(backend: Any, token: str) -> tuple[Any, Any]:
    """The key and grant of a grant token: in the caller's account and Region first, then in
    any other the sandbox holds (a grantee may be in another account)."""
    from moto.kms.models import kms_backends

    backends = [backend, *(b for _, _, b in kms_backends.iter_backends() if b is not backend)]
    for each in backends:
        for key in each.keys.values():
            for grant in key.grants.values():
                if grant.token == token:
                    return key, grant
    raise error("InvalidGrantTokenException", "The grant token is not valid.")


def retire_grant(original: Callable[..., str]) -> Callable[..., str]:
    """RetireGrant: the grant must exist (in any account: the key ARN or token says where),
    and the caller be one who may retire it."""

    @functools.wraps(original)
    def wrapper(self: Any) -> str:
        from kmsir.sandbox.shim.policy import _caller_arn  # who moto's STS says calls

        token = self._get_param("GrantToken")
        if token:
            key, grant = _by_token(self.kms_backend, token)
        else:
            key_id, grant_id = self._get_param("KeyId"), self._get_param("GrantId")
            if not key_id or not grant_id:
                raise error(
                    "ValidationException",
                    "RetireGrant needs a GrantToken, or both a KeyId and a GrantId.",
                )
            key = find_key(_key_backend(self.kms_backend, str(key_id)), key_id, aliases=False)
            grant = _grant_of(key, grant_id)
        caller = _caller_arn(self)
        if not may_retire(caller, grant, key):
            raise error(
                "AccessDeniedException",
                f"User: {caller} is not authorized to perform: kms:RetireGrant on grant "
                f"{grant.id} of {key.arn}: only its retiring principal, its grantee (when the "
                "grant allows RetireGrant) and the account it was made in may retire it",
            )
        del key.grants[grant.id]
        return "{}"

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

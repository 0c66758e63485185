"""Key rotation as AWS has it: no change on a key that cannot be used, and a rotation period.

moto changes rotation on a disabled key or one pending deletion, and ignores
``RotationPeriodInDays``; AWS refuses the first (and reports rotation off for a key pending
deletion), and keeps the period (90-2560 days, default 365), which GetKeyRotationStatus reports
with ``NextRotationDate``. A key with imported material or in a custom key store has no
rotation to change or report (``UnsupportedOperationException``). ``rotation_change`` wraps
moto's ``KmsBackend``, the others its ``KmsResponse`` (where the request's parameters are).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from kmsir.sandbox.shim.common import PENDING_DELETION, error, find_key, require_usable
from kmsir.sandbox.shim.key_state import require_rotatable

DEFAULT_ROTATION_DAYS = 365


def rotation_change(original: Callable[..., Any]) -> Callable[..., Any]:
    """EnableKeyRotation/DisableKeyRotation/RotateKeyOnDemand (moto's ``KmsBackend``): never
    on a key with imported material or in a custom key store (``UnsupportedOperationException``,
    whatever its state); otherwise not while the key is disabled or pending deletion."""

    @functools.wraps(original)
    def wrapper(self: Any, key_id: str, *args: Any, **kwargs: Any) -> Any:
        key = find_key(self, key_id, aliases=False)
        require_rotatable(key)  # imported material, custom key store: never
        require_usable(key)
        return original(self, key_id, *args, **kwargs)

    return wrapper


def enable_key_rotation(original: Callable[..., str]) -> Callable[..., str]:
    """EnableKeyRotation: keep ``RotationPeriodInDays`` (90-2560, default 365) and when."""

    @functools.wraps(original)
    def wrapper(self: Any) -> str:
        period = self._get_param("RotationPeriodInDays")
        if period is None:
            period = DEFAULT_ROTATION_DAYS
        if not isinstance(period, int) or not 90 <= period <= 2560:
            raise error(
                "ValidationException",
                f"1 validation error detected: Value '{period}' at 'rotationPeriodInDays' "
                "failed to satisfy constraint: Member must have value greater than or equal "
                "to 90 and less than or equal to 2560",
            )
        result = original(self)
        key = find_key(self.kms_backend, self._get_param("KeyId"), aliases=False)
        key.kmsir_rotation_period = period
        key.kmsir_rotation_enabled_at = datetime.now(timezone.utc)
        return result

    return wrapper


def get_key_rotation_status(original: Callable[..., str]) -> Callable[..., str]:
    """GetKeyRotationStatus: off while pending deletion; the period and
    ``NextRotationDate`` when on."""

    @functools.wraps(original)
    def wrapper(self: Any) -> str:
        key = find_key(self.kms_backend, self._get_param("KeyId"), aliases=False)
        require_rotatable(key)
        body = json.loads(original(self))
        body["KeyId"] = key.id
        if key.key_state in PENDING_DELETION:
            body["KeyRotationEnabled"] = False  # as AWS reports it for a key pending deletion
        if body.get("KeyRotationEnabled"):
            period = getattr(key, "kmsir_rotation_period", DEFAULT_ROTATION_DAYS)
            since = getattr(key, "kmsir_rotation_enabled_at", None) or datetime.now(timezone.utc)
            body["RotationPeriodInDays"] = period
            body["NextRotationDate"] = (since + timedelta(days=period)).timestamp()
        return json.dumps(body)

    return wrapper

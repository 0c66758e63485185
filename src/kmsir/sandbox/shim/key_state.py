"""AWS's key-state rules, which moto does not keep.

Following the key-state table of the KMS developer guide ("Key states of AWS KMS keys"):
cryptographic operations are refused on a Disabled key (``DisabledException``) and on one
pending deletion (``KMSInvalidStateException``); EnableKey/DisableKey/ScheduleKeyDeletion are
refused on a key pending deletion and CancelKeyDeletion on one that is not; deletion windows
outside 7-30 days are rejected (``ValidationException``) instead of ignored; key ARNs are
accepted where moto crashes on them, and unknown keys answered ``NotFoundException``. A
multi-Region primary that still has replicas goes to ``PendingReplicaDeletion``, and the keys
behind ``alias/aws/*`` are AWS-managed (``KeyManager: AWS``).

Beyond cryptography, the table's other rows: CreateGrant needs a usable key (or an
Unavailable one); CreateAlias, UpdateAlias (to a key), TagResource, UntagResource and
UpdateKeyDescription are refused on a key pending deletion; EnableKey/DisableKey on a key
pending import, and rotation on a key whose material is imported or in a custom key store
(``UnsupportedOperationException``). EnableKey/DisableKey of an Unavailable key succeed and
take effect when its store is connected again.

Each function here wraps methods of moto's ``KmsBackend``; ``require_grantable`` and
``require_rotatable`` are the gates other parts of the shim call.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from kmsir.sandbox.shim.common import (
    PENDING_DELETION,
    error,
    find_key,
    not_pending,
    require_usable,
    store_state_change,
)
from kmsir.sandbox.shim.multi_region import live_replicas
from kmsir.sandbox.shim.policy import current_response, deny_check


def crypto_by_key_id(original: Callable[..., Any]) -> Callable[..., Any]:
    """Encrypt/GenerateDataKey/Sign/Verify/GetPublicKey/GenerateMac/VerifyMac."""

    signature = inspect.signature(original)
    if "key_id" not in signature.parameters:
        raise RuntimeError(f"moto's KmsBackend.{original.__name__} has no key_id parameter")

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        key_id = signature.bind(self, *args, **kwargs).arguments["key_id"]
        require_usable(find_key(self, str(key_id), aliases=True))
        return original(self, *args, **kwargs)

    return wrapper


def decrypt(original: Callable[..., Any]) -> Callable[..., Any]:
    """Decrypt (and ReEncrypt's decryption): the key the ciphertext names must be usable, and
    its policy must not deny the caller."""

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        plaintext, arn = original(self, *args, **kwargs)
        require_usable(find_key(self, arn, aliases=False))
        response = current_response()
        if response is not None:  # the ciphertext named the key: now its policy can be checked
            action = "kms:Decrypt" if response._get_action() == "Decrypt" else "kms:ReEncryptFrom"
            deny_check(response, arn, action)
        return plaintext, arn

    return wrapper


def _not_pending_anything(key: Any, operation: str) -> None:
    """Refuse ``operation`` on a key pending deletion or pending import."""
    not_pending(key, operation)
    if key.key_state == "PendingImport":
        raise error("KMSInvalidStateException", f"{key.arn} is pending import.")


def disable_key(original: Callable[..., Any]) -> Callable[..., Any]:
    """DisableKey: by id or ARN, not on a key pending deletion or import; of an Unavailable
    key, the state it takes when its store is connected again."""

    @functools.wraps(original)
    def wrapper(self: Any, key_id: str) -> Any:
        key = find_key(self, key_id, aliases=False)
        _not_pending_anything(key, "DisableKey")
        if store_state_change(key, "Disabled"):
            return None
        return original(self, key.id)

    return wrapper


def enable_key(original: Callable[..., Any]) -> Callable[..., Any]:
    """EnableKey: by id or ARN, not on a key pending deletion or import; of an Unavailable
    key, the state it takes when its store is connected again."""

    @functools.wraps(original)
    def wrapper(self: Any, key_id: str) -> Any:
        key = find_key(self, key_id, aliases=False)
        _not_pending_anything(key, "EnableKey")
        if store_state_change(key, "Enabled"):
            return None
        return original(self, key.id)

    return wrapper


def schedule_key_deletion(original: Callable[..., Any]) -> Callable[..., Any]:
    """ScheduleKeyDeletion: a 7-30 day window, not twice; a primary with replicas waits
    for them (``PendingReplicaDeletion``)."""

    @functools.wraps(original)
    def wrapper(self: Any, key_id: str, pending_window_in_days: int) -> Any:
        if not isinstance(pending_window_in_days, int) or not 7 <= pending_window_in_days <= 30:
            raise error(
                "ValidationException",
                f"1 validation error detected: Value '{pending_window_in_days}' at "
                "'pendingWindowInDays' failed to satisfy constraint: Member must have value "
                "greater than or equal to 7 and less than or equal to 30",
            )
        key = find_key(self, key_id, aliases=False)
        not_pending(key, "ScheduleKeyDeletion")
        result = original(self, key.id, pending_window_in_days)
        if live_replicas(key):
            key.key_state = "PendingReplicaDeletion"
        return result

    return wrapper


def cancel_key_deletion(original: Callable[..., Any]) -> Callable[..., Any]:
    """CancelKeyDeletion: only of a key pending deletion."""

    @functools.wraps(original)
    def wrapper(self: Any, key_id: str) -> Any:
        key = find_key(self, key_id, aliases=False)
        if key.key_state not in PENDING_DELETION:
            raise error("KMSInvalidStateException", f"{key.arn} is not pending deletion.")
        return original(self, key.id)

    return wrapper


def generate_default_keys(original: Callable[..., Any]) -> Callable[..., Any]:
    """Keys behind ``alias/aws/*`` are AWS-managed (moto says CUSTOMER)."""

    @functools.wraps(original)
    def wrapper(self: Any, alias_name: str) -> Any:
        key_id = original(self, alias_name)
        if key_id is not None:
            self.keys[key_id].key_manager = "AWS"
        return key_id

    return wrapper


def require_grantable(key: Any) -> None:
    """CreateGrant: the key must be usable, or Unavailable (grants outlive a disconnection)."""
    if key.key_state != "Unavailable":
        require_usable(key)


#: Origins whose keys have no automatic rotation: imported material, custom key stores.
_NO_ROTATION = {
    "EXTERNAL": "origin is EXTERNAL which is not valid for this operation.",
    "AWS_CLOUDHSM": "is in a custom key store: rotation is not supported.",
    "EXTERNAL_KEY_STORE": "is in a custom key store: rotation is not supported.",
}


def require_rotatable(key: Any) -> None:
    """Rotation operations (and GetKeyRotationStatus) on a key whose material KMS did not make
    (imported, or in a custom key store): ``UnsupportedOperationException``, whatever its
    state."""
    origin = getattr(key, "origin", "AWS_KMS")
    if origin != "AWS_KMS":
        why = _NO_ROTATION.get(origin, f"origin is {origin} which is not valid for this operation.")
        raise error("UnsupportedOperationException", f"{key.arn} {why}")


def while_not_pending(operation: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A wrapper of a moto ``KmsBackend`` method whose first argument names a key (id or ARN):
    ``operation`` is refused while that key is pending deletion (CreateAlias, UpdateAlias to
    the key, TagResource, UntagResource, UpdateKeyDescription)."""

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(original)
        first = list(signature.parameters)[1]  # after self: the key (moto's name varies)

        @functools.wraps(original)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            key_ref = signature.bind(self, *args, **kwargs).arguments[first]
            not_pending(find_key(self, str(key_ref), aliases=False), operation)
            return original(self, *args, **kwargs)

        return wrapper

    return wrap

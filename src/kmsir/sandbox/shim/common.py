"""What every part of the KMS fidelity shim needs: moto's error, the key a request names, and
AWS's rules for which key states allow an operation."""

from __future__ import annotations

from typing import Any

#: States in which a key can be used for cryptographic operations.
USABLE = frozenset({"Enabled"})
#: States of a key waiting to be deleted (a multi-Region primary waits for its replicas).
PENDING_DELETION = ("PendingDeletion", "PendingReplicaDeletion")


def error(code: str, message: str) -> Exception:
    """An AWS error as moto answers it (``code`` is the error code a client sees)."""
    from moto.core.exceptions import JsonRESTError

    return JsonRESTError(code, message)


def validation(message: str) -> Exception:
    """A ``ValidationException``: the request itself is not what the API takes."""
    return error("ValidationException", message)


def find_key(backend: Any, key_id: str, *, aliases: bool) -> Any:
    """The moto key for an id or ARN (and alias, when the operation accepts one)."""
    try:
        resolved = backend.any_id_to_key_id(key_id) if aliases else backend.get_key_id(key_id)
        return backend.keys[resolved]
    except (KeyError, TypeError, AttributeError):
        raise error("NotFoundException", f"Key '{key_id}' does not exist") from None


def require_usable(key: Any) -> None:
    """Refuse a key that cannot be used now: disabled, pending deletion or import."""
    state = key.key_state
    if state == "Disabled":
        raise error("DisabledException", f"{key.arn} is disabled.")
    if state not in USABLE:
        raise error("KMSInvalidStateException", f"{key.arn} is {_state_words(state)}.")


def set_state(key: Any, state: str) -> None:
    """Give ``key`` the KeyState AWS would report, keeping moto's ``enabled`` flag with it
    (DescribeKey's ``Enabled`` is true only in the Enabled state)."""
    key.key_state = state
    key.enabled = state == "Enabled"


def store_state_change(key: Any, desired: str) -> bool:
    """EnableKey/DisableKey (``desired`` is ``Enabled``/``Disabled``) of a key in a
    disconnected custom key store: AWS records the change, and the key takes that state when
    the store is connected again. True when the key was Unavailable and the change is recorded
    (the caller must then not change the key itself)."""
    if key.key_state != "Unavailable":
        return False
    key.kmsir_connected_state = desired
    return True


def not_pending(key: Any, operation: str) -> None:
    """Refuse ``operation`` on a key pending deletion."""
    if key.key_state in PENDING_DELETION:
        raise error(
            "KMSInvalidStateException",
            f"{key.arn} is {_state_words(key.key_state)}; {operation} is not allowed",
        )


def _state_words(state: str) -> str:
    return {
        "PendingDeletion": "pending deletion",
        "PendingReplicaDeletion": "pending replica deletion",
        "PendingImport": "pending import",
        "Unavailable": "unavailable",
    }.get(state, state)

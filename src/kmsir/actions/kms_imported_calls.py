"""The calls of ``kms.import-key-material`` and ``kms.delete-imported-material`` as a preview
shows them, ``valid_to`` read as a time, and the material wrapped before it is sent.

Kept apart from the actions (``kms_imported``) so each module holds one thing: here what is
sent and how it is written down, there when it is sent and what the journal records.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Final

from kmsir.errors import ActionError
from kmsir.evidence.calls import Call
from kmsir.keymaterial import WRAPPING_ALGORITHM, wrap
from kmsir.playbook.values import duration_seconds, parse_time

#: The wrapping key kmsir asks GetParametersForImport for (the largest AWS offers).
WRAPPING_KEY_SPEC: Final = "RSA_4096"


def valid_to(text: str, now: datetime) -> datetime:
    """When material imported ``now`` expires: an ISO time, or a duration after ``now``."""
    return parse_time(text, now, ahead=True)


def delete_call(key: str) -> Call:
    """The DeleteImportedKeyMaterial call on ``key``."""
    return Call(service="kms", operation="DeleteImportedKeyMaterial", params={"KeyId": key})


def expiry_params(text: str | None, now: datetime) -> dict[str, Any]:
    """ImportKeyMaterial's expiry parameters for ``valid_to`` (``None``: does not expire)."""
    if text is None:
        return {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}
    return {"ExpirationModel": "KEY_MATERIAL_EXPIRES", "ValidTo": valid_to(text, now)}


def import_calls(key: str, valid_to_text: str | None, digest: str | None) -> list[Call]:
    """The two calls of an import, as shown before it (the token and wrapped material only
    exist once ``GetParametersForImport`` answered)."""
    expiry: dict[str, Any] = {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}
    if valid_to_text is not None:
        expiry = {"ExpirationModel": "KEY_MATERIAL_EXPIRES", "ValidTo": _shown(valid_to_text)}
    return [
        Call(
            service="kms",
            operation="GetParametersForImport",
            params={
                "KeyId": key,
                "WrappingAlgorithm": WRAPPING_ALGORITHM,
                "WrappingKeySpec": WRAPPING_KEY_SPEC,
            },
        ),
        Call(
            service="kms",
            operation="ImportKeyMaterial",
            params={
                "KeyId": key,
                "ImportToken": "<from GetParametersForImport>",
                "EncryptedKeyMaterial": f"<material {f'sha256 {digest}' if digest else 'file'}, "
                f"wrapped {WRAPPING_ALGORITHM}>",
                **expiry,
            },
        ),
    ]


def _shown(text: str) -> str:
    """``valid_to`` as a preview shows it: the time given, or the duration after the call (the
    same text however often the step is previewed, so an approval still covers it)."""
    try:
        duration_seconds(text)
    except ValueError:
        return valid_to(text, datetime.now(timezone.utc)).isoformat()
    return f"<{text.strip()} after the call>"


def wrapped(material: bytes, public_key_der: bytes) -> bytes:
    """The material wrapped under AWS's wrapping key (``keymaterial.wrap``)."""
    try:
        return wrap(material, public_key_der)
    except ValueError as exc:
        raise ActionError(str(exc)) from None

"""Imported key material: delete it (every use of the key stops at once), import it again.

A key created with ``Origin: EXTERNAL`` holds key material its owner made and imported. Deleting
that material is the fastest containment KMS offers -- no waiting period, every cryptographic
use fails at once -- and the only way back is to import the *same* material again: AWS refuses
any other (``IncorrectKeyMaterialException``), and keeps no copy the owner could ask for. So the
delete's preview and its rollback say it is "reversible only with the original material", and
the import reads the responder's copy from a file: its path, size and sha256 are journaled, the
material itself never enters the bundle or the journal (it is wrapped under the public key
``GetParametersForImport`` hands out, and only the wrapped bytes are sent).

https://docs.aws.amazon.com/kms/latest/developerguide/importing-keys.html
https://docs.aws.amazon.com/kms/latest/APIReference/API_ImportKeyMaterial.html
https://docs.aws.amazon.com/kms/latest/APIReference/API_DeleteImportedKeyMaterial.html
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

from pydantic import Field, field_validator

from kmsir.actions.base import (
    IRREVERSIBLE,
    Action,
    ActionContext,
    Done,
    Outcome,
    Preview,
    Undo,
)
from kmsir.actions.kms_imported_calls import (
    WRAPPING_KEY_SPEC,
    delete_call,
    expiry_params,
    import_calls,
    valid_to,
    wrapped,
)
from kmsir.actions.kms_lifecycle import PENDING, changed, settled, undo_key
from kmsir.actions.kmskeys import KeyInfo, KeyParams, describe, target, typed_confirmation
from kmsir.aws import aws_errors
from kmsir.errors import ActionError, AwsError, UsageError
from kmsir.evidence.calls import Call
from kmsir.keymaterial import MATERIAL_BYTES, MAX_VALID_DAYS, WRAPPING_ALGORITHM

__all__ = [
    "MATERIAL_BYTES",
    "PENDING_IMPORT",
    "WRAPPING_KEY_SPEC",
    "DeleteImportedMaterial",
    "ImportMaterial",
    "ImportParams",
    "valid_to",
]

#: The state of an EXTERNAL key without key material (never imported, deleted or expired).
PENDING_IMPORT = "PendingImport"
#: What an import into a key that has material says: nothing is compared, nothing is sent.
_HAS_MATERIAL = (
    "the file {file} was not checked against the key's material (KMS never shows it). "
    "This action imports into a key without material only; to change the expiry of the "
    "material the key has, AWS takes the same material again with ImportKeyMaterial: no "
    "need to delete it first"
)

_OUTPUTS = {
    "key_id": "str",
    "state": "str",
    "deletion_date": "str|null",
    "key_material_id": "str|null",
}


def _material_id(info: KeyInfo) -> str | None:
    value = info.metadata.get("CurrentKeyMaterialId")
    return str(value) if value else None


def _expiry(info: KeyInfo) -> str:
    model = info.metadata.get("ExpirationModel")
    if model == "KEY_MATERIAL_DOES_NOT_EXPIRE":
        return "does not expire"
    return f"valid to {info.valid_to}" if info.valid_to else "no expiry recorded"


def _external(info: KeyInfo, action: str, why: str) -> None:
    """Refuse a key whose material KMS made (or that lives in a custom key store)."""
    if info.origin != "EXTERNAL":
        raise ActionError(
            f"{action} refused on {info.key_id}: its origin is {info.origin}, not EXTERNAL "
            f"({why}; AWS would answer UnsupportedOperationException)"
        )


class DeleteImportedMaterial(Action[KeyParams]):
    """Delete a key's imported key material: every cryptographic use fails at once.

    Reversible only with the original material: ``kms.import-key-material`` takes back
    nothing else, and AWS keeps no copy. The key must have ``Origin: EXTERNAL``.

    ```yaml
    - id: delete-material
      action: kms.delete-imported-material
      with: {key: "{{ steps.snapshot.key_id }}"}
    ```
    Outputs: ``key_id``, ``state`` (``PendingImport`` after, unless the key is pending
    deletion), ``deletion_date``, ``key_material_id`` (the material deleted).
    """

    name = "kms.delete-imported-material"
    high_impact = True  # every use of the key stops at once
    params = KeyParams
    outputs = MappingProxyType(_OUTPUTS)
    permissions = ("kms:DescribeKey", "kms:ListAliases", "kms:DeleteImportedKeyMaterial")
    mutating = True
    inverse = "kms.import-key-material"

    def api_calls(self, params: KeyParams) -> list[Call]:
        return [delete_call(params.key)]

    def _target(self, ctx: ActionContext, params: KeyParams) -> KeyInfo:
        info = target(ctx, params.key, self.name)
        _external(
            info,
            self.name,
            "only imported key material can be deleted; disable the "
            "key or schedule its deletion instead",
        )
        return info

    def preview(self, ctx: ActionContext, params: KeyParams) -> Preview:
        info = self._target(ctx, params)
        material = _material_id(info)
        calls = () if info.state == PENDING_IMPORT else (delete_call(info.key_id),)
        return Preview(
            calls=calls,
            target=f"{info.key_id} ({info.arn})",
            state=f"key state {info.state}, origin EXTERNAL, key material "
            + (f"{material} " if material else "")
            + _expiry(info),
            typed=typed_confirmation(ctx, info) if calls else (),
            notes=(
                "every cryptographic use of the key fails at once: no waiting period",
                "reversible only with the original material: kms.import-key-material takes "
                "back the same 32 bytes and nothing else (AWS keeps no copy); without the "
                "responder's copy, everything encrypted under this key is lost for good",
            ),
        )

    def run(self, ctx: ActionContext, params: KeyParams) -> Outcome:
        info = self._target(ctx, params)
        material = _material_id(info)
        if info.state == PENDING_IMPORT:
            outcome = settled(
                ctx, info, f"{info.key_id} has no key material ({PENDING_IMPORT}): nothing sent"
            )
            return _with(outcome, key_material_id=None)
        ctx.changing({**info.summary, "key_material_id": material})
        with aws_errors(f"DeleteImportedKeyMaterial on {info.key_id}"):
            response = ctx.clients.client("kms", info.region).delete_imported_key_material(
                KeyId=info.key_id
            )
        deleted = response.get("KeyMaterialId") or material
        outcome = changed(ctx, info, extra={"key_material_id": deleted})
        return dataclasses.replace(
            outcome,
            summary=f"{outcome.summary}; key material {deleted or '(id not reported)'} deleted: "
            "reversible only with the original material (kms.import-key-material)",
            before={**(outcome.before or {}), "key_material_id": material},
        )

    def undo(self, done: Done) -> Undo | None:
        """No undo ``rollback`` can run on its own: only the responder's copy of the material
        brings the key back. Said in the rollback plan, with how to re-import it."""
        key = undo_key(done)
        if key is None:
            return None
        material = done.outputs.get("key_material_id") or (done.before or {}).get("key_material_id")
        return Undo(
            IRREVERSIBLE,
            {"key": key},
            f"key {key}'s imported key material"
            + (f" ({material})" if material else "")
            + f" deleted by step {done.step_id} is reversible only with the original material: "
            "run kms.import-key-material with the key and your copy of the same material "
            "(AWS takes back nothing else)",
        )


class ImportParams(KeyParams):
    """The key, the file holding its 32-byte key material, and when the material expires.

    ``valid_to``: an ISO 8601 time or a duration from the import (``365d``), at most 365 days
    ahead; omitted: the material does not expire.
    """

    material: str = Field(min_length=1, max_length=4096)
    valid_to: str | None = None

    @field_validator("valid_to", mode="before")
    @classmethod
    def _valid_to(cls, value: object) -> object:
        if isinstance(value, datetime):  # YAML reads an unquoted ISO time as a timestamp
            value = (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).isoformat()
        if isinstance(value, str):
            valid_to(value, datetime.now(timezone.utc))
        return value


class ImportMaterial(Action[ImportParams]):
    """Import an EXTERNAL key's material again, from the responder's copy in a file.

    The inverse of ``kms.delete-imported-material``. The material must be the key's own:
    AWS refuses any other. Its path, size and sha256 are journaled, never the material.

    ```yaml
    - id: reimport
      action: kms.import-key-material
      with:
        key: "{{ steps.snapshot.key_id }}"
        material: escrow/payments-key.bin     # the 32 raw bytes
        valid_to: 364d                        # or an ISO time; omitted: does not expire
    ```
    Outputs: ``key_id``, ``state``, ``deletion_date``, ``key_material_id``,
    ``material_sha256`` (of the material imported; ``null`` when the key had material already
    and nothing was imported), ``valid_to`` (``null``: does not expire).
    Refused on a key pending deletion: cancel the deletion first.
    """

    name = "kms.import-key-material"
    params = ImportParams
    outputs = MappingProxyType({**_OUTPUTS, "material_sha256": "str|null", "valid_to": "str|null"})
    permissions = ("kms:DescribeKey", "kms:GetParametersForImport", "kms:ImportKeyMaterial")
    mutating = True
    inverse = "kms.delete-imported-material"

    def api_calls(self, params: ImportParams) -> list[Call]:
        return import_calls(params.key, params.valid_to, None)

    def _read(self, ctx: ActionContext, params: ImportParams, info: KeyInfo) -> bytes:
        """The material, from the responder's file (journaled: path, size, sha256). A file
        of another bundle that its journal does not vouch for stops the run (``UnvouchedFile``):
        altered evidence is never acted on."""
        try:
            data = ctx.artifacts.outside(params.material)
        except UsageError as exc:  # missing, unreadable, not a regular file, too large
            raise ActionError(f"{self.name}: key material {exc}") from None
        spec = info.key_spec
        if spec != "SYMMETRIC_DEFAULT":
            raise ActionError(
                f"{self.name} refused on {info.key_id}: kmsir imports symmetric encryption "
                f"key material only; this key is {spec}"
            )
        if len(data) != MATERIAL_BYTES:
            raise ActionError(
                f"{self.name}: {params.material} holds {len(data)} bytes; symmetric key "
                f"material is {MATERIAL_BYTES} raw bytes (256 bits), not text or base64"
            )
        return data

    def _target(self, ctx: ActionContext, params: ImportParams) -> KeyInfo:
        info = target(ctx, params.key, self.name)
        _external(
            info, self.name, "KMS made its key material; only EXTERNAL keys take imported material"
        )
        if info.state in PENDING:  # AWS answers KMSInvalidStateException
            raise ActionError(
                f"{self.name} refused on {info.key_id}: the key is {info.state} "
                f"(deletion on {info.deletion_date or 'hold for its replicas'}); cancel the "
                "deletion first (kms.cancel-deletion)"
            )
        if params.valid_to is not None:
            now = ctx.now()
            until = valid_to(params.valid_to, now)
            if not now < until <= now + timedelta(days=MAX_VALID_DAYS):
                raise ActionError(
                    f"{self.name}: valid_to {params.valid_to} is {until.isoformat()}; AWS "
                    f"takes a time in the future, at most {MAX_VALID_DAYS} days ahead"
                )
        return info

    def preview(self, ctx: ActionContext, params: ImportParams) -> Preview:
        info = self._target(ctx, params)
        digest = hashlib.sha256(self._read(ctx, params, info)).hexdigest()
        pending = info.state == PENDING_IMPORT
        return Preview(
            calls=tuple(import_calls(info.key_id, params.valid_to, digest)) if pending else (),
            target=f"{info.key_id} ({info.arn})",
            state=f"key state {info.state}, origin EXTERNAL"
            + ("" if pending else f", key material {_material_id(info) or ''} {_expiry(info)}"),
            notes=(
                f"material file {params.material}: sha256 {digest} (journaled; the material "
                "itself never is)",
                "AWS takes back only the key's original material (IncorrectKeyMaterialException "
                "otherwise)",
            )
            if pending
            else (_HAS_MATERIAL.format(file=f"{params.material} (sha256 {digest})"),),
        )

    def run(self, ctx: ActionContext, params: ImportParams) -> Outcome:
        info = self._target(ctx, params)
        material = self._read(ctx, params, info)
        digest = hashlib.sha256(material).hexdigest()
        if info.state != PENDING_IMPORT:
            outcome = settled(
                ctx,
                info,
                f"{info.key_id} already has key material ({info.state}, {_expiry(info)}): "
                "nothing sent; "
                + _HAS_MATERIAL.format(file=f"{params.material} (sha256 {digest})"),
            )
            # only the import an earlier attempt sent put this file's material in the key
            resumed = outcome.status != "already"
            return _with(
                outcome,
                key_material_id=_material_id(info),
                material_sha256=digest if resumed else None,
                valid_to=info.valid_to,
            )
        ctx.changing({**info.summary, "key_material_id": None})
        kms = ctx.clients.client("kms", info.region)
        with aws_errors(f"GetParametersForImport for {info.key_id}"):
            wrapping = kms.get_parameters_for_import(
                KeyId=info.key_id,
                WrappingAlgorithm=WRAPPING_ALGORITHM,
                WrappingKeySpec=WRAPPING_KEY_SPEC,
            )
        expiry = expiry_params(params.valid_to, ctx.now())
        try:
            with aws_errors(f"ImportKeyMaterial into {info.key_id}"):
                response = kms.import_key_material(
                    KeyId=info.key_id,
                    ImportToken=wrapping["ImportToken"],
                    EncryptedKeyMaterial=wrapped(material, wrapping["PublicKey"]),
                    **expiry,
                )
        except AwsError as exc:
            if exc.code == "IncorrectKeyMaterialException":
                raise ActionError(
                    f"{self.name}: AWS refused {params.material} (sha256 {digest}) for "
                    f"{info.key_id}: it is not the key's original material "
                    "(IncorrectKeyMaterialException); only the same material brings it back"
                ) from None
            raise
        after = describe(ctx, info.arn)
        imported = response.get("KeyMaterialId") or _material_id(after)
        outcome = changed(
            ctx,
            info,
            extra={
                "key_material_id": imported,
                "material_sha256": digest,
                "valid_to": after.valid_to,
            },
        )
        return dataclasses.replace(
            outcome,
            summary=f"{outcome.summary}; imported material sha256 {digest}"
            + (f" as {imported}" if imported else "")
            + f", {_expiry(after)}",
            after={**(outcome.after or {}), "key_material_id": imported},
        )

    def undo(self, done: Done) -> Undo | None:
        """Delete the material again: the key goes back to ``PendingImport``."""
        key = undo_key(done)
        if key is None:
            return None
        digest = done.outputs.get("material_sha256")
        return Undo(
            "kms.delete-imported-material",
            {"key": key},
            f"delete the key material step {done.step_id} imported into key {key}"
            + (f" (sha256 {digest})" if digest else "")
            + "; every use of the key stops again (PendingImport)",
        )


def _with(outcome: Outcome, **outputs: Any) -> Outcome:
    """``outcome`` with more outputs (every path gives the same ones)."""
    return dataclasses.replace(outcome, outputs={**outcome.outputs, **outputs})

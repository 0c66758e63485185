"""Keys with imported key material, as AWS has them (moto creates an EXTERNAL key Enabled, with
material of its own, and has none of the import operations).

Following the API reference of CreateKey, GetParametersForImport, ImportKeyMaterial and
DeleteImportedKeyMaterial, and the key-state table of the KMS developer guide: a key created
with ``Origin=EXTERNAL`` is ``PendingImport`` until material is imported; GetParametersForImport
hands out a real RSA wrapping key (DER SubjectPublicKeyInfo) and an import token, both valid
24 hours; ImportKeyMaterial unwraps the 32 bytes with the private key, and they become what the
key encrypts with (so ciphertext made before the material was deleted decrypts once the same
material is back, and different material is refused: ``IncorrectKeyMaterialException``);
DeleteImportedKeyMaterial (and the passing of ``ValidTo``, checked on every KMS request) puts
the key back to ``PendingImport`` (a key pending deletion keeps its state).

The handlers here become methods of moto's ``KmsResponse`` (``operations``); what they keep
lives on moto's per-account/Region ``KmsBackend`` and its keys, so moto's reset clears it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from kmsir.keymaterial import MATERIAL_BYTES, MAX_VALID_DAYS
from kmsir.sandbox.shim.common import error, find_key, not_pending, set_state, validation

#: How long a public key and import token from GetParametersForImport can be used.
PARAMETERS_VALID = timedelta(hours=24)
#: The latest ``ValidTo`` ImportKeyMaterial accepts, from the request.
MAX_VALID_TO = timedelta(days=MAX_VALID_DAYS)
WRAPPING_KEY_BITS = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}
#: Wrapping algorithms, by name: the OAEP hash, and whether an AES key wraps the material.
WRAPPING_ALGORITHMS = {
    "RSAES_OAEP_SHA_1": ("SHA1", False),
    "RSAES_OAEP_SHA_256": ("SHA256", False),
    "RSA_AES_KEY_WRAP_SHA_1": ("SHA1", True),
    "RSA_AES_KEY_WRAP_SHA_256": ("SHA256", True),
}
EXPIRES, DOES_NOT_EXPIRE = "KEY_MATERIAL_EXPIRES", "KEY_MATERIAL_DOES_NOT_EXPIRE"


def now() -> datetime:
    """The emulator's clock (tests move it to see material expire)."""
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class ImportParameters:
    """One GetParametersForImport answer: its private key stays with the emulator."""

    key_id: str
    private_key: Any  # cryptography's RSAPrivateKey
    algorithm: str
    valid_to: datetime


def _parameters(backend: Any) -> dict[bytes, ImportParameters]:
    table: dict[bytes, ImportParameters] | None = getattr(backend, "kmsir_import_parameters", None)
    if table is None:
        table = {}
        backend.kmsir_import_parameters = table
    return table


def _external_key(response: Any) -> Any:
    """The key a request names by id or ARN; it must be an EXTERNAL-origin key."""
    key = find_key(response.kms_backend, str(response._get_param("KeyId")), aliases=False)
    if key.origin != "EXTERNAL":
        raise error(
            "UnsupportedOperationException",
            f"{key.arn} origin is {key.origin} which is not valid for this operation.",
        )
    return key


def _require(response: Any, *names: str) -> None:
    """Required members of the request: AWS refuses a request that lacks one
    (``ValidationException``) before it looks at anything else."""
    body = json.loads(response.body)
    missing = [name for name in names if body.get(name) is None]
    if missing:
        errors = "1 validation error" if len(missing) == 1 else f"{len(missing)} validation errors"
        raise validation(
            f"{errors} detected: "
            + "; ".join(
                f"Value null at '{name[0].lower()}{name[1:]}' failed to satisfy constraint: "
                "Member must not be null"
                for name in missing
            )
        )


def _blob(response: Any, name: str) -> bytes:
    """A required binary parameter as the client sent it (base64 in KMS's JSON)."""
    _require(response, name)
    value = json.loads(response.body)[name]
    try:
        return base64.b64decode(str(value), validate=True)
    except ValueError:
        raise validation(f"{name} is not valid base64.") from None


def get_parameters_for_import(self: Any) -> str:
    """GetParametersForImport: a new RSA wrapping key and import token for an EXTERNAL key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from moto.moto_api._internal import mock_random

    key = _external_key(self)
    not_pending(key, "GetParametersForImport")
    algorithm = self._get_param("WrappingAlgorithm")
    spec = self._get_param("WrappingKeySpec")
    if algorithm not in WRAPPING_ALGORITHMS:
        raise validation(f"WrappingAlgorithm {algorithm} is not supported.")
    if spec not in WRAPPING_KEY_BITS:
        raise validation(f"WrappingKeySpec {spec} is not supported in this Region.")
    private = rsa.generate_private_key(public_exponent=65537, key_size=WRAPPING_KEY_BITS[spec])
    token = b"kmsir-import-token:" + mock_random.getrandbits(8 * 96).to_bytes(96, "big")
    valid_to = now() + PARAMETERS_VALID
    _parameters(self.kms_backend)[token] = ImportParameters(key.id, private, algorithm, valid_to)
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return json.dumps(
        {
            "KeyId": key.arn,
            "ImportToken": base64.b64encode(token).decode(),
            "PublicKey": base64.b64encode(public).decode(),
            "ParametersValidTo": valid_to.timestamp(),
        }
    )


def _unwrap(parameters: ImportParameters, wrapped: bytes) -> bytes:
    """The material, unwrapped as the wrapping algorithm says (``InvalidCiphertextException``
    when it cannot be)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding

    hash_name, aes_wrapped = WRAPPING_ALGORITHMS[parameters.algorithm]
    # SHA-1 is what the RSAES_OAEP_SHA_1 wrapping algorithm AWS offers is made of
    digest = hashes.SHA1() if hash_name == "SHA1" else hashes.SHA256()  # noqa: S303
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=digest), algorithm=digest, label=None)
    rsa_bytes = parameters.private_key.key_size // 8
    try:
        if not aes_wrapped:
            return bytes(parameters.private_key.decrypt(wrapped, oaep))
        aes_key = parameters.private_key.decrypt(wrapped[:rsa_bytes], oaep)
        return aes_key_unwrap_with_padding(aes_key, wrapped[rsa_bytes:])
    except ValueError:
        raise error(
            "InvalidCiphertextException",
            "The request was rejected because KMS could not decrypt the encrypted (wrapped) "
            "key material.",
        ) from None


def material_id(key: Any, material: bytes) -> str:
    """The id AWS gives imported material: derived from the key id and the material, so the
    same material always has the same id (64 hex characters)."""
    return hashlib.sha256(key.id.encode() + b"\0" + material).hexdigest()


def _expiry(self: Any) -> tuple[str, datetime | None]:
    """ExpirationModel and ValidTo of an ImportKeyMaterial request, checked as AWS checks them."""
    model = self._get_param("ExpirationModel") or EXPIRES
    raw = self._get_param("ValidTo")
    if model == DOES_NOT_EXPIRE:
        if raw is not None:
            raise validation("ValidTo must be omitted when ExpirationModel is " + model + ".")
        return model, None
    if model != EXPIRES:
        raise validation(f"ExpirationModel {model} is not valid.")
    if raw is None:
        raise validation("ValidTo is required when ExpirationModel is " + EXPIRES + ".")
    try:
        valid_to = datetime.fromtimestamp(float(raw), tz=timezone.utc)
    except (TypeError, ValueError, OverflowError):
        raise validation(f"ValidTo {raw!r} is not a date and time.") from None
    moment = now()
    if valid_to <= moment:
        raise validation("ValidTo must be in the future.")
    if valid_to > moment + MAX_VALID_TO:
        raise validation(f"ValidTo must be at most {MAX_VALID_DAYS} days from now.")
    return model, valid_to


def import_key_material(self: Any) -> str:
    """ImportKeyMaterial: unwrap the material and make it the key's; PendingImport -> Enabled."""
    _require(self, "ImportToken", "EncryptedKeyMaterial")
    key = _external_key(self)
    not_pending(key, "ImportKeyMaterial")
    token = _blob(self, "ImportToken")
    parameters = _parameters(self.kms_backend).get(token)
    if parameters is None or parameters.key_id != key.id:
        raise error(
            "InvalidImportTokenException",
            "The import token is invalid or is associated with a different KMS key.",
        )
    if parameters.valid_to <= now():
        raise error("ExpiredImportTokenException", "The import token has expired.")
    model, valid_to = _expiry(self)
    if key.key_spec != "SYMMETRIC_DEFAULT":
        raise error(
            "UnsupportedOperationException",
            f"{key.arn} is a {key.key_spec} key: the sandbox imports material into symmetric "
            "encryption keys only.",
        )
    material = _unwrap(parameters, _blob(self, "EncryptedKeyMaterial"))
    if len(material) != MATERIAL_BYTES:
        raise error(
            "IncorrectKeyMaterialException",
            f"The key material must be {MATERIAL_BYTES} bytes for a symmetric encryption key.",
        )
    new_id = material_id(key, material)
    known = getattr(key, "kmsir_material_id", None)
    requested_id = self._get_param("KeyMaterialId")
    import_type = self._get_param("ImportType") or (
        "EXISTING_KEY_MATERIAL" if known else "NEW_KEY_MATERIAL"
    )
    if requested_id is not None and import_type == "NEW_KEY_MATERIAL":
        raise validation("KeyMaterialId cannot be specified with ImportType NEW_KEY_MATERIAL.")
    if import_type == "NEW_KEY_MATERIAL" and known is not None:
        if known == new_id:
            raise error(
                "IncorrectKeyMaterialException",
                "KMS expected new key material but this key material is already associated "
                "with the KMS key.",
            )
        raise error(
            "UnsupportedOperationException",
            "The sandbox does not emulate on-demand rotation of imported key material.",
        )
    if (known is not None and known != new_id) or (
        requested_id is not None and requested_id != new_id
    ):
        raise error(
            "IncorrectKeyMaterialException",
            "The key material is not the same key material that was previously imported into "
            "this KMS key.",
        )
    if import_type == "EXISTING_KEY_MATERIAL" and known is None:
        raise error(
            "IncorrectKeyMaterialException", "No key material was ever imported into this key."
        )
    key.key_material = material
    key.kmsir_material_id = new_id
    key.kmsir_material_present = True
    key.kmsir_expiration_model = model
    key.kmsir_valid_to = valid_to
    if key.key_state == "PendingImport":
        set_state(key, "Enabled")
    return json.dumps({"KeyId": key.arn, "KeyMaterialId": new_id})


def _delete_material(key: Any) -> None:
    """The key's material is gone: it cannot be used until the same material is imported
    again (its state stays if it is pending deletion). moto's copy of the bytes stays, so
    ciphertext decrypts again once they are reimported; the state check refuses it until then."""
    key.kmsir_material_present = False
    key.kmsir_valid_to = None
    if key.key_state not in ("PendingDeletion", "PendingReplicaDeletion"):
        set_state(key, "PendingImport")


def delete_imported_key_material(self: Any) -> str:
    """DeleteImportedKeyMaterial: the key goes to PendingImport (no effect if it is there)."""
    key = _external_key(self)
    known = getattr(key, "kmsir_material_id", None)
    requested = self._get_param("KeyMaterialId")
    if requested is not None and requested != known:
        raise error(
            "NotFoundException", f"Key material {requested} is not associated with {key.arn}."
        )
    if getattr(key, "kmsir_material_present", False):
        _delete_material(key)
    body: dict[str, Any] = {"KeyId": key.arn}
    if known is not None:
        body["KeyMaterialId"] = known
    return json.dumps(body)


def settle_material(backend: Any) -> None:
    """Called on every KMS request: delete the material whose ``ValidTo`` has passed, as AWS
    does when it expires, and keep each EXTERNAL key without material PendingImport (unless
    pending deletion), whatever moto did to it since: CancelKeyDeletion, which moto leaves
    Disabled, cannot make it usable. (Expired import parameters are kept: a late
    ImportKeyMaterial is told its token expired, not that it is unknown.)"""
    moment = now()
    for key in list(backend.keys.values()):
        if key.origin != "EXTERNAL":
            continue
        valid_to = getattr(key, "kmsir_valid_to", None)
        if valid_to is not None and valid_to <= moment:
            _delete_material(key)
        if not getattr(key, "kmsir_material_present", False) and key.key_state in (
            "Enabled",
            "Disabled",
        ):
            set_state(key, "PendingImport")


def created(key: Any) -> None:
    """A key just created with ``Origin=EXTERNAL`` has no material yet: PendingImport."""
    if key.origin == "EXTERNAL":
        set_state(key, "PendingImport")


def replicated(replica: Any) -> None:
    """A new replica of a multi-Region EXTERNAL key has no material of its own: it is
    PendingImport until the same material (the primary's) is imported into it."""
    if replica.origin == "EXTERNAL":
        replica.kmsir_material_present = False
        replica.kmsir_expiration_model = replica.kmsir_valid_to = None
        set_state(replica, "PendingImport")


def metadata(key: Any) -> dict[str, Any]:
    """What DescribeKey adds for an EXTERNAL key while it holds material: ExpirationModel,
    ValidTo when the material expires, CurrentKeyMaterialId. A key without material (never
    imported, deleted or expired) reports none of them: PendingImport says it all."""
    if key.origin != "EXTERNAL" or not getattr(key, "kmsir_material_present", False):
        return {}
    fields: dict[str, Any] = {
        "ExpirationModel": key.kmsir_expiration_model,
        "CurrentKeyMaterialId": key.kmsir_material_id,
    }
    if key.kmsir_valid_to is not None:
        fields["ValidTo"] = key.kmsir_valid_to.timestamp()
    return fields

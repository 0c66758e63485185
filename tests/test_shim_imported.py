"""The sandbox's emulation of imported key material (moto has none): each patch point answers
as the AWS documentation says.

References (AWS, not moto):
- https://docs.aws.amazon.com/kms/latest/APIReference/API_GetParametersForImport.html
- https://docs.aws.amazon.com/kms/latest/APIReference/API_ImportKeyMaterial.html
- https://docs.aws.amazon.com/kms/latest/APIReference/API_DeleteImportedKeyMaterial.html
- https://docs.aws.amazon.com/kms/latest/developerguide/key-state.html
- https://docs.aws.amazon.com/kms/latest/developerguide/importing-keys-delete-key-material.html
- https://docs.aws.amazon.com/kms/latest/APIReference/API_KeyMetadata.html

One sandbox for the module: each test makes keys of its own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from kmsir.sandbox import Sandbox
from kmsir.sandbox import scenario as scenarios
from kmsir.sandbox.shim import imported, operations

from .test_shim import error_code


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(scenarios.load("rogue-grant")) as world:
        yield world


@pytest.fixture
def kms(sandbox: Sandbox) -> Any:
    return sandbox.session().client("kms")


def metadata(kms: Any, key_id: str) -> dict[str, Any]:
    return dict(kms.describe_key(KeyId=key_id)["KeyMetadata"])


def wrap(public_der: bytes, algorithm: str, material: bytes) -> bytes:
    """``material`` wrapped for import as AWS's "Encrypt the key material" step says."""
    public = serialization.load_der_public_key(public_der)
    assert isinstance(public, rsa.RSAPublicKey)
    digest = hashes.SHA256() if algorithm.endswith("SHA_256") else hashes.SHA1()  # noqa: S303
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=digest), algorithm=digest, label=None)
    if algorithm.startswith("RSA_AES_KEY_WRAP"):
        aes_key = os.urandom(32)
        return public.encrypt(aes_key, oaep) + aes_key_wrap_with_padding(aes_key, material)
    return public.encrypt(material, oaep)


def import_material(
    kms: Any,
    key_id: str,
    material: bytes,
    *,
    algorithm: str = "RSAES_OAEP_SHA_256",
    spec: str = "RSA_2048",
    **expiry: Any,
) -> dict[str, Any]:
    """GetParametersForImport then ImportKeyMaterial, as a responder would call them."""
    params = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm=algorithm, WrappingKeySpec=spec
    )
    if not expiry:
        expiry = {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}
    return dict(
        kms.import_key_material(
            KeyId=key_id,
            ImportToken=params["ImportToken"],
            EncryptedKeyMaterial=wrap(params["PublicKey"], algorithm, material),
            **expiry,
        )
    )


def external_key(kms: Any) -> str:
    return str(kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"])


def test_an_external_key_waits_for_its_material(kms: Any) -> None:
    created = kms.create_key(Origin="EXTERNAL", Description="escrowed")["KeyMetadata"]
    assert (created["KeyState"], created["Enabled"], created["Origin"]) == (
        "PendingImport",
        False,
        "EXTERNAL",
    )
    described = metadata(kms, created["KeyId"])
    assert described["KeyState"] == "PendingImport"
    assert "CurrentKeyMaterialId" not in described and "ValidTo" not in described
    # key-state table: cryptographic operations on a PendingImport key
    assert error_code(lambda: kms.encrypt(KeyId=created["KeyId"], Plaintext=b"x")) == (
        "KMSInvalidStateException"
    )


@pytest.mark.parametrize(
    ("algorithm", "spec"),
    [
        ("RSAES_OAEP_SHA_1", "RSA_2048"),
        ("RSAES_OAEP_SHA_256", "RSA_2048"),
        ("RSAES_OAEP_SHA_1", "RSA_3072"),
        ("RSAES_OAEP_SHA_256", "RSA_4096"),
        ("RSA_AES_KEY_WRAP_SHA_1", "RSA_2048"),
        ("RSA_AES_KEY_WRAP_SHA_256", "RSA_3072"),
    ],
)
def test_parameters_for_import_wrap_real_material(kms: Any, algorithm: str, spec: str) -> None:
    key_id = external_key(kms)
    before = datetime.now(timezone.utc)
    params = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm=algorithm, WrappingKeySpec=spec
    )
    public = serialization.load_der_public_key(params["PublicKey"])  # DER SubjectPublicKeyInfo
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.key_size == int(spec.removeprefix("RSA_"))
    assert params["KeyId"].endswith(f":key/{key_id}")
    valid_for = params["ParametersValidTo"] - before
    assert timedelta(hours=23, minutes=59) < valid_for <= timedelta(hours=24, minutes=1)
    material = os.urandom(32)
    done = kms.import_key_material(
        KeyId=key_id,
        ImportToken=params["ImportToken"],
        EncryptedKeyMaterial=wrap(params["PublicKey"], algorithm, material),
        ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
    )
    assert done["KeyId"] == params["KeyId"]
    assert re.fullmatch(r"[0-9a-f]{64}", done["KeyMaterialId"])
    assert metadata(kms, key_id)["KeyState"] == "Enabled"


def test_the_imported_material_is_what_the_key_encrypts_with(kms: Any) -> None:
    key_id, material = external_key(kms), os.urandom(32)
    import_material(kms, key_id, material)
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"payroll")["CiphertextBlob"]
    # moto's ciphertext: 36 bytes of key id, 12 of IV, 16 of tag, then AES-GCM output
    iv, tag, body = blob[36:48], blob[48:64], blob[64:]
    assert AESGCM(material).decrypt(iv, body + tag, b"") == b"payroll"


def test_deleted_material_comes_back_only_the_same(kms: Any) -> None:
    key_id, material = external_key(kms), os.urandom(32)
    first = import_material(kms, key_id, material)
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"card data")["CiphertextBlob"]
    deleted = kms.delete_imported_key_material(KeyId=key_id)
    assert (deleted["KeyId"], deleted["KeyMaterialId"]) == (first["KeyId"], first["KeyMaterialId"])
    after = metadata(kms, key_id)
    assert (after["KeyState"], after["Enabled"]) == ("PendingImport", False)
    assert "CurrentKeyMaterialId" not in after and "ExpirationModel" not in after
    assert error_code(lambda: kms.decrypt(CiphertextBlob=blob)) == "KMSInvalidStateException"
    assert error_code(lambda: import_material(kms, key_id, os.urandom(32))) == (
        "IncorrectKeyMaterialException"
    )
    again = import_material(kms, key_id, material)
    assert again["KeyMaterialId"] == first["KeyMaterialId"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"card data"
    # DeleteImportedKeyMaterial twice: the second has no effect (key-state table, PendingImport)
    kms.delete_imported_key_material(KeyId=key_id)
    kms.delete_imported_key_material(KeyId=key_id)
    assert metadata(kms, key_id)["KeyState"] == "PendingImport"


def test_describe_key_reports_the_expiry_and_material(kms: Any) -> None:
    key_id = external_key(kms)
    valid_to = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=30)
    done = import_material(kms, key_id, os.urandom(32), ValidTo=valid_to)
    described = metadata(kms, key_id)
    assert described["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"  # the default model
    assert described["ValidTo"] == valid_to
    assert described["CurrentKeyMaterialId"] == done["KeyMaterialId"]
    lasting = external_key(kms)
    import_material(kms, lasting, os.urandom(32))
    described = metadata(kms, lasting)
    assert described["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE"
    assert "ValidTo" not in described


def test_valid_to_is_checked_as_aws_checks_it(kms: Any) -> None:
    key_id, material = external_key(kms), os.urandom(32)
    now = datetime.now(timezone.utc)
    refused = [
        {},  # KEY_MATERIAL_EXPIRES (the default) needs ValidTo
        {"ExpirationModel": "KEY_MATERIAL_EXPIRES"},
        {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE", "ValidTo": now + timedelta(days=1)},
        {"ValidTo": now - timedelta(minutes=1)},  # a future date and time
        {"ValidTo": now + timedelta(days=366)},  # at most 365 days from the request
    ]
    for expiry in refused:
        params = kms.get_parameters_for_import(
            KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
        )
        code = error_code(
            lambda p=params, e=expiry: kms.import_key_material(
                KeyId=key_id,
                ImportToken=p["ImportToken"],
                EncryptedKeyMaterial=wrap(p["PublicKey"], "RSAES_OAEP_SHA_256", material),
                **e,
            )
        )
        assert code == "ValidationException", expiry
    assert metadata(kms, key_id)["KeyState"] == "PendingImport"


def test_tokens_and_wrapping_are_checked(kms: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    key_id, other = external_key(kms), external_key(kms)
    params = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )
    token, public = params["ImportToken"], params["PublicKey"]

    def attempt(key: str, token: bytes, wrapped: bytes) -> str:
        return error_code(
            lambda: kms.import_key_material(
                KeyId=key,
                ImportToken=token,
                EncryptedKeyMaterial=wrapped,
                ExpirationModel="KEY_MATERIAL_DOES_NOT_EXPIRE",
            )
        )

    good = wrap(public, "RSAES_OAEP_SHA_256", os.urandom(32))
    assert attempt(other, token, good) == "InvalidImportTokenException"  # another key's token
    assert attempt(key_id, b"not a token", good) == "InvalidImportTokenException"
    sha1 = wrap(public, "RSAES_OAEP_SHA_1", os.urandom(32))  # not the algorithm asked for
    assert attempt(key_id, token, sha1) == "InvalidCiphertextException"
    short = wrap(public, "RSAES_OAEP_SHA_256", os.urandom(16))  # 128 bits: not a symmetric key
    assert attempt(key_id, token, short) == "IncorrectKeyMaterialException"
    later = datetime.now(timezone.utc) + timedelta(hours=24, minutes=1)
    monkeypatch.setattr(imported, "now", lambda: later)
    assert attempt(key_id, token, good) == "ExpiredImportTokenException"
    monkeypatch.undo()
    assert error_code(
        lambda: kms.get_parameters_for_import(
            KeyId=key_id, WrappingAlgorithm="RSAES_PKCS1_V1_5", WrappingKeySpec="RSA_2048"
        )
    ) == ("ValidationException")  # no longer supported by AWS since October 2023


def test_a_missing_token_or_material_is_a_validation_error(sandbox: Sandbox) -> None:
    """ImportToken and EncryptedKeyMaterial are required members of ImportKeyMaterial
    (https://docs.aws.amazon.com/kms/latest/APIReference/API_ImportKeyMaterial.html): a request
    without one is refused (ValidationException) before its key is looked at, not read as the
    base64 text "None"."""
    from botocore.config import Config

    raw = sandbox.session().client("kms", config=Config(parameter_validation=False))
    key_id = external_key(raw)
    params = raw.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
    )
    whole = {
        "KeyId": key_id,
        "ImportToken": params["ImportToken"],
        "EncryptedKeyMaterial": wrap(params["PublicKey"], "RSAES_OAEP_SHA_256", os.urandom(32)),
        "ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE",
    }
    not_external = raw.create_key()["KeyMetadata"]["KeyId"]
    members = (("ImportToken", "importToken"), ("EncryptedKeyMaterial", "encryptedKeyMaterial"))
    for missing, member in members:
        for key in (key_id, not_external):
            request = {name: value for name, value in whole.items() if name != missing}
            with pytest.raises(ClientError) as caught:
                raw.import_key_material(**{**request, "KeyId": key})
            answered = caught.value.response["Error"]
            assert answered["Code"] == "ValidationException", (missing, key)
            assert f"Value null at '{member}'" in answered["Message"]
    assert metadata(raw, key_id)["KeyState"] == "PendingImport"
    raw.import_key_material(**whole)  # the whole request imports
    assert metadata(raw, key_id)["KeyState"] == "Enabled"


def test_material_expires_at_valid_to(kms: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    key_id = external_key(kms)
    valid_to = datetime.now(timezone.utc) + timedelta(hours=1)
    import_material(kms, key_id, os.urandom(32), ValidTo=valid_to)
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"]
    monkeypatch.setattr(imported, "now", lambda: valid_to + timedelta(seconds=1))
    # checked on any KMS request, here ListKeys; then the key is as if its material was deleted
    assert key_id in {k["KeyId"] for k in kms.list_keys()["Keys"]}
    described = metadata(kms, key_id)
    assert described["KeyState"] == "PendingImport"
    assert not {"ValidTo", "CurrentKeyMaterialId", "ExpirationModel"} & set(described)
    assert error_code(lambda: kms.decrypt(CiphertextBlob=blob)) == "KMSInvalidStateException"


def test_only_external_keys_take_or_lose_material(kms: Any) -> None:
    own = kms.create_key()["KeyMetadata"]["KeyId"]
    # key-state table [9]: a key that cannot have imported material
    assert error_code(lambda: kms.delete_imported_key_material(KeyId=own)) == (
        "UnsupportedOperationException"
    )
    assert error_code(
        lambda: kms.get_parameters_for_import(
            KeyId=own, WrappingAlgorithm="RSAES_OAEP_SHA_256", WrappingKeySpec="RSA_2048"
        )
    ) == ("UnsupportedOperationException")
    assert metadata(kms, own)["KeyState"] == "Enabled"
    assert error_code(lambda: kms.delete_imported_key_material(KeyId="alias/nope")) == (
        "NotFoundException"
    )


def test_a_key_pending_deletion_keeps_its_state(kms: Any) -> None:
    key_id = external_key(kms)
    import_material(kms, key_id, os.urandom(32))
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    kms.delete_imported_key_material(KeyId=key_id)  # allowed; the state does not change
    assert metadata(kms, key_id)["KeyState"] == "PendingDeletion"
    # key-state table [8]: no import into a key pending deletion
    assert error_code(lambda: import_material(kms, key_id, os.urandom(32))) == (
        "KMSInvalidStateException"
    )
    # cancelled, a key without its material is not Disabled (as moto has it) but waits for it
    kms.cancel_key_deletion(KeyId=key_id)
    assert metadata(kms, key_id)["KeyState"] == "PendingImport"


def test_automatic_rotation_is_not_for_imported_material(kms: Any) -> None:
    """EnableKeyRotation: "automatic key rotation is not supported on keys with imported key
    material" (key-state table [6], [7])."""
    key_id = external_key(kms)
    code = "UnsupportedOperationException"
    assert error_code(lambda: kms.enable_key_rotation(KeyId=key_id)) == code  # PendingImport
    import_material(kms, key_id, os.urandom(32))
    assert error_code(lambda: kms.enable_key_rotation(KeyId=key_id)) == code
    assert error_code(lambda: kms.disable_key_rotation(KeyId=key_id)) == code


def test_the_operations_are_moto_methods_and_a_moto_that_has_them_fails_loudly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from moto.kms import responses
    from moto.kms.models import Key

    for name, handler in operations.OPERATIONS.items():
        assert vars(responses.KmsResponse)[name] is handler
    to_dict = Key.to_dict
    operations.install()  # idempotent
    assert Key.to_dict is to_dict

    class NewerMoto:  # a moto that answers GetParametersForImport itself
        def get_parameters_for_import(self) -> str:
            return "{}"

    monkeypatch.setattr(responses, "KmsResponse", NewerMoto)
    with pytest.raises(RuntimeError, match="get_parameters_for_import"):
        operations.install()


def test_a_replica_of_an_external_key_imports_the_same_material(sandbox: Sandbox) -> None:
    """ImportKeyMaterial: "import the same key material into the replica Region keys"
    (https://docs.aws.amazon.com/kms/latest/developerguide/multi-region-keys-import.html)."""
    kms = sandbox.session().client("kms")
    east = sandbox.session().client("kms", region_name="us-east-1")
    primary = kms.create_key(Origin="EXTERNAL", MultiRegion=True)["KeyMetadata"]["KeyId"]
    material = os.urandom(32)
    first = import_material(kms, primary, material)
    blob = kms.encrypt(KeyId=primary, Plaintext=b"everywhere")["CiphertextBlob"]
    replica = kms.replicate_key(KeyId=primary, ReplicaRegion="us-east-1")["ReplicaKeyMetadata"]
    assert replica["KeyState"] == "PendingImport"
    assert "CurrentKeyMaterialId" not in replica
    assert metadata(kms, primary)["KeyState"] == "Enabled"  # the primary keeps its material
    assert error_code(lambda: east.decrypt(CiphertextBlob=blob)) == "KMSInvalidStateException"
    assert error_code(lambda: import_material(east, primary, os.urandom(32))) == (
        "IncorrectKeyMaterialException"
    )
    assert import_material(east, primary, material)["KeyMaterialId"] == first["KeyMaterialId"]
    assert east.decrypt(CiphertextBlob=blob)["Plaintext"] == b"everywhere"

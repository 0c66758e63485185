"""GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext, which moto lacks (it answers
HTTP 500 to both).

As the API reference has them: a fresh asymmetric key pair of ``KeyPairSpec`` (RSA_2048,
RSA_3072, RSA_4096, ECC_NIST_P256, ECC_NIST_P384, ECC_NIST_P521, ECC_SECG_P256K1); the private
key (DER, PKCS #8) encrypted under a symmetric encryption KMS key, with the request's
``EncryptionContext``, so Decrypt gives it back; the public key (DER, SubjectPublicKeyInfo) in
the clear; the private key in the clear too unless WithoutPlaintext. The KMS key must be
usable (the key-state table: ``DisabledException``, ``KMSInvalidStateException``), not in a
custom key store ("GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext are not
supported in custom key stores",
https://docs.aws.amazon.com/kms/latest/developerguide/use-cmk-keystore.html:
``UnsupportedOperationException``) and a symmetric encryption key
(``InvalidKeyUsageException``). ``operations`` adds them to moto's ``KmsResponse``, so the
in-process sandbox and ``sandbox serve`` answer them alike.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from kmsir.sandbox.shim.common import error, find_key, require_usable
from kmsir.sandbox.shim.key_stores import ORIGINS

#: KeyPairSpec -> how to make such a key with ``cryptography``.
_RSA = {"RSA_2048": 2048, "RSA_3072": 3072, "RSA_4096": 4096}
_EC = {
    "ECC_NIST_P256": "SECP256R1",
    "ECC_NIST_P384": "SECP384R1",
    "ECC_NIST_P521": "SECP521R1",
    "ECC_SECG_P256K1": "SECP256K1",
}


def _key_pair(spec: str) -> tuple[bytes, bytes]:
    """A new key pair of ``spec``: (private key DER PKCS #8, public key DER SPKI)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    private: Any
    if spec in _RSA:
        private = rsa.generate_private_key(public_exponent=65537, key_size=_RSA[spec])
    else:
        private = ec.generate_private_key(getattr(ec, _EC[spec])())
    der = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der, public


def _generate(response: Any, *, plaintext: bool) -> str:
    spec = response._get_param("KeyPairSpec")
    if spec not in _RSA and spec not in _EC:
        allowed = ", ".join([*_RSA, *_EC])
        raise error(
            "ValidationException",
            f"1 validation error detected: Value '{spec}' at 'keyPairSpec' failed to satisfy "
            f"constraint: Member must satisfy enum value set: [{allowed}]",
        )
    backend = response.kms_backend
    key = find_key(backend, str(response._get_param("KeyId")), aliases=True)
    require_usable(key)  # an Unavailable key in a store: its state answers first
    if key.origin in ORIGINS.values():
        raise error(
            "UnsupportedOperationException",
            f"{key.arn} is in a custom key store: GenerateDataKeyPair and "
            "GenerateDataKeyPairWithoutPlaintext are not supported in custom key stores.",
        )
    usage = key.key_usage or "ENCRYPT_DECRYPT"  # moto keeps None when CreateKey named none
    if usage != "ENCRYPT_DECRYPT" or key.key_spec != "SYMMETRIC_DEFAULT":
        raise error(
            "InvalidKeyUsageException",
            f"{key.arn} key usage is {usage} ({key.key_spec}), which is not valid "
            "for GenerateDataKeyPair: it needs a symmetric encryption KMS key.",
        )
    private, public = _key_pair(spec)
    blob, arn = backend.encrypt(
        key_id=key.id,
        plaintext=private,
        encryption_context=response._get_param("EncryptionContext", {}) or {},
    )
    result = {
        "KeyId": arn,
        "KeyPairSpec": spec,
        "PrivateKeyCiphertextBlob": base64.b64encode(blob).decode(),
        "PublicKey": base64.b64encode(public).decode(),
    }
    if plaintext:
        result["PrivateKeyPlaintext"] = base64.b64encode(private).decode()
    return json.dumps(result)


def generate_data_key_pair(self: Any) -> str:
    """GenerateDataKeyPair (a method of moto's ``KmsResponse``)."""
    return _generate(self, plaintext=True)


def generate_data_key_pair_without_plaintext(self: Any) -> str:
    """GenerateDataKeyPairWithoutPlaintext (a method of moto's ``KmsResponse``)."""
    return _generate(self, plaintext=False)

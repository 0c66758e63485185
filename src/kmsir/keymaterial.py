"""Imported key material in transit: wrapped as AWS asks before ImportKeyMaterial.

AWS's recommended wrapping for 32-byte symmetric material is RSAES-OAEP with SHA-256 (and
MGF1 SHA-256) under the public key GetParametersForImport returns ("Encrypt key material",
https://docs.aws.amazon.com/kms/latest/developerguide/importing-keys-encrypt-key-material.html).
The responder's import (``kms.import-key-material``), the sandbox's seeding and its replay of a
journaled import all wrap with this one function.
"""

from __future__ import annotations

from typing import Final

#: The wrapping algorithm kmsir asks GetParametersForImport for.
WRAPPING_ALGORITHM: Final = "RSAES_OAEP_SHA_256"


def wrap(material: bytes, public_key_der: bytes) -> bytes:
    """``material`` encrypted under the DER public key GetParametersForImport answered
    (RSAES-OAEP, SHA-256, MGF1 SHA-256); ``ValueError`` if that key is not RSA."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    public = serialization.load_der_public_key(public_key_der)
    if not isinstance(public, rsa.RSAPublicKey):
        raise ValueError("GetParametersForImport answered a wrapping key that is not RSA")
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    return public.encrypt(material, oaep)

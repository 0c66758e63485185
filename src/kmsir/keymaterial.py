"""Imported key material in transit: wrapped as AWS asks before ImportKeyMaterial, and the
limits AWS puts on it.

AWS's recommended wrapping for 32-byte symmetric material is RSAES-OAEP with SHA-256 (and
MGF1 SHA-256) under the public key GetParametersForImport returns ("Encrypt key material",
https://docs.aws.amazon.com/kms/latest/developerguide/importing-keys-encrypt-key-material.html).
The responder's import (``kms.import-key-material``), the sandbox's seeding and its replay of a
journaled import all wrap with this one function, and check material and ``ValidTo`` against
these one set of limits (the sandbox's KMS shim answers with them too).
"""

from __future__ import annotations

from typing import Final

#: The wrapping algorithm kmsir asks GetParametersForImport for.
WRAPPING_ALGORITHM: Final = "RSAES_OAEP_SHA_256"
#: The size of a symmetric encryption key's material, in bytes (256 bits): what
#: ImportKeyMaterial takes into such a key.
MATERIAL_BYTES: Final = 32
#: How far ahead ImportKeyMaterial's ``ValidTo`` may be, in days from the request
#: (https://docs.aws.amazon.com/kms/latest/APIReference/API_ImportKeyMaterial.html).
MAX_VALID_DAYS: Final = 365


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

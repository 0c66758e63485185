"""Signatures kmsir checks offline, months later, with no AWS access: a detached signature
over an exported archive, and the journal anchor (``run --anchor-key``), a signature over the
journal's chain head written after every step.

Both are made by KMS ``Sign`` over a SHA-256 digest (sent as the raw 32-byte message, so KMS
hashes it once more, with the signing algorithm's hash), with the key's public half kept to
check them. Stdlib and ``cryptography`` only, imported when a check runs.
"""

from __future__ import annotations

import base64
import contextlib
from typing import Any

from kmsir.evidence.bundle import sha256_hex

#: The signing algorithm kmsir asks KMS for, by key spec (AWS KMS Developer Guide, "Asymmetric
#: key specs"): RSA keys sign with PSS and SHA-256; an ECC key only with the hash of its curve
#: (KMS refuses any other), SHA-256 for P-256 and secp256k1, SHA-384 for P-384, SHA-512 for
#: P-521. ML-DSA, Ed25519 and SM2 (China Regions) keys are not used.
SIGNING_ALGORITHMS = {
    "RSA_2048": "RSASSA_PSS_SHA_256",
    "RSA_3072": "RSASSA_PSS_SHA_256",
    "RSA_4096": "RSASSA_PSS_SHA_256",
    "ECC_NIST_P256": "ECDSA_SHA_256",
    "ECC_NIST_P384": "ECDSA_SHA_384",
    "ECC_NIST_P521": "ECDSA_SHA_512",
    "ECC_SECG_P256K1": "ECDSA_SHA_256",
}
#: The same for an ECC public key, by its curve (``cryptography``'s name of it).
_ECDSA_BY_CURVE = {
    "secp256r1": "ECDSA_SHA_256",
    "secp256k1": "ECDSA_SHA_256",
    "secp384r1": "ECDSA_SHA_384",
    "secp521r1": "ECDSA_SHA_512",
}
#: The journal anchor file at a bundle's top, rewritten after every step of an anchored run.
ANCHOR_FORMAT = "kmsir-anchor/1"


def public_key_pem(public_key_der: bytes) -> str:
    """A public key as KMS ``GetPublicKey`` returns it (DER), in PEM."""
    from cryptography.hazmat.primitives import serialization

    public = serialization.load_der_public_key(public_key_der)
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def fingerprint(public_key_pem: str) -> str:
    """``sha256:<hex>`` of a public key's DER form: what to compare with the key KMS holds
    (``aws kms get-public-key`` returns the same DER)."""
    from cryptography.hazmat.primitives import serialization

    try:
        public = serialization.load_pem_public_key(public_key_pem.encode())
    except (ValueError, TypeError):
        return "sha256:(not a public key)"
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"sha256:{sha256_hex(der)}"


def trusted_key(data: bytes) -> str:
    """A public key given by the person checking (PEM; DER; or base64 DER, as the AWS CLI's
    ``get-public-key --output text`` prints it), in PEM; ``ValueError`` when it is none."""
    from cryptography.hazmat.primitives import serialization

    text = data.strip()
    # raw DER first, as given: its last byte (a point's, a modulus's) may be one that
    # strip() takes for whitespace
    candidates = [data, text]
    if not text.startswith(b"-----"):
        with contextlib.suppress(ValueError):
            candidates.append(base64.b64decode(text, validate=True))
    for candidate in candidates:
        for load in (serialization.load_pem_public_key, serialization.load_der_public_key):
            try:
                public = load(candidate)
            except (ValueError, TypeError):
                continue
            return public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode()
    raise ValueError("not a public key (PEM, DER or base64 DER)")


def signature_record(
    key_arn: str, algorithm: str, digest: str, signature: bytes, public_key_pem: str
) -> dict[str, str]:
    """What ``<archive>.sig.json`` holds: enough to check the signature offline, months later."""
    return {
        "key_arn": key_arn,
        "algorithm": algorithm,
        "sha256": digest,
        "signature": base64.b64encode(signature).decode(),
        "public_key_pem": public_key_pem,
    }


def anchor_digest(run_id: str, seq: int, head: str) -> str:
    """The digest an anchor signs: this run's journal, ``seq`` entries long, ending in ``head``."""
    return sha256_hex(f"{ANCHOR_FORMAT}\n{run_id}\n{seq}\n{head}\n".encode())


def check_signature(
    record: dict[str, Any], digest: str, public_key_pem: str | None = None
) -> str | None:
    """A problem with a signature over ``digest``, or ``None`` when it verifies (no AWS needed).

    The key decides how it is checked: PSS with SHA-256 for RSA, ECDSA with its curve's hash
    (``SIGNING_ALGORITHMS``); a record naming another algorithm is refused.
    ``public_key_pem``: the key to check with, when it is known from elsewhere than the record
    (an anchor's key is recorded in the journal, so a replaced file cannot bring its own)."""
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    if record.get("sha256") != digest:
        return "the signature is for another archive (sha256 differs)"
    try:
        pem = public_key_pem or str(record["public_key_pem"])
        public = serialization.load_pem_public_key(pem.encode())
        signature = base64.b64decode(str(record["signature"]), validate=True)
        message = bytes.fromhex(digest)
        algorithm = _algorithm_of(public)
        if algorithm is None:
            return "unsupported public key type"
        if record.get("algorithm", algorithm) != algorithm:
            return f"the signature names another algorithm than this key signs with ({algorithm})"
        if isinstance(public, rsa.RSAPublicKey):
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
            public.verify(signature, message, pss, hashes.SHA256())
        elif isinstance(public, ec.EllipticCurvePublicKey):
            hashed = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}
            public.verify(signature, message, ec.ECDSA(hashed[algorithm[-3:]]))
    except (InvalidSignature, KeyError, ValueError, TypeError, UnsupportedAlgorithm):
        return "the signature does not verify"
    return None


def _algorithm_of(public: Any) -> str | None:
    """The algorithm KMS signs with for this public key (``SIGNING_ALGORITHMS``), if any."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(public, rsa.RSAPublicKey):
        return "RSASSA_PSS_SHA_256"
    if isinstance(public, ec.EllipticCurvePublicKey):
        return _ECDSA_BY_CURVE.get(public.curve.name)
    return None

"""CloudTrail digest files as AWS documents them: names, fields, the signed string, keys.

Every hour a trail with log file validation writes a digest file (gzipped JSON) listing the
SHA-256 of the *uncompressed* content of each log file it delivered, chained to the previous
digest (its S3 location, the SHA-256 of its uncompressed content, its signature) and signed
with SHA256withRSA by a per-Region key. The signature (hex) is the digest object's S3 metadata
``x-amz-meta-signature``; the public key is what ``cloudtrail:ListPublicKeys`` returns, found
by the digest's ``digestPublicKeyFingerprint``.

- https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-log-file-validation-digest-file-structure.html
- https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-log-file-custom-validation.html

The string signed is ``digestEndTime\\ndigestS3Bucket/digestS3Object\\nhex(sha256(uncompressed
digest))\\npreviousDigestSignature`` (``null`` for the first digest of a chain), as the AWS
CLI's ``validate-logs`` builds it. ``ListPublicKeys``'s ``Value`` is a blob: base64 of the key's
DER (PKCS #1 ``RSAPublicKey``) on the wire, which boto3 decodes to the DER while the AWS CLI v1
keeps it as text (it does not decode blobs) and decodes it itself; ``der_key`` accepts either.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

SIGNATURE_ALGORITHM = "SHA256withRSA"
#: What every digest must hold before it can be checked (as the AWS CLI requires).
REQUIRED = (
    "digestPublicKeyFingerprint",
    "digestS3Bucket",
    "digestS3Object",
    "previousDigestSignature",
    "digestEndTime",
    "digestStartTime",
)
#: ``ACCOUNT_CloudTrail-Digest_REGION_TRAIL_HOMEREGION_YYYYMMDDTHHMMSSZ.json.gz`` (a backfill
#: digest ends ``_backfill.json.gz``).
DIGEST_NAME = re.compile(
    r"^(?P<account>\d{12})_CloudTrail-Digest_(?P<region>[a-z0-9-]+)_(?P<trail>.+)_"
    r"(?P<home>[a-z]{2}(?:-[a-z]+)+-\d)_(?P<end>\d{8}T\d{6}Z)(?P<backfill>_backfill)?\.json\.gz$"
)
#: ``ACCOUNT_CloudTrail_REGION_YYYYMMDDTHHMMZ_UNIQUE.json.gz``: a log file's name.
LOG_NAME = re.compile(
    r"^(?P<account>\d{12})_CloudTrail_(?P<region>[a-z0-9-]+)_(?P<day>\d{8})T(?P<time>\d{4})Z_"
)
_TIME = "%Y-%m-%dT%H:%M:%SZ"


def iso(moment: datetime) -> str:
    """``moment`` as a digest writes times (UTC, to the second)."""
    return moment.astimezone(timezone.utc).strftime(_TIME)


def parse_iso(text: str) -> datetime | None:
    """A digest's time, or ``None`` when it is none."""
    try:
        return datetime.strptime(text, _TIME).replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        return None


def log_hash(uncompressed: bytes | bytearray | memoryview) -> str:
    """The hash a digest lists for a log file: hex SHA-256 of its uncompressed content."""
    return hashlib.sha256(uncompressed).hexdigest()


def digest_key(
    account: str,
    region: str,
    trail: str,
    home_region: str,
    end: datetime,
    *,
    prefix: str = "",
    organization: str | None = None,
) -> str:
    """Where CloudTrail puts the digest ending at ``end``."""
    end = end.astimezone(timezone.utc)
    owner = f"{organization}/{account}" if organization else account
    key = (
        f"AWSLogs/{owner}/CloudTrail-Digest/{region}/{end:%Y/%m/%d}/"
        f"{account}_CloudTrail-Digest_{region}_{trail}_{home_region}_{end:%Y%m%dT%H%M%SZ}.json.gz"
    )
    return f"{prefix.strip('/')}/{key}" if prefix.strip("/") else key


def string_to_sign(digest: Mapping[str, Any], uncompressed: bytes) -> bytes:
    """The bytes CloudTrail signs for ``digest`` (its fields, decoded from ``uncompressed``)."""
    previous = digest.get("previousDigestSignature")
    return (
        f"{digest['digestEndTime']}\n{digest['digestS3Bucket']}/{digest['digestS3Object']}\n"
        f"{hashlib.sha256(uncompressed).hexdigest()}\n{'null' if previous is None else previous}"
    ).encode()


def encode(digest: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """A digest's uncompressed JSON and its gzipped file, as CloudTrail would write them."""
    uncompressed = json.dumps(digest, separators=(",", ":")).encode()
    return uncompressed, gzip.compress(uncompressed, mtime=0)


def der_key(value: bytes | str) -> bytes:
    """A public key's DER, from ``ListPublicKeys``'s ``Value`` as boto3 returns it (the DER),
    as ``aws cloudtrail list-public-keys`` prints it (base64 of the DER), or base64 of that;
    ``ValueError`` when it is none of these."""
    raw = value.encode() if isinstance(value, str) else bytes(value)
    for _ in range(3):
        if raw[:1] == b"\x30":  # a DER SEQUENCE
            return raw
        try:
            raw = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            break
    raise ValueError("a public key is not DER, nor base64 of DER")


@dataclass(frozen=True)
class PublicKey:
    """One of a Region's CloudTrail public keys: what checks the digests it signed."""

    fingerprint: str
    der: bytes
    region: str | None = None
    valid_from: str | None = None
    valid_until: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "value": base64.b64encode(self.der).decode(),
            "region": self.region,
            "valid_from": self.valid_from,
            "valid_until": self.valid_until,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> PublicKey:
        """One key as ``to_json`` wrote it; ``ValueError``/``KeyError`` when it is not one."""
        return cls(
            fingerprint=str(value["fingerprint"]),
            der=der_key(str(value["value"])),
            region=value.get("region"),
            valid_from=value.get("valid_from"),
            valid_until=value.get("valid_until"),
        )


def load_public_keys(data: bytes, region: str | None = None) -> list[PublicKey]:
    """Public keys from a file: kmsir's own list (``PublicKey.to_json`` each, or an object
    whose ``public_keys`` is that list: a bundle's ``trail-integrity.json``) or what
    ``aws cloudtrail list-public-keys`` prints (``PublicKeyList``; ``region``: where it was
    asked). ``ValueError`` naming what is wrong."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    try:
        if isinstance(document, dict) and "PublicKeyList" in document:
            return [
                PublicKey(
                    fingerprint=str(k["Fingerprint"]),
                    der=der_key(str(k["Value"])),
                    region=region,
                    valid_from=_text_time(k.get("ValidityStartTime")),
                    valid_until=_text_time(k.get("ValidityEndTime")),
                )
                for k in document["PublicKeyList"]
            ]
        listed = document.get("public_keys") if isinstance(document, dict) else document
        if not isinstance(listed, list):
            raise ValueError("neither a list of public keys nor a PublicKeyList")
        return [PublicKey.from_json(k) for k in listed]
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"a public key entry lacks {exc}") from None


def _text_time(value: Any) -> str | None:
    if isinstance(value, datetime):
        return iso(value)
    return None if value is None else str(value)


def fingerprint(der: bytes) -> str:
    """The fingerprint a digest names its key by: hex MD5 of the key's DER (the sandbox's
    convention; a real key's fingerprint is whatever ``ListPublicKeys`` says)."""
    return hashlib.md5(der, usedforsecurity=False).hexdigest()


def verify(der: bytes, signature_hex: str, digest: Mapping[str, Any], uncompressed: bytes) -> bool:
    """Whether ``signature_hex`` is the SHA256withRSA signature of ``digest`` by the key whose
    DER is ``der`` (PKCS #1 or SubjectPublicKeyInfo). ``ValueError``: the key cannot be loaded."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = serialization.load_der_public_key(der)  # PKCS #1 or SubjectPublicKeyInfo
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the public key is not an RSA key")
    try:
        signature = bytes.fromhex(signature_hex)
    except (TypeError, ValueError):
        return False
    try:
        key.verify(
            signature, string_to_sign(digest, uncompressed), padding.PKCS1v15(), hashes.SHA256()
        )
    except InvalidSignature:
        return False
    return True


def sign(private_key: Any, digest: Mapping[str, Any], uncompressed: bytes) -> str:
    """The hex SHA256withRSA signature of ``digest`` with ``private_key`` (a cryptography RSA
    private key): what the sandbox's trail, and the tests, sign digests with."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    signed: bytes = private_key.sign(
        string_to_sign(digest, uncompressed), padding.PKCS1v15(), hashes.SHA256()
    )
    return signed.hex()


def public_der(private_key: Any) -> bytes:
    """The PKCS #1 DER of ``private_key``'s public half (what ``ListPublicKeys`` serves)."""
    from cryptography.hazmat.primitives import serialization

    der: bytes = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    return der

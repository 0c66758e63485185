"""A signed CloudTrail trail built in memory, for the log file integrity tests.

``build()`` makes a trail of ``hours`` hourly periods: in each, ``logs_per_hour`` log files
(gzipped ``{"Records": [...]}``, each with ``records`` KMS ``Decrypt`` events of ``KEY_ARN``)
and one digest listing them, chained to the previous digest and signed with ``KEY`` (RSA-2048,
SHA256withRSA) exactly as CloudTrail does (``kmsir.trail.digest_format``). Then:

- read it as the validator does: ``trail.log_files()``, ``trail.digest_files()``,
  ``trail.public_keys()``, ``trail.days()``, or all at once ``trail.check()``;
- tamper with it: ``alter_log``, ``delete_log``, ``delete_digest``, ``resign`` (a digest's
  signature made with another key), ``replace_digest`` (a digest rewritten and correctly
  signed, so its successor's link no longer matches it), ``unsign`` (metadata lost);
- vary it: ``build(region=..., signer=...)`` (a key ``public_keys()`` does not list),
  ``build(backfill=True)`` (``..._backfill.json.gz`` digests), ``build(previous=...)`` (the
  first digest links to one elsewhere, e.g. in the trail's former bucket);
- store it: ``write(root)`` (the ``AWSLogs/...`` layout on disk, no S3 metadata, optionally a
  ``signatures.json`` sidecar), ``put(s3)`` (objects with ``signature`` metadata, into moto);
  ``gunzip(root)`` does to a copy what ``gunzip -r`` does.

Names: ``trail.logs`` / ``trail.digests`` map a file name to its ``Stored`` (S3 key, bytes,
signature), oldest first; ``trail.log_names(hour)`` / ``trail.digest_name(hour)`` find them.

    trail = digestkit.build(hours=3)
    trail.delete_log(trail.log_names(1)[0])
    result = trail.check()
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

from kmsir.trail import digest_format as fmt
from kmsir.trail.integrity import DigestFile, LogFile, Result, check

ACCOUNT = "123456789012"
REGION = "eu-west-1"
TRAIL = "kmsir-trail"
BUCKET = "kmsir-trail-bucket"
START = datetime(2026, 11, 20, 9, tzinfo=timezone.utc)
KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{KEY_ID}"


def private_key(which: str = "trail") -> Any:
    """An RSA-2048 private key, one per ``which`` per process: ``"trail"`` signs the trail,
    any other name is a key CloudTrail does not know (for re-signing)."""
    return _generate(which)


@cache
def _generate(which: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa

    made = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = fmt.public_der(made)
    if der in _MADE.values():  # conftest's rsa_keys_made_once hands out one key for all
        raise RuntimeError("digestkit needs distinct RSA keys: not with rsa_keys_made_once")
    _MADE[which] = der
    return made


_MADE: dict[str, bytes] = {}


def public_key(which: str = "trail", region: str = REGION) -> fmt.PublicKey:
    """``private_key(which)``'s public half as ``ListPublicKeys`` would list it."""
    der = fmt.public_der(private_key(which))
    return fmt.PublicKey(
        fingerprint=fmt.fingerprint(der),
        der=der,
        region=region,
        valid_from=fmt.iso(START - timedelta(days=30)),
        valid_until=None,
    )


def event(moment: datetime, n: int = 0) -> dict[str, Any]:
    """A KMS ``Decrypt`` record of ``KEY_ARN`` at ``moment``."""
    return {
        "eventVersion": "1.08",
        "eventID": f"ev-{moment:%Y%m%dT%H%M%S}-{n}",
        "eventTime": fmt.iso(moment),
        "eventSource": "kms.amazonaws.com",
        "eventName": "Decrypt",
        "awsRegion": REGION,
        "recipientAccountId": ACCOUNT,
        "resources": [{"ARN": KEY_ARN, "type": "AWS::KMS::Key", "accountId": ACCOUNT}],
    }


def log_gz(records: list[dict[str, Any]]) -> bytes:
    """A log file's bytes: ``{"Records": records}``, gzipped."""
    return gzip.compress(json.dumps({"Records": records}).encode(), mtime=0)


@dataclass
class Stored:
    """One object of the trail bucket: its key (without the bucket), bytes, signature."""

    key: str
    body: bytes
    signature: str | None = None


@dataclass
class Trail:
    """A trail's log files and signed digests (see the module's docstring)."""

    bucket: str = BUCKET
    account: str = ACCOUNT
    region: str = REGION
    name: str = TRAIL
    prefix: str = ""
    logs: dict[str, Stored] = field(default_factory=dict)
    digests: dict[str, Stored] = field(default_factory=dict)
    hours: list[tuple[datetime, datetime]] = field(default_factory=list)
    listed: dict[str, list[str]] = field(default_factory=dict)  # digest name -> log names

    # -- reading, as the validator does ---------------------------------------------------

    def log_files(self, *, s3: bool = True) -> list[LogFile]:
        """The log files present, hashed (``s3``: ``s3://`` locations, else bare keys)."""
        files = []
        for stored in self.logs.values():
            try:
                sha: str | None = fmt.log_hash(gzip.decompress(stored.body))
            except (OSError, EOFError):
                sha = None
            files.append(LogFile(self._where(stored, s3), sha))
        return files

    def digest_files(self, *, signed: bool = True, s3: bool = True) -> list[DigestFile]:
        """The digests present; ``signed=False``: as a local copy, without S3 metadata."""
        return [
            DigestFile(
                self._where(stored, s3),
                stored.body,
                stored.signature if signed else None,
                fmt.SIGNATURE_ALGORITHM if signed else None,
            )
            for stored in self.digests.values()
        ]

    def public_keys(self) -> list[fmt.PublicKey]:
        return [public_key("trail", self.region)]

    def days(self) -> set[tuple[str, str, str]]:
        """Every (account, region, day) the trail's hours touch: the folders a reader lists."""
        return {
            (self.account, self.region, f"{moment:%Y/%m/%d}")
            for start, end in self.hours
            for moment in (start, end - timedelta(seconds=1))
        }

    def check(self, *, signed: bool = True) -> Result:
        """``integrity.check`` over everything present."""
        return check(
            self.log_files(),
            self.digest_files(signed=signed),
            self.public_keys(),
            days=self.days(),
        )

    def log_names(self, hour: int) -> list[str]:
        """The log files delivered in the ``hour``-th period (0 = the oldest)."""
        return list(self.listed[self.digest_name(hour)])

    def digest_name(self, hour: int) -> str:
        """The ``hour``-th digest's name (0 = the oldest)."""
        return list(self.listed)[hour]

    def digest(self, name: str) -> dict[str, Any]:
        """A present digest's fields."""
        document: dict[str, Any] = json.loads(gzip.decompress(self.digests[name].body))
        return document

    # -- tampering -------------------------------------------------------------------------

    def alter_log(self, name: str) -> None:
        """Change one byte of a log file's content (kept valid gzip)."""
        content = bytearray(gzip.decompress(self.logs[name].body))
        at = content.index(b"Decrypt")
        content[at] = ord("d")
        self.logs[name].body = gzip.compress(bytes(content), mtime=0)

    def delete_log(self, name: str) -> None:
        del self.logs[name]

    def delete_digest(self, name: str) -> None:
        del self.digests[name]

    def resign(self, name: str, which: str = "attacker") -> None:
        """Sign a digest again with ``private_key(which)`` (unknown to ``public_keys()``)."""
        stored = self.digests[name]
        uncompressed = gzip.decompress(stored.body)
        stored.signature = fmt.sign(private_key(which), json.loads(uncompressed), uncompressed)

    def replace_digest(self, name: str, change: Callable[[dict[str, Any]], None]) -> None:
        """Rewrite a digest (``change`` edits its fields) and sign it correctly with the
        trail's key: valid on its own, but no longer what its successor recorded."""
        document = self.digest(name)
        change(document)
        uncompressed, gz = fmt.encode(document)
        self.digests[name].body = gz
        self.digests[name].signature = fmt.sign(private_key(), document, uncompressed)

    def forge(self, name: str, which: str = "attacker") -> None:
        """Rewrite a digest to name ``private_key(which)``'s fingerprint and sign it with
        that key: self-consistent, but made with a key CloudTrail does not know."""
        document = self.digest(name)
        document["digestPublicKeyFingerprint"] = public_key(which).fingerprint
        uncompressed, gz = fmt.encode(document)
        self.digests[name].body = gz
        self.digests[name].signature = fmt.sign(private_key(which), document, uncompressed)

    def unsign(self, name: str) -> None:
        """Forget a digest's signature (a copy that lost its S3 metadata)."""
        self.digests[name].signature = None

    # -- storing ---------------------------------------------------------------------------

    def write(self, root: Path, *, sidecar: bool = False) -> Path:
        """Every present file under ``root`` at its S3 key (as ``aws s3 sync`` copies a
        bucket: no signatures); ``sidecar``: a ``signatures.json`` (name -> signature)
        beside each folder of digests. Returns ``root``."""
        for stored in [*self.logs.values(), *self.digests.values()]:
            path = root / stored.key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(stored.body)
        if sidecar:
            folders: dict[Path, dict[str, str]] = {}
            for name, stored in self.digests.items():
                if stored.signature is not None:
                    folders.setdefault((root / stored.key).parent, {})[name] = stored.signature
            for folder, signatures in folders.items():
                (folder / "signatures.json").write_text(json.dumps(signatures, indent=1))
        return root

    def put(self, s3: Any, *, create: bool = True) -> None:
        """Every present file into ``self.bucket`` with ``s3`` (a boto3 S3 client; moto),
        digests with the ``signature`` and ``signature-algorithm`` metadata CloudTrail sets."""
        if create:
            s3.create_bucket(
                Bucket=self.bucket,
                CreateBucketConfiguration={"LocationConstraint": self.region},
            )
        for stored in self.logs.values():
            s3.put_object(Bucket=self.bucket, Key=stored.key, Body=stored.body)
        for stored in self.digests.values():
            metadata = {}
            if stored.signature is not None:
                metadata = {
                    "signature": stored.signature,
                    "signature-algorithm": fmt.SIGNATURE_ALGORITHM,
                }
            s3.put_object(Bucket=self.bucket, Key=stored.key, Body=stored.body, Metadata=metadata)

    def _where(self, stored: Stored, s3: bool) -> str:
        return f"s3://{self.bucket}/{stored.key}" if s3 else stored.key


def build(
    hours: int = 3,
    logs_per_hour: int = 2,
    *,
    records: int = 2,
    start: datetime = START,
    prefix: str = "",
    bucket: str = BUCKET,
    empty: Collection[int] = (),
    region: str = REGION,
    signer: str = "trail",
    backfill: bool = False,
    previous: tuple[str, str, str, str] | None = None,
) -> Trail:
    """A trail of ``hours`` hourly digests from ``start``, chained and signed; hours in
    ``empty`` deliver no log file (their digest lists none, as CloudTrail's do).
    ``signer``: the ``private_key`` signing the digests; ``backfill``: backfill digests;
    ``previous``: (bucket, key, sha256, signature) of the digest the first one links to."""
    trail = Trail(bucket=bucket, prefix=prefix, region=region)
    # bucket, key, sha256 of uncompressed, signature
    for hour in range(hours):
        begin, end = start + timedelta(hours=hour), start + timedelta(hours=hour + 1)
        trail.hours.append((begin, end))
        entries = []
        for n in range(0 if hour in empty else logs_per_hour):
            moment = begin + timedelta(minutes=5 + n * 50 // max(logs_per_hour, 1))
            name = (
                f"{trail.account}_CloudTrail_{trail.region}_{moment:%Y%m%dT%H%MZ}_"
                f"h{hour}n{n}.json.gz"
            )
            key = _under(
                prefix,
                f"AWSLogs/{trail.account}/CloudTrail/{trail.region}/{moment:%Y/%m/%d}/{name}",
            )
            content = json.dumps({"Records": [event(moment, i) for i in range(records)]}).encode()
            trail.logs[name] = Stored(key, gzip.compress(content, mtime=0))
            entries.append(
                {
                    "s3Bucket": bucket,
                    "s3Object": key,
                    "hashValue": fmt.log_hash(content),
                    "hashAlgorithm": "SHA-256",
                    "newestEventTime": fmt.iso(moment),
                    "oldestEventTime": fmt.iso(moment),
                }
            )
        key = fmt.digest_key(
            trail.account, trail.region, trail.name, trail.region, end, prefix=prefix
        )
        if backfill:
            key = key.removesuffix(".json.gz") + "_backfill.json.gz"
        document: dict[str, Any] = {
            "awsAccountId": trail.account,
            "digestStartTime": fmt.iso(begin),
            "digestEndTime": fmt.iso(end),
            "digestS3Bucket": bucket,
            "digestS3Object": key,
            "digestPublicKeyFingerprint": public_key(signer).fingerprint,
            "digestSignatureAlgorithm": fmt.SIGNATURE_ALGORITHM,
            "newestEventTime": entries[-1]["newestEventTime"] if entries else None,
            "oldestEventTime": entries[0]["oldestEventTime"] if entries else None,
            "previousDigestS3Bucket": previous[0] if previous else None,
            "previousDigestS3Object": previous[1] if previous else None,
            "previousDigestHashValue": previous[2] if previous else None,
            "previousDigestHashAlgorithm": "SHA-256" if previous else None,
            "previousDigestSignature": previous[3] if previous else None,
            "logFiles": entries,
        }
        uncompressed, gz = fmt.encode(document)
        signature = fmt.sign(private_key(signer), document, uncompressed)
        name = _basename(key)
        trail.digests[name] = Stored(key, gz, signature)
        trail.listed[name] = [_basename(str(e["s3Object"])) for e in entries]
        previous = (bucket, key, fmt.log_hash(uncompressed), signature)
    return trail


def gunzip(root: Path) -> Path:
    """``gunzip -r root``: every ``*.gz`` file under ``root`` replaced by its content, named
    without the ``.gz``. Returns ``root``."""
    for path in sorted(root.rglob("*.gz")):
        path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    return root


def _under(prefix: str, key: str) -> str:
    return f"{prefix.strip('/')}/{key}" if prefix.strip("/") else key


def _basename(key: str) -> str:
    return key.rsplit("/", 1)[-1]

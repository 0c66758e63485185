"""Reading a digest file for ``integrity.check``: bounded in size, decoded, its required
fields checked; whatever the bytes, it never raises (a hostile digest is ``unreadable``).
A digest ``gunzip -r`` left as ``...json`` (plain JSON) reads as its ``...json.gz`` self: its
SHA-256 and signature are of the uncompressed content."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kmsir.trail import digest_format as fmt
from kmsir.trail.integrity import (
    NOT_FETCHED,
    UNREADABLE,
    DigestFile,
    DigestStatus,
    basename,
    digest_name,
)


@dataclass
class ReadDigest:
    """A digest file decoded (``doc`` None: unreadable, ``detail`` says why)."""

    file: DigestFile
    group: tuple[str, str, str, str, str] | None = None  # account, region, trail, home, backfill
    end: datetime | None = None  # from the name
    doc: dict[str, Any] | None = None
    sha256: str | None = None  # of the uncompressed content
    uncompressed: bytes = b""
    status: str = ""
    detail: str = ""

    @property
    def name(self) -> str:
        """The digest's name as CloudTrail wrote it (``...json.gz``, a gunzipped copy's too)."""
        return digest_name(self.file.name)

    @property
    def link(self) -> str | None:
        """The name of the digest this one names as its previous one."""
        previous = self.get("previousDigestS3Object")
        return basename(previous) if isinstance(previous, str) and previous else None

    def get(self, name: str) -> Any:
        return self.doc.get(name) if self.doc is not None else None

    def to_status(self) -> DigestStatus:
        start, end = self.get("digestStartTime"), self.get("digestEndTime")
        fingerprint = self.get("digestPublicKeyFingerprint")
        return DigestStatus(
            location=self.file.location,
            name=self.name,
            status=self.status,
            start=start if isinstance(start, str) else None,
            end=end if isinstance(end, str) else (fmt.iso(self.end) if self.end else None),
            fingerprint=fingerprint if isinstance(fingerprint, str) else None,
            region=self.group[1] if self.group else None,
            detail=self.detail,
        )


def read_digest(file: DigestFile) -> ReadDigest:
    """``file`` decoded, its chain found from its name; unreadable when it is larger than
    the caps or not a gzipped JSON digest holding ``fmt.REQUIRED`` and a list of log file
    entries. Never raises, whatever the bytes."""
    read = ReadDigest(file)
    named = fmt.DIGEST_NAME.match(read.name)
    if named:
        read.group = (
            named["account"],
            named["region"],
            named["trail"],
            named["home"],
            named["backfill"] or "",
        )
        read.end = name_time(named["end"])
    if file.problem:
        read.status, read.detail = NOT_FETCHED, file.problem
        return read
    if len(file.gz) > MAX_DIGEST_GZ:
        read.status, read.detail = UNREADABLE, f"larger than {MAX_DIGEST_GZ >> 20} MiB"
        return read
    try:
        plain = file.name.endswith(".json") and not file.gz.startswith(_GZIP_MAGIC)
        read.uncompressed = _plain(file.gz) if plain else _gunzip(file.gz)
    except _TooLarge as exc:
        read.status, read.detail = UNREADABLE, str(exc)
        return read
    except (OSError, EOFError, zlib.error) as exc:
        read.status, read.detail = UNREADABLE, f"not a gzipped JSON document ({exc})"
        return read
    problem = ""
    try:
        doc = json.loads(read.uncompressed)
    except RecursionError:
        problem = "not a JSON document (nested too deep)"
    except ValueError as exc:  # also bad UTF-8 and integers over Python's digit limit
        problem = f"not a JSON document ({exc})"
    if problem:
        read.status, read.detail, read.uncompressed = UNREADABLE, problem, b""
        return read
    problem = _malformed(doc) or ("" if named else "not a CloudTrail digest file name")
    if problem:
        read.status, read.detail, read.uncompressed = UNREADABLE, problem, b""
        return read
    read.doc = doc
    read.sha256 = fmt.log_hash(read.uncompressed)
    return read


#: The most a digest may weigh as stored, and once decompressed (CloudTrail's are kilobytes;
#: a gzip bomb posing as one must not take the memory).
MAX_DIGEST_GZ = 4 * 2**20
MAX_DIGEST_JSON = 16 * 2**20


_GZIP_MAGIC = b"\x1f\x8b"


class _TooLarge(Exception):
    pass


def _plain(data: bytes) -> bytes:
    """A gunzipped copy's JSON, at most ``MAX_DIGEST_JSON`` bytes."""
    if len(data) > MAX_DIGEST_JSON:
        raise _TooLarge(f"larger than {MAX_DIGEST_JSON >> 20} MiB once decompressed")
    return data


def _gunzip(data: bytes) -> bytes:
    """A digest's JSON: one gzip member, at most ``MAX_DIGEST_JSON`` bytes once inflated."""
    inflater = zlib.decompressobj(wbits=31)
    out = inflater.decompress(data, MAX_DIGEST_JSON + 1)
    if len(out) > MAX_DIGEST_JSON:
        raise _TooLarge(f"larger than {MAX_DIGEST_JSON >> 20} MiB once decompressed")
    if not inflater.eof:
        raise EOFError("the gzip stream ends early")
    return out


def _malformed(doc: Any) -> str:
    if not isinstance(doc, dict):
        return "not a JSON object"
    lacking = [name for name in fmt.REQUIRED if name not in doc]
    if lacking:
        return f"lacks {', '.join(lacking)}"
    # the signed fields are text (the first digest of a chain has no previous signature)
    odd = [
        name
        for name in fmt.REQUIRED
        if not isinstance(doc[name], str)
        and not (name == "previousDigestSignature" and doc[name] is None)
    ]
    if odd:
        return f"{', '.join(odd)} not text"
    entries = doc.get("logFiles", [])
    if not isinstance(entries, list) or not all(
        isinstance(e, dict)
        and isinstance(e.get("s3Object"), str)
        and isinstance(e.get("hashValue"), str)
        for e in entries
    ):
        return "its logFiles are not a list of {s3Object, hashValue} entries"
    return ""


def name_time(text: str) -> datetime | None:
    try:
        return datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None

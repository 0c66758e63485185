"""CloudTrail log file integrity: which log files a signed, chained digest proves, and which not.

``check(logs, digests, keys, days=...)`` is pure: it takes the log files read (name and
SHA-256 of their uncompressed content), the digest files read (bytes and, when known, the
signature from their S3 metadata) and the Region's public keys, and gives each log file a
verdict and each digest a status (the strings below). Files are matched to digest entries by
file name without a trailing ``.gz`` (``match_name``), so S3 objects and local copies in any
layout check alike, gunzipped ones too (a log file's hash is of its uncompressed content).

Digests form one chain per (account, Region, trail, home Region, backfill), each naming the
previous one with the SHA-256 of its uncompressed content and its signature. The chain is
walked newest to oldest: a digest is ``valid`` when its own signature verifies and the next
digest's link, when it names it, matches it. A digest without a signature of its own (a
``aws s3 sync`` copy loses S3 metadata) takes it from the next digest's link, else it is
``signature unavailable`` (unproven, not a failure).

- https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-log-file-validation-intro.html
- https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-log-file-custom-validation.html
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from kmsir.trail import digest_format as fmt

# Log file verdicts.
VALIDATED = "validated"
HASH_MISMATCH = "hash mismatch"
DELETED = "deleted"
NOT_COVERED = "not covered"
DIGEST_MISSING = "digest missing"
DIGEST_SIGNATURE_INVALID = "digest signature invalid"
CHAIN_BROKEN = "chain broken"
VERDICTS = (
    VALIDATED,
    HASH_MISMATCH,
    DELETED,
    DIGEST_MISSING,
    DIGEST_SIGNATURE_INVALID,
    CHAIN_BROKEN,
    NOT_COVERED,
)
#: A log file verdict that proves the trail was tampered with.
TAMPERING = frozenset(
    {HASH_MISMATCH, DELETED, CHAIN_BROKEN, DIGEST_MISSING, DIGEST_SIGNATURE_INVALID}
)
#: A log file verdict that proves nothing either way.
UNPROVEN = frozenset({NOT_COVERED})

# Digest statuses (``CHAIN_BROKEN`` is one too).
VALID = "valid"
SIGNATURE_INVALID = "signature invalid"
UNREADABLE = "unreadable"
MISSING = "missing"
SIGNATURE_UNAVAILABLE = "signature unavailable"
#: Listed, but its GET failed (denied, throttled): its content is unknown, which proves nothing.
NOT_FETCHED = "not fetched"
#: Named by the oldest digest left of its chain, absent, and nothing of the trail older than it
#: is left: what the bucket's lifecycle expiration leaves at a window's start (or a deletion).
EXPIRED = "expired or absent"
STATUSES = (
    VALID,
    SIGNATURE_INVALID,
    UNREADABLE,
    MISSING,
    CHAIN_BROKEN,
    SIGNATURE_UNAVAILABLE,
    NOT_FETCHED,
    EXPIRED,
)
#: A digest status that proves the trail was tampered with (its log files may be intact).
DIGEST_TAMPERING = frozenset({SIGNATURE_INVALID, UNREADABLE, MISSING, CHAIN_BROKEN})
DIGEST_UNPROVEN = frozenset({SIGNATURE_UNAVAILABLE, NOT_FETCHED, EXPIRED})


@dataclass(frozen=True)
class DigestFile:
    """A digest file as read: where, its bytes as stored, its signature when known."""

    location: str  # "s3://bucket/key" or a local path
    gz: bytes
    signature: str | None  # hex, from S3 metadata or a saved copy; None: not known
    algorithm: str | None = None
    #: Why it could not be read at all (``cannot fetch (AccessDenied)``): status ``not fetched``.
    problem: str | None = None

    @property
    def name(self) -> str:
        return basename(self.location)


@dataclass(frozen=True)
class LogFile:
    """A log file as read: where, and the SHA-256 of its uncompressed content."""

    location: str  # "s3://bucket/key" or a local path
    sha256: str | None  # None: unreadable

    @property
    def name(self) -> str:
        return basename(self.location)


@dataclass(frozen=True)
class FileVerdict:
    """What the digests say of one log file."""

    location: str
    name: str
    verdict: str
    sha256: str | None  # as read; None: unreadable or absent
    expected: str | None  # as its digest lists it
    digest: str | None  # the name of the digest that lists it (or is missing)
    detail: str = ""


@dataclass(frozen=True)
class DigestStatus:
    """What the check found of one digest (present, or named by the chain and absent)."""

    location: str
    name: str
    status: str
    start: str | None
    end: str | None
    fingerprint: str | None
    region: str | None
    detail: str = ""


@dataclass(frozen=True)
class Result:
    """Every log file's verdict and every digest's status."""

    files: list[FileVerdict] = field(default_factory=list)
    digests: list[DigestStatus] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Log files by verdict (only verdicts found, in ``VERDICTS`` order)."""
        found = Counter(f.verdict for f in self.files)
        return {v: found[v] for v in (*VERDICTS, *sorted(set(found) - set(VERDICTS))) if found[v]}

    def digest_counts(self) -> dict[str, int]:
        found = Counter(d.status for d in self.digests)
        return {s: found[s] for s in (*STATUSES, *sorted(set(found) - set(STATUSES))) if found[s]}

    @property
    def tampering(self) -> bool:
        """Whether any log file or digest proves tampering."""
        return any(f.verdict in TAMPERING for f in self.files) or any(
            d.status in DIGEST_TAMPERING for d in self.digests
        )

    def to_json(self) -> dict[str, Any]:
        """The ``trail-integrity.json`` fields the check knows (the collect step adds
        ``source``, ``window``, ``days``, ``public_keys``, ``kept``, ``saved``, ``signature``)."""
        return {
            "version": 1,
            "tampering": self.tampering,
            "counts": self.counts(),
            "digest_counts": self.digest_counts(),
            "files": [asdict(f) for f in self.files],
            "digests": [asdict(d) for d in self.digests],
        }

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> Result:
        """A result as ``to_json`` (or the collect step) wrote it; ``ValueError`` naming what
        is wrong when it is not one. Keys added by the collect step are accepted and dropped."""
        from kmsir.trail.integrity_text import result_from_json

        return result_from_json(document)

    def summary(self) -> str:
        """One line: counts of log files and digests, and whether tampering was found."""
        from kmsir.trail.integrity_text import summary

        return summary(self)

    def problem_lines(self, limit: int = 20) -> list[str]:
        """One line per failing log file and digest, then the unproven ones (``limit`` at
        most, then "... and N more")."""
        from kmsir.trail.integrity_text import problem_lines

        return problem_lines(self, limit)


def log_day(name: str) -> tuple[str, str, str] | None:
    """(account, Region, "YYYY/MM/DD") from a log or digest file name (a digest's day is
    its end's, the folder CloudTrail puts it in); ``None`` for any other name."""
    base = basename(name)
    log = fmt.LOG_NAME.match(base)
    if log:
        day = log["day"]
        return log["account"], log["region"], f"{day[:4]}/{day[4:6]}/{day[6:]}"
    digest = fmt.DIGEST_NAME.match(digest_name(base))
    if digest:
        end = digest["end"]
        return digest["account"], digest["region"], f"{end[:4]}/{end[4:6]}/{end[6:8]}"
    return None


def check(
    logs: Sequence[LogFile],
    digests: Sequence[DigestFile],
    keys: Sequence[fmt.PublicKey],
    *,
    days: Collection[tuple[str, str, str]],
    keys_problem: str | Mapping[str, str] | None = None,
) -> Result:
    """Each log file's verdict and each digest's status.

    ``days``: the (account, Region, day) whose folders were read: a log file a valid digest
    lists, of such a day, that is not among ``logs`` is ``deleted``; of another day it is not
    reported; a digest the chain names, of such a day, absent, is ``missing`` (``expired or
    absent`` when nothing of its chain nor log file of its account and Region read is older:
    see ``integrity_chain``).
    ``keys_problem``: why ``keys`` may lack a key, for every Region (a str, e.g.
    "ListPublicKeys: AccessDenied") or per Region (Region -> why): a digest of such a Region
    whose key is not found is ``signature unavailable``, saying why; of a Region whose keys
    were had, ``signature invalid``.
    """
    from kmsir.trail.integrity_chain import Chains

    chains = Chains(digests, {k.fingerprint: k for k in keys}, set(days), keys_problem, logs)
    files = chains.verdicts(logs)
    return Result(files=files, digests=chains.statuses())


def match_name(name: str) -> str:
    """A log file's name as matched between digest entries and files read: without a
    trailing ``.gz`` (``gunzip -r`` of an ``aws s3 sync`` copy leaves ``...json``)."""
    return name.removesuffix(".gz")


def digest_name(name: str) -> str:
    """A digest file's name with the ``.gz`` a ``gunzip`` removed put back."""
    return f"{name}.gz" if name.endswith(".json") else name


def basename(location: str) -> str:
    """A location's file name (``s3://`` URL, POSIX or Windows path)."""
    return posixpath.basename(location.replace("\\", "/"))


def unproven_unread(result: Result, unread: Mapping[str, str]) -> Result:
    """``result`` with the log files that could not be read at all (denied, gone while read:
    ``unread``, location -> why) unproven rather than altered: their content is unknown."""
    if not unread:
        return result
    files = [
        replace(f, verdict=NOT_COVERED, detail=f"cannot read ({unread[f.location]})")
        if f.location in unread and f.verdict == HASH_MISMATCH
        else f
        for f in result.files
    ]
    return replace(result, files=files)

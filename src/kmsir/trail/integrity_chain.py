"""The walk behind ``integrity.check``: digests decoded, chains walked newest to oldest, log
files judged by the digest that lists them.

A digest's status, in this order: ``unreadable`` (not gzipped JSON with the required fields);
``chain broken`` when the next digest's link names it with another SHA-256, or names an older
digest (the chain passes by it); ``signature invalid`` when it was moved from where it says it
was written, its key is not among the public keys, or its signature (its own, else the one
the next digest's link records) does not verify; ``signature unavailable`` when it has no
signature; ``chain broken`` when its own signature verifies but the next digest recorded
another; else ``valid``. A link to a digest absent from a day that was read: ``missing``,
unless the link leaves the digest's own bucket or key prefix (the trail's bucket changed: that
bucket was never listed, so the chain read starts there, as the AWS CLI switches bucket).
Links are followed only from digests whose status is ``valid`` or ``signature unavailable``
(a forged digest's link proves nothing); a signature taken from any link is safe, since it
must verify with the public key. A digest whose key is unknown is ``signature unavailable``
when its Region's keys could not be had, or when it is a backfill digest (signed with the key
of when it was generated, which keys asked for the digests' times may not include).

A digest that could not be fetched (``DigestFile.problem``) is ``not fetched`` (unproven), its
period's log files ``not covered`` saying why; but when its problem is an access refusal
(``AccessDenied``, ``KMS.``) while others of its chain read, ``unreadable``: one digest denied
or re-encrypted under a key the responder cannot use is how a deletion would be hidden, and its
period's log files are ``digest missing``. Other problems (archived by a lifecycle rule:
``InvalidObjectState``; throttled; a server error) prove nothing.

At a window's start, S3 lifecycle expiration leaves a chain whose oldest digest names one that
is gone, with nothing older left: that digest is ``expired or absent`` (unproven), not
``missing``, when no digest of its chain and no log file of its account and Region read is
older than it; and the log files the chain's digests list that are absent and older than every
log file read of that account and Region are ``not covered``, not ``deleted``. A deletion in
the middle of what is left stays a failure.

Files named otherwise than CloudTrail names digests (``._<digest>`` of a macOS copy) are not
digests: ignored. Log files match digest entries by name without a trailing ``.gz``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kmsir.trail import digest_format as fmt
from kmsir.trail.integrity import (
    CHAIN_BROKEN,
    DELETED,
    DIGEST_MISSING,
    DIGEST_SIGNATURE_INVALID,
    EXPIRED,
    HASH_MISMATCH,
    MISSING,
    NOT_COVERED,
    NOT_FETCHED,
    SIGNATURE_INVALID,
    SIGNATURE_UNAVAILABLE,
    UNREADABLE,
    VALID,
    VALIDATED,
    DigestFile,
    DigestStatus,
    FileVerdict,
    LogFile,
    basename,
    digest_name,
    log_day,
    match_name,
)
from kmsir.trail.integrity_read import (  # the caps are part of this module's word
    MAX_DIGEST_GZ,
    MAX_DIGEST_JSON,
    ReadDigest,
    name_time,
    read_digest,
)

__all__ = ["MAX_DIGEST_GZ", "MAX_DIGEST_JSON", "Chains", "digest_end", "log_time"]

#: Which digest's word counts for a log file several digests list.
_RANK = {VALID: 0, CHAIN_BROKEN: 1, SIGNATURE_INVALID: 1, SIGNATURE_UNAVAILABLE: 2}
#: Statuses whose links are followed.
_TRUSTED = (VALID, SIGNATURE_UNAVAILABLE)
#: Said of a failure found against a digest whose signature could not be checked.
_UNCHECKED = {SIGNATURE_UNAVAILABLE: " (that digest's signature could not be checked)"}
#: Said of what is gone from before everything left of a trail.
_EXPIRED = "older than anything left of this trail: expired by the bucket's lifecycle, or deleted"
#: In a digest's fetch problem: an access refusal (S3's, or KMS's for an SSE-KMS object).
_REFUSALS = ("AccessDenied", "KMS.")


@dataclass(frozen=True)
class _Gap:
    """Where a missing digest's log files would have been named."""

    account: str
    region: str
    start: datetime
    end: datetime
    digest: str
    why: str = "is missing"
    verdict: str = DIGEST_MISSING
    detail: str = ""  # the log files' detail, when not "its period's digest ... {why}"


class Chains:
    """The digests read, walked; then the log files judged (see the module's docstring)."""

    def __init__(
        self,
        digests: Sequence[DigestFile],
        keys: dict[str, fmt.PublicKey],
        days: set[tuple[str, str, str]],
        keys_problem: str | Mapping[str, str] | None,
        logs: Sequence[LogFile] = (),
    ) -> None:
        self.keys, self.days, self.keys_problem = keys, days, keys_problem
        self.read: dict[str, ReadDigest] = {}
        for file in digests:
            name = digest_name(file.name)
            if name not in self.read and fmt.DIGEST_NAME.match(name):  # the first copy
                self.read[name] = read_digest(file)
        #: (account, Region) -> the time of its oldest log file read.
        self.oldest: dict[tuple[str, str], datetime] = {}
        for log in logs:
            moment, day = log_time(log.name), log_day(log.name)
            if moment is not None and day is not None:
                self.oldest[day[:2]] = min(moment, self.oldest.get(day[:2], moment))
        self.missing: list[DigestStatus] = []
        self.gaps: list[_Gap] = []
        #: Chains whose oldest digest names one ``expired or absent``.
        self.expired: set[tuple[str, ...]] = set()
        groups: dict[tuple[str, ...], list[ReadDigest]] = defaultdict(list)
        for digest in self.read.values():
            if digest.group is not None and digest.end is not None:
                groups[digest.group].append(digest)
        for chain in groups.values():
            ordered = sorted(chain, key=lambda d: (d.end, d.name))
            self._withheld(ordered)
            self._walk(ordered)

    def statuses(self) -> list[DigestStatus]:
        """Every digest read, and every one missing, oldest first."""
        found = [d.to_status() for d in self.read.values()] + self.missing
        return sorted(found, key=lambda s: (s.end or "", s.name))

    def verdicts(self, logs: Sequence[LogFile]) -> list[FileVerdict]:
        """Each log file's verdict, then each log file a valid digest lists, of a day read,
        that is absent (``deleted``); by name."""
        listed: dict[str, tuple[dict[str, Any], ReadDigest]] = {}
        for digest in self.read.values():
            if digest.status not in _RANK:
                continue
            for entry in digest.get("logFiles") or ():
                key = match_name(basename(entry["s3Object"]))
                if key not in listed or _RANK[digest.status] < _RANK[listed[key][1].status]:
                    listed[key] = (entry, digest)
        found = [self._verdict(log, listed.get(match_name(log.name))) for log in logs]
        present = {match_name(log.name) for log in logs}
        for key, (entry, digest) in listed.items():
            name = basename(entry["s3Object"])
            if key in present or digest.status not in _TRUSTED or log_day(name) not in self.days:
                continue
            bucket = entry.get("s3Bucket")
            location = f"s3://{bucket if isinstance(bucket, str) else '?'}/{entry['s3Object']}"
            detail = f"listed in {digest.name}, absent" + _UNCHECKED.get(digest.status, "")
            verdict = DELETED
            if self._before_everything(digest, name):
                verdict, detail = NOT_COVERED, f"listed in {digest.name}, absent; {_EXPIRED}"
            found.append(
                FileVerdict(location, name, verdict, None, entry["hashValue"], digest.name, detail)
            )
        return sorted(found, key=lambda f: (f.name, f.location))

    def _verdict(
        self, log: LogFile, listing: tuple[dict[str, Any], ReadDigest] | None
    ) -> FileVerdict:
        if listing is None:
            gap = self._gap(log.name)
            if gap:
                detail = gap.detail or f"its period's digest {gap.digest} {gap.why}"
                return FileVerdict(
                    log.location, log.name, gap.verdict, log.sha256, None, gap.digest, detail
                )
            detail = "listed in no digest read"
            return FileVerdict(log.location, log.name, NOT_COVERED, log.sha256, None, None, detail)
        entry, digest = listing
        expected: str = entry["hashValue"]
        verdict, detail = VALIDATED, ""
        if digest.status in _TRUSTED and log.sha256 != expected:
            # a digest of the trail's own lists another content: tampered, whether or not
            # that digest's signature could be checked
            verdict = HASH_MISMATCH
            detail = (
                "unreadable: not a complete gzip file"
                if log.sha256 is None
                else f"its content's SHA-256 is not the one {digest.name} lists"
            ) + _UNCHECKED.get(digest.status, "")
        elif digest.status == VALID:
            pass  # validated
        elif digest.status == SIGNATURE_UNAVAILABLE:
            verdict = NOT_COVERED
            detail = f"listed in {digest.name}, whose signature is unavailable (hash matches)"
        else:
            verdict = CHAIN_BROKEN if digest.status == CHAIN_BROKEN else DIGEST_SIGNATURE_INVALID
            detail = f"listed in {digest.name}: {digest.detail}"
        return FileVerdict(
            log.location, log.name, verdict, log.sha256, expected, digest.name, detail
        )

    def _gap(self, name: str) -> _Gap | None:
        moment, day = log_time(name), log_day(name)
        if moment is None or day is None:
            return None
        for gap in self.gaps:
            if (gap.account, gap.region) == day[:2] and gap.start <= moment < gap.end:
                return gap
        return None

    def _before_everything(self, digest: ReadDigest, name: str) -> bool:
        """Whether log file ``name``, listed by ``digest`` and absent, is older than every log
        file read of its account and Region, in a chain whose start expired."""
        moment, day = log_time(name), log_day(name)
        if digest.group not in self.expired or moment is None or day is None:
            return False
        oldest = self.oldest.get(day[:2])
        return oldest is None or moment < oldest

    def _withheld(self, chain: list[ReadDigest]) -> None:
        """Digests of ``chain`` that could not be fetched: a refused one while others of the
        chain were read is ``unreadable``, its period's log files ``digest missing``; any
        other stays ``not fetched``, its period's log files ``not covered``."""
        readable = any(d.doc is not None for d in chain)
        for index, digest in enumerate(chain):
            if digest.status != NOT_FETCHED or digest.group is None or digest.end is None:
                continue
            before = chain[index - 1].end if index else None
            start = before or digest.end - timedelta(hours=1)
            account, region = digest.group[:2]
            problem = digest.file.problem or "cannot fetch"
            if readable and any(word in problem for word in _REFUSALS):
                digest.status = UNREADABLE
                digest.detail = f"{problem}, while the chain's other digests could be read"
                self.gaps.append(
                    _Gap(account, region, start, digest.end, digest.name, "could not be read")
                )
                continue
            code = problem[problem.rfind("(") + 1 : -1] if problem.endswith(")") else problem
            detail = f"its digest could not be fetched ({code})"
            gap = _Gap(account, region, start, digest.end, digest.name, "", NOT_COVERED, detail)
            self.gaps.append(gap)

    def _walk(self, chain: list[ReadDigest]) -> None:
        """Statuses of one chain's digests (oldest first), judged newest first."""
        successor: ReadDigest | None = None
        for index in reversed(range(len(chain))):
            digest = chain[index]
            if digest.doc is not None:
                digest.status, digest.detail = self._judge(digest, successor)
                digest.uncompressed = b""  # hashed and checked: not needed any more
                if digest.status in _TRUSTED:
                    self._follow(digest, chain[:index])
            successor = digest

    def _judge(self, digest: ReadDigest, successor: ReadDigest | None) -> tuple[str, str]:
        trusted = successor if successor and successor.status in _TRUSTED else None
        linked = trusted is not None and trusted.link == digest.name
        if trusted and linked and trusted.get("previousDigestHashValue") != digest.sha256:
            return CHAIN_BROKEN, f"{trusted.name} records another SHA-256 for it"
        if trusted and not linked and trusted.link is not None:
            passes = digest_end(trusted.link)
            if passes is not None and digest.end is not None and passes <= digest.end:
                return CHAIN_BROKEN, (
                    f"the chain passes from {trusted.name} to {trusted.link}, not through it"
                )
        moved = _moved(digest)
        if moved:
            return SIGNATURE_INVALID, moved
        signature, source = digest.file.signature, "its signature"
        if signature is None and successor is not None and successor.link == digest.name:
            recorded = successor.get("previousDigestSignature")
            signature = recorded if isinstance(recorded, str) else None
            source = f"the signature {successor.name} records"
        if signature is None:
            return (
                SIGNATURE_UNAVAILABLE,
                "no signature (no S3 metadata) and no later digest names it",
            )
        if digest.file.algorithm not in (None, fmt.SIGNATURE_ALGORITHM):
            return (
                SIGNATURE_INVALID,
                f"signature algorithm {digest.file.algorithm} is not supported",
            )
        fingerprint = digest.get("digestPublicKeyFingerprint")
        key = self.keys.get(fingerprint) if isinstance(fingerprint, str) else None
        assert digest.group is not None  # chains are grouped by name
        problem = self._keys_problem(digest.group[1])
        if key is None and digest.group[4]:
            return SIGNATURE_UNAVAILABLE, (
                "a backfill digest, signed with the key of when it was generated: no public "
                f"key has fingerprint {fingerprint}" + (f" ({problem})" if problem else "")
            )
        if key is None and problem:
            # the Region's keys could not be had: unproven, no sign of forgery
            return SIGNATURE_UNAVAILABLE, f"no public key to check it ({problem})"
        if key is None:
            return SIGNATURE_INVALID, f"no public key (none has fingerprint {fingerprint})"
        try:
            good = fmt.verify(key.der, signature, digest.doc or {}, digest.uncompressed)
        except ValueError as exc:
            return SIGNATURE_INVALID, f"public key {fingerprint} cannot be loaded ({exc})"
        if not good:
            return SIGNATURE_INVALID, f"{source} does not verify with public key {fingerprint}"
        if (
            trusted
            and linked
            and digest.file.signature is not None
            and trusted.get("previousDigestSignature") != digest.file.signature
        ):
            return CHAIN_BROKEN, f"{trusted.name} records another signature for it"
        return VALID, "" if source == "its signature" else f"verified with {source}"

    def _keys_problem(self, region: str) -> str | None:
        """Why ``region``'s public keys may be lacking (``None``: they were had)."""
        if isinstance(self.keys_problem, Mapping):
            return self.keys_problem.get(region) or None
        return self.keys_problem or None

    def _follow(self, digest: ReadDigest, older: list[ReadDigest]) -> None:
        """The digest ``digest`` links to, when absent from a day that was read: missing
        (unless it is in another bucket or under another prefix: never listed)."""
        link = digest.link
        end = digest_end(link) if link else None
        if link is None or end is None or link in self.read or log_day(link) not in self.days:
            return
        if _elsewhere(digest):
            return
        assert digest.group is not None  # chains are grouped by name
        account, region = digest.group[:2]
        before = [d.end for d in older if d.end is not None and d.end < end]
        start = max(before) if before else end - timedelta(hours=1)
        bucket, key = digest.get("previousDigestS3Bucket"), digest.get("previousDigestS3Object")
        status, detail = MISSING, f"{digest.name} names it as its previous digest; absent"
        oldest_log = self.oldest.get((account, region))
        if not before and (oldest_log is None or oldest_log >= end):
            # nothing of the trail older than it is left: the window reaches past retention
            status, detail = EXPIRED, _EXPIRED
            self.expired.add(digest.group)
        self.missing.append(
            DigestStatus(
                location=f"s3://{bucket}/{key}",
                name=link,
                status=status,
                start=None,
                end=fmt.iso(end),
                fingerprint=None,
                region=region,
                detail=detail,
            )
        )
        if status == MISSING:
            self.gaps.append(_Gap(account, region, start, end, link))


def _elsewhere(digest: ReadDigest) -> bool:
    """Whether ``digest``'s previous digest is in another bucket or under another key prefix
    (the part before ``AWSLogs/``) than its own: the trail's bucket or prefix changed."""
    bucket, key = digest.get("digestS3Bucket"), digest.get("digestS3Object")
    previous = digest.get("previousDigestS3Object")
    if digest.get("previousDigestS3Bucket") != bucket or not isinstance(previous, str):
        return True
    return previous.partition("AWSLogs/")[0] != str(key).partition("AWSLogs/")[0]


def _moved(digest: ReadDigest) -> str:
    bucket, key = digest.get("digestS3Bucket"), digest.get("digestS3Object")
    written = f"s3://{bucket}/{key}"
    location = digest.file.location
    if not isinstance(key, str) or basename(key) != digest.name:
        return f"moved from where it was written ({written})"
    if location.startswith("s3://") and location != written:
        return f"moved from where it was written ({written})"
    return ""


def digest_end(name: str) -> datetime | None:
    """The end time in a digest file's name, or ``None``."""
    named = fmt.DIGEST_NAME.match(basename(name))
    return name_time(named["end"]) if named else None


def log_time(name: str) -> datetime | None:
    """The time (to the minute) in a log file's name, or ``None``."""
    log = fmt.LOG_NAME.match(basename(name))
    return name_time(f"{log['day']}T{log['time']}00Z") if log else None

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

A digest that could not be fetched (``DigestFile.problem``) is ``not fetched`` (unproven) when
none of its chain could be read, else ``unreadable``: one digest withheld while its neighbours
read is how a deletion would be hidden, and its period's log files are ``digest missing``.
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
    log_day,
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


@dataclass(frozen=True)
class _Gap:
    """Where a missing digest's log files would have been named."""

    account: str
    region: str
    start: datetime
    end: datetime
    digest: str
    why: str = "is missing"


class Chains:
    """The digests read, walked; then the log files judged (see the module's docstring)."""

    def __init__(
        self,
        digests: Sequence[DigestFile],
        keys: dict[str, fmt.PublicKey],
        days: set[tuple[str, str, str]],
        keys_problem: str | Mapping[str, str] | None,
    ) -> None:
        self.keys, self.days, self.keys_problem = keys, days, keys_problem
        self.read: dict[str, ReadDigest] = {}
        for file in digests:
            self.read.setdefault(file.name, read_digest(file))  # the first copy of a name
        self.missing: list[DigestStatus] = []
        self.gaps: list[_Gap] = []
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
                name = basename(entry["s3Object"])
                if name not in listed or _RANK[digest.status] < _RANK[listed[name][1].status]:
                    listed[name] = (entry, digest)
        found = [self._verdict(log, listed.get(log.name)) for log in logs]
        present = {log.name for log in logs}
        for name, (entry, digest) in listed.items():
            if name in present or digest.status not in _TRUSTED or log_day(name) not in self.days:
                continue
            bucket = entry.get("s3Bucket")
            location = f"s3://{bucket if isinstance(bucket, str) else '?'}/{entry['s3Object']}"
            detail = f"listed in {digest.name}, absent" + _UNCHECKED.get(digest.status, "")
            found.append(
                FileVerdict(location, name, DELETED, None, entry["hashValue"], digest.name, detail)
            )
        return sorted(found, key=lambda f: (f.name, f.location))

    def _verdict(
        self, log: LogFile, listing: tuple[dict[str, Any], ReadDigest] | None
    ) -> FileVerdict:
        if listing is None:
            gap = self._gap(log.name)
            if gap:
                detail = f"its period's digest {gap.digest} {gap.why}"
                return FileVerdict(
                    log.location, log.name, DIGEST_MISSING, log.sha256, None, gap.digest, detail
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

    def _withheld(self, chain: list[ReadDigest]) -> None:
        """Digests of ``chain`` that could not be fetched while others of it were read:
        ``unreadable``, and a gap where their log files would have been named."""
        if not any(d.doc is not None for d in chain):
            return  # nothing of the chain could be read: unproven, no sign of anything
        for index, digest in enumerate(chain):
            if digest.status != NOT_FETCHED or digest.group is None or digest.end is None:
                continue
            digest.status = UNREADABLE
            digest.detail = f"{digest.file.problem}, while the chain's other digests could be read"
            before = chain[index - 1].end if index else None
            start = before or digest.end - timedelta(hours=1)
            account, region = digest.group[:2]
            self.gaps.append(
                _Gap(account, region, start, digest.end, digest.name, "could not be read")
            )

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
        self.missing.append(
            DigestStatus(
                location=f"s3://{bucket}/{key}",
                name=link,
                status=MISSING,
                start=None,
                end=fmt.iso(end),
                fingerprint=None,
                region=region,
                detail=f"{digest.name} names it as its previous digest; absent",
            )
        )
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

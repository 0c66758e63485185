"""``kmsir cloudtrail verify-logs`` and ``scan --verify-logs`` without a playbook: trail log
files proven unaltered by CloudTrail's signed digests (``trail.integrity.check``), read from a
folder (an ``aws s3 sync`` copy), a trail bucket, or the saved copy in a kmsir bundle
(``run.verify_bundle``). Never prints: ``cli`` says what the ``Checked`` holds."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from kmsir.errors import KmsirError, UsageError
from kmsir.trail.match import KeyMatcher

if TYPE_CHECKING:
    from kmsir.aws import ClientFactory
    from kmsir.run.scan import BucketReading
    from kmsir.trail.digest_format import PublicKey
    from kmsir.trail.files import ScanStats
    from kmsir.trail.integrity import DigestFile, Result


@dataclass
class Checked:
    """One check: its answer, how it was reached (notes), and, for a bundle's saved copy,
    the answer recorded then, how the two differ and how many log files and digests
    unproven then the public keys given prove now (not a difference)."""

    result: Result
    notes: list[str] = field(default_factory=list)
    label: str | None = None
    recorded: Result | None = None
    differences: list[str] = field(default_factory=list)
    proven: int = 0

    @property
    def failed(self) -> bool:
        """Tampering found, or a re-check that does not give the recorded answer."""
        return bool(self.result.tampering or self.differences)


@dataclass(frozen=True)
class Keys:
    """Where the public keys come from: a file (``--public-keys``), else ``ListPublicKeys``
    with ``clients`` (``None``: no key at all, every signature unproven)."""

    given: list[PublicKey] | None = None
    where: str | None = None  # the file, for the notes
    clients: Callable[[], ClientFactory] | None = None


class NoKey(KeyMatcher):
    """A matcher that matches nothing: the scan's one read and decompression, for the hashes
    alone (no record is decoded, none is kept)."""

    @property
    def needles(self) -> tuple[bytes, ...]:
        return ()

    def matches(self, event: dict[str, object]) -> bool:
        return False


NOTHING = NoKey(frozenset(), frozenset())


def read_public_keys(path: Path) -> list[PublicKey]:
    """``--public-keys FILE``: kmsir's list, a bundle's ``trail-integrity.json`` or what
    ``aws cloudtrail list-public-keys`` prints; ``UsageError`` naming the file and the fault."""
    from kmsir.inert import one_line
    from kmsir.trail.digest_format import load_public_keys

    shown = one_line(str(path), 200)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"--public-keys {shown}: cannot read: {exc.strerror or exc}") from None
    try:
        keys = load_public_keys(data)
    except ValueError as exc:
        raise UsageError(f"--public-keys {shown}: {one_line(str(exc), 200)}") from None
    if not keys:
        raise UsageError(f"--public-keys {shown}: lists no public key")
    return keys


def check_folder(
    path: Path, keys: Keys, *, since: datetime | None, until: datetime | None
) -> Checked:
    """The log files and digests under ``path`` (a copy of a trail bucket, any layout),
    checked; with a window, only the files of its days (and the day after), as a bucket's
    listing reads them; with ``until`` alone, those of the days up to the day after it. The
    days read (``integrity_local.days_read``): those holding a log file read and, with a
    window, those holding a digest: a copy of part of a trail says nothing of the days it
    lacks. ``UsageError`` when ``path`` holds neither."""
    from kmsir.inert import one_line
    from kmsir.trail import files
    from kmsir.trail.integrity import log_day
    from kmsir.trail.integrity_local import DELIVERY_LAG, days_read, local_digests, window_days

    found = list(files.trail_files([path]))
    logs = [p for p in found if log_day(p.name) is not None]
    others = len(found) - len(logs)
    digests = local_digests([path])
    if not logs and not digests:
        raise UsageError(
            f"{one_line(str(path), 200)}: no CloudTrail log or digest file (looked for "
            f"ACCOUNT_CloudTrail_REGION_*.json.gz and ACCOUNT_CloudTrail-Digest_REGION_*.json.gz "
            f"at any depth)"
        )
    notes = []
    if others:
        notes.append(f"{others} file(s) not named as CloudTrail log files: not checked")
    window = window_days(since, until)
    if window is not None:
        logs = [p for p in logs if _day(log_day(p.name)) in window]
        digests = [d for d in digests if _day(log_day(d.name)) in window]
    elif until is not None:  # no start: every day up to the one after ``until``
        last = f"{until + DELIVERY_LAG:%Y/%m/%d}"
        logs = [p for p in logs if (_day(log_day(p.name)) or "~") <= last]
        digests = [d for d in digests if (_day(log_day(d.name)) or "~") <= last]
        notes.append(
            f"--until without --since: files of the days after {last} (the day after "
            f"--until, for late deliveries) not checked"
        )
    _, stats = files.scan_files(logs, NOTHING, hashes=True)
    days = days_read(stats.hashes, since, until, [d.location for d in digests])
    return _checked(stats, digests, {}, [], keys, days, notes)


def _day(named: tuple[str, str, str] | None) -> str | None:
    return named[2] if named else None


def check_bucket(
    uri: str,
    keys: Keys,
    clients: Callable[[], ClientFactory],
    *,
    since: datetime | None,
    until: datetime | None,
    regions: list[str] | None = None,
) -> Checked:
    """The log files and digests of a trail bucket's window (``s3://bucket/prefix``),
    checked. ``UsageError`` when the prefix holds neither, or for ``until`` without
    ``since`` (a bucket is listed by day from the window's start, or whole)."""
    from kmsir.inert import one_line

    if since is None and until is not None:
        raise UsageError(
            f"{one_line(uri, 200)}: --until without --since (a trail bucket is read by day "
            f"from --since, or whole without either): give --since too"
        )
    from kmsir.actions.base import NullReporter
    from kmsir.actions.trail_integrity import bucket_reading, days_listed
    from kmsir.actions.trail_s3 import looked_for, scan_bucket

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    factory = clients()
    backfills: dict[str, datetime] = {}
    # the digests first, then the log files: a digest written while the logs are read
    # would name files delivered after their listing (``bucket_reading``)
    digests, problems, prefixes = bucket_reading(
        factory.client("s3"), bucket, prefix, regions, since, until, backfills=backfills
    )
    _, stats = scan_bucket(
        factory,
        NullReporter(),
        bucket,
        prefix,
        regions,
        NOTHING,
        since,
        until,
        hashes=True,
        prefixes=prefixes,
    )
    if not stats.hashes and not digests:
        raise UsageError(
            f"{one_line(uri, 200)}: no CloudTrail log or digest file "
            f"(looked for {looked_for(prefix, regions, since, until)})"
        )
    days = days_listed(prefixes, stats.hashes, digests)
    return _checked(stats, digests, backfills, problems, keys, days, [])


def check_scanned(
    stats: ScanStats,
    local: Sequence[Path],
    buckets: Sequence[str],
    keys: Keys,
    clients: Callable[[], ClientFactory],
    *,
    since: datetime | None,
    until: datetime | None,
    reading: Mapping[str, BucketReading] | None = None,
) -> Checked:
    """``scan --verify-logs``: the hashes the scan took (``hashes=True``) checked against
    the digests under the same paths and prefixes, for the same window. Files not named as
    CloudTrail log files (an export) are left out: no digest lists them. Days read: a
    local copy's, those holding a log file read; a bucket's, the day prefixes its scan
    listed. ``reading``: each bucket's digests as the scan fetched them, before it listed
    the log files (``scan.matched_records``); a bucket not there is read now."""
    from kmsir.trail.integrity import log_day
    from kmsir.trail.integrity_local import days_read, local_digests

    digests = local_digests(local) if local else []
    copied = [d.location for d in digests]
    problems: list[str] = []
    backfills: dict[str, datetime] = {}
    prefixes: list[str] = []
    for uri in buckets:
        if reading is not None and uri in reading:
            read = reading[uri]
            digests.extend(read.digests)
            problems.extend(read.problems)
            backfills.update(read.backfills)
            prefixes.extend(read.prefixes)
            continue
        # the AWS layers are imported only to read a bucket
        from kmsir.actions.trail_integrity import bucket_digests
        from kmsir.actions.trail_s3 import trail_prefixes

        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        client = clients().client("s3")
        found, trouble = bucket_digests(
            client, bucket, prefix, None, since, until, backfills=backfills
        )
        digests.extend(found)
        problems.extend(trouble)
        prefixes.extend(trail_prefixes(client, bucket, prefix, None, since, until))
    others = [where for where in stats.hashes if log_day(where) is None]
    for where in others:
        del stats.hashes[where]
    notes = []
    if others:
        notes.append(f"{len(others)} file(s) not named as CloudTrail log files: not checked")
    local_logs = [where for where in stats.hashes if not where.startswith("s3://")]
    days = days_read(local_logs, since, until, copied)
    if buckets:
        from kmsir.actions.trail_integrity import days_listed

        days |= days_listed(prefixes, stats.hashes, digests)
    return _checked(stats, digests, backfills, problems, keys, days, notes)


def _checked(
    stats: ScanStats,
    digests: list[DigestFile],
    backfills: Mapping[str, datetime],
    problems: list[str],
    keys: Keys,
    days: set[tuple[str, str, str]],
    notes: list[str],
) -> Checked:
    """The check of the files a scan hashed (``stats``) against ``digests``: as
    ``cloudtrail.collect`` checks them (``trail_integrity``), its artifacts aside."""
    from kmsir.trail.integrity import LogFile, check, unproven_unread

    public, problem, said = _public_keys(keys, digests, backfills)
    logs = [LogFile(where, sha256) for where, sha256 in stats.hashes.items()]
    result = check(logs, digests, public, days=days, keys_problem=problem)
    return Checked(unproven_unread(result, stats.unread), [*said, *problems, *notes])


def _public_keys(
    keys: Keys, digests: list[DigestFile], backfills: Mapping[str, datetime]
) -> tuple[list[PublicKey], Mapping[str, str] | str | None, list[str]]:
    """The keys the digests are checked with, why some may lack (Region -> why, or why for
    all; for the digests' details), and a note saying where they came from."""
    if keys.given is not None:
        return keys.given, None, [f"public keys: {len(keys.given)} from {keys.where}"]
    from kmsir.actions.trail_integrity import key_range, public_keys
    from kmsir.inert import one_line

    ranges = key_range(digests, datetime.now(timezone.utc), backfills)
    if not ranges:
        return [], None, []
    if keys.clients is None:
        return [], "no public key given", []
    failed: dict[str, str] = {}
    try:
        found = public_keys(keys.clients(), ranges, failed=failed)
    except KmsirError as exc:  # no credentials, no Region: no key, every signature unproven
        reason = one_line(str(exc).split(":")[0], 80)
        found, failed = [], dict.fromkeys(ranges, reason)
    why = {region: f"ListPublicKeys: {code}" for region, code in failed.items()}
    told = "; ".join(f"{reason} in {region}" for region, reason in why.items())
    said = f"public keys: {len(found)} from ListPublicKeys ({', '.join(ranges)})"
    return found, why or None, [said + (f"; {told}" if told else "")]

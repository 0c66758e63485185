"""``kmsir cloudtrail scan`` without a playbook: one key's events in trail files and S3
prefixes, in order, and the findings over them; the scanning the cloudtrail actions do,
driven directly. The matched records stay the trail's own bytes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kmsir.errors import UsageError

if TYPE_CHECKING:
    from kmsir.aws import ClientFactory
    from kmsir.trail.files import ScanStats
    from kmsir.trail.finding import Finding
    from kmsir.trail.integrity import DigestFile
    from kmsir.trail.match import KeyMatcher


@dataclass(frozen=True)
class BucketReading:
    """A bucket's digests, fetched before its log files were listed (``matched_records``)."""

    digests: list[DigestFile]
    problems: list[str]
    prefixes: list[str]
    backfills: dict[str, datetime]


def matched_records(
    local: Sequence[Path],
    buckets: Sequence[str],
    matcher: KeyMatcher,
    *,
    since: datetime | None,
    until: datetime | None,
    clients: Callable[[], ClientFactory],
    hashes: bool = False,
    reading: dict[str, BucketReading] | None = None,
) -> tuple[list[tuple[bytes, dict[str, Any]]], ScanStats]:
    """The records ``matcher`` matches in the trail files under ``local`` and in each
    ``s3://bucket/prefix`` of ``buckets`` (read with ``clients()``), in event order, each with
    the fields the findings read (``trail.events.slim``), decoded while the scan goes on.

    ``UsageError`` when no path holds a trail file at all (a wrong folder or prefix is not an
    empty result); a path without one among others that have some is counted as skipped.
    A folder whose files all fall outside the window, or a trail prefix holding logs but none
    of the window, is no error: the window may be where logging stopped (the bucket's case is
    noted).

    ``hashes``: each file's SHA-256 too, from the same read (``ScanStats.hashes``), for
    ``verify_logs.check_scanned``. ``reading``: each bucket's digests are fetched FIRST,
    before its log files are listed (``trail_integrity.bucket_reading``: a digest written
    meanwhile would name files delivered after the listing), and left there by URI."""
    from kmsir.trail import files
    from kmsir.trail.events import Ordering

    ordering = Ordering(slim_too=True)
    _, stats, empty = files.scan_paths(
        local, matcher, since=since, until=until, each=ordering.add, hashes=hashes
    )
    for uri in buckets:
        # the actions (and AWS) are imported only to read a bucket: a scan of files on disk
        # starts without them
        from kmsir.actions.base import NullReporter
        from kmsir.actions.trail_s3 import NO_FILE_IN_WINDOW, looked_for, scan_bucket

        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        prefixes = None
        if reading is not None:
            from kmsir.actions.trail_integrity import bucket_reading

            backfills: dict[str, datetime] = {}
            digests, problems, prefixes = bucket_reading(
                clients().client("s3"), bucket, prefix, None, since, until, backfills=backfills
            )
            reading[uri] = BucketReading(digests, problems, prefixes, backfills)
        from_bucket, more = scan_bucket(
            clients(),
            NullReporter(),
            bucket,
            prefix,
            None,
            matcher,
            since,
            until,
            hashes=hashes,
            prefixes=prefixes,
        )
        more.kept.clear()  # kept for a bundle's copy: a scan writes none
        if not more.files and not more.noted[NO_FILE_IN_WINDOW]:
            empty.append((uri, looked_for(prefix, None, since, until)))
        ordering.add(from_bucket)
        stats.add(more)
    if len(empty) == len(local) + len(buckets):
        raise UsageError(files.none_found(empty))
    files.count_empty(stats, empty)
    return [(raw, fields or {}) for raw, fields in ordering.ordered(stats.noted)], stats


def findings_in_window(
    events: list[dict[str, Any]], key: str, window_seconds: int
) -> list[Finding]:
    """The findings over ``events`` (decoded with ``trail.events.slim``) for ``key`` (a key
    id or ARN), the incident window being the ``window_seconds`` before the last event."""
    from kmsir.trail.fields import event_time
    from kmsir.trail.finding import context_for
    from kmsir.trail.findings import findings

    times = [t for t in (event_time(e) for e in events) if t is not None]
    window_start = max(times) - timedelta(seconds=window_seconds) if times else None
    key_arn = key if key.startswith("arn:") else None
    return findings(events, context_for(events, key_arn, window_start))

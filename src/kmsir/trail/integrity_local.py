"""A local copy of a trail (``aws s3 sync``): its digest files, their signatures from a
``signatures.json`` sidecar, and the days it holds. Pure: a check of files on disk starts
without the AWS layers (``kmsir.actions.trail_integrity`` re-exports these for the bucket's
side)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from kmsir.errors import UsageError
from kmsir.trail.files import DIGEST_SIDECAR, is_digest
from kmsir.trail.integrity import DigestFile, log_day

#: The sidecar of a local copy's digests: ``{"<digest file name>": "<hex signature>"}``.
SIDECAR = DIGEST_SIDECAR
#: The most of one digest file read (CloudTrail's are kilobytes): a larger object is no digest.
DIGEST_BYTES = 16 * 2**20
#: CloudTrail delivers a log file some minutes after its events; a day's last events may sit
#: in the next day's folder or partition.
DELIVERY_LAG = timedelta(days=1)
#: Bytes of a sidecar read at most.
_SIDECAR_MAX = 16 * 2**20


def local_digests(paths: Iterable[Path]) -> list[DigestFile]:
    """The digest files under ``paths`` (files given as they are, folders searched at any
    depth), each with the signature a ``signatures.json`` beside it (or in a folder above it,
    up to the path given) names for it, else none. ``UsageError``: a sidecar that is not a
    JSON object of names to hex signatures."""
    found: list[DigestFile] = []
    sidecars: dict[Path, dict[str, str]] = {}
    seen: set[Path] = set()
    for root in paths:
        if root.is_dir():
            candidates = sorted(p for p in root.rglob("*.json.gz") if p.is_file() and is_digest(p))
        else:
            named = root.name.endswith(".json.gz") and is_digest(root)
            candidates = [root] if named and root.is_file() else []
        for path in candidates:
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                with path.open("rb") as stream:
                    data = stream.read(DIGEST_BYTES + 1)
            except OSError:
                data = b""  # the check reports it unreadable, by name
            if len(data) > DIGEST_BYTES:
                data = b""  # no digest is this large
            found.append(DigestFile(str(path), data, _signature(path, root, sidecars)))
    return found


def _signature(path: Path, root: Path, sidecars: dict[Path, dict[str, str]]) -> str | None:
    folder = path.parent
    while True:
        if folder not in sidecars:
            sidecars[folder] = _sidecar(folder / SIDECAR)
        if path.name in sidecars[folder]:
            return sidecars[folder][path.name]
        if folder == root or folder.parent == folder or not root.is_dir():
            return None
        folder = folder.parent


def _sidecar(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as file:
            document = json.loads(file.read(_SIDECAR_MAX + 1)[:_SIDECAR_MAX])
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(
            f"{path}: not a JSON object of digest names to signatures ({exc})"
        ) from None
    if not isinstance(document, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in document.items()
    ):
        raise UsageError(f"{path}: not a JSON object of digest names to signatures")
    return document


def window_days(start: datetime | None, end: datetime | None) -> set[str] | None:
    """The ``YYYY/MM/DD`` days a window's log files are in (and the day after its end, where
    late deliveries land), as ``trail_s3.trail_prefixes`` lists them; ``None``: no window."""
    if start is None:
        return None
    last = (end or datetime.now(timezone.utc)) + DELIVERY_LAG
    days: set[str] = set()
    date = start.date()
    while date <= last.date():
        days.add(f"{date:%Y/%m/%d}")
        date += timedelta(days=1)
    return days


def days_read(
    logs: Iterable[str],
    start: datetime | None,
    end: datetime | None,
    digests: Iterable[str] = (),
) -> set[tuple[str, str, str]]:
    """A local copy's (account, Region, ``YYYY/MM/DD``) read: those holding at least one log
    file read (``logs``: their locations; of the window's days when there is one) and, with
    a window, the day of each digest file of the copy (``digests``: their locations) within
    the window's days, for an (account, Region) of which a log file was read: a day whose
    log files were all deleted still has its digests naming them.

    Without a window the digests' days do not count: a copy of part of a trail (one day's
    folder of log files, every digest) must not make the days it lacks ``deleted``. With
    or without one, a day with neither a log file nor a digest in the copy is not read:
    what a digest lists of it is not reported, never ``deleted``."""
    window = window_days(start, end)
    named = [log_day(basename(where)) for where in logs]
    days = {d for d in named if d is not None and (window is None or d[2] in window)}
    if window is not None:
        regions = {d[:2] for d in named if d is not None}
        for where in digests:
            day = log_day(basename(where))
            if day is not None and day[2] in window and day[:2] in regions:
                days.add(day)
    return days


def basename(where: str) -> str:
    return where.replace("\\", "/").rsplit("/", 1)[-1]

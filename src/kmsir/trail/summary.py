"""Compact summaries of a key's CloudTrail events, so that a report need not re-read millions.

- ``cloudtrail.collect`` writes ``events.summary.json`` beside each ``events.jsonl.gz``: what
  the report counts of them (``counts.TrailView``: how many, first and last, per hour and
  category, lines unreadable or untimed);
- ``cloudtrail.findings`` writes ``findings.events.json`` beside ``findings.json``: the events
  its findings point to (the first ``EVENTS_PER_FINDING`` of each), trimmed as a report keeps
  them, in the order of the events file, and the ids it looked for.

Both come from the very counting a report would do (``counts.Tally``) over the very lines the
events file holds, and name the sha256 and size of the events file(s) they describe. They are
ordinary artifacts (journaled with their own sha256: ``kmsir verify`` covers them); the events
stay the evidence. A reader uses a summary only when the events file it names is the one in
the bundle, byte for byte; otherwise (a bundle written before summaries, a summary missing or
not matching) it reads the events themselves, and shows the same.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from kmsir.trail.counts import KEEP_EVENTS, TrailView, count_lines

#: The artifacts' names, and the version of their format.
COUNTS_NAME = "events.summary.json"
INTEREST_NAME = "findings.events.json"
FORMAT = 1
#: The events a report shows behind each finding.
EVENTS_PER_FINDING = 3
#: Event ids a findings summary looks for at most; past it, none is written (the report reads
#: the events instead).
MAX_WANTED = 5_000


class Described(msgspec.Struct, frozen=True):
    """An events file as a summary names it."""

    sha256: str
    bytes: int


class Counts(msgspec.Struct, frozen=True, kw_only=True):
    """``events.summary.json``: what a report counts of one events file."""

    format: int
    events: Described
    count: int
    first: str | None
    last: str | None
    unreadable: int
    untimed: int
    #: hour -> category -> events, and category -> events, each in the order first seen
    by_bucket: dict[str, dict[str, int]]
    by_category: dict[str, int]


class Interest(msgspec.Struct, frozen=True, kw_only=True):
    """``findings.events.json``: the events behind the findings, as a report keeps them."""

    format: int
    events: list[Described]
    wanted: list[str]
    interesting: dict[str, Any]


def described(data: bytes) -> Described:
    """The sha256 and size of an events file's bytes."""
    return Described(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))


def file_described(path: Path) -> Described:
    """The sha256 and size of the file at ``path``, read in blocks (memory stays flat)."""
    digest, size = hashlib.sha256(), 0
    block = bytearray(1 << 20)
    view = memoryview(block)
    with path.open("rb", buffering=0) as file:
        while n := file.readinto(block):
            digest.update(view[:n])
            size += n
    return Described(sha256=digest.hexdigest(), bytes=size)


def counts_summary(lines: bytes, stored: bytes) -> bytes | None:
    """``events.summary.json`` of an events file: ``lines`` uncompressed, ``stored`` as
    written (gzipped); None if it cannot be written (the report then reads the events)."""
    view = count_lines(lines)
    summary = Counts(
        format=FORMAT,
        events=described(stored),
        count=view.count,
        first=view.first,
        last=view.last,
        unreadable=view.unreadable,
        untimed=view.untimed,
        by_bucket={hour: dict(kinds) for hour, kinds in view.by_bucket.items()},
        by_category=dict(view.by_category),
    )
    return _encoded(summary)


def _encoded(value: Counts | Interest) -> bytes | None:
    try:
        return msgspec.json.encode(value) + b"\n"
    except (TypeError, ValueError, OverflowError, RecursionError):  # text JSON cannot hold
        return None


def wanted_ids(findings: Iterable[dict[str, Any]]) -> list[str]:
    """The event ids a report may show behind ``findings`` (their JSON): each one's first
    ``EVENTS_PER_FINDING`` ids, as the report reads them."""
    wanted: dict[str, None] = {}
    for finding in findings:
        ids = finding.get("event_ids")
        listed = [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []
        wanted.update(dict.fromkeys(listed[:EVENTS_PER_FINDING]))
    return list(wanted)


def interest_summary(lines: bytes, stored: bytes, wanted: list[str]) -> bytes | None:
    """``findings.events.json``: the ``wanted`` events of an events file (``lines``
    uncompressed, ``stored`` as written), or None when they are too many to keep here."""
    if len(wanted) > MAX_WANTED:
        return None
    try:
        # room for one more than wanted, as when a report reads them (it keeps more than it
        # wants): a record repeated under an id then replaces the one seen first, both ways
        view = count_lines(lines, wanted, keep=len(wanted) + 1) if wanted else TrailView()
    except (msgspec.DecodeError, RecursionError):  # an event the report could not show either
        return None
    summary = Interest(
        format=FORMAT,
        events=[described(stored)],
        wanted=sorted(wanted),
        interesting=view.interesting,
    )
    return _encoded(summary)


def read_counts(data: bytes, events: Described) -> Counts | None:
    """The counts summary in ``data`` if it describes the events file ``events`` (else None:
    another file's, a format this kmsir does not know, not a summary)."""
    try:
        found = msgspec.json.decode(data, type=Counts)
    except (msgspec.DecodeError, RecursionError):
        return None
    return found if found.format == FORMAT and found.events == events else None


def read_interest(data: bytes, events: list[Described]) -> Interest | None:
    """The findings summary in ``data`` if it was drawn from exactly the events files
    ``events`` (else None)."""
    try:
        found = msgspec.json.decode(data, type=Interest)
    except (msgspec.DecodeError, RecursionError):
        return None
    return found if found.format == FORMAT and found.events == events else None


def view_of(
    counts: list[Counts], interest: Interest | None, wanted: Iterable[str], keep: int = KEEP_EVENTS
) -> TrailView | None:
    """The ``TrailView`` that reading the events files (in order) would give, from their
    summaries: None when the findings summary does not hold every ``wanted`` event (or
    ``keep`` would cut them: only reading the events knows which come first)."""
    want = set(wanted)
    if want and (interest is None or not want <= set(interest.wanted) or len(want) >= keep):
        return None
    view = TrailView()
    for one in counts:
        view.count += one.count
        view.unreadable += one.unreadable
        view.untimed += one.untimed
        if one.first is not None and (view.first is None or one.first < view.first):
            view.first = one.first
        if one.last is not None and (view.last is None or one.last > view.last):
            view.last = one.last
        for hour, kinds in one.by_bucket.items():
            view.by_bucket.setdefault(hour, Counter()).update(kinds)
        view.by_category.update(one.by_category)
    if interest is not None:
        view.interesting = {i: e for i, e in interest.interesting.items() if i in want}
    return view

"""What a report shows of a key's CloudTrail events, counted in one pass over ``events.jsonl.gz``.

A bundle may hold millions of events. They are read once, line by line, decoding only the
few fields the report counts (time, name, error); the full event is parsed only for the
events a finding points to, up to a cap, and kept ``trimmed`` (a megabyte of user agent in a
thousand events is a few hundred kilobytes here). What comes out is small whatever the input:
counts per hour and category, and the events of interest (``TrailView``).

The same counting runs where the events are written (``cloudtrail.collect``) and where the
findings are drawn (``cloudtrail.findings``), over the very lines they keep: their results are
the compact summaries of ``trail.summary``, which spare the report this pass.
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import Any

import msgspec

from kmsir.trail.catalogue import CRYPTO_OPERATIONS

#: Bars of the chart, in drawing order.
CATEGORIES = ("data", "management", "read", "failed")
#: Cryptographic operations: the key in use.
_DATA = CRYPTO_OPERATIONS
#: What an event of interest keeps of each text, list or object, and how deep.
KEEP_TEXT = 1_000
KEEP_ITEMS = 50
KEEP_DEPTH = 20
#: Events of interest a report keeps at most.
KEEP_EVENTS = 500


class _Light(msgspec.Struct):
    eventTime: Any = ""
    eventName: Any = ""
    eventID: Any = ""
    errorCode: Any = None


_decode_light = msgspec.json.Decoder(_Light)


def category(name: str, error: str | None) -> str:
    """The chart category of an event: failed, data (crypto), read, or management."""
    if error:
        return "failed"
    if name in _DATA:
        return "data"
    if name.startswith(("Describe", "Get", "List")):
        return "read"
    return "management"


@dataclass
class TrailView:
    """What the report shows of the CloudTrail events."""

    count: int = 0
    first: str | None = None
    last: str | None = None
    by_bucket: dict[str, Counter[str]] = field(default_factory=dict)
    by_category: Counter[str] = field(default_factory=Counter)
    interesting: dict[str, dict[str, Any]] = field(default_factory=dict)
    unreadable: int = 0  # lines that are not JSON events
    untimed: int = 0  # events without a time the chart can place
    damaged: str | None = None  # why reading stopped early (a cut-off or corrupt file)


#: CloudTrail's own time format, the one that needs no parsing: ``2026-11-28T09:30:00Z``.
_PLAIN_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")


def _hour(when: str) -> str | None:
    """The UTC hour (``YYYY-MM-DDTHH``) of an event time, or None when it is no time."""
    if _PLAIN_TIME.fullmatch(when):
        return when[:13]
    moment = parse_utc(when)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H") if moment else None


class Tally:
    """Counts of events line by line (``add``), and the ``want``-ed ones in full (at most
    ``keep``, in the order the lines come): a ``TrailView`` when ``done``."""

    def __init__(self, want: Iterable[str] = (), keep: int = KEEP_EVENTS) -> None:
        self.view = TrailView()
        #: (hour "YYYY-MM-DDTHH", category) -> events, in the order first seen
        self.counts: Counter[tuple[str, str]] = Counter()
        self.want = set(want)
        self.keep = keep

    def add_lines(self, lines: Iterable[bytes]) -> None:
        """Count each line (a JSON event, or one that is not and counts as unreadable)."""
        view, counts, want, keep = self.view, self.counts, self.want, self.keep
        first, last = view.first, view.last
        try:
            for line in lines:
                try:
                    event = _decode_light.decode(line)
                except (msgspec.DecodeError, RecursionError):
                    view.unreadable += 1
                    continue
                when = str(event.eventTime)
                hour = _hour(when)
                view.count += 1
                if hour is None:
                    view.untimed += 1
                    continue
                if first is None or when < first:
                    first = when
                if last is None or when > last:
                    last = when
                counts[(hour, category(str(event.eventName), event.errorCode))] += 1
                event_id = event.eventID
                wanted_here = want and isinstance(event_id, str) and event_id in want
                if wanted_here and len(view.interesting) < keep:
                    view.interesting[event_id] = trimmed(msgspec.json.decode(line))
        finally:  # a file cut off mid-way: what was read still counts
            view.first, view.last = first, last

    def done(self) -> TrailView:
        """The view of every line added, counts per hour and per category filled in."""
        view = self.view
        view.by_bucket, view.by_category = {}, Counter()
        for (hour, kind), n in self.counts.items():
            view.by_bucket.setdefault(hour, Counter())[kind] += n
            view.by_category[kind] += n
        return view


def read_events(
    source: Path | bytes | list[Path], wanted: Iterable[str] = (), *, keep: int = KEEP_EVENTS
) -> TrailView:
    """Stream ``events.jsonl.gz`` (a path or its bytes; a list: each file in turn): counts,
    and the ``wanted`` event ids in full (at most ``keep`` of them). A damaged file gives what
    could be read, and says so."""
    tally = Tally(wanted, keep)
    # a step that fanned out over accounts and Regions kept one file per target
    for one in source if isinstance(source, list) else [source]:
        try:
            with (
                open(one, "rb") if isinstance(one, Path) else io.BytesIO(one) as raw,
                gzip.GzipFile(fileobj=raw) as stream,
            ):
                tally.add_lines(_lines(stream))
        except (OSError, EOFError, zlib.error) as exc:
            tally.view.damaged = f"{type(exc).__name__}: {exc}"[:200]
    return tally.done()


def count_lines(data: bytes, wanted: Iterable[str] = (), *, keep: int = KEEP_EVENTS) -> TrailView:
    """``read_events`` over the uncompressed lines of an events file, already in memory."""
    tally = Tally(wanted, keep)
    tally.add_lines(_each_line(data))
    return tally.done()


def _each_line(data: bytes) -> Iterator[bytes]:
    """The lines of ``data`` that are not blank, one at a time (no list of them all)."""
    start, size = 0, len(data)
    while start < size:
        end = data.find(b"\n", start)
        end = size if end < 0 else end
        line = data[start:end]
        if line.strip():
            yield line
        start = end + 1


def trimmed(value: Any, depth: int = 0) -> Any:
    """``value`` with every text cut to ``KEEP_TEXT`` characters, every list and object to
    ``KEEP_ITEMS`` entries and nothing deeper than ``KEEP_DEPTH`` (cuts marked with "…")."""
    if isinstance(value, str):
        return value if len(value) <= KEEP_TEXT else value[:KEEP_TEXT] + "\u2026"
    if isinstance(value, dict | list) and depth >= KEEP_DEPTH:
        return "\u2026"
    if isinstance(value, dict):
        items = islice(value.items(), KEEP_ITEMS)
        return {trimmed(k): trimmed(v, depth + 1) for k, v in items}
    if isinstance(value, list):
        more = [f"\u2026 {len(value) - KEEP_ITEMS} more"] if len(value) > KEEP_ITEMS else []
        return [trimmed(v, depth + 1) for v in value[:KEEP_ITEMS]] + more
    return value


def _lines(stream: gzip.GzipFile) -> Iterator[bytes]:
    """Lines of a decompressed stream, read in large blocks."""
    rest = b""
    while block := stream.read(1 << 20):
        lines = (rest + block).split(b"\n")
        rest = lines.pop()
        yield from (line for line in lines if line.strip())
    if rest.strip():
        yield rest


def parse_utc(text: object) -> datetime | None:
    """An ISO 8601 time (UTC when it has no zone), or None when ``text`` is no such time."""
    try:
        moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)

"""The CloudTrail side of a report, streamed from the bundle's ``events.jsonl.gz``.

A bundle may hold millions of events. They are read once, line by line, decoding only the
few fields the report counts (time, name, error); the full event is parsed only for the
events a finding points to, up to a cap, and kept ``trimmed`` (a megabyte of user agent in a
thousand events is a few hundred kilobytes here). What comes out is small whatever the input:
counts per hour (or per day over long windows) and category, and the events of interest.
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import islice
from pathlib import Path
from typing import Any

import msgspec

from kmsir.trail.catalogue import CRYPTO_OPERATIONS

#: Bars of the chart, in drawing order.
CATEGORIES = ("data", "management", "read", "failed")
#: Cryptographic operations: the key in use.
_DATA = CRYPTO_OPERATIONS
#: Past this many hours the chart counts per day.
_HOURLY_UP_TO = 24 * 31
#: What an event of interest keeps of each text, list or object, and how deep.
KEEP_TEXT = 1_000
KEEP_ITEMS = 50
KEEP_DEPTH = 20


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


def read_events(
    source: Path | bytes | list[Path], wanted: Iterable[str] = (), *, keep: int = 500
) -> TrailView:
    """Stream ``events.jsonl.gz`` (a path or its bytes; a list: each file in turn): counts,
    and the ``wanted`` event ids in full (at most ``keep`` of them). A damaged file gives what
    could be read, and says so."""
    want = set(wanted)
    view = TrailView()
    counts: Counter[tuple[str, str]] = Counter()  # (hour "YYYY-MM-DDTHH", category)
    first = last = None
    # a step that fanned out over accounts and Regions kept one file per target
    for one in source if isinstance(source, list) else [source]:
        try:
            with (
                open(one, "rb") if isinstance(one, Path) else io.BytesIO(one) as raw,
                gzip.GzipFile(fileobj=raw) as stream,
            ):
                for line in _lines(stream):
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
        except (OSError, EOFError, zlib.error) as exc:
            view.damaged = f"{type(exc).__name__}: {exc}"[:200]
    view.first, view.last = first, last
    for (hour, kind), n in counts.items():
        view.by_bucket.setdefault(hour, Counter())[kind] += n
        view.by_category[kind] += n
    return view


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


def iso(text: Any) -> str:
    """Any time the journal or AWS gave, as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC) for sorting."""
    moment = parse_utc(text)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else str(text)


@dataclass(frozen=True)
class Chart:
    """Geometry of the events chart, for a template to draw as inline SVG."""

    width: int
    height: int
    unit: str  # "hour" or "day"
    bars: list[dict[str, Any]]
    marks: list[dict[str, Any]]
    window: dict[str, Any] | None
    ticks: list[dict[str, Any]]
    peak: int


def chart(
    view: TrailView,
    marks: list[tuple[str, str]],
    window: tuple[str, str] | None,
    *,
    width: int = 960,
    height: int = 220,
) -> Chart | None:
    """Stacked bars of events per hour (per day past a month) by category, the runner's
    actions as vertical marks (``(time, label)``) and the incident window shaded."""
    if not view.by_bucket:
        return None
    try:
        return _chart(view, marks, window, width=width, height=height)
    except (OverflowError, ValueError):  # times at the ends of the calendar: no chart
        return None


def _chart(
    view: TrailView,
    marks: list[tuple[str, str]],
    window: tuple[str, str] | None,
    *,
    width: int,
    height: int,
) -> Chart | None:
    start = parse_utc(f"{min(view.by_bucket)}:00:00Z")
    end = parse_utc(f"{max(view.by_bucket)}:00:00Z")
    times = [t for t in (parse_utc(m[0]) for m in marks) if t is not None]
    if start is None or end is None:
        return None
    end = max([end, *times])
    hours = int((end - start).total_seconds() // 3600) + 1
    unit = "hour" if hours <= _HOURLY_UP_TO else "day"
    step = timedelta(hours=1) if unit == "hour" else timedelta(days=1)
    if unit == "day":
        start = start.replace(hour=0)
    slots = int((end - start) / step) + 1
    buckets: Counter[tuple[int, str]] = Counter()
    for key, counts in view.by_bucket.items():
        moment = parse_utc(f"{key}:00:00Z")
        if moment is None:
            continue
        slot = int((moment - start) / step)
        for kind, n in counts.items():
            buckets[(slot, kind)] += n
    totals = Counter[int]()
    for (slot, _), n in buckets.items():
        totals[slot] += n
    peak = max(totals.values())
    left, top, plot_h = 40, 10, height - 40
    plot_w = width - left - 10
    slot_w = plot_w / slots

    def x_of(moment: datetime) -> float:
        return round(left + (moment - start) / step * slot_w, 2)

    bars = []
    for slot in sorted(totals):
        y: float = top + plot_h
        for kind in CATEGORIES:
            n = buckets.get((slot, kind), 0)
            if not n:
                continue
            h = n / peak * plot_h
            y -= h
            bars.append(
                {
                    "x": round(left + slot * slot_w, 2),
                    "y": round(y, 2),
                    "w": round(max(slot_w - 0.5, 0.5), 2),
                    "h": round(h, 2),
                    "category": kind,
                    "title": f"{(start + slot * step).strftime('%Y-%m-%d %H:00')} UTC: {n} {kind}",
                }
            )
    drawn_marks = _place_marks(
        [
            (text, label, t)
            for (text, label), t in zip(marks, (parse_utc(m[0]) for m in marks), strict=True)
            if t is not None and start <= t <= end + step
        ],
        x_of,
        left=left,
        width=width,
        bottom=top + plot_h,
    )
    shaded = None
    if window is not None:
        since, until = parse_utc(window[0]), parse_utc(window[1])
        if since is not None and until is not None:
            a, b = max(since, start), min(until, end + step)
            if a < b:
                shaded = {"x": x_of(a), "w": round(x_of(b) - x_of(a), 2)}
    label_format = "%m-%d %H:00" if unit == "hour" else "%m-%d"
    ticks = _place_ticks(
        [
            (round(left + slot * slot_w, 2), (start + slot * step).strftime(label_format))
            for slot in sorted({*range(0, slots, max(1, slots // 8)), slots - 1})
        ],
        width=width,
    )
    return Chart(width, height, unit, bars, drawn_marks, shaded, ticks, peak)


#: The width of one character of the chart's 10px labels, a little over the average (digits
#: and lower case in system-ui): label boxes are estimated with it to keep labels apart.
CHAR_W = 6.0
#: The height of a row of mark labels, and the room kept between two labels on a row.
ROW_H = 11
GAP = 4.0


def _box(x: float, anchor: str, text: str) -> tuple[float, float]:
    """The horizontal extent of ``text`` drawn at ``x`` with an SVG ``text-anchor``."""
    w = len(text) * CHAR_W
    return (x - w, x) if anchor == "end" else (x, x + w)


def _place_ticks(ticks: list[tuple[float, str]], *, width: int) -> list[dict[str, Any]]:
    """The axis labels (``(x, label)``, the last one being the axis's end), none overlapping
    another and all inside ``width``: the last one is always kept, ending at the right edge
    if it would overflow it, and a label too close to the one before it is left out."""
    placed: list[dict[str, Any]] = []
    for number, (x, label) in enumerate(ticks):
        anchor = "end" if _box(x, "start", label)[1] > width - 2 else "start"
        if anchor == "end":
            x = min(x, width - 2)
        a, b = _box(x, anchor, label)
        if number == len(ticks) - 1:  # the last label stays: its neighbours make room
            while placed and placed[-1]["box"][1] + GAP > a:
                placed.pop()
        elif placed and placed[-1]["box"][1] + GAP > a:
            continue
        placed.append({"x": x, "label": label, "anchor": anchor, "box": (a, b)})
    return [{k: v for k, v in t.items() if k != "box"} for t in placed]


def _place_marks(
    marks: list[tuple[str, str, datetime]],
    x_of: Callable[[datetime], float],
    *,
    left: float,
    width: int,
    bottom: float,
) -> list[dict[str, Any]]:
    """The runner's actions as marks (``(time text, label, time)``): each label beside its
    line, on the first row where it overlaps no other label (actions seconds apart share an
    x), to the line's left where it would pass the right edge, shortened where it fits on
    neither side (between the axis, at ``left``, and the right edge). Past the last row that
    fits above the axis, a mark keeps its line and its tooltip, without a label (``text``
    None)."""
    rows: list[list[tuple[float, float]]] = []
    most_rows = max(1, int((bottom - 2 - 16) // ROW_H) + 1)
    drawn = []
    for text, label, moment in sorted(marks, key=lambda m: m[2]):
        x = x_of(moment)
        shown, anchor, text_x = label, "start", round(x + 3, 2)
        if _box(text_x, "start", shown)[1] > width - 2:
            anchor, text_x = "end", round(x - 3, 2)
            room = max(x - 3 - left, width - 2 - x - 3)
            if len(shown) * CHAR_W > room:  # fits on neither side: on the roomier one, cut
                keep = max(1, int(room // CHAR_W) - 1)
                shown = label[:keep] + "…"
                if room > x - 3 - left:
                    anchor, text_x = "start", round(x + 3, 2)
        a, b = _box(text_x, anchor, shown)
        apart = [all(b + GAP <= c or d + GAP <= a for c, d in taken) for taken in rows]
        free = (n for n, ok in enumerate(apart) if ok)
        row = next(free, len(rows))
        placed = row < most_rows
        if placed:
            if row == len(rows):
                rows.append([])
            rows[row].append((a, b))
        drawn.append(
            {
                "x": x,
                "label": label,
                "time": text,
                "text": shown if placed else None,
                "anchor": anchor,
                "text_x": text_x,
                "y": 16 + row * ROW_H if placed else None,
            }
        )
    return drawn

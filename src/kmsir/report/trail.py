"""The CloudTrail side of a report: the counts and events of interest (``TrailView``), and the
events chart drawn from them.

The view comes from the compact summaries the collect and findings steps left beside the
events (``trail.summary``) when they describe the bundle's events files byte for byte (their
journaled sha256 and their content's); otherwise (a bundle written before summaries, a
summary missing, edited or for other events) from one streamed pass over ``events.jsonl.gz``
(``trail.counts.read_events``). Both give the same view.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from kmsir.evidence.manifest import Bundle
from kmsir.trail import summary
from kmsir.trail.counts import (
    CATEGORIES,
    KEEP_EVENTS,
    TrailView,
    category,
    parse_utc,
    read_events,
    trimmed,
)

__all__ = [
    "CATEGORIES",
    "Chart",
    "TrailView",
    "category",
    "chart",
    "iso",
    "parse_utc",
    "read_events",
    "trail_view",
    "trimmed",
]

#: Past this many hours the chart counts per day.
_HOURLY_UP_TO = 24 * 31


def trail_view(
    bundle: Bundle, events: list[Path], findings: Path | None, wanted: Iterable[str]
) -> TrailView:
    """What the report shows of the ``events`` files (in order) and the ``wanted`` events
    (those behind the findings in the ``findings`` file): from the summaries beside them
    when they describe these very files, else read from the events."""
    want = set(wanted)
    if not events:
        return TrailView()
    return _summarised(bundle, events, findings, want) or read_events(events, want)


def _summarised(
    bundle: Bundle, events: list[Path], findings: Path | None, want: set[str]
) -> TrailView | None:
    journaled = {
        str(getattr(a.record, "path", "")): str(getattr(a.record, "sha256", ""))
        for a in bundle.view.artifacts
    }
    root = bundle.root

    def recorded(path: Path) -> bytes | None:
        """The bytes of an artifact whose content is the one its journal line records."""
        try:
            data = path.read_bytes()
        except OSError:
            return None
        try:
            known = journaled.get(path.relative_to(root).as_posix())
        except ValueError:
            return None
        return data if known == summary.described(data).sha256 else None

    described, counts = [], []
    for path in events:
        try:
            found = summary.file_described(path)
            where = path.relative_to(root).as_posix()
        except (OSError, ValueError):  # unreadable, or outside the bundle: read as before
            return None
        if journaled.get(where) != found.sha256:
            return None
        data = recorded(path.with_name(summary.COUNTS_NAME))
        one = summary.read_counts(data, found) if data is not None else None
        if one is None:
            return None
        described.append(found)
        counts.append(one)
    interest = None
    if want and findings is not None:
        data = recorded(findings.with_name(summary.INTEREST_NAME))
        interest = summary.read_interest(data, described) if data is not None else None
    return summary.view_of(counts, interest, want, KEEP_EVENTS)


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

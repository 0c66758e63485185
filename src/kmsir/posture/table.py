"""A review summed up per practice: what ``kmsir audit``'s table and the report's posture
section show.

Per practice (1-10): its number, title and page, how many check entries have each status,
and its failures the most severe first, each with the resources it names. ``rows`` gives
the same as plain text cells for the CLI's table (the CLI draws it; the texts are made
inert here, since resource names come from the account reviewed).
"""

from __future__ import annotations

from dataclasses import dataclass

from kmsir.inert import one_line
from kmsir.posture import PRACTICES, STATUSES, Check, Review, ordered

#: The table's count columns, in order, and their headers.
COLUMNS = ("fail", "could-not-check", "waived", "pass", "info", "not-applicable")
HEADERS = {"could-not-check": "unchecked", "not-applicable": "n/a"}


@dataclass(frozen=True)
class PracticeSummary:
    """One practice's share of a review."""

    number: int
    title: str
    doc: str
    #: status -> check entries with it (every status of ``STATUSES``).
    counts: dict[str, int]
    #: Its failed entries, the most severe first.
    failing: tuple[Check, ...]

    def worst(self, limit: int) -> tuple[Check, ...]:
        """The ``limit`` most severe failures."""
        return self.failing[:limit]


def practices(review: Review) -> list[PracticeSummary]:
    """Each of the ten practices (and any other number a review names, after them)."""
    counts = review.counts()
    failing: dict[int, list[Check]] = {}
    for check in ordered(review.checks):  # most pressing status, then most severe, first
        if check.status == "fail":
            failing.setdefault(check.practice, []).append(check)
    return [
        PracticeSummary(
            number=number,
            title=PRACTICES[number].title if number in PRACTICES else f"Practice {number}",
            doc=PRACTICES[number].doc if number in PRACTICES else "",
            counts={s: counts[number].get(s, 0) for s in STATUSES},
            failing=tuple(failing.get(number, ())),
        )
        for number in sorted(counts)
    ]


def rows(review: Review, *, worst: int = 2, resources: int = 3) -> list[tuple[str, ...]]:
    """The table's rows: number, practice, a count per ``COLUMNS`` (``·`` for none), and
    the ``worst`` most severe failures with up to ``resources`` resources each, inert."""
    table = []
    for summary in practices(review):
        cells = [str(summary.counts.get(c, 0) or "·") for c in COLUMNS]
        worst_text = "; ".join(_failure(c, resources) for c in summary.worst(worst))
        more = len(summary.failing) - worst
        if more > 0:
            worst_text += f"; {more} more"
        table.append((str(summary.number), summary.title, *cells, worst_text))
    return table


def _failure(check: Check, limit: int) -> str:
    named = ", ".join(check.resources[:limit]) or "(account)"
    if len(check.resources) > limit:
        named += f" +{len(check.resources) - limit}"
    return one_line(f"{check.severity} {check.id}: {named}", 300)

"""An exercise's score out of 100, and the rubric it was scored by (printed beside it).

Pure and deterministic: the same ``Exercise`` always gets the same score. Three parts:

- decisions, 60 points shared equally by the scenario's expected decisions that applied (one
  whose step was skipped because its ``when:`` was false is left out): the expected answer
  earns its whole share, an acceptable alternative 60 %, a wrong answer or none 0; a
  decision taken later than its ``within_minutes`` earns half of that;
- evidence, 15 points shared equally by the evidence the team should have looked at: seen
  earns its share, not seen 0;
- timing, 25 points: 10 for identifying and 15 for containing within the scenario's targets;
  past a target the credit falls linearly to 0 at three times it; never done, 0.

A part with nothing to judge (no expected decisions, no evidence listed, no targets) is left
out and the others are scaled to 100, so a scenario is never scored on what it does not ask.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from kmsir.tabletop.exercise import Exercise
from kmsir.tabletop.progress import duration

__all__ = ["CREDIT", "PARTS", "RUBRIC", "Part", "Score", "score", "timing_credit"]

#: Points of each part (out of 100 when all apply).
PARTS = {"decisions": 60, "evidence": 15, "timing": 25}
#: Of the timing part: identify and contain.
TIMING_POINTS = {"identify": 10, "contain": 15}
#: What each verdict earns of a decision's share.
CREDIT = {"right": 1.0, "acceptable": 0.6}
#: The verdict of an expected decision left out of the shares.
NOT_APPLICABLE = "not-applicable"
#: What a late decision keeps of its credit.
LATE = 0.5
#: Past a target, credit reaches 0 at this many times the target.
ZERO_AT = 3.0

RUBRIC = (
    "Decisions (60): shared equally by the expected decisions that applied (a step skipped "
    "because its condition was false is left out); the expected answer earns its whole "
    "share, an acceptable alternative 60%, a wrong answer or none 0; later than its time "
    "limit, half of that.",
    "Evidence (15): shared equally by the evidence the team should have looked at; seen earns "
    "its share.",
    "Timing (25): identify (10) and contain (15) within the scenario's targets; past a target "
    "the credit falls linearly to 0 at three times it; never done, 0.",
    "A part with nothing to judge is left out and the others are scaled to 100.",
)


@dataclass(frozen=True)
class Part:
    """One part of the score: ``points`` earned of ``out_of``, and how."""

    name: str
    points: float
    out_of: int
    detail: str


@dataclass(frozen=True)
class Score:
    total: int  # out of 100
    parts: tuple[Part, ...]
    rubric: tuple[str, ...] = RUBRIC

    def as_dict(self) -> dict[str, object]:
        return {
            "total": self.total,
            "out_of": 100,
            "parts": [asdict(p) for p in self.parts],
            "rubric": list(self.rubric),
        }


def score(ex: Exercise) -> Score:
    """The exercise's score (see the module's docstring for the rubric)."""
    parts = [p for p in (_decisions(ex), _evidence(ex), _timing(ex)) if p is not None]
    available = sum(p.out_of for p in parts)
    earned = sum(p.points for p in parts)
    total = _round(100 * earned / available) if available else 0
    return Score(total=total, parts=tuple(parts))


def _decisions(ex: Exercise) -> Part | None:
    judged = [d for d in ex.decisions if d.expected is not None and d.verdict != NOT_APPLICABLE]
    if not judged:
        return None
    share = PARTS["decisions"] / len(judged)
    points = 0.0
    counts: dict[str, int] = {}
    for d in judged:
        credit = CREDIT.get(d.verdict, 0.0) * (LATE if d.late else 1.0)
        points += share * credit
        counts[d.verdict] = counts.get(d.verdict, 0) + 1
    detail = ", ".join(f"{n} {verdict}" for verdict, n in counts.items())
    late = sum(1 for d in judged if d.late)
    if late:
        detail += f" ({late} late)"
    return Part("decisions", round(points, 1), PARTS["decisions"], detail)


def _evidence(ex: Exercise) -> Part | None:
    if not ex.evidence:
        return None
    seen = sum(1 for item in ex.evidence if item.seen)
    points = PARTS["evidence"] * seen / len(ex.evidence)
    detail = f"{seen} of {len(ex.evidence)} seen"
    return Part("evidence", round(points, 1), PARTS["evidence"], detail)


def timing_credit(seconds: float | None, target_minutes: float) -> float:
    """1 within the target, falling linearly to 0 at ``ZERO_AT`` times it; 0 if never."""
    if seconds is None:
        return 0.0
    target = target_minutes * 60
    if seconds <= target:
        return 1.0
    return max(0.0, 1 - (seconds - target) / ((ZERO_AT - 1) * target))


def _timing(ex: Exercise) -> Part | None:
    if ex.targets is None:
        return None
    identify = timing_credit(ex.timing.identify_seconds, ex.targets.identify_minutes)
    contain = timing_credit(ex.timing.contain_seconds, ex.targets.contain_minutes)
    points = TIMING_POINTS["identify"] * identify + TIMING_POINTS["contain"] * contain
    detail = (
        f"identify {duration(ex.timing.identify_seconds)} (target {ex.targets.identify_minutes:g}"
        f" min), contain {duration(ex.timing.contain_seconds)} (target "
        f"{ex.targets.contain_minutes:g} min)"
    )
    return Part("timing", round(points, 1), PARTS["timing"], detail)


def _round(value: float) -> int:
    """Half up (Python's ``round`` goes to even)."""
    return int(value + 0.5)

"""What a scenario's hidden parts say of a players' run: the facilitator's side of it.

Each decision the team made against the one expected (``judge``), the evidence it looked at
or not (``evidence``), the targets its times are held to, the injects still to come and
whether the facilitator holds them (``next_injects``), and the facilitator's observations.
Pure functions over the run's ``RunView``, the scenario and the facilitator's actions (the
``RunView.facilitation`` of their bundles); ``exercise`` gathers them into an ``Exercise``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kmsir.evidence.entries import FacilitatorAction
from kmsir.evidence.stepview import Seen
from kmsir.evidence.view import RunView
from kmsir.sandbox.scenario_model import Scenario
from kmsir.tabletop import progress
from kmsir.tabletop.facilitation import HOLD, NOTE, RELEASE
from kmsir.tabletop.progress import Fired, Made

__all__ = [
    "VERDICTS",
    "Evidence",
    "Judged",
    "NextInject",
    "Observation",
    "Targets",
    "evidence",
    "judge",
    "next_injects",
    "observations",
    "targets",
]

#: A decision's verdict: its answer is the expected one, an acceptable alternative, another
#: one; no answer yet (the run goes on) or never (the run ended first); no expectation.
VERDICTS = ("right", "acceptable", "wrong", "pending", "not-reached", "unscored")
#: The facilitator's actions that hold or release the timed injects.
HOLDS = (HOLD, RELEASE)


@dataclass(frozen=True)
class Judged:
    """A decision against the one expected (``answer`` ``None``: not made)."""

    step: str
    answer: str | None
    by: str | None
    at: str | None
    seconds: float | None
    expected: str | None
    alternatives: tuple[str, ...]
    why: str | None
    verdict: str
    within_minutes: float | None = None

    @property
    def late(self) -> bool:
        """Made after the minutes it should have taken."""
        return (
            self.within_minutes is not None
            and self.seconds is not None
            and self.seconds > self.within_minutes * 60
        )


@dataclass(frozen=True)
class Evidence:
    """Evidence the team should have looked at, and whether it did."""

    what: str
    step: str
    event: str | None
    seen: bool


@dataclass(frozen=True)
class Targets:
    identify_minutes: float
    contain_minutes: float


@dataclass(frozen=True)
class NextInject:
    """An inject of the scenario that has not taken effect yet."""

    index: int
    title: str | None
    say: str
    after: str | None
    after_minutes: float | None
    due_in_seconds: float | None
    held: bool


@dataclass(frozen=True)
class Observation:
    at: str
    text: str
    by: str | None


def judge(view: RunView, made: list[Made], scenario: Scenario | None) -> list[Judged]:
    """Each decision made, against the expected one; then each expected one not made."""
    expected = scenario.expected if scenario is not None else {}
    judged: list[Judged] = []
    for decision in made:
        spec = expected.get(decision.step)
        verdict = "unscored"
        if spec is not None:
            verdict = (
                "right"
                if decision.answer == spec.answer
                else "acceptable"
                if decision.answer in spec.alternatives
                else "wrong"
            )
        judged.append(
            Judged(
                step=decision.step,
                answer=decision.answer,
                by=decision.by,
                at=decision.at,
                seconds=decision.seconds,
                expected=spec.answer if spec else None,
                alternatives=tuple(spec.alternatives) if spec else (),
                why=spec.why if spec else None,
                verdict=verdict,
                within_minutes=spec.within_minutes if spec else None,
            )
        )
    decided = {d.step for d in made}
    for step_id, spec in expected.items():
        if step_id in decided:
            continue
        step = view.steps.get(step_id)
        over = view.finished is not None or (step is not None and step.outcome is not None)
        judged.append(
            Judged(
                step=step_id,
                answer=None,
                by=None,
                at=None,
                seconds=None,
                expected=spec.answer,
                alternatives=tuple(spec.alternatives),
                why=spec.why,
                verdict="not-reached" if over else "pending",
                within_minutes=spec.within_minutes,
            )
        )
    return judged


def evidence(view: RunView, scenario: Scenario | None) -> list[Evidence]:
    found: list[Evidence] = []
    for spec in scenario.evidence_to_see if scenario is not None else []:
        step = view.steps.get(spec.step)
        seen = step is not None and step.done_ok
        if seen and step is not None and spec.event is not None:
            seen = spec.event in progress.events_seen(step)
        found.append(Evidence(what=spec.what, step=spec.step, event=spec.event, seen=seen))
    return found


def targets(scenario: Scenario | None) -> Targets | None:
    if scenario is None or scenario.targets is None:
        return None
    return Targets(
        identify_minutes=scenario.targets.identify_minutes,
        contain_minutes=scenario.targets.contain_minutes,
    )


def next_injects(
    view: RunView,
    scenario: Scenario | None,
    fired: list[Fired],
    facilitation: list[Seen],
    now: datetime,
) -> list[NextInject]:
    """The scenario's injects not fired yet: when each is due, and whether it is held (a
    timed one, while the facilitator's last ``hold`` was not released: the players' process
    holds every timer, ``session``)."""
    if scenario is None:
        return []
    done = {f.index for f in fired if f.index is not None}
    held = False
    for seen in facilitation:
        if isinstance(seen.record, FacilitatorAction) and seen.record.action in HOLDS:
            held = seen.record.action == HOLD
    sandbox = view.meta.sandbox if view.meta is not None else None
    start = sandbox.get("now") if isinstance(sandbox, dict) else None
    start = start or view.started
    upcoming = []
    for index, inject in enumerate(scenario.injects):
        if index in done:
            continue
        due = None
        if inject.after_minutes is not None and start:
            elapsed = progress.seconds_between(start, progress.iso(now)) or 0.0
            due = round(inject.after_minutes * 60 - elapsed, 3)
        upcoming.append(
            NextInject(
                index=index,
                title=inject.title,
                say=inject.say,
                after=inject.after,
                after_minutes=inject.after_minutes,
                due_in_seconds=due,
                held=held and inject.after_minutes is not None,
            )
        )
    return upcoming


def observations(facilitation: list[Seen]) -> list[Observation]:
    """The facilitator's notes, in the order they were taken."""
    return [
        Observation(at=seen.ts, text=seen.record.text, by=seen.record.by)
        for seen in facilitation
        if isinstance(seen.record, FacilitatorAction)
        and seen.record.action == NOTE
        and seen.record.text
    ]

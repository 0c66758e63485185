"""What a scenario's hidden parts say of a players' run: the facilitator's side of it.

Each decision the team made against the one expected (``judge``), the evidence it looked at
or not (``evidence``), the targets its times are held to, the injects still to come and
whether they are held (``next_injects``: as the players' process acknowledged the
facilitator's hold and release), the ground truth named as people know its parts
(``ground_truth``), and the facilitator's observations. Pure functions over the run's
``RunView``, the scenario, the channel's acknowledgements and the facilitator's actions (the
``RunView.facilitation`` of their bundles); ``exercise`` gathers them into an ``Exercise``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kmsir.evidence.entries import FacilitatorAction
from kmsir.evidence.journal import ITERATION
from kmsir.evidence.stepview import Seen, StepView
from kmsir.evidence.view import RunView
from kmsir.sandbox.scenario_model import ExpectedSpec, Scenario
from kmsir.tabletop import channel, progress
from kmsir.tabletop.facilitation import NOTE
from kmsir.tabletop.progress import Fired, Made

__all__ = [
    "VERDICTS",
    "Evidence",
    "Judged",
    "NextInject",
    "Observation",
    "Targets",
    "evidence",
    "ground_truth",
    "held",
    "judge",
    "next_injects",
    "observations",
    "targets",
]

#: A decision's verdict: its answer is the expected one, an acceptable alternative, another
#: one; no answer yet (the run goes on) or never (the run ended first); the step did not
#: apply (its ``when:`` was false after the team's earlier answers); no expectation.
VERDICTS = (
    "right",
    "acceptable",
    "wrong",
    "pending",
    "not-reached",
    "not-applicable",
    "unscored",
)
#: What a skip that was no one's choice says: the step's condition was false, or its list
#: empty (``run.engine``).
_NOT_APPLICABLE = ("when: ", "for_each: ")
#: What an inject not fired by the run's end says instead of a countdown.
ENDED = "not fired (the run ended)"


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
    #: ``ENDED`` once the run is over (then no countdown), else ``None``.
    note: str | None = None


@dataclass(frozen=True)
class Observation:
    at: str
    text: str
    by: str | None


def judge(view: RunView, made: list[Made], scenario: Scenario | None) -> list[Judged]:
    """Each decision made, against the expected one (the iterations ``step[n]`` of a
    ``for_each`` step expected as a whole are judged together); then each expected one not
    made: pending, not reached (the run ended before it) or not applicable (skipped because
    its ``when:`` was false: the team's earlier answers made it not apply)."""
    expected = scenario.expected if scenario is not None else {}
    looped: dict[str, list[Made]] = {}
    for decision in made:
        match = ITERATION.fullmatch(decision.step)
        if match and match[1] in expected and decision.step not in expected:
            looped.setdefault(match[1], []).append(decision)
    judged: list[Judged] = []
    for decision in made:
        match = ITERATION.fullmatch(decision.step)
        if match and match[1] in looped:
            if looped[match[1]][0] is decision:
                judged.append(_iterations(match[1], looped[match[1]], expected[match[1]]))
            continue
        spec = expected.get(decision.step)
        judged.append(
            _judged(
                decision.step,
                decision,
                spec,
                _verdict([decision.answer], spec) if spec else "unscored",
            )
        )
    decided = {d.step for d in made} | set(looped)
    for step_id, spec in expected.items():
        if step_id in decided:
            continue
        step = view.steps.get(step_id)
        over = view.finished is not None or (step is not None and step.outcome is not None)
        verdict = "not-reached" if over else "pending"
        if _not_applicable(view, step_id):
            verdict = "not-applicable"
        judged.append(_judged(step_id, None, spec, verdict))
    return judged


def _judged(step: str, made: Made | None, spec: ExpectedSpec | None, verdict: str) -> Judged:
    return Judged(
        step=step,
        answer=made.answer if made else None,
        by=made.by if made else None,
        at=made.at if made else None,
        seconds=made.seconds if made else None,
        expected=spec.answer if spec else None,
        alternatives=tuple(spec.alternatives) if spec else (),
        why=spec.why if spec else None,
        verdict=verdict,
        within_minutes=spec.within_minutes if spec else None,
    )


def _verdict(answers: list[str], spec: ExpectedSpec) -> str:
    if all(answer == spec.answer for answer in answers):
        return "right"
    if all(answer in (spec.answer, *spec.alternatives) for answer in answers):
        return "acceptable"
    return "wrong"


def _iterations(step_id: str, made: list[Made], spec: ExpectedSpec) -> Judged:
    """The iterations of a ``for_each`` step as one decision: right when every one is the
    expected answer, acceptable when each is that or an alternative, else wrong; its time,
    the slowest of them."""
    answers = [d.answer for d in made]
    times = [d.seconds for d in made if d.seconds is not None]
    whos = [d.by for d in made if d.by]
    one = Made(
        step=step_id,
        answer=", ".join(answers),
        by=", ".join(dict.fromkeys(whos)) or None,
        at=made[-1].at,
        seconds=max(times) if times else None,
        question=made[-1].question,
    )
    judged = _judged(step_id, one, spec, _verdict(answers, spec))
    why = f"{spec.why} (judged over its {len(made)} iterations: each must be {spec.answer})"
    return dataclasses.replace(judged, why=why)


def _not_applicable(view: RunView, step_id: str) -> bool:
    """The step (or each iteration of it) was skipped because its ``when:`` was false or its
    ``for_each`` list empty: no one's choice, unlike a responder's skip (a decision)."""
    steps = [view.steps[step_id]] if step_id in view.steps else []
    steps += [
        s
        for s in view.steps.values()
        if (match := ITERATION.fullmatch(s.id)) is not None and match[1] == step_id
    ]
    return bool(steps) and all(_skipped_by_condition(s) for s in steps)


def _skipped_by_condition(step: StepView) -> bool:
    return step.outcome == "skipped" and (step.summary or "").startswith(_NOT_APPLICABLE)


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


def held(acks: list[dict[str, Any]]) -> bool:
    """Whether the timed injects are held now, as the players' process acknowledged it
    (``channel.holding``: the same reading a resumed players' process makes)."""
    return channel.holding(acks)


def next_injects(
    view: RunView,
    scenario: Scenario | None,
    fired: list[Fired],
    holding: bool,
    now: datetime,
) -> list[NextInject]:
    """The scenario's injects not fired yet: when each is due, and whether it is held (a
    timed one, while ``holding``: the players' process holds every timer, ``session``).
    Once the run is over, each is ``ENDED``, with no countdown."""
    if scenario is None:
        return []
    done = {f.index for f in fired if f.index is not None}
    over = view.finished is not None
    sandbox = view.meta.sandbox if view.meta is not None else None
    start = sandbox.get("now") if isinstance(sandbox, dict) else None
    start = start or view.started
    upcoming = []
    for index, inject in enumerate(scenario.injects):
        if index in done:
            continue
        due = None
        if inject.after_minutes is not None and start and not over:
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
                held=holding and inject.after_minutes is not None and not over,
                note=ENDED if over else None,
            )
        )
    return upcoming


def ground_truth(scenario: Scenario | None) -> dict[str, Any] | None:
    """The ground truth with its parts named as people know them (the scenario names them
    by its own keys): the key by its alias and description, the principal by its type and
    name, the grant by its name and grantee, the access key by its user's name."""
    if scenario is None or scenario.ground_truth is None:
        return None
    truth = scenario.ground_truth
    shown: dict[str, Any] = truth.model_dump(mode="json")
    key = scenario.keys.get(truth.key)
    if key is not None:
        shown["key"] = _named(key.alias or truth.key, key.description)
    who = scenario.identities.get(truth.principal or "")
    if who is not None:
        name = who.name or who.user or truth.principal
        shown["principal"] = f"{who.type} {name}" + (
            f" (session {who.session})" if who.session else ""
        )
    grant = scenario.grants.get(truth.grant or "")
    if grant is not None:
        shown["grant"] = f"{grant.name} (grantee {grant.grantee})"
    user = scenario.users.get(truth.access_key or "")
    if user is not None:
        shown["access_key"] = f"an access key of IAM user {user.name}"
    return shown


def _named(name: str, description: str) -> str:
    return f"{name} ({description})" if description else name


def observations(facilitation: list[Seen]) -> list[Observation]:
    """The facilitator's notes, in the order they were taken."""
    return [
        Observation(at=seen.ts, text=seen.record.text, by=seen.record.by)
        for seen in facilitation
        if isinstance(seen.record, FacilitatorAction)
        and seen.record.action == NOTE
        and seen.record.text
    ]

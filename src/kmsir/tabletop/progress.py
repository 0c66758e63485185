"""What a players' run did, read from its ``RunView``: the facts an exercise is judged on.

The timeline the room shows (step outcomes, decisions, injects, findings, notes), the keys and
the states the team saw them in, the findings it was shown, the injects that reached it, each
decision the team made (one per step: the answer to an ``ask``, else the step's approval) and
the times to identify, contain and recover. Pure functions over the view (the one reading of
the journal, ``evidence.view.fold``, with its timestamps by line); nothing here knows
the scenario's hidden parts (``exercise`` pairs the decisions with what was expected).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kmsir.actions.human import Ask
from kmsir.actions.human import Note as NoteAction
from kmsir.evidence import entries as e
from kmsir.evidence.journal import ITERATION
from kmsir.evidence.stepview import Moment, StepView
from kmsir.evidence.view import RunView

#: Steps whose outcome repeats the record just before it (the answer, the note's text).
_ECHOING_ACTIONS = frozenset({Ask.name, NoteAction.name})
#: What an inject's successful call leaves a key in (the key-state table of AWS's guide).
_STATE_AFTER = {
    "DisableKey": "Disabled",
    "EnableKey": "Enabled",
    "ScheduleKeyDeletion": "PendingDeletion",
    "CancelKeyDeletion": "Disabled",
}
#: What is recorded while a question waits for its answer (the clock runs from before them).
_AT_THE_PROMPT = (e.Note, e.Decision, e.InputChanged)
#: The decisions that are not a choice of the team's: how to go on after a failure.
_NOT_A_CHOICE = frozenset({"on error"})


@dataclass(frozen=True)
class Line:
    """One line of the room's timeline."""

    at: str
    #: The entry type of the record it shows (a decision, a note, an inject), or ``step``
    #: (a step's outcome) or ``finding`` (one the step showed).
    kind: str
    step: str | None
    text: str


@dataclass(frozen=True)
class KeyState:
    key_id: str
    alias: str | None
    state: str | None


@dataclass(frozen=True)
class Finding:
    severity: str
    title: str
    principal: str | None


@dataclass(frozen=True)
class Fired:
    """An inject that took effect in the players' run."""

    at: str
    say: str
    trigger: str  # "step" | "timer" | "facilitator"
    index: int | None = None
    #: The step it fired after (a step's inject), or before (a timed or facilitator's one).
    after: str | None = None
    before: str | None = None


@dataclass(frozen=True)
class Made:
    """A decision the team made at a step (its answer as the journal records it)."""

    step: str
    answer: str
    by: str | None
    at: str
    seconds: float | None
    question: str


@dataclass(frozen=True)
class Timing:
    """Seconds from the run's start (``None``: not reached)."""

    identify_seconds: float | None = None
    contain_seconds: float | None = None
    recover_seconds: float | None = None


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from one journal timestamp to another (``None`` if either is missing)."""
    if not start or not end:
        return None
    return round((_time(end) - _time(start)).total_seconds(), 3)


def duration(seconds: float | None) -> str:
    """Seconds as people read them: ``4.2 s``, ``42 s``, ``3 min 05 s``, ``1 h 02 min``;
    ``never`` for ``None``."""
    if seconds is None:
        return "never"
    whole = int(seconds + 0.5)
    if whole < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def iso(moment: datetime) -> str:
    """A moment as the journal writes it (UTC, microseconds, ``Z``)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _time(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def ordered_steps(view: RunView) -> list[StepView]:
    """The steps with an outcome, in the order they ended."""
    done = [s for s in view.steps.values() if s.outcome_seq is not None]
    return sorted(done, key=lambda s: s.outcome_seq or 0)


def current_step(view: RunView, order: list[str] | None = None) -> str | None:
    """The step the team is at: the one started with no outcome since; else, while the run
    goes on, the first step of the playbook's ``order`` without an outcome (its prompt is
    awaiting the team's decision: an approval or a question is asked before a step starts).
    A ``for_each`` step has an outcome once one of its iterations (``step[n]``) has."""
    running = [s for s in view.steps.values() if s.in_flight]
    if running:
        return running[-1].id
    if view.finished is not None or not order:
        return None
    ended = {s.id for s in view.steps.values() if s.outcome is not None}
    ended |= {match[1] for s in ended if (match := ITERATION.fullmatch(s))}
    return next((step for step in order if step not in ended), None)


def findings(view: RunView) -> list[Finding]:
    """The findings the team was shown (the top ones of each findings step that succeeded)."""
    found: list[Finding] = []
    for step in ordered_steps(view):
        for item in _top(step):
            found.append(
                Finding(
                    severity=str(item.get("severity") or "info"),
                    title=str(item.get("title") or ""),
                    principal=_str(item.get("principal")),
                )
            )
    return found


def _top(step: StepView) -> list[dict[str, Any]]:
    if step.action != "cloudtrail.findings" or not step.done_ok:
        return []
    top = step.outputs.get("top")
    return [t for t in top if isinstance(t, dict)] if isinstance(top, list) else []


def injects(view: RunView) -> list[Fired]:
    """The injects that took effect, in journal order."""
    fired: list[Fired] = []
    for moment in sorted(view.injects, key=lambda m: m.seq):
        record = moment.record if isinstance(moment.record, dict) else {}
        index = record.get("inject")
        trigger = str(record.get("trigger") or "step")
        fired.append(
            Fired(
                at=moment.ts,
                say=str(record.get("say") or ""),
                trigger=trigger,
                index=index if isinstance(index, int) else None,
                after=_str(record.get("after")) if trigger == "step" else None,
                before=_str(record.get("before")),
            )
        )
    return fired


def decisions(view: RunView) -> list[Made]:
    """The team's decision at each step, in journal order: the answer to the step's own
    question (an ``ask``, a ``confirm``...) when it put one, else its approval (``approved``,
    ``skipped``, ``aborted``); the last one when it was asked again. ``seconds``: from the
    moment the question was put (``asked``) to the answer."""
    own: dict[str, tuple[int, Made]] = {}
    approvals: dict[str, tuple[int, Made]] = {}
    for moment in view.timeline:
        record = moment.record
        if not isinstance(record, e.Decision) or moment.step is None:
            continue
        if record.question in _NOT_A_CHOICE:
            continue
        made = Made(
            step=moment.step,
            answer=str(record.answer),
            by=record.by,
            at=moment.ts,
            seconds=seconds_between(asked(view, moment), moment.ts),
            question=record.question,
        )
        approval = record.calls is not None or record.question.startswith("run ")
        (approvals if approval else own)[moment.step] = (moment.seq, made)
    chosen = {**approvals, **own}
    return [made for _, made in sorted(chosen.values(), key=lambda c: c[0])]


def timing(view: RunView) -> Timing:
    """Identify: the first findings step that found something; contain: the first
    containment step that changed something and succeeded; recover: the first such recovery
    step, else (once contained) the run's successful end. Seconds from the run's start."""
    identify = contain = recover = None
    for step in ordered_steps(view):
        if not step.done_ok:
            continue
        if identify is None and step.action == "cloudtrail.findings" and _top_count(step):
            identify = step.finished
        if step.mutating and step.status == "succeeded":
            if contain is None and step.phase == "containment":
                contain = step.finished
            if recover is None and step.phase == "recovery":
                recover = step.finished
    finished = view.finished
    if recover is None and contain is not None and finished and finished.status == "succeeded":
        recover = finished.ts
    return Timing(
        identify_seconds=seconds_between(view.started, identify),
        contain_seconds=seconds_between(view.started, contain),
        recover_seconds=seconds_between(view.started, recover),
    )


def _top_count(step: StepView) -> int:
    count = step.outputs.get("count")
    return count if isinstance(count, int) else len(_top(step))


def events_seen(step: StepView) -> set[str]:
    """The CloudTrail event names a step collected or found (``collect``'s ``event_names``,
    the events of ``findings``' top findings)."""
    names = step.outputs.get("event_names")
    seen = {str(n) for n in names} if isinstance(names, dict | list) else set()
    seen |= {str(t["event_name"]) for t in _top(step) if t.get("event_name")}
    return seen


def keys(view: RunView) -> list[KeyState]:
    """Each key the run read or changed, in the state it was last seen in: snapshots, the
    before and after of the steps that changed it, the injects' calls, the final reading."""
    states: dict[str, KeyState] = {}

    def seen(key_id: Any, state: Any, alias: Any = None) -> None:
        if not isinstance(key_id, str) or not key_id:
            return
        known = states.get(key_id)
        states[key_id] = KeyState(
            key_id=key_id,
            alias=_str(alias) or (known.alias if known else None),
            state=_str(state) or (known.state if known else None),
        )

    changes: list[tuple[int, Any]] = [(s.outcome_seq or 0, s) for s in ordered_steps(view)]
    changes += [(m.seq, m.record) for m in view.injects]
    for _, item in sorted(changes, key=lambda c: c[0]):
        if isinstance(item, StepView):
            if not item.done_ok:
                continue
            out = item.outputs
            if item.action == "kms.snapshot":
                aliases = out.get("aliases")
                first = aliases[0] if isinstance(aliases, list) and aliases else None
                seen(out.get("key_id"), out.get("state"), first)
            for side in (item.before, item.after):
                if isinstance(side, dict):
                    seen(side.get("key_id"), side.get("state"))
        elif isinstance(item, dict):
            for call in item.get("calls") or []:
                if isinstance(call, dict) and not call.get("error_code"):
                    params = call.get("params") or {}
                    state = _STATE_AFTER.get(str(call.get("operation")))
                    if state and isinstance(params, dict):
                        seen(_key_id(params.get("KeyId"), states), state)
    for final in view.final_keys:
        seen(final.get("key_id"), final.get("state"))
    return list(states.values())


def _key_id(ref: Any, known: dict[str, KeyState]) -> str | None:
    """A key id from a call's ``KeyId`` (an id, an ARN, or an alias the run saw)."""
    if not isinstance(ref, str):
        return None
    for key in known.values():
        if ref in (key.key_id, key.alias) or ref.endswith(f"/{key.key_id}"):
            return key.key_id
    return ref.rsplit("/", 1)[-1] if ref.startswith("arn:") and ":key/" in ref else ref


def timeline(view: RunView, fired: list[Fired]) -> list[Line]:
    """The room's timeline, in journal order: step outcomes (not those that only repeat an
    answer or a note), decisions, notes, injects, and the findings each findings step
    showed."""
    lines: list[tuple[int, Line]] = []
    for moment in view.timeline:
        record = moment.record
        if isinstance(record, e.Note):
            lines.append((moment.seq, Line(moment.ts, e.Note.TYPE, moment.step, record.text)))
        elif isinstance(record, e.Decision) and moment.step is not None:
            if record.question in _NOT_A_CHOICE:
                text = f"after a failure: {record.answer}"
            elif record.question.startswith("run "):
                text = f"{record.question}: {record.answer}"
            else:
                text = f"{record.question} -> {record.answer}"
            lines.append((moment.seq, Line(moment.ts, e.Decision.TYPE, moment.step, text)))
        elif isinstance(record, (e.StepSucceeded, e.StepSkipped, e.StepFailed)):
            if isinstance(record, e.StepSucceeded) and record.action in _ECHOING_ACTIONS:
                continue
            step = view.steps.get(moment.step or "")
            name = step.name if step is not None else moment.step
            summary = getattr(record, "summary", None) or getattr(record, "reason", None)
            if isinstance(record, e.StepFailed):
                summary = record.error
            status = getattr(record, "status", None) or "failed"
            text = f"{name}: {status}" + (f" ({summary})" if summary else "")
            lines.append((moment.seq, Line(moment.ts, "step", moment.step, text)))
            if step is not None and step.outcome_seq == moment.seq:
                for item in _top(step):
                    who = f" ({item['principal']})" if item.get("principal") else ""
                    text = f"{item.get('severity')}: {item.get('title')}{who}"
                    lines.append((moment.seq, Line(moment.ts, "finding", moment.step, text)))
    seqs = sorted(m.seq for m in view.injects)
    for seq, inject in zip(seqs, fired, strict=True):
        where = inject.after or inject.before
        lines.append((seq, Line(inject.at, e.Inject.TYPE, where, inject.say)))
    return [line for _, line in sorted(lines, key=lambda pair: pair[0])]


def asked(view: RunView, decision: Moment) -> str | None:
    """When the question a decision answers was put: the time of the last journal line
    before it that is not a note, a decision or an input change of the same step (a note
    taken at the prompt, or an earlier answer to it, does not restart the clock)."""
    same_step = {
        m.seq
        for m in view.timeline
        if m.step == decision.step and isinstance(m.record, _AT_THE_PROMPT)
    }
    seq = decision.seq - 1
    while seq in same_step:
        seq -= 1
    return _ts(view, seq)


def _ts(view: RunView, seq: int) -> str | None:
    """The time of the journal line ``seq`` (``None`` past either end)."""
    return view.times[seq - 1] if 0 < seq <= len(view.times) else None


def _str(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None

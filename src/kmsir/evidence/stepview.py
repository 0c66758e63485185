"""The parts of a ``RunView``, and one step as the journal tells it (``StepView``).

Two readings of a step live side by side, because resume and the report ask different
questions: ``StepView.carried`` is what the step's unfinished attempts did (reset once it
succeeds or is skipped: nothing carries over to a later run of it), the rest is its whole
history (every call, every decision) for the report and the debrief. ``fold_step`` folds one
entry of the step into it; ``view.fold`` calls it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from kmsir.evidence import entries as e
from kmsir.evidence.calls import Call

Json = dict[str, Any]


class View(msgspec.Struct, kw_only=True):
    """Base of the view's parts: dumped as JSON for the committed fixtures."""


class Moment(View, kw_only=True):
    """One thing that happened, in journal order: a decision, a note, an inject..."""

    seq: int
    ts: str
    step: str | None
    record: Any


class Seen(View, kw_only=True):
    """A record and the journal line it is on."""

    seq: int
    ts: str
    record: Any


class Carried(View, kw_only=True):
    """What a step's unfinished attempts did, carried to the next attempt (and to resume)
    until the step succeeds or is skipped."""

    sent: list[Call] = []  # state-changing calls AWS did not refuse
    before: Json | None = None  # the state recorded before the first change
    recorded: list[Any] = []  # decisions and notes made during an attempt
    approval: Seen | None = None  # the last "run ..." approval (not an abort)
    on_error: str | None = None  # the answer to "on error" after the last failure

    @property
    def any(self) -> bool:
        return bool(self.sent or self.before or self.recorded)


class StepApprovals(View, kw_only=True):
    """A step's second-person approvals: its last request and what came of it, and every
    answer its requests had (the report's "who approved, when and why")."""

    request: e.ApprovalRequested | None = None  # the last request
    request_seq: int | None = None
    given: list[e.ApprovalGiven] = []  # approvals of the last request
    denied: e.ApprovalGiven | None = None  # a deny of the last request
    timed_out: bool = False  # the last request timed out
    started: bool = False  # the step started after the last request
    ended: bool = False  # an outcome (succeeded, failed, skipped) after the last request
    history: list[Seen] = []  # every approval-given record of the step
    refused: list[Seen] = []  # every approval-refused record of the step
    handled: list[str] = []  # the answer ids acknowledged (given or refused)

    @property
    def approved(self) -> int:
        """Distinct approvals of the last request, those kept from an earlier one included."""
        return len(self.given) + (len(self.request.kept) if self.request is not None else 0)

    @property
    def open(self) -> bool:
        """The last request still stands (no deny, timeout or outcome since): its approvals
        count for the step (a resume keeps them)."""
        return (
            self.request is not None
            and not self.ended
            and self.denied is None
            and not self.timed_out
        )

    @property
    def waiting(self) -> bool:
        """The step waits for approvals: an open request short of its count, not started."""
        return (
            self.open
            and not self.started
            and self.request is not None
            and self.approved < self.request.count
        )


class StepView(View, kw_only=True):
    """One step as the journal tells it."""

    id: str
    name: str
    action: str
    phase: str | None = None
    #: "succeeded", "already", "failed", "skipped", "would-run"..., or "incomplete" (no
    #: outcome recorded)
    status: str = "incomplete"
    summary: str = "started, no outcome recorded"
    outcome: str | None = None  # "succeeded" | "skipped" | "failed": the last outcome
    outcome_seq: int | None = None
    stopped_run: bool = False
    in_flight: bool = False  # started after its last outcome: the run stopped inside it
    started: str | None = None
    finished: str | None = None
    mutating: bool = False
    params: Json | None = None
    outputs: Json = {}
    before: Json | None = None
    after: Json | None = None
    inverse: str | None = None
    inverse_until: str | None = None
    rechecked: bool = False
    approved_by: str | None = None  # from the last approval that showed calls
    reason: str | None = None
    calls: list[Call] = []  # every API call with AWS's answer
    intents: list[Call] = []  # every state-changing call journaled before it was sent
    retries: list[Seen] = []
    attempts: int = 0  # the highest artifact attempt folder used
    carried: Carried = msgspec.field(default_factory=Carried)
    #: Its second-person approvals (``None``: the step never asked for any).
    approvals: StepApprovals | None = None

    @property
    def done_ok(self) -> bool:
        """Succeeded (or already so) and not in flight since: its outputs stand."""
        return self.outcome == "succeeded" and not self.in_flight

    def done(self, on_error: str = "abort") -> bool:
        """True when resume must not run the step again (``on_error``: the step's setting)."""
        if self.in_flight or self.outcome is None:
            return False
        if self.outcome == "failed":
            if self.stopped_run:
                return False  # its evidence could not be kept: it runs again
            return on_error == "continue" or self.skip_pending
        return True

    @property
    def skip_pending(self) -> bool:
        """The responder chose to skip the failed step; the run stopped before recording it."""
        return not self.in_flight and self.outcome == "failed" and self.carried.on_error == "skip"

    @property
    def unfinished_work(self) -> bool:
        """True when an earlier attempt sent a change, recorded a state or an answer."""
        return self.in_flight or self.carried.any


def plain(call: Call) -> Call:
    """A journaled call as the one ``Call`` record (the entry type is the view's business)."""
    return Call(**{f: getattr(call, f) for f in call.__struct_fields__})


def fold_step(step: StepView, entry: e.Entry, record: Any, seen: Seen) -> None:
    carried = step.carried
    if isinstance(record, _APPROVALS) or step.approvals is not None:
        _fold_approvals(step, entry, record, seen)
    if isinstance(record, e.StepStarted):
        if step.started is None:
            step.name, step.action, step.phase = record.name, record.action, record.phase
            step.started = entry.ts
        step.mutating, step.params = record.mutating, record.params
        step.in_flight, step.status = True, "incomplete"
        step.summary = "started, no outcome recorded"
    elif isinstance(record, (e.StepSucceeded, e.StepSkipped, e.StepFailed)):
        step.in_flight, step.outcome_seq, step.finished = False, entry.seq, entry.ts
        if step.started is None and not isinstance(record, e.StepSucceeded):
            step.name, step.action, step.phase = record.name, record.action, record.phase
        step.action = step.action or record.action
        step.inverse = step.inverse_until = None
        carried.on_error = None
        if isinstance(record, e.StepFailed):
            step.outcome, step.status, step.summary = "failed", "failed", record.error
            step.stopped_run = record.stopped_run
        else:
            step.stopped_run = False
            # done: nothing carries over to a later run of it
            carried.sent, carried.before, carried.recorded = [], None, []
            carried.approval = None
        if isinstance(record, e.StepSkipped):
            step.outcome, step.status, step.summary = "skipped", record.status, record.reason
        if isinstance(record, e.StepSucceeded):
            step.outcome, step.status, step.summary = "succeeded", record.status, record.summary
            step.outputs, step.after = dict(record.outputs or {}), record.after
            step.before = record.before or step.before
            step.inverse, step.inverse_until = record.inverse, record.inverse_until
            step.rechecked = record.rechecked
    elif isinstance(record, e.Decision):
        if record.question.startswith("run "):
            # an abort stopped the run before the step: on resume it is asked afresh
            carried.approval = seen if record.answer != "aborted" else None
        elif record.question == "on error":
            carried.on_error = str(record.answer)
        else:
            carried.recorded.append(record)
        if record.calls is not None:
            step.approved_by, step.reason = record.by, record.reason
    elif isinstance(record, e.Note):
        carried.recorded.append(record)
    elif isinstance(record, e.BeforeChange):
        if carried.before is None:
            carried.before = record.before
        if step.before is None and isinstance(record.before, dict):
            step.before = record.before  # stands in until an outcome says otherwise
    elif isinstance(record, e.StepRetry):
        step.retries.append(seen)


_APPROVALS = (e.ApprovalRequested, e.ApprovalGiven, e.ApprovalRefused, e.ApprovalTimedOut)


def _fold_approvals(step: StepView, entry: e.Entry, record: Any, seen: Seen) -> None:
    if step.approvals is None:
        step.approvals = StepApprovals()
    state = step.approvals
    if isinstance(record, e.ApprovalRequested):
        state.request, state.request_seq = record, entry.seq
        state.given, state.denied = [], None
        state.timed_out = state.started = state.ended = False
    elif isinstance(record, e.ApprovalGiven):
        state.history.append(seen)
        state.handled.append(record.answer)
        if state.request is not None and record.request == state.request.request:
            if record.decision == "deny":
                state.denied = record
            else:
                state.given.append(record)
    elif isinstance(record, e.ApprovalRefused):
        state.refused.append(seen)
        state.handled.append(record.answer)
    elif isinstance(record, e.ApprovalTimedOut):
        if state.request is not None and record.request == state.request.request:
            state.timed_out = True
    elif isinstance(record, e.StepStarted):
        state.started = True
    elif isinstance(record, (e.StepSucceeded, e.StepSkipped, e.StepFailed)):
        state.ended = True

"""The one reading of a journal: ``fold(entries) -> RunView``.

Resume (where each step stands, what an unfinished attempt already did), the manifest, the
report, verification, sandbox replay and step retries all consume the ``RunView`` this makes;
none of them reads journal entries itself. ``fold`` of a prefix of a journal is the run as it
stood at that line (``verify`` compares a manifest with the journal it anchored). Each step
is a ``stepview.StepView``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import msgspec

from kmsir.evidence import entries as e
from kmsir.evidence.stepview import Moment, Seen, StepView, fold_step, plain

Json = dict[str, Any]
_ATTEMPT = re.compile(r"^artifacts/\d+-[^/.]+(?:\.(\d+))?/")
#: Entries too fine-grained for the timeline (they are counted or indexed instead), and the
#: records about the evidence rather than the response (signatures, reports).
_NOT_IN_TIMELINE: tuple[type[Any], ...] = (
    e.ApiCall,
    e.ApiIntent,
    e.Artifact,
    e.ArtifactIntent,
    e.BeforeChange,
    e.StepStarted,
    e.Anchor,
    e.AnchorKey,
    e.ReportWritten,
    e.TargetResult,
)


class Custody(msgspec.Struct, kw_only=True):
    """One handling of the evidence (NIST SP 800-61's evidence log)."""

    event: str  # "started" | "resumed"
    ts: str
    operator: Json | None
    host: str | None
    location: str | None
    tool: Json | None


class Finished(msgspec.Struct, kw_only=True):
    seq: int
    ts: str
    status: str
    error: str | None = None


class RunView(msgspec.Struct, kw_only=True):
    """A run as its journal tells it."""

    lines: int = 0  # journal lines read
    head: str | None = None
    hashes: list[str] = []  # each line's hash, by seq - 1
    times: list[str] = []  # each line's ts, by seq - 1 (how long a decision took)
    meta: e.RunStarted | None = None
    started: str | None = None
    custody: list[Custody] = []
    resumes: list[Seen] = []  # run-resumed records
    interruptions: list[Seen] = []
    finished: Finished | None = None  # the finish after the last resume, if any
    finished_once: bool = False  # a finish came before a later resume
    inputs: Json = {}
    input_changes: list[Json] = []
    steps: dict[str, StepView] = {}
    artifacts: list[Seen] = []
    artifact_intents: list[Seen] = []
    injects: list[Moment] = []  # journaled after steps, and those a resume replayed
    #: A facilitator's bundle: what the facilitator did (``FacilitatorAction`` records).
    facilitation: list[Seen] = []
    reports: dict[str, Seen] = {}  # the last record of each report, by name
    report_seqs: list[int] = []
    repairs: list[Seen] = []
    anchor_keys: list[Seen] = []
    signatures: list[Seen] = []  # anchor entries whose signature was made
    last_anchor: Seen | None = None  # the last anchor entry (signed or not)
    anchor_failures: list[Seen] = []
    locks_overridden: list[Moment] = []
    input_files: list[Moment] = []
    skipped_input: list[Moment] = []
    queries: list[Moment] = []
    timeline: list[Moment] = []
    #: What the run did to the world, in journal order: each state-changing call AWS did not
    #: refuse (a ``Call``) and each inject journaled or replayed (its record, a mapping).
    world: list[Moment] = []
    ends_with_anchor: bool = False
    #: What the run left open, from its last ``open-risks`` entry (keys read again, risks).
    open_risks: list[Json] = []
    final_keys: list[Json] = []
    #: Each fanned-out step's accounts and Regions (``TargetResult`` records of its last
    #: attempt), by step id, in journal order.
    targets: dict[str, list[e.TargetResult]] = {}

    @property
    def status(self) -> str:
        return self.finished.status if self.finished is not None else "incomplete"

    @property
    def run_id(self) -> str | None:
        return self.meta.run_id if self.meta is not None else None

    @property
    def mode(self) -> str | None:
        return self.meta.mode if self.meta is not None else None

    def waiting_step(self, step_id: str) -> StepView | None:
        """The step ``step_id`` when it waits for a second person's approvals now: its last
        request open and short of its count, and the run neither finished, interrupted nor
        resumed since (a resumed step asks again, under a new request)."""
        step = self.steps.get(step_id)
        state = step.approvals if step is not None else None
        if state is None or not state.waiting or self.finished is not None:
            return None
        stops = [s.seq for s in (*self.interruptions, *self.resumes)]
        return step if (state.request_seq or 0) > max(stops, default=0) else None

    def answered(self, answer_id: str) -> e.ApprovalGiven | e.ApprovalRefused | None:
        """What the run made of the answer file ``answer_id`` (accepted or refused), if it
        acknowledged it yet."""
        for step in self.steps.values():
            state = step.approvals
            for seen in (*state.history, *state.refused) if state is not None else ():
                if seen.record.answer == answer_id:
                    return seen.record  # type: ignore[no-any-return]
        return None

    def answers_handled(self) -> set[str]:
        """The ids of every answer file the run acknowledged (accepted or refused)."""
        return {
            answer
            for step in self.steps.values()
            if step.approvals is not None
            for answer in step.approvals.handled
        }

    def context_steps(self) -> dict[str, Json]:
        """``steps.<id>`` for the template context, as the original run had it."""
        return {s.id: {**s.outputs, "status": s.status} for s in self.steps.values() if s.done_ok}


def fold(entries: Iterable[e.Entry]) -> RunView:
    """The run the journal ``entries`` tell of (a prefix tells the run as it stood then)."""
    lines = list(entries)
    refused = _refused(lines)
    view = RunView()
    for entry in lines:
        view.lines += 1
        view.head = entry.hash
        view.hashes.append(entry.hash)
        view.times.append(entry.ts)
        record = entry.data
        step = _step(view, entry)
        seen = Seen(seq=entry.seq, ts=entry.ts, record=record)
        moment = Moment(seq=entry.seq, ts=entry.ts, step=entry.step, record=record)
        if not isinstance(record, _NOT_IN_TIMELINE):
            view.timeline.append(moment)
        view.ends_with_anchor = isinstance(record, e.Anchor)
        if isinstance(record, e.RunStarted):
            if view.meta is None:
                view.meta, view.started = record, entry.ts
                view.inputs = dict(record.inputs or {})
            view.custody.append(_custody("started", entry.ts, record))
        elif isinstance(record, e.RunResumed):
            view.resumes.append(seen)
            view.custody.append(_custody("resumed", entry.ts, record))
            if view.finished is not None:
                view.finished, view.finished_once = None, True
                view.open_risks, view.final_keys = [], []  # read again when it ends
            replay = record.sandbox_replay or {}
            late = replay.get("injects") if isinstance(replay, dict) else None
            for item in late if isinstance(late, list) else []:
                if isinstance(item, dict):
                    fired = Moment(seq=entry.seq, ts=entry.ts, step=item.get("after"), record=item)
                    view.injects.append(fired)
                    view.world.append(fired)
        elif isinstance(record, e.RunFinished):
            view.finished = Finished(
                seq=entry.seq, ts=entry.ts, status=record.status, error=record.error
            )
        elif isinstance(record, e.RunInterrupted):
            view.interruptions.append(seen)
        elif isinstance(record, e.OpenRisks):
            view.open_risks, view.final_keys = list(record.risks), list(record.keys)
        elif isinstance(record, e.InputChanged):
            view.inputs[record.name] = record.to
            view.input_changes.append(
                {
                    "name": record.name,
                    "from": record.from_,
                    "to": record.to,
                    "by": record.by,
                    "step": entry.step,
                    "ts": entry.ts,
                }
            )
        elif isinstance(record, e.Artifact):
            view.artifacts.append(seen)
        elif isinstance(record, e.ArtifactIntent):
            view.artifact_intents.append(seen)
            if step is not None:
                match = _ATTEMPT.match(record.path)
                step.attempts = max(step.attempts, int(match[1]) if match and match[1] else 1)
        elif isinstance(record, e.Inject):
            fired = Moment(seq=entry.seq, ts=entry.ts, step=entry.step, record=record.record)
            view.injects.append(fired)
            view.world.append(fired)
        elif isinstance(record, e.FacilitatorAction):
            view.facilitation.append(seen)
        elif isinstance(record, e.ReportWritten):
            view.reports[record.path] = seen
            view.report_seqs.append(entry.seq)
        elif isinstance(record, e.Repair):
            view.repairs.append(seen)
        elif isinstance(record, e.AnchorKey):
            view.anchor_keys.append(seen)
        elif isinstance(record, e.Anchor):
            view.signatures.append(seen)
            view.last_anchor = seen
        elif isinstance(record, e.AnchorFailed):
            view.anchor_failures.append(seen)
            if view.signatures and view.signatures[-1].seq == entry.seq - 1:
                view.signatures.pop()  # its signature never came
        elif isinstance(record, e.LockOverridden):
            view.locks_overridden.append(moment)
        elif isinstance(record, e.InputFile):
            view.input_files.append(moment)
        elif isinstance(record, e.InputSkipped):
            view.skipped_input.append(moment)
        elif isinstance(record, e.Query):
            view.queries.append(moment)
        elif isinstance(record, e.StepStarted) and entry.step in view.targets:
            del view.targets[entry.step]  # a new attempt: its targets replace the last one's
        elif isinstance(record, e.TargetResult) and entry.step is not None:
            view.targets.setdefault(entry.step, []).append(record)
        elif isinstance(record, e.ApiIntent):
            if entry.seq not in refused:
                view.world.append(
                    Moment(seq=entry.seq, ts=entry.ts, step=entry.step, record=plain(record))
                )
            if step is not None:
                step.intents.append(plain(record))
                if entry.seq not in refused:
                    step.carried.sent.append(plain(record))
        elif isinstance(record, e.ApiCall) and step is not None:
            step.calls.append(plain(record))
        if step is not None:
            fold_step(step, entry, record, seen)
    unsigned = {
        r.record.unsigned_anchor for r in view.repairs if r.record.unsigned_anchor is not None
    }
    view.signatures = [s for s in view.signatures if s.seq not in unsigned]
    return view


def _refused(lines: list[e.Entry]) -> set[int]:
    """The lines of state-changing calls AWS refused (a 4xx answer): nothing was done. A call
    with a 2xx answer, a 5xx (it may have been carried out) or none journaled counts as sent."""
    intents: dict[tuple[int, int | None], int] = {}
    refused: set[int] = set()
    segment = 0  # call numbers restart in each process: pair intents and results within one
    for entry in lines:
        record = entry.data
        if isinstance(record, e.RunResumed):
            segment += 1
        elif isinstance(record, e.ApiIntent):
            intents[(segment, record.call)] = entry.seq
        elif (
            isinstance(record, e.ApiCall)
            and (segment, record.call) in intents
            and 400 <= (record.http_status or 0) < 500
        ):
            refused.add(intents[(segment, record.call)])
    return refused


def _custody(event: str, ts: str, record: e.Custody) -> Custody:
    return Custody(
        event=event,
        ts=ts,
        operator=record.operator,
        host=record.host,
        location=record.location,
        tool=record.tool,
    )


def _step(view: RunView, entry: e.Entry) -> StepView | None:
    if entry.step is None or isinstance(entry.data, (e.LockOverridden, e.Inject)):
        return None
    found = view.steps.get(entry.step)
    if found is None:
        found = view.steps[entry.step] = StepView(id=entry.step, name=entry.step, action="")
    return found

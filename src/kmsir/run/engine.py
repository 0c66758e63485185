"""Runs a validated playbook into an evidence bundle: starts or resumes the run, hands each
step to ``steps.StepRunner`` (preview, question, action, retries, ``on_error``), lets the
world react (a scenario's injects) and finishes the journal whatever happens.

The engine knows nothing of terminals or files: it asks through a ``Prompter``, writes through
the bundle writer from ``evidence`` and reports through a ``Reporter`` that ``cli`` draws.
"""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from kmsir.actions import Registry
from kmsir.actions.base import NullReporter, Reporter, RunInfo
from kmsir.aws import ClientFactory
from kmsir.errors import Aborted, EvidenceError, KmsirError, MissingAnswer, UsageError
from kmsir.evidence.anchoring import unsigned_anchor
from kmsir.evidence.bundle import JOURNAL, MANIFEST, Clock, read_journal, timestamp, utc_now
from kmsir.evidence.calls import Call
from kmsir.evidence.derived import settle_derived
from kmsir.evidence.entries import (
    Anchor,
    AnchorFailed,
    AnchorKey,
    ApiCall,
    ApiIntent,
    Inject,
    LockOverridden,
    OpenRisks,
    Repair,
    RunInterrupted,
    RunResumed,
)
from kmsir.evidence.journal import BundleWriter
from kmsir.evidence.leftovers import leftovers
from kmsir.evidence.locks import RunLocks
from kmsir.evidence.manifest import write_manifest
from kmsir.evidence.signatures import ANCHOR_FORMAT, anchor_digest
from kmsir.keypolicy import principal_arn
from kmsir.playbook.model import LoadedPlaybook, Step
from kmsir.prompts import Prompter
from kmsir.run import custody, fanout, loops, risks
from kmsir.run.resume import RunState
from kmsir.run.steps import RETRYABLE, Mode, RunOptions, Services, StepRecord, StepRunner
from kmsir.signer import KmsSigner

if TYPE_CHECKING:
    from kmsir.aws.targets import Fleet

__all__ = [
    "RETRYABLE",
    "AfterBoundary",
    "AfterStep",
    "BeforeStep",
    "EndAtBoundary",
    "Engine",
    "Mode",
    "RunOptions",
    "RunResult",
    "StepRecord",
]

#: Called with a step's id after it succeeded; returns what happened in the world because of it
#: (a sandbox scenario's injects), each a JSON-able record with a ``say`` line for the person.
AfterStep = Callable[[str], Sequence[Mapping[str, Any]]]
#: Called with the next step's id before its preview (``None``: after the last step), at each
#: step boundary: returns what happened in the world meanwhile (a scenario's timed injects, a
#: tabletop facilitator's), each a record as ``AfterStep``'s, or raises ``Aborted`` (the
#: facilitator ended the exercise).
BeforeStep = Callable[[str | None], Sequence[Mapping[str, Any]]]
#: Called once what a ``BeforeStep`` hook returned (or carried in ``EndAtBoundary``) is
#: journaled: a tabletop acknowledges the facilitator's commands then, never before (a crash
#: in between never leaves an acknowledged inject missing from the journal).
AfterBoundary = Callable[[], None]


class EndAtBoundary(Aborted):
    """Raised by a ``BeforeStep`` hook to end the run at a step boundary (a tabletop's
    facilitator ended the exercise); ``records``: what happened in the world just before,
    journaled first."""

    def __init__(self, message: str, records: Sequence[Mapping[str, Any]] = ()) -> None:
        super().__init__(message)
        self.records = list(records)


RunStatus = Literal["succeeded", "failed", "aborted", "interrupted"]


@dataclass
class RunResult:
    """What a run left behind."""

    bundle: Path
    status: RunStatus
    steps: list[StepRecord] = field(default_factory=list)
    error: str | None = None
    #: What the run left open (``run.risks``): the run "succeeded with open risks".
    open_risks: list[dict[str, Any]] = field(default_factory=list)


class Engine:
    """Runs playbooks against a client factory, asking a prompter, into evidence bundles."""

    def __init__(
        self,
        *,
        actions: Registry,
        clients: ClientFactory,
        prompter: Prompter,
        reporter: Reporter | None = None,
        clock: Clock = utc_now,
        sleep: Callable[[float], None] = time.sleep,
        after_step: AfterStep | None = None,
        before_step: BeforeStep | None = None,
        after_boundary: AfterBoundary | None = None,
        anchor: KmsSigner | None = None,
        on_bundle: Callable[[Path], None] | None = None,
        warn: Callable[[str], None] | None = None,
        fleet: Fleet | None = None,
    ) -> None:
        self.actions = actions
        #: The run's accounts and Regions (``--accounts``/``--org``, ``--regions``).
        self.fleet = fleet
        self.after_step = after_step
        self.before_step = before_step
        self.after_boundary = after_boundary
        #: Signs the journal's chain head after every step (``run --anchor-key``).
        self.anchor = anchor
        #: Told where the bundle is as soon as it exists (the CLI prints it).
        self.on_bundle = on_bundle or (lambda _: None)
        #: A line the person must see that is no step's outcome (a signature that failed).
        self.warn = warn or (lambda _: None)
        self.clients = clients
        self.prompter = prompter
        self.reporter = reporter or NullReporter()
        self.clock = clock
        self.sleep = sleep
        self._runner: StepRunner | None = None
        self._operator_arn: str | None = None

    # -- run ------------------------------------------------------------------------------

    def run(
        self, loaded: LoadedPlaybook, inputs: Mapping[str, Any], options: RunOptions
    ) -> RunResult:
        """Run every step in order; the bundle is left verifiable whatever happens."""
        playbook = loaded.playbook
        if options.start_at is not None and options.start_at not in {s.id for s in playbook.steps}:
            raise UsageError(
                f"--start-at: playbook '{playbook.id}' has no step '{options.start_at}'"
            )
        operator = self._operator()
        anchor_key = self.anchor.describe() if self.anchor is not None else None
        with self._locks(options) as locks:  # held until the run ends, however it ends
            locks.incident(options.incident_id)
            bundle = BundleWriter.create(
                options.evidence_dir,
                options.incident_id,
                playbook_raw=loaded.raw,
                clock=self.clock,
            )
            locks.describe(run_id=bundle.run_id, bundle=str(bundle.root))
            self.on_bundle(bundle.root)
            info = RunInfo(
                options.incident_id,
                bundle.run_id,
                options.mode,
                simulated=options.scenario is not None,
            )
            region = self.clients.resolved_region
            bundle.append(custody.run_started(loaded, inputs, options, info, operator, region))
            self._record_locks(bundle, locks)
            if anchor_key is not None:
                bundle.append(AnchorKey(**anchor_key))
            return self._drive(bundle, loaded, dict(inputs), {}, info, options, None, locks)

    def resume(self, loaded: LoadedPlaybook, state: RunState, options: RunOptions) -> RunResult:
        """Continue an interrupted or failed run in its own bundle, from its first unfinished
        step. A torn last journal line and files an interrupted write left are first recorded
        in a ``repair`` entry; nothing that already ran is run or asked again."""
        operator = self._operator()
        anchor_key = self.anchor.describe() if self.anchor is not None else None
        with self._locks(options) as locks:  # held until the run ends, however it ends
            locks.incident(options.incident_id)
            bundle, repaired = BundleWriter.reopen(state.root, clock=self.clock)
            run_id = state.meta.run_id or bundle.run_id
            locks.describe(run_id=run_id, bundle=str(bundle.root))
            self.on_bundle(bundle.root)
            previous = state.finished
            if previous is not None and not (state.root / MANIFEST).exists():
                write_manifest(state.root)  # the finished part stays anchored by its manifest
            settle_derived(state.root, state.view)  # derived files' temporaries
            # the torn line is no entry
            explained, _ = leftovers(state.root, state.view)
            if explained:
                repaired["leftovers"] = [vars(item) for item in explained]
            if unsigned_anchor(state.root, state.view):
                # the run died while KMS signed its last entry: no signature came
                repaired["unsigned_anchor"] = state.view.lines
            if repaired:
                bundle.append(Repair(**repaired))
            bundle.append(
                RunResumed(
                    **custody.custody(operator, options),
                    previous={
                        "status": previous.status if previous else "interrupted",
                        "entries": state.view.lines,
                        "head": state.view.head,
                    },
                    resume_at=next(
                        (
                            point
                            for s in loaded.playbook.steps
                            if (point := _resume_point(s, state)) is not None
                        ),
                        None,
                    ),
                    **dict(options.extra),
                )
            )
            self._record_locks(bundle, locks)
            if anchor_key is not None:
                bundle.append(AnchorKey(**anchor_key))
            info = RunInfo(
                options.incident_id,
                run_id,
                options.mode,
                simulated=options.scenario is not None,
            )
            return self._drive(
                bundle,
                loaded,
                dict(state.view.inputs),
                state.view.context_steps(),
                info,
                options,
                state,
                locks,
            )

    def _drive(
        self,
        bundle: BundleWriter,
        loaded: LoadedPlaybook,
        inputs: dict[str, Any],
        steps: dict[str, Any],
        info: RunInfo,
        options: RunOptions,
        state: RunState | None,
        locks: RunLocks,
    ) -> RunResult:
        services = Services(
            self.actions, self.clients, self.prompter, self.reporter, self.clock, self.sleep
        )
        services = replace(services, fleet=self.fleet)
        runner = StepRunner(
            services,
            bundle=bundle,
            info=info,
            options=options,
            playbook=loaded.playbook,
            locks=locks,
        )
        self._runner = runner
        self.clients.recorder = self._record_call
        self.clients.intent_recorder = self._record_intent
        self.clients.check_mode = options.mode == "check"
        result = RunResult(bundle.root, "succeeded")
        context: dict[str, Any] = {
            "inputs": inputs,
            "steps": steps,
            "incident": {"id": options.incident_id},
            "run": {
                "id": info.run_id,
                "mode": info.mode,
                "simulated": info.simulated,
                "operator": principal_arn(str(self._operator_arn or "")),
            },
        }
        started = options.start_at is None or state is not None

        def one(index: int, step: Step, looping: bool = False) -> bool:
            """Run (or account for) one step or loop iteration; True: the run stops."""
            prior = state.steps.get(step.id) if state is not None else None
            if prior is not None and prior.skip_pending:
                record = runner.skip(step, "skipped after failure (answered before)")
            elif prior is not None and prior.done(step.on_error):
                record = StepRecord(step.id, step.title, prior.status, prior.summary)
                result.steps.append(record)
                if record.status == "failed":
                    result.status, result.error = "failed", record.summary
                return False
            elif not started:
                record = runner.skip(step, "before --start-at")
            elif looping:
                return loop(index, step)
            else:
                self._before_step(bundle, step.id)  # the world moves on between steps
                record = runner.run(index, step, context, prior)
            return self._account(runner, result, bundle, info, step, record)

        def loop(index: int, step: Step) -> bool:
            try:
                once = step.when is not None and not loops.per_item(step)
                if once and not runner.when(step, context):  # before the list it guards
                    record = runner.skip(step, f"when: {step.when} is false")
                    return self._account(runner, result, bundle, info, step, record)
                found = loops.items(step, context)
            except KmsirError as exc:
                record = runner.fail(step, f"step '{step.id}' ({step.action}): {exc}")
                return self._account(runner, result, bundle, info, step, record)
            if not found:
                record = runner.skip(step, f"for_each: {step.for_each} gave no items")
                return self._account(runner, result, bundle, info, step, record)
            for number, item in enumerate(found, start=1):
                context["item"] = item
                try:
                    if one(index, loops.iteration(step, number, len(found), item)):
                        return True
                finally:
                    context.pop("item", None)
            ran = loops.outputs(step, len(found), context["steps"])
            if ran is not None:
                context["steps"][step.id] = ran
            return False

        try:
            for index, step in enumerate(loaded.playbook.steps, start=1):
                started = started or step.id == options.start_at
                if one(index, step, looping=step.for_each is not None):
                    break
            else:
                self._before_step(bundle, None)  # what came due while the last step ran
            result.open_risks = self._open_risks(bundle, loaded, runner)
        except (Aborted, MissingAnswer) as exc:
            result.status, result.error = "aborted", str(exc)
        except KeyboardInterrupt:
            # Ctrl-C may have landed inside append, after its line reached the disk: resync
            # so the last entry chains to it, and leave the run unfinished for resume.
            if bundle.resync():
                with contextlib.suppress(EvidenceError):
                    bundle.append(RunInterrupted(reason="interrupted (Ctrl-C)"))
            bundle.close()
            result.status = "interrupted"
            raise
        except BaseException as exc:
            # Anything else (a bug, the evidence disk failing, a bad answer): record why the
            # run stopped and leave a finished, verifiable bundle, then let the CLI report it.
            with contextlib.suppress(Exception):
                bundle.finish("failed", f"{type(exc).__name__}: {exc}"[:2000])
            bundle.close()  # a full disk may have failed the finish: let the journal go
            raise
        finally:
            self._runner = None
            self.clients.recorder = None
            self.clients.intent_recorder = None
        bundle.finish(result.status, result.error, seal=lambda: self._anchor(bundle, info))
        return result

    def _account(
        self,
        runner: StepRunner,
        result: RunResult,
        bundle: BundleWriter,
        info: RunInfo,
        step: Step,
        record: StepRecord,
    ) -> bool:
        """Show and anchor a step's outcome, let the world react; True: the run stops."""
        result.steps.append(record)
        self.reporter.step(record.step_id, record.title, record.status, record.summary)
        if record.status in ("succeeded", "already"):
            self._after_step(bundle, step.id)  # the world reacts to what was done
        self._anchor(bundle, info)
        if record.status == "failed":
            result.status = "failed"
            result.error = record.summary
            return step.on_error != "continue"
        return False

    def _open_risks(
        self, bundle: BundleWriter, loaded: LoadedPlaybook, runner: StepRunner
    ) -> list[dict[str, Any]]:
        """Read every key the run touched again and journal what it leaves open."""
        runner.current_step = None  # the re-read's calls belong to no step
        view = read_journal(bundle.root / JOURNAL).view()
        outputs = {step_id: s.outputs for step_id, s in view.steps.items()}
        keys = fanout.reread(self.clients, self.fleet, risks.keys_touched(view), outputs)
        phases = {s.id: s.phase for s in loaded.playbook.steps}
        for step_id in view.steps:  # a for_each step's iterations are in its phase
            looped = loops.looped_step(step_id)
            if looped in phases:
                phases[step_id] = phases[looped]
        actions = self.actions

        def mutating(name: str) -> bool:
            return name in actions and actions[name].mutating

        found = risks.assess(view, keys, phases, mutating)
        bundle.append(OpenRisks(keys=[k.record() for k in keys], risks=found))
        return found

    # -- locks and the anchor -----------------------------------------------------------------

    def _locks(self, options: RunOptions) -> RunLocks:
        return RunLocks(
            options.evidence_dir,
            {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "since": timestamp(self.clock()),
                "incident": options.incident_id,
            },
            world=options.world,
            force=options.force,
        )

    @staticmethod
    def _record_locks(bundle: BundleWriter, locks: RunLocks) -> None:
        """Journal the locks of other runs that ``--force`` went past."""
        for overridden in locks.overridden:
            bundle.append(LockOverridden(**overridden))

    def _anchor(self, bundle: BundleWriter, info: RunInfo) -> None:
        """Sign the journal's chain head (``--anchor-key``): an ``anchor`` entry, which KMS
        signs, its signature kept in ``anchor.json``. A failed signature is journaled and
        shown, and the run goes on: the last good one still proves the journal up to it."""
        if self.anchor is None:
            return
        key = self.anchor.describe()
        entry = bundle.append(Anchor(key_arn=key["key_arn"]))
        digest = anchor_digest(info.run_id, entry.seq, entry.hash)
        try:
            signature = self.anchor.sign(digest)
            bundle.write_anchor(
                {
                    "format": ANCHOR_FORMAT,
                    "run_id": info.run_id,
                    "seq": entry.seq,
                    "head": entry.hash,
                    "key_arn": key["key_arn"],
                    "algorithm": key["algorithm"],
                    "sha256": digest,
                    "signature": base64.b64encode(signature).decode(),
                }
            )
        except KmsirError as exc:
            bundle.append(AnchorFailed(error=str(exc)[:500]))
            self.warn(f"kmsir: warning: the journal was not signed after entry {entry.seq}: {exc}")
        except BaseException:
            # Ctrl-C while KMS signs: say the signature never came, before anything else is
            # journaled (the entry would otherwise stand for a signature anchor.json lacks)
            with contextlib.suppress(EvidenceError):
                bundle.append(AnchorFailed(error="interrupted before it was signed"))
            raise

    def _after_step(self, bundle: BundleWriter, step_id: str) -> None:
        """What the world did after this step (a scenario's injects): journaled, then shown."""
        if self.after_step is None:
            return
        for record in self.after_step(step_id):
            bundle.append(Inject(record=dict(record)), step=step_id)
            self.reporter.notice(str(record.get("say") or f"inject after step {step_id}"))

    def _before_step(self, bundle: BundleWriter, step_id: str | None) -> None:
        """What the world did before this step (timed or facilitator's injects): journaled,
        then shown, then ``after_boundary`` told; ``Aborted`` from the hook stops the run
        (``EndAtBoundary`` after journaling what it carries)."""
        if self.before_step is None:
            return
        try:
            records = self.before_step(step_id)
        except EndAtBoundary as exc:
            self._journal_injects(bundle, exc.records)
            if self.after_boundary is not None:
                self.after_boundary()
            raise
        self._journal_injects(bundle, records)
        if self.after_boundary is not None:
            self.after_boundary()

    def _journal_injects(self, bundle: BundleWriter, records: Sequence[Mapping[str, Any]]) -> None:
        for record in records:
            bundle.append(Inject(record=dict(record)))
            self.reporter.notice(str(record.get("say") or "the scenario's world reacted"))

    # -- journal helpers ------------------------------------------------------------------

    def _journal(self, record: ApiCall | ApiIntent) -> None:
        """An entry for the step running now (API calls are made during steps)."""
        runner = self._runner
        if runner is not None:
            runner.bundle.append(record, step=runner.current_step)

    def _record_call(self, call: Call) -> None:
        self._journal(ApiCall(**msgspec.structs.asdict(call)))

    def _record_intent(self, call: Call) -> None:
        """A state-changing call about to be sent: journaled first, so a crash before its
        result is journaled still shows it may have reached AWS."""
        self._journal(ApiIntent(**msgspec.structs.asdict(call)))

    def _operator(self) -> dict[str, Any]:
        found = custody.operator(self.clients)
        self._operator_arn = found.get("arn")
        return found


def _resume_point(step: Step, state: RunState) -> str | None:
    """Where a resumed run goes on in ``step`` (``None``: the step is done)."""
    prior = state.steps.get(step.id)
    if prior is not None and prior.done(step.on_error):
        return None
    if step.for_each is not None and prior is None:
        return loops.resume_point(step, state.steps)
    return step.id

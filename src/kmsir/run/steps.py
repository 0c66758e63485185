"""Runs one step of a playbook into its bundle: ``when``, the preview and the question before
it, the action with its retries, the outcome in the journal, and what to do after a failure.

The engine drives a run and hands each step to a ``StepRunner``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from kmsir.actions import Registry
from kmsir.actions.base import (
    Action,
    ActionContext,
    EarlierAttempt,
    Outcome,
    Reporter,
    RunInfo,
)
from kmsir.aws import ClientFactory
from kmsir.errors import (
    Aborted,
    ActionError,
    AwsError,
    EvidenceError,
    KmsirError,
    MissingAnswer,
)
from kmsir.evidence.bundle import JOURNAL, Clock, read_journal, read_outside, timestamp
from kmsir.evidence.calls import Call
from kmsir.evidence.entries import (
    Decision,
    InputFile,
    Record,
    StepFailed,
    StepRetry,
    StepSkipped,
    StepStarted,
    StepSucceeded,
)
from kmsir.evidence.journal import BundleWriter
from kmsir.evidence.locks import RunLocks
from kmsir.evidence.stepview import StepView
from kmsir.playbook import templating
from kmsir.playbook.model import Playbook, Step, referenced_steps
from kmsir.prompts import Prompter
from kmsir.run import fanout
from kmsir.run.approval import Approval
from kmsir.run.failure import FailurePolicy
from kmsir.run.second_person import SecondPerson

if TYPE_CHECKING:
    from kmsir.aws.targets import Fleet

Mode = Literal["live", "check", "sandbox"]
#: AWS error codes a step's ``retries:`` re-runs its action for: transient service failures
#: that outlasted botocore's own retries of the one call. Re-running the action re-reads the
#: state first, which retrying the call cannot. Throttling is not here: botocore's retries and
#: the pacer in ``aws`` own it (a second layer would multiply the requests a quota refuses).
RETRYABLE = frozenset(
    {
        "KMSInternalException",
        "DependencyTimeoutException",
        "ServiceUnavailable",
        "ServiceFailure",  # IAM
        "InternalFailure",
        # a bare HTTP error with no AWS error code (a load balancer's page)
        "500",
        "502",
        "503",
        "504",
    }
)


@dataclass(frozen=True)
class RunOptions:
    """How to run: where the evidence goes, the mode, and whether to ask before changes."""

    incident_id: str
    evidence_dir: Path
    mode: Mode
    yes: bool = False
    start_at: str | None = None
    scenario: str | None = None
    #: More run metadata for the run-started entry (the sandbox's clock, recorded answers).
    extra: Mapping[str, Any] = field(default_factory=dict)
    #: Run although another run holds the incident's (or a key's) lock; journaled.
    force: bool = False
    #: Where the keys live, for key locks: "aws", or a sandbox server's endpoint; None: an
    #: in-process sandbox, a world of its own (no key locks).
    world: str | None = None
    #: Two-person rule (``second_person.needed``): ``--require-approval`` (journaled, kept by
    #: resume); a sandbox scenario's ``approvals: required``; the environment shown before
    #: the approver's command (a sandbox's second identity's dummy credentials).
    require_approval: bool = False
    scenario_approvals: bool = False
    approver_env: Mapping[str, str] = field(default_factory=dict)
    #: A replay (``tabletop.replay``): per step, the recorded outcome of each second-person
    #: request in order (``None``: approved; else the step's failure), reproduced unasked.
    replayed_approvals: Mapping[str, Sequence[str | None]] | None = None


@dataclass(frozen=True)
class StepRecord:
    """One step's outcome, for the summary the CLI prints."""

    step_id: str
    title: str
    status: str
    summary: str


class _StepSink:
    """The bundle, as one step's actions see it; each attempt gets its own artifact folder."""

    def __init__(self, bundle: BundleWriter, index: int, step_id: str) -> None:
        self.bundle, self.index, self.step_id = bundle, index, step_id
        self.attempt = 0

    def write(self, name: str, data: bytes) -> str:
        artifact = self.bundle.write_artifact(
            self.index, self.step_id, name, data, attempt=max(self.attempt, 1)
        )
        return artifact.path

    def journal(self, record: Record) -> None:
        self.bundle.append(record, step=self.step_id)

    def earlier(self, step_id: str, name: str) -> bytes | None:
        return self.bundle.read_step_artifact(step_id, name)

    def outside(self, path: str) -> bytes:
        data, provenance = read_outside(Path(path))
        self.bundle.append(InputFile(**provenance), step=self.step_id)
        return data


@dataclass(frozen=True)
class Services:
    """What every step of a run may use: the actions, AWS, the person, the clock."""

    actions: Registry
    clients: ClientFactory
    prompter: Prompter
    reporter: Reporter
    clock: Clock
    sleep: Callable[[float], None] = time.sleep
    #: The run's accounts and Regions and a client factory per account (``--accounts``,
    #: ``--org``, ``--regions``); ``None``: the run's own account and Region only.
    fleet: Fleet | None = None


class StepRunner:
    """Runs the steps of one run into its bundle: ``when`` and the parameters, the approval
    before (``approval.Approval``), the attempts with the step's ``retries:``, the outcome,
    and after a failure what its ``on_error`` says (``failure.FailurePolicy``)."""

    def __init__(
        self,
        services: Services,
        *,
        bundle: BundleWriter,
        info: RunInfo,
        options: RunOptions,
        playbook: Playbook,
        locks: RunLocks | None = None,
    ) -> None:
        self.services, self.bundle, self.info = services, bundle, info
        self.approval = Approval(
            prompter=services.prompter,
            bundle=bundle,
            check_mode=options.mode == "check",
            yes=options.yes,
            total=len(playbook.steps),
            locks=locks,
        )
        self.second = SecondPerson(services, bundle=bundle, options=options, playbook=playbook)
        self.failures = FailurePolicy(
            prompter=services.prompter, bundle=bundle, inputs=playbook.inputs
        )
        self.playbook = playbook
        #: The step running now: API calls are journaled under it.
        self.current_step: str | None = None

    def run(
        self,
        index: int,
        step: Step,
        context: dict[str, Any],
        prior: StepView | None = None,
    ) -> StepRecord:
        """Run one step: ``when``, the preview and question, the action with its retries,
        the outcome in the journal; after a failure, what the person chose."""
        self.current_step = step.id
        rechecked = prior is not None and prior.in_flight
        services = self.services
        action = services.actions[step.action]
        context["now"] = timestamp(services.clock())
        sink = _StepSink(self.bundle, index, step.id)
        if prior is not None:  # a resumed step writes to a fresh attempt folder
            sink.attempt = prior.attempts
        ctx = ActionContext(
            step_id=step.id,
            clients=services.clients,
            prompter=services.prompter,
            artifacts=sink,
            run=self.info,
            now=services.clock,
            reporter=services.reporter,
            sleep=services.sleep,
            earlier_attempt=_earlier_attempt(prior),
            approved_before=_approved_before(prior),
            scope=fanout.labels(services.fleet),
            steps=context["steps"],
        )
        while True:
            try:
                # a when: or with: that cannot be rendered (it reads a step that was skipped)
                # is a failure like any other: the person may skip it, retry, or fix an input
                if step.when is not None and not self.when(step, context):
                    return self.skip(step, f"when: {step.when} is false")
                params = self._params(action, step, context)
                fanout.place(
                    ctx,
                    services.clients,
                    services.fleet,
                    params,
                    context.get("steps"),
                    action=step.action,
                )
                # a step over every account and Region of the scope (``fanout.run_fanned``)
                fleet = services.fleet if fanout.fans_out(action, params, context) else None
                impact = self._impact(action, params, context)
                skipped = self.approval.ask(index, step, action, ctx, params, prior, impact)
                prior = None  # after a failure, a retry is confirmed afresh
                if skipped is not None:
                    return self.skip(step, skipped.reason, status=skipped.status)
                self.second.wait(step, action, ctx, params, impact, sink.write)  # two-person rule
                self.bundle.append(
                    StepStarted(
                        action=step.action,
                        name=step.title,
                        phase=step.phase,
                        params=params.model_dump(mode="json"),
                        mutating=action.mutating,
                        inverse=action.inverse,
                    ),
                    step=step.id,
                )
                outcome = self._with_retries(step, action, ctx, sink, params, fleet)
            except (Aborted, MissingAnswer) as exc:
                self.fail(step, f"step '{step.id}' ({step.action}): {exc}")
                raise
            except EvidenceError as exc:
                # the evidence cannot be kept (a full or read-only disk): whatever on_error
                # says, nothing more may run without it; resume runs this step again
                message = f"step '{step.id}' ({step.action}): {exc}"
                self.fail(step, message, stopped_run=True)
                raise EvidenceError(message) from None
            except KmsirError as exc:
                message = f"step '{step.id}' ({step.action}): {exc}"
                record = self.fail(step, message)
                choice = self.failures.after(step, message, context)
                if choice == "stop":
                    return record
                if choice == "skip":
                    return self.skip(step, "skipped after failure")
                # what the failed attempt changed or was told carries over to the retry
                ctx.earlier_attempt = self._earlier(step)
                continue
            break
        context["steps"][step.id] = {**outcome.outputs, "status": outcome.status}
        self.bundle.append(
            StepSucceeded(
                action=step.action,
                status=outcome.status,
                summary=outcome.summary,
                outputs=outcome.outputs,
                before=outcome.before,
                after=outcome.after,
                # nothing was changed, so there is nothing to undo
                inverse=action.inverse if action.mutating and outcome.status != "already" else None,
                inverse_until=outcome.inverse_until,
                rechecked=rechecked,
            ),
            step=step.id,
        )
        return StepRecord(step.id, step.title, outcome.status, outcome.summary)

    def _earlier(self, step: Step) -> EarlierAttempt | None:
        """What this step's attempts so far did, read back from the journal."""
        view = read_journal(self.bundle.root / JOURNAL).view()
        return _earlier_attempt(view.steps.get(step.id))

    def when(self, step: Step, context: dict[str, Any]) -> bool:
        """Whether the step's ``when:`` holds; ``ActionError`` when it cannot be evaluated."""
        assert step.when is not None
        try:
            return bool(templating.evaluate(step.when, context))
        except KmsirError as exc:
            raise ActionError(f"when: {exc}{_missing_steps(step.when, context)}") from None

    def _impact(self, action: Action[Any], params: Any, context: dict[str, Any]) -> str | None:
        """What a containment step breaks, from the run's last blast radius of its key."""
        if not action.mutating:
            return None
        from kmsir.actions.kms_blast import containment_verdict

        done = context.get("steps") or {}
        for earlier in reversed(self.playbook.steps):
            outputs = done.get(earlier.id)
            if earlier.action == "kms.blast-radius" and isinstance(outputs, dict):
                rendered = params.model_dump(mode="json")
                names = {outputs.get("key_id"), outputs.get("arn"), *(outputs.get("aliases") or [])}
                if rendered.get("key") not in names:
                    continue  # the blast radius of another key
                verdict = containment_verdict(outputs, action.name, rendered)
                return str(verdict) if verdict else None
        return None

    def _params(self, action: Action[Any], step: Step, context: dict[str, Any]) -> Any:
        try:
            rendered = templating.render_value(step.with_, context)
        except KmsirError as exc:
            sources = json.dumps(step.with_, default=str)
            raise ActionError(f"with: {exc}{_missing_steps(sources, context)}") from None
        try:
            return action.params.model_validate(rendered)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "with"
            raise ActionError(f"parameter {where}: {first['msg']}") from None

    def _with_retries(
        self,
        step: Step,
        action: Action[Any],
        ctx: ActionContext,
        sink: _StepSink,
        params: Any,
        fleet: Fleet | None = None,
    ) -> Outcome:
        attempt = 0
        while True:
            sink.attempt += 1
            try:
                if fleet is not None:
                    return fanout.run_fanned(action, ctx, params, fleet)
                return action.run(ctx, params)
            except AwsError as exc:
                if attempt >= step.retries or exc.code not in RETRYABLE:
                    raise
                attempt += 1
                self.bundle.append(StepRetry(attempt=attempt, error=str(exc)), step=step.id)
                # what the failed attempt changed carries over: a retry must not take a change
                # it made itself for "already so"
                ctx.earlier_attempt = self._earlier(step)
                self.services.sleep(min(2.0**attempt, 30.0))

    def skip(self, step: Step, reason: str, *, status: str = "skipped") -> StepRecord:
        """Journal that ``step`` was skipped, and why."""
        self.bundle.append(
            StepSkipped(
                reason=reason, status=status, action=step.action, name=step.title, phase=step.phase
            ),
            step=step.id,
        )
        return StepRecord(step.id, step.title, status, reason)

    def fail(self, step: Step, message: str, *, stopped_run: bool = False) -> StepRecord:
        """Journal that ``step`` failed (``stopped_run``: and stopped the run, whatever its
        ``on_error``; resume runs it again)."""
        self.bundle.append(
            StepFailed(
                error=message,
                action=step.action,
                name=step.title,
                phase=step.phase,
                stopped_run=stopped_run,
            ),
            step=step.id,
        )
        return StepRecord(step.id, step.title, "failed", message)


def _missing_steps(source: str, context: dict[str, Any]) -> str:
    """Why a template that reads other steps' outputs could not be rendered: the steps it
    reads that did not succeed (skipped, failed or not run), so have no outputs."""
    missing = [ref for ref in referenced_steps(source) if ref not in context["steps"]]
    if not missing:
        return ""
    named = ", ".join(f"'{ref}'" for ref in missing)
    return f" (step {named} did not succeed: skipped, failed or not run, so no outputs)"


def _approved_before(prior: StepView | None) -> tuple[Call, ...]:
    """The calls of the approval this step was given before the run stopped, if any."""
    seen = prior.carried.approval if prior is not None else None
    decided = seen.record if seen is not None else None
    if not isinstance(decided, Decision) or decided.answer != "approved":
        return ()
    return tuple(c for c in decided.calls or [] if isinstance(c, Call))


def _earlier_attempt(prior: StepView | None) -> EarlierAttempt | None:
    if prior is None or not prior.unfinished_work:
        return None
    carried = prior.carried
    return EarlierAttempt(carried.before, tuple(carried.sent), tuple(carried.recorded))

"""Runs one step of a playbook into its bundle: ``when``, the preview and the question before
it, the action with its retries, the outcome in the journal, and what to do after a failure.

The engine drives a run and hands each step to a ``StepRunner``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from kmsir.actions import Registry
from kmsir.actions.base import (
    IRREVERSIBLE,
    Action,
    ActionContext,
    EarlierAttempt,
    Outcome,
    Preview,
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
from kmsir.evidence.journal import BundleWriter
from kmsir.evidence.locks import RunLocks
from kmsir.playbook import templating
from kmsir.playbook.model import InputSpec, Step, ask_input, coerce_input, referenced_steps
from kmsir.prompts import Answer, Prompter, StepPreview
from kmsir.run.resume import StepState, step_states

Mode = Literal["live", "check", "sandbox"]
#: A KMS key ARN, as a changing step's preview names its target.
_KEY_ARN = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+")
#: How often an answers file's "retry" (or "edit-input") is followed for one step.
SCRIPTED_RETRIES = 3
#: AWS error codes worth retrying (``retries:``) after botocore's own retries gave up.
RETRYABLE = frozenset(
    {
        "ThrottlingException",
        "Throttling",  # IAM and STS
        "KMSInternalException",
        "DependencyTimeoutException",
        "ServiceUnavailable",
        "ServiceFailure",  # IAM
        "InternalFailure",
        "RequestLimitExceeded",
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

    def journal(self, type_: str, data: dict[str, Any]) -> None:
        self.bundle.append(type_, data, step=self.step_id)

    def earlier(self, step_id: str, name: str) -> bytes | None:
        return self.bundle.read_step_artifact(step_id, name)

    def outside(self, path: str) -> bytes:
        data, provenance = read_outside(Path(path))
        self.bundle.append("input-file", provenance, step=self.step_id)
        return data


class StepRunner:
    """Runs the steps of one run into its bundle, asking the prompter before each."""

    def __init__(
        self,
        *,
        actions: Registry,
        clients: ClientFactory,
        prompter: Prompter,
        reporter: Reporter,
        clock: Clock,
        sleep: Callable[[float], None] = time.sleep,
        bundle: BundleWriter,
        info: RunInfo,
        options: RunOptions,
        total: int,
        inputs: Mapping[str, InputSpec],
        locks: RunLocks | None = None,
    ) -> None:
        self.actions, self.clients, self.prompter = actions, clients, prompter
        self.reporter, self.clock, self.sleep = reporter, clock, sleep
        self.bundle, self.info, self.options = bundle, info, options
        self._total, self._inputs = total, inputs
        self._locks = locks
        #: The step running now: API calls are journaled under it.
        self.current_step: str | None = None
        self._scripted_retries: dict[str, int] = {}

    def run(
        self,
        index: int,
        step: Step,
        context: dict[str, Any],
        prior: StepState | None = None,
    ) -> StepRecord:
        """Run one step: ``when``, the preview and question, the action with its retries,
        the outcome in the journal; after a failure, what the person chose."""
        self.current_step = step.id
        rechecked = prior is not None and prior.in_flight
        action = self.actions[step.action]
        context["now"] = timestamp(self.clock())
        sink = _StepSink(self.bundle, index, step.id)
        if prior is not None:  # a resumed step writes to a fresh attempt folder
            sink.attempt = prior.attempts
        ctx = ActionContext(
            step_id=step.id,
            clients=self.clients,
            prompter=self.prompter,
            artifacts=sink,
            run=self.info,
            now=self.clock,
            reporter=self.reporter,
            earlier_attempt=_earlier_attempt(prior),
        )
        while True:
            try:
                # a when: or with: that cannot be rendered (it reads a step that was skipped)
                # is a failure like any other: the person may skip it, retry, or fix an input
                if step.when is not None and not self._when(step, context):
                    return self.skip(step, f"when: {step.when} is false")
                params = self._params(action, step, context)
                skipped = self._before(index, step, action, ctx, params, prior)
                prior = None  # after a failure, a retry is confirmed afresh
                if skipped is not None:
                    return skipped
                if ctx.approved is not None:
                    self._lock_keys(step, ctx.approved)
                self.bundle.append(
                    "step-started",
                    {
                        "action": step.action,
                        "name": step.title,
                        "phase": step.phase,
                        "params": params.model_dump(mode="json"),
                        "mutating": action.mutating,
                        "inverse": action.inverse,
                    },
                    step=step.id,
                )
                outcome = self._with_retries(step, action, ctx, sink, params)
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
                if step.on_error == "continue" or (
                    step.on_error == "stop"
                    and not self.prompter.interactive
                    and not self.prompter.has_answer(f"{step.id}.on-error")
                ):
                    return record
                choice = self._after_failure(step, message, context)
                if choice == "retry":
                    # what the failed attempt changed or was told carries over to the retry
                    ctx.earlier_attempt = self._earlier(step)
                    continue
                if choice == "skip":
                    return self.skip(step, "skipped after failure")
                raise Aborted(f"aborted after step '{step.id}' failed") from None
            break
        context["steps"][step.id] = {**outcome.outputs, "status": outcome.status}
        self.bundle.append(
            "step-succeeded",
            {
                "action": step.action,
                "status": outcome.status,
                "summary": outcome.summary,
                "outputs": outcome.outputs,
                "before": outcome.before,
                "after": outcome.after,
                # nothing was changed, so there is nothing to undo
                "inverse": action.inverse
                if action.mutating and outcome.status != "already"
                else None,
                "inverse_until": outcome.inverse_until,
                **({"rechecked": True} if rechecked else {}),
            },
            step=step.id,
        )
        return StepRecord(step.id, step.title, outcome.status, outcome.summary)

    def _earlier(self, step: Step) -> EarlierAttempt | None:
        """What this step's attempts so far did, read back from the journal."""
        entries = read_journal(self.bundle.root / JOURNAL).entries
        return _earlier_attempt(step_states(entries).get(step.id))

    def _lock_keys(self, step: Step, preview: Preview) -> None:
        """Hold the lock of each key the step is about to change (the key ARNs its preview
        names), so that no other run changes it meanwhile; ``LockedError`` (a failure the
        person may retry) while another run holds one, unless forced (then journaled)."""
        if self._locks is None:
            return
        for arn in dict.fromkeys(_KEY_ARN.findall(preview.target)):
            overridden = self._locks.key(arn)
            if overridden is not None:
                self.bundle.append("lock-overridden", overridden, step=step.id)

    def _when(self, step: Step, context: dict[str, Any]) -> bool:
        """Whether the step's ``when:`` holds; ``ActionError`` when it cannot be evaluated."""
        assert step.when is not None
        try:
            return bool(templating.evaluate(step.when, context))
        except KmsirError as exc:
            raise ActionError(f"when: {exc}{_missing_steps(step.when, context)}") from None

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

    def _before(
        self,
        index: int,
        step: Step,
        action: Action[Any],
        ctx: ActionContext,
        params: Any,
        prior: StepState | None,
    ) -> StepRecord | None:
        """Show what the step will do (for a change: the exact calls, the live state, the
        undo) and ask whether to run it; ``None`` means go ahead."""
        if action.asks:
            return None  # the step is itself a question to the person
        preview: Preview | None = None
        if action.mutating:
            preview = action.preview(ctx, params)
            if prior is not None and prior.in_flight:
                # The run stopped inside this step: the preview above re-read the live state,
                # which the action also does before sending anything again.
                self.bundle.append(
                    "recheck",
                    {
                        "reason": "the step was in flight when the run stopped",
                        "sent_before": [f"{c['service']}:{c['operation']}" for c in prior.sent],
                        "state": preview.state,
                        "would_call": list(preview.calls),
                    },
                    step=step.id,
                )
            if self.options.mode == "check":
                self.bundle.append(
                    "check-mode",
                    {
                        "would_call": list(preview.calls),
                        "target": preview.target,
                        "state": preview.state,
                    },
                    step=step.id,
                )
                return self.skip(
                    step,
                    "check mode: would call " + "; ".join(preview.calls),
                    status="would-run",
                )
            ctx.approved = preview
            if not preview.calls:
                return None  # nothing would be sent; run() records "already in desired state"
        earlier = prior.decision if prior is not None else None
        if earlier is not None:
            data = earlier["data"]
            if data.get("answer") != "approved":
                return self.skip(step, f"not approved (decision at journal line {earlier['seq']})")
            if preview is None or set(preview.calls) <= set(data.get("calls") or []):
                return None  # approved before the interruption: not asked again
        shown = _step_preview(step, action, params, preview, f"{index}/{self._total}")
        answer: Answer | None
        if self.options.yes:
            answer = Answer("run", "auto-approved") if action.mutating else None
        else:

            def note(text: str, by: str) -> None:
                self.bundle.append("note", {"text": text, "by": by}, step=step.id)

            answer = self.prompter.before_step(shown, note)
        if answer is None:
            return None  # nobody to ask, and the step changes nothing
        verdict = {"run": "approved", "skip": "skipped"}.get(str(answer.value), "aborted")
        self.bundle.append(
            "decision",
            {
                "question": f"run {step.action}",
                "answer": verdict,
                "by": answer.source,
                "reason": answer.reason,
                "calls": list(shown.calls),
                "state": shown.state,
                "inverse": action.inverse,
            },
            step=step.id,
        )
        if verdict == "aborted":
            raise Aborted(f"aborted before step '{step.id}' ({answer.source})")
        if verdict == "skipped":
            reason = f": {answer.reason}" if answer.reason else ""
            return self.skip(step, f"not approved ({answer.source}){reason}")
        return None

    def _after_failure(self, step: Step, message: str, context: dict[str, Any]) -> str:
        """Ask what to do about a failed step: retry, skip, abort, or edit an input and retry."""
        choices = ["retry", "skip", "abort"] + (["edit-input"] if self._inputs else [])
        choice = self.prompter.ask(f"{step.id}.on-error", f"{message}\nWhat now?", choices)
        self.bundle.append(
            "decision",
            {
                "question": "on error",
                "answer": choice.value,
                "by": choice.source,
                "reason": choice.reason,
            },
            step=step.id,
        )
        if choice.value in ("retry", "edit-input") and choice.source != "interactive":
            # a scripted answer is the same every time: it must not retry for ever
            self._scripted_retries[step.id] = tries = self._scripted_retries.get(step.id, 0) + 1
            if tries > SCRIPTED_RETRIES:
                raise Aborted(
                    f"step '{step.id}' still fails after {SCRIPTED_RETRIES} retries answered "
                    f"by the {choice.source}"
                )
        if choice.value != "edit-input":
            return str(choice.value)
        names = list(self._inputs)
        name = (
            names[0]
            if len(names) == 1
            else str(self.prompter.ask(f"{step.id}.input", "Which input?", names).value)
        )
        spec = self._inputs[name]
        current = context["inputs"].get(name)

        question = f"New value for {name} ({spec.type}; now {current!r}):"
        given = ask_input(self.prompter, f"{step.id}.{name}", name, spec, question)
        value = coerce_input(name, spec, given.value)
        context["inputs"][name] = value
        self.bundle.append(
            "input-changed",
            {"name": name, "from": current, "to": value, "by": given.source},
            step=step.id,
        )
        return "retry"

    def _with_retries(
        self, step: Step, action: Action[Any], ctx: ActionContext, sink: _StepSink, params: Any
    ) -> Outcome:
        attempt = 0
        while True:
            sink.attempt += 1
            try:
                return action.run(ctx, params)
            except AwsError as exc:
                if attempt >= step.retries or exc.code not in RETRYABLE:
                    raise
                attempt += 1
                self.bundle.append(
                    "step-retry", {"attempt": attempt, "error": str(exc)}, step=step.id
                )
                # what the failed attempt changed carries over: a retry must not take a change
                # it made itself for "already so"
                ctx.earlier_attempt = self._earlier(step)
                self.sleep(min(2.0**attempt, 30.0))

    def skip(self, step: Step, reason: str, *, status: str = "skipped") -> StepRecord:
        """Journal that ``step`` was skipped, and why."""
        self.bundle.append(
            "step-skipped",
            {
                "reason": reason,
                "status": status,
                "action": step.action,
                "name": step.title,
                "phase": step.phase,
            },
            step=step.id,
        )
        return StepRecord(step.id, step.title, status, reason)

    def fail(self, step: Step, message: str, *, stopped_run: bool = False) -> StepRecord:
        """Journal that ``step`` failed (``stopped_run``: and stopped the run, whatever its
        ``on_error``; resume runs it again)."""
        data = {"error": message, "action": step.action, "name": step.title, "phase": step.phase}
        self.bundle.append(
            "step-failed", {**data, **({"stopped_run": True} if stopped_run else {})}, step=step.id
        )
        return StepRecord(step.id, step.title, "failed", message)

    # -- metadata -------------------------------------------------------------------------


def _step_preview(
    step: Step, action: Action[Any], params: Any, preview: Preview | None, position: str
) -> StepPreview:
    """What the person sees before ``step`` runs."""
    inverse = action.inverse or "none needed"
    rendered = params.model_dump(mode="json", exclude_defaults=True)
    details = [
        "  parameters (rendered):",
        *[f"    {name}: {json.dumps(value)[:300]}" for name, value in rendered.items()],
        f"  IAM permissions: {', '.join(action.permissions) or 'none'}",
        f"  on error: {step.on_error}" + (f", {step.retries} retries" if step.retries else ""),
    ]
    if step.when:
        details.append(f"  when: {step.when}")
    return StepPreview(
        step_id=step.id,
        title=step.title,
        action=step.action,
        phase=step.phase,
        position=position,
        does=((action.__doc__ or "").strip().splitlines() or [step.action])[0],
        mutating=action.mutating,
        calls=preview.calls if preview is not None else tuple(action.api_calls(params)),
        target=preview.target if preview is not None else None,
        state=preview.state if preview is not None else None,
        inverse="IRREVERSIBLE" if inverse == IRREVERSIBLE else inverse,
        notes=preview.notes if preview is not None else (),
        typed=preview.typed if preview is not None else (),
        details=tuple(details),
    )


def _missing_steps(source: str, context: dict[str, Any]) -> str:
    """Why a template that reads other steps' outputs could not be rendered: the steps it
    reads that did not succeed (skipped, failed or not run), so have no outputs."""
    missing = [ref for ref in referenced_steps(source) if ref not in context["steps"]]
    if not missing:
        return ""
    named = ", ".join(f"'{ref}'" for ref in missing)
    return f" (step {named} did not succeed: skipped, failed or not run, so no outputs)"


def _earlier_attempt(prior: StepState | None) -> EarlierAttempt | None:
    if prior is None or not prior.unfinished_work:
        return None
    return EarlierAttempt(prior.before, tuple(prior.sent), tuple(prior.recorded))

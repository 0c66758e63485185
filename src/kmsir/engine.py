"""Runs a validated playbook: templating, ``when``, confirmation, retries, ``on_error``, journal.

The engine knows nothing of terminals or files: it asks through a ``Prompter``, writes through
the bundle writer from ``evidence`` and reports through a ``Reporter`` that ``cli`` draws.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import platform
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from kmsir import __version__, integrity, templating
from kmsir.actions import Registry
from kmsir.actions.aws import ApiCall, ClientFactory, aws_errors
from kmsir.actions.base import (
    IRREVERSIBLE,
    Action,
    ActionContext,
    EarlierAttempt,
    NullReporter,
    Outcome,
    Preview,
    Reporter,
    RunInfo,
)
from kmsir.errors import (
    Aborted,
    ActionError,
    AwsError,
    EvidenceError,
    KmsirError,
    MissingAnswer,
    UsageError,
)
from kmsir.evidence import JOURNAL, MANIFEST, Clock, read_journal, read_outside, timestamp, utc_now
from kmsir.keypolicy import principal_arn
from kmsir.playbook import InputSpec, LoadedPlaybook, Step, coerce_input
from kmsir.prompts import Answer, Prompter, StepPreview
from kmsir.resume import RunState, StepState, step_states
from kmsir.writer import BundleWriter, write_manifest

Mode = Literal["live", "check", "sandbox"]
#: Called after each step ends with its id; returns what happened in the world because of it
#: (a sandbox scenario's injects), each a JSON-able record with a ``say`` line for the person.
AfterStep = Callable[[str], Sequence[Mapping[str, Any]]]
RunStatus = Literal["succeeded", "failed", "aborted", "interrupted"]
#: AWS error codes worth retrying (``retries:``) after botocore's own retries gave up.
RETRYABLE = frozenset(
    {
        "ThrottlingException",
        "KMSInternalException",
        "DependencyTimeoutException",
        "ServiceUnavailable",
        "InternalFailure",
        "RequestLimitExceeded",
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


@dataclass(frozen=True)
class StepRecord:
    """One step's outcome, for the summary the CLI prints."""

    step_id: str
    title: str
    status: str
    summary: str


@dataclass
class RunResult:
    """What a run left behind."""

    bundle: Path
    status: RunStatus
    steps: list[StepRecord] = field(default_factory=list)
    error: str | None = None


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


class _Skip(Exception):
    """The responder chose to skip a failed step."""


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
    ) -> None:
        self.actions = actions
        self.after_step = after_step
        self.clients = clients
        self.prompter = prompter
        self.reporter = reporter or NullReporter()
        self.clock = clock
        self.sleep = sleep
        self._current_step: str | None = None
        self._bundle: BundleWriter | None = None
        self._operator_arn: str | None = None
        self._total = 0
        self._inputs: Mapping[str, InputSpec] = {}

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
        bundle = BundleWriter.create(
            options.evidence_dir, options.incident_id, playbook_raw=loaded.raw, clock=self.clock
        )
        info = RunInfo(
            options.incident_id, bundle.run_id, options.mode, simulated=options.scenario is not None
        )
        bundle.append("run-started", self._metadata(loaded, inputs, options, info, operator))
        return self._drive(bundle, loaded, dict(inputs), {}, info, options, None)

    def resume(self, loaded: LoadedPlaybook, state: RunState, options: RunOptions) -> RunResult:
        """Continue an interrupted or failed run in its own bundle, from its first unfinished
        step. A torn last journal line and files an interrupted write left are first recorded
        in a ``repair`` entry; nothing that already ran is run or asked again."""
        operator = self._operator()
        bundle, repaired = BundleWriter.reopen(state.root, clock=self.clock)
        previous = state.finished
        if previous is not None and not (state.root / MANIFEST).exists():
            write_manifest(state.root)  # the finished part stays anchored by its manifest
        for temporary in integrity.derived_temporaries(state.root):
            temporary.unlink()  # a derived file's temporary: never evidence
        explained, _ = integrity.leftovers(state.root, state.entries)  # the torn line is no entry
        if explained:
            repaired["leftovers"] = [vars(item) for item in explained]
        if repaired:
            bundle.append("repair", repaired)
        bundle.append(
            "run-resumed",
            {
                **self._custody(operator, options),
                "previous": {
                    "status": previous["data"].get("status") if previous else "interrupted",
                    "entries": len(state.entries),
                    "head": state.entries[-1]["hash"] if state.entries else None,
                },
                "resume_at": next(
                    (
                        s.id
                        for s in loaded.playbook.steps
                        if s.id not in state.steps or not state.steps[s.id].done(s.on_error)
                    ),
                    None,
                ),
                **dict(options.extra),
            },
        )
        info = RunInfo(
            options.incident_id,
            bundle.run_id,
            options.mode,
            simulated=options.scenario is not None,
        )
        inputs = dict(state.meta.get("inputs") or {})
        for entry in state.entries:  # values the responder corrected after a failure
            if entry["type"] == "input-changed":
                inputs[entry["data"]["name"]] = entry["data"]["to"]
        return self._drive(bundle, loaded, inputs, state.context_steps(), info, options, state)

    def _drive(
        self,
        bundle: BundleWriter,
        loaded: LoadedPlaybook,
        inputs: dict[str, Any],
        steps: dict[str, Any],
        info: RunInfo,
        options: RunOptions,
        state: RunState | None,
    ) -> RunResult:
        self._bundle = bundle
        self._total = len(loaded.playbook.steps)
        self._inputs = loaded.playbook.inputs
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
        try:
            for index, step in enumerate(loaded.playbook.steps, start=1):
                prior = state.steps.get(step.id) if state is not None else None
                started = started or step.id == options.start_at
                if prior is not None and prior.skip_pending:
                    record = self._skip(bundle, step, "skipped after failure (answered before)")
                elif prior is not None and prior.done(step.on_error) and prior.outcome:
                    record = _record_of(step, prior.outcome)
                    result.steps.append(record)
                    if record.status == "failed":
                        result.status, result.error = "failed", record.summary
                    continue
                elif not started:
                    record = self._skip(bundle, step, "before --start-at")
                else:
                    record = self._run_step(bundle, index, step, context, info, options, prior)
                result.steps.append(record)
                self.reporter.step(record.step_id, record.title, record.status, record.summary)
                self._after_step(bundle, step.id)
                if record.status == "failed":
                    result.status = "failed"
                    result.error = record.summary
                    if step.on_error != "continue":
                        break
        except (Aborted, MissingAnswer) as exc:
            result.status, result.error = "aborted", str(exc)
        except KeyboardInterrupt:
            # Ctrl-C may have landed inside append, after its line reached the disk: resync
            # so the last entry chains to it, and leave the run unfinished for resume.
            if bundle.resync():
                with contextlib.suppress(EvidenceError):
                    bundle.append("run-interrupted", {"reason": "interrupted (Ctrl-C)"})
            bundle.close()
            result.status = "interrupted"
            raise
        except BaseException as exc:
            # Anything else (a bug, the evidence disk failing, a bad answer): record why the
            # run stopped and leave a finished, verifiable bundle, then let the CLI report it.
            with contextlib.suppress(Exception):
                bundle.finish("failed", {"error": f"{type(exc).__name__}: {exc}"[:2000]})
            raise
        finally:
            self._current_step = None
            self.clients.recorder = None
            self.clients.intent_recorder = None
        bundle.finish(result.status, {"error": result.error} if result.error else None)
        return result

    def _run_step(
        self,
        bundle: BundleWriter,
        index: int,
        step: Step,
        context: dict[str, Any],
        info: RunInfo,
        options: RunOptions,
        prior: StepState | None = None,
    ) -> StepRecord:
        self._current_step = step.id
        rechecked = prior is not None and prior.in_flight
        action = self.actions[step.action]
        context["now"] = timestamp(self.clock())
        if step.when is not None:
            try:
                go = bool(templating.evaluate(step.when, context))
            except KmsirError as exc:
                return self._fail(bundle, step, f"when: {exc}")
            if not go:
                return self._skip(bundle, step, f"when: {step.when} is false")
        sink = _StepSink(bundle, index, step.id)
        if prior is not None:  # a resumed step writes to a fresh attempt folder
            sink.attempt = prior.attempts
        ctx = ActionContext(
            step_id=step.id,
            clients=self.clients,
            prompter=self.prompter,
            artifacts=sink,
            run=info,
            now=self.clock,
            reporter=self.reporter,
            earlier_attempt=_earlier_attempt(prior),
        )
        while True:
            try:
                params = self._params(action, step, context)
                skipped = self._before(bundle, index, step, action, ctx, params, options, prior)
                prior = None  # after a failure, a retry is confirmed afresh
                if skipped is not None:
                    return skipped
                bundle.append(
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
                self._fail(bundle, step, f"step '{step.id}' ({step.action}): {exc}")
                raise
            except KmsirError as exc:
                message = f"step '{step.id}' ({step.action}): {exc}"
                record = self._fail(bundle, step, message)
                if step.on_error == "continue" or (
                    step.on_error == "stop" and not self.prompter.interactive
                ):
                    return record
                choice = self._after_failure(bundle, step, message, context)
                if choice == "retry":
                    # what the failed attempt changed or was told carries over to the retry
                    entries = read_journal(bundle.root / JOURNAL).entries
                    ctx.earlier_attempt = _earlier_attempt(step_states(entries).get(step.id))
                    continue
                if choice == "skip":
                    return self._skip(bundle, step, "skipped after failure")
                raise Aborted(f"aborted after step '{step.id}' failed") from None
            break
        context["steps"][step.id] = {**outcome.outputs, "status": outcome.status}
        bundle.append(
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

    def _params(self, action: Action[Any], step: Step, context: dict[str, Any]) -> Any:
        rendered = templating.render_value(step.with_, context)
        try:
            return action.params.model_validate(rendered)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(p) for p in first["loc"]) or "with"
            raise ActionError(f"parameter {where}: {first['msg']}") from None

    def _before(
        self,
        bundle: BundleWriter,
        index: int,
        step: Step,
        action: Action[Any],
        ctx: ActionContext,
        params: Any,
        options: RunOptions,
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
                bundle.append(
                    "recheck",
                    {
                        "reason": "the step was in flight when the run stopped",
                        "sent_before": [f"{c['service']}:{c['operation']}" for c in prior.sent],
                        "state": preview.state,
                        "would_call": list(preview.calls),
                    },
                    step=step.id,
                )
            if options.mode == "check":
                bundle.append(
                    "check-mode",
                    {
                        "would_call": list(preview.calls),
                        "target": preview.target,
                        "state": preview.state,
                    },
                    step=step.id,
                )
                return self._skip(
                    bundle,
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
                return self._skip(
                    bundle, step, f"not approved (decision at journal line {earlier['seq']})"
                )
            if preview is None or set(preview.calls) <= set(data.get("calls") or []):
                return None  # approved before the interruption: not asked again
        shown = _step_preview(step, action, params, preview, f"{index}/{self._total}")
        answer: Answer | None
        if options.yes:
            answer = Answer("run", "auto-approved") if action.mutating else None
        else:

            def note(text: str) -> None:
                bundle.append("note", {"text": text, "by": "responder"}, step=step.id)

            answer = self.prompter.before_step(shown, note)
        if answer is None:
            return None  # nobody to ask, and the step changes nothing
        verdict = {"run": "approved", "skip": "skipped"}.get(str(answer.value), "aborted")
        bundle.append(
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
            return self._skip(bundle, step, f"not approved ({answer.source}){reason}")
        return None

    def _after_failure(
        self, bundle: BundleWriter, step: Step, message: str, context: dict[str, Any]
    ) -> str:
        """Ask what to do about a failed step: retry, skip, abort, or edit an input and retry."""
        choices = ["retry", "skip", "abort"] + (["edit-input"] if self._inputs else [])
        choice = self.prompter.ask(f"{step.id}.on-error", f"{message}\nWhat now?", choices)
        bundle.append(
            "decision",
            {
                "question": "on error",
                "answer": choice.value,
                "by": choice.source,
                "reason": choice.reason,
            },
            step=step.id,
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

        def validate(value: str) -> str | None:
            try:
                coerce_input(name, spec, value)
            except UsageError as exc:
                return str(exc)
            return None

        question = f"New value for {name} ({spec.type}; now {current!r}):"
        if spec.type == "choice" and spec.choices:
            given = self.prompter.ask(f"{step.id}.{name}", question, list(spec.choices))
        else:
            given = self.prompter.text(f"{step.id}.{name}", question, validate)
        value = coerce_input(name, spec, given.value)
        context["inputs"][name] = value
        bundle.append(
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
                self._bundle_append("step-retry", {"attempt": attempt, "error": str(exc)}, step.id)
                self.sleep(min(2.0**attempt, 30.0))

    def _after_step(self, bundle: BundleWriter, step_id: str) -> None:
        """What the world did after this step (a scenario's injects): journaled, then shown."""
        if self.after_step is None:
            return
        for record in self.after_step(step_id):
            bundle.append("inject", dict(record), step=step_id)
            self.reporter.notice(str(record.get("say") or f"inject after step {step_id}"))

    # -- journal helpers ------------------------------------------------------------------

    def _bundle_append(self, type_: str, data: dict[str, Any], step: str | None) -> None:
        if self._bundle is not None:
            self._bundle.append(type_, data, step=step)

    def _record_call(self, call: ApiCall) -> None:
        self._bundle_append(
            "api-call",
            {
                "service": call.service,
                "operation": call.operation,
                "region": call.region,
                "params": call.params,
                "http_status": call.http_status,
                "request_id": call.request_id,
                "error_code": call.error_code,
                "call": call.call_id,
            },
            self._current_step,
        )

    def _record_intent(self, call: ApiCall) -> None:
        """A state-changing call about to be sent: journaled first, so a crash before its
        result is journaled still shows it may have reached AWS."""
        self._bundle_append(
            "api-intent",
            {
                "service": call.service,
                "operation": call.operation,
                "region": call.region,
                "params": call.params,
                "call": call.call_id,
            },
            self._current_step,
        )

    def _skip(
        self, bundle: BundleWriter, step: Step, reason: str, *, status: str = "skipped"
    ) -> StepRecord:
        bundle.append(
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

    def _fail(self, bundle: BundleWriter, step: Step, message: str) -> StepRecord:
        bundle.append(
            "step-failed",
            {"error": message, "action": step.action, "name": step.title, "phase": step.phase},
            step=step.id,
        )
        return StepRecord(step.id, step.title, "failed", message)

    # -- metadata -------------------------------------------------------------------------

    def _operator(self) -> dict[str, Any]:
        sts = self.clients.client("sts")
        with aws_errors("GetCallerIdentity (who is running this?)", service="sts"):
            identity = sts.get_caller_identity()
        self._operator_arn = identity.get("Arn")
        return {
            "arn": identity.get("Arn"),
            "account": identity.get("Account"),
            "user_id": identity.get("UserId"),
        }

    def _metadata(
        self,
        loaded: LoadedPlaybook,
        inputs: Mapping[str, Any],
        options: RunOptions,
        info: RunInfo,
        operator: dict[str, Any],
    ) -> dict[str, Any]:
        playbook = loaded.playbook
        return {
            **self._custody(operator, options),
            "playbook": {
                "id": playbook.id,
                "title": playbook.title,
                "version": playbook.version,
                "severity": playbook.severity,
                "sha256": loaded.sha256,
                "path": loaded.path.name,
            },
            "incident": options.incident_id,
            "run_id": info.run_id,
            "inputs": dict(inputs),
            "mode": options.mode,
            "simulated": info.simulated,
            "scenario": options.scenario,
            "region": self.clients.resolved_region,
            **dict(options.extra),
        }

    @staticmethod
    def _custody(operator: dict[str, Any], options: RunOptions) -> dict[str, Any]:
        """Who handles the evidence, with what, where: recorded at start and at each resume."""
        import boto3
        import botocore

        return {
            "tool": {"name": "kmsir", "version": __version__},
            "versions": {
                "python": platform.python_version(),
                "boto3": boto3.__version__,
                "botocore": botocore.__version__,
                "platform": sys.platform,
            },
            "operator": {**operator, "local_user": _local_user()},
            "host": socket.gethostname(),
            "location": str(options.evidence_dir.resolve()),
        }


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


def _earlier_attempt(prior: StepState | None) -> EarlierAttempt | None:
    if prior is None or not prior.unfinished_work:
        return None
    return EarlierAttempt(prior.before, tuple(prior.sent), tuple(prior.recorded))


def _record_of(step: Step, outcome: dict[str, Any]) -> StepRecord:
    """The summary line of a step that finished before the run was resumed."""
    data = outcome["data"]
    if outcome["type"] == "step-succeeded":
        return StepRecord(step.id, step.title, str(data.get("status")), str(data.get("summary")))
    if outcome["type"] == "step-skipped":
        return StepRecord(step.id, step.title, str(data.get("status")), str(data.get("reason")))
    return StepRecord(step.id, step.title, "failed", str(data.get("error")))


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"

"""The two-person rule: a step the responder approved waits for a second person's approval.

``needed`` says whether a step waits (its ``approvals:``, the playbook's top-level ones for an
irreversible or high-impact action, ``--require-approval``; never in check mode; in the
sandbox only when asked for). ``SecondPerson.wait`` journals the request (a fresh nonce, the
preview the approver must see, the STS endpoint they sign for), shows the responder the
commands to hand over, then reads the run's inbox (``evidence.approvals``) on the run's clock
until ``count`` distinct approvers agreed: each answer is checked (its signed binding, then
its identity from STS: ``aws.approver.identify``) and journaled as given or refused. A deny or
the timeout fails the step (``ActionError``), and its ``on_error`` applies as for any failure.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import msgspec

from kmsir.actions.base import Action, ActionContext, ApprovalWait, Preview
from kmsir.aws.approver import Principal, signing_region
from kmsir.errors import ActionError, EvidenceError, KmsirError
from kmsir.evidence import approvals
from kmsir.evidence.bundle import JOURNAL, jsonable, read_journal, sha256_hex, timestamp
from kmsir.evidence.calls import Call, covered
from kmsir.evidence.entries import (
    ApprovalGiven,
    ApprovalRefused,
    ApprovalRequested,
    ApprovalTimedOut,
    Note,
    Recheck,
)
from kmsir.evidence.stepview import StepApprovals
from kmsir.playbook.model import Approvals, Playbook, Step
from kmsir.run.approval import step_preview
from kmsir.run.approvers import allowed as allowed
from kmsir.run.approvers import identity_principal, refusal

if TYPE_CHECKING:
    from kmsir.evidence.journal import BundleWriter
    from kmsir.run.steps import RunOptions, Services

Json = dict[str, Any]
#: How often the inbox is read while a step waits (on the run's clock and sleep).
POLL_SECONDS = 0.5
#: What ``env -u`` removes before the approver's command when the run gives its credentials
#: (``RunOptions.approver_env``): their own session token or profile would sign as someone
#: else (or not at all).
UNSET_FOR_APPROVER = (
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
)


@dataclass(frozen=True)
class Needed:
    """What a step waits for: ``count`` distinct approvers matching ``allowed`` (any but the
    operator when empty), for ``timeout_s`` seconds at most."""

    count: int
    allowed: tuple[str, ...]
    timeout_s: int


def needed(
    step: Step, playbook: Playbook, action: Action[Any], options: RunOptions
) -> Needed | None:
    """The approvals ``step`` waits for in a run with ``options`` (``None``: it does not).

    Check mode never waits (nothing is sent). A sandbox run waits only with
    ``--require-approval`` or a scenario that says ``approvals: required``. A step's own
    ``approvals:`` apply to it; the playbook's top-level ones, or ``{count: 1}`` with
    ``--require-approval``, to every irreversible or high-impact step."""
    if options.mode == "check":
        return None
    if options.mode == "sandbox" and not (options.require_approval or options.scenario_approvals):
        return None
    asked = step.approvals
    if asked is None and action.needs_second_person:
        asked = playbook.approvals or (Approvals() if options.require_approval else None)
    if asked is None:
        return None
    return Needed(asked.count, tuple(asked.from_), step.approval_timeout_s)


def preview_of(
    step: Step, action: Action[Any], shown: Preview, impact: str | None, params: Any
) -> Json:
    """What the approver must see: the fields of the responder's approval (``Decision``),
    and the details the responder could ask for (the rendered parameters, the IAM
    permissions, ``on_error``, ``when``)."""
    details = step_preview(step, action, params, shown, "", impact).details
    preview = {
        "step": step.id,
        "title": step.title,
        "action": step.action,
        "calls": [msgspec.to_builtins(call) for call in shown.calls],
        "target": shown.target,
        "state": shown.state,
        "inverse": action.inverse,
        "impact": impact,
        "notes": list(shown.notes),
        "details": list(details),
    }
    return jsonable(preview)  # type: ignore[no-any-return]


class _Refused(Exception):
    """An answer not counted: why, and who it came from when STS said."""

    def __init__(self, why: str, identity: Json | None = None) -> None:
        super().__init__(why)
        self.why, self.identity = why, identity


@dataclass
class _Wait:
    """One request being waited for."""

    request: ApprovalRequested
    needed: Needed
    step: Step
    operators: list[Principal]
    approvers: list[Principal]
    written: int  # approval-<n>.json files the step has
    unreadable: bool = False  # the inbox could not be read (noted once)


class SecondPerson:
    """Waits for second persons' approvals of the steps of one run, into its bundle."""

    def __init__(
        self,
        services: Services,
        *,
        bundle: BundleWriter,
        options: RunOptions,
        playbook: Playbook,
    ) -> None:
        self.services, self.bundle = services, bundle
        self.options, self.playbook = options, playbook
        self._replays: dict[str, int] = {}  # a replay: the recorded requests reproduced

    def wait(
        self,
        step: Step,
        action: Action[Any],
        ctx: ActionContext,
        params: Any,
        impact: str | None,
        write: Callable[[str, bytes], str],
    ) -> None:
        """Wait until ``step`` has its approvals (return), or fail it (``ActionError``): a
        deny, none in time, or, re-read after the wait, calls the approvals do not cover.
        ``ctx.approved``: the preview the responder approved (``None`` or no calls: nothing
        will be sent, nobody is asked); ``write`` stores an artifact of the step (an
        accepted answer file)."""
        shown = ctx.approved
        if shown is None or not shown.calls:
            return
        if self.options.replayed_approvals is not None:
            return self._replayed(step, self.options.replayed_approvals)
        need = needed(step, self.playbook, action, self.options)
        if need is None:
            return
        preview = preview_of(step, action, shown, impact, params)
        digest = approvals.preview_sha256(preview)
        view = read_journal(self.bundle.root / JOURNAL).view()
        prior = view.steps.get(step.id)
        state = prior.approvals if prior is not None else None
        operators = [
            identity_principal(c.operator)
            for c in view.custody
            if c.operator and c.operator.get("arn")
        ]
        kept = _kept(state, shown.calls, digest, operators)
        if len(kept) >= need.count:
            return  # approved before the run stopped, for these same calls
        request = self._request(step, need, preview, digest, kept)
        waiting = _Wait(
            request,
            need,
            step,
            operators,
            [identity_principal(k["identity"]) for k in kept],
            len(state.history) if state is not None else 0,
        )
        self._show(waiting)
        self._poll(waiting, view.answers_handled(), write)
        # the wait may have lasted hours: what the step sends now must be what was approved
        _still_covered(self.bundle, step, action.preview(ctx, params), shown.calls)

    def _replayed(self, step: Step, recorded: Mapping[str, Sequence[str | None]]) -> None:
        """A replay asks nobody: the recorded outcome of the step's next request, if it had
        one (approved: go on; denied, timed out: the same failure, so the recorded answer to
        the failure menu applies)."""
        outcomes = recorded.get(step.id) or ()
        n = self._replays.get(step.id, 0)
        if n >= len(outcomes):
            return  # the recorded run did not wait here
        self._replays[step.id] = n + 1
        outcome = outcomes[n]
        if outcome is not None:
            raise ActionError(outcome)
        text = "approved by a second person in the recorded run (a replay asks nobody)"
        self.bundle.append(Note(text=text, by="kmsir"), step=step.id)

    def _request(
        self, step: Step, need: Needed, preview: Json, digest: str, kept: list[Json]
    ) -> ApprovalRequested:
        clock = self.services.clock
        sts = self.services.clients.client("sts")
        request = ApprovalRequested(
            request=secrets.token_hex(8),
            count=need.count,
            from_=list(need.allowed),
            timeout_s=need.timeout_s,
            until=timestamp(clock() + timedelta(seconds=need.timeout_s)),
            sts_url=sts.meta.endpoint_url,
            sts_region=signing_region(sts),
            preview=preview,
            preview_sha256=digest,
            kept=kept,
        )
        self.bundle.append(request, step=step.id)
        return request

    def _show(self, waiting: _Wait, news: str | None = None) -> None:
        step, root = waiting.step, self.bundle.root.resolve()
        head, note = _approver_prefix(self.options)
        where = f"{shlex.quote(str(root))} {shlex.quote(step.id)} --reason '...'"
        self.services.reporter.waiting(
            ApprovalWait(
                step_id=step.id,
                title=step.title,
                count=waiting.needed.count,
                approved=len(waiting.approvers),
                deadline=waiting.request.until,
                approve=f"{head} approve {where}",
                deny=f"{head} deny {where}",
                allowed=waiting.needed.allowed,
                news=news,
                note=note,
            )
        )

    def _poll(self, waiting: _Wait, handled: set[str], write: Callable[[str, bytes], str]) -> None:
        services, request = self.services, waiting.request
        deadline = request.until
        while True:
            for item in self._look(waiting, handled):
                handled.add(item.id)
                if self._answer(waiting, item, write):
                    return
            if timestamp(services.clock()) >= deadline:
                self.bundle.append(
                    ApprovalTimedOut(
                        request=request.request,
                        until=deadline,
                        approved=len(waiting.approvers),
                        count=request.count,
                    ),
                    step=waiting.step.id,
                )
                raise ActionError(timed_out(request, len(waiting.approvers)))
            services.sleep(POLL_SECONDS)

    def _look(self, waiting: _Wait, handled: set[str]) -> list[approvals.Received]:
        """The new answers in the inbox; none when it cannot be read (a permission, a link
        loop: journaled once, and the step keeps waiting: it may be fixed in time)."""
        try:
            return approvals.read_answers(self.bundle.root, skip=handled)
        except EvidenceError as exc:
            if not waiting.unreadable:
                waiting.unreadable = True
                text = f"the approvals inbox cannot be read (still waiting): {exc}"
                self.bundle.append(Note(text=text, by="kmsir"), step=waiting.step.id)
                self._show(waiting, text)
            return []

    def _answer(
        self, waiting: _Wait, item: approvals.Received, write: Callable[[str, bytes], str]
    ) -> bool:
        """Check one answer file and journal what came of it; True: the step has its
        approvals. A deny fails the step (``ActionError``)."""
        step_id = waiting.step.id
        try:
            given = self._check(waiting, item)
        except _Refused as refused:
            answer = item.answer
            self.bundle.append(
                ApprovalRefused(
                    answer=item.id,
                    why=refused.why,
                    request=answer.request if answer is not None else None,
                    identity=refused.identity,
                ),
                step=step_id,
            )
            self._show(waiting, f"an answer was refused: {refused.why}")
            return False
        waiting.written += 1
        raw = item.raw or b""
        kept = approvals.without_token(raw, item.answer) if item.answer is not None else raw
        path = write(f"approval-{waiting.written}.json", kept)
        given = msgspec.structs.replace(given, file=path, answer_sha256=sha256_hex(raw))
        self.bundle.append(given, step=step_id)
        arn = str(given.identity["arn"])
        if given.decision == "deny":
            self._show(waiting, f"DENIED by {arn}")
            raise ActionError(denied(given))
        waiting.approvers.append(identity_principal(given.identity))
        self._show(waiting, f"approved by {arn}")
        return len(waiting.approvers) >= waiting.request.count

    def _check(self, waiting: _Wait, item: approvals.Received) -> ApprovalGiven:
        """An answer as the approval it gives; ``_Refused`` naming why it does not count."""
        from kmsir.aws.approver import identify

        answer, request = item.answer, waiting.request
        if answer is None:
            raise _Refused(item.problem or "not an answer file")
        if answer.run != self.bundle.run_id or answer.step != waiting.step.id:
            raise _Refused(
                f"it answers step {answer.step[:60]!r} of run {answer.run[:40]}, not the step "
                f"waiting ({waiting.step.id!r} of run {self.bundle.run_id})"
            )
        if answer.request != request.request:
            raise _Refused(f"request {answer.request} is no longer open")
        if answer.saw != request.preview_sha256:
            raise _Refused("it saw another preview than the one the step waits with")
        if answer.signed_binding != answer.binding:
            raise _Refused(
                f"the signed {approvals.HEADER} header does not match the answer's fields "
                "(changed after signing)"
            )
        try:
            found = identify(
                self.services.clients, msgspec.to_builtins(answer.signed), request.sts_url
            )
        except KmsirError as exc:
            raise _Refused(f"the approver's identity could not be checked: {exc}") from None
        identity = {"arn": found.arn, "account": found.account, "user_id": found.user_id}
        why = refusal(
            identity_principal(identity),
            answer.decision,
            operators=waiting.operators,
            patterns=waiting.needed.allowed,
            approvers=waiting.approvers,
        )
        if why is not None:
            raise _Refused(why, identity)
        return ApprovalGiven(
            answer=item.id,
            request=request.request,
            decision=answer.decision,
            identity=identity,
            sts_request_id=found.request_id,
            reason=answer.reason,
            saw=answer.saw,
            answered=_signed_at(answer),
        )


#: A step whose calls changed while it waited (``_still_covered``) fails with this.
WAITED = "the key changed while the step waited for approval"
CHANGED = f"{WAITED}; retry to approve the new calls"


def denied(given: ApprovalGiven) -> str:
    """The failure of a step a second person denied."""
    arn = given.identity.get("arn", "?")
    return f"denied by {arn}" + (f": {given.reason}" if given.reason else "")


def timed_out(request: ApprovalRequested, approved: int) -> str:
    """The failure of a step whose approvals did not come in time."""
    return (
        f"no second-person approval by {request.until} ({approved} of {request.count}; "
        f"approval_timeout {request.timeout_s}s)"
    )


def _still_covered(
    bundle: BundleWriter, step: Step, now: Preview, approved: tuple[Call, ...]
) -> None:
    """After a wait (hours, maybe): the calls the step would send now, re-read from the
    live state, must be ones both people approved; else journaled and ``ActionError``."""
    if covered(now.calls, approved):
        return
    bundle.append(
        Recheck(
            reason=WAITED,
            sent_before=[],
            state=now.state,
            would_call=list(now.calls),
        ),
        step=step.id,
    )
    raise ActionError(CHANGED)


def _signed_at(answer: approvals.Answer) -> str:
    """When the approver answered: the signed ``X-Amz-Date`` of their request (checked by
    ``identify``), not the answer file's free ``answered`` field."""
    when = next(v for k, v in answer.signed.headers.items() if k.lower() == "x-amz-date")
    moment = datetime.strptime(when, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    return timestamp(moment)


def _approver_prefix(options: RunOptions) -> tuple[str, str | None]:
    """How the approver's command starts, and a note under it. With ``approver_env`` (a
    sandbox's second identity): its credentials in front, the variables of the approver's
    own shell that would sign as someone else (a session token, a profile) unset."""
    env = options.approver_env
    if not env:
        return "kmsir", None
    unset = " ".join(f"-u {name}" for name in UNSET_FOR_APPROVER if name not in env)
    given = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    note = (
        "SIMULATED: the credentials are the sandbox's second identity's (dummy; the sandbox "
        "names the approver by the access key id alone)"
        if options.mode == "sandbox"
        else None
    )
    return f"env {unset} {given} kmsir", note


def _kept(
    state: StepApprovals | None,
    calls: tuple[Call, ...],
    digest: str,
    operators: list[Principal],
) -> list[Json]:
    """The approvals of the step's last request that still stand (resume): the request
    open (no deny, timeout or outcome since), for the preview shown now (the same, or calls
    it covers), from someone who is not one of the run's operators."""
    if state is None or state.request is None or not state.open:
        return []
    old = state.request
    if old.preview_sha256 != digest:
        try:
            earlier = [msgspec.convert(c, Call) for c in old.preview.get("calls") or []]
        except msgspec.ValidationError:
            return []
        if not covered(calls, earlier):
            return []
    kept = [*old.kept, *({"answer": g.answer, "identity": g.identity} for g in state.given)]
    return [
        k
        for k in kept
        if not any(identity_principal(k.get("identity") or {}).same(o) for o in operators)
    ]

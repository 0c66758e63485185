"""``kmsir approve`` and ``kmsir deny``: a second person's decision on a step that waits.

Run by someone other than the responder, with their own AWS credentials. The bundle must
verify and the step must be waiting; the approver sees the preview the run journaled (what the
responder saw: the calls, the key's state, the blast radius, the undo), confirms at a terminal
(or passes ``--yes`` after reading it), and kmsir signs an ``sts:GetCallerIdentity`` request
with their credentials (never sending it) bound to that decision, writes it into the run's
inbox, and waits for the run to say what it made of it. The run sends the request to STS and
takes the approver's identity from the answer: nobody types a name.

Exit codes: 0 the run accepted the answer; 1 the bundle does not verify, the run refused the
answer, or no acknowledgement came in time; 2 the step is not waiting, or no terminal to
confirm at and no ``--yes``.
"""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from kmsir.cli.common import app, err, handled, live_clients, say
from kmsir.errors import EvidenceError, KmsirError, UsageError

if TYPE_CHECKING:
    from kmsir.evidence.entries import ApprovalGiven, ApprovalRefused, ApprovalRequested
    from kmsir.evidence.view import RunView
    from kmsir.prompts import StepPreview

Decision = Literal["approve", "deny"]
#: The longest reason an answer file holds.
MAX_REASON = 2000


@dataclass(frozen=True)
class Patience:
    """How long ``approve``/``deny`` wait for the run's acknowledgement, and how: tests give a
    clock and a sleep of their own (nothing waits for real)."""

    timeout_s: float = 60.0
    every_s: float = 0.5
    clock: Callable[[], float] = field(default=time.monotonic)
    sleep: Callable[[float], None] = field(default=time.sleep)


#: The waiting the commands do; tests replace it.
PATIENCE = Patience()


class NotAcknowledged(KmsirError):
    """The run did not acknowledge the answer in time, or stopped waiting without it."""


BundleArg = Annotated[
    Path, typer.Argument(metavar="BUNDLE", help="The waiting run's bundle directory.")
]
StepArg = Annotated[str, typer.Argument(metavar="STEP", help="The id of the step that waits.")]
ReasonOpt = Annotated[
    str | None, typer.Option("--reason", metavar="TEXT", help="Why (kept in the evidence).")
]
YesOpt = Annotated[
    bool,
    typer.Option("--yes", help="Do not ask for confirmation (read the preview shown first)."),
]
ProfileOpt = Annotated[
    str | None, typer.Option("--profile", help="Your AWS profile (the approver's credentials).")
]


@app.command()
@handled
def approve(
    bundle: BundleArg,
    step: StepArg,
    reason: ReasonOpt = None,
    yes: YesOpt = False,
    profile: ProfileOpt = None,
) -> None:
    """Approve a step that waits for a second person, with your own AWS credentials: shows
    what the step will do, signs your decision, and waits for the run to accept it."""
    _answer(bundle, step, "approve", reason, yes=yes, profile=profile)


@app.command()
@handled
def deny(
    bundle: BundleArg,
    step: StepArg,
    reason: ReasonOpt = None,
    yes: YesOpt = False,
    profile: ProfileOpt = None,
) -> None:
    """Deny a step that waits for a second person, with your own AWS credentials: the step
    fails and the responder chooses what next (retry, skip, abort)."""
    _answer(bundle, step, "deny", reason, yes=yes, profile=profile)


def _answer(
    bundle: Path,
    step: str,
    decision: Decision,
    reason: str | None,
    *,
    yes: bool,
    profile: str | None,
) -> None:
    from kmsir.aws.approver import sign
    from kmsir.evidence import approvals
    from kmsir.evidence.bundle import timestamp, utc_now

    if reason is not None and len(reason) > MAX_REASON:
        raise UsageError(f"--reason: {len(reason):,} characters, more than {MAX_REASON:,}")
    view = _verified(bundle)
    request = _waiting(view, step)
    if approvals.preview_sha256(request.preview) != request.preview_sha256:
        raise EvidenceError(
            f"{bundle}: step {step!r}: the journaled preview does not match its sha256"
        )
    _show(view, step, request)
    if not yes:
        _confirm(decision, bundle, step)
    run_id = str(view.run_id)
    if not request.sts_region:
        raise EvidenceError(f"{bundle}: step {step!r}: the request names no STS Region")
    session = live_clients(profile, request.sts_region).session()
    binding = approvals.binding(
        run=run_id,
        step=step,
        request=request.request,
        decision=decision,
        reason=reason,
        saw=request.preview_sha256,
    )
    signed = sign(session, request.sts_url, request.sts_region, binding)
    answer = approvals.Answer(
        run=run_id,
        step=step,
        request=request.request,
        decision=decision,
        reason=reason,
        saw=request.preview_sha256,
        answered=timestamp(utc_now()),
        signed=approvals.Signed(**signed),
    )
    _readable(answer)
    answer_id = approvals.write_answer(bundle, answer)
    err(f"answer {answer_id} written; waiting for the run to check it...")
    _outcome(wait_for_ack(bundle, step, answer_id), step, decision)


def _readable(answer: Any) -> None:
    """Refuse (one line, nothing written) an answer the run could not read back: a field
    longer than an answer file holds (a session token over ``MAX_HEADER`` characters)."""
    import msgspec

    from kmsir.evidence import approvals

    try:
        msgspec.json.decode(approvals.encode(answer), type=approvals.Answer)
    except msgspec.ValidationError as exc:
        raise KmsirError(
            f"the signed answer is not one the run can read ({exc}); nothing was written "
            f"(a session token or header longer than {approvals.MAX_HEADER:,} characters?)"
        ) from None


def _verified(bundle: Path) -> RunView:
    """The run in ``bundle``, once its evidence checks out (``verify``: the end of a running
    run cannot be proven yet, so only problems refuse it)."""
    from kmsir.evidence import integrity

    checked = integrity.check(bundle)
    # a line being appended just now reads as a torn tail: look again once it is written
    for _ in range(3):
        if not checked.problems or checked.problems != [checked.torn_tail]:
            break
        PATIENCE.sleep(0.2)
        checked = integrity.check(bundle)
    if checked.problems:
        more = f" (and {len(checked.problems) - 1} more)" if len(checked.problems) > 1 else ""
        raise EvidenceError(
            f"{bundle}: does not verify: {checked.problems[0]}{more}; nothing was signed "
            f"(see kmsir verify {bundle})"
        )
    return checked.view


def _waiting(view: RunView, step: str) -> ApprovalRequested:
    """The request ``step`` waits under; ``UsageError`` (exit 2) saying why it does not."""
    found = view.steps.get(step)
    run = view.run_id or "?"
    if found is None:
        raise UsageError(f"step {step!r}: no such step in run {run} (yet)")
    waiting = view.waiting_step(step)
    state = found.approvals
    if waiting is None or state is None or state.request is None:
        if state is None or state.request is None:
            why = "it never asked for a second person's approval"
        elif state.denied is not None:
            why = f"it was denied by {state.denied.identity.get('arn', '?')}"
        elif state.timed_out:
            why = "its approval timed out"
        elif not state.waiting:
            why = "it needs no more approvals"
        elif view.finished is not None:
            why = f"the run finished ({view.status})"
        else:
            why = "the run stopped waiting (interrupted or resumed; a resumed run asks again)"
        raise UsageError(f"step {step!r} of run {run} is not waiting for an approval: {why}")
    return state.request


def _show(view: RunView, step: str, request: ApprovalRequested) -> None:
    """What the approver decides on: the request, then the step's preview as the responder
    saw it."""
    from kmsir.cli.console import show_preview

    meta = view.meta
    operator = str((meta.operator if meta is not None else {}).get("arn", "?"))
    simulated = " (SIMULATED)" if meta is not None and meta.simulated else ""
    state = view.steps[step].approvals
    given = state.approved if state is not None else 0
    err(
        f"run {view.run_id} of incident {meta.incident if meta else '?'}{simulated}: step "
        f"{step!r} waits for a second person; requested by {operator}"
    )
    allowed = f" from {', '.join(request.from_)}" if request.from_ else ""
    err(
        f"needs {request.count} approval(s){allowed}; {given} given; waits until "
        f"{request.until}; you sign for {request.sts_url} ({request.sts_region}) with your "
        "own AWS credentials"
    )
    show_preview(_preview(step, request.preview))
    for line in request.preview.get("details") or ():  # what the responder could ask for
        err(str(line))


def _preview(step: str, preview: dict[str, Any]) -> StepPreview:
    """The journaled preview as the panel the responder saw."""
    import msgspec

    from kmsir import actions
    from kmsir.actions.base import IRREVERSIBLE
    from kmsir.evidence.calls import Call
    from kmsir.prompts import StepPreview

    try:
        calls = tuple(msgspec.convert(c, Call) for c in preview.get("calls") or [])
    except msgspec.ValidationError as exc:
        raise EvidenceError(f"step {step!r}: the journaled preview's calls: {exc}") from None
    name = str(preview.get("action") or "?")
    action = actions.registry().get(name)
    does = ((action.__doc__ or "").strip().splitlines() if action is not None else []) or [name]
    inverse = preview.get("inverse") or "none needed"

    def text(key: str) -> str | None:
        value = preview.get(key)
        return None if value is None else str(value)

    return StepPreview(
        step_id=step,
        title=str(preview.get("title") or step),
        action=name,
        phase=None,
        position="for approval:",
        does=does[0],
        mutating=True,
        calls=calls,
        target=text("target"),
        state=text("state"),
        inverse="IRREVERSIBLE" if inverse == IRREVERSIBLE else str(inverse),
        notes=tuple(str(n) for n in preview.get("notes") or []),
        impact=text("impact"),
    )


def _confirm(decision: Decision, bundle: Path, step: str) -> None:
    """Ask yes or no at the terminal; without one, refuse (exit 2) and say how to go on. A
    no signs and writes nothing: the step keeps waiting (exit 1, saying how to refuse it)."""
    from kmsir.cli.console import pause_progress, show_preview
    from kmsir.cli.interactive import InteractivePrompter

    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise UsageError(
            f"{decision}: no terminal to confirm at; nothing was signed (read the preview "
            "above, then pass --yes)"
        )
    asker = InteractivePrompter(show=err, show_preview=show_preview, before_prompt=pause_progress)
    if asker.yes_no(f"{decision.capitalize()} step {step} as shown above?"):
        return
    where = f"{shlex.quote(str(bundle))} {shlex.quote(step)}"
    if decision == "approve":
        err(
            f"not approved: nothing was signed or written, the step still waits; to refuse "
            f"it, run kmsir deny {where} --reason '...'"
        )
    else:
        err(
            "not denied: nothing was signed or written, the step still waits; to approve "
            f"it, run kmsir approve {where}"
        )
    raise typer.Exit(1)


def wait_for_ack(
    bundle: Path, step: str, answer_id: str, patience: Patience | None = None
) -> ApprovalGiven | ApprovalRefused:
    """What the run made of the answer ``answer_id``, read from its journal every
    ``every_s`` until ``timeout_s``; ``NotAcknowledged`` when nothing came, or when the step
    stopped waiting without it."""
    from kmsir.evidence import approvals
    from kmsir.evidence.bundle import JOURNAL, read_journal

    patience = patience or PATIENCE
    deadline = patience.clock() + patience.timeout_s
    while True:
        view = read_journal(bundle / JOURNAL).view()
        found = view.answered(answer_id)
        if found is not None:
            return found
        if view.waiting_step(step) is None:
            raise NotAcknowledged(
                f"step {step!r} no longer waits for an approval (decided, timed out or the "
                f"run stopped) and the run did not take answer {answer_id}"
            )
        if patience.clock() >= deadline:
            raise NotAcknowledged(
                f"no acknowledgement from the run within {patience.timeout_s:g} s: answer "
                f"{answer_id} stays in {approvals.inbox(bundle)} while the step waits (is the "
                "run still running? kmsir status shows it)"
            )
        patience.sleep(patience.every_s)


def _outcome(found: ApprovalGiven | ApprovalRefused, step: str, decision: Decision) -> None:
    """Say what the run made of the answer: accepted (exit 0), or refused and why (1)."""
    from kmsir.evidence.entries import ApprovalRefused

    if isinstance(found, ApprovalRefused):
        raise KmsirError(f"the run refused your {decision}: {found.why}")
    who = found.identity.get("arn", "?")
    if found.decision == "deny":
        say(f"denied: step {step}, as {who}; the step fails (the responder decides what next)")
        return
    say(f"approved: step {step}, as {who} (STS request {found.sts_request_id or '-'})")

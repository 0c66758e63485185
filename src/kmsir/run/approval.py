"""Before a step runs: what it will do, and whether it may.

For a change: the preview (the exact calls, re-read live state, the undo), a re-check when
the run stopped inside the step, check mode (journal what would be sent, send nothing), the
question to the person (or ``--yes``, or an earlier approval that still covers the calls),
and the locks of the keys it is about to change. ``Approval.ask`` returns ``None`` to go
ahead, or a ``Skip`` for the attempt loop to journal.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

from kmsir.actions.base import IRREVERSIBLE, Action, ActionContext, Preview
from kmsir.errors import Aborted
from kmsir.evidence.calls import covered, describe
from kmsir.evidence.entries import CheckMode, Decision, LockOverridden, Note, Recheck
from kmsir.evidence.journal import BundleWriter
from kmsir.evidence.locks import RunLocks
from kmsir.evidence.stepview import StepView
from kmsir.playbook.model import Step
from kmsir.prompts import Answer, Prompter, StepPreview

#: A KMS key ARN, as a changing step's preview names its target.
_KEY_ARN = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+")


@dataclass(frozen=True)
class Skip:
    """The step is not run: why, and the status it ends with (``would-run`` in check mode)."""

    reason: str
    status: str = "skipped"


class Approval:
    """Shows each step before it runs and records the answer, into one run's bundle."""

    def __init__(
        self,
        *,
        prompter: Prompter,
        bundle: BundleWriter,
        check_mode: bool,
        yes: bool,
        total: int,
        locks: RunLocks | None = None,
    ) -> None:
        self.prompter, self.bundle = prompter, bundle
        self.check_mode, self.yes, self.total = check_mode, yes, total
        self.locks = locks

    def ask(
        self,
        index: int,
        step: Step,
        action: Action[Any],
        ctx: ActionContext,
        params: Any,
        prior: StepView | None,
        impact: str | None = None,
    ) -> Skip | None:
        """Show what the step will do and ask whether to run it; ``None``: go ahead (for a
        change, ``ctx.approved`` then holds the preview approved, its keys locked).
        ``impact``: who and what loses access, from the run's blast radius of the key."""
        if action.asks:
            return None  # the step is itself a question to the person
        preview: Preview | None = None
        if action.mutating:
            preview = action.preview(ctx, params)
            if ctx.where is not None:  # a key in another account of the run's scope
                preview = replace(preview, target=f"{preview.target} (in {ctx.where})")
            if prior is not None and prior.in_flight:
                self._recheck(step, preview, prior)
            if self.check_mode:
                self.bundle.append(
                    CheckMode(
                        would_call=list(preview.calls), target=preview.target, state=preview.state
                    ),
                    step=step.id,
                )
                calls = "; ".join(describe(c) for c in preview.calls)
                return Skip(f"check mode: would call {calls}", status="would-run")
            ctx.approved = preview
        # nothing would be sent: not asked, the run records "already in desired state"
        asked = preview is None or bool(preview.calls)
        skip = self._decide(index, step, action, params, preview, prior, impact) if asked else None
        if skip is None and preview is not None:
            self._lock_keys(step, preview)
        return skip

    def _recheck(self, step: Step, preview: Preview, prior: StepView) -> None:
        """The run stopped inside this step: the preview re-read the live state, which the
        action also does before sending anything again. Journal what was found."""
        self.bundle.append(
            Recheck(
                reason="the step was in flight when the run stopped",
                sent_before=[f"{c.service}:{c.operation}" for c in prior.carried.sent],
                state=preview.state,
                would_call=list(preview.calls),
            ),
            step=step.id,
        )

    def _decide(
        self,
        index: int,
        step: Step,
        action: Action[Any],
        params: Any,
        preview: Preview | None,
        prior: StepView | None,
        impact: str | None,
    ) -> Skip | None:
        earlier = prior.carried.approval if prior is not None else None
        if earlier is not None:
            decided: Decision = earlier.record
            if decided.answer != "approved":
                return Skip(f"not approved (decision at journal line {earlier.seq})")
            if preview is None or covered(preview.calls, decided.calls or []):
                return None  # approved before the interruption: not asked again
        shown = step_preview(step, action, params, preview, f"{index}/{self.total}", impact)
        answer: Answer | None
        if self.yes:
            answer = Answer("run", "auto-approved") if action.mutating else None
        else:

            def note(text: str, by: str) -> None:
                self.bundle.append(Note(text=text, by=by), step=step.id)

            answer = self.prompter.before_step(shown, note)
        if answer is None:
            return None  # nobody to ask, and the step changes nothing
        verdict = {"run": "approved", "skip": "skipped"}.get(str(answer.value), "aborted")
        self.bundle.append(
            Decision(
                question=f"run {step.action}",
                answer=verdict,
                by=answer.source,
                reason=answer.reason,
                calls=list(shown.calls),
                state=shown.state,
                inverse=action.inverse,
                impact=impact,
            ),
            step=step.id,
        )
        if verdict == "aborted":
            raise Aborted(f"aborted before step '{step.id}' ({answer.source})")
        if verdict == "skipped":
            reason = f": {answer.reason}" if answer.reason else ""
            return Skip(f"not approved ({answer.source}){reason}")
        return None

    def _lock_keys(self, step: Step, preview: Preview) -> None:
        """Hold the lock of each key the step is about to change (the key ARNs its preview
        names), so that no other run changes it meanwhile; ``LockedError`` (a failure the
        person may retry) while another run holds one, unless forced (then journaled)."""
        if self.locks is None:
            return
        for arn in dict.fromkeys(_KEY_ARN.findall(preview.target)):
            overridden = self.locks.key(arn)
            if overridden is not None:
                self.bundle.append(LockOverridden(**overridden), step=step.id)


def step_preview(
    step: Step,
    action: Action[Any],
    params: Any,
    preview: Preview | None,
    position: str,
    impact: str | None = None,
) -> StepPreview:
    """What the person sees before ``step`` runs."""
    inverse = action.inverse or "none needed"
    # every parameter the step gives, even one equal to its default (a collect's
    # `source: lookup`): what the playbook asked for, rendered
    rendered = params.model_dump(mode="json", by_alias=True, include=params.model_fields_set)
    details = [
        "  parameters (rendered):",
        *[f"    {name}: {json.dumps(value)[:300]}" for name, value in rendered.items()],
        f"  IAM permissions: {', '.join(action.permissions_for(params)) or 'none'}",
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
        impact=impact,
    )

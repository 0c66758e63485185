"""The human and timing steps: ask a question, confirm before going on, note, wait."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from types import MappingProxyType

from pydantic import Field, field_validator, model_validator

from kmsir.actions.base import Action, ActionContext, Outcome, Params
from kmsir.errors import Aborted
from kmsir.evidence.calls import Call
from kmsir.evidence.entries import Decision
from kmsir.evidence.entries import Note as NoteRecord
from kmsir.playbook.values import duration_seconds, parse_time, time_parameter
from kmsir.prompts import Answer

#: The longest a ``wait`` step may wait: a day (longer belongs in a follow-up, not a run).
MAX_WAIT_SECONDS = 86_400


#: What a person may ask to see before choosing (``details``), at most.
MAX_DETAILS = 5


class AskParams(Params):
    """A question and the answers allowed; what may be looked at first; the choice that
    declines to act, and what is said before it is taken."""

    question: str = Field(min_length=1, max_length=2000)
    choices: list[str] = Field(min_length=2, max_length=50)
    #: Label -> text, offered at a terminal as "show <label>" before the choice.
    details: dict[str, str] = Field(default_factory=dict, max_length=MAX_DETAILS)
    #: The choice that leaves things as they are ("none"): confirmed once more when chosen.
    decline: str | None = None
    decline_warning: str = Field(
        default="Nothing will be contained: are you sure?", min_length=1, max_length=2000
    )

    @model_validator(mode="after")
    def _decline_is_a_choice(self) -> AskParams:
        if self.decline is not None and self.decline not in self.choices:
            raise ValueError(f"decline {self.decline!r} is not one of the choices")
        shown = [f"show {label}" for label in self.details]
        clash = sorted(set(shown) & set(self.choices))
        if clash:
            raise ValueError(f"choice {clash[0]!r} clashes with a detail of the same name")
        return self


class Ask(Action[AskParams]):
    """Ask the responder to choose; later steps read ``steps.<id>.answer``.

    ```yaml
    - id: decide
      action: ask
      with:
        question: "How do we contain the key?"
        choices: [revoke-grants, disable, none]
        details: {findings: "{{ steps.findings.top | map(attribute='title') | join('; ') }}"}
        decline: none
        decline_warning: "The outside grant stays active: are you sure?"
    ```
    ``details``: texts offered at a terminal as "show <label>" before choosing. ``decline``:
    the choice that acts on nothing; taking it at a terminal asks ``decline_warning`` once
    more (no: the question is asked again); from an answers file it counts as confirmed, and
    the confirmation is journaled either way.
    """

    name = "ask"
    asks = True
    params = AskParams
    outputs = MappingProxyType({"answer": "str", "by": "str"})

    def api_calls(self, params: AskParams) -> list[Call]:
        return []

    def run(self, ctx: ActionContext, params: AskParams) -> Outcome:
        # answered before the run stopped: the answer stands, it is not asked again
        earlier = _answered(ctx, params.question)
        if earlier is not None:
            value, source = str(earlier.answer), earlier.by
        else:
            answer = self._choose(ctx, params)
            value, source = answer.value, answer.source
            ctx.artifacts.journal(
                Decision(
                    question=params.question,
                    answer=answer.value,
                    by=answer.source,
                    reason=answer.reason,
                )
            )
        return Outcome(
            outputs={"answer": value, "by": source},
            summary=f"{params.question} -> {value} ({source})",
        )

    def _choose(self, ctx: ActionContext, params: AskParams) -> Answer:
        """Ask until a choice stands: details shown on request, a decline confirmed."""
        prompter = ctx.prompter
        shown = {f"show {label}": text for label, text in params.details.items()}
        offered = [*params.choices, *shown] if prompter.interactive else params.choices
        while True:
            answer = prompter.ask(ctx.step_id, params.question, offered)
            if answer.value in shown:
                ctx.reporter.notice(f"{answer.value[5:]}: {shown[answer.value]}")
                continue
            if params.decline is None or answer.value != params.decline:
                return answer
            reason: str | None
            if answer.source != "interactive":
                by, confirmed = answer.source, True
                reason = f"the {answer.source}'s {answer.value!r} counts as confirmed"
            else:
                sure = prompter.confirm(f"{ctx.step_id}.decline", params.decline_warning)
                by, reason, confirmed = sure.source, sure.reason, bool(sure.value)
            ctx.artifacts.journal(
                Decision(
                    question=params.decline_warning,
                    answer="confirmed" if confirmed else "declined",
                    by=by,
                    reason=reason,
                )
            )
            if confirmed:
                return answer


def _answered(ctx: ActionContext, question: str) -> Decision | None:
    """The answer to ``question`` an earlier, unfinished attempt journaled (not a decline's
    confirmation, which is journaled before it)."""
    found = ctx.earlier_attempt
    records = [
        r
        for r in (found.recorded if found else ())
        if isinstance(r, Decision) and r.question == question
    ]
    return records[-1] if records else None


class ConfirmParams(Params):
    """What the responder confirms."""

    message: str = Field(min_length=1, max_length=2000)


class Confirm(Action[ConfirmParams]):
    """Stop until the responder confirms; declining ends the run as aborted.

    ```yaml
    - id: legal-hold
      action: confirm
      with: {message: "Legal and the data owner have been informed"}
    ```
    """

    name = "confirm"
    asks = True
    params = ConfirmParams
    outputs = MappingProxyType({"confirmed": "bool"})

    def api_calls(self, params: ConfirmParams) -> list[Call]:
        return []

    def run(self, ctx: ActionContext, params: ConfirmParams) -> Outcome:
        earlier = ctx.earlier_decision()
        if earlier is not None:  # answered before the run stopped: not asked again
            if earlier.answer != "confirmed":
                raise Aborted(f"not confirmed: {params.message[:80]}")
            return Outcome(outputs={"confirmed": True}, summary=f"confirmed: {params.message}")
        answer = ctx.prompter.confirm(ctx.step_id, params.message)
        ctx.artifacts.journal(
            Decision(
                question=params.message,
                answer="confirmed" if answer.value else "declined",
                by=answer.source,
                reason=answer.reason,
            )
        )
        if not answer.value:
            raise Aborted(f"not confirmed: {params.message[:80]}")
        return Outcome(outputs={"confirmed": True}, summary=f"confirmed: {params.message}")


class NoteParams(Params):
    """The note's text."""

    text: str = Field(min_length=1, max_length=20_000)


class Note(Action[NoteParams]):
    """Record a note in the journal and the report (guidance, a finding, a hand-off).

    ```yaml
    - id: rekey
      action: note
      with: {text: "Re-encrypt the affected data under a new key."}
    ```
    """

    name = "note"
    asks = True
    params = NoteParams
    outputs = MappingProxyType({"text": "str"})

    def api_calls(self, params: NoteParams) -> list[Call]:
        return []

    def run(self, ctx: ActionContext, params: NoteParams) -> Outcome:
        if ctx.earlier_note() is None:  # not twice after a resume
            ctx.artifacts.journal(NoteRecord(text=params.text))
        return Outcome(outputs={"text": params.text}, summary=params.text)


class WaitParams(Params):
    """How long to wait: a ``duration`` (``90s``, ``5m``) or ``until`` a time."""

    duration: str | None = None
    until: str | None = None
    reason: str = Field(default="", max_length=500)

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and duration_seconds(value) > MAX_WAIT_SECONDS:
            raise ValueError(f"{value} is longer than a day")
        return value

    @field_validator("until", mode="before")
    @classmethod
    def _until(cls, value: object) -> object:
        return time_parameter(value)

    @model_validator(mode="after")
    def _one_way(self) -> WaitParams:
        if (self.duration is None) == (self.until is None):
            raise ValueError("give exactly one of duration or until")
        return self


class Wait(Action[WaitParams]):
    """Wait for a duration or until a time (propagation, a change window), showing progress.

    ```yaml
    - id: settle
      action: wait
      with: {duration: 5m, reason: "let grant revocation propagate"}
    ```
    A resumed run that stopped during the wait waits again in full for a ``duration``, and
    only for what is left of an ``until``.
    """

    name = "wait"
    params = WaitParams
    outputs = MappingProxyType({"until": "str"})

    def api_calls(self, params: WaitParams) -> list[Call]:
        return []

    def run(self, ctx: ActionContext, params: WaitParams) -> Outcome:
        start = ctx.now()
        end = self._end(start, params)
        total = max((end - start).total_seconds(), 0.0)
        while (left := (end - ctx.now()).total_seconds()) > 0:
            ctx.reporter.progress("waiting (s)", int(total - left), int(total))
            time.sleep(min(left, 1.0))
        why = f" ({params.reason})" if params.reason else ""
        return Outcome(
            outputs={"until": end.isoformat()}, summary=f"waited until {end.isoformat()}{why}"
        )

    @staticmethod
    def _end(start: datetime, params: WaitParams) -> datetime:
        if params.duration is not None:
            return start + timedelta(seconds=duration_seconds(params.duration))
        end = parse_time(str(params.until), start)
        if end - start > timedelta(seconds=MAX_WAIT_SECONDS):
            raise Aborted(f"wait until {params.until}: more than a day away")
        return end

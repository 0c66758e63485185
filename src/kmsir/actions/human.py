"""The human and timing steps: ask a question, confirm before going on, note, wait."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from pydantic import Field, field_validator, model_validator

from kmsir.actions.base import Action, ActionContext, Outcome, Params
from kmsir.errors import Aborted
from kmsir.evidence.calls import Call
from kmsir.evidence.entries import Decision
from kmsir.evidence.entries import Note as NoteRecord
from kmsir.playbook.values import duration_seconds, parse_time, time_parameter

#: The longest a ``wait`` step may wait: a day (longer belongs in a follow-up, not a run).
MAX_WAIT_SECONDS = 86_400


class AskParams(Params):
    """A question and the answers allowed."""

    question: str = Field(min_length=1, max_length=2000)
    choices: list[str] = Field(min_length=2, max_length=50)


class Ask(Action[AskParams]):
    """Ask the responder to choose; later steps read ``steps.<id>.answer``.

    ```yaml
    - id: decide
      action: ask
      with: {question: "How do we contain the key?", choices: [revoke-grants, disable, none]}
    ```
    """

    name = "ask"
    asks = True
    params = AskParams

    def api_calls(self, params: AskParams) -> list[Call]:
        return []

    def run(self, ctx: ActionContext, params: AskParams) -> Outcome:
        # answered before the run stopped: the answer stands, it is not asked again
        earlier = ctx.earlier_decision()
        if earlier is not None:
            value, source = str(earlier.answer), earlier.by
        else:
            answer = ctx.prompter.ask(ctx.step_id, params.question, params.choices)
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

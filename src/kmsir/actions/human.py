"""The human steps: ask a question, confirm before going on, record a note."""

from __future__ import annotations

from pydantic import Field

from kmsir.actions.base import Action, ActionContext, Outcome, Params
from kmsir.errors import Aborted


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
    params = AskParams

    def api_calls(self, params: AskParams) -> list[str]:
        return []

    def run(self, ctx: ActionContext, params: AskParams) -> Outcome:
        # answered before the run stopped: the answer stands, it is not asked again
        earlier = ctx.recorded_before_interruption("decision")
        if earlier is not None:
            value, source = str(earlier.get("answer")), str(earlier.get("by"))
        else:
            answer = ctx.prompter.ask(ctx.step_id, params.question, params.choices)
            value, source = answer.value, answer.source
            ctx.artifacts.journal(
                "decision",
                {
                    "question": params.question,
                    "answer": answer.value,
                    "by": answer.source,
                    "reason": answer.reason,
                },
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
    params = ConfirmParams

    def api_calls(self, params: ConfirmParams) -> list[str]:
        return []

    def run(self, ctx: ActionContext, params: ConfirmParams) -> Outcome:
        earlier = ctx.recorded_before_interruption("decision")
        if earlier is not None:  # answered before the run stopped: not asked again
            if earlier.get("answer") != "confirmed":
                raise Aborted(f"not confirmed: {params.message[:80]}")
            return Outcome(outputs={"confirmed": True}, summary=f"confirmed: {params.message}")
        answer = ctx.prompter.confirm(ctx.step_id, params.message, ())
        ctx.artifacts.journal(
            "decision",
            {
                "question": params.message,
                "answer": "confirmed" if answer.value else "declined",
                "by": answer.source,
                "reason": answer.reason,
            },
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
    params = NoteParams

    def api_calls(self, params: NoteParams) -> list[str]:
        return []

    def run(self, ctx: ActionContext, params: NoteParams) -> Outcome:
        if ctx.recorded_before_interruption("note") is None:  # not twice after a resume
            ctx.artifacts.journal("note", {"text": params.text})
        return Outcome(outputs={"text": params.text}, summary=params.text)

"""How the runner asks a person: the ``Prompter`` protocol and its implementations.

- ``InteractivePrompter``: questionary at a terminal.
- ``ScriptedPrompter``: answers from a mapping (an answers file, a scenario's script);
  anything unanswered goes to a fallback prompter, or fails naming the missing answer.
- ``AutoApprovePrompter``: ``--yes``; approves every confirmation, but never invents an
  answer to a question.

Every answer says who gave it (``source``), so the journal records it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kmsir.errors import Aborted, MissingAnswer, UsageError

APPROVE = ("approve", "approved", "yes", "y", "run", "true")
DECLINE = ("skip", "no", "n", "decline", "declined", "false")


@dataclass(frozen=True)
class Answer:
    """An answer and where it came from (interactive, answers-file, auto-approved...)."""

    value: Any
    source: str
    reason: str | None = None


class Prompter(Protocol):
    """What the engine and human actions need from a person."""

    def ask(self, key: str, question: str, choices: Sequence[str]) -> Answer:
        """Pick one of ``choices``."""
        ...

    def confirm(
        self, key: str, message: str, details: Sequence[str], *, typed: Sequence[str] = ()
    ) -> Answer:
        """Approve (True) or decline (False) a step.

        ``typed``: for irreversible steps, the texts (key id, aliases) one of which the person
        must type to approve.
        """
        ...

    def text(self, key: str, question: str, validate: Callable[[str], str | None]) -> Answer:
        """Free text, checked by ``validate`` (returns a problem or ``None``)."""
        ...


class InteractivePrompter:
    """questionary prompts at a terminal. Ctrl-C at a prompt raises ``KeyboardInterrupt``.

    ``show`` displays the details of a confirmation (the CLI draws them).
    """

    source = "interactive"

    def __init__(self, show: Callable[[str], None]) -> None:
        self._show = show

    @staticmethod
    def _answer(question: Any) -> Any:
        try:
            return question.unsafe_ask()
        except EOFError:
            raise Aborted("no more input (end of file at a prompt)") from None

    def ask(self, key: str, question: str, choices: Sequence[str]) -> Answer:
        import questionary

        value = self._answer(questionary.select(question, choices=list(choices)))
        return Answer(value, self.source)

    def confirm(
        self, key: str, message: str, details: Sequence[str], *, typed: Sequence[str] = ()
    ) -> Answer:
        import questionary

        for line in details:
            self._show(line)
        if typed:
            wanted = " or ".join(repr(t) for t in typed)
            while True:
                value = self._answer(
                    questionary.text(f"{message}\n  Type {wanted} to approve, or 'skip':")
                )
                if value.strip() in typed:
                    return Answer(True, self.source)
                if value.strip().lower() in DECLINE:
                    reason = self._answer(questionary.text("Reason for skipping:"))
                    return Answer(False, self.source, reason or None)
                self._show(f"  That is not {wanted}; try again.")
        approved = bool(self._answer(questionary.confirm(message, default=False)))
        reason = None
        if not approved:
            reason = self._answer(questionary.text("Reason for skipping (optional):")) or None
        return Answer(approved, self.source, reason)

    def text(self, key: str, question: str, validate: Callable[[str], str | None]) -> Answer:
        import questionary

        def check(value: str) -> bool | str:
            problem = validate(value)
            return True if problem is None else problem

        return Answer(self._answer(questionary.text(question, validate=check)), self.source)


class NoPrompter:
    """No one to ask (no TTY, or a scripted run): every question is a clear error."""

    source = "none"

    def _missing(self, key: str, what: str) -> MissingAnswer:
        return MissingAnswer(
            f"no answer for {key!r} ({what}) and no terminal to ask on: "
            f"add '{key}: ...' to the answers file"
        )

    def ask(self, key: str, question: str, choices: Sequence[str]) -> Answer:
        raise self._missing(key, f"question {question[:60]!r}")

    def confirm(
        self, key: str, message: str, details: Sequence[str], *, typed: Sequence[str] = ()
    ) -> Answer:
        raise self._missing(key, "confirmation of a step that changes state")

    def text(self, key: str, question: str, validate: Callable[[str], str | None]) -> Answer:
        raise self._missing(key, f"input {question[:60]!r}")


class ScriptedPrompter:
    """Answers from a mapping (step id or input name -> answer), then a fallback."""

    def __init__(
        self, answers: Mapping[str, Any], *, source: str, fallback: Prompter | None = None
    ) -> None:
        self.answers = dict(answers)
        self.source = source
        self.fallback: Prompter = fallback or NoPrompter()

    def ask(self, key: str, question: str, choices: Sequence[str]) -> Answer:
        if key not in self.answers:
            return self.fallback.ask(key, question, choices)
        value = str(self.answers[key])
        if value not in choices:
            raise UsageError(
                f"answer for {key!r} is {value[:60]!r}, not one of: {', '.join(choices)}"
            )
        return Answer(value, self.source)

    def confirm(
        self, key: str, message: str, details: Sequence[str], *, typed: Sequence[str] = ()
    ) -> Answer:
        if key not in self.answers:
            return self.fallback.confirm(key, message, details, typed=typed)
        value = self.answers[key]
        text = str(value).strip().lower() if not isinstance(value, bool) else str(value).lower()
        if text in APPROVE or str(value).strip() in typed:
            return Answer(True, self.source)
        if text in DECLINE:
            return Answer(False, self.source, f"declined by the {self.source}")
        if text == "abort":
            raise Aborted(f"step {key!r}: aborted by the {self.source}")
        raise UsageError(f"answer for {key!r} is {str(value)[:60]!r}: use approve, skip or abort")

    def text(self, key: str, question: str, validate: Callable[[str], str | None]) -> Answer:
        if key not in self.answers:
            return self.fallback.text(key, question, validate)
        value = str(self.answers[key])
        problem = validate(value)
        if problem:
            raise UsageError(f"answer for {key!r}: {problem}")
        return Answer(value, self.source)


class AutoApprovePrompter:
    """``--yes``: approves every confirmation; questions go to the fallback."""

    source = "auto-approved"

    def __init__(self, fallback: Prompter) -> None:
        self.fallback = fallback

    def ask(self, key: str, question: str, choices: Sequence[str]) -> Answer:
        return self.fallback.ask(key, question, choices)

    def confirm(
        self, key: str, message: str, details: Sequence[str], *, typed: Sequence[str] = ()
    ) -> Answer:
        return Answer(True, self.source)

    def text(self, key: str, question: str, validate: Callable[[str], str | None]) -> Answer:
        return self.fallback.text(key, question, validate)

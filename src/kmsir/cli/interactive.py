"""The terminal's prompter: questionary menus and questions, for a person at a TTY.

Before each step it shows what the step will do (the panel ``console.show_preview`` draws)
and offers run, skip (with a reason), note, details and abort. It satisfies
``kmsir.prompts.Prompter``; the prompters that need no terminal live there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from kmsir.errors import Aborted
from kmsir.inert import visible
from kmsir.prompts import Answer, NoteTaker, StepPreview


class InteractivePrompter:
    """questionary prompts at a terminal. Ctrl-C at a prompt raises ``KeyboardInterrupt``.

    ``show_preview`` draws the panel before a step and ``show`` a line (the CLI draws both).
    """

    source = "interactive"
    interactive = True

    def __init__(
        self,
        show: Callable[[str], None],
        show_preview: Callable[[StepPreview], None],
        before_prompt: Callable[[], None] | None = None,
    ) -> None:
        self._show = show
        self._show_preview = show_preview
        self._before_prompt = before_prompt

    def _answer(self, question: Any) -> Any:
        if self._before_prompt is not None:
            self._before_prompt()  # a progress display would garble the prompt
        try:
            return question.unsafe_ask()
        except EOFError:
            raise Aborted("no more input (end of file at a prompt)") from None

    def has_answer(self, key: str) -> bool:
        return False

    def ask(self, key: str, question: str, choices: Sequence[str]) -> Answer:
        import questionary
        from questionary import Choice

        # a question or choice may carry text from AWS: shown inert, answered with the raw value
        menu = [Choice(visible(str(c)), value=c) for c in choices]
        value = self._answer(questionary.select(visible(question), choices=menu))
        return Answer(value, self.source)

    def before_step(self, preview: StepPreview, note: NoteTaker) -> Answer | None:
        import questionary
        from questionary import Choice

        self._show_preview(preview)
        run = "Run it" + (" (you will type the key id to confirm)" if preview.typed else "")
        menu = [
            Choice(run, value="run"),
            Choice("Skip it (give a reason)", value="skip"),
            Choice("Add a note to the record", value="note"),
            Choice("Show details", value="details"),
            Choice("Abort the run (the evidence is kept)", value="abort"),
        ]
        while True:
            choice = self._answer(questionary.select(f"Step {preview.step_id}:", choices=menu))
            if choice == "run" and (not preview.typed or self._typed(preview)):
                return Answer("run", self.source)
            if choice == "skip":
                reason = self._answer(
                    questionary.text(
                        "Why skip it?", validate=lambda v: bool(v.strip()) or "a reason, please"
                    )
                )
                return Answer("skip", self.source, reason.strip())
            if choice == "note":
                text = self._answer(questionary.text("Note:")).strip()
                if text:
                    note(text, self.source)
                    self._show("  noted.")
            if choice == "details":
                for line in preview.details or ("  (nothing more to show)",):
                    self._show(line)
            if choice == "abort":
                return Answer("abort", self.source)

    def _typed(self, preview: StepPreview) -> bool:
        """Ask for one of ``preview.typed`` until it comes; an empty entry goes back to the
        menu."""
        import questionary

        typed = preview.typed
        wanted = visible(" or ".join(repr(t) for t in typed))
        stakes = (
            "This cannot be undone."
            if preview.inverse == "IRREVERSIBLE"
            else f"High impact (undo: {preview.inverse})."
        )
        while True:
            value = self._answer(questionary.text(f"{stakes} Type {wanted} (empty: back):")).strip()
            if not value:
                return False
            if value in typed:
                return True
            self._show(f"  {value[:80]!r} is not {wanted}; try again.")

    def confirm(self, key: str, message: str) -> Answer:
        import questionary

        approved = bool(self._answer(questionary.confirm(visible(message), default=False)))
        reason = None
        if not approved:
            reason = self._answer(questionary.text("Reason for skipping (optional):")) or None
        return Answer(approved, self.source, reason)

    def yes_no(self, question: str) -> bool:
        """A plain yes or no (default no), with nothing asked after a no."""
        import questionary

        return bool(self._answer(questionary.confirm(visible(question), default=False)))

    def text(self, key: str, question: str, validate: Callable[[str], str | None]) -> Answer:
        import questionary

        def check(value: str) -> bool | str:
            problem = validate(value)
            return True if problem is None else visible(problem)

        return Answer(
            self._answer(questionary.text(visible(question), validate=check)), self.source
        )

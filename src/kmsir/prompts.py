"""How the runner asks a person: the ``Prompter`` protocol and its implementations.

- ``InteractivePrompter``: questionary at a terminal; before each step it shows what the
  step will do and offers run, skip (with a reason), note, details and abort.
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
from kmsir.inert import visible

APPROVE = ("approve", "approved", "yes", "y", "run", "true")
DECLINE = ("skip", "no", "n", "decline", "declined", "false")


@dataclass(frozen=True)
class Answer:
    """An answer and where it came from (interactive, answers-file, auto-approved...)."""

    value: Any
    source: str
    reason: str | None = None


@dataclass(frozen=True)
class StepPreview:
    """What the person sees before a step runs."""

    step_id: str
    title: str
    action: str
    phase: str | None
    #: "3/9": where the step is in the playbook.
    position: str
    #: One line: what the action does.
    does: str
    mutating: bool
    #: The exact API calls, rendered (for a read-only step: the operations it uses).
    calls: tuple[str, ...]
    target: str | None = None
    #: The live state of the target, read just now (mutating steps).
    state: str | None = None
    #: What undoes the step: an action, "IRREVERSIBLE" or "none needed".
    inverse: str | None = None
    notes: tuple[str, ...] = ()
    #: For irreversible steps: the key id and aliases, one of which must be typed to run it.
    typed: tuple[str, ...] = ()
    #: More on request: the rendered parameters, the IAM permissions.
    details: tuple[str, ...] = ()


#: Journals a note added at a step's preview: ``(text, who)``.
NoteTaker = Callable[[str, str], None]


class Prompter(Protocol):
    """What the engine and human actions need from a person."""

    @property
    def interactive(self) -> bool:
        """True when a person at a terminal answers what nothing else answered."""
        ...

    def has_answer(self, key: str) -> bool:
        """True when ``key`` is answered without asking anyone (an answers file)."""
        ...

    def before_step(self, preview: StepPreview, note: NoteTaker) -> Answer | None:
        """Run (``"run"``), skip (``"skip"``, with a reason) or abort (``"abort"``) a step.

        ``note(text, source)`` journals a note added meanwhile, saying who added it.
        ``None``: there is nobody to ask and the step changes nothing, so it runs. A step
        that changes something with no one to approve it raises ``MissingAnswer``.
        """
        ...

    def ask(self, key: str, question: str, choices: Sequence[str]) -> Answer:
        """Pick one of ``choices``."""
        ...

    def confirm(self, key: str, message: str) -> Answer:
        """Confirm (True) or decline (False) ``message`` (a ``confirm`` step)."""
        ...

    def text(self, key: str, question: str, validate: Callable[[str], str | None]) -> Answer:
        """Free text, checked by ``validate`` (returns a problem or ``None``)."""
        ...


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

    def text(self, key: str, question: str, validate: Callable[[str], str | None]) -> Answer:
        import questionary

        def check(value: str) -> bool | str:
            problem = validate(value)
            return True if problem is None else visible(problem)

        return Answer(
            self._answer(questionary.text(visible(question), validate=check)), self.source
        )


class NoPrompter:
    """No one to ask (no TTY, or a scripted run): every question is a clear error."""

    source = "none"
    interactive = False

    def _missing(self, key: str, what: str) -> MissingAnswer:
        return MissingAnswer(
            f"no answer for {key!r} ({what}) and no terminal to ask on: "
            f"add '{key}: ...' to the answers file"
        )

    def has_answer(self, key: str) -> bool:
        return False

    def ask(self, key: str, question: str, choices: Sequence[str]) -> Answer:
        raise self._missing(key, f"question {question[:60]!r}")

    def before_step(self, preview: StepPreview, note: NoteTaker) -> Answer | None:
        if not preview.mutating:
            return None
        raise self._missing(preview.step_id, "approval of a step that changes state")

    def confirm(self, key: str, message: str) -> Answer:
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
        self._noted: set[str] = set()

    @property
    def interactive(self) -> bool:
        return self.fallback.interactive

    def has_answer(self, key: str) -> bool:
        return key in self.answers or self.fallback.has_answer(key)

    def before_step(self, preview: StepPreview, note: NoteTaker) -> Answer | None:
        key = preview.step_id
        if key not in self.answers:
            return self.fallback.before_step(preview, note)
        value = self.answers[key]
        reason = None
        if isinstance(value, Mapping):  # {decision: skip, reason: ..., note: ...}
            unknown = sorted(str(k) for k in value if k not in ("decision", "reason", "note"))
            if unknown or "decision" not in value:
                raise UsageError(
                    f"answer for {key!r}: "
                    + (f"unknown key {unknown[0]!r}; " if unknown else "no 'decision'; ")
                    + "write {decision: run|skip|abort, reason: ..., note: ...}"
                )
            if value.get("note") and key not in self._noted:
                self._noted.add(key)  # once, however often the step is asked
                note(str(value["note"]), self.source)
            reason = value.get("reason")
            value = value["decision"]
        text = str(value).strip().lower() if not isinstance(value, bool) else str(value).lower()
        if text in APPROVE or str(value).strip() in preview.typed:
            return Answer("run", self.source)
        if text in DECLINE:
            return Answer("skip", self.source, str(reason or f"declined by the {self.source}"))
        if text == "abort":
            return Answer("abort", self.source, str(reason) if reason else None)
        raise UsageError(f"answer for {key!r} is {str(value)[:60]!r}: use run, skip or abort")

    def ask(self, key: str, question: str, choices: Sequence[str]) -> Answer:
        if key not in self.answers:
            return self.fallback.ask(key, question, choices)
        value = str(self.answers[key])
        if value not in choices:
            raise UsageError(
                f"answer for {key!r} is {value[:60]!r}, not one of: {', '.join(choices)}"
            )
        return Answer(value, self.source)

    def confirm(self, key: str, message: str) -> Answer:
        if key not in self.answers:
            return self.fallback.confirm(key, message)
        value = self.answers[key]
        text = str(value).strip().lower() if not isinstance(value, bool) else str(value).lower()
        if text in APPROVE:
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
    #: ``--yes`` runs without asking: a failed step is not offered for retry either.
    interactive = False

    def __init__(self, fallback: Prompter) -> None:
        self.fallback = fallback

    def has_answer(self, key: str) -> bool:
        return self.fallback.has_answer(key)

    def before_step(self, preview: StepPreview, note: NoteTaker) -> Answer | None:
        return Answer("run", self.source) if preview.mutating else None

    def ask(self, key: str, question: str, choices: Sequence[str]) -> Answer:
        return self.fallback.ask(key, question, choices)

    def confirm(self, key: str, message: str) -> Answer:
        return Answer(True, self.source)

    def text(self, key: str, question: str, validate: Callable[[str], str | None]) -> Answer:
        return self.fallback.text(key, question, validate)

"""How the runner asks a person: the ``Prompter`` protocol, the prompters that need no
terminal, and asking for a playbook's inputs.

- ``ScriptedPrompter``: answers from a mapping (an answers file, a scenario's script);
  anything unanswered goes to a fallback prompter, or fails naming the missing answer.
- ``AutoApprovePrompter``: ``--yes``; approves every confirmation, but never invents an
  answer to a question.
- ``NoPrompter``: nobody to ask; every question is an error naming the missing answer.

The terminal's own prompter (questionary) is the CLI's: ``kmsir.cli.interactive``. Every
answer says who gave it (``source``), so the journal records it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from kmsir.errors import Aborted, MissingAnswer, UsageError
from kmsir.evidence.calls import Call
from kmsir.evidence.journal import ITERATION

if TYPE_CHECKING:
    from kmsir.playbook.inputs import InputSpec

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
    #: The exact API calls (for a read-only step: the operations it uses), each shown with
    #: ``evidence.calls.describe``.
    calls: tuple[Call, ...]
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
    #: Who and what loses access if it runs (the run's blast radius of the key), if known.
    impact: str | None = None


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
        return self._key(key) in self.answers or self.fallback.has_answer(key)

    def _key(self, key: str) -> str:
        """The answer's key: an iteration of a ``for_each`` step (``contain[2]``, or its
        checklist item ``hand-off[2].1``) without an answer of its own takes the step's
        (``contain``, ``hand-off.1``)."""
        if key not in self.answers:
            # the iteration id, then what a step asks under its id (``.1``: a checklist item)
            looped = ITERATION.match(key)
            step = looped.group(1) + key[looped.end() :] if looped is not None else None
            if step is not None and step in self.answers:
                return step
        return key

    def before_step(self, preview: StepPreview, note: NoteTaker) -> Answer | None:
        key = self._key(preview.step_id)
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
        key = self._key(key)
        if key not in self.answers:
            return self.fallback.ask(key, question, choices)
        value = str(self.answers[key])
        if value not in choices:
            raise UsageError(
                f"answer for {key!r} is {value[:60]!r}, not one of: {', '.join(choices)}"
            )
        return Answer(value, self.source)

    def confirm(self, key: str, message: str) -> Answer:
        key = self._key(key)
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
        key = self._key(key)
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


# --- inputs -----------------------------------------------------------------------------


def ask_input(prompter: Prompter, key: str, name: str, spec: InputSpec, question: str) -> Answer:
    """Ask a person for input ``name``: a pick list for a choice, else text checked against
    the input's type (``key`` names the answer in an answers file)."""
    from kmsir.playbook.inputs import coerce_input

    if spec.type == "choice" and spec.choices:
        return prompter.ask(key, question, list(spec.choices))

    def validate(value: str) -> str | None:
        try:
            coerce_input(name, spec, value)
        except UsageError as exc:
            return str(exc)
        return None

    return prompter.text(key, question, validate)


def ask_missing_inputs(
    prompter: Prompter, specs: Mapping[str, InputSpec], given: Mapping[str, Any]
) -> dict[str, Any]:
    """``given`` and an answer for each required input neither given nor defaulted (an answers
    file, or a person), each checked against its type."""
    values = dict(given)
    for name, spec in specs.items():
        if name in values or not spec.required or spec.default is not None:
            continue
        question = f"{name} ({spec.type}): {spec.description}".rstrip(": ")
        values[name] = ask_input(prompter, name, name, spec, question).value
    return values

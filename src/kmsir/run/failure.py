"""After a step failed: its ``on_error`` and, when it asks, the person's answer.

``continue`` goes on; ``stop`` stops (asking only a person at a terminal, or an answers file
that has an answer); ``ask`` offers retry, skip, abort, or editing an input and retrying.
Every answer is journaled; a scripted retry is followed a bounded number of times, since an
answers file answers the same way every time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from kmsir.errors import Aborted
from kmsir.evidence.entries import Decision, InputChanged
from kmsir.evidence.journal import BundleWriter
from kmsir.playbook.model import InputSpec, Step, coerce_input
from kmsir.prompts import Prompter, ask_input

#: How often an answers file's "retry" (or "edit-input") is followed for one step.
SCRIPTED_RETRIES = 3
Choice = Literal["retry", "skip", "stop"]


class FailurePolicy:
    """What happens after a step fails, for one run."""

    def __init__(
        self, *, prompter: Prompter, bundle: BundleWriter, inputs: Mapping[str, InputSpec]
    ) -> None:
        self.prompter, self.bundle, self.inputs = prompter, bundle, inputs
        self._scripted_retries: dict[str, int] = {}

    def after(self, step: Step, message: str, context: dict[str, Any]) -> Choice:
        """``stop`` (the failure stands), ``retry`` or ``skip``; ``Aborted`` on abort."""
        if step.on_error == "continue" or (
            step.on_error == "stop"
            and not self.prompter.interactive
            and not self.prompter.has_answer(f"{step.id}.on-error")
        ):
            return "stop"
        choice = self._ask(step, message, context)
        if choice == "abort":
            raise Aborted(f"aborted after step '{step.id}' failed") from None
        return "skip" if choice == "skip" else "retry"

    def _ask(self, step: Step, message: str, context: dict[str, Any]) -> str:
        """Ask what to do about a failed step: retry, skip, abort, or edit an input and retry."""
        choices = ["retry", "skip", "abort"] + (["edit-input"] if self.inputs else [])
        choice = self.prompter.ask(f"{step.id}.on-error", f"{message}\nWhat now?", choices)
        self.bundle.append(
            Decision(
                question="on error", answer=choice.value, by=choice.source, reason=choice.reason
            ),
            step=step.id,
        )
        if choice.value in ("retry", "edit-input") and choice.source != "interactive":
            # a scripted answer is the same every time: it must not retry for ever
            self._scripted_retries[step.id] = tries = self._scripted_retries.get(step.id, 0) + 1
            if tries > SCRIPTED_RETRIES:
                raise Aborted(
                    f"step '{step.id}' still fails after {SCRIPTED_RETRIES} retries answered "
                    f"by the {choice.source}"
                )
        if choice.value == "edit-input":
            self._edit_input(step, context)
            return "retry"
        return str(choice.value)

    def _edit_input(self, step: Step, context: dict[str, Any]) -> None:
        """Ask which input to correct and its new value; journal the change."""
        names = list(self.inputs)
        name = (
            names[0]
            if len(names) == 1
            else str(self.prompter.ask(f"{step.id}.input", "Which input?", names).value)
        )
        spec = self.inputs[name]
        current = context["inputs"].get(name)
        question = f"New value for {name} ({spec.type}; now {current!r}):"
        given = ask_input(self.prompter, f"{step.id}.{name}", name, spec, question)
        value = coerce_input(name, spec, given.value)
        context["inputs"][name] = value
        self.bundle.append(
            InputChanged(name=name, from_=current, to=value, by=given.source), step=step.id
        )

"""A recorded team's answers as a prompter: what a replay asks is answered from the journal.

Each question a run asks is answered by the decision the recorded run journaled for the same
step, in journal order: an approval (``run <action>``: approved, skipped, aborted) before a
step, an ``ask`` step's choice (matched by its question, else the first recorded answer among
the choices), a confirmation, an ``on error`` choice, a checklist item's tick and its reason,
an input corrected after a failure. A question the recorded run never answered is a
``MissingAnswer``: the replay stops there, and the comparison says so. Each answer's source is
``replay of <who answered then>``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from kmsir.errors import MissingAnswer
from kmsir.evidence.entries import Decision
from kmsir.evidence.view import RunView
from kmsir.prompts import Answer, NoteTaker, StepPreview

_VERDICTS = {"approved": "run", "skipped": "skip", "aborted": "abort"}


def decisions(view: RunView) -> list[tuple[str | None, Decision]]:
    """Every decision ``view``'s journal records, with its step, in journal order."""
    return [(m.step, m.record) for m in view.timeline if isinstance(m.record, Decision)]


def _approval(decision: Decision) -> bool:
    return decision.question.startswith("run ")


class RecordedPrompter:
    """Answers from a recorded run's decisions (see the module's docstring)."""

    interactive = False

    def __init__(self, view: RunView) -> None:
        self._queues: dict[str, list[Decision]] = {}
        for step, decision in decisions(view):
            if step is not None:
                self._queues.setdefault(step, []).append(decision)
        self._last: dict[str, Decision] = {}
        self._inputs: dict[str, list[tuple[str, Any]]] = {}  # step -> (input, new value)
        for change in view.input_changes:
            corrected = (str(change.get("name")), change.get("to"))
            self._inputs.setdefault(str(change.get("step")), []).append(corrected)

    def has_answer(self, key: str) -> bool:
        step, _, rest = key.partition(".")
        queue = self._queues.get(step, [])
        if rest == "on-error":
            return any(d.question == "on error" for d in queue)
        return bool(queue)

    def _take(self, key: str, *accepts: Callable[[Decision], bool]) -> Decision:
        """The first recorded decision of ``key``'s step the first test that finds one
        accepts; taken off the queue."""
        step = key.partition(".")[0]
        queue = self._queues.get(step, [])
        for accept in accepts:
            for n, decision in enumerate(queue):
                if accept(decision):
                    del queue[n]
                    self._last[step] = decision
                    return decision
        raise MissingAnswer(f"replay: the recorded run has no answer for {key!r}")

    @staticmethod
    def _source(decision: Decision) -> str:
        return f"replay of {decision.by}"

    def before_step(self, preview: StepPreview, note: NoteTaker) -> Answer | None:
        queue = self._queues.get(preview.step_id, [])
        if not any(_approval(d) for d in queue):
            if not preview.mutating:
                return None  # nobody was asked then either
            raise MissingAnswer(f"replay: the recorded run never approved {preview.step_id!r}")
        decision = self._take(preview.step_id, _approval)
        verdict = _VERDICTS.get(str(decision.answer), "abort")
        return Answer(verdict, self._source(decision), decision.reason)

    def ask(self, key: str, question: str, choices: Sequence[str]) -> Answer:
        step = key.partition(".")[0]
        if key.endswith(".input") and self._inputs.get(step):  # which input was corrected
            return Answer(self._inputs[step][0][0], "replay")
        asked = "on error" if key.endswith(".on-error") else question
        decision = self._take(
            key,
            lambda d: d.question == asked and d.answer in choices,
            lambda d: not _approval(d) and d.question != "on error" and d.answer in choices,
        )
        return Answer(decision.answer, self._source(decision), decision.reason)

    def confirm(self, key: str, message: str) -> Answer:
        decision = self._take(
            key,
            lambda d: d.question == message and d.answer in ("confirmed", "declined"),
            lambda d: d.answer in ("confirmed", "declined"),
        )
        return Answer(decision.answer == "confirmed", self._source(decision), decision.reason)

    def text(self, key: str, question: str, validate: Callable[[str], str | None]) -> Answer:
        step = key.partition(".")[0]
        if key.endswith(".reason") and step in self._last:  # a checklist item's why
            last = self._last[step]
            return Answer(str(last.reason or ""), self._source(last))
        changes = self._inputs.get(step)
        if changes:  # an input corrected after a failure
            return Answer(str(changes.pop(0)[1]), "replay")
        raise MissingAnswer(f"replay: the recorded run has no answer for {key!r}")

"""Where an interrupted run stands, rebuilt from its journal alone.

``load`` reads a bundle's journal and tells, for each step of the playbook that ran, whether
it is done (succeeded, skipped, or failed and passed over), was in flight when the run stopped
(started with no outcome: a mutating step there is re-checked against live state, never
blindly re-sent), or has a decision already made. The engine continues from the first step
that is not done; nothing that already ran is rendered or run again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kmsir.errors import TamperedError, UsageError
from kmsir.evidence import bundle as evidence
from kmsir.evidence import integrity
from kmsir.evidence import journal as writer

_OUTCOMES = ("step-succeeded", "step-skipped", "step-failed")
_ATTEMPT = re.compile(r"^artifacts/\d+-[^/.]+(?:\.(\d+))?/")


@dataclass
class StepState:
    """One step as the journal leaves it.

    What an unfinished attempt did (calls sent, the state recorded before changing it, notes
    and answers) is carried over failed and interrupted attempts until the step succeeds or
    is skipped, so a later attempt knows what an earlier one already changed or was told.
    """

    step_id: str
    outcome: dict[str, Any] | None = None  # the last step-succeeded/-skipped/-failed entry
    started: bool = False  # a step-started after the last outcome: in flight
    decision: dict[str, Any] | None = None  # the last "run ..." approval
    on_error: str | None = None  # the answer to "on error" after the last failure
    sent: list[dict[str, Any]] = field(default_factory=list)  # changing calls not refused
    before: dict[str, Any] | None = None  # the state recorded before the first change
    recorded: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # notes, answers
    attempts: int = 0  # the highest artifact attempt folder used

    def done(self, on_error: str = "abort") -> bool:
        """True when resume must not run the step again (``on_error``: the step's setting)."""
        if self.started or self.outcome is None:
            return False
        if self.outcome["type"] == "step-failed":
            if self.outcome["data"].get("stopped_run"):
                return False  # its evidence could not be kept: it runs again
            return on_error == "continue" or self.skip_pending
        return True

    @property
    def skip_pending(self) -> bool:
        """The responder chose to skip the failed step; the run stopped before recording it."""
        return (
            not self.started
            and self.outcome is not None
            and self.outcome["type"] == "step-failed"
            and self.on_error == "skip"
        )

    @property
    def in_flight(self) -> bool:
        """True when the step started and the run stopped before its outcome."""
        return self.started

    @property
    def unfinished_work(self) -> bool:
        """True when an earlier attempt sent a change, recorded a state or an answer."""
        return self.started or bool(self.sent or self.before or self.recorded)


@dataclass
class RunState:
    """An interrupted or failed run, ready to continue."""

    root: Path
    meta: dict[str, Any]
    entries: list[dict[str, Any]]
    steps: dict[str, StepState]
    torn_tail: str | None

    @property
    def finished(self) -> dict[str, Any] | None:
        """The run-finished entry ending the run, if any."""
        return evidence.finished_entry(self.entries)

    @property
    def succeeded(self) -> bool:
        """True when the run finished and every step's work is done."""
        finished = self.finished
        return finished is not None and finished["data"].get("status") == "succeeded"

    def context_steps(self) -> dict[str, dict[str, Any]]:
        """``steps.<id>`` for the template context, as the original run had it."""
        found: dict[str, dict[str, Any]] = {}
        for state in self.steps.values():
            outcome = state.outcome
            if not state.started and outcome is not None and outcome["type"] == "step-succeeded":
                data = outcome["data"]
                found[state.step_id] = {**(data.get("outputs") or {}), "status": data["status"]}
        return found


def load(root: Path) -> RunState:
    """Read the bundle at ``root`` and rebuild where its run stands.

    Refuses (``TamperedError``) a bundle that fails verification for any reason other than
    what an interrupted run leaves behind: resume never builds on altered evidence.
    """
    if not (root / evidence.JOURNAL).is_file():
        raise UsageError(f"{root}: not an evidence bundle (no {evidence.JOURNAL})")
    writer.ensure_idle(root)
    checked = integrity.check(root)
    problems = [p for p in checked.problems if p != checked.torn_tail]
    if problems:
        raise TamperedError(
            [f"not resumed (altered evidence is never built on): {p}" for p in problems]
        )
    entries = checked.entries
    started = next((e for e in entries if e["type"] == "run-started"), None)
    if started is None:
        raise UsageError(
            f"{root}: the run stopped while writing its first journal line; there is nothing "
            "to resume (start it again with kmsir run)"
        )
    return RunState(root, started["data"], entries, step_states(entries), checked.torn_tail)


def step_states(entries: list[dict[str, Any]]) -> dict[str, StepState]:
    """Each step's state after the journal ``entries``."""
    steps: dict[str, StepState] = {}
    sent = {id(e) for e in evidence.sent_intents(entries)}  # AWS refused the others
    for entry in entries:
        type_, data, step_id = entry["type"], entry["data"], entry.get("step")
        if step_id is None:
            continue
        state = steps.setdefault(step_id, StepState(step_id))
        if type_ in _OUTCOMES:
            state.outcome, state.started, state.on_error = entry, False, None
            if type_ != "step-failed":  # done: nothing carries over to a later run of it
                state.sent, state.before, state.recorded, state.decision = [], None, [], None
        elif type_ == "step-started":
            state.started = True
        elif type_ == "decision" and str(data.get("question", "")).startswith("run "):
            # an abort stopped the run before the step: on resume it is asked afresh
            state.decision = entry if data.get("answer") != "aborted" else None
        elif type_ == "decision" and data.get("question") == "on error":
            state.on_error = str(data.get("answer"))
        elif type_ in ("decision", "note"):
            state.recorded.append((type_, data))
        elif type_ == "api-intent" and id(entry) in sent:
            state.sent.append(data)
        elif type_ == "before-change" and state.before is None:
            state.before = data.get("before")
        elif type_ == "artifact-intent":
            match = _ATTEMPT.match(str(data.get("path", "")))
            attempt = int(match[1]) if match and match[1] else 1
            state.attempts = max(state.attempts, attempt)
    return steps

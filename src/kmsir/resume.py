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

from kmsir import evidence, integrity
from kmsir.errors import TamperedError, UsageError

_OUTCOMES = ("step-succeeded", "step-skipped", "step-failed")
_ATTEMPT = re.compile(r"^artifacts/\d+-[^/.]+(?:\.(\d+))?/")


@dataclass
class StepState:
    """One step as the journal leaves it."""

    step_id: str
    outcome: dict[str, Any] | None = None  # the last step-succeeded/-skipped/-failed entry
    started: bool = False  # a step-started after the last outcome: in flight
    decision: dict[str, Any] | None = None  # "run ..." decision after the last outcome
    sent: list[dict[str, Any]] = field(default_factory=list)  # mutating calls in flight
    before: dict[str, Any] | None = None  # the state recorded before the first change
    recorded: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # notes, answers
    attempts: int = 0  # the highest artifact attempt folder used
    passed_over: bool = False  # the run went on to other steps after the last outcome

    @property
    def done(self) -> bool:
        """True when resume must not run the step again."""
        if self.started or self.outcome is None:
            return False
        if self.outcome["type"] == "step-failed":
            return self.passed_over
        return True

    @property
    def in_flight(self) -> bool:
        """True when the step started and the run stopped before its outcome."""
        return self.started


@dataclass
class RunState:
    """An interrupted or failed run, ready to continue."""

    root: Path
    meta: dict[str, Any]
    entries: list[dict[str, Any]]
    steps: dict[str, StepState]
    torn_tail: bool

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
            if state.done and outcome is not None and outcome["type"] == "step-succeeded":
                data = outcome["data"]
                found[state.step_id] = {**(data.get("outputs") or {}), "status": data["status"]}
        return found


def load(root: Path) -> RunState:
    """Read the bundle at ``root`` and rebuild where its run stands.

    Refuses (``TamperedError``) a bundle that fails verification for any reason other than
    what an interrupted run leaves behind: resume never builds on altered evidence.
    """
    checked = integrity.check(root)
    problems = [p for p in checked.problems if "torn tail" not in p]
    if problems:
        raise TamperedError(
            [f"not resumed (altered evidence is never built on): {p}" for p in problems]
        )
    entries = checked.entries
    started = next((e for e in entries if e["type"] == "run-started"), None)
    if started is None:
        raise UsageError(f"{root}: the journal has no run-started entry")
    return RunState(root, started["data"], entries, _steps(entries), checked.torn_tail)


def _steps(entries: list[dict[str, Any]]) -> dict[str, StepState]:
    steps: dict[str, StepState] = {}
    for entry in entries:
        step_id = entry.get("step")
        if step_id is None:
            continue
        for other in steps.values():
            if other.step_id != step_id and other.outcome is not None and not other.started:
                other.passed_over = True
        state = steps.setdefault(step_id, StepState(step_id))
        type_, data = entry["type"], entry["data"]
        if type_ in _OUTCOMES:
            state.outcome, state.started, state.decision = entry, False, None
            state.sent, state.before, state.recorded = [], None, []
            state.passed_over = False
        elif type_ == "step-started":
            state.started = True
            state.sent, state.before, state.recorded = [], None, []
        elif type_ in ("decision", "note") and state.started:
            state.recorded.append((type_, data))
        elif type_ == "decision" and str(data.get("question", "")).startswith("run "):
            state.decision = entry
        elif type_ == "api-intent" and state.started:
            state.sent.append(data)
        elif type_ == "before-change" and state.started and state.before is None:
            state.before = data.get("before")
        elif type_ == "artifact-intent":
            match = _ATTEMPT.match(str(data.get("path", "")))
            attempt = int(match[1]) if match and match[1] else 1
            state.attempts = max(state.attempts, attempt)
    return steps

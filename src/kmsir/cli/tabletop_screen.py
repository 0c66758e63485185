"""The facilitator's screen, as lines: what ``kmsir tabletop facilitator`` prints of the
exercise (``exercise.facilitator_view``) as it goes, and its ``status``. Every line is made
inert first: journal and scenario text is untrusted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from kmsir.inert import one_line

Json = dict[str, Any]


def _hms(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    whole = max(0, int(seconds))
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _clock(at: Any) -> str:
    text = str(at or "")
    return text[11:19] if len(text) >= 19 and text[10] == "T" else text


def _expected(decision: Json) -> str:
    wanted = [str(decision.get("expected") or "")] + [
        str(a) for a in decision.get("alternatives") or []
    ]
    return " / ".join(w for w in wanted if w) or "(not scored)"


def event_line(item: Json) -> str:
    """One timeline item as one inert line."""
    step = f" {item['step']}" if item.get("step") else ""
    return one_line(
        f"{_clock(item.get('at'))} {item.get('kind', '')}{step}: {item.get('text', '')}"
    )


def decision_line(decision: Json) -> str:
    """A team's decision against the expected one, with its time, as one inert line."""
    made = (
        f"{decision['answer']} (by {decision.get('by')}, {_hms(decision.get('seconds'))})"
        if decision.get("answer") is not None
        else "-"
    )
    late = " LATE" if decision.get("late") else ""
    return one_line(
        f"  decision {decision.get('step')}: {made}; expected {_expected(decision)}"
        f" -> {str(decision.get('verdict', '')).upper()}{late}"
    )


def _score(view: Json) -> str:
    score = view.get("score")
    if isinstance(score, dict):
        return f"{score.get('total')}/{score.get('out_of', 100)}"
    return str(score) if score is not None else "-"


def _where(view: Json) -> list[str]:
    """The scenario, the team, its run and where it is."""
    scenario = view.get("scenario") or {}
    return [
        f"{scenario.get('title') or scenario.get('id')} · team {view.get('team') or '-'} · run "
        f"{view.get('run_id')} · {view.get('status')} · clock {_hms(view.get('clock_seconds'))}",
        f"now at: {view.get('current_step') or '-'}",
    ]


def _upcoming(view: Json) -> list[str]:
    """The injects still to come, one line each."""
    lines = []
    for inject in view.get("next_injects") or []:
        when = (
            f"after {inject['after']}"
            if inject.get("after")
            else f"at {inject.get('after_minutes')} min"
        )
        due = inject.get("due_in_seconds")
        lines.append(
            f"  #{inject.get('index')} {inject.get('title') or inject.get('say')} ({when}"
            + (f", due in {_hms(due)}" if isinstance(due, (int, float)) else "")
            + (", HELD" if inject.get("held") else "")
            + ")"
        )
    return lines or ["  none left"]


def _inert(lines: list[str]) -> list[str]:
    """One inert line each (journal and scenario text is untrusted), indentation kept."""
    return [line[: len(line) - len(line.lstrip())] + one_line(line.lstrip()) for line in lines]


def attach_lines(view: Json) -> list[str]:
    """What the facilitator sees first when attaching, before any event: the scenario, the
    team and where it is, the injects to come (``status`` shows the whole view)."""
    return _inert([*_where(view), "next injects:", *_upcoming(view)])


def status_lines(view: Json) -> list[str]:
    """The whole facilitator view, for ``status``."""
    lines = [*_where(view), "ground truth:"]
    truth = view.get("ground_truth") or {}
    for name in ("summary", "key", "principal", "grant", "access_key"):
        if truth.get(name):
            lines.append(f"  {name}: {truth[name]}")
    lines += [f"  {m.get('at')}: {m.get('what')}" for m in truth.get("timeline") or []]
    decisions = view.get("decisions") or []
    scored = [d for d in decisions if d.get("expected") is not None]
    lines.append("decisions:")
    lines += [decision_line(d) for d in scored] or ["  none expected"]
    if len(decisions) > len(scored):
        lines.append(f"  and {len(decisions) - len(scored)} not scored (step approvals)")
    lines += ["next injects:", *_upcoming(view)]
    unseen = [e.get("what") for e in view.get("evidence") or [] if not e.get("seen")]
    lines.append("evidence not yet seen:")
    lines += [f"  {what}" for what in unseen] or ["  none"]
    timing = view.get("timing") or {}
    lines.append(
        f"times: identify {_hms(timing.get('identify_seconds'))}, contain "
        f"{_hms(timing.get('contain_seconds'))}, recover {_hms(timing.get('recover_seconds'))}"
        f" · score so far {_score(view)}"
    )
    lines += [f"warning: {w}" for w in view.get("warnings") or []]
    for seen in view.get("observations") or []:
        when, who = _clock(seen.get("at")), seen.get("by")
        lines.append(f"observation {when} {who}: {seen.get('text')}")
    return _inert(lines)


class Screen:
    """What the facilitator has been shown: prints what is new in the exercise."""

    def __init__(self, load: Callable[[], Json], show: Callable[[str], None]) -> None:
        self._load = load
        self.show = show
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._decided: set[str] = set()
        self._status: str | None = None
        self._attached = False
        self.view: Json = {}

    def refresh(self) -> None:
        """Read the exercise again and print what happened since the last time."""
        with self._lock:
            self._refresh()

    def _refresh(self) -> None:
        self.view = view = self._load()
        if not self._attached:  # the first reading: where things stand, then what happened
            self._attached = True
            for line in attach_lines(view):
                self.show(line)
        # a scored decision is shown with the expected one right after its timeline line
        judged = {
            (d.get("step"), d.get("at")): d
            for d in view.get("decisions") or []
            if d.get("answer") is not None and d.get("expected") is not None
        }
        for item in view.get("timeline") or []:
            key = repr(sorted(item.items()))
            if key in self._seen:
                continue
            self._seen.add(key)
            self.show(event_line(item))
            decision = judged.get((item.get("step"), item.get("at")))
            if decision is not None:
                self._decision(decision)
        for decision in judged.values():
            self._decision(decision)
        status = str(view.get("status"))
        if status != self._status:
            if self._status is not None:
                self.show(one_line(f"the players' run is now {status}"))
            self._status = status

    def _decision(self, decision: Json) -> None:
        key = f"{decision.get('step')}@{decision.get('at')}"
        if key not in self._decided:
            self._decided.add(key)
            self.show(decision_line(decision))

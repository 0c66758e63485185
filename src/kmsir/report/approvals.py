"""The two-person rule as the report shows it: per step that asked for a second person's
approval, who answered (the identity STS named, never a typed name), when, why, and the
answers not counted, denials and timeouts (``approvals`` in the template context).

From the run's view alone (its journal's approval entries, in journal order). What an
approver wrote (their reason) and what the run said of an answer file it refused (which may
quote the file) are attacker-controlled: cut to a bounded length, controls and bidi
overrides made visible (``findings.shown``); the templates escape them as every other value.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from kmsir.evidence import entries as e
from kmsir.evidence.view import RunView
from kmsir.report.findings import shown

#: The most answers listed per step (the rest are counted in ``more``).
MAX_ANSWERS = 50
#: The longest reason, or refusal, shown.
MAX_TEXT = 500

_KINDS = (e.ApprovalRequested, e.ApprovalGiven, e.ApprovalRefused, e.ApprovalTimedOut)


def approvals(view: RunView, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every step that asked for approvals, in the order it first asked: ``step``,
    ``title``, ``action``, ``count``, ``from`` and ``until`` (its last request), ``requests``
    (how many times it asked: a retry asks again), ``asks`` (each request, oldest first:
    ``number``, ``count``, ``from``, ``until``, ``outcome``), ``outcome`` (of the last
    request: approved, denied, timed out, waiting, not decided, or not decided because the
    run stopped while waiting: its wait ended before ``now`` with nothing decided),
    ``answers`` (each approval, deny, refusal and timeout, oldest first: ``request`` (the
    number of the request it answered), ``when`` (the run recorded it), ``answer``, ``arn``,
    ``account``, ``user_id``, ``reason``, ``answered`` (the approver's signed
    ``X-Amz-Date``), ``sts_request_id``) and ``more`` (answers not listed)."""
    shown_steps: dict[str, dict[str, Any]] = {}
    for moment in view.timeline:
        record = moment.record
        if not isinstance(record, _KINDS) or moment.step is None:
            continue
        step = shown_steps.get(moment.step)
        if step is None:
            step = shown_steps[moment.step] = _step(view, moment.step)
        if isinstance(record, e.ApprovalRequested):
            step["requests"] += 1
            step["count"], step["from"] = record.count, [shown(p) for p in record.from_]
            step["until"] = shown(record.until, 40)
            step["title"] = shown(record.preview.get("title") or step["title"])
            step["asks"].append(_Ask(step["requests"], record))
            continue
        ask = _ask_of(step["asks"], record)
        if ask is not None:
            ask.take(record)
        row = _row(moment.ts, record)
        row["request"] = ask.number if ask is not None else None
        if len(step["answers"]) < MAX_ANSWERS:
            step["answers"].append(row)
        else:
            step["more"] += 1
    for step_id, step in shown_steps.items():
        asks: list[_Ask] = step["asks"]
        waiting = view.waiting_step(step_id) is not None
        step["asks"] = [ask.shown(waiting=waiting and ask is asks[-1], now=now) for ask in asks]
        step["outcome"] = step["asks"][-1]["outcome"] if asks else "not decided"
    return list(shown_steps.values())


#: What a request the run stopped waiting on (a crash, a reboot: no run-interrupted entry)
#: shows once its wait is over.
STOPPED = "not decided (the run stopped while waiting)"


class _Ask:
    """One request of a step, and what its answers made of it."""

    def __init__(self, number: int, record: e.ApprovalRequested) -> None:
        self.number, self.record = number, record
        self.approved = len(record.kept)
        self.denied = self.timed_out = False

    def take(self, record: Any) -> None:
        if isinstance(record, e.ApprovalGiven):
            if record.decision == "deny":
                self.denied = True
            else:
                self.approved += 1
        elif isinstance(record, e.ApprovalTimedOut):
            self.timed_out = True

    def outcome(self, *, waiting: bool, now: datetime | None) -> str:
        if self.denied:
            return "denied"
        if self.timed_out:
            return "timed out"
        if self.approved >= self.record.count:
            return "approved"
        if not waiting:
            return "not decided"
        until = _parsed(self.record.until)
        if now is not None and until is not None and until < now:
            return STOPPED
        return "waiting"

    def shown(self, *, waiting: bool, now: datetime | None) -> dict[str, Any]:
        return {
            "number": self.number,
            "count": self.record.count,
            "from": [shown(p) for p in self.record.from_],
            "until": shown(self.record.until, 40),
            "outcome": self.outcome(waiting=waiting, now=now),
        }


def _ask_of(asks: list[_Ask], record: Any) -> _Ask | None:
    """The request an answer, refusal or timeout was for: the one it names, else the one the
    run waited on when it wrote it (the latest)."""
    named = getattr(record, "request", None)
    for ask in reversed(asks):
        if ask.record.request == named:
            return ask
    return asks[-1] if asks else None


def _parsed(value: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def _step(view: RunView, step_id: str) -> dict[str, Any]:
    found = view.steps.get(step_id)
    return {
        "step": shown(step_id, 200),
        "title": shown((found.name if found is not None else None) or step_id),
        "action": shown(found.action if found is not None else None, 200),
        "count": 1,
        "from": [],
        "until": None,
        "requests": 0,
        "outcome": None,
        "asks": [],
        "answers": [],
        "more": 0,
    }


def _row(ts: str, record: Any) -> dict[str, Any]:
    """One answer, or a timeout, as a row."""
    row: dict[str, Any] = {
        "request": None,
        "when": shown(ts, 40),
        "answer": None,
        "arn": None,
        "account": None,
        "user_id": None,
        "reason": None,
        "answered": None,
        "sts_request_id": None,
    }
    identity = getattr(record, "identity", None) or {}
    if isinstance(identity, dict):
        row["arn"] = shown(identity.get("arn"), 300) or None
        row["account"] = shown(identity.get("account"), 40) or None
        row["user_id"] = shown(identity.get("user_id"), 200) or None
    if isinstance(record, e.ApprovalGiven):
        row["answer"] = "approved" if record.decision == "approve" else "denied"
        row["reason"] = shown(record.reason, MAX_TEXT) if record.reason else None
        row["answered"] = shown(record.answered, 40)
        row["sts_request_id"] = shown(record.sts_request_id, 200) or None
    elif isinstance(record, e.ApprovalRefused):
        row["answer"] = "refused"
        row["reason"] = shown(record.why, MAX_TEXT)
    else:  # timed out
        row["answer"] = "timed out"
        row["reason"] = shown(
            f"no approval by {record.until} ({record.approved} of {record.count})", MAX_TEXT
        )
    return row

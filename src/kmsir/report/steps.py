"""The steps of a run as the report shows them, the changes they made and the open deadlines.

Each step comes from the run's view (``evidence.view.StepView``): its status, summary,
outputs, before and after are those of its last recorded outcome (a step started again
after it, and cut off, still shows that outcome), its calls as the journal recorded them.
The template context keeps the shape README "Report templates" documents (and custom
templates rely on): ``api_calls`` and ``sent`` are the calls as plain mappings, the way
releases 0.2 and earlier journaled them; ``changes`` writes each call out with
``calls.describe``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from kmsir.evidence import entries as e
from kmsir.evidence.calls import Call, describe
from kmsir.evidence.stepview import StepView
from kmsir.evidence.view import RunView
from kmsir.report.trail import iso, parse_utc

#: An API call's fields as the journal always carried them (``None`` included).
_CALL_FIELDS = (
    "call",
    "error_code",
    "http_status",
    "operation",
    "params",
    "region",
    "request_id",
    "service",
)
_INTENT_FIELDS = ("call", "operation", "params", "region", "service")


@dataclass(frozen=True)
class ReportStep:
    """One step as the report shows it (``steps`` in the template context)."""

    id: str
    name: str
    action: str
    phase: str | None
    status: str
    summary: str
    started: str | None
    finished: str | None
    approved_by: str | None
    reason: str | None
    inverse: str | None
    inverse_until: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    outputs: dict[str, Any]
    api_calls: list[dict[str, Any]]
    sent: list[dict[str, Any]]  # state-changing calls, journaled as they were sent


#: A step's shown form and the view it was made from (whose calls are records).
Shown = tuple[ReportStep, StepView]


def report_steps(view: RunView) -> list[Shown]:
    """Every step the journal names, in the order it first names them."""
    outcomes = {
        m.seq: m.record
        for m in view.timeline
        if isinstance(m.record, (e.StepSucceeded, e.StepSkipped, e.StepFailed))
    }
    shown = []
    for step in view.steps.values():
        outcome = outcomes.get(step.outcome_seq) if step.outcome_seq is not None else None
        done = outcome if isinstance(outcome, e.StepSucceeded) else None
        if outcome is None:
            status, summary = "incomplete", "started, no outcome recorded"
        elif isinstance(outcome, e.StepSucceeded):
            status, summary = outcome.status, outcome.summary
        elif isinstance(outcome, e.StepFailed):
            status, summary = "failed", outcome.error
        else:
            status, summary = outcome.status, outcome.reason
        row = ReportStep(
            id=step.id,
            name=step.name or step.id,
            action=step.action,
            phase=step.phase,
            status=status,
            summary=summary,
            started=step.started,
            finished=step.finished,
            approved_by=step.approved_by,
            reason=step.reason,
            inverse=done.inverse if done else None,
            inverse_until=done.inverse_until if done else None,
            # a step that failed or was cut off after changing something has no outcome
            # "before": the state it recorded before its first change stands in
            before=step.before,
            after=done.after if done else None,
            outputs=(done.outputs if done else None) or {},
            api_calls=[call_data(c, _CALL_FIELDS) for c in step.calls],
            sent=[call_data(c, _INTENT_FIELDS) for c in step.intents],
        )
        shown.append((row, step))
    return shown


def call_data(call: Call, fields: tuple[str, ...]) -> dict[str, Any]:
    """A call as the plain mapping the journal of release 0.2 held: ``fields`` (``None``
    included) in key order."""
    return {name: getattr(call, name) for name in sorted(fields)}


def snapshots(steps: list[Shown]) -> list[ReportStep]:
    """The ``kms.snapshot`` steps that succeeded, in run order."""
    return [s for s, _ in steps if s.action == "kms.snapshot" and s.status == "succeeded"]


def changes(
    steps: list[Shown], now: datetime, final_keys: Sequence[dict[str, Any]] = ()
) -> list[dict[str, Any]]:
    """Every step that changed, or may have changed, something: by its outcome, or by the
    state-changing calls it sent (a step that failed or was cut off after sending counts).
    ``final_keys``: the keys as read when the run ended; an undo their state rules out now (a
    key pending deletion cannot be enabled) says so."""
    pending = {
        k.get("key_id"): k.get("state")
        for k in final_keys
        if k.get("state") in ("PendingDeletion", "PendingReplicaDeletion")
    }
    found: list[dict[str, Any]] = []
    for s, step in steps:
        if s.action == "kms.snapshot" or (s.before is None and not step.intents):
            continue
        until = parse_utc(s.inverse_until) if s.inverse_until else None
        # what was sent (a result may never have been journaled if the run was interrupted),
        # and what AWS refused; bundles from before intents were journaled: the results
        refused = {c.call: c.error_code for c in step.calls if c.error_code}
        sent = step.intents or [c for c in step.calls if not c.read_only]
        calls = [
            describe(c) + (f" (refused: {refused[c.call]})" if c.call in refused else "")
            for c in sent
        ]
        found.append(
            {
                **asdict(s),
                "calls": calls,
                "inverse_available": s.inverse is not None
                and s.inverse != "irreversible"
                and (until is None or until > now),
                "undone_by": None,
                "inverse_blocked": (
                    f"the key is {pending[key_id]} now: kms.cancel-deletion first"
                    if (key_id := (s.outputs or {}).get("key_id")) in pending
                    and s.inverse not in (None, "irreversible", "kms.cancel-deletion")
                    else None
                ),
                "when": s.finished or s.started,
            }
        )
    for n, change in enumerate(found):  # an inverse that a later step ran is used up
        key = (change.get("outputs") or {}).get("key_id")
        later = next(
            (
                c
                for c in found[n + 1 :]
                if c["action"] == change["inverse"]
                and (c.get("outputs") or {}).get("key_id") == key
                and c["status"] in ("succeeded", "already")
            ),
            None,
        )
        if later is not None:
            change["undone_by"], change["inverse_available"] = later["id"], False
    return found


def deadlines(
    found: list[dict[str, Any]],
    key_after: dict[str, Any] | None,
    now: datetime,
    final_keys: Sequence[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    """What must be done by when: an inverse that expires, a pending deletion, imported key
    material that expires (from the last snapshot ``key_after``), earliest first."""
    dated: dict[tuple[str, str], dict[str, Any]] = {}

    def add(what: str, when: Any, source: str) -> None:
        moment = parse_utc(when) if when else None
        if moment is not None:
            dated.setdefault(
                (what, iso(when)),
                {"what": what, "when": iso(when), "source": source, "passed": moment <= now},
            )

    for c in found:
        if c.get("inverse_until") and not c.get("undone_by"):
            add(f"{c['inverse']} possible until", c["inverse_until"], f"step {c['id']}")
    for key in final_keys:  # read again when the run ended: later than any snapshot
        if key.get("deletion_date"):
            add("key deletion", key["deletion_date"], f"key {key.get('key_id')}, read at the end")
    if key_after and not final_keys:
        add("key deletion", key_after.get("deletion_date"), "last snapshot")
    if key_after:
        add("imported key material expires", key_after.get("valid_to"), "last snapshot")
    return sorted(dated.values(), key=lambda d: d["when"])

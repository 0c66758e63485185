"""The runner's side of the report: one line per thing it did, and the merged UTC timeline.

The runner's moments come from the run's view (``view.timeline``: decisions, notes, step
outcomes, injects...); an inject that a resumed run fired while rebuilding its sandbox shows
right after that resume. In the template context a moment keeps the shape
releases 0.2 and earlier gave it: its entry ``type`` and its ``data`` as the journal held
it, calls written out as text (``calls.describe``); ``notes`` and ``decisions`` are whole
journal lines (``seq``, ``ts``, ``type``, ``step``, ``data``, ``prev``, ``hash``).
"""

from __future__ import annotations

from typing import Any

from kmsir.evidence import entries as e
from kmsir.evidence.calls import describe
from kmsir.evidence.stepview import Moment
from kmsir.evidence.view import RunView
from kmsir.report.findings import event_view
from kmsir.report.trail import TrailView, iso

#: Steps whose outcome repeats the record just before it: a question's answer (the
#: decision), a note's text. Action names (``kmsir.actions.human``), not entry types.
_ECHOING_ACTIONS = frozenset({"ask", "note"})


def runner(view: RunView) -> list[Moment]:
    """The runner's moments in journal order, each inject a resume fired while rebuilding
    the sandbox (kept in its ``run-resumed`` record) right after that resume."""
    resumed = {r.seq for r in view.resumes}
    late: dict[int, list[Moment]] = {}
    for inject in view.injects:
        if inject.seq in resumed:
            late.setdefault(inject.seq, []).append(inject)
    moments: list[Moment] = []
    for moment in view.timeline:
        record = moment.record
        if isinstance(record, e.StepSucceeded) and record.action in _ECHOING_ACTIONS:
            continue
        moments.append(moment)
        if isinstance(record, e.RunResumed):
            moments += late.get(moment.seq, [])
    return moments


def kind(record: Any) -> str:
    """The entry type a moment's record was journaled as (an inject a resume fired is the
    world's own mapping)."""
    return e.Inject.TYPE if isinstance(record, dict) else str(record.TYPE)


def record_data(record: Any) -> dict[str, Any]:
    """A moment's record as the ``data`` mapping the journal of release 0.2 held: keys in
    order, the fields it always wrote (``None`` included), and calls as text."""
    if isinstance(record, dict):
        return record
    if isinstance(record, e.Inject):
        return record.record
    _, data = e.data_of(record)
    if isinstance(record, e.Decision) and record.calls is not None:
        data["calls"] = [describe(c) for c in record.calls]
    elif isinstance(record, (e.CheckMode, e.Recheck)):
        data["would_call"] = [describe(c) for c in record.would_call]
    return dict(sorted(data.items()))


def line(view: RunView, moment: Moment) -> dict[str, Any]:
    """A moment as its whole journal line (``notes`` and ``decisions`` in the context)."""
    return {
        "data": record_data(moment.record),
        "hash": _hash(view, moment.seq),
        "prev": _hash(view, moment.seq - 1),
        "seq": moment.seq,
        "step": moment.step,
        "ts": moment.ts,
        "type": kind(moment.record),
    }


def _hash(view: RunView, seq: int) -> str | None:
    return view.hashes[seq - 1] if 0 < seq <= len(view.hashes) else None


def detail(record: Any) -> str:
    """One line saying what a moment of the runner means."""
    if isinstance(record, dict):
        return inject_detail(record)
    if isinstance(record, e.StepSucceeded):
        return f"{record.status}: {record.summary}"
    if isinstance(record, e.StepFailed):
        return str(record.error)
    if isinstance(record, e.StepSkipped):
        return str(record.reason)
    if isinstance(record, e.Decision):
        text = f"{record.question} -> {record.answer} ({record.by})"
        return text + (f": {record.reason}" if record.reason else "")
    if isinstance(record, e.Note):
        return str(record.text)
    if isinstance(record, e.RunStarted):
        return f"{(record.playbook or {}).get('id')} in {record.mode} mode"
    if isinstance(record, e.RunFinished):
        return str(record.status)
    if isinstance(record, e.RunInterrupted):
        return str(record.reason)
    if isinstance(record, e.OpenRisks):
        return f"{len(record.keys)} key(s) read again; {len(record.risks)} open risk(s)"
    if isinstance(record, e.RunResumed):
        return (
            f"by {(record.operator or {}).get('arn')} on {record.host} (was "
            f"{(record.previous or {}).get('status')}), from step {record.resume_at}"
        )
    if isinstance(record, e.Repair):
        torn = record.torn_tail
        parts = [f"torn journal line {torn['line']} saved as {torn['saved_as']}"] if torn else []
        if record.leftovers:
            parts.append(f"{len(record.leftovers)} file(s) left by the interruption recorded")
        return "; ".join(parts)
    if isinstance(record, e.Recheck):
        sent = ", ".join(record.sent_before or []) or "nothing"
        return f"in flight when the run stopped; sent before: {sent}; live state: {record.state}"
    if isinstance(record, e.CheckMode):
        return "would call: " + "; ".join(describe(c) for c in record.would_call or [])
    if isinstance(record, e.Inject):
        return inject_detail(record.record)
    if isinstance(record, e.StepRetry):
        return f"retry {record.attempt}: {record.error}"
    if isinstance(record, e.InputChanged):
        return f"input {record.name} changed from {record.from_!r} to {record.to!r}"
    if isinstance(record, e.LockOverridden):
        holder = record.holder if isinstance(record.holder, dict) else {}
        return f"--force: went past the {record.lock} lock held by run {holder.get('run_id')}"
    if isinstance(record, e.AnchorFailed):
        return f"the journal was not signed: {record.error}"
    return ""


def inject_detail(record: dict[str, Any]) -> str:
    """What a scenario inject said and did (its calls, the CloudTrail events it added); one
    whose actor had been contained says "attempt blocked" and why."""
    done = []
    for call in record.get("calls") or []:
        if isinstance(call, dict):
            error = call.get("error_code")
            done.append(f"{call.get('operation')}" + (f" refused: {error}" if error else ""))
    events = [str(e) for e in record.get("events") or []]
    if events:
        failed = len(record.get("failed_events") or [])
        shown = f"CloudTrail +{len(events)}" + (f" ({failed} failed)" if failed else "")
        done.append(f"{shown}: {', '.join(sorted(set(events)))}")
    blocked = record.get("blocked")
    if blocked:
        done.insert(0, f"attempt blocked: {blocked}")
    return str(record.get("say") or "") + (f" (sandbox: {'; '.join(done)})" if done else "")


def timeline(
    moments: list[Moment], trail: TrailView, window: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """CloudTrail events of interest and the runner's ``moments``, in one UTC order."""
    since = str(window.get("since")) if window else None
    until = str(window.get("until")) if window else None
    rows: list[dict[str, Any]] = [
        {
            "ts": iso(m.ts),
            "source": "kmsir",
            "type": kind(m.record),
            "step": m.step,
            "actor": None,
            "detail": detail(m.record),
            "data": record_data(m.record),
        }
        for m in moments
    ]
    for event in trail.interesting.values():
        shown = event_view(event)
        rows.append(
            {
                "ts": shown["time"],
                "source": "CloudTrail",
                "type": shown["name"],
                "step": None,
                "actor": shown["principal"],
                "detail": f"{shown['principal']} from {shown['source_ip']}"
                + (f" ({shown['error']})" if shown["error"] else ""),
                "data": shown,
            }
        )
    rows.sort(key=lambda r: (r["ts"], r["source"] != "CloudTrail"))
    for row in rows:  # the window is about the attacker's activity, not the response
        row["in_window"] = bool(
            row["source"] == "CloudTrail" and since and until and since <= row["ts"] <= until
        )
    return rows

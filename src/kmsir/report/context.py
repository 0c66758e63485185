"""The report's template context, built from the bundle alone (see README "Report templates").

Steps and their outcomes, the changes with their API calls, approvals and inverses, the
second persons' approvals (``report.approvals``), open deadlines, CloudTrail findings with
the events behind them, one merged timeline (CloudTrail events of interest, the runner's
actions, decisions and notes), the events chart, lessons learned (the best practices
findings cite), the chain of custody and the trail log files' integrity
(``report.integrity``).

What the run did comes from the bundle's view (``bundle.view``, the one reading of its
journal: ``report.steps`` and ``report.timeline`` shape it for templates); what CloudTrail
said comes from the bundle's artifacts (``report.findings``, ``report.trail``), made inert
there. Input that could not be read is counted in ``trail.skipped`` by reason.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

import msgspec

from kmsir.evidence import entries as e
from kmsir.evidence.bundle import NAME_PART
from kmsir.evidence.manifest import Bundle
from kmsir.evidence.view import RunView
from kmsir.report import findings as cloudtrail
from kmsir.report.approvals import approvals
from kmsir.report.findings import EVENTS_PER_FINDING, SEVERITY_ORDER, TOP_FINDINGS
from kmsir.report.impact import impact
from kmsir.report.integrity import integrity
from kmsir.report.lists import attachments, checklists
from kmsir.report.posture import posture
from kmsir.report.scope import scope
from kmsir.report.steps import ReportStep, changes, deadlines, report_steps, snapshots
from kmsir.report.timeline import line, runner, timeline
from kmsir.report.trail import Chart, chart, trail_view

__all__ = ["build_context"]


def build_context(bundle: Bundle, *, now: datetime | None = None) -> dict[str, Any]:
    """The template context: everything a report template may use (see README)."""
    now = now or datetime.now(timezone.utc)
    view = bundle.view
    manifest = bundle.manifest
    pairs = report_steps(view)
    steps = [s for s, _ in pairs]
    snapped = snapshots(pairs)

    def done(action: str) -> ReportStep | None:
        return next((s for s in steps if s.action == action and s.status == "succeeded"), None)

    collect, finding_step = done("cloudtrail.collect"), done("cloudtrail.findings")
    collect_outputs = collect.outputs if collect else None
    found = cloudtrail.findings(bundle, finding_step.outputs if finding_step else None)
    top = found[:TOP_FINDINGS]
    wanted = {i for f in top for i in (f.get("event_ids") or [])[:EVENTS_PER_FINDING]}
    events_paths = cloudtrail.event_files(bundle, collect_outputs)
    findings_path = cloudtrail.artifact(
        bundle, finding_step.outputs if finding_step else None, "findings.json"
    )
    trail = trail_view(bundle, events_paths, findings_path, wanted)
    for f in top:
        f["events"] = [
            cloudtrail.event_view(trail.interesting[i])
            for i in (f.get("event_ids") or [])[:EVENTS_PER_FINDING]
            if i in trail.interesting
        ]
    window = (finding_step.outputs.get("window") if finding_step else None) or (
        collect.outputs.get("window") if collect else None
    )
    window = window if isinstance(window, dict) and {"since", "until"} <= set(window) else None
    changed = changes(pairs, now, view.final_keys)
    moments = runner(view)
    marks = [(c["when"], c["id"]) for c in changed if c.get("when")]
    window_pair = (window["since"], window["until"]) if window else None
    key_after = snapped[-1].outputs if len(snapped) > 1 else None
    return {
        "manifest": manifest,
        "generated": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "simulated": bool(manifest.get("simulated")),
        "check_mode": manifest.get("mode") == "check",
        "steps": steps,
        "changes": changed,
        "key_before": snapped[0].outputs if snapped else None,
        "key_after": key_after,
        "keys": list({s.outputs.get("key_id"): s.outputs for s in snapped}.values()),
        "cloudtrail": cloudtrail.collected(collect_outputs),
        "trail": {
            "count": trail.count,
            "first": trail.first,
            "last": trail.last,
            "by_category": dict(trail.by_category),
            "unreadable": trail.unreadable,
            "untimed": trail.untimed,
            "damaged": trail.damaged,
            "skipped": cloudtrail.unread(collect_outputs, trail),
            "noted": cloudtrail.noted(collect_outputs),
        },
        "chart": _chart_dict(chart(trail, marks, window_pair)),
        "integrity": integrity(bundle, steps),
        "window": window,
        "findings": top,
        "findings_total": len(found),
        "findings_by_severity": {
            s: n for s in SEVERITY_ORDER if (n := sum(1 for f in found if f.get("severity") == s))
        },
        "lessons": cloudtrail.lessons(found),
        "impact": impact(view),
        "posture": posture(bundle),
        "scope": scope(view),
        "deadlines": deadlines(
            changed, key_after or (snapped[0].outputs if snapped else None), now, view.final_keys
        ),
        "open_risks": view.open_risks,
        "final_keys": view.final_keys,
        "status": (
            "succeeded with open risks"
            if view.status == "succeeded" and view.open_risks
            else str(manifest.get("status") or view.status)
        ),
        "notes": [line(view, m) for m in moments if isinstance(m.record, e.Note)],
        "decisions": [line(view, m) for m in moments if isinstance(m.record, e.Decision)],
        "approvals": approvals(view, now),
        "checklists": checklists(steps),
        "attachments": attachments(steps, view),
        "timeline": timeline(moments, trail, window),
        "rollback_of": _rollback_of(view),
        "custody": [_sorted(msgspec.to_builtins(c)) for c in view.custody],
        "artifacts": [_sorted(msgspec.to_builtins(a.record)) for a in view.artifacts],
        "api_calls": sum(len(s.calls) for s in view.steps.values()),
        "journal": _journal(view),
    }


def _rollback_of(view: RunView) -> dict[str, Any] | None:
    """The run this one rolls back (``kmsir rollback``), and its report's path beside this
    bundle (both are runs of the same incident), from the journal alone."""
    link = view.meta.rollback_of if view.meta is not None else None
    if not isinstance(link, dict):
        return None
    run_id = str(link.get("run_id") or "")
    items = [i for i in link.get("items") or [] if isinstance(i, dict)]
    return {
        **link,
        "report": f"../{run_id}/report" if NAME_PART.match(run_id) else None,
        "not_undone": [i for i in items if i.get("kind") in ("irreversible", "expired", "unknown")],
        "left": [i for i in items if i.get("kind") in ("undone", "unneeded")],
        "changed_since": [i for i in items if i.get("drift")],
    }


def _journal(view: RunView) -> dict[str, Any]:
    """The run's journal, without the records of reports written since (this one among
    them): a report rendered again months later says the same."""
    reports = set(view.report_seqs)
    kept = [h for seq, h in enumerate(view.hashes, 1) if seq not in reports]
    return {"entries": len(kept), "head": kept[-1] if kept else None}


def _sorted(data: dict[str, Any]) -> dict[str, Any]:
    """A mapping in key order, as the bundle's JSON files hold it."""
    return dict(sorted(data.items()))


def _chart_dict(drawn: Chart | None) -> dict[str, Any] | None:
    return asdict(drawn) if drawn is not None else None

"""The report's template context, built from the bundle alone (see README "Report templates").

Steps and their outcomes, the changes with their API calls, approvals and inverses, open
deadlines, CloudTrail findings with the events behind them, one merged timeline (CloudTrail
events of interest, the runner's actions, decisions and notes), the events chart, lessons
learned (the best practices findings cite) and the chain of custody.

CloudTrail text (events, the findings drawn from them, collect's counts) is attacker-controlled:
it reaches the templates cut to a bounded length and with every control and bidi character
written as a visible escape (``inert.visible``), so that neither a terminal showing the
Markdown nor a browser showing the HTML obeys it; the templates escape the rest. Input that
could not be read is counted in ``trail.skipped`` by reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kmsir.errors import EvidenceError
from kmsir.evidence import bundle as evidence
from kmsir.evidence.calls import is_read_only
from kmsir.inert import visible
from kmsir.report.trail import Chart, TrailView, chart, parse_utc, read_events, trimmed
from kmsir.trail.events import clip

#: Journal entries too fine-grained for the timeline (they are counted or indexed instead).
_NOT_IN_TIMELINE = frozenset(
    {
        "api-call",
        "api-intent",
        "artifact",
        "artifact-intent",
        "before-change",
        "step-started",
        # records about the evidence, not the response: the anchor's signatures, the reports
        "anchor",
        "anchor-key",
        "report-written",
    }
)
#: The report lists this many findings (most severe first) and events behind each.
TOP_FINDINGS = 50
EVENTS_PER_FINDING = 3
SEVERITY_ORDER = ("critical", "high", "medium", "low", "info")


@dataclass(frozen=True)
class StepView:
    """One step as the report shows it."""

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


def _steps(entries: list[dict[str, Any]]) -> list[StepView]:
    order: list[str] = []
    by_step: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        step = entry.get("step")
        if step is None:
            continue
        if step not in by_step:
            order.append(step)
            by_step[step] = []
        by_step[step].append(entry)
    views = []
    for step_id in order:
        items = by_step[step_id]
        started = next((e for e in items if e["type"] == "step-started"), None)
        end = next(
            (
                e
                for e in reversed(items)
                if e["type"] in ("step-succeeded", "step-failed", "step-skipped")
            ),
            None,
        )
        decision = next(
            (e for e in reversed(items) if e["type"] == "decision" and "calls" in e["data"]), None
        )
        meta = (started or end or items[0])["data"]
        data = end["data"] if end else {}
        if end is None:
            status, summary = "incomplete", "started, no outcome recorded"
        elif end["type"] == "step-succeeded":
            status, summary = data.get("status", "succeeded"), data.get("summary", "")
        elif end["type"] == "step-failed":
            status, summary = "failed", data.get("error", "")
        else:
            status, summary = data.get("status", "skipped"), data.get("reason", "")
        views.append(
            StepView(
                id=step_id,
                name=meta.get("name") or step_id,
                action=meta.get("action", ""),
                phase=meta.get("phase"),
                status=status,
                summary=summary,
                started=started["ts"] if started else None,
                finished=end["ts"] if end else None,
                approved_by=decision["data"].get("by") if decision else None,
                reason=decision["data"].get("reason") if decision else None,
                inverse=data.get("inverse"),
                inverse_until=data.get("inverse_until"),
                # a step that failed or was cut off after changing something has no outcome
                # "before": the state it recorded before its first change stands in
                before=data.get("before")
                or next(
                    (e["data"].get("before") for e in items if e["type"] == "before-change"), None
                ),
                after=data.get("after"),
                outputs=data.get("outputs") or {},
                api_calls=[e["data"] for e in items if e["type"] == "api-call"],
                sent=[e["data"] for e in items if e["type"] == "api-intent"],
            )
        )
    return views


def _recorded_before(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The state a step recorded before its first change (``before-change``), if any."""
    found = next((e["data"].get("before") for e in items if e["type"] == "before-change"), None)
    return found if isinstance(found, dict) else None


def _snapshots(steps: Iterable[StepView]) -> list[StepView]:
    return [s for s in steps if s.action == "kms.snapshot" and s.status == "succeeded"]


def _iso(text: Any) -> str:
    """Any time the journal or AWS gave, as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC) for sorting."""
    moment = parse_utc(text)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else str(text)


def _detail(entry: dict[str, Any]) -> str:
    """One line saying what a journal entry in the timeline means."""
    d, kind = entry["data"], entry["type"]
    if kind == "step-succeeded":
        return f"{d.get('status')}: {d.get('summary')}"
    if kind == "step-failed":
        return str(d.get("error"))
    if kind == "step-skipped":
        return str(d.get("reason"))
    if kind == "decision":
        text = f"{d.get('question')} -> {d.get('answer')} ({d.get('by')})"
        return text + (f": {d.get('reason')}" if d.get("reason") else "")
    if kind == "note":
        return str(d.get("text"))
    if kind == "run-started":
        return f"{(d.get('playbook') or {}).get('id')} in {d.get('mode')} mode"
    if kind == "run-finished":
        return str(d.get("status"))
    if kind == "run-interrupted":
        return str(d.get("reason"))
    if kind == "run-resumed":
        return (
            f"by {(d.get('operator') or {}).get('arn')} on {d.get('host')} (was "
            f"{(d.get('previous') or {}).get('status')}), from step {d.get('resume_at')}"
        )
    if kind == "repair":
        torn = d.get("torn_tail")
        parts = [f"torn journal line {torn['line']} saved as {torn['saved_as']}"] if torn else []
        if d.get("leftovers"):
            parts.append(f"{len(d['leftovers'])} file(s) left by the interruption recorded")
        return "; ".join(parts)
    if kind == "recheck":
        sent = ", ".join(d.get("sent_before") or []) or "nothing"
        return f"in flight when the run stopped; sent before: {sent}; live state: {d.get('state')}"
    if kind == "check-mode":
        return "would call: " + "; ".join(d.get("would_call") or [])
    if kind == "inject":
        return _inject_detail(d)
    if kind == "step-retry":
        return f"retry {d.get('attempt')}: {d.get('error')}"
    if kind == "input-changed":
        return f"input {d.get('name')} changed from {d.get('from')!r} to {d.get('to')!r}"
    if kind == "lock-overridden":
        holder = d.get("holder") if isinstance(d.get("holder"), dict) else {}
        return f"--force: went past the {d.get('lock')} lock held by run {holder.get('run_id')}"
    if kind == "anchor-failed":
        return f"the journal was not signed: {d.get('error')}"
    return ""


def _inject_detail(record: dict[str, Any]) -> str:
    """What a scenario inject said and did (its calls, the CloudTrail events it added)."""
    done = []
    for call in record.get("calls") or []:
        if isinstance(call, dict):
            error = call.get("error_code")
            done.append(f"{call.get('operation')}" + (f" refused: {error}" if error else ""))
    events = [str(e) for e in record.get("events") or []]
    if events:
        done.append(f"CloudTrail +{len(events)}: {', '.join(sorted(set(events)))}")
    return str(record.get("say") or "") + (f" (sandbox: {'; '.join(done)})" if done else "")


def _injects_on_resume(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The journal with each inject a resumed run fired while rebuilding its sandbox (kept in
    its ``run-resumed`` entry) shown as an ``inject`` entry of its own, right after it."""
    shown: list[dict[str, Any]] = []
    for entry in entries:
        shown.append(entry)
        if entry["type"] == "run-resumed":
            shown += [
                {**entry, "type": "inject", "step": record.get("after"), "data": record}
                for record in evidence.inject_records(entry)
            ]
    return shown


def shown(value: Any, limit: int = 300) -> str:
    """Attacker-controlled text as a report shows it: at most ``limit`` characters, controls
    and bidi overrides visible (``\\x1b``, ``\\u202e``)."""
    return visible(clip("" if value is None else str(value), limit))


def _principal(event: dict[str, Any]) -> str:
    identity = event.get("userIdentity")
    identity = identity if isinstance(identity, dict) else {}
    return shown(identity.get("arn") or identity.get("invokedBy") or identity.get("type") or "?")


def _request_text(request: Any) -> str:
    """Request parameters as compact JSON, at most 500 characters."""
    try:
        text = json.dumps(trimmed(request), sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = str(request)
    return shown(text, 500)


def _event_view(event: dict[str, Any]) -> dict[str, Any]:
    """An event as the report shows it: every field attacker-controlled, so each is cut and
    its controls made visible here, and escaped by the templates."""
    request = event.get("requestParameters")
    identity = event.get("userIdentity")
    identity = identity if isinstance(identity, dict) else {}
    context = identity.get("sessionContext")
    issuer = context.get("sessionIssuer") if isinstance(context, dict) else None
    session = issuer.get("userName") if isinstance(issuer, dict) else None
    principal_id = identity.get("principalId")
    principal_id = principal_id if isinstance(principal_id, str) else ""
    return {
        "id": shown(event.get("eventID") or "", 100),
        "time": shown(_iso(event.get("eventTime")), 64),
        "name": shown(event.get("eventName") or "", 100),
        "principal": _principal(event),
        "session": shown(principal_id.partition(":")[2] or session or "", 200),
        "account": shown(identity.get("accountId") or "", 64),
        "source_ip": shown(event.get("sourceIPAddress") or "", 200),
        "user_agent": shown(event.get("userAgent") or ""),
        "error": shown(event.get("errorCode") or "", 200),
        "request": _request_text(request) if request else "",
    }


def _artifact(bundle: evidence.Bundle, step: StepView | None, name: str) -> Path | None:
    """The artifact ``name`` a step's outputs point to, if the bundle records it."""
    if step is None:
        return None
    path = str(step.outputs.get("artifact") or "")
    if not path.endswith(name):
        return None
    try:
        found = bundle.artifact_path(path)
    except EvidenceError:
        return None
    return found if found.is_file() else None


def _findings(bundle: evidence.Bundle, step: StepView | None) -> list[dict[str, Any]]:
    path = _artifact(bundle, step, "findings.json")
    try:
        found = json.loads(path.read_bytes()) if path else []
    except (OSError, ValueError):
        return []
    rank = {s: n for n, s in enumerate(SEVERITY_ORDER)}
    found = [f for f in found if isinstance(f, dict)] if isinstance(found, list) else []
    for f in found:
        ids = f.get("event_ids")
        f["event_ids"] = (
            [str(i) for i in ids if isinstance(i, str)] if isinstance(ids, list) else []
        )
        # the rules quote the events (principals, aliases, grantees, user agents)
        for name, limit in _FINDING_TEXT.items():
            if f.get(name) is not None:
                f[name] = shown(f[name], limit)
        if f.get("severity") not in SEVERITY_ORDER:  # a class name in the HTML report
            f["severity"] = "info"
    return sorted(
        found, key=lambda f: (rank.get(str(f.get("severity")), 9), str(f.get("event_time")))
    )


#: The text fields of a finding and how much of each a report shows.
_FINDING_TEXT = {
    "id": 100,
    "title": 200,
    "why": 2_000,
    "event_name": 100,
    "event_time": 64,
    "principal": 300,
    "practice": 200,
}


def _collected(outputs: dict[str, Any] | None) -> dict[str, Any] | None:
    """Collect's outputs as the report shows them: names, principals and addresses come
    from events (journaled cut by newer kmsir, maybe not by older ones)."""
    if outputs is None:
        return None
    view = dict(outputs)
    for name in ("event_names", "principals", "source_ips"):
        counts = outputs.get(name)
        counts = counts if isinstance(counts, dict) else {}
        top = sorted(((k, v) for k, v in counts.items() if isinstance(v, int)), key=lambda i: -i[1])
        view[name] = {shown(k, 200): v for k, v in top[:50]}
    for name in ("first", "last"):
        if outputs.get(name) is not None:
            view[name] = shown(outputs[name], 64)
    return view


def _unread(collected: dict[str, Any] | None, trail: TrailView) -> dict[str, int]:
    """Input the report's counts leave out, by reason: what collect skipped, what the report
    could not read back from the bundle."""
    skipped: dict[str, int] = {}
    reasons = (collected or {}).get("skipped")
    for reason, n in (reasons if isinstance(reasons, dict) else {}).items():
        if isinstance(n, int) and n > 0:
            skipped[shown(reason, 200)] = n
    if trail.unreadable:
        skipped["lines of the events file that are not events"] = trail.unreadable
    if trail.untimed:
        skipped["events without a valid time (counted, not charted)"] = trail.untimed
    return skipped


def _noted(collected: dict[str, Any] | None) -> dict[str, int]:
    noted = (collected or {}).get("noted")
    noted = noted if isinstance(noted, dict) else {}
    return {shown(k, 200): n for k, n in noted.items() if isinstance(n, int) and n > 0}


def _lessons(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each best practice the findings cite, with the findings that cite it."""
    by_practice: dict[str, list[str]] = {}
    for f in found:
        if f.get("practice"):
            titles = by_practice.setdefault(str(f["practice"]), [])
            if str(f.get("title")) not in titles:
                titles.append(str(f.get("title")))
    return [{"practice": p, "findings": t} for p, t in by_practice.items()]


def _changes(steps: list[StepView], now: datetime) -> list[dict[str, Any]]:
    """Every step that changed, or may have changed, something: by its outcome, or by the
    state-changing calls it sent (a step that failed or was cut off after sending counts)."""
    changes: list[dict[str, Any]] = []
    for s in steps:
        if s.action == "kms.snapshot" or (s.before is None and not s.sent):
            continue
        until = parse_utc(s.inverse_until) if s.inverse_until else None
        # what was sent (a result may never have been journaled if the run was interrupted),
        # and what AWS refused; bundles from before intents were journaled: the results
        refused = {c.get("call"): c.get("error_code") for c in s.api_calls if c.get("error_code")}
        sent = s.sent or [c for c in s.api_calls if not is_read_only(str(c.get("operation")))]
        calls = [
            f"{c.get('service')}:{c.get('operation')} "
            + " ".join(f"{k}={v}" for k, v in sorted((c.get("params") or {}).items()))
            + (f" (refused: {refused[c.get('call')]})" if c.get("call") in refused else "")
            for c in sent
        ]
        changes.append(
            {
                **asdict(s),
                "calls": calls,
                "inverse_available": s.inverse is not None
                and s.inverse != "irreversible"
                and (until is None or until > now),
                "undone_by": None,
                "when": s.finished or s.started,
            }
        )
    for n, change in enumerate(changes):  # an inverse that a later step ran is used up
        key = (change.get("outputs") or {}).get("key_id")
        later = next(
            (
                c
                for c in changes[n + 1 :]
                if c["action"] == change["inverse"]
                and (c.get("outputs") or {}).get("key_id") == key
                and c["status"] in ("succeeded", "already")
            ),
            None,
        )
        if later is not None:
            change["undone_by"], change["inverse_available"] = later["id"], False
    return changes


def _deadlines(
    changes: list[dict[str, Any]], key_after: dict[str, Any] | None, now: datetime
) -> list[dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}

    def add(what: str, when: Any, source: str) -> None:
        moment = parse_utc(when) if when else None
        if moment is not None:
            found.setdefault(
                (what, _iso(when)),
                {"what": what, "when": _iso(when), "source": source, "passed": moment <= now},
            )

    for c in changes:
        if c.get("inverse_until") and not c.get("undone_by"):
            add(f"{c['inverse']} possible until", c["inverse_until"], f"step {c['id']}")
    if key_after:
        add("key deletion", key_after.get("deletion_date"), "last snapshot")
        add("imported key material expires", key_after.get("valid_to"), "last snapshot")
    return sorted(found.values(), key=lambda d: d["when"])


def build_context(bundle: evidence.Bundle, *, now: datetime | None = None) -> dict[str, Any]:
    """The template context: everything a report template may use (see README)."""
    now = now or datetime.now(timezone.utc)
    entries = bundle.entries
    run_entries = [e for e in entries if e["type"] != "report-written"]
    manifest = bundle.manifest
    steps = _steps(entries)
    snapshots = _snapshots(steps)

    def done(action: str) -> StepView | None:
        return next((s for s in steps if s.action == action and s.status == "succeeded"), None)

    collect, finding_step = done("cloudtrail.collect"), done("cloudtrail.findings")
    found = _findings(bundle, finding_step)
    top = found[:TOP_FINDINGS]
    wanted = {i for f in top for i in (f.get("event_ids") or [])[:EVENTS_PER_FINDING]}
    events_path = _artifact(bundle, collect, "events.jsonl.gz")
    trail = TrailView()
    if events_path is not None:
        trail = read_events(events_path, wanted)
    for f in top:
        f["events"] = [
            _event_view(trail.interesting[i])
            for i in (f.get("event_ids") or [])[:EVENTS_PER_FINDING]
            if i in trail.interesting
        ]
    window = (finding_step.outputs.get("window") if finding_step else None) or (
        collect.outputs.get("window") if collect else None
    )
    window = window if isinstance(window, dict) and {"since", "until"} <= set(window) else None
    changes = _changes(steps, now)
    runner = [
        e
        for e in _injects_on_resume(entries)
        if e["type"] not in _NOT_IN_TIMELINE
        # a note's or question's outcome repeats the note or decision entry just before it
        and not (e["type"] == "step-succeeded" and e["data"].get("action") in ("note", "ask"))
    ]
    timeline = _timeline(runner, trail, window)
    marks = [(c["when"], c["id"]) for c in changes if c.get("when")]
    window_pair = (window["since"], window["until"]) if window else None
    key_after = snapshots[-1].outputs if len(snapshots) > 1 else None
    return {
        "manifest": manifest,
        "generated": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "simulated": bool(manifest.get("simulated")),
        "check_mode": manifest.get("mode") == "check",
        "steps": steps,
        "changes": changes,
        "key_before": snapshots[0].outputs if snapshots else None,
        "key_after": key_after,
        "keys": list({s.outputs.get("key_id"): s.outputs for s in snapshots}.values()),
        "cloudtrail": _collected(collect.outputs if collect else None),
        "trail": {
            "count": trail.count,
            "first": trail.first,
            "last": trail.last,
            "by_category": dict(trail.by_category),
            "unreadable": trail.unreadable,
            "untimed": trail.untimed,
            "damaged": trail.damaged,
            "skipped": _unread(collect.outputs if collect else None, trail),
            "noted": _noted(collect.outputs if collect else None),
        },
        "chart": _chart_dict(chart(trail, marks, window_pair)),
        "window": window,
        "findings": top,
        "findings_total": len(found),
        "findings_by_severity": {
            s: n for s in SEVERITY_ORDER if (n := sum(1 for f in found if f.get("severity") == s))
        },
        "lessons": _lessons(found),
        "deadlines": _deadlines(
            changes, key_after or (snapshots[0].outputs if snapshots else None), now
        ),
        "notes": [e for e in runner if e["type"] == "note"],
        "decisions": [e for e in runner if e["type"] == "decision"],
        "timeline": timeline,
        "custody": manifest.get("custody") or [],
        "artifacts": manifest.get("artifacts", []),
        "api_calls": sum(1 for e in entries if e["type"] == "api-call"),
        # the run's journal, without the records of reports written since (this one among
        # them): a report rendered again months later says the same
        "journal": {
            "entries": len(run_entries),
            "head": run_entries[-1]["hash"] if run_entries else None,
        },
    }


def _chart_dict(drawn: Chart | None) -> dict[str, Any] | None:
    return asdict(drawn) if drawn is not None else None


def _timeline(
    runner: list[dict[str, Any]], trail: TrailView, window: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """CloudTrail events of interest and the runner's entries, in one UTC order."""
    since = str(window.get("since")) if window else None
    until = str(window.get("until")) if window else None
    rows = [
        {
            "ts": _iso(e["ts"]),
            "source": "kmsir",
            "type": e["type"],
            "step": e.get("step"),
            "actor": None,
            "detail": _detail(e),
            "data": e["data"],
        }
        for e in runner
    ]
    for event in trail.interesting.values():
        view = _event_view(event)
        rows.append(
            {
                "ts": view["time"],
                "source": "CloudTrail",
                "type": view["name"],
                "step": None,
                "actor": view["principal"],
                "detail": f"{view['principal']} from {view['source_ip']}"
                + (f" ({view['error']})" if view["error"] else ""),
                "data": view,
            }
        )
    rows.sort(key=lambda r: (r["ts"], r["source"] != "CloudTrail"))
    for row in rows:  # the window is about the attacker's activity, not the response
        row["in_window"] = bool(
            row["source"] == "CloudTrail" and since and until and since <= row["ts"] <= until
        )
    return rows

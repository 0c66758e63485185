"""The CloudTrail side of the report context: findings, the events behind them, collect's counts.

All of it is attacker-controlled text (events, the findings drawn from them, collect's
counts): it reaches the templates cut to a bounded length and with every control and bidi
character written as a visible escape (``shown``), so that neither a terminal showing the
Markdown nor a browser showing the HTML obeys it; the templates escape the rest.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kmsir.errors import EvidenceError
from kmsir.evidence.manifest import Bundle
from kmsir.inert import visible
from kmsir.report.trail import TrailView, iso, trimmed
from kmsir.trail import summary
from kmsir.trail.events import clip

#: The report lists this many findings (most severe first) and events behind each.
TOP_FINDINGS = 50
EVENTS_PER_FINDING = summary.EVENTS_PER_FINDING
SEVERITY_ORDER = ("critical", "high", "medium", "low", "info")
#: The text fields of a finding and how much of each a report shows.
_FINDING_TEXT = {
    "id": 100,
    "title": 200,
    "why": 2_000,
    "event_name": 100,
    "event_time": 64,
    "principal": 300,
    "practice": 200,
    # a finding of a collect that fanned out: the account and Region whose events it is from
    "account": 64,
    "region": 64,
}


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


def event_view(event: dict[str, Any]) -> dict[str, Any]:
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
        "time": shown(iso(event.get("eventTime")), 64),
        "name": shown(event.get("eventName") or "", 100),
        "principal": _principal(event),
        "session": shown(principal_id.partition(":")[2] or session or "", 200),
        "account": shown(identity.get("accountId") or "", 64),
        "source_ip": shown(event.get("sourceIPAddress") or "", 200),
        "user_agent": shown(event.get("userAgent") or ""),
        "error": shown(event.get("errorCode") or "", 200),
        "request": _request_text(request) if request else "",
    }


def artifact(bundle: Bundle, outputs: dict[str, Any] | None, name: str) -> Path | None:
    """The artifact ``name`` a step's ``outputs`` point to, if the bundle records it."""
    if outputs is None:
        return None
    path = str(outputs.get("artifact") or "")
    if not path.endswith(name):
        return None
    try:
        found = bundle.artifact_path(path)
    except EvidenceError:
        return None
    return found if found.is_file() else None


def event_files(bundle: Bundle, outputs: dict[str, Any] | None) -> list[Path]:
    """The events files a collect step (its ``outputs``) kept: its one ``artifact``, or, for
    a collect that fanned out over accounts and Regions, each target's (``artifacts``)."""
    listed = (outputs or {}).get("artifacts")
    if not isinstance(listed, list):
        found = artifact(bundle, outputs, "events.jsonl.gz")
        return [found] if found is not None else []
    paths = (artifact(bundle, {"artifact": p}, "events.jsonl.gz") for p in listed)
    return [p for p in paths if p is not None]


def findings(bundle: Bundle, outputs: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The findings the ``cloudtrail.findings`` step (its ``outputs``) wrote, most severe
    first, their text made inert; none when the artifact is missing or unreadable."""
    path = artifact(bundle, outputs, "findings.json")
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


def collected(outputs: dict[str, Any] | None) -> dict[str, Any] | None:
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


def unread(outputs: dict[str, Any] | None, trail: TrailView) -> dict[str, int]:
    """Input the report's counts leave out, by reason: what collect (its ``outputs``)
    skipped, what the report could not read back from the bundle."""
    skipped: dict[str, int] = {}
    reasons = (outputs or {}).get("skipped")
    for reason, n in (reasons if isinstance(reasons, dict) else {}).items():
        if isinstance(n, int) and n > 0:
            skipped[shown(reason, 200)] = n
    if trail.unreadable:
        skipped["lines of the events file that are not events"] = trail.unreadable
    if trail.untimed:
        skipped["events without a valid time (counted, not charted)"] = trail.untimed
    return skipped


def noted(outputs: dict[str, Any] | None) -> dict[str, int]:
    """What collect (its ``outputs``) noted as worth a look, by note."""
    found = (outputs or {}).get("noted")
    found = found if isinstance(found, dict) else {}
    return {shown(k, 200): n for k, n in found.items() if isinstance(n, int) and n > 0}


def lessons(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each best practice the findings cite, with the findings that cite it."""
    by_practice: dict[str, list[str]] = {}
    for f in found:
        if f.get("practice"):
            titles = by_practice.setdefault(str(f["practice"]), [])
            if str(f.get("title")) not in titles:
                titles.append(str(f.get("title")))
    return [{"practice": p, "findings": t} for p, t in by_practice.items()]

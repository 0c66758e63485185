"""Lists of CloudTrail events: de-duplicated and sorted, and the counts a responder reads first."""

from __future__ import annotations

from collections import Counter
from typing import Any


def dedupe_sorted(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events unique by event id, sorted by event time."""
    unique: dict[str, dict[str, Any]] = {}
    for event in events:
        unique.setdefault(str(event.get("eventID") or id(event)), event)
    return sorted(unique.values(), key=lambda e: str(e.get("eventTime", "")))


def summarize(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts a responder reads first: names, principals, source IPs, failures."""
    names: Counter[str] = Counter()
    principals: Counter[str] = Counter()
    ips: Counter[str] = Counter()
    errors = 0
    for event in events:
        names[str(event.get("eventName"))] += 1
        identity = event.get("userIdentity") or {}
        principals[str(identity.get("arn") or identity.get("invokedBy") or "unknown")] += 1
        ips[str(event.get("sourceIPAddress", "unknown"))] += 1
        if event.get("errorCode"):
            errors += 1
    return {
        "count": len(events),
        "first": str(events[0].get("eventTime")) if events else None,
        "last": str(events[-1].get("eventTime")) if events else None,
        "event_names": dict(names.most_common()),
        "principals": dict(principals.most_common()),
        "source_ips": dict(ips.most_common()),
        "errors": errors,
    }

"""Findings over the catalogue: every change KMS logged, and every trail that stopped seeing
KMS.

``catalogue_events`` yields one finding per (event name, actor) for the change and service
events no rule of ``key_rules`` decides on, and for KMS event names kmsir does not know, with
the catalogue's severity and title: nothing KMS logged as a change goes unreported. Uses of a
key and reads yield nothing here (the activity rules look at them); a failed change of low
or info severity yields nothing, and a failed call is capped at medium by ``make_finding``.

``trail_blind_spots`` reads CloudTrail's own events (``catalogue.TRAIL_EVENTS``): a trail's
selectors that leave KMS out (classic selectors excluding ``kms.amazonaws.com`` or management
events, advanced selectors whose conditions no KMS event meets), logging stopped, the trail
deleted. Every KMS event after it may be missing from that trail.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from kmsir.trail import key_rules
from kmsir.trail.catalogue import (
    KMS_SOURCE,
    QUIET,
    TRAIL_EVENTS,
    TRAIL_SOURCE,
    KmsEvent,
    classify,
)
from kmsir.trail.events import clip
from kmsir.trail.fields import actor_of, name_of, params_of, source_of
from kmsir.trail.finding import SEVERITIES, Context, Finding, Severity, make_finding

#: Unknown (name, actor) pairs reported one by one; the rest share one finding.
MAX_UNKNOWN = 20
#: Kinds the catalogue rule reports.
_REPORTED = frozenset({"change", "service", "unknown"})


def catalogue_events(events: list[dict[str, Any]], ctx: Context) -> Iterator[Finding]:
    """One finding per (event name, actor) for changes and KMS's own events that no
    specific rule decides on, and for unknown KMS event names."""
    groups: dict[tuple[str, str], list[tuple[dict[str, Any], KmsEvent]]] = {}
    overflow: list[tuple[dict[str, Any], KmsEvent]] = []
    unknown = 0
    for event in events:
        if name_of(event) in QUIET:
            continue  # the activity rules' (whatever service logged it)
        kind = classify(event)
        if kind is None or kind.kind not in _REPORTED or key_rules.claims(event):
            continue
        failed = bool(event.get("errorCode"))
        if failed and kind.kind == "change" and kind.severity in ("info", "low"):
            continue  # a refused routine change changed nothing
        group = (kind.name, actor_of(event))
        if group not in groups and kind.kind == "unknown":
            if unknown >= MAX_UNKNOWN:
                overflow.append((event, kind))
                continue
            unknown += 1
        groups.setdefault(group, []).append((event, kind))
    for (_, actor), items in groups.items():
        worst = max(items, key=lambda item: SEVERITIES.index(item[1].severity))[1]
        calls = [event for event, _ in items]
        refused = sum(1 for e in calls if e.get("errorCode"))
        why = f"{worst.why} {len(calls)} call(s) by {clip(actor)}"
        why += f", {refused} failed." if refused else "."
        yield make_finding("kms-event", worst.severity, worst.title, calls, why)
    if overflow:
        names = sorted({kind.name for _, kind in overflow})
        yield make_finding(
            "kms-event",
            "info",
            f"Unknown KMS events: {len(names)} more name(s)",
            [event for event, _ in overflow],
            f"{len(overflow)} event(s) of names kmsir does not know, among them "
            + ", ".join(json.dumps(clip(n, 60)) for n in names[:5])
            + ": read them in the matched events.",
        )


def trail_blind_spots(events: list[dict[str, Any]], ctx: Context) -> Iterator[Finding]:
    """A trail that stopped logging KMS events: selectors leaving KMS out, logging stopped,
    the trail deleted."""
    for event in events:
        name = name_of(event)
        if source_of(event) != TRAIL_SOURCE or name not in TRAIL_EVENTS:
            continue
        request = params_of(event)
        trail = clip(str(request.get("trailName") or request.get("name") or "a trail"))
        if name == "StopLogging":
            lost, how = {"read", "write"}, f"logging of {trail} was stopped"
        elif name == "DeleteTrail":
            lost, how = {"read", "write"}, f"{trail} was deleted"
        else:
            logged = kms_events_logged(request)
            if logged is None:
                continue  # no selectors in the record: nothing to tell
            lost, how = {"read", "write"} - logged, f"the selectors of {trail} leave KMS out"
        if not lost:
            continue
        severity: Severity
        if "write" in lost:
            severity, title = "critical", "Trail stopped logging KMS events"
            missing = "KMS events" if "read" in lost else "changes to KMS keys"
        else:
            severity, title = "high", "Trail stopped logging KMS read events"
            missing = "uses and reads of KMS keys (Decrypt, GenerateDataKey...)"
            how = f"the selectors of {trail} leave KMS reads out"
        yield make_finding(
            "trail-blind-spot",
            severity,
            title,
            [event],
            f"{how[0].upper()}{how[1:]}: {missing} after it may be missing from that trail "
            "(other trails and the 90-day event history may still hold them).",
            "CloudTrail logging KMS in every Region",
            trail=trail,
        )


def kms_events_logged(request: dict[str, Any]) -> set[str] | None:
    """Which KMS management events (``read``, ``write``) a ``PutEventSelectors`` request
    still has its trail log, or ``None`` when the request holds no selectors. A trail logs an
    event that any of its selectors matches."""
    basic, advanced = request.get("eventSelectors"), request.get("advancedEventSelectors")
    if isinstance(advanced, list) and advanced:
        selectors = [s for s in advanced if isinstance(s, dict)]
        return {
            kind
            for kind, probe in _PROBES.items()
            if any(selector_matches(s, probe) for s in selectors)
        }
    if isinstance(basic, list):
        logged: set[str] = set()
        for selector in basic:
            if not isinstance(selector, dict) or selector.get("includeManagementEvents") is False:
                continue
            excluded = selector.get("excludeManagementEventSources")
            if isinstance(excluded, list) and KMS_SOURCE in excluded:
                continue
            # All (the default) logs both; so does a value no selector holds (forged: a list)
            scope = selector.get("readWriteType")
            logged |= _SCOPES.get(scope, _BOTH) if isinstance(scope, str) else _BOTH
        return logged
    return None


#: What a classic selector's ``readWriteType`` logs (``All``, the default, logs both).
_SCOPES: dict[str, frozenset[str]] = {
    "ReadOnly": frozenset({"read"}),
    "WriteOnly": frozenset({"write"}),
}
_BOTH = frozenset({"read", "write"})
#: A KMS change and a KMS read, as advanced event selectors see them.
_PROBES: dict[str, dict[str, str]] = {
    "write": {
        "eventCategory": "Management",
        "eventSource": KMS_SOURCE,
        "readOnly": "false",
        "eventName": "ScheduleKeyDeletion",
        "eventType": "AwsApiCall",
    },
    "read": {
        "eventCategory": "Management",
        "eventSource": KMS_SOURCE,
        "readOnly": "true",
        "eventName": "Decrypt",
        "eventType": "AwsApiCall",
    },
}

#: Advanced selector operators: (the event's value, the listed values) -> whether it meets them.
_OPERATORS: dict[str, Callable[[str, list[str]], bool]] = {
    "equals": lambda v, vs: v in vs,
    "notEquals": lambda v, vs: v not in vs,
    "startsWith": lambda v, vs: any(v.startswith(x) for x in vs),
    "notStartsWith": lambda v, vs: not any(v.startswith(x) for x in vs),
    "endsWith": lambda v, vs: any(v.endswith(x) for x in vs),
    "notEndsWith": lambda v, vs: not any(v.endswith(x) for x in vs),
}


def selector_matches(selector: dict[str, Any], probe: dict[str, str]) -> bool:
    """Whether an advanced selector (every one of its field conditions) matches the probe.
    A condition on a field the probe does not model is taken as met: only what surely
    leaves KMS out is reported."""
    conditions = selector.get("fieldSelectors")
    if not isinstance(conditions, list):
        return True
    for condition in conditions:
        if not isinstance(condition, dict) or not isinstance(condition.get("field"), str):
            continue
        value = probe.get(condition["field"])
        if value is None:
            continue
        for operator, test in _OPERATORS.items():
            listed = condition.get(operator)
            if isinstance(listed, list) and not test(value, [str(x) for x in listed]):
                return False
    return True

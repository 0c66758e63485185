"""Practice 3's alarms: who is told when a key is scheduled for deletion, disabled or given a
new policy (``kms-change-alarms``), and when a key pending deletion is still used
(``kms-pending-deletion-use-alarm``).

Either watcher counts: an EventBridge rule of the default bus, enabled, whose event pattern
matches the CloudTrail event and that has a target; or a CloudWatch Logs metric filter whose
pattern names the event, with a CloudWatch alarm on its metric that has an action. An event
pattern is matched the way EventBridge matches it, against the event CloudTrail would send
(``source`` aws.kms, ``detail-type`` "AWS API Call via CloudTrail"): a pattern without an
``eventName`` filter covers every KMS call, one on some keys only covers none in general.
A metric filter pattern is read for the event names it requires (``$.eventName = X``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kmsir.actions.audit.context import MAX_PAGES, AuditContext, Unavailable
from kmsir.actions.audit.monitoring_trails import KMS, partition, setting, trails
from kmsir.actions.audit.rules import Result, cannot

#: The key changes someone must be told of.
WATCHED = ("ScheduleKeyDeletion", "DisableKey", "PutKeyPolicy")
#: The KMS error a cryptographic operation on a key pending deletion gets (AWS's alarm page:
#: "Key ARN is pending deletion").
PENDING = "pending deletion"


@dataclass
class Watch:
    """What may watch KMS events, each read once per review: the Region's rules (and the
    targets of those matching a KMS event), and the metric filters and alarms of the Regions
    where a trail's CloudWatch Logs group may get the Region's KMS events (an organisation or
    multi-Region trail's group is in its home Region). A listing refused is kept under
    ``rules``, ``filters``, ``alarms`` or a rule's ARN (its targets)."""

    rules: list[dict[str, Any]] = field(default_factory=list)
    targets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    #: (Region, metric filter)
    filters: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    #: (Region, metric alarm)
    alarms: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    refused: dict[str, Unavailable] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)


def event(audit: AuditContext, name: str, **detail: Any) -> dict[str, Any]:
    """The EventBridge event CloudTrail sends for KMS call ``name`` in this account."""
    return {
        "source": "aws.kms",
        "detail-type": "AWS API Call via CloudTrail",
        "account": audit.account,
        "region": audit.region,
        "detail": {
            "eventSource": KMS,
            "eventName": name,
            "eventCategory": "Management",
            "awsRegion": audit.region,
            "readOnly": name not in WATCHED,
            **detail,
        },
    }


def pending_use(audit: AuditContext) -> dict[str, Any]:
    """A ``Decrypt`` refused because its key is pending deletion, as EventBridge sees it."""
    key = f"arn:{partition(audit)}:kms:{audit.region}:{audit.account}:key/example"
    return event(
        audit,
        "Decrypt",
        errorCode="KMSInvalidStateException",
        errorMessage=f"{key} is {PENDING}.",
    )


def watch(audit: AuditContext) -> Watch:
    """The rules, metric filters and alarms of the Region, read once per review."""
    return audit.shared("monitoring:watch", lambda: _read(audit))


def _read(audit: AuditContext) -> Watch:
    found = Watch()
    wanted = [*(event(audit, n) for n in WATCHED), pending_use(audit)]
    try:
        listed = audit.pages("events", "ListRules", "list_rules", "Rules")
        found.evidence.append(audit.evidence("events/rules", {"Rules": listed}))
        # ENABLED_WITH_ALL_CLOUDTRAIL_MANAGEMENT_EVENTS also gets Get/List/Describe events
        found.rules = [r for r in listed if str(r.get("State", "")).startswith("ENABLED")]
    except Unavailable as exc:
        found.refused["rules"] = exc
    for rule in found.rules:
        if not any(matches(_pattern(rule), e) for e in wanted):
            continue
        try:
            found.targets[str(rule["Arn"])] = audit.pages(
                "events", "ListTargetsByRule", "list_targets_by_rule", "Targets", Rule=rule["Name"]
            )
        except Unavailable as exc:
            found.refused[str(rule["Arn"])] = exc
    if found.targets:
        found.evidence.append(audit.evidence("events/rule-targets", found.targets))
    for region in _log_regions(audit):
        try:
            filters = _listed(audit, region, "logs", "DescribeMetricFilters", "metricFilters")
            found.evidence.append(
                audit.evidence(f"logs/metric-filters-{region}", {"metricFilters": filters})
            )
            found.filters.extend((region, f) for f in filters)
        except Unavailable as exc:
            found.refused.setdefault("filters", exc)
            continue
        if not filters:
            continue
        try:
            alarms = _listed(audit, region, "cloudwatch", "DescribeAlarms", "MetricAlarms")
            found.evidence.append(
                audit.evidence(f"cloudwatch/alarms-{region}", {"MetricAlarms": alarms})
            )
            found.alarms.extend((region, a) for a in alarms)
        except Unavailable as exc:
            found.refused.setdefault("alarms", exc)
    return found


def _log_regions(audit: AuditContext) -> list[str]:
    """The review's Region, and those of the log groups trails logging KMS events send to
    (their ARNs say). Trails refused: the review's Region only (their checks say why)."""
    regions = [audit.region]
    try:
        seen = trails(audit).items
    except Unavailable:
        seen = ()
    for trail in seen:
        group = str(trail.description.get("CloudWatchLogsLogGroupArn") or "")
        if group.count(":") >= 4 and trail.unavailable is None and trail.logs_kms():
            regions.append(group.split(":")[3])
    return list(dict.fromkeys(regions))


def _listed(audit: AuditContext, region: str, service: str, operation: str, key: str) -> list[Any]:
    """Every item of a paginated listing of ``region`` (at most ``MAX_PAGES`` pages)."""
    from botocore import xform_name

    factory: Any = audit.ctx.clients
    client = factory.client(service, region)

    def read() -> list[Any]:
        items: list[Any] = []
        for number, page in enumerate(client.get_paginator(xform_name(operation)).paginate(), 1):
            items.extend(page.get(key) or [])
            if number >= MAX_PAGES and (page.get("NextToken") or page.get("nextToken")):
                audit.cut.append(f"{service} {operation} in {region}: {MAX_PAGES} pages read")
                break
        return items

    return audit.call(service, operation, read, what=f"in {region}")


def _pattern(rule: dict[str, Any]) -> Any:
    try:
        return json.loads(rule.get("EventPattern") or "null")
    except ValueError:
        return None


def covered(
    found: Watch, wanted: dict[str, Any], names: Callable[[str], bool]
) -> tuple[list[str], Unavailable | None]:
    """The rules and alarms that would tell someone of event ``wanted`` (whose metric filter
    pattern ``names`` it), and the refusal that may hide another."""
    by: list[str] = []
    unknown = found.refused.get("rules")
    for rule in found.rules:
        arn = str(rule["Arn"])
        if not matches(_pattern(rule), wanted):
            continue
        if arn in found.refused:
            unknown = unknown or found.refused[arn]
        elif found.targets.get(arn):
            by.append(arn)
    unknown = unknown or found.refused.get("filters")
    for region, metric_filter in found.filters:
        if not names(str(metric_filter.get("filterPattern") or "")):
            continue
        unknown = unknown or found.refused.get("alarms")
        metrics = {
            (region, t.get("metricNamespace"), t.get("metricName"))
            for t in metric_filter.get("metricTransformations") or []
        }
        by.extend(str(a["AlarmArn"]) for r, a in found.alarms if _alarms_on(r, a, metrics))
    return sorted(set(by)), unknown


def _alarms_on(region: str, alarm: dict[str, Any], metrics: set[tuple[Any, ...]]) -> bool:
    """An alarm with an action on one of ``metrics`` (Region, namespace, name), itself or
    within its metric math."""
    if not alarm.get("ActionsEnabled", True) or not alarm.get("AlarmActions"):
        return False
    watched = {(region, alarm.get("Namespace"), alarm.get("MetricName"))}
    for query in alarm.get("Metrics") or []:
        metric = (query.get("MetricStat") or {}).get("Metric") or {}
        watched.add((region, metric.get("Namespace"), metric.get("MetricName")))
    return bool(watched & metrics)


def names_event(name: str) -> Callable[[str], bool]:
    """Whether a metric filter pattern requires CloudTrail event ``name``: a JSON pattern
    with ``$.eventName = name`` (``*`` wildcards), or a term pattern naming it."""

    def test(pattern: str) -> bool:
        if pattern.lstrip().startswith("{"):
            wanted = re.findall(r'\$\.eventName\s*=\s*"?([\w*]+)"?', pattern)
            return any(_wildcard(w, name) for w in wanted)
        return re.search(rf"(?<![\w-]){re.escape(name)}(?!\w)", pattern) is not None

    return test


def names_pending(pattern: str) -> bool:
    """Whether a metric filter pattern looks for KMS's "is pending deletion" error."""
    return PENDING in pattern.lower()


def _wildcard(pattern: str, value: str) -> bool:
    return re.fullmatch(".*".join(re.escape(p) for p in pattern.split("*")), value) is not None


def matches(pattern: Any, data: Any) -> bool:
    """Whether an EventBridge event pattern matches ``data`` (an event or part of one):
    exact values, ``prefix``, ``suffix``, ``anything-but``, ``equals-ignore-case``,
    ``wildcard``, ``exists`` and ``$or``; numeric and CIDR filters never match here."""
    if not isinstance(pattern, dict):
        return False
    data = data if isinstance(data, dict) else {}
    for key, wanted in pattern.items():
        if key == "$or":
            if not any(matches(p, data) for p in wanted or []):
                return False
        elif isinstance(wanted, dict):
            if not matches(wanted, data.get(key)):
                return False
        elif not isinstance(wanted, list) or not any(_value(w, data.get(key)) for w in wanted):
            return False
    return True


def _value(wanted: Any, value: Any) -> bool:
    """One element of a pattern's list against a field's value (a list: any element)."""
    if isinstance(value, list):
        return any(_value(wanted, v) for v in value) if value else _value(wanted, None)
    if not isinstance(wanted, dict):
        return value is not None and wanted == value
    if "exists" in wanted:
        return (value is not None) == bool(wanted["exists"])
    if value is None:
        return False
    if "anything-but" in wanted:
        excluded = wanted["anything-but"]
        if isinstance(excluded, dict):
            return not _value(excluded, value)
        return value not in (excluded if isinstance(excluded, list) else [excluded])
    if not isinstance(value, str):
        return False
    text = {k: v for k, v in wanted.items() if isinstance(v, str)}
    if "prefix" in text:
        return value.startswith(text["prefix"])
    if "suffix" in text:
        return value.endswith(text["suffix"])
    if "equals-ignore-case" in text:
        return value.lower() == text["equals-ignore-case"].lower()
    if "wildcard" in text:
        return _wildcard(text["wildcard"], value)
    if isinstance(wanted.get("prefix"), dict):  # {"prefix": {"equals-ignore-case": "x"}}
        return value.lower().startswith(str(wanted["prefix"].get("equals-ignore-case", "")).lower())
    return False


def change_alarms(audit: AuditContext) -> Iterator[Result]:
    """kms-change-alarms: each of ``WATCHED`` covered, per event."""
    found = watch(audit)
    passed: list[tuple[str, str]] = []
    for name in WATCHED:
        resource = setting(audit, "kms", f"alarm-on/{name}")
        by, unknown = covered(found, event(audit, name), names_event(name))
        if by:
            passed.append((resource, f"{name}: {', '.join(by)}"))
        elif unknown is not None:
            yield cannot(unknown, (resource,))
        else:
            detail = f"{name}: no enabled EventBridge rule with a target, nor alarmed metric filter"
            yield Result("fail", (resource,), detail, tuple(found.evidence))
    if passed:
        detail = "; ".join(d for _, d in passed)
        yield Result("pass", tuple(r for r, _ in passed), detail, tuple(found.evidence))


def pending_deletion_alarm(audit: AuditContext) -> Iterator[Result]:
    """kms-pending-deletion-use-alarm: AWS's metric filter and alarm, or a matching rule."""
    found = watch(audit)
    resource = setting(audit, "kms", "alarm-on/pending-deletion-use")
    by, unknown = covered(found, pending_use(audit), names_pending)
    if by:
        yield Result("pass", (resource,), f"told by {', '.join(by)}", tuple(found.evidence))
    elif unknown is not None:
        yield cannot(unknown, (resource,))
    else:
        detail = (
            'no alarmed metric filter on the "is pending deletion" error, nor enabled '
            "EventBridge rule with a target matching it"
        )
        yield Result("fail", (resource,), detail, tuple(found.evidence))

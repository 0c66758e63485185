"""Findings about activity on the key: who uses it, how often, from where, and who is refused.

The incident window is the last part of the events (``Context.window_start`` onwards);
everything before it is the baseline that "new principal", "new IP" and "volume spike" compare
against. Without a window start (or a baseline) those rules find nothing; bursts of
AccessDenied are found anywhere.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from kmsir.trail.events import clip
from kmsir.trail.fields import account_of, actor_of, event_time, name_of, principal_of, text_of
from kmsir.trail.finding import Context, Finding, Severity, make_finding

DATA_OPERATIONS = frozenset(
    {
        "Decrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
        "ReEncrypt",
    }
)
ACCESS_DENIED = frozenset({"AccessDenied", "AccessDeniedException"})
#: AccessDenied calls by one principal within this long count as a burst...
BURST_SPAN = timedelta(minutes=10)
#: ...when there are at least this many.
BURST_COUNT = 5
#: A principal's window rate this many times its baseline rate is a spike.
SPIKE_FACTOR = 10.0
SPIKE_MIN_EVENTS = 20


def access_denied_bursts(events: list[dict[str, Any]], ctx: Context) -> Iterator[Finding]:
    """Several AccessDenied calls against the key by one principal in a short time."""
    by_principal: dict[str, list[tuple[datetime, dict[str, Any]]]] = defaultdict(list)
    for event in events:
        moment = event_time(event)
        if text_of(event.get("errorCode")) in ACCESS_DENIED and moment is not None:
            by_principal[principal_of(event)].append((moment, event))
    for principal, items in by_principal.items():
        items.sort(key=lambda item: item[0])
        start = 0
        for end in range(len(items)):
            while items[end][0] - items[start][0] > BURST_SPAN:
                start += 1
            if end - start + 1 >= BURST_COUNT:
                first = items[start][0]
                burst = [e for moment, e in items if first <= moment <= first + BURST_SPAN]
                yield make_finding(
                    "access-denied-burst",
                    "medium",
                    "Bursts of AccessDenied",
                    burst,
                    f"{clip(principal)} was refused {len(burst)} times within "
                    f"{int(BURST_SPAN.total_seconds() // 60)} minutes: someone may be "
                    "probing the key.",
                    "Least-privilege key policies",
                )
                break


def _split(
    events: list[dict[str, Any]], ctx: Context
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if ctx.window_start is None:
        return [], events
    baseline: list[dict[str, Any]] = []
    window: list[dict[str, Any]] = []
    for event in events:
        moment = event_time(event)
        (window if moment is None or moment >= ctx.window_start else baseline).append(event)
    return baseline, window


def new_data_principals(events: list[dict[str, Any]], ctx: Context) -> Iterator[Finding]:
    """Decrypt/GenerateDataKey by a principal or account not seen before the window."""
    baseline, window = _split(events, ctx)
    if not baseline:
        return
    seen = {actor_of(e) for e in baseline if name_of(e) in DATA_OPERATIONS}
    seen_accounts = {account_of(e) for e in baseline if name_of(e) in DATA_OPERATIONS}
    fresh: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in window:
        if name_of(event) in DATA_OPERATIONS and actor_of(event) not in seen:
            fresh[actor_of(event)].append(event)
    for principal, items in fresh.items():
        account = account_of(items[0])
        new_account = account not in seen_accounts
        outside = bool(account and ctx.key_account and account != ctx.key_account)
        severity: Severity = "high" if (new_account or outside) else "medium"
        shown = clip(str(account), 40)
        where = (
            f"from outside account {shown}"
            if outside
            else (f"from account {shown}, not seen before" if new_account else "not seen before")
        )
        yield make_finding(
            "new-data-principal",
            severity,
            "Data key use by a new principal",
            items,
            f"{clip(principal)} ({where}) made {len(items)} data call(s) on the key during "
            "the incident window.",
            "Least-privilege key policies",
        )


def volume_spikes(events: list[dict[str, Any]], ctx: Context) -> Iterator[Finding]:
    """A principal's data calls far above its own baseline rate."""
    baseline, window = _split(events, ctx)
    times = [t for t in (event_time(e) for e in events) if t is not None]
    if not baseline or not window or ctx.window_start is None or not times:
        return
    base_span = max((ctx.window_start - min(times)).total_seconds(), 3600.0)
    window_span = max((max(times) - ctx.window_start).total_seconds(), 3600.0)
    base = Counter(actor_of(e) for e in baseline if name_of(e) in DATA_OPERATIONS)
    recent: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in window:
        if name_of(event) in DATA_OPERATIONS:
            recent[actor_of(event)].append(event)
    for principal, items in recent.items():
        if principal not in base or len(items) < SPIKE_MIN_EVENTS:
            continue
        factor = (len(items) / window_span) / (base[principal] / base_span)
        if factor >= SPIKE_FACTOR:
            yield make_finding(
                "volume-spike",
                "medium",
                "Spike in data calls",
                items,
                f"{clip(principal)} made {len(items)} data calls in the window, "
                f"{factor:.0f}x its baseline rate.",
                None,
                factor=round(factor, 1),
            )


def new_sources(events: list[dict[str, Any]], ctx: Context) -> Iterator[Finding]:
    """Activity from a source IP or user agent not seen before the window."""
    baseline, window = _split(events, ctx)
    if not baseline:
        return
    for field_name, title in (
        ("sourceIPAddress", "New source IP"),
        ("userAgent", "New user agent"),
    ):
        # compared as text: a forged address or user agent may be an object or a list
        seen = {text_of(e.get(field_name)) for e in baseline}
        fresh: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in window:
            value = text_of(event.get(field_name))
            if value and value not in seen:
                fresh[value].append(event)
        for value, items in fresh.items():
            yield make_finding(
                "new-source",
                "low",
                title,
                items,
                f"{len(items)} call(s) came from {field_name} {value[:120]!r}, "
                "not seen before the incident window.",
            )

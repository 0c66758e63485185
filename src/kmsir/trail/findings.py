"""KMS findings over a key's CloudTrail events: the few that matter, surfaced first.

Rules are small functions over the events sorted by time, registered in ``RULES``. The
incident window is the last part of the events (``window_start`` onwards); everything before
it is the baseline that "new principal", "new IP" and "volume spike" compare against. A failed
call (``errorCode``) never raises a finding above medium on its own.

Events are attacker-controlled: any field may be missing or of any type, and text from them is
cut (``clip``) before it goes into a finding, so a megabyte of user agent stays in the event.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from kmsir.trail.events import clip

Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "low", "medium", "high", "critical")

#: Operations that, granted together with others, hand out more than using the key.
BROAD_GRANT_OPERATIONS = frozenset({"CreateGrant", "ReEncryptFrom", "ReEncryptTo", "RetireGrant"})
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
#: Names (operations, risky statements) a finding lists before saying how many more.
MAX_LISTED = 20


@dataclass(frozen=True)
class Finding:
    """One thing a responder should look at, with the events behind it."""

    id: str
    severity: Severity
    title: str
    event_ids: list[str]
    event_name: str
    event_time: str
    principal: str
    why: str
    practice: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The finding as a JSON object."""
        return asdict(self)


@dataclass(frozen=True)
class Context:
    """What rules know besides the events: the key's account, the incident window, and the
    key's ids (so an alias pointed *at* the key is not mistaken for one pointed away)."""

    key_account: str | None
    window_start: datetime | None
    key_ids: frozenset[str] = frozenset()


Rule = Callable[[list[dict[str, Any]], Context], Iterator[Finding]]


def name_of(event: dict[str, Any]) -> str:
    """The event name, or ``""`` when it is missing or not text."""
    name = event.get("eventName")
    return name if isinstance(name, str) else ""


def principal_of(event: dict[str, Any]) -> str:
    """Who made the call: the identity ARN, or the invoking service."""
    identity = event.get("userIdentity") or {}
    if not isinstance(identity, dict):
        return "unknown"
    return str(
        identity.get("arn") or identity.get("invokedBy") or identity.get("type") or "unknown"
    )


def actor_of(event: dict[str, Any]) -> str:
    """Who is behind the call over time: an assumed role's role, not each of its sessions
    (every new instance, task or Lambda run is a new session of the same role)."""
    identity = event.get("userIdentity") or {}
    if isinstance(identity, dict):
        context = identity.get("sessionContext")
        issuer = context.get("sessionIssuer") if isinstance(context, dict) else None
        if isinstance(issuer, dict) and isinstance(issuer.get("arn"), str):
            return str(issuer["arn"])
    return principal_of(event)


def params_of(event: dict[str, Any]) -> dict[str, Any]:
    """The request parameters, or an empty mapping when they are absent or not a mapping."""
    value = event.get("requestParameters")
    return value if isinstance(value, dict) else {}


def account_of(event: dict[str, Any]) -> str | None:
    """The account of the caller."""
    identity = event.get("userIdentity") or {}
    return (
        str(identity.get("accountId"))
        if isinstance(identity, dict) and identity.get("accountId")
        else None
    )


def event_time(event: dict[str, Any]) -> datetime | None:
    """The event's time (UTC when it names no zone), or ``None`` when it has none."""
    value = event.get("eventTime")
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def key_account(events: Iterable[dict[str, Any]], key_arn: str | None) -> str | None:
    """The key's account: from its ARN, else the account of the keys events list as used."""
    if key_arn and key_arn.startswith("arn:") and len(key_arn.split(":")) > 5:
        return key_arn.split(":")[4]
    counts: Counter[str] = Counter()
    for event in events:
        for resource in _resources(event):
            if isinstance(resource, dict) and resource.get("type") == "AWS::KMS::Key":
                arn = str(resource.get("ARN", ""))
                if arn.count(":") >= 5:
                    counts[arn.split(":")[4]] += 1
    return counts.most_common(1)[0][0] if counts else None


def key_ids_in(events: Iterable[dict[str, Any]], key_arn: str | None) -> frozenset[str]:
    """The key's id: from its ARN, else the key the events list most often as used."""
    if key_arn and ":key/" in key_arn:
        return frozenset({key_arn.rsplit(":key/", 1)[1]})
    counts: Counter[str] = Counter()
    for event in events:
        for resource in _resources(event):
            arn = str(resource.get("ARN", "")) if isinstance(resource, dict) else ""
            if ":key/" in arn:
                counts[arn.rsplit(":key/", 1)[1]] += 1
    return frozenset({counts.most_common(1)[0][0]}) if counts else frozenset()


def _resources(event: dict[str, Any]) -> list[Any]:
    resources = event.get("resources")
    return resources if isinstance(resources, list) else []


def context_for(
    events: list[dict[str, Any]], key_arn: str | None, window_start: datetime | None
) -> Context:
    """The findings context for a key's events."""
    return Context(
        key_account=key_account(events, key_arn),
        window_start=window_start,
        key_ids=key_ids_in(events, key_arn),
    )


def _finding(
    rule: str,
    severity: Severity,
    title: str,
    events: list[dict[str, Any]],
    why: str,
    practice: str | None = None,
    **details: Any,
) -> Finding:
    first = events[0]
    ids = [str(e.get("eventID", "")) for e in events]
    digest = hashlib.sha256(json.dumps([rule, ids]).encode()).hexdigest()[:12]
    failed_only = all(e.get("errorCode") for e in events)
    if failed_only and SEVERITIES.index(severity) > SEVERITIES.index("medium"):
        severity = "medium"
        why += " (the call failed)"
    return Finding(
        id=f"{rule}-{digest}",
        severity=severity,
        title=title,
        event_ids=ids,
        event_name=clip(str(first.get("eventName", ""))),
        event_time=clip(str(first.get("eventTime", ""))),
        principal=clip(principal_of(first)),
        why=why,
        practice=practice,
        details=details,
    )


def _named(names: set[str]) -> Callable[[dict[str, Any]], bool]:
    return lambda e: name_of(e) in names


# -- rules ---------------------------------------------------------------------------------


def deletion_and_disable(events: list[dict[str, Any]], ctx: Context) -> Iterator[Finding]:
    """The key scheduled for deletion, disabled, or its imported material deleted."""
    table: dict[str, tuple[Severity, str, str]] = {
        "ScheduleKeyDeletion": (
            "critical",
            "Key scheduled for deletion",
            "Once deleted, everything encrypted under the key is lost.",
        ),
        "DeleteImportedKeyMaterial": (
            "critical",
            "Imported key material deleted",
            "The key cannot decrypt until the same material is imported again.",
        ),
        "DeleteKey": (
            "critical",
            "Key deleted",
            "The key and everything encrypted under it can no longer be used.",
        ),
        "DisableKey": (
            "high",
            "Key disabled",
            "Every cryptographic use of the key fails while it is disabled.",
        ),
    }
    for event in events:
        name = name_of(event)
        if name in table:
            severity, title, why = table[name]
            window = params_of(event).get("pendingWindowInDays")
            if window is not None:
                why += f" Waiting period: {clip(str(window), 20)} days."
            yield _finding(
                "key-state",
                severity,
                title,
                [event],
                why,
                "Deletion guarded: disable first, 30-day waiting period",
            )


def _risky_statements(policy: Any, key_account: str | None) -> list[str]:
    if isinstance(policy, str):
        try:
            policy = json.loads(policy)
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's limit
            return []
    if not isinstance(policy, dict):
        return []
    found = policy.get("Statement", [])
    risky = []
    for statement in found if isinstance(found, list) else [found]:
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
            continue
        principal = statement.get("Principal")
        aws = principal.get("AWS") if isinstance(principal, dict) else principal
        values = aws if isinstance(aws, list) else [aws]
        sid = clip(str(statement.get("Sid", "(no Sid)")), 80)
        if "*" in values and not statement.get("Condition"):
            risky.append(f"{sid}: Principal * without conditions")
        for value in values:
            text = str(value)
            account = (
                text if text.isdigit() else (text.split(":")[4] if text.count(":") >= 5 else None)
            )
            if account and key_account and account != key_account:
                risky.append(f"{sid}: outside account {clip(account, 40)}")
    return risky[:MAX_LISTED]


def policy_changed(events: list[dict[str, Any]], ctx: Context) -> Iterator[Finding]:
    """The key policy was replaced; its risky statements are named."""
    for event in filter(_named({"PutKeyPolicy"}), events):
        policy = params_of(event).get("policy")
        risky = _risky_statements(policy, ctx.key_account)
        why = "The key policy decides who may use and manage the key."
        if risky:
            why += " Risky statements: " + "; ".join(risky) + "."
        yield _finding(
            "policy-changed",
            "high",
            "Key policy changed",
            [event],
            why,
            "Least-privilege key policies",
            risky_statements=risky,
        )


def grant_created(events: list[dict[str, Any]], ctx: Context) -> Iterator[Finding]:
    """A grant for an outside account, or with broad operations."""
    for event in filter(_named({"CreateGrant"}), events):
        request = params_of(event)
        grantee = clip(str(request.get("granteePrincipal", "")))
        parts = grantee.split(":")
        account = clip(parts[4], 40) if len(parts) > 4 else None
        listed = request.get("operations")
        operations = {str(o) for o in listed} if isinstance(listed, list) else set()
        outside = bool(account and ctx.key_account and account != ctx.key_account)
        identity = event.get("userIdentity")
        by_service = isinstance(identity, dict) and str(identity.get("invokedBy", "")).endswith(
            ".amazonaws.com"
        )
        # AWS services (EBS, RDS...) routinely grant themselves broad, constrained operations
        broad = not by_service and (
            bool(operations & BROAD_GRANT_OPERATIONS) or len(operations) >= 6
        )
        if not (outside or broad):
            continue
        reasons = ([f"grantee {grantee} is in outside account {account}"] if outside else []) + (
            [f"broad operations {_listed(sorted(operations))}"] if broad else []
        )
        yield _finding(
            "grant-created",
            "high",
            "Grant created for an outside account"
            if outside
            else "Grant created with broad operations",
            [event],
            "Grants give access without a policy change: " + "; ".join(reasons) + ".",
            "Grants reviewed: no stale or external grantees",
            grantee=grantee,
        )


def rotation_disabled(events: list[dict[str, Any]], ctx: Context) -> Iterator[Finding]:
    """Automatic rotation switched off."""
    for event in filter(_named({"DisableKeyRotation"}), events):
        yield _finding(
            "rotation-disabled",
            "medium",
            "Key rotation disabled",
            [event],
            "Without rotation the same key material protects data indefinitely.",
            "Rotation enabled (90 days or less)",
        )


def alias_changed(events: list[dict[str, Any]], ctx: Context) -> Iterator[Finding]:
    """An alias of the key repointed elsewhere or deleted."""
    for event in filter(_named({"UpdateAlias", "DeleteAlias"}), events):
        request = params_of(event)
        alias = clip(str(request.get("aliasName", "an alias")))
        target = clip(str(request.get("targetKeyId") or ""))
        if event.get("eventName") == "DeleteAlias":
            why = f"{alias} was deleted: applications that use it stop working."
        elif target.rsplit("/", 1)[-1] in ctx.key_ids:
            yield _finding(
                "alias-changed",
                "low",
                "Alias pointed at this key",
                [event],
                f"{alias} now points to this key.",
            )
            continue
        else:
            why = (
                f"{alias} now points to {target or 'another key'}: applications encrypt "
                "under a key the attacker may control."
            )
        yield _finding("alias-changed", "high", "Alias repointed or deleted", [event], why)


def key_store_disconnected(events: list[dict[str, Any]], ctx: Context) -> Iterator[Finding]:
    """A custom key store disconnected (its keys become unusable)."""
    for event in filter(_named({"DisconnectCustomKeyStore", "DeleteCustomKeyStore"}), events):
        yield _finding(
            "key-store",
            "high",
            "Custom key store disconnected",
            [event],
            "Keys in a disconnected key store cannot be used.",
            "Key store and origin recorded",
        )


def access_denied_bursts(events: list[dict[str, Any]], ctx: Context) -> Iterator[Finding]:
    """Several AccessDenied calls against the key by one principal in a short time."""
    by_principal: dict[str, list[tuple[datetime, dict[str, Any]]]] = defaultdict(list)
    for event in events:
        moment = event_time(event)
        if _text(event.get("errorCode")) in ACCESS_DENIED and moment is not None:
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
                yield _finding(
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
        yield _finding(
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
            yield _finding(
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
        seen = {_text(e.get(field_name)) for e in baseline}
        fresh: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in window:
            value = _text(event.get(field_name))
            if value and value not in seen:
                fresh[value].append(event)
        for value, items in fresh.items():
            yield _finding(
                "new-source",
                "low",
                title,
                items,
                f"{len(items)} call(s) came from {field_name} {value[:120]!r}, "
                "not seen before the incident window.",
            )


def _text(value: Any) -> str:
    """A field compared or shown as text: ``""`` for none, JSON for an object or a list."""
    if value is None or isinstance(value, str):
        return value or ""
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        return str(value)


def _listed(items: list[str]) -> str:
    """Names for a sentence: the first ``MAX_LISTED``, each cut, then how many more."""
    shown = ", ".join(clip(i, 60) for i in items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


RULES: dict[str, Rule] = {
    "key-state": deletion_and_disable,
    "policy-changed": policy_changed,
    "grant-created": grant_created,
    "rotation-disabled": rotation_disabled,
    "alias-changed": alias_changed,
    "key-store": key_store_disconnected,
    "access-denied-burst": access_denied_bursts,
    "new-data-principal": new_data_principals,
    "volume-spike": volume_spikes,
    "new-source": new_sources,
}


def _one_per_call(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """A cross-account call is logged in both accounts (same ``sharedEventID``): once here."""
    seen: set[str] = set()
    for event in events:
        shared = event.get("sharedEventID")
        if isinstance(shared, str):
            if shared in seen:
                continue
            seen.add(shared)
        yield event


def findings(events: Iterable[dict[str, Any]], ctx: Context) -> list[Finding]:
    """Every finding over the events, most severe first, then by time."""
    ordered = sorted(_one_per_call(events), key=lambda e: str(e.get("eventTime", "")))
    found = [f for rule in RULES.values() for f in rule(ordered, ctx)]
    return sorted(found, key=lambda f: (-SEVERITIES.index(f.severity), f.event_time))

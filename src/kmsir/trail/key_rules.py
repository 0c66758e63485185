"""Findings about changes to the key itself: its state, policy, grants, rotation, aliases and
key store.

Each rule yields a finding per event that changed the key in a way a responder must see (the
key scheduled for deletion, a policy with risky statements, a grant to an outside account...),
whatever the time: unlike the activity rules, these need no baseline.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from kmsir.trail.catalogue import classify, lockout_bypassed
from kmsir.trail.events import clip
from kmsir.trail.fields import name_of, params_of
from kmsir.trail.finding import Context, Finding, make_finding

#: Operations that, granted together with others, hand out more than using the key.
BROAD_GRANT_OPERATIONS = frozenset({"CreateGrant", "ReEncryptFrom", "ReEncryptTo", "RetireGrant"})
#: Names (operations, risky statements) a finding lists before saying how many more.
MAX_LISTED = 20
#: What ``deletion_and_disable`` looks at.
STATE_EVENTS = frozenset(
    {"ScheduleKeyDeletion", "DeleteImportedKeyMaterial", "DeleteKey", "DisableKey"}
)
#: Every event name a rule here decides on; the catalogue rule (``event_rules``) leaves them
#: alone (a grant or an alias change these rules find harmless is harmless).
CLAIMED = STATE_EVENTS | {
    "PutKeyPolicy",
    "CreateGrant",
    "DisableKeyRotation",
    "UpdateAlias",
    "DeleteAlias",
    "DisconnectCustomKeyStore",
    "DeleteCustomKeyStore",
}


def claims(event: dict[str, Any]) -> bool:
    """Whether a rule here decides on the event (a key created with the lockout safety
    check bypassed is a policy change)."""
    name = name_of(event)
    return name in CLAIMED or (name == "CreateKey" and lockout_bypassed(event))


def _named(names: frozenset[str] | set[str]) -> Callable[[dict[str, Any]], bool]:
    """Events of these names that KMS logged (or that name no source)."""
    return lambda e: name_of(e) in names and classify(e) is not None


def deletion_and_disable(events: list[dict[str, Any]], ctx: Context) -> Iterator[Finding]:
    """The key scheduled for deletion, disabled, deleted, or its imported material deleted
    (severity, title and why from the catalogue)."""
    for event in filter(_named(STATE_EVENTS), events):
        kind = classify(event)
        if kind is None:
            continue
        why = kind.why
        window = params_of(event).get("pendingWindowInDays")
        if window is not None:
            why += f" Waiting period: {clip(str(window), 20)} days."
        yield make_finding(
            "key-state",
            kind.severity,
            kind.title,
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
    """The key policy was replaced, or a key created with the lockout safety check bypassed
    (critical either way when bypassed); the policy's risky statements are named."""
    for event in filter(_named({"PutKeyPolicy", "CreateKey"}), events):
        if name_of(event) == "CreateKey" and not lockout_bypassed(event):
            continue  # an ordinary new key: the catalogue rule's
        kind = classify(event)
        if kind is None:
            continue
        policy = params_of(event).get("policy")
        risky = _risky_statements(policy, ctx.key_account)
        why = kind.why
        if risky:
            why += " Risky statements: " + "; ".join(risky) + "."
        yield make_finding(
            "policy-changed",
            kind.severity,
            kind.title,
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
        yield make_finding(
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
        yield make_finding(
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
            yield make_finding(
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
        yield make_finding("alias-changed", "high", "Alias repointed or deleted", [event], why)


def key_store_disconnected(events: list[dict[str, Any]], ctx: Context) -> Iterator[Finding]:
    """A custom key store disconnected or deleted (its keys become unusable)."""
    for event in filter(_named({"DisconnectCustomKeyStore", "DeleteCustomKeyStore"}), events):
        kind = classify(event)
        if kind is not None:
            yield make_finding(
                "key-store",
                kind.severity,
                kind.title,
                [event],
                kind.why,
                "Key store and origin recorded",
            )


def _listed(items: list[str]) -> str:
    """Names for a sentence: the first ``MAX_LISTED``, each cut, then how many more."""
    shown = ", ".join(clip(i, 60) for i in items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")

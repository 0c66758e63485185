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

from kmsir.trail.events import clip
from kmsir.trail.fields import name_of, params_of
from kmsir.trail.finding import Context, Finding, Severity, make_finding

#: Operations that, granted together with others, hand out more than using the key.
BROAD_GRANT_OPERATIONS = frozenset({"CreateGrant", "ReEncryptFrom", "ReEncryptTo", "RetireGrant"})
#: Names (operations, risky statements) a finding lists before saying how many more.
MAX_LISTED = 20


def _named(names: set[str]) -> Callable[[dict[str, Any]], bool]:
    return lambda e: name_of(e) in names


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
            yield make_finding(
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
        yield make_finding(
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
    """A custom key store disconnected (its keys become unusable)."""
    for event in filter(_named({"DisconnectCustomKeyStore", "DeleteCustomKeyStore"}), events):
        yield make_finding(
            "key-store",
            "high",
            "Custom key store disconnected",
            [event],
            "Keys in a disconnected key store cannot be used.",
            "Key store and origin recorded",
        )


def _listed(items: list[str]) -> str:
    """Names for a sentence: the first ``MAX_LISTED``, each cut, then how many more."""
    shown = ", ".join(clip(i, 60) for i in items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")

"""Who is behind a set of findings: the actors a responder contains (a user and its access
keys, a role rather than each of its sessions)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kmsir.trail.events import clip
from kmsir.trail.fields import account_of, actor_of
from kmsir.trail.finding import Finding, Severity

#: Access keys listed per actor (a forged trail may name any number).
MAX_KEYS = 20


def actors(found: list[Finding], events: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Who is behind the findings, most severe first: each actor (a user, or a role rather
    than its sessions) with its IAM user or role name and the access keys its flagged calls
    were signed with, which is what containing the actor acts on."""
    wanted = {i for f in found for i in f.event_ids}
    by_id = {str(e.get("eventID")): e for e in events if str(e.get("eventID")) in wanted}
    table: dict[str, dict[str, Any]] = {}
    for finding in found:  # most severe first: the first sighting sets the order
        behind: set[str] = set()
        for event_id in finding.event_ids:
            event = by_id.get(event_id)
            if event is None:
                continue
            identity = event.get("userIdentity")
            identity = identity if isinstance(identity, dict) else {}
            who = actor_of(event)
            actor = table.setdefault(who, _actor(event, identity, finding.severity))
            key = identity.get("accessKeyId")
            keys = actor["access_keys"]
            if isinstance(key, str) and key and key not in keys and len(keys) < MAX_KEYS:
                keys.append(clip(key, 128))
            if who not in behind:
                behind.add(who)
                actor["findings"] += 1
    return list(table.values())


def _actor(event: dict[str, Any], identity: dict[str, Any], severity: Severity) -> dict[str, Any]:
    context = identity.get("sessionContext")
    issuer = context.get("sessionIssuer") if isinstance(context, dict) else None
    issuer = issuer if isinstance(issuer, dict) else None
    kind = str(identity.get("type") or "unknown")
    arn = actor_of(event)
    name = arn.rsplit("/", 1)[-1] if "/" in arn else None  # user/NAME, role/NAME
    user = identity.get("userName") or name if kind == "IAMUser" else None
    role = (issuer or {}).get("userName") or name if kind == "AssumedRole" else None
    account = account_of(event)
    return {  # outputs are journaled: text from the event is cut
        "principal": clip(arn),
        "type": clip(kind, 64),
        "account": clip(account, 64) if account else None,
        "user": clip(str(user)) if user else None,
        "role": clip(str(role)) if role else None,
        "severity": severity,
        "access_keys": [],
        "findings": 0,
    }

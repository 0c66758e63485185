"""The fields of one CloudTrail event that findings read, read defensively.

Events are attacker-controlled: any field may be missing or of any type. Each reader here
answers with a value of the type it promises (text, a mapping, a time or ``None``), whatever
the event holds, so a rule never has to check types itself.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any


def name_of(event: dict[str, Any]) -> str:
    """The event name, or ``""`` when it is missing or not text."""
    name = event.get("eventName")
    return name if isinstance(name, str) else ""


def source_of(event: dict[str, Any]) -> str:
    """The service that logged the event (``eventSource``), or ``""`` when it is missing or
    not text."""
    source = event.get("eventSource")
    return source if isinstance(source, str) else ""


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


def by_aws_service(event: dict[str, Any]) -> bool:
    """Whether an AWS service made the call (``invokedBy`` a service, or the
    ``AWSService`` identity type), not a person or an application."""
    identity = event.get("userIdentity")
    if not isinstance(identity, dict):
        return False
    invoked = identity.get("invokedBy")
    return identity.get("type") == "AWSService" or (
        isinstance(invoked, str) and invoked.endswith(".amazonaws.com")
    )


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


def resources_of(event: dict[str, Any]) -> list[Any]:
    """The resources the event lists (items of any type), or none when it lists none."""
    resources = event.get("resources")
    return resources if isinstance(resources, list) else []


def text_of(value: Any) -> str:
    """A field compared or shown as text: ``""`` for none, JSON for an object or a list."""
    if value is None or isinstance(value, str):
        return value or ""
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError, RecursionError):
        return str(value)

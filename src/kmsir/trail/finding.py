"""One finding and what every rule needs to make one.

``Finding`` is the record a rule yields (and ``findings.json`` holds); ``Context`` is what rules
know besides the events, built by ``context_for``; ``make_finding`` is the one way a rule makes
a finding: it names it by its rule and events, cuts the text it takes from the events
(``clip``), and keeps a failed call (``errorCode``) from raising a finding above medium on its
own.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from kmsir.trail.events import clip
from kmsir.trail.fields import principal_of, resources_of

Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "low", "medium", "high", "critical")


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


#: A rule: the events sorted by time and the context in, its findings out.
Rule = Callable[[list[dict[str, Any]], Context], Iterator[Finding]]


def key_account(events: Iterable[dict[str, Any]], key_arn: str | None) -> str | None:
    """The key's account: from its ARN, else the account of the keys events list as used."""
    if key_arn and key_arn.startswith("arn:") and len(key_arn.split(":")) > 5:
        return key_arn.split(":")[4]
    counts: Counter[str] = Counter()
    for event in events:
        for resource in resources_of(event):
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
        for resource in resources_of(event):
            arn = str(resource.get("ARN", "")) if isinstance(resource, dict) else ""
            if ":key/" in arn:
                counts[arn.rsplit(":key/", 1)[1]] += 1
    return frozenset({counts.most_common(1)[0][0]}) if counts else frozenset()


def context_for(
    events: list[dict[str, Any]], key_arn: str | None, window_start: datetime | None
) -> Context:
    """The findings context for a key's events."""
    return Context(
        key_account=key_account(events, key_arn),
        window_start=window_start,
        key_ids=key_ids_in(events, key_arn),
    )


def make_finding(
    rule: str,
    severity: Severity,
    title: str,
    events: list[dict[str, Any]],
    why: str,
    practice: str | None = None,
    **details: Any,
) -> Finding:
    """A finding of ``rule`` over ``events`` (the first one names the call shown); its id
    stays the same for the same rule and events. Capped at medium when every call failed."""
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

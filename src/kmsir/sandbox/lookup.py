"""CloudTrail ``LookupEvents`` for moto, which does not implement it.

Installed into moto's own request handling (``CloudTrailResponse``), so every client of the
sandbox, in process or through ``sandbox serve`` (the AWS CLI included), gets the same
behaviour. Semantics follow the API reference: at most one lookup attribute, the eight
attribute keys, ``MaxResults`` 1-50 (default 50), newest events first, 90 days of history,
opaque ``NextToken`` bound to the query that issued it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime, timedelta, timezone
from typing import Any

ATTRIBUTE_KEYS = (
    "EventId",
    "EventName",
    "ReadOnly",
    "Username",
    "ResourceType",
    "ResourceName",
    "EventSource",
    "AccessKeyId",
)
HISTORY_DAYS = 90
_STORE_ATTRIBUTE = "kmsir_history"


def _backend(account: str, region: str) -> Any:
    from moto.cloudtrail.models import cloudtrail_backends

    return cloudtrail_backends[account][region]


def add_events(account: str, region: str, events: list[dict[str, Any]]) -> None:
    """Add CloudTrail records to the event history of ``account`` in ``region``."""
    backend = _backend(account, region)
    history: list[dict[str, Any]] = getattr(backend, _STORE_ATTRIBUTE, [])
    if len(events) > _SORT_ABOVE:
        history.extend(events)
        history.sort(key=_time, reverse=True)
    else:  # a recorded call or two: put in place, as the (stable) sort would
        for event in events:
            history.insert(_place(history, _time(event)), event)
    setattr(backend, _STORE_ATTRIBUTE, history)


#: Above this many events at once, sorting the history beats placing each.
_SORT_ABOVE = 16


def _time(event: dict[str, Any]) -> str:
    return str(event.get("eventTime", ""))


def _place(history: list[dict[str, Any]], moment: str) -> int:
    """Where an event at ``moment`` goes in ``history`` (newest first): after every event
    at the same time or later, as a stable sort of the extended history would put it."""
    low, high = 0, len(history)
    while low < high:
        middle = (low + high) // 2
        if _time(history[middle]) >= moment:
            low = middle + 1
        else:
            high = middle
    return low


def history(account: str, region: str) -> list[dict[str, Any]]:
    """The event history (newest first)."""
    return list(getattr(_backend(account, region), _STORE_ATTRIBUTE, []))


def _error(code: str, message: str) -> Exception:
    from moto.core.exceptions import JsonRESTError

    return JsonRESTError(code, message)


def _username(event: dict[str, Any]) -> str:
    identity = event.get("userIdentity") or {}
    if identity.get("userName"):
        return str(identity["userName"])
    arn = str(identity.get("arn", ""))
    return arn.rsplit("/", 1)[-1] if "/" in arn else str(identity.get("invokedBy", ""))


def _attribute_values(event: dict[str, Any], key: str) -> list[str]:
    identity = event.get("userIdentity") or {}
    resources = event.get("resources") or []
    table: dict[str, list[Any]] = {
        "EventId": [event.get("eventID")],
        "EventName": [event.get("eventName")],
        "ReadOnly": [str(event.get("readOnly", False)).lower()],
        "Username": [_username(event)],
        "ResourceType": [r.get("type") for r in resources],
        "ResourceName": [r.get("ARN") for r in resources],
        "EventSource": [event.get("eventSource")],
        "AccessKeyId": [identity.get("accessKeyId")],
    }
    return [str(v) for v in table[key] if v]


def _epoch(event: dict[str, Any]) -> float:
    text = str(event["eventTime"]).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


def _as_epoch(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except ValueError:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _token(query: str, offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([query, offset]).encode()).decode()


def _offset(token: str, query: str) -> int:
    try:
        issued_for, offset = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError):
        raise _error("InvalidNextTokenException", "Invalid NextToken.") from None
    if issued_for != query or not isinstance(offset, int) or offset < 0:
        raise _error(
            "InvalidNextTokenException",
            "The NextToken does not match the query it was issued for.",
        )
    return offset


def lookup_events(response: Any) -> str:
    """The ``LookupEvents`` handler, installed as ``CloudTrailResponse.lookup_events``."""
    attributes = response._get_param("LookupAttributes") or []
    if len(attributes) > 1:
        raise _error(
            "InvalidLookupAttributesException", "You can specify at most one lookup attribute."
        )
    key = value = None
    if attributes:
        key, value = attributes[0].get("AttributeKey"), attributes[0].get("AttributeValue")
        if key not in ATTRIBUTE_KEYS:
            raise _error("InvalidLookupAttributesException", f"Invalid attribute key: {key}.")
    max_results = response._get_param("MaxResults")
    if max_results is None:
        max_results = 50
    if not isinstance(max_results, int) or not 1 <= max_results <= 50:
        raise _error("InvalidMaxResultsException", "MaxResults must be between 1 and 50.")
    now = datetime.now(timezone.utc)
    start = _as_epoch(response._get_param("StartTime"))
    end = _as_epoch(response._get_param("EndTime"))
    if start is not None and end is not None and start > end:
        raise _error("InvalidTimeRangeException", "StartTime must be before EndTime.")
    oldest = (now - timedelta(days=HISTORY_DAYS)).timestamp()
    query = hashlib.sha256(json.dumps([key, value, start, end]).encode()).hexdigest()[:16]
    token = response._get_param("NextToken")
    offset = _offset(token, query) if token else 0

    matches = []
    for event in history(response.current_account, response.region):
        moment = _epoch(event)
        if moment < oldest or (start is not None and moment < start):
            continue
        if end is not None and moment > end:
            continue
        if key is not None and value not in _attribute_values(event, key):
            continue
        matches.append((moment, event))
    page = matches[offset : offset + max_results]
    body: dict[str, Any] = {
        "Events": [
            {
                "EventId": event.get("eventID"),
                "EventName": event.get("eventName"),
                "ReadOnly": str(event.get("readOnly", False)).lower(),
                "AccessKeyId": (event.get("userIdentity") or {}).get("accessKeyId"),
                "EventTime": moment,
                "EventSource": event.get("eventSource"),
                "Username": _username(event),
                "Resources": [
                    {"ResourceType": r.get("type"), "ResourceName": r.get("ARN")}
                    for r in event.get("resources") or []
                ],
                "CloudTrailEvent": json.dumps(event),
            }
            for moment, event in page
        ]
    }
    if offset + max_results < len(matches):
        body["NextToken"] = _token(query, offset + max_results)
    return json.dumps(body)


def install() -> None:
    """Patch moto's CloudTrail responses with ``lookup_events`` (idempotent)."""
    from moto.cloudtrail.responses import CloudTrailResponse

    existing = vars(CloudTrailResponse).get("lookup_events")
    if existing is not None:
        if getattr(existing, "__module__", "") == __name__:
            return
        raise RuntimeError(
            "this moto version implements LookupEvents itself; review kmsir.sandbox.lookup"
        )
    setattr(CloudTrailResponse, "lookup_events", lookup_events)  # noqa: B010

"""Lists of CloudTrail events: de-duplicated and sorted, and the counts a responder reads first."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec


def dedupe_sorted(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events unique by event id, sorted by event time."""
    unique: dict[str, dict[str, Any]] = {}
    for event in events:
        unique.setdefault(str(event.get("eventID") or id(event)), event)
    return sorted(unique.values(), key=lambda e: str(e.get("eventTime", "")))


def summarize(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts a responder reads first: names, principals, source IPs, failures."""
    names: Counter[str] = Counter()
    principals: Counter[str] = Counter()
    ips: Counter[str] = Counter()
    errors = 0
    for event in events:
        names[str(event.get("eventName"))] += 1
        identity = event.get("userIdentity")
        identity = identity if isinstance(identity, dict) else {}
        principals[str(identity.get("arn") or identity.get("invokedBy") or "unknown")] += 1
        ips[str(event.get("sourceIPAddress", "unknown"))] += 1
        if event.get("errorCode"):
            errors += 1
    return {
        "count": len(events),
        "first": str(events[0].get("eventTime")) if events else None,
        "last": str(events[-1].get("eventTime")) if events else None,
        "event_names": dict(names.most_common()),
        "principals": dict(principals.most_common()),
        "source_ips": dict(ips.most_common()),
        "errors": errors,
    }


class _Order(msgspec.Struct):
    eventTime: Any = ""
    eventID: Any = ""


_order_decoder = msgspec.json.Decoder(_Order)

#: Events whose request parameters the findings rules read.
_RULES_READ_PARAMETERS = frozenset(
    {"CreateGrant", "PutKeyPolicy", "UpdateAlias", "DeleteAlias", "ScheduleKeyDeletion"}
)


class _Identity(msgspec.Struct):
    arn: str | None = None
    accountId: str | None = None
    invokedBy: str | None = None
    type: str | None = None
    sessionContext: dict[str, Any] | None = None


class _Slim(msgspec.Struct):
    eventID: str = ""
    eventTime: str = ""
    eventName: str = ""
    userIdentity: _Identity | None = None
    sourceIPAddress: str | None = None
    userAgent: str | None = None
    errorCode: str | None = None
    recipientAccountId: str | None = None
    sharedEventID: str | None = None
    resources: list[dict[str, Any]] | None = None
    requestParameters: msgspec.Raw = msgspec.Raw(b"null")


_slim_decoder = msgspec.json.Decoder(_Slim)


def order_raw(records: list[bytes]) -> list[bytes]:
    """Raw events unique by event id and sorted by time, decoding only those two fields."""
    keyed: dict[str, tuple[str, bytes]] = {}
    for n, raw in enumerate(records):
        order = _order_decoder.decode(raw)
        event_id = order.eventID if isinstance(order.eventID, str) and order.eventID else f"#{n}"
        keyed.setdefault(event_id, (str(order.eventTime), raw))
    return [raw for _, raw in sorted(keyed.values(), key=lambda item: item[0])]


def slim(raw: bytes) -> dict[str, Any]:
    """The few fields the findings rules read, without the rest of the event (memory)."""
    try:
        event = _slim_decoder.decode(raw)
    except msgspec.ValidationError:  # an odd record (fields of other types): keep it whole
        return dict(msgspec.json.decode(raw))
    parameters = None
    if event.eventName in _RULES_READ_PARAMETERS:
        parameters = msgspec.json.decode(event.requestParameters)
    identity = event.userIdentity
    return {
        "eventID": event.eventID,
        "eventTime": event.eventTime,
        "eventName": event.eventName,
        "userIdentity": msgspec.structs.asdict(identity) if identity else {},
        "sourceIPAddress": event.sourceIPAddress,
        "userAgent": event.userAgent,
        "errorCode": event.errorCode,
        "recipientAccountId": event.recipientAccountId,
        "sharedEventID": event.sharedEventID,
        "resources": event.resources,
        "requestParameters": parameters,
    }

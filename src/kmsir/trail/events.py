"""Lists of CloudTrail events: decoded safely, de-duplicated and sorted, and the counts a
responder reads first.

Every record is attacker-controlled. ``decode_event`` is the one way a record's JSON becomes an
event: an object, valid UTF-8 without lone surrogates, at most ``MAX_DEPTH`` levels deep (a
JSON parser's recursion limit is not a safe bound: msgspec and json raise ``RecursionError``
near 1,000 levels, earlier when the stack is already deep). A record that is none of these is
named by the reason it was skipped, never fatal.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

import msgspec

#: Deepest nesting kept (CloudTrail's KMS events are under ten levels deep).
MAX_DEPTH = 100
#: Longest name, principal or address kept in a summary (outputs are journaled).
MAX_LABEL = 200
#: Distinct names, principals and addresses a summary lists (the most frequent).
MAX_LABELS = 50

_object_decoder = msgspec.json.Decoder(dict[str, Any])


def depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (a scalar is 0), counted without
    recursion; counting stops just past ``MAX_DEPTH``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack and deepest <= MAX_DEPTH:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in item if isinstance(child, dict | list))
    return deepest


def decode_event(raw: bytes) -> dict[str, Any] | str:
    """One record's JSON as an event, or why it is none (``record is not valid JSON``...)."""
    try:
        event = _object_decoder.decode(raw)
    except RecursionError:
        return "record is nested too deeply"
    except msgspec.ValidationError:
        return "record is not a JSON object"
    except msgspec.DecodeError:
        try:
            raw.decode()
        except UnicodeDecodeError:
            return "record is not valid UTF-8"
        return "record is not valid JSON"
    # a record can only nest as deeply as it has brackets: most are checked by two counts
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and depth(event) > MAX_DEPTH:
        return "record is nested too deeply"
    return event


def decode_text(text: str) -> dict[str, Any] | str:
    """``decode_event`` for JSON a service returned as a string (it may hold lone surrogates,
    which no UTF-8 file, journal or report can store)."""
    try:
        raw = text.encode()
    except UnicodeEncodeError:
        return "record is not valid Unicode"
    return decode_event(raw)


def event_problem(event: Any) -> str | None:
    """Why an event assembled from a query's columns cannot be kept, or ``None``."""
    if not isinstance(event, dict):
        return "record is not a JSON object"
    if depth(event) > MAX_DEPTH:
        return "record is nested too deeply"
    try:
        msgspec.json.encode(event)
    except UnicodeEncodeError:
        return "record is not valid Unicode"
    return None


def dedupe_sorted(
    events: list[dict[str, Any]], conflicts: Counter[str] | None = None
) -> list[dict[str, Any]]:
    """Events unique by event id, sorted by event time. The same event read twice (two
    sources, two copies of a file) is kept once; a *different* event under an id already
    seen is kept too, and counted in ``conflicts``: a forged record must not hide another."""
    seen: dict[str, set[bytes]] = {}  # by event id, the digests of the contents kept
    kept = []
    for event in events:
        contents = seen.setdefault(_id_of(event, id(event)), set())
        digest = hashlib.sha256(json.dumps(event, sort_keys=True, default=str).encode()).digest()
        if digest not in contents:
            if contents and conflicts is not None:
                conflicts[DUPLICATE_ID] += 1
            contents.add(digest)
            kept.append(event)
    return sorted(kept, key=lambda e: str(e.get("eventTime", "")))


#: How a different event under an event id already seen is counted.
DUPLICATE_ID = "duplicate eventID with different content (both kept)"


def _id_of(event: dict[str, Any], fallback: object) -> str:
    event_id = event.get("eventID")
    return event_id if isinstance(event_id, str) and event_id else f"#{fallback}"


def clip(text: str, limit: int = MAX_LABEL) -> str:
    """``text`` cut to ``limit`` characters, the cut marked."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _top(counts: Counter[str]) -> dict[str, int]:
    return dict(counts.most_common(MAX_LABELS))


def _times(events: list[dict[str, Any]]) -> list[datetime]:
    found = []
    for event in events:
        value = event.get("eventTime")
        if isinstance(value, str) and len(value) < 64:
            try:
                moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            found.append(moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc))
    return found


def summarize(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts a responder reads first: names, principals, source IPs (the ``MAX_LABELS`` most
    frequent, each cut to ``MAX_LABEL`` characters), failures, first and last event times
    (events without a valid time count, but cannot be first or last)."""
    names: Counter[str] = Counter()
    principals: Counter[str] = Counter()
    ips: Counter[str] = Counter()
    errors = 0
    for event in events:
        names[clip(str(event.get("eventName")))] += 1
        identity = event.get("userIdentity")
        identity = identity if isinstance(identity, dict) else {}
        principals[clip(str(identity.get("arn") or identity.get("invokedBy") or "unknown"))] += 1
        ips[clip(str(event.get("sourceIPAddress", "unknown")))] += 1
        if event.get("errorCode"):
            errors += 1
    times = _times(events)
    return {
        "count": len(events),
        "first": _iso(min(times)) if times else None,
        "last": _iso(max(times)) if times else None,
        "event_names": _top(names),
        "principals": _top(principals),
        "source_ips": _top(ips),
        "errors": errors,
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Order(msgspec.Struct):
    eventTime: Any = ""
    eventID: Any = ""


_order_decoder = msgspec.json.Decoder(_Order)

#: Events whose request parameters the findings rules read (policies set with a new key or a
#: replica and their lockout check, the trail events' selectors and trail names).
_RULES_READ_PARAMETERS = frozenset(
    {
        "CreateGrant",
        "PutKeyPolicy",
        "CreateKey",
        "ReplicateKey",
        "UpdateAlias",
        "DeleteAlias",
        "ScheduleKeyDeletion",
        "PutEventSelectors",
        "StopLogging",
        "DeleteTrail",
    }
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
    eventSource: str | None = None
    eventType: str | None = None
    userIdentity: _Identity | None = None
    sourceIPAddress: str | None = None
    userAgent: str | None = None
    errorCode: str | None = None
    recipientAccountId: str | None = None
    sharedEventID: str | None = None
    resources: list[dict[str, Any]] | None = None
    requestParameters: msgspec.Raw = msgspec.Raw(b"null")


_slim_decoder = msgspec.json.Decoder(_Slim)


class Ordering:
    """Matched records made ready to be put in order as they arrive, while the scan goes on:
    each one's order fields and digest decoded, and (``slim_too``) the findings' fields.
    ``ordered`` then only dedupes and sorts."""

    def __init__(self, *, slim_too: bool = False) -> None:
        self._slim_too = slim_too
        self._items: list[tuple[str, str, bytes, bytes, dict[str, Any] | None]] = []

    def add(self, records: Iterable[bytes]) -> None:
        """Take the next records (in the order the scan found them)."""
        for raw in records:
            order = _order_decoder.decode(raw)
            event_id = order.eventID
            if not isinstance(event_id, str) or not event_id:
                event_id = f"#{len(self._items)}"
            digest = hashlib.sha256(raw).digest()
            fields = slim(raw) if self._slim_too else None
            self._items.append((event_id, str(order.eventTime), digest, raw, fields))

    def ordered(
        self, conflicts: Counter[str] | None = None
    ) -> list[tuple[bytes, dict[str, Any] | None]]:
        """The records unique by event id and sorted by time (each with its findings' fields,
        when taken); a different record under an id already seen is kept and counted (see
        ``dedupe_sorted``)."""
        seen: dict[str, set[bytes]] = {}  # by event id, the digests of the records kept
        kept: list[tuple[str, bytes, dict[str, Any] | None]] = []
        for event_id, moment, digest, raw, fields in self._items:
            contents = seen.setdefault(event_id, set())
            if digest not in contents:
                if contents and conflicts is not None:
                    conflicts[DUPLICATE_ID] += 1
                contents.add(digest)
                kept.append((moment, raw, fields))
        kept.sort(key=lambda item: item[0])
        return [(raw, fields) for _, raw, fields in kept]


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
        "eventSource": event.eventSource,
        "eventType": event.eventType,
        "userIdentity": msgspec.structs.asdict(identity) if identity else {},
        "sourceIPAddress": event.sourceIPAddress,
        "userAgent": event.userAgent,
        "errorCode": event.errorCode,
        "recipientAccountId": event.recipientAccountId,
        "sharedEventID": event.sharedEventID,
        "resources": event.resources,
        "requestParameters": parameters,
    }

"""CloudTrail's API as a collect source: ``LookupEvents`` for a key, every Region at once.

``LookupEvents`` by ResourceName, one pass by key ARN and one by key id, then one by
EventName for each of CloudTrail's own events that can stop a trail logging KMS
(``trail.catalogue.TRAIL_EVENTS``: they name no key), each paginated, Regions in parallel:
``aws`` paces LookupEvents at its quota (2 requests per second per account and Region) and
botocore retries what is throttled all the same. Every event is kept by the one matching
function. An event without a usable CloudTrail record is handed to ``skip`` with its
reason, never dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from kmsir.actions.base import ActionContext
from kmsir.aws import aws_errors
from kmsir.inert import one_line
from kmsir.trail.catalogue import TRAIL_EVENTS
from kmsir.trail.events import decode_text
from kmsir.trail.match import KeyMatcher


def lookup_regions(
    ctx: ActionContext,
    arn: str,
    key_id: str,
    regions: list[str],
    start: datetime,
    end: datetime,
    matcher: KeyMatcher,
    skip: Callable[[str, str], None],
) -> list[dict[str, Any]]:
    """LookupEvents in every Region at once (the quota is per Region). The pass by key
    id finds the events of the pass by ARN again: ``dedupe_sorted`` keeps each once."""
    passes = [
        *(("ResourceName", name) for name in (arn, key_id)),
        *(("EventName", name) for name in sorted(TRAIL_EVENTS)),
    ]

    def one(region: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        unusable: set[str] = set()  # each pass finds them again: counted once
        for attribute in passes:
            for event_id, event in _lookup(ctx, attribute, start, end, region):
                if isinstance(event, str):
                    if event_id not in unusable:
                        unusable.add(event_id)
                        skip(event, f"LookupEvents {region} event {event_id}")
                elif matcher.matches(event):
                    events.append(event)
        return events

    with ThreadPoolExecutor(max_workers=len(regions)) as pool:
        return [e for batch in pool.map(one, regions) for e in batch]


def _lookup(
    ctx: ActionContext,
    attribute: tuple[str, str],
    start: datetime,
    end: datetime,
    region: str,
) -> Iterator[tuple[str, dict[str, Any] | str]]:
    """Each event LookupEvents returns for one lookup attribute (key, value), by its
    ``EventId``: the event, or why it is none."""
    client = ctx.clients.client("cloudtrail", region)
    token: str | None = None
    pages = 0
    key, value = attribute
    while True:
        request: dict[str, Any] = {
            "LookupAttributes": [{"AttributeKey": key, "AttributeValue": value}],
            "StartTime": start,
            "EndTime": end,
            "MaxResults": 50,
        }
        if token:
            request["NextToken"] = token
        with aws_errors(f"LookupEvents for {value}", service="cloudtrail"):
            page = client.lookup_events(**request)
        pages += 1
        ctx.reporter.progress(f"CloudTrail pages ({region})", pages)
        for n, item in enumerate(page.get("Events", [])):
            event_id = one_line(str(item.get("EventId") or f"#{pages}.{n}"))[:100]
            body = item.get("CloudTrailEvent")
            if isinstance(body, str):
                yield event_id, decode_text(body)
            else:
                yield event_id, "event without its CloudTrail record"
        token = page.get("NextToken")
        if not token:
            return

"""CloudTrail actions: collect every event that touched a key.

Source ``lookup`` (the CloudTrail API): ``LookupEvents`` filtered by ResourceName, one pass by
key ARN and one by key id, paginated, rate-limited client-side to the documented 2 requests
per second per account and Region, de-duplicated by event id, sorted by event time.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import field_validator

from kmsir.actions.aws import aws_errors
from kmsir.actions.base import Action, ActionContext, Outcome
from kmsir.actions.kmskeys import KeyParams, describe
from kmsir.errors import ActionError
from kmsir.values import parse_time

#: LookupEvents is limited to 2 requests per second per account per Region.
LOOKUP_RATE_PER_SECOND = 2.0


class RateLimiter:
    """Spaces calls at least ``1/rate`` seconds apart (thread-safe)."""

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Block until the next call is allowed."""
        with self._lock:
            now = self._clock()
            delay = self._next - now
            self._next = max(now, self._next) + self.interval
        if delay > 0:
            self._sleep(delay)


class CollectParams(KeyParams):
    """Which key, from which source, over which time window."""

    source: Literal["lookup"] = "lookup"
    since: str = "7d"
    until: str | None = None

    @field_validator("since", "until")
    @classmethod
    def _time(cls, value: str | None) -> str | None:
        if value is not None:
            parse_time(value, datetime.now(timezone.utc))
        return value


def _event_time(event: dict[str, Any]) -> str:
    return str(event.get("eventTime", ""))


class Collect(Action[CollectParams]):
    """Collect the CloudTrail events that name a key, into ``events.jsonl.gz``.

    ```yaml
    - id: collect
      action: cloudtrail.collect
      with: {key: "{{ steps.snapshot.arn }}", source: lookup, since: 7d}
    ```
    Outputs: ``count``, ``first``, ``last``, ``event_names`` (name -> count), ``principals``,
    ``source_ips``, ``errors`` (failed calls), ``artifact``.
    """

    name = "cloudtrail.collect"
    params = CollectParams
    permissions = ("kms:DescribeKey", "cloudtrail:LookupEvents")

    def api_calls(self, params: CollectParams) -> list[str]:
        return [
            f"cloudtrail:LookupEvents ResourceName={params.key} StartTime={params.since}",
        ]

    def run(self, ctx: ActionContext, params: CollectParams) -> Outcome:
        now = ctx.now()
        start = parse_time(params.since, now)
        end = parse_time(params.until, now) if params.until else now
        if start >= end:
            raise ActionError(f"since ({params.since}) is not before until ({params.until})")
        info = describe(ctx, params.key)
        events: dict[str, dict[str, Any]] = {}
        limiter = RateLimiter(LOOKUP_RATE_PER_SECOND)
        for name in (info.arn, info.key_id):
            for event in self._lookup(ctx, limiter, name, start, end, info.region):
                events.setdefault(str(event.get("eventID")), event)
                ctx.reporter.progress("CloudTrail events", len(events))
        ordered = sorted(events.values(), key=_event_time)
        lines = b"".join(
            json.dumps(e, sort_keys=True, separators=(",", ":")).encode() + b"\n" for e in ordered
        )
        path = ctx.artifacts.write("events.jsonl.gz", gzip.compress(lines, mtime=0))
        outputs = summarize(ordered)
        outputs.update(
            {
                "artifact": path,
                "key_arn": info.arn,
                "window": {"since": _iso(start), "until": _iso(end)},
            }
        )
        summary = f"{len(ordered)} event(s) for {info.key_id} from {_iso(start)} to {_iso(end)}"
        return Outcome(outputs=outputs, summary=summary)

    @staticmethod
    def _lookup(
        ctx: ActionContext,
        limiter: RateLimiter,
        resource_name: str,
        start: datetime,
        end: datetime,
        region: str,
    ) -> Iterator[dict[str, Any]]:
        client = ctx.clients.client("cloudtrail", region)
        token: str | None = None
        pages = 0
        while True:
            request: dict[str, Any] = {
                "LookupAttributes": [
                    {"AttributeKey": "ResourceName", "AttributeValue": resource_name}
                ],
                "StartTime": start,
                "EndTime": end,
                "MaxResults": 50,
            }
            if token:
                request["NextToken"] = token
            limiter.wait()
            with aws_errors(f"LookupEvents for {resource_name}", service="cloudtrail"):
                page = client.lookup_events(**request)
            pages += 1
            ctx.reporter.progress("CloudTrail pages", pages)
            for item in page.get("Events", []):
                try:
                    yield json.loads(item["CloudTrailEvent"])
                except (KeyError, ValueError):
                    continue  # an event without its JSON body carries nothing to keep
            token = page.get("NextToken")
            if not token:
                return


def summarize(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts a responder reads first: names, principals, source IPs, failures."""
    names: Counter[str] = Counter()
    principals: Counter[str] = Counter()
    ips: Counter[str] = Counter()
    errors = 0
    for event in events:
        names[str(event.get("eventName"))] += 1
        identity = event.get("userIdentity") or {}
        principals[str(identity.get("arn") or identity.get("invokedBy") or "unknown")] += 1
        ips[str(event.get("sourceIPAddress", "unknown"))] += 1
        if event.get("errorCode"):
            errors += 1
    return {
        "count": len(events),
        "first": _event_time(events[0]) if events else None,
        "last": _event_time(events[-1]) if events else None,
        "event_names": dict(names.most_common()),
        "principals": dict(principals.most_common()),
        "source_ips": dict(ips.most_common()),
        "errors": errors,
    }


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

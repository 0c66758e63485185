"""CloudTrail's API as a collect source: ``LookupEvents`` for a key, every Region at once.

``LookupEvents`` by ResourceName, one pass by key ARN and one by key id, then one by
EventName for each of CloudTrail's own events that can stop a trail logging KMS
(``trail.catalogue.TRAIL_EVENTS``: they name no key), each paginated, Regions in parallel:
``aws`` paces LookupEvents at its quota (2 requests per second per account and Region) and
botocore retries what is throttled all the same. Every event is kept by the one matching
function. An event without a usable CloudTrail record is handed to ``skip`` with its
reason, never dropped silently.

While it runs, ``Estimate`` extrapolates the remaining time from the pages so far: pages come
newest first, so the oldest event of the last page says which part of the window is
covered. A pull that would take more than ``SUGGEST_AFTER`` seconds more is told once to
query the organisation trail in Athena instead, once the pages are evidence enough
(``MIN_PAGES`` pages, ``MIN_COVERED`` of the window or ``MIN_SECONDS``: a burst of events at
the window's end is no pace), over the 90 days LookupEvents keeps at most.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from kmsir.actions.base import ActionContext
from kmsir.actions.kmskeys import KeyInfo, describe
from kmsir.aws import aws_errors
from kmsir.errors import ActionError
from kmsir.inert import one_line
from kmsir.trail.catalogue import TRAIL_EVENTS
from kmsir.trail.events import decode_text
from kmsir.trail.match import KeyMatcher

#: Remaining seconds past which a lookup pull suggests Athena (told once).
SUGGEST_AFTER = 180.0
#: LookupEvents' quota (2 requests a second of at most 50 events, per account and Region): no
#: estimate assumes a pull faster than this.
MAX_EVENTS_PER_SECOND = 100.0
#: Passes by ResourceName (key ARN, key id) that each find every event of the key; the passes
#: by EventName after them find only CloudTrail's own rare events, left out of the estimate.
_KEY_PASSES = 2
#: The evidence a Region's running pass needs before it is extrapolated (any one of them):
#: pages read, part of the window covered, seconds since the pull began.
MIN_PAGES = 5
MIN_COVERED = 0.01
MIN_SECONDS = 20.0
#: How far back LookupEvents reaches
#: (https://docs.aws.amazon.com/awscloudtrail/latest/userguide/view-cloudtrail-events.html).
LOOKUP_HISTORY = timedelta(days=90)


@dataclass
class _Progress:
    """One Region's pull so far."""

    key_pass: int = 0  # which pass by key name runs (0, 1; 2: only the short passes left)
    in_pass: int = 0  # events of the running pass so far
    pages: int = 0  # pages of the running pass so far
    covered: float = 0.0  # part of the window the running pass has covered
    events: int = 0  # events of every pass so far


class Estimate:
    """Extrapolates a lookup pull's remaining time from its pages so far (on ``ctx.now``, the
    run's clock) and tells the responder once when it exceeds ``SUGGEST_AFTER``.

    A pass by key name that covered the part ``c`` of the window with ``n`` events still has
    about ``n (1 - c) / c`` to read, and the pass by key id after the pass by ARN as many as
    the whole pass by ARN; Regions run at once, so the pull takes as long as its slowest
    Region, each at the rate seen so far but never faster than ``MAX_EVENTS_PER_SECOND``.
    """

    def __init__(
        self,
        ctx: ActionContext,
        key: str,
        regions: Sequence[str],
        start: datetime,
        end: datetime,
    ) -> None:
        self._ctx = ctx
        self._key = key
        self._began = ctx.now()
        # older events than LookupEvents keeps are never read: no part of the window to cover
        self._start, self._end = max(start, self._began - LOOKUP_HISTORY), end
        self._regions = {region: _Progress() for region in regions}
        self._lock = threading.Lock()
        #: What the responder was told (``None``: the pull looked short enough).
        self.told: dict[str, Any] | None = None

    def next_pass(self, region: str) -> None:
        """The Region's pass by key name ended (its last page read)."""
        with self._lock:
            progress = self._regions[region]
            progress.key_pass += 1
            progress.in_pass, progress.pages, progress.covered = 0, 0, 0.0

    def page(self, region: str, items: Sequence[Mapping[str, object]]) -> None:
        """A page of a pass by key name (newest first), not its last one."""
        times = [t for i in items if isinstance(t := i.get("EventTime"), datetime)]
        with self._lock:
            progress = self._regions[region]
            progress.in_pass += len(items)
            progress.pages += 1
            progress.events += len(items)
            if times:
                window = (self._end - self._start).total_seconds()
                done = (self._end - min(times)).total_seconds()
                progress.covered = min(max(done / window, 0.0), 1.0) if window > 0 else 1.0
            remaining, expected = self._remaining()
            if self.told is not None or remaining <= SUGGEST_AFTER:
                return
            self.told = {
                "remaining_seconds": round(remaining),
                "expected_events": expected,
                "max_events_per_second": MAX_EVENTS_PER_SECOND,
                "regions": list(self._regions),
                "suggestion": "athena",
            }
        self._ctx.reporter.notice(
            f"LookupEvents for {self._key} in {', '.join(self._regions)}: about "
            f"{round(remaining / 60)} more minute(s) "
            f"(~{expected} events, at most {MAX_EVENTS_PER_SECOND:.0f} a second per account and "
            "Region). At this scale query the organisation trail in Athena instead: "
            "`kmsir cloudtrail athena-ddl --bucket BUCKET --org-id o-ID --accounts ...`, then "
            "cloudtrail.collect with source: athena and partitions: projection."
        )

    def _remaining(self) -> tuple[float, int]:
        """The slowest Region's remaining seconds, and the events the pull should read."""
        elapsed = (self._ctx.now() - self._began).total_seconds()
        slowest, expected = 0.0, 0
        for progress in self._regions.values():
            evidence = (
                progress.pages >= MIN_PAGES
                or progress.covered >= MIN_COVERED
                or elapsed >= MIN_SECONDS
            )
            if progress.key_pass >= _KEY_PASSES or progress.covered <= 0 or not evidence:
                expected += progress.events
                continue
            whole = progress.in_pass / progress.covered  # the running pass, extrapolated
            later = (_KEY_PASSES - progress.key_pass - 1) * whole
            left = whole - progress.in_pass + later
            seen = progress.events / elapsed if elapsed > 0 else MAX_EVENTS_PER_SECOND
            rate = min(seen, MAX_EVENTS_PER_SECOND) or MAX_EVENTS_PER_SECOND
            slowest = max(slowest, left / rate)
            expected += round(progress.events + left)
        return slowest, expected


def lookup_regions(
    ctx: ActionContext,
    arn: str,
    key_id: str,
    regions: list[str],
    start: datetime,
    end: datetime,
    matcher: KeyMatcher,
    skip: Callable[[str, str], None],
    estimate: Estimate | None = None,
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
        for n, attribute in enumerate(passes):
            pages = partial(estimate.page, region) if estimate and n < _KEY_PASSES else None
            for event_id, event in _lookup(ctx, attribute, start, end, region, pages):
                if isinstance(event, str):
                    if event_id not in unusable:
                        unusable.add(event_id)
                        skip(event, f"LookupEvents {region} event {event_id}")
                elif matcher.matches(event):
                    events.append(event)
            if estimate is not None and n < _KEY_PASSES:
                estimate.next_pass(region)
        return events

    with ThreadPoolExecutor(max_workers=len(regions)) as pool:
        return [e for batch in pool.map(one, regions) for e in batch]


def _lookup(
    ctx: ActionContext,
    attribute: tuple[str, str],
    start: datetime,
    end: datetime,
    region: str,
    pages: Callable[[Sequence[Mapping[str, object]]], None] | None = None,
) -> Iterator[tuple[str, dict[str, Any] | str]]:
    """Each event LookupEvents returns for one lookup attribute (key, value), by its
    ``EventId``: the event, or why it is none. ``pages`` is told of every page but the
    last."""
    client = ctx.clients.client("cloudtrail", region)
    token: str | None = None
    count = 0
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
        count += 1
        ctx.reporter.progress(f"CloudTrail pages ({region})", count)
        token = page.get("NextToken")
        if token and pages is not None:
            pages(page.get("Events", []))
        for n, item in enumerate(page.get("Events", [])):
            event_id = one_line(str(item.get("EventId") or f"#{count}.{n}"))[:100]
            body = item.get("CloudTrailEvent")
            if isinstance(body, str):
                yield event_id, decode_text(body)
            else:
                yield event_id, "event without its CloudTrail record"
        if not token:
            return


@dataclass(frozen=True)
class Named:
    """A key as its ARN names it: what a lookup in another account than the key's needs."""

    arn: str
    key_id: str
    region: str


#: A KMS key ARN: its Region, account and key id.
_KEY_ARN = re.compile(r"^arn:aws[a-z-]*:kms:([a-z0-9-]+):(\d{12}):key/(.+)$")


def key_here(ctx: ActionContext, key: str) -> KeyInfo | Named:
    """The key a lookup looks for. In one account and Region of a fanned-out run (the key's
    own or another, where a principal of that account used it) only a key ARN names the same
    key everywhere: it is taken as it is, in the target's Region. An id or alias would name
    a different key in each account (or none): refused, naming the fix. Without a scope the
    key is described."""
    if not ctx.scope:
        return describe(ctx, key)
    found = _KEY_ARN.match(key)
    if found is None:
        raise ActionError(
            f"key {key[:120]!r} is no key ARN: over the run's accounts and Regions an id or "
            "alias names a different key in each; pass its ARN, e.g. "
            'key: "{{ steps.snapshot.arn }}"'
        )
    return Named(key, found.group(3), ctx.clients.resolved_region)


def key_regions(key: str, steps: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The Regions where CloudTrail logs the use of ``key`` (an ARN): its own, and for a
    multi-Region key (``mrk-``) its replicas' as an earlier snapshot in ``steps`` names them;
    ``None`` when they are not known (a multi-Region key no snapshot described)."""
    found = _KEY_ARN.match(key)
    if found is None:
        return None
    region, account, key_id = found.groups()
    if not key_id.startswith("mrk-"):
        return (region,)
    regions: set[str] = set()
    for outputs in steps.values():
        if not isinstance(outputs, Mapping):
            continue
        listed = [outputs, *(k for k in outputs.get("keys") or [] if isinstance(k, Mapping))]
        for seen in listed:
            arn = str(seen.get("arn") or "")
            named = _KEY_ARN.match(arn)
            if named is None or named.group(2) != account or named.group(3) != key_id:
                continue
            regions.add(named.group(1))
            for related in [*(seen.get("replicas") or []), {"arn": seen.get("primary_arn")}]:
                other = _KEY_ARN.match(str(related.get("arn") or ""))
                if other is not None:
                    regions.add(other.group(1))
    return (region, *sorted(regions - {region})) if regions else None

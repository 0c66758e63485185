"""CloudTrail actions: collect every event that touched a key, and the findings among them.

``cloudtrail.collect`` sources:

- ``lookup`` (the CloudTrail API): ``LookupEvents`` by ResourceName, one pass by key ARN and one
  by key id, paginated, Regions in parallel (``aws`` paces LookupEvents at its quota, 2 requests
  per second per account and Region, and botocore retries what is throttled all the same);
- ``files``: local trail log files or folders (``*.json.gz``, ``*.json``, JSON Lines), read by
  ``trail.files`` one process per core;
- ``s3``: a trail bucket (``bucket``, ``prefix``), standard or organisation layout, listing
  only the day prefixes inside the window (``trail_s3``).

Every event goes through the one matching function (``trail.match``), is de-duplicated by
event id, sorted by time and kept unchanged in ``events.jsonl.gz``. Whatever the source, a
record that is not a usable event (not JSON, not an object, not UTF-8, nested too deeply) is
counted in ``skipped`` by reason and journaled with examples, never fatal and never silent.
"""

from __future__ import annotations

import gzip
import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from kmsir.actions.base import Action, ActionContext, Outcome, Params
from kmsir.actions.kmskeys import KeyParams, check_key_reference, describe
from kmsir.actions.trail_query import (
    Partitions,
    athena_events,
    athena_sql,
    lake_events,
    lake_sql,
)
from kmsir.actions.trail_s3 import scan_bucket
from kmsir.aws import aws_errors
from kmsir.errors import ActionError
from kmsir.evidence.calls import Call
from kmsir.evidence.entries import InputSkipped
from kmsir.inert import one_line
from kmsir.playbook.values import duration_seconds, is_region, parse_time, time_parameter
from kmsir.trail import files
from kmsir.trail.actors import actors
from kmsir.trail.events import decode_event, decode_text, dedupe_sorted, summarize
from kmsir.trail.fields import event_time
from kmsir.trail.finding import context_for
from kmsir.trail.findings import findings
from kmsir.trail.match import KeyMatcher

#: Actors behind the findings that the findings step lists in its outputs.
MAX_ACTORS = 20
#: Skipped records named in the journal (the rest are counted).
MAX_EXAMPLES = 20


class CollectParams(KeyParams):
    """Which key, from which source, over which time window."""

    source: Literal["lookup", "files", "s3", "athena", "lake"] = "lookup"
    since: str = "7d"
    until: str | None = None
    aliases: list[str] = Field(default_factory=list, max_length=100)
    regions: list[str] | None = Field(default=None, min_length=1, max_length=40)
    path: str | list[str] | None = None
    bucket: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    prefix: str = ""
    database: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_]{1,255}$")
    table: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_]{1,255}$")
    workgroup: str = Field(default="primary", pattern=r"^[A-Za-z0-9._-]{1,128}$")
    output: str | None = Field(default=None, pattern=r"^s3://.+")
    partitions: Partitions = "none"
    event_data_store: str | None = Field(default=None, pattern=r"^[A-Za-z0-9:/._-]{3,256}$")

    _times = field_validator("since", "until", mode="before")(time_parameter)

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, value: list[str]) -> list[str]:
        return [check_key_reference(a) for a in value]

    @field_validator("regions")
    @classmethod
    def _regions(cls, value: list[str] | None) -> list[str] | None:
        for region in value or []:
            if not is_region(region):
                raise ValueError(f"{region[:40]!r} is not an AWS Region name")
        return value

    @model_validator(mode="after")
    def _source_needs(self) -> CollectParams:
        if self.source == "files" and not self.path:
            raise ValueError("source files needs path (a file or folder, or a list of them)")
        if self.source == "s3" and not self.bucket:
            raise ValueError("source s3 needs bucket (the trail's bucket; prefix if it has one)")
        if self.source == "athena" and not (self.database and self.table):
            raise ValueError("source athena needs database and table (the CloudTrail table)")
        if self.source == "lake" and not self.event_data_store:
            raise ValueError("source lake needs event_data_store (its ARN or id)")
        return self

    def paths(self) -> list[Path]:
        """The local files or folders of the ``files`` source."""
        given = self.path if isinstance(self.path, list) else [self.path] if self.path else []
        return [Path(p) for p in given]


class Collect(Action[CollectParams]):
    """Collect the CloudTrail events that name a key, into ``events.jsonl.gz``.

    ```yaml
    - id: collect
      action: cloudtrail.collect
      with:
        key: "{{ steps.snapshot.arn }}"
        aliases: "{{ steps.snapshot.aliases }}"
        source: lookup            # or files (path: trail-logs/)
        since: 7d
    ```
    Outputs: ``count``, ``first``, ``last``, ``event_names`` (name -> count), ``principals``,
    ``source_ips`` (each the 50 most frequent), ``errors`` (failed calls), ``skipped``
    (unreadable input, by reason), ``noted`` (kept but odd: a different event under an event
    id already seen), ``window``, ``artifact``.
    """

    name = "cloudtrail.collect"
    params = CollectParams
    permissions = ("kms:DescribeKey", "cloudtrail:LookupEvents", "s3:ListBucket", "s3:GetObject")

    def api_calls(self, params: CollectParams) -> list[Call]:
        if params.source == "files":
            return []
        if params.source == "s3":
            bucket = {"Bucket": params.bucket}
            return [
                Call(
                    service="s3",
                    operation="ListObjectsV2",
                    params=bucket,
                    note="the window's day prefixes",
                ),
                Call(service="s3", operation="GetObject", params=bucket, note="each trail file"),
            ]
        if params.source == "athena":
            table = {"Database": params.database, "Table": params.table}
            return [
                Call(service="athena", operation="StartQueryExecution", params=table),
                Call(service="athena", operation="GetQueryResults", note="every page"),
            ]
        if params.source == "lake":
            store = {"EventDataStore": params.event_data_store}
            return [
                Call(service="cloudtrail", operation="StartQuery", params=store),
                Call(service="cloudtrail", operation="GetQueryResults", note="every page"),
            ]
        window = {"ResourceName": params.key, "StartTime": params.since}
        return [Call(service="cloudtrail", operation="LookupEvents", params=window)]

    def run(self, ctx: ActionContext, params: CollectParams) -> Outcome:
        now = ctx.now()
        start = parse_time(params.since, now).astimezone(timezone.utc)
        end = (parse_time(params.until, now) if params.until else now).astimezone(timezone.utc)
        if start >= end:
            raise ActionError(f"since ({params.since}) is not before until ({params.until})")
        skipped: Counter[str] = Counter()
        problems: list[str] = []
        noted: Counter[str] = Counter()
        if params.source in ("files", "s3", "athena", "lake"):
            key_arn: str | None = params.key if params.key.startswith("arn:") else None
            if params.key.startswith("alias/") or ":alias/" in params.key:
                key_arn = describe(ctx, params.key).arn  # logs name keys by id, not alias
            matcher = KeyMatcher.for_key(key_arn or params.key, [*params.aliases, params.key])
            if params.source in ("athena", "lake"):
                rows = _query(ctx, params, matcher, start, end, _Skips(skipped, problems))
                found = [e for e in rows if matcher.matches(e)]
            else:
                if params.source == "files":
                    raw, stats = files.scan(params.paths(), matcher, since=start, until=end)
                else:
                    raw, stats = scan_bucket(
                        ctx.clients,
                        ctx.reporter,
                        str(params.bucket),
                        params.prefix,
                        params.regions,
                        matcher,
                        start,
                        end,
                    )
                found = [json.loads(r) for r in raw]  # checked by the scan: safe to decode
                skipped.update(stats.skipped)
                noted.update(stats.noted)
                problems = stats.problems
        else:
            info = describe(ctx, params.key)
            matcher = KeyMatcher.for_key(info.arn, params.aliases)
            regions = params.regions or [info.region]
            skips = _Skips(skipped, problems)
            found = _lookup_regions(ctx, info.arn, info.key_id, regions, start, end, matcher, skips)
            key_arn = info.arn
        events = dedupe_sorted(found, noted)
        lines = b"".join(
            json.dumps(e, sort_keys=True, separators=(",", ":")).encode() + b"\n" for e in events
        )
        path = ctx.artifacts.write("events.jsonl.gz", gzip.compress(lines, mtime=0))
        if problems:
            ctx.artifacts.journal(
                InputSkipped(counts=dict(skipped), examples=problems[:MAX_EXAMPLES])
            )
        outputs = summarize(events)
        outputs.update(
            {
                "artifact": path,
                "key_arn": key_arn,
                "window": {"since": _iso(start), "until": _iso(end)},
                "skipped": dict(skipped),
                "noted": dict(noted),
            }
        )
        summary = f"{len(events)} event(s) for {params.key} from {_iso(start)} to {_iso(end)}"
        if skipped:
            summary += f"; skipped {sum(skipped.values())} unreadable input(s)"
        return Outcome(outputs=outputs, summary=summary)


class _Skips:
    """Records a source handed over that are no usable event: counted by reason, the first
    ``MAX_EXAMPLES`` named (thread-safe: Regions are read in parallel)."""

    def __init__(self, counts: Counter[str], examples: list[str]) -> None:
        self.counts = counts
        self.examples = examples
        self._lock = threading.Lock()

    def __call__(self, reason: str, where: str) -> None:
        with self._lock:
            self.counts[reason] += 1
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append(f"{where}: {reason}")


def _query(
    ctx: ActionContext,
    params: CollectParams,
    matcher: KeyMatcher,
    start: datetime,
    end: datetime,
    skip: Callable[[str, str], None],
) -> Iterator[dict[str, Any]]:
    names = sorted(matcher.names)
    if params.source == "athena":
        sql = athena_sql(
            str(params.database), str(params.table), names, start, end, params.partitions
        )
        return athena_events(
            ctx,
            sql,
            database=str(params.database),
            workgroup=params.workgroup,
            output=params.output,
            skip=skip,
        )
    store = str(params.event_data_store)
    sql = lake_sql(store.rsplit("/", 1)[-1], names, start, end)
    return lake_events(ctx, sql, store=store, skip=skip)


def _lookup_regions(
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

    def one(region: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        unusable: set[str] = set()  # each pass finds them again: counted once
        for name in (arn, key_id):
            for event_id, event in _lookup(ctx, name, start, end, region):
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
    resource_name: str,
    start: datetime,
    end: datetime,
    region: str,
) -> Iterator[tuple[str, dict[str, Any] | str]]:
    """Each event LookupEvents returns, by its ``EventId``: the event, or why it is none."""
    client = ctx.clients.client("cloudtrail", region)
    token: str | None = None
    pages = 0
    while True:
        request: dict[str, Any] = {
            "LookupAttributes": [{"AttributeKey": "ResourceName", "AttributeValue": resource_name}],
            "StartTime": start,
            "EndTime": end,
            "MaxResults": 50,
        }
        if token:
            request["NextToken"] = token
        with aws_errors(f"LookupEvents for {resource_name}", service="cloudtrail"):
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


class FindingsParams(Params):
    """Which collect step's events, and how the incident window is cut from the baseline."""

    events: str = Field(pattern=r"^[a-z][a-z0-9_]*(-[a-z0-9_]+)*$")
    key: str | None = Field(default=None, pattern=r"^arn:aws[a-z-]*:kms:.+:key/.+$")
    window: str = "24h"
    baseline_days: int = Field(default=30, ge=1, le=90)

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        duration_seconds(value)
        return value


class Findings(Action[FindingsParams]):
    """KMS findings over a collect step's events, most severe first, into ``findings.json``.

    ```yaml
    - id: findings
      action: cloudtrail.findings
      with: {events: collect, window: 24h}
    ```
    The last ``window`` of the events is the incident window; the ``baseline_days`` before it
    are what "new principal", "new source" and "volume spike" compare against.
    Outputs: ``count``, ``by_severity``, ``top`` (the first ten), ``actors`` (who is behind
    the findings, most severe first: ``principal``, ``type``, ``account``, ``user`` or
    ``role``, ``access_keys``, ``severity``, ``findings``: how many), ``artifact``.
    """

    name = "cloudtrail.findings"
    params = FindingsParams

    def api_calls(self, params: FindingsParams) -> list[Call]:
        return []

    def run(self, ctx: ActionContext, params: FindingsParams) -> Outcome:
        data = ctx.artifacts.earlier(params.events, "events.jsonl.gz")
        if data is None:
            raise ActionError(f"step {params.events!r} collected no events.jsonl.gz")
        events: list[dict[str, Any]] = []
        skipped: Counter[str] = Counter()
        for line in gzip.decompress(data).splitlines():
            event = decode_event(line) if line.strip() else None
            if isinstance(event, str):  # collect wrote it; an edited bundle may not have
                skipped[event] += 1
            elif event is not None:
                events.append(event)
        now = ctx.now()
        window_start = now - _delta(params.window)
        oldest = window_start - _delta(f"{params.baseline_days}d")
        # an event without a valid time cannot be shown to be too old: the rules see it
        kept = [e for e in events if (event_time(e) or now) >= oldest]
        found = findings(kept, context_for(kept, params.key, window_start))
        path = ctx.write_json("findings.json", [f.to_json() for f in found])
        by_severity = Counter(f.severity for f in found)
        top = [{k: v for k, v in f.to_json().items() if k != "details"} for f in found[:10]]
        summary = f"{len(found)} finding(s)" + (
            ": "
            + ", ".join(
                f"{n} {s}" for s, n in sorted(by_severity.items(), key=lambda i: -_rank(i[0]))
            )
            if found
            else ""
        )
        return Outcome(
            outputs={
                "count": len(found),
                "by_severity": dict(by_severity),
                "top": top,
                "actors": actors(found, kept)[:MAX_ACTORS],
                "artifact": path,
                "window": {"since": _iso(window_start), "until": _iso(now)},
                "skipped": dict(skipped),
            },
            summary=summary,
        )


def _rank(severity: str) -> int:
    return ["info", "low", "medium", "high", "critical"].index(severity)


def _delta(duration: str) -> timedelta:
    return timedelta(seconds=duration_seconds(duration))


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

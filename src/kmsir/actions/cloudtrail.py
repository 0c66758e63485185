"""The ``cloudtrail.collect`` action: every CloudTrail event that touched a key, from one source.

Sources:

- ``lookup`` (the CloudTrail API): ``LookupEvents`` by ResourceName, Regions in parallel
  (``trail_lookup``);
- ``files``: local trail log files or folders (``*.json.gz``, ``*.json``, JSON Lines), read by
  ``trail.files`` one process per core (paths holding no trail file at all fail the step);
- ``s3``: a trail bucket (``bucket``, ``prefix``), standard or organisation layout, listing
  only the day prefixes inside the window (``trail_s3``);
- with ``files`` and ``s3``, every log file read is also checked against CloudTrail's signed
  digest files (``validate``, on by default; ``trail_integrity``): the scan hashes the bytes
  it reads, the digests of the same days (or under the same paths) and the Regions' public
  keys are gathered, and the answer is ``trail-integrity.json`` with copies of the digests
  and of the log files holding the key's events, enough to repeat it offline;
- ``athena``, ``lake``: a query of an Athena CloudTrail table or a CloudTrail Lake event data
  store (``trail_query``). An organisation trail's table (``kmsir cloudtrail athena-ddl``) is
  read with ``partitions: projection``: the window's days, and the ``accounts`` and
  ``regions`` given, are its partition predicates. The recommended path at scale: a
  ``lookup`` pull that would take more than a few minutes says so (``estimate``).

Every event goes through the one matching function (``trail.match``), is de-duplicated by
event id, sorted by time and kept unchanged in ``events.jsonl.gz``. Whatever the source, a
record that is not a usable event (not JSON, not an object, not UTF-8, nested too deeply) is
counted in ``skipped`` by reason and journaled with examples, never fatal and never silent.
The findings among the events are ``cloudtrail_findings``'s.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from itertools import chain
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from kmsir.actions.base import Action, ActionContext, Outcome
from kmsir.actions.kmskeys import KeyParams, check_key_reference, describe
from kmsir.actions.trail_integrity_collect import Gathered, check_collected, read_bucket
from kmsir.actions.trail_lookup import Estimate, key_here, key_regions, lookup_regions
from kmsir.actions.trail_query import (
    Partitions,
    athena_events,
    athena_sql,
    lake_events,
    lake_sql,
)
from kmsir.errors import ActionError
from kmsir.evidence.calls import Call
from kmsir.evidence.entries import InputSkipped
from kmsir.playbook.values import is_region, parse_time, time_parameter
from kmsir.trail import files
from kmsir.trail import summary as summaries
from kmsir.trail.events import dedupe_sorted, summarize
from kmsir.trail.match import KeyMatcher

if TYPE_CHECKING:
    from kmsir.aws.targets import Target

#: Skipped records named in the journal (the rest are counted).
MAX_EXAMPLES = 20
_ACCOUNT = re.compile(r"\d{12}")

#: What reading each source needs besides the key (the lookup's are ``LookupEvents``): a
#: trail bucket is listed and read; Athena reads the Glue table and its S3 data and writes
#: the result to its output location; CloudTrail Lake runs and polls its query. Trail logs
#: encrypted with SSE-KMS are decrypted (and Athena's results encrypted) with the trail's key.
_SOURCE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "files": ("cloudtrail:ListPublicKeys",),
    "s3": ("s3:ListBucket", "s3:GetObject", "kms:Decrypt", "cloudtrail:ListPublicKeys"),
    "athena": (
        "athena:StartQueryExecution",
        "athena:GetQueryExecution",
        "athena:GetQueryResults",
        "glue:GetDatabase",
        "glue:GetTable",
        "glue:GetPartitions",
        "s3:GetBucketLocation",
        "s3:ListBucket",
        "s3:GetObject",
        "s3:PutObject",
        "s3:ListBucketMultipartUploads",
        "s3:ListMultipartUploadParts",
        "s3:AbortMultipartUpload",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    ),
    "lake": ("cloudtrail:StartQuery", "cloudtrail:DescribeQuery", "cloudtrail:GetQueryResults"),
}


class CollectParams(KeyParams):
    """Which key, from which source, over which time window."""

    source: Literal["lookup", "files", "s3", "athena", "lake"] = "lookup"
    since: str = "7d"
    until: str | None = None
    aliases: list[str] = Field(default_factory=list, max_length=100)
    regions: list[str] | None = Field(default=None, min_length=1, max_length=40)
    #: Accounts of an organisation trail's table read (``partitions: projection`` only).
    accounts: list[str] | None = Field(default=None, min_length=1, max_length=1000)
    path: str | list[str] | None = None
    bucket: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    prefix: str = ""
    database: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_]{1,255}$")
    table: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_]{1,255}$")
    workgroup: str = Field(default="primary", pattern=r"^[A-Za-z0-9._-]{1,128}$")
    output: str | None = Field(default=None, pattern=r"^s3://.+")
    partitions: Partitions = "none"
    event_data_store: str | None = Field(default=None, pattern=r"^[A-Za-z0-9:/._-]{3,256}$")
    #: ``files`` and ``s3``: check every log file read against the trail's signed digests
    #: (``validate`` in a playbook; the field's own name would shadow pydantic's method).
    check_digests: bool = Field(default=True, alias="validate")

    _times = field_validator("since", "until", mode="before")(time_parameter)
    #: The Regions where the key's use is logged, when the run fans the lookup out
    #: (``Collect.fans_out``; ``None``: not known, every Region of the scope).
    _key_regions: tuple[str, ...] | None = PrivateAttr(default=None)

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

    @field_validator("accounts")
    @classmethod
    def _accounts(cls, value: list[str] | None) -> list[str] | None:
        for account in value or []:
            if not _ACCOUNT.fullmatch(account):
                raise ValueError(f"{account[:40]!r} is not an AWS account id (12 digits)")
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
        projected = self.source == "athena" and self.partitions == "projection"
        if self.accounts and not projected:
            raise ValueError("accounts needs source athena with partitions: projection")
        if self.regions and self.source == "athena" and not projected:
            raise ValueError("regions with source athena needs partitions: projection")
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
    id already seen), ``window``, ``artifact``, ``estimate`` (a ``lookup`` that would take
    more than a few minutes: its extrapolated remaining time, when Athena was suggested),
    ``integrity`` (``files`` and ``s3`` with ``validate``: log files by verdict in ``counts``,
    digests by status in ``digest_counts``, ``tampering``, and ``artifact``, the path of
    ``trail-integrity.json``; else null).
    Over a run's accounts and Regions (a ``lookup`` fans out; the key must be its ARN):
    ``artifacts`` (each target's events file; ``artifact`` is null), ``targets``, and the
    largest ``estimate`` naming its ``target``. A target outside the Regions where the key's
    use is logged (its own, its replicas' as an earlier snapshot names them, or ``regions``)
    makes no LookupEvents call and says so.
    """

    name = "cloudtrail.collect"
    params = CollectParams
    outputs = MappingProxyType(
        {
            "count": "int",
            "first": "str|null",
            "last": "str|null",
            "event_names": "dict",
            "principals": "dict",
            "source_ips": "dict",
            "errors": "int",
            "artifact": "str|null",
            "artifacts": "list[str]",
            "targets": "list[dict]",
            "key_arn": "str|null",
            "window": "dict",
            "skipped": "dict",
            "noted": "dict",
            "estimate": "dict|null",
            "integrity": "dict|null",
        }
    )
    permissions = tuple(
        dict.fromkeys(
            ("kms:DescribeKey", "cloudtrail:LookupEvents", *chain(*_SOURCE_PERMISSIONS.values()))
        )
    )

    def permissions_for(self, params: CollectParams) -> tuple[str, ...]:
        if params.source == "lookup":
            return ("kms:DescribeKey", "cloudtrail:LookupEvents")
        # logs name a key by its id: only an alias (or a value decided at run time) is described
        key = str(params.key)
        named = key.startswith("alias/") or ":alias/" in key or "{{" in key
        needed = _SOURCE_PERMISSIONS[params.source]
        if not params.check_digests:
            needed = tuple(p for p in needed if p != "cloudtrail:ListPublicKeys")
        return (*(("kms:DescribeKey",) if named else ()), *needed)

    def api_calls(self, params: CollectParams) -> list[Call]:
        keys = (
            [Call(service="cloudtrail", operation="ListPublicKeys", note="each digest's Region")]
            if params.check_digests and params.source in ("files", "s3")
            else []
        )
        if params.source == "files":
            return keys
        if params.source == "s3":
            bucket = {"Bucket": params.bucket}
            digests = " and their digests'" if params.check_digests else ""
            return [
                Call(
                    service="s3",
                    operation="ListObjectsV2",
                    params=bucket,
                    note=f"the window's day prefixes{digests}",
                ),
                Call(
                    service="s3",
                    operation="GetObject",
                    params=bucket,
                    note="each trail file"
                    + (" and digest" if params.check_digests else "")
                    + "; HeadObject for one changed while read",
                ),
                *keys,
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

    def fans_out(self, params: CollectParams, steps: Mapping[str, Any]) -> bool:
        if params.source != "lookup":
            return False
        params._key_regions = key_regions(params.key, steps)
        return True

    def merge(
        self,
        ctx: ActionContext,
        results: Mapping[Target, Outcome],
        failed: Mapping[Target, str],
    ) -> Outcome:
        """The targets' counts summed; their events stay in their own files (``artifacts``,
        what the report, the findings and the blast radius read: ``merges``)."""
        from kmsir.actions.merges import collections

        return collections(results)

    def run(self, ctx: ActionContext, params: CollectParams) -> Outcome:
        now = ctx.now()
        start = parse_time(params.since, now).astimezone(timezone.utc)
        end = (parse_time(params.until, now) if params.until else now).astimezone(timezone.utc)
        if start >= end:
            raise ActionError(f"since ({params.since}) is not before until ({params.until})")
        skipped: Counter[str] = Counter()
        problems: list[str] = []
        noted: Counter[str] = Counter()
        estimate: dict[str, Any] | None = None
        integrity: dict[str, Any] | None = None
        proven = ""  # the integrity check's part of the summary
        outside = ""  # a fanned-out lookup's target outside the key's Regions
        if params.source in ("files", "s3", "athena", "lake"):
            key_arn: str | None = params.key if params.key.startswith("arn:") else None
            if params.key.startswith("alias/") or ":alias/" in params.key:
                key_arn = describe(ctx, params.key).arn  # logs name keys by id, not alias
            matcher = KeyMatcher.for_key(key_arn or params.key, [*params.aliases, params.key])
            if params.source in ("athena", "lake"):
                rows = _query(ctx, params, matcher, start, end, _Skips(skipped, problems))
                found = [e for e in rows if matcher.matches(e)]
            else:
                gathered: Gathered | None = None
                if params.source == "files":
                    raw, stats = _scan_paths(
                        params.paths(), matcher, start, end, params.check_digests
                    )
                else:
                    raw, stats, gathered = read_bucket(
                        ctx,
                        str(params.bucket),
                        params.prefix,
                        params.regions,
                        matcher,
                        start,
                        end,
                        validate=params.check_digests,
                    )
                found = [json.loads(r) for r in raw]  # checked by the scan: safe to decode
                skipped.update(stats.skipped)
                noted.update(stats.noted)
                problems = stats.problems
                if params.check_digests:
                    integrity, proven, unfetched = check_collected(
                        ctx,
                        stats,
                        start=start,
                        end=end,
                        bucket=params.bucket,
                        prefix=params.prefix,
                        gathered=gathered,
                        paths=params.paths(),
                    )
                    for problem in unfetched:
                        skipped["digest file cannot be fetched"] += 1
                        problems.append(problem)
        else:
            info = key_here(ctx, params.key)
            matcher = KeyMatcher.for_key(info.arn, params.aliases)
            regions = [info.region] if ctx.scope else params.regions or [info.region]
            wanted = params.regions or params._key_regions  # under a scope: the target's
            if ctx.scope and wanted is not None and info.region not in wanted:
                why = "not in regions" if params.regions else "the key's use is logged in"
                found, outside = [], f"; no LookupEvents in {info.region}: {why} "
                outside += f"({', '.join(wanted)})" if params.regions else ", ".join(wanted)
            else:
                skips = _Skips(skipped, problems)
                pace = Estimate(ctx, params.key, regions, start, end)
                found = lookup_regions(
                    ctx, info.arn, info.key_id, regions, start, end, matcher, skips, pace
                )
                estimate = pace.told
            key_arn = info.arn
        events = dedupe_sorted(found, noted)
        lines = b"".join(
            json.dumps(e, sort_keys=True, separators=(",", ":")).encode() + b"\n" for e in events
        )
        stored = gzip.compress(lines, mtime=0)
        path = ctx.artifacts.write("events.jsonl.gz", stored)
        # what the report counts of them, so that it need not read them all again
        counted = summaries.counts_summary(lines, stored)
        if counted is not None:
            ctx.artifacts.write(summaries.COUNTS_NAME, counted)
        if problems:
            ctx.artifacts.journal(
                InputSkipped(counts=dict(skipped), examples=problems[:MAX_EXAMPLES])
            )
        outputs = summarize(events)
        outputs.update(
            {
                "artifact": path,
                "key_arn": key_arn,
                "window": {"since": iso(start), "until": iso(end)},
                "skipped": dict(skipped),
                "noted": dict(noted),
                "estimate": estimate,
                "integrity": integrity,
            }
        )
        summary = f"{len(events)} event(s) for {params.key} from {iso(start)} to {iso(end)}"
        summary += outside
        if skipped:
            summary += f"; skipped {sum(skipped.values())} unreadable input(s)"
        summary += proven
        return Outcome(outputs=outputs, summary=summary)


def _scan_paths(
    paths: list[Path], matcher: KeyMatcher, start: datetime, end: datetime, hashes: bool
) -> tuple[list[bytes], files.ScanStats]:
    """The ``files`` source: the trail files under ``paths``. No trail file under any of them
    fails the step (a mistyped path is no quiet incident); a path without one among others
    is counted as skipped."""
    raw, stats, empty = files.scan_paths(paths, matcher, since=start, until=end, hashes=hashes)
    if len(empty) == len(paths):
        raise ActionError(files.none_found(empty))
    files.count_empty(stats, empty)
    return raw, stats


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
        # an organisation table's partitions: those given, else the run's scope (if it has one)
        scoped = [label.split("/", 1) for label in ctx.scope]
        sql = athena_sql(
            str(params.database),
            str(params.table),
            names,
            start,
            end,
            params.partitions,
            accounts=params.accounts or sorted({account for account, _ in scoped}),
            regions=params.regions or sorted({region for _, region in scoped}),
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


def iso(moment: datetime) -> str:
    """``moment`` in UTC, to the second, as CloudTrail writes times."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

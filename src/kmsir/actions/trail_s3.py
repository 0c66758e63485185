"""CloudTrail's S3 layout: find the log files of a time window in a trail bucket, scan them.

CloudTrail writes ``[prefix/]AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<file>.json.gz``,
and an organisation trail ``[prefix/]AWSLogs/<o-org-id>/<account>/CloudTrail/...``. Only the
day prefixes inside the window are listed (a bucket holds years of logs); files are fetched
by parallel (ranged) GETs (``trail_fetch``) and each one is scanned as soon as it is in, while
the others download; a bounded number of bytes is held at once.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, cast

from kmsir.actions.base import Reporter
from kmsir.actions.trail_fetch import CHANGED, Listed, fetch
from kmsir.aws import ClientFactory, aws_errors
from kmsir.trail.files import ScanStats, scan_blob
from kmsir.trail.integrity_local import DELIVERY_LAG
from kmsir.trail.match import KeyMatcher

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: Prefixes listed at once.
LISTINGS = 16
#: Noted for a trail bucket that holds logs, none of them of the window.
NO_FILE_IN_WINDOW = "no trail file in the window: logging may have stopped"
#: Bytes of log files holding a matched event kept for the bundle (``hashes``); past this,
#: their hashes only.
KEPT = 256 * 2**20
_ORG = re.compile(r"^o-[a-z0-9]{10,32}$")


def _folders(client: S3Client, bucket: str, prefix: str) -> list[str]:
    """The next level of "folders" under ``prefix``."""
    found: list[str] = []
    with aws_errors(f"ListObjectsV2 s3://{bucket}/{prefix}", service="s3"):
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix, Delimiter="/"
        ):
            found.extend(
                p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", [])
            )
    return found


def _any_object(client: S3Client, bucket: str, prefix: str) -> bool:
    """Whether anything at all is stored under ``prefix`` (one key listed, not years)."""
    with aws_errors(f"ListObjectsV2 s3://{bucket}/{prefix}", service="s3"):
        return bool(client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount"))


def objects(client: S3Client, bucket: str, prefix: str) -> list[Listed]:
    """Every object under ``prefix``, as listed."""
    found: list[Listed] = []
    with aws_errors(f"ListObjectsV2 s3://{bucket}/{prefix}", service="s3"):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found.extend(
                Listed(o["Key"], int(o["Size"]), str(o.get("ETag", "")))
                for o in page.get("Contents", [])
            )
    return found


def _base(prefix: str) -> str:
    return (prefix.strip("/") + "/" if prefix.strip("/") else "") + "AWSLogs/"


def looked_for(
    prefix: str, regions: list[str] | None, start: datetime | None, end: datetime | None
) -> str:
    """Where ``trail_prefixes`` looks, in words: for a bucket or prefix that holds no trail
    file of the window, so the user can tell a wrong prefix from a quiet window."""
    region = "|".join(regions) if regions else "REGION"
    where = f"{_base(prefix)}[o-ORGID/]ACCOUNT/CloudTrail/{region}/YYYY/MM/DD/*"
    if start is not None:
        last = end or datetime.now(timezone.utc)
        where += f" for the days {start:%Y-%m-%d} to {last + DELIVERY_LAG:%Y-%m-%d}"
    if "AWSLogs" in prefix.strip("/").split("/"):
        where += "; the prefix is the part before AWSLogs/"
    return where


def trail_prefixes(
    client: S3Client,
    bucket: str,
    prefix: str,
    regions: list[str] | None,
    start: datetime | None,
    end: datetime | None,
    *,
    folder: str = "CloudTrail",
) -> list[str]:
    """Every ``.../CloudTrail/<region>/YYYY/MM/DD/`` prefix of the window in the bucket (every
    ``.../CloudTrail/<region>/`` prefix when there is no window). ``folder``
    ``CloudTrail-Digest``: the same for the digest files."""
    base = _base(prefix)
    accounts: list[str] = []
    for name in _folders(client, bucket, base):
        if _ORG.match(name):
            accounts.extend(f"{name}/{a}" for a in _folders(client, bucket, f"{base}{name}/"))
        else:
            accounts.append(name)
    days: list[str] = [""]
    if start is not None:
        last = (end or datetime.now(timezone.utc)) + DELIVERY_LAG  # delivered the next day
        day, days = start.date(), []
        while day <= last.date():
            days.append(f"{day:%Y/%m/%d}/")
            day += timedelta(days=1)
    prefixes: list[str] = []
    for account in accounts:
        trail = f"{base}{account}/{folder}/"
        for region in regions or _folders(client, bucket, trail):
            prefixes.extend(f"{trail}{region}/{d}" for d in days)
    return prefixes


def scan_bucket(
    clients: ClientFactory,
    reporter: Reporter,
    bucket: str,
    prefix: str,
    regions: list[str] | None,
    matcher: KeyMatcher,
    start: datetime | None,
    end: datetime | None,
    *,
    hashes: bool = False,
    prefixes: list[str] | None = None,
) -> tuple[list[bytes], ScanStats]:
    """The matching records of every trail file of the window in the bucket. A bucket whose
    trail prefixes hold logs, none of them in the window, is noted (``NO_FILE_IN_WINDOW``):
    the trail may have stopped delivering; a bucket without any is no trail bucket (no file
    scanned, nothing noted). ``hashes``: as ``files.scan_blob``'s (locations
    ``s3://bucket/key``), and the bytes of the files holding a matched event are kept in
    ``ScanStats.kept`` (``KEPT`` bytes in all; past that, hashes only). ``prefixes``: the
    day prefixes, when the caller listed them already (``trail_prefixes``)."""
    client = clients.client("s3")
    if prefixes is None:
        prefixes = trail_prefixes(client, bucket, prefix, regions, start, end)
    # one listing per day, Region and account: a month of an organisation's trail is
    # thousands of them, listed at once (each is one or a few pages)
    with ThreadPoolExecutor(max_workers=LISTINGS) as pool:
        keys = [
            k for found in pool.map(lambda p: objects(client, bucket, p), prefixes) for k in found
        ]
    total = ScanStats()
    matched: list[bytes] = []
    if not keys:
        if start is not None and any(
            _any_object(client, bucket, p)
            for p in trail_prefixes(client, bucket, prefix, regions, None, None)
        ):
            total.noted[NO_FILE_IN_WINDOW] += 1
        return matched, total

    results: list[tuple[list[bytes], ScanStats]] = [([], ScanStats())] * len(keys)
    kept = 0
    # closed on the way out, whatever happens: the GETs still out are cancelled at once
    with closing(fetch(client, bucket, keys)) as fetched:
        for done, (number, data) in enumerate(fetched, start=1):
            where = f"s3://{bucket}/{keys[number].key}"
            if isinstance(data, str):  # one unreadable file (denied, expired): counted
                stats = ScanStats(files=1)
                why = "changed while read, twice" if data == CHANGED else data
                stats.skip(f"cannot fetch ({why})", where)
                if hashes:
                    stats.hashes[where] = None
                    stats.unread[where] = why
                results[number] = [], stats
            else:
                # a gzipped file is decompressed from the buffer as it is (a bytes-like
                # object is all gzip needs); another is copied once, as the scanner slices
                # records out of it
                blob = cast(bytes, data) if data[:2] == b"\x1f\x8b" else bytes(data)
                # scanned here, while the pool's threads download the next files (a process
                # pool for the scan measured slower: the GETs' server and the scan share the
                # cores)
                records, stats = scan_blob(blob, where, matcher, start, end, hashes)
                if stats.held and kept + len(data) <= KEPT:
                    # the buffer is ours: fetch hands the next object a new one
                    stats.kept[where] = bytes(data)
                    kept += len(data)
                results[number] = records, stats
            reporter.progress("trail files", done, len(keys))
    for records, stats in results:  # in the listing's order, whatever order they came in
        matched.extend(records)
        total.add(stats)
    return matched, total

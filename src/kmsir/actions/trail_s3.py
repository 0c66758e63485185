"""CloudTrail's S3 layout: find the log files of a time window in a trail bucket, scan them.

CloudTrail writes ``[prefix/]AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<file>.json.gz``,
and an organisation trail ``[prefix/]AWSLogs/<o-org-id>/<account>/CloudTrail/...``. Only the
day prefixes inside the window are listed (a bucket holds years of logs); files are fetched
and scanned by a bounded thread pool, each one in memory only while it is scanned.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from kmsir.actions.base import Reporter
from kmsir.actions.trail_query import DELIVERY_LAG
from kmsir.aws import ClientFactory, aws_errors
from kmsir.errors import AwsError
from kmsir.trail.files import ScanStats, scan_blob
from kmsir.trail.match import KeyMatcher

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: Objects fetched at once.
WORKERS = 16
#: Noted for a trail bucket that holds logs, none of them of the window.
NO_FILE_IN_WINDOW = "no trail file in the window: logging may have stopped"
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


def _objects(client: S3Client, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    with aws_errors(f"ListObjectsV2 s3://{bucket}/{prefix}", service="s3"):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


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
) -> list[str]:
    """Every ``.../CloudTrail/<region>/YYYY/MM/DD/`` prefix of the window in the bucket (every
    ``.../CloudTrail/<region>/`` prefix when there is no window)."""
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
        trail = f"{base}{account}/CloudTrail/"
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
) -> tuple[list[bytes], ScanStats]:
    """The matching records of every trail file of the window in the bucket. A bucket whose
    trail prefixes hold logs, none of them in the window, is noted (``NO_FILE_IN_WINDOW``):
    the trail may have stopped delivering; a bucket without any is no trail bucket (no file
    scanned, nothing noted)."""
    client = clients.client("s3")
    keys = [
        k
        for p in trail_prefixes(client, bucket, prefix, regions, start, end)
        for k in _objects(client, bucket, p)
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

    def one(key: str) -> tuple[list[bytes], ScanStats]:
        where = f"s3://{bucket}/{key}"
        try:
            with aws_errors(f"GetObject {where}", service="s3"):
                data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except AwsError as exc:  # one unreadable file (denied, expired) is counted, not fatal
            stats = ScanStats(files=1)
            stats.skip(f"cannot fetch ({exc.code})", where)
            return [], stats
        return scan_blob(data, where, matcher, start, end)

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for done, (records, stats) in enumerate(pool.map(one, keys), start=1):
            matched.extend(records)
            total.add(stats)
            reporter.progress("trail files", done, len(keys))
    return matched, total

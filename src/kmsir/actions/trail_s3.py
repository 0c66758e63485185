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


def _objects(client: S3Client, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    with aws_errors(f"ListObjectsV2 s3://{bucket}/{prefix}", service="s3"):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


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
    base = (prefix.strip("/") + "/" if prefix.strip("/") else "") + "AWSLogs/"
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
    """The matching records of every trail file of the window in the bucket."""
    client = clients.client("s3")
    keys = [
        k
        for p in trail_prefixes(client, bucket, prefix, regions, start, end)
        for k in _objects(client, bucket, p)
    ]
    total = ScanStats()
    matched: list[bytes] = []

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

"""The s3 source's fetching: ranged GETs into one buffer, bounded memory, changed objects,
unreadable objects counted (moto in process)."""

from __future__ import annotations

import gzip
import json
import random
from datetime import datetime, timezone
from typing import Any

import boto3
import pytest

from kmsir.actions import trail_fetch
from kmsir.actions.base import NullReporter
from kmsir.actions.cloudtrail import Collect, CollectParams
from kmsir.actions.trail_fetch import Listed, fetch, parts
from kmsir.actions.trail_s3 import scan_bucket
from kmsir.aws import ClientFactory
from kmsir.trail.match import KeyMatcher

from .fakes import context
from .test_trail_files import ARN, event

BUCKET = "trail-fetch"
DAY = "AWSLogs/111122223333/CloudTrail/eu-west-1/2026/11/12/"


@pytest.fixture
def s3(moto_clients: ClientFactory) -> Any:
    client = boto3.client("s3", region_name="eu-west-1")
    client.create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    return client


def trail_file(first: int, count: int) -> bytes:
    """A gzipped trail file of ``count`` events, every third one of the key; incompressible
    padding makes it large enough to be fetched in several parts."""
    rng = random.Random(first)  # noqa: S311 - test data
    records = [
        event(n, key=n % 3 == 0, eventTime="2026-11-12T01:00:00Z", pad=rng.randbytes(300).hex())
        for n in range(first, first + count)
    ]
    return gzip.compress(json.dumps({"Records": records}).encode())


def listed(s3: Any) -> list[Listed]:
    objects = s3.list_objects_v2(Bucket=BUCKET, Prefix=DAY).get("Contents", [])
    return [Listed(o["Key"], o["Size"], o["ETag"]) for o in objects]


def test_parts_cover_the_object_once() -> None:
    assert parts(10, 4) == [(0, 3), (4, 7), (8, 9)]
    assert parts(8, 4) == [(0, 3), (4, 7)]
    assert parts(4, 4) == [None] and parts(0, 4) == [None]  # one GET, no Range


def test_a_large_file_is_fetched_in_ranged_parts_and_scanned_whole(
    moto_clients: ClientFactory, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = trail_file(0, 300)
    s3.put_object(Bucket=BUCKET, Key=DAY + "big.json.gz", Body=body)
    s3.put_object(Bucket=BUCKET, Key=DAY + "small.json.gz", Body=trail_file(1000, 3))
    s3.put_object(Bucket=BUCKET, Key=DAY + "empty.json", Body=b"")
    part = 16 * 1024
    monkeypatch.setattr(trail_fetch, "PART", part)
    ctx, calls = context(moto_clients)
    ctx.now = lambda: datetime(2026, 11, 15, tzinfo=timezone.utc)
    outcome = Collect().run(ctx, CollectParams(key=ARN, source="s3", bucket=BUCKET, since="7d"))
    assert outcome.outputs["count"] == 100 + 1  # every third event of each file
    assert outcome.outputs["skipped"] == {}
    ranges = [
        c.params["Range"] for c in calls if c.operation == "GetObject" and "Range" in c.params
    ]
    # the big file in parts, each byte fetched once (in whatever order the threads sent them)
    assert sorted(ranges, key=lambda r: int(r[6:].split("-")[0])) == [
        f"bytes={first}-{min(first + part, len(body)) - 1}" for first in range(0, len(body), part)
    ]
    assert len(ranges) > 4
    wholes = [c for c in calls if c.operation == "GetObject" and "Range" not in c.params]
    assert len(wholes) == 2  # the small file and the empty one: one GET each


def test_at_most_the_budget_is_held_while_the_caller_scans(
    moto_clients: ClientFactory, s3: Any
) -> None:
    for n in range(12):
        s3.put_object(Bucket=BUCKET, Key=f"{DAY}f{n:02d}.json.gz", Body=trail_file(n * 10, 10))
    objects = listed(s3)
    size = max(o.size for o in objects)
    requested: set[str] = set()
    client = moto_clients.client("s3")
    client.meta.events.register(
        "before-parameter-build.s3.GetObject", lambda params, **_: requested.add(params["Key"])
    )
    seen: dict[int, bytes] = {}
    most = 0
    for number, data in fetch(client, BUCKET, objects, buffered=3 * size, part=size):
        assert isinstance(data, bytearray)
        seen[number] = bytes(data)
        most = max(most, len(requested) - len(seen))  # started, not yet handed over
    assert most <= 3  # never more than the budget's worth of objects, whatever the prefix
    for number, obj in enumerate(objects):
        assert seen[number] == s3.get_object(Bucket=BUCKET, Key=obj.key)["Body"].read()


def test_an_object_overwritten_between_its_parts_is_fetched_again_whole(
    moto_clients: ClientFactory, s3: Any
) -> None:
    key = DAY + "moving.json.gz"
    s3.put_object(Bucket=BUCKET, Key=key, Body=trail_file(0, 60))
    [obj] = listed(s3)
    newer = trail_file(500, 90)
    client = moto_clients.client("s3")

    def overwrite_once(params: dict[str, Any], **_: Any) -> None:
        if params.get("Range", "").startswith("bytes=0-") and not overwrite_once.done:
            overwrite_once.done = True  # type: ignore[attr-defined]
            s3.put_object(Bucket=BUCKET, Key=key, Body=newer)

    overwrite_once.done = False  # type: ignore[attr-defined]
    client.meta.events.register("before-parameter-build.s3.GetObject", overwrite_once)
    [(_, data)] = fetch(client, BUCKET, [obj], part=4096, workers=1)
    assert data == newer  # the object as it is now, not parts of two versions


def test_an_object_that_keeps_changing_or_cannot_be_read_is_counted_not_fatal(
    moto_clients: ClientFactory, s3: Any
) -> None:
    s3.put_object(Bucket=BUCKET, Key=DAY + "a.json.gz", Body=trail_file(0, 30))
    s3.put_object(Bucket=BUCKET, Key=DAY + "b.json.gz", Body=trail_file(100, 30))
    s3.put_object(Bucket=BUCKET, Key=DAY + "c.json.gz", Body=trail_file(200, 30))
    client = moto_clients.client("s3")
    version = iter(range(1000, 2000))

    def churn(params: dict[str, Any], **_: Any) -> None:
        if params["Key"].endswith("a.json.gz"):  # rewritten before each of its GETs
            s3.put_object(Bucket=BUCKET, Key=params["Key"], Body=trail_file(next(version), 30))
        elif params["Key"].endswith("b.json.gz"):  # deleted once listed
            s3.delete_object(Bucket=BUCKET, Key=params["Key"])

    client.meta.events.register("before-parameter-build.s3.GetObject", churn)
    raw, stats = scan_bucket(
        moto_clients, NullReporter(), BUCKET, "", None, KeyMatcher.for_key(ARN), None, None
    )
    assert stats.files == 3 and len(raw) == 10  # c's events, every third of 30
    assert stats.skipped == {
        "cannot fetch (changed while read, twice)": 1,
        "cannot fetch (NoSuchKey)": 1,
    }
    assert stats.problems == [
        f"s3://{BUCKET}/{DAY}a.json.gz: cannot fetch (changed while read, twice)",
        f"s3://{BUCKET}/{DAY}b.json.gz: cannot fetch (NoSuchKey)",
    ]


def test_an_empty_object_and_a_body_without_readinto_are_read_whole(
    moto_clients: ClientFactory, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A zero-byte object is one GET of nothing; a botocore older than 2025, whose bodies
    cannot ``readinto`` a buffer, is read and copied instead (same bytes)."""
    whole = trail_file(0, 30)
    s3.put_object(Bucket=BUCKET, Key=DAY + "a.json.gz", Body=whole)
    s3.put_object(Bucket=BUCKET, Key=DAY + "empty.json", Body=b"")
    from botocore.httpchecksum import StreamingChecksumBody
    from botocore.response import StreamingBody

    for body in (StreamingChecksumBody, StreamingBody):
        monkeypatch.delattr(body, "readinto", raising=False)
    got = dict(fetch(moto_clients.client("s3"), BUCKET, listed(s3), part=64 * 1024))
    # fetch yields in the order downloads complete: compare by the listing's index
    assert {i: bytes(b) for i, b in got.items() if not isinstance(b, str)} == {0: whole, 1: b""}

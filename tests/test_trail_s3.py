"""The s3 source against moto: standard and organisation layouts, only the window's days."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone
from typing import Any

import boto3
import pytest

from kmsir.actions.cloudtrail import Collect, CollectParams
from kmsir.aws import ClientFactory

from .fakes import context
from .test_trail_files import ARN, event

BUCKET = "org-trail-logs"


def put(s3: Any, key: str, events: list[dict[str, Any]]) -> None:
    s3.put_object(
        Bucket=BUCKET, Key=key, Body=gzip.compress(json.dumps({"Records": events}).encode())
    )


@pytest.fixture
def bucket(moto_clients: ClientFactory) -> Any:
    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    day = "AWSLogs/111122223333/CloudTrail/eu-west-1/2026/11/{:02d}/f{}.json.gz"
    org = "logs/AWSLogs/o-abcdef1234/444455556666/CloudTrail/us-east-1/2026/11/{:02d}/g.json.gz"
    put(s3, "logs/" + day.format(12, 1), [event(2, key=True, eventTime="2026-11-12T01:00:00Z")])
    put(s3, "logs/" + day.format(12, 2), [event(3, key=False, eventTime="2026-11-12T02:00:00Z")])
    put(s3, "logs/" + day.format(14, 1), [event(4, key=True, eventTime="2026-11-14T01:00:00Z")])
    put(s3, "logs/" + day.format(3, 1), [event(5, key=True, eventTime="2026-11-03T01:00:00Z")])
    put(s3, org.format(13), [event(6, key=True, eventTime="2026-11-13T05:00:00Z")])
    return s3


def test_s3_source_lists_only_the_window(moto_clients: ClientFactory, bucket: Any) -> None:
    ctx, calls = context(moto_clients)
    ctx.now = lambda: datetime(2026, 11, 15, tzinfo=timezone.utc)
    params = CollectParams(key=ARN, source="s3", bucket=BUCKET, prefix="logs", since="4d")
    outcome = Collect().run(ctx, params)
    assert outcome.outputs["count"] == 3
    events = [
        json.loads(line)
        for line in gzip.decompress(ctx.artifacts.files["events.jsonl.gz"]).splitlines()
    ]  # type: ignore[attr-defined]
    assert [e["eventID"] for e in events] == ["id-2", "id-6", "id-4"]
    listed = [c.params.get("Prefix", "") for c in calls if c.operation == "ListObjectsV2"]
    assert not any("/2026/11/03/" in p for p in listed)  # a day outside the window
    assert any(p.endswith("444455556666/CloudTrail/us-east-1/2026/11/13/") for p in listed)


def test_s3_source_needs_a_bucket() -> None:
    with pytest.raises(ValueError, match="source s3 needs bucket"):
        CollectParams(key=ARN, source="s3")


def test_the_sandbox_serves_its_history_as_trail_files(rogue_grant: Any) -> None:
    from .test_sandbox import PAYMENTS_EVENTS

    ctx, _ = context(rogue_grant.client_factory())
    params = CollectParams(
        key="alias/payments-prod", source="s3", bucket=rogue_grant.trail_bucket, since="7d"
    )
    via_s3 = Collect().run(ctx, params).outputs
    lookup_ctx, _ = context(rogue_grant.client_factory())
    via_lookup = Collect().run(lookup_ctx, CollectParams(key="alias/payments-prod")).outputs
    assert via_s3["count"] == via_lookup["count"] == PAYMENTS_EVENTS
    assert via_s3["event_names"] == via_lookup["event_names"]


ORG = "AWSLogs/o-abcdef1234/{account}/CloudTrail/{region}/2026/11/{day:02d}/{name}.json.gz"


def org_bucket(name: str, *, account_layout: bool) -> Any:
    """A trail bucket in the organisation layout only (no prefix), or in both layouts."""
    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})

    def put_at(key: str, records: list[dict[str, Any]]) -> None:
        body = gzip.compress(json.dumps({"Records": records}).encode())
        s3.put_object(Bucket=name, Key=key, Body=body)

    for n, (account, region, day) in enumerate(
        [
            ("111122223333", "eu-west-1", 12),
            ("444455556666", "us-east-1", 13),
            ("444455556666", "eu-west-1", 14),
            ("111122223333", "eu-west-1", 2),  # outside the window
        ],
        start=1,
    ):
        when = f"2026-11-{day:02d}T01:00:00Z"
        key = ORG.format(account=account, region=region, day=day, name=f"o{n}")
        put_at(key, [event(n, key=True, eventTime=when), event(n + 10, key=False, eventTime=when)])
    if account_layout:
        when = "2026-11-13T02:00:00Z"
        put_at(
            "AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/13/a.json.gz",
            [event(7, key=True, eventTime=when)],
        )
    return s3


def collected(ctx: Any) -> list[str]:
    lines = gzip.decompress(ctx.artifacts.files["events.jsonl.gz"]).splitlines()
    return [json.loads(line)["eventID"] for line in lines]


def test_s3_source_reads_a_bucket_in_the_organisation_layout_only(
    moto_clients: ClientFactory,
) -> None:
    org_bucket("org-only", account_layout=False)
    ctx, calls = context(moto_clients)
    ctx.now = lambda: datetime(2026, 11, 15, tzinfo=timezone.utc)
    outcome = Collect().run(ctx, CollectParams(key=ARN, source="s3", bucket="org-only", since="7d"))
    assert collected(ctx) == ["id-1", "id-2", "id-3"]
    assert outcome.outputs["skipped"] == {}
    listed = [c.params.get("Prefix", "") for c in calls if c.operation == "ListObjectsV2"]
    assert "AWSLogs/o-abcdef1234/" in listed  # the accounts of the organisation
    assert "AWSLogs/o-abcdef1234/444455556666/CloudTrail/us-east-1/2026/11/13/" in listed
    assert not any(p.endswith("/2026/11/02/") for p in listed)


def test_s3_source_reads_both_layouts_in_one_bucket_and_filters_regions(
    moto_clients: ClientFactory,
) -> None:
    org_bucket("both", account_layout=True)
    ctx, _ = context(moto_clients)
    ctx.now = lambda: datetime(2026, 11, 15, tzinfo=timezone.utc)
    Collect().run(ctx, CollectParams(key=ARN, source="s3", bucket="both", since="7d"))
    assert collected(ctx) == ["id-1", "id-2", "id-7", "id-3"]
    ctx, calls = context(moto_clients)
    ctx.now = lambda: datetime(2026, 11, 15, tzinfo=timezone.utc)
    params = CollectParams(key=ARN, source="s3", bucket="both", since="7d", regions=["us-east-1"])
    Collect().run(ctx, params)
    assert collected(ctx) == ["id-2", "id-7"]  # us-east-1 in each layout
    listed = [c.params.get("Prefix", "") for c in calls if c.operation == "ListObjectsV2"]
    assert not any("/eu-west-1/" in p for p in listed)


def test_scan_reads_both_layouts_of_a_trail_bucket(moto_server: Any) -> None:
    """``kmsir cloudtrail scan s3://bucket`` against a loopback moto server, in process."""
    from .clikit import cli

    s3 = moto_server.client("s3")
    s3.create_bucket(Bucket="both", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    for key, n, when in (
        ("AWSLogs/o-abcdef1234/444455556666/CloudTrail/us-east-1/2026/11/13/o.json.gz", 1, 13),
        ("AWSLogs/111122223333/CloudTrail/eu-west-1/2026/11/14/a.json.gz", 2, 14),
    ):
        time = f"2026-11-{when}T05:00:00Z"
        records = [event(n, key=True, eventTime=time), event(n + 10, key=False, eventTime=time)]
        s3.put_object(
            Bucket="both", Key=key, Body=gzip.compress(json.dumps({"Records": records}).encode())
        )
    env = {"AWS_ENDPOINT_URL": moto_server.endpoint}
    ran = cli("cloudtrail", "scan", "s3://both", "--key", ARN, "--out", "-", env=env)
    assert ran.exit_code == 0, ran.stderr
    assert [json.loads(line)["eventID"] for line in ran.stdout.splitlines()] == ["id-1", "id-2"]
    windowed = cli(
        "cloudtrail", "scan", "s3://both/", "--key", ARN, "--out", "-", "--since",
        "2026-11-13T00:00:00Z", "--until", "2026-11-13T23:00:00Z", env=env,
    )  # fmt: skip
    assert windowed.exit_code == 0, windowed.stderr
    assert [json.loads(line)["eventID"] for line in windowed.stdout.splitlines()] == ["id-1"]

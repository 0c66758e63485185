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

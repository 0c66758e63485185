"""The sandbox: LookupEvents with real paging inside moto, determinism, no way out to AWS."""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from kmsir.actions.cloudtrail import Collect, CollectParams
from kmsir.errors import AwsError
from kmsir.sandbox import Sandbox
from kmsir.sandbox import scenario as scenarios
from kmsir.trail.catalogue import TRAIL_EVENTS

from .fakes import context

#: Events the rogue-grant history names the payments key in: 24 + 1 + 1 + 40 + 3.
PAYMENTS_EVENTS = 69


def lookup_all(client, **kwargs):  # type: ignore[no-untyped-def]
    events, pages, token = [], 0, None
    while True:
        page = client.lookup_events(**kwargs, **({"NextToken": token} if token else {}))
        pages += 1
        events += page["Events"]
        token = page.get("NextToken")
        if not token:
            return events, pages


def test_lookup_events_pages_newest_first(rogue_grant: Sandbox) -> None:
    client = rogue_grant.session().client("cloudtrail")
    arn = rogue_grant.keys["payments"]["arn"]
    attrs = [{"AttributeKey": "ResourceName", "AttributeValue": arn}]
    events, pages = lookup_all(client, LookupAttributes=attrs, MaxResults=10)
    assert len(events) == PAYMENTS_EVENTS and pages == 7
    assert len({e["EventId"] for e in events}) == PAYMENTS_EVENTS
    times = [e["EventTime"] for e in events]
    assert times == sorted(times, reverse=True)
    assert all(e["Resources"][0]["ResourceName"] == arn for e in events)
    body = json.loads(events[0]["CloudTrailEvent"])
    assert body["eventSource"] == "kms.amazonaws.com" and body["eventID"] == events[0]["EventId"]


def test_lookup_events_filters(rogue_grant: Sandbox) -> None:
    client = rogue_grant.session().client("cloudtrail")
    by_name = client.lookup_events(
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "CreateGrant"}]
    )["Events"]
    assert [e["EventName"] for e in by_name] == ["CreateGrant"]
    assert by_name[0]["Username"] == "build-4821"
    recent = client.lookup_events(StartTime=datetime.now(timezone.utc) - timedelta(hours=30))
    assert {e["EventName"] for e in recent["Events"]} == {"Decrypt"}


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        (
            {
                "LookupAttributes": [
                    {"AttributeKey": "EventName", "AttributeValue": "A"},
                    {"AttributeKey": "EventName", "AttributeValue": "B"},
                ]
            },
            "InvalidLookupAttributesException",
        ),
        ({"MaxResults": 51}, "InvalidMaxResultsException"),
        ({"NextToken": "garbage"}, "InvalidNextTokenException"),
        (
            {
                "StartTime": datetime(2026, 2, 1, tzinfo=timezone.utc),
                "EndTime": datetime(2026, 1, 1, tzinfo=timezone.utc),
            },
            "InvalidTimeRangeException",
        ),
    ],
)
def test_lookup_events_rejects_what_aws_rejects(
    rogue_grant: Sandbox, kwargs: dict, code: str
) -> None:  # type: ignore[type-arg]
    client = rogue_grant.session().client("cloudtrail")
    with pytest.raises(ClientError) as caught:
        client.lookup_events(**kwargs)
    assert caught.value.response["Error"]["Code"] == code


def test_token_is_bound_to_its_query(rogue_grant: Sandbox) -> None:
    client = rogue_grant.session().client("cloudtrail")
    token = client.lookup_events(MaxResults=5)["NextToken"]
    with pytest.raises(ClientError, match="InvalidNextTokenException"):
        client.lookup_events(
            MaxResults=5,
            NextToken=token,
            LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "Decrypt"}],
        )


def test_collect_writes_sorted_deduplicated_events(rogue_grant: Sandbox) -> None:
    ctx, calls = context(rogue_grant.client_factory())
    outcome = Collect().run(ctx, CollectParams(key="alias/payments-prod", since="7d"))
    out = outcome.outputs
    assert out["count"] == PAYMENTS_EVENTS
    assert out["event_names"] == {"Decrypt": 67, "CreateGrant": 1, "DescribeKey": 1}
    assert out["principals"]["arn:aws:sts::444455556666:assumed-role/backup-sync/sync"] == 43
    assert out["errors"] == 3
    lines = gzip.decompress(ctx.artifacts.files["events.jsonl.gz"]).splitlines()  # type: ignore[attr-defined]
    events = [json.loads(line) for line in lines]
    assert len(events) == PAYMENTS_EVENTS
    assert [e["eventTime"] for e in events] == sorted(e["eventTime"] for e in events)
    assert {
        c.params["LookupAttributes"][0]["AttributeValue"]
        for c in calls
        if c.operation == "LookupEvents"
    } == {rogue_grant.keys["payments"]["arn"], rogue_grant.keys["payments"]["id"], *TRAIL_EVENTS}


def test_collect_window(rogue_grant: Sandbox) -> None:
    ctx, _ = context(rogue_grant.client_factory())
    outcome = Collect().run(ctx, CollectParams(key="alias/payments-prod", since="29h"))
    # the app's last 4 Decrypts (every 6h up to -6h) and the 3 denied calls at -1d
    assert outcome.outputs["event_names"] == {"Decrypt": 4 + 3}
    assert outcome.outputs["errors"] == 3


def test_same_scenario_gets_the_same_ids() -> None:
    world = scenarios.load("rogue-grant")
    with Sandbox(world) as first:
        ids = (first.keys, first.grants)
    with Sandbox(world) as second:
        assert (second.keys, second.grants) == ids


def test_sandbox_refuses_anything_moto_does_not_answer(rogue_grant: Sandbox) -> None:
    factory = rogue_grant.client_factory()
    factory.endpoint_url = "http://127.0.0.1:9"
    with pytest.raises(AwsError, match="sandbox: refused to send"):
        factory.client("kms").list_keys()


def test_sandbox_hides_real_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("AWS_PROFILE", "production")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREALKEY")
    with Sandbox(scenarios.load("rogue-grant")):
        assert "AWS_PROFILE" not in os.environ
        assert os.environ["AWS_ACCESS_KEY_ID"] != "AKIAREALKEY"
    assert os.environ["AWS_PROFILE"] == "production"
    assert os.environ["AWS_ACCESS_KEY_ID"] == "AKIAREALKEY"

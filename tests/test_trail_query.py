"""The athena and lake sources: the SQL sent, every result page read, rows matched exactly."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest
from botocore.stub import Stubber

from kmsir.actions.cloudtrail import Collect, CollectParams
from kmsir.actions.trail_query import athena_sql
from kmsir.aws import ClientFactory
from kmsir.trail.catalogue import TRAIL_EVENTS

from .fakes import context
from .test_trail_files import ARN, KEY

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


def athena_row(values: list[str | None]) -> dict[str, Any]:
    return {"Data": [{"VarCharValue": v} if v is not None else {} for v in values]}


def test_athena_sql_narrows_to_the_key_window_and_partitions() -> None:
    sql = athena_sql(
        "security",
        "cloudtrail_logs",
        [KEY, "alias/pay"],
        datetime(2026, 11, 21, tzinfo=timezone.utc),
        NOW,
        "timestamp",
    )
    assert sql.startswith("SELECT eventversion, eventid, eventtime")
    assert 'FROM "security"."cloudtrail_logs"' in sql
    assert "eventsource = 'kms.amazonaws.com'" in sql
    assert (
        "eventtime >= '2026-11-21T00:00:00Z'" in sql
        and "eventtime <= '2026-11-28T12:00:00Z'" in sql
    )
    assert f"requestparameters LIKE '%{KEY}%'" in sql and "r.arn LIKE '%alias/pay%'" in sql
    assert "timestamp BETWEEN '2026/11/21' AND '2026/11/29'" in sql
    assert "concat(year, month, day) BETWEEN '20261121' AND '20261129'" in athena_sql(
        "d", "t", [KEY], datetime(2026, 11, 21, tzinfo=timezone.utc), NOW, "year-month-day"
    )


def test_athena_source_against_moto(moto_clients: ClientFactory) -> None:
    from moto.athena.models import QueryResults, athena_backends

    header = [
        "eventid",
        "eventtime",
        "eventname",
        "requestparameters",
        "useridentity",
        "resources",
        "readonly",
    ]
    rows = [
        athena_row(header),
        athena_row(
            [
                "e1",
                "2026-11-27T10:00:00Z",
                "Decrypt",
                json.dumps({"keyId": ARN}),
                json.dumps({"arn": "arn:aws:sts::111122223333:assumed-role/a/s"}),
                json.dumps([{"arn": ARN}]),
                "true",
            ]
        ),
        # the LIKE pre-filter let this through; the exact matcher drops it
        athena_row(
            [
                "e2",
                "2026-11-27T11:00:00Z",
                "Decrypt",
                json.dumps({"note": f"mentions {KEY}"}),
                None,
                None,
                "true",
            ]
        ),
    ]
    athena_backends["123456789012"]["eu-west-1"].query_results_queue.append(
        QueryResults(rows=rows, column_info=[{"Name": h, "Type": "varchar"} for h in header])
    )
    ctx, calls = context(moto_clients)
    ctx.now = lambda: NOW
    params = CollectParams(
        key=ARN,
        source="athena",
        database="security",
        table="cloudtrail_logs",
        output="s3://results/kmsir/",
        since="7d",
    )
    outcome = Collect().run(ctx, params)
    assert outcome.outputs["count"] == 1
    sent = next(c.params for c in calls if c.operation == "StartQueryExecution")
    assert sent["QueryExecutionContext"] == {"Database": "security"}
    assert sent["ResultConfiguration"] == {"OutputLocation": "s3://results/kmsir/"}
    assert sent["QueryString"] == athena_sql(
        "security",
        "cloudtrail_logs",
        sorted({KEY, ARN.rsplit("/", 1)[1]}),
        datetime(2026, 11, 21, 12, tzinfo=timezone.utc),
        NOW,
    )
    journaled = [d for t, d in ctx.artifacts.events if t == "query"]  # type: ignore[attr-defined]
    assert journaled[0]["sql"] == sent["QueryString"]


def test_lake_source_pages_through_every_result(moto_clients: ClientFactory) -> None:
    ctx, _ = context(moto_clients)
    ctx.now = lambda: NOW
    client = moto_clients.client("cloudtrail")
    store = "arn:aws:cloudtrail:eu-west-1:111122223333:eventdatastore/abcd-1234"

    def row(n: int, keyed: bool) -> list[dict[str, str]]:
        event = {
            "eventID": f"l{n}",
            "eventTime": f"2026-11-27T0{n}:00:00Z",
            "eventName": "Decrypt",
            "resources": [{"ARN": ARN if keyed else ARN.replace("1234abcd", "00000000")}],
        }
        return [{"eventJson": json.dumps(event)}]

    with Stubber(client) as stub:
        stub.add_response("start_query", {"QueryId": "0123456789abcdef0123456789abcdef0123"})
        stub.add_response(
            "describe_query",
            {"QueryId": "0123456789abcdef0123456789abcdef0123", "QueryStatus": "RUNNING"},
        )
        stub.add_response(
            "describe_query",
            {"QueryId": "0123456789abcdef0123456789abcdef0123", "QueryStatus": "FINISHED"},
        )
        stub.add_response(
            "get_query_results",
            {"QueryResultRows": [row(1, True), row(2, False)], "NextToken": "page-2"},
            {"EventDataStore": store, "QueryId": "0123456789abcdef0123456789abcdef0123"},
        )
        stub.add_response(
            "get_query_results",
            {"QueryResultRows": [row(3, True)]},
            {
                "EventDataStore": store,
                "QueryId": "0123456789abcdef0123456789abcdef0123",
                "NextToken": "page-2",
            },
        )
        params = CollectParams(key=ARN, source="lake", event_data_store=store, since="7d")
        import kmsir.actions.trail_query as tq

        saved, tq.POLL_CAP = tq.POLL_CAP, 0.0
        try:
            outcome = Collect().run(ctx, params)
        finally:
            tq.POLL_CAP = saved
        stub.assert_no_pending_responses()
    assert outcome.outputs["count"] == 2  # l1 and l3; l2 names another key


@pytest.mark.parametrize(
    ("source", "message"),
    [("athena", "needs database and table"), ("lake", "needs event_data_store")],
)
def test_query_sources_need_their_settings(source: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CollectParams(key=ARN, source=source)  # type: ignore[arg-type]


def test_lookup_follows_pages_and_keeps_each_event_once(moto_clients: ClientFactory) -> None:
    """(Throttling is botocore's to retry: tests/test_faults.py throttles every LookupEvents
    call, through botocore's retry layer, which a Stubber bypasses.)"""
    kms = moto_clients.client("kms")
    key = kms.create_key()["KeyMetadata"]
    ctx, _ = context(moto_clients)
    trail = moto_clients.client("cloudtrail")
    event = {
        "eventID": "t1",
        "eventTime": "2026-11-27T01:00:00Z",
        "eventName": "Decrypt",
        "resources": [{"ARN": key["Arn"]}],
    }
    item = {"EventId": "t1", "CloudTrailEvent": json.dumps(event)}
    with Stubber(trail) as stub:
        stub.add_response("lookup_events", {"Events": [item], "NextToken": "next-page"})
        stub.add_response("lookup_events", {"Events": []})
        stub.add_response("lookup_events", {"Events": [item]})  # the pass by key id
        for _ in TRAIL_EVENTS:  # a pass by name for each trail event
            stub.add_response("lookup_events", {"Events": []})
        outcome = Collect().run(ctx, CollectParams(key=key["Arn"], since="30d"))
        stub.assert_no_pending_responses()
    assert outcome.outputs["count"] == 1  # found twice, kept once


def test_athena_structs_get_cloudtrail_names(moto_clients: ClientFactory) -> None:
    from moto.athena.models import QueryResults, athena_backends

    header = ["eventid", "eventtime", "eventname", "useridentity", "resources"]
    rows = [
        athena_row(header),
        athena_row(
            [
                "e9",
                "2026-11-27T10:00:00Z",
                "Decrypt",
                json.dumps(
                    {
                        "type": "AssumedRole",
                        "accountid": "111122223333",
                        "arn": "arn:aws:sts::111122223333:assumed-role/a/s",
                    }
                ),
                json.dumps([{"arn": ARN, "accountid": "111122223333", "type": "AWS::KMS::Key"}]),
            ]
        ),
    ]
    athena_backends["123456789012"]["eu-west-1"].query_results_queue.append(
        QueryResults(rows=rows, column_info=[{"Name": h, "Type": "varchar"} for h in header])
    )
    ctx, _ = context(moto_clients)
    ctx.now = lambda: NOW
    outcome = Collect().run(
        ctx, CollectParams(key=ARN, source="athena", database="d", table="t", since="7d")
    )
    assert outcome.outputs["count"] == 1  # named only in resources (lower-case in Athena)


def test_windows_with_offsets_are_read_in_utc(moto_clients: ClientFactory) -> None:
    import gzip as gz

    import boto3

    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(
        Bucket="tz-logs", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    late = {
        "eventID": "late",
        "eventTime": "2026-11-01T21:00:00Z",
        "resources": [{"ARN": ARN, "type": "AWS::KMS::Key"}],
    }
    # delivered after midnight: the file sits in the next day's folder
    s3.put_object(
        Bucket="tz-logs",
        Key="AWSLogs/111122223333/CloudTrail/eu-west-1/2026/11/02/f.json.gz",
        Body=gz.compress(json.dumps({"Records": [late]}).encode()),
    )
    ctx, _ = context(moto_clients)
    params = CollectParams(
        key=ARN,
        source="s3",
        bucket="tz-logs",
        since="2026-11-02T01:00:00+05:00",
        until="2026-11-02T03:00:00+05:00",
    )
    assert Collect().run(ctx, params).outputs["count"] == 1

"""CloudTrail at scale: the key's events from an Athena table or a CloudTrail Lake store.

Both build SQL that narrows the search to the key's names (KMS events, the time window, the
key id or aliases in resources, request or response) and to CloudTrail's own events that can
stop a trail logging KMS (``trail.catalogue.TRAIL_EVENTS``), run it where the logs are
(terabytes never cross the network), page through the results, and hand every row back as an
event that the one matching function then checks exactly. A row that is no usable event (its
JSON not JSON, not an object, nested too deeply, lone surrogates) is handed to ``skip`` with
the reason, and the rest are read on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from kmsir.actions.base import ActionContext
from kmsir.aws import aws_errors
from kmsir.errors import ActionError
from kmsir.evidence.entries import Query
from kmsir.inert import one_line
from kmsir.trail.catalogue import KMS_SOURCE, TRAIL_EVENTS, TRAIL_SOURCE
from kmsir.trail.events import decode_text, event_problem
from kmsir.trail.integrity_local import DELIVERY_LAG

if TYPE_CHECKING:
    from mypy_boto3_athena import AthenaClient

#: Told about each row that is no usable event: the reason, and where it was.
Skip = Callable[[str, str], None]

#: Seconds between status polls of a running query (doubling up to this cap).
POLL_CAP = 5.0
#: Longest a query may run before kmsir gives up on it.
QUERY_TIMEOUT = 30 * 60

#: How the Athena table is partitioned: not at all; by ``timestamp`` (``yyyy/MM/dd``); by
#: ``year``/``month``/``day``; or ``projection``: the organisation trail table of ``kmsir
#: cloudtrail athena-ddl``, projected over ``account``, ``region`` and ``timestamp``.
Partitions = Literal["none", "timestamp", "year-month-day", "projection"]

_ATHENA_COLUMNS = (
    "eventversion",
    "eventid",
    "eventtime",
    "eventsource",
    "eventname",
    "awsregion",
    "sourceipaddress",
    "useragent",
    "errorcode",
    "errormessage",
    "requestparameters",
    "responseelements",
    "requestid",
    "readonly",
    "eventtype",
    "recipientaccountid",
    "sharedeventid",
)
_ATHENA_JSON_COLUMNS = ("useridentity", "resources")
#: Athena's lower-case column -> CloudTrail's field name.
_FIELD = {
    "eventversion": "eventVersion",
    "eventid": "eventID",
    "eventtime": "eventTime",
    "eventsource": "eventSource",
    "eventname": "eventName",
    "awsregion": "awsRegion",
    "sourceipaddress": "sourceIPAddress",
    "useragent": "userAgent",
    "errorcode": "errorCode",
    "errormessage": "errorMessage",
    "requestparameters": "requestParameters",
    "responseelements": "responseElements",
    "requestid": "requestID",
    "readonly": "readOnly",
    "eventtype": "eventType",
    "recipientaccountid": "recipientAccountId",
    "sharedeventid": "sharedEventID",
    "useridentity": "userIdentity",
    "resources": "resources",
}


def _quote(text: str) -> str:
    """A SQL string literal (names come validated; quotes are doubled all the same)."""
    return "'" + text.replace("'", "''") + "'"


def _like_any(column: str, names: list[str]) -> str:
    return " OR ".join(f"{column} LIKE {_quote('%' + n + '%')}" for n in names)


def _kms_or_trail(source: str, name: str, key_filter: str) -> str:
    """The key's KMS events, or a trail event (``source``/``name``: the columns' names)."""
    trail_names = ", ".join(_quote(n) for n in sorted(TRAIL_EVENTS))
    return (
        f"(({source} = {_quote(KMS_SOURCE)} AND ({key_filter}))"
        f" OR ({source} = {_quote(TRAIL_SOURCE)} AND {name} IN ({trail_names})))"
    )


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def athena_sql(
    database: str,
    table: str,
    names: list[str],
    start: datetime,
    end: datetime,
    partitions: Partitions = "none",
    *,
    accounts: Sequence[str] = (),
    regions: Sequence[str] = (),
) -> str:
    """SQL over the standard Athena CloudTrail table for the events that may name the key.

    With ``projection``, ``accounts`` and ``regions`` (validated ids and names) narrow the
    ``account`` and ``region`` partitions when given; without them every projected account
    and Region is read. A resource naming the key is found with ``cardinality(filter(...))``
    rather than ``any_match``: the same rows (a NULL or empty array selects none either
    way), in functions Athena documents (https://docs.aws.amazon.com/athena/latest/ug/
    filtering-arrays.html; Trino: https://trino.io/docs/current/functions/array.html) and
    sqlglot translates for the DuckDB equivalence test (it has no ``any_match``).
    """
    columns = [
        *_ATHENA_COLUMNS,
        *(f"json_format(CAST({c} AS JSON)) AS {c}" for c in _ATHENA_JSON_COLUMNS),
    ]
    key_filter = " OR ".join(
        [
            _like_any("requestparameters", names),
            _like_any("responseelements", names),
            "cardinality(filter(resources, r -> " + _like_any("r.arn", names) + ")) > 0",
        ]
    )
    where = [
        f"eventtime >= {_quote(_iso(start))}",
        f"eventtime <= {_quote(_iso(end))}",
        _kms_or_trail("eventsource", "eventname", key_filter),
    ]
    last = end + DELIVERY_LAG  # files are dated when delivered, minutes after the events
    if partitions in ("timestamp", "projection"):
        where.append(
            f"timestamp BETWEEN {_quote(f'{start:%Y/%m/%d}')} AND {_quote(f'{last:%Y/%m/%d}')}"
        )
    elif partitions == "year-month-day":
        where.append(
            f"concat(year, month, day) BETWEEN {_quote(f'{start:%Y%m%d}')} "
            f"AND {_quote(f'{last:%Y%m%d}')}"
        )
    if partitions == "projection":
        for column, values in (("account", accounts), ("region", regions)):
            if values:
                where.append(f"{column} IN ({', '.join(_quote(v) for v in sorted(values))})")
    return (
        f'SELECT {", ".join(columns)}\nFROM "{database}"."{table}"\nWHERE '
        + "\n  AND ".join(where)
        + "\nORDER BY eventtime"
    )


#: Field order of the standard Athena CloudTrail table's structs (engine v2 casts ROW values to
#: JSON arrays), and their CloudTrail names.
_USER_IDENTITY = (
    "type",
    "principalId",
    "arn",
    "accountId",
    "invokedBy",
    "accessKeyId",
    "userName",
    "sessionContext",
)
_RESOURCE = ("ARN", "accountId", "type")


def _cloudtrail_case(value: Any, names: tuple[str, ...]) -> Any:
    """An Athena struct (lower-case object, or positional array) with CloudTrail's names.

    A field the record did not carry is NULL in the struct: it is left out again (a resource
    without ``type`` may be a key, as the ``files`` source reads it)."""
    by_lower = {n.lower(): n for n in names}
    if isinstance(value, dict):
        return {by_lower.get(k.lower(), k): v for k, v in value.items() if v is not None}
    if isinstance(value, list) and value and not isinstance(value[0], dict | list):
        return {n: v for n, v in zip(names, value, strict=False) if v is not None}
    return value


class _TooDeep(Exception):
    """A column's JSON nests past what any parser follows."""


def _json_or_text(value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value
    except RecursionError:
        raise _TooDeep from None


def athena_events(
    ctx: ActionContext,
    sql: str,
    *,
    database: str,
    workgroup: str,
    output: str | None,
    skip: Skip,
    sleep: Any = time.sleep,
) -> Iterator[dict[str, Any]]:
    """Run ``sql`` in Athena and yield each result row as a CloudTrail event."""
    athena = ctx.clients.client("athena")
    request: dict[str, Any] = {
        "QueryString": sql,
        "WorkGroup": workgroup,
        "QueryExecutionContext": {"Database": database},
    }
    if output:
        request["ResultConfiguration"] = {"OutputLocation": output}
    with aws_errors("Athena StartQueryExecution", service="athena"):
        query_id = athena.start_query_execution(**request)["QueryExecutionId"]
    ctx.artifacts.journal(Query(service="athena", id=query_id, sql=sql))
    try:
        _wait(lambda: _athena_state(athena, query_id), sleep, f"Athena query {query_id}")
    except ActionError as exc:
        if "CONSTRAINT_VIOLATION" not in str(exc):
            raise
        raise ActionError(  # an injected partition column read without its values
            f"{exc} (the table's projected partitions need their values: give "
            "cloudtrail.collect accounts: [...] and regions: [...], or run with --accounts "
            "and --regions)"
        ) from None
    header: list[str] | None = None
    rows = 0
    with aws_errors(f"Athena GetQueryResults {query_id}", service="athena"):
        for page in athena.get_paginator("get_query_results").paginate(QueryExecutionId=query_id):
            for row in page["ResultSet"]["Rows"]:
                values = [d.get("VarCharValue") for d in row.get("Data", [])]
                if header is None:
                    header = [str(v) for v in values]
                    continue
                rows += 1
                try:
                    event = _athena_event(header, values)
                except _TooDeep:
                    skip("record is nested too deeply", f"Athena query {query_id} row {rows}")
                    continue
                problem = event_problem(event)
                if problem is not None:
                    skip(problem, f"Athena query {query_id} row {rows}")
                    continue
                yield event


def _athena_event(header: list[str], values: list[Any]) -> dict[str, Any]:
    """One result row as a CloudTrail event (CloudTrail's field names, JSON columns decoded)."""
    event: dict[str, Any] = {}
    for column, value in zip(header, values, strict=False):
        field = _FIELD.get(column, column)
        event[field] = (
            _json_or_text(value)
            if column in ("requestparameters", "responseelements", *_ATHENA_JSON_COLUMNS)
            else value
        )
    event["userIdentity"] = _cloudtrail_case(event.get("userIdentity"), _USER_IDENTITY)
    if isinstance(event.get("resources"), list):
        event["resources"] = [_cloudtrail_case(r, _RESOURCE) for r in event["resources"]]
    if isinstance(event.get("readOnly"), str):
        event["readOnly"] = event["readOnly"] == "true"
    return event


def _athena_state(athena: AthenaClient, query_id: str) -> tuple[str, str]:
    with aws_errors(f"Athena GetQueryExecution {query_id}", service="athena"):
        status = athena.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]["Status"]
    return str(status["State"]), str(status.get("StateChangeReason", ""))


def _wait(state: Any, sleep: Any, what: str) -> None:
    """Poll until the query finished; fail with the service's reason otherwise."""
    delay, waited = 0.25, 0.0
    while True:
        current, reason = state()
        if current in ("SUCCEEDED", "FINISHED"):
            return
        if current in ("FAILED", "CANCELLED", "TIMED_OUT"):
            # the service's reason may quote the data (a bad row's text): one visible line
            raise ActionError(f"{what} {current.lower()}: {one_line(reason[:300])}")
        if waited > QUERY_TIMEOUT:
            raise ActionError(f"{what} still {current} after {QUERY_TIMEOUT // 60} minutes")
        sleep(delay)
        waited += delay
        delay = min(delay * 2, POLL_CAP)


def lake_sql(store: str, names: list[str], start: datetime, end: datetime) -> str:
    """CloudTrail Lake SQL for the events that may name the key (raw events in eventJson)."""
    key_filter = _like_any("eventJson", names)
    # the store id and key names are validated, every value quoted
    return (
        f"SELECT eventJson FROM {store}\n"  # noqa: S608
        f"WHERE eventTime >= {_quote(start.strftime('%Y-%m-%d %H:%M:%S'))}\n"
        f"  AND eventTime <= {_quote(end.strftime('%Y-%m-%d %H:%M:%S'))}\n"
        f"  AND {_kms_or_trail('eventSource', 'eventName', key_filter)}\nORDER BY eventTime"
    )


def lake_events(
    ctx: ActionContext, sql: str, *, store: str, skip: Skip, sleep: Any = time.sleep
) -> Iterator[dict[str, Any]]:
    """Run ``sql`` in CloudTrail Lake and yield each row's event."""
    trail = ctx.clients.client("cloudtrail")
    with aws_errors("CloudTrail Lake StartQuery", service="cloudtrail"):
        query_id = trail.start_query(QueryStatement=sql)["QueryId"]
    ctx.artifacts.journal(Query(service="cloudtrail-lake", id=query_id, sql=sql))

    def state() -> tuple[str, str]:
        with aws_errors(f"CloudTrail Lake DescribeQuery {query_id}", service="cloudtrail"):
            found = trail.describe_query(EventDataStore=store, QueryId=query_id)
        return str(found["QueryStatus"]), str(found.get("ErrorMessage", ""))

    _wait(state, sleep, f"CloudTrail Lake query {query_id}")
    token: str | None = None
    rows = 0
    while True:
        request: dict[str, Any] = {"EventDataStore": store, "QueryId": query_id}
        if token:
            request["NextToken"] = token
        with aws_errors(f"CloudTrail Lake GetQueryResults {query_id}", service="cloudtrail"):
            page = trail.get_query_results(**request)
        for row in page.get("QueryResultRows", []):
            rows += 1
            for cell in row:
                raw = cell.get("eventJson")
                if not isinstance(raw, str):
                    continue
                event = decode_text(raw)
                if isinstance(event, str):
                    skip(event, f"CloudTrail Lake query {query_id} row {rows}")
                else:
                    yield event
        token = page.get("NextToken")
        if not token:
            return

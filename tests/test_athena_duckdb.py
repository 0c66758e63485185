"""The Athena SQL run by a real SQL engine: the ``athena`` source finds exactly the events the
``files`` source finds, over an organisation trail's logs.

The logs (three accounts, three Regions, four days, keys, aliases, decoys, trail events,
events just outside the window, an event delivered the next day) are written as an
organisation trail lays them out (``AWSLogs/o-ID/ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/``) and
loaded into a DuckDB table made from ``kmsir cloudtrail athena-ddl``'s own DDL (its columns
translated by sqlglot, the partition columns read from each file's path, a JSON column as the
JSON text Athena's SerDe gives a STRING column). ``cloudtrail.collect`` runs with
``source: athena, partitions: projection``; its Athena client answers from DuckDB: the SQL it
sends is translated by sqlglot (Athena's Trino dialect to DuckDB) and run, the rows returned
as GetQueryResults' strings. Both sources must keep the same event ids, for several keys,
aliases, windows and account/Region partitions, and the SQL must select every true match
(its rows are candidates the one matching function then checks).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb  # the test extra's: a missing engine fails here, never skips
import pytest
import sqlglot
from sqlglot import exp

from kmsir.actions.cloudtrail import Collect, CollectParams
from kmsir.aws import ClientFactory
from kmsir.trail.athena_ddl import TrailTable
from kmsir.trail.match import KeyMatcher

from .fakes import context

ORG = "o-abcdefghij"
A1, A2, A3 = "111122223333", "444455556666", "777788889999"
ACCOUNTS = (A1, A2, A3)
REGIONS = ("eu-west-1", "us-east-1", "ap-south-1")
DAY0 = datetime(2026, 11, 24, tzinfo=timezone.utc)
DAYS = 4
NOW = DAY0 + timedelta(days=DAYS + 1)
K1 = "1234abcd-12ab-34cd-56ef-1234567890ab"  # A1, eu-west-1; alias/pay; a replica elsewhere
K2 = "mrk-0123456789abcdef0123456789abcdef"  # A2, us-east-1; alias/ops
K3 = "0badc0de-0000-4000-8000-000000000003"  # A1, eu-west-1: the decoy; alias/pay in A2
DATABASE, TABLE = "security", "cloudtrail_org"


def key_arn(key: str, account: str, region: str) -> str:
    return f"arn:aws:kms:{region}:{account}:key/{key}"


def alias_arn(alias: str, account: str, region: str) -> str:
    return f"arn:aws:kms:{region}:{account}:{alias}"


# -- the organisation trail's logs -----------------------------------------------------------


@dataclass
class Trail:
    root: Path
    records: list[tuple[str, str, str, dict[str, Any]]]  # account, region, day folder, record


def _event(n: int, account: str, region: str, when: datetime, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "eventVersion": "1.09",
        "eventID": f"ev-{n:04d}",
        "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "kms.amazonaws.com",
        "eventName": "Decrypt",
        "awsRegion": region,
        "sourceIPAddress": "203.0.113.7",
        "userAgent": "aws-cli/2.15",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": "AROAEXAMPLE:s",
            "arn": f"arn:aws:sts::{account}:assumed-role/app/s",
            "accountId": account,
            "sessionContext": {
                "sessionIssuer": {"type": "Role", "arn": f"arn:aws:iam::{account}:role/app"},
                "attributes": {"mfaAuthenticated": "false"},
            },
        },
        "requestParameters": None,
        "responseElements": None,
        "requestID": f"req-{n}",
        "readOnly": True,
        "eventType": "AwsApiCall",
        "recipientAccountId": account,
        "managementEvent": True,
        "eventCategory": "Management",
    }
    event.update(fields)
    return event


def _kinds(account: str, region: str) -> list[dict[str, Any]]:
    """What one account and Region logs on one day (before its time and id are set)."""
    k1 = key_arn(K1, A1, "eu-west-1")
    k1_here = key_arn(K1, account, region)  # the same id in another Region: a replica
    k2 = key_arn(K2, A2, "us-east-1")
    k3 = key_arn(K3, A1, "eu-west-1")
    res = [{"ARN": k1, "accountId": A1, "type": "AWS::KMS::Key"}]
    return [
        # the key in resources only
        {"resources": res, "requestParameters": {"encryptionContext": {"app": "pay"}}},
        # in requestParameters only (no resources: an old event version)
        {"eventName": "CreateGrant", "requestParameters": {"keyId": k1, "operations": ["Decrypt"]}},
        # a replica's ARN, same key id
        {"eventName": "DescribeKey", "requestParameters": {"keyId": k1_here}},
        # in responseElements only
        {
            "eventName": "CreateKey",
            "readOnly": False,
            "responseElements": {"keyMetadata": {"keyId": K1, "arn": k1}},
        },
        # by alias, resources naming the key it resolved to
        {"eventName": "Encrypt", "requestParameters": {"keyId": "alias/pay"}, "resources": res},
        # by alias, no resources: ours only in A1/eu-west-1 (alias/pay in A2 is K3's)
        {"eventName": "Encrypt", "requestParameters": {"keyId": "alias/pay"}},
        # an alias ARN of ours, and one of another account
        {
            "eventName": "Encrypt",
            "requestParameters": {"keyId": alias_arn("alias/pay", A1, "eu-west-1")},
        },
        {
            "eventName": "Encrypt",
            "requestParameters": {"keyId": alias_arn("alias/pay", A2, "eu-west-1")},
        },
        # an alias moved to ours (aliasName while resources list keys)
        {
            "eventName": "UpdateAlias",
            "readOnly": False,
            "requestParameters": {"aliasName": "alias/ops", "targetKeyId": K2},
            "resources": [
                {
                    "ARN": alias_arn("alias/ops", A2, "us-east-1"),
                    "accountId": A2,
                    "type": "AWS::KMS::Alias",
                },
                {"ARN": k2, "accountId": A2, "type": "AWS::KMS::Key"},
            ],
        },
        # K2 named in resources with no type (kept: a resource without type may be a key)
        {"resources": [{"ARN": k2, "accountId": A2}]},
        # K2 by its id in a grant's response
        {"eventName": "CreateGrant", "responseElements": {"keyId": k2, "grantId": "g"}},
        # decoys: another key; the key id in a field that names no key; another service
        {"resources": [{"ARN": k3, "accountId": A1, "type": "AWS::KMS::Key"}]},
        {
            "eventName": "TagResource",
            "requestParameters": {"keyId": k3, "tags": [{"tagValue": f"{K1} {K2}"}]},
        },
        {
            "eventSource": "s3.amazonaws.com",
            "eventName": "PutObject",
            "requestParameters": {
                "bucketName": "b",
                "x-amz-server-side-encryption-aws-kms-key-id": k1,
            },
        },
        # CloudTrail's own: two that can stop logging KMS, one that cannot
        {"eventSource": "cloudtrail.amazonaws.com", "eventName": "StopLogging", "readOnly": False},
        {"eventSource": "cloudtrail.amazonaws.com", "eventName": "PutEventSelectors"},
        {"eventSource": "cloudtrail.amazonaws.com", "eventName": "StartLogging"},
    ]


def _folder(root: Path, account: str, region: str, day: datetime) -> Path:
    return root / "AWSLogs" / ORG / account / "CloudTrail" / region / day.strftime("%Y/%m/%d")


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Trail:
    root = tmp_path_factory.mktemp("org-trail")
    records: list[tuple[str, str, str, dict[str, Any]]] = []
    files: dict[Path, list[dict[str, Any]]] = {}
    n = 0

    def add(
        account: str, region: str, when: datetime, folder_day: datetime, event: dict[str, Any]
    ) -> None:
        nonlocal n
        n += 1
        record = _event(n, account, region, when, **event)
        folder = _folder(root, account, region, folder_day)
        files.setdefault(folder, []).append(record)
        records.append((account, region, folder_day.strftime("%Y/%m/%d"), record))

    for account in ACCOUNTS:
        for region in REGIONS:
            for day in range(DAYS):
                base = DAY0 + timedelta(days=day)
                for k, kind in enumerate(_kinds(account, region)):
                    when = base + timedelta(hours=1 + (k * 5 + day * 3) % 22, minutes=k)
                    add(account, region, when, base, kind)
            # delivered the next day: its folder is the day after its time
            last = DAY0 + timedelta(days=1, hours=23, minutes=58)
            add(account, region, last, last + timedelta(days=1), _kinds(account, region)[0])
    for folder, batch in files.items():
        folder.mkdir(parents=True, exist_ok=True)
        half = len(batch) // 2  # two files a folder
        for part, chunk in enumerate((batch[:half], batch[half:])):
            account, region = folder.parts[-7], folder.parts[-5]
            stamp = folder.parts[-3] + folder.parts[-2] + folder.parts[-1]
            name = f"{account}_CloudTrail_{region}_{stamp}T0000Z_{part}.json.gz"
            (folder / name).write_bytes(gzip.compress(json.dumps({"Records": chunk}).encode()))
    return Trail(root, records)


# -- the Athena table, in DuckDB -------------------------------------------------------------


def _shape(value: Any, kind: exp.DataType) -> Any:
    """A CloudTrail value as the table's column of type ``kind`` holds it."""
    if value is None:
        return None
    if kind.this == exp.DataType.Type.STRUCT:
        if not isinstance(value, dict):
            return None
        lower = {k.lower(): v for k, v in value.items()}
        return {f.name: _shape(lower.get(f.name), f.args["kind"]) for f in kind.expressions}
    if kind.this == exp.DataType.Type.ARRAY:
        element = kind.expressions[0]
        return [_shape(v, element) for v in value] if isinstance(value, list) else None
    if kind.this == exp.DataType.Type.MAP:
        return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)  # JSON text in a STRING


@pytest.fixture(scope="module")
def table(trail: Trail, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The trail's records in a DuckDB table made from ``athena-ddl``'s CREATE TABLE."""
    ddl = TrailTable(
        bucket="org-trail", accounts=ACCOUNTS, regions=REGIONS, org_id=ORG, table=TABLE
    ).ddl()
    created = sqlglot.parse_one(ddl, read="athena")
    columns = [c for c in created.this.expressions if isinstance(c, exp.ColumnDef)]
    partitions = ("account", "region", "timestamp")
    types = {c.name: c.args["kind"].sql("duckdb") for c in columns}
    types.update({p: "VARCHAR" for p in partitions})
    rows = tmp_path_factory.mktemp("duckdb") / "rows.ndjson"
    with rows.open("w") as out:
        for account, region, day, record in _from_files(trail.root):
            lower = {k.lower(): v for k, v in record.items()}
            row = {c.name: _shape(lower.get(c.name), c.args["kind"]) for c in columns}
            row.update(account=account, region=region, timestamp=day)
            out.write(json.dumps(row) + "\n")
    con = duckdb.connect()
    con.execute(f'CREATE SCHEMA "{DATABASE}"')
    listed = ", ".join(f'"{name}" {kind}' for name, kind in types.items())
    con.execute(f'CREATE TABLE "{DATABASE}"."{TABLE}" ({listed})')
    spec = "{" + ", ".join(f"'{k}': '{v}'" for k, v in types.items()) + "}"
    con.execute(
        f'INSERT INTO "{DATABASE}"."{TABLE}" '  # noqa: S608 (the test's own names and types)
        f"SELECT * FROM read_json('{rows}', format='newline_delimited', columns={spec})"
    )
    return con


def _from_files(root: Path) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """Every record of the trail files, with the partition values of its file's path."""
    for path in sorted(root.rglob("*.json.gz")):
        parts = path.relative_to(root / "AWSLogs" / ORG).parts
        account, region, day = parts[0], parts[2], "/".join(parts[3:6])
        for record in json.loads(gzip.decompress(path.read_bytes()))["Records"]:
            yield account, region, day, record


class DuckAthena:
    """Athena's three calls, answered by DuckDB running the SQL sent (translated by sqlglot):
    installed on the client first, so nothing is sent."""

    PAGE = 40  # rows a page: the results take several pages

    def __init__(self, con: Any) -> None:
        self.con = con
        self.sql: list[str] = []
        self.candidates: set[str] = set()
        self._rows: list[dict[str, Any]] = []

    def __call__(self, model: Any, params: dict[str, Any], **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        body = json.loads(params["body"] or b"{}")
        ok = AWSResponse("https://athena.invalid", 200, {}, None)
        if model.name == "StartQueryExecution":
            self._run(body["QueryString"])
            return ok, {"QueryExecutionId": "q-1"}
        if model.name == "GetQueryExecution":
            return ok, {
                "QueryExecution": {"QueryExecutionId": "q-1", "Status": {"State": "SUCCEEDED"}}
            }
        if model.name == "GetQueryResults":
            start = int(body.get("NextToken") or 0)
            page: dict[str, Any] = {"ResultSet": {"Rows": self._rows[start : start + self.PAGE]}}
            if start + self.PAGE < len(self._rows):
                page["NextToken"] = str(start + self.PAGE)
            return ok, page
        raise AssertionError(f"unexpected Athena call {model.name}")

    def _run(self, sql: str) -> None:
        self.sql.append(sql)
        translated = sqlglot.transpile(sql, read="athena", write="duckdb")[0]
        cursor = self.con.execute(translated)
        header = [d[0] for d in cursor.description]
        found = cursor.fetchall()
        self.candidates = {r[header.index("eventid")] for r in found}

        def cells(values: Any) -> dict[str, Any]:
            return {"Data": [{} if v is None else {"VarCharValue": str(v)} for v in values]}

        self._rows = [cells(header), *(cells(r) for r in found)]


@pytest.fixture(scope="module")
def clients() -> Iterator[ClientFactory]:
    """Clients under moto (nothing is sent: DuckAthena answers first; moto would catch any
    call that got past it)."""
    import boto3
    from moto import mock_aws

    dummy = {f"aws_{k}": "testing" for k in ("access_key_id", "secret_access_key", "session_token")}
    with mock_aws():
        yield ClientFactory(
            session_factory=lambda: boto3.Session(region_name="eu-west-1", **dummy),
            region="eu-west-1",
            guard_send=True,
        )


# -- the cases -------------------------------------------------------------------------------

W_ALL = (DAY0 - timedelta(hours=1), DAY0 + timedelta(days=DAYS))
W_MID = (DAY0 + timedelta(days=1, hours=6), DAY0 + timedelta(days=1, hours=23, minutes=58))
#: One second each side of events: the ends are inclusive, a second beyond is out.
W_EDGE = (
    DAY0 + timedelta(days=2, hours=4, minutes=1),
    DAY0 + timedelta(days=3, hours=7, minutes=1),
)

CASES = [
    # key, aliases, window, accounts, regions
    (key_arn(K1, A1, "eu-west-1"), ["alias/pay"], W_ALL, None, None),
    (key_arn(K1, A1, "eu-west-1"), [], W_MID, [A1], None),
    (key_arn(K1, A1, "eu-west-1"), ["alias/pay"], W_EDGE, [A1, A3], ["eu-west-1", "ap-south-1"]),
    (K1, [], W_ALL, None, ["us-east-1"]),
    (key_arn(K2, A2, "us-east-1"), ["alias/ops"], W_ALL, [A2], None),
    (key_arn(K2, A2, "us-east-1"), [alias_arn("alias/ops", A2, "us-east-1")], W_MID, None, None),
    (key_arn(K3, A1, "eu-west-1"), ["alias/pay"], W_EDGE, [A2, A3], ["us-east-1"]),
]


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _collected(ctx: Any) -> list[str]:
    lines = gzip.decompress(ctx.artifacts.files["events.jsonl.gz"]).splitlines()
    return sorted(json.loads(line)["eventID"] for line in lines)


def _ids(clients: ClientFactory, params: CollectParams) -> list[str]:
    ctx, _ = context(clients)
    ctx.now = lambda: NOW
    Collect().run(ctx, params)
    return _collected(ctx)


@pytest.mark.parametrize(("key", "aliases", "window", "accounts", "regions"), CASES)
def test_athena_and_files_keep_the_same_events(
    key: str,
    aliases: list[str],
    window: tuple[datetime, datetime],
    accounts: list[str] | None,
    regions: list[str] | None,
    trail: Trail,
    table: Any,
    clients: ClientFactory,
) -> None:
    since, until = (_iso(w) for w in window)
    picked = [
        (a, r) for a in accounts or ACCOUNTS for r in regions or REGIONS
    ]  # the partitions read
    matcher = KeyMatcher.for_key(key, [*aliases, key])
    truth = sorted(
        {
            rec["eventID"]
            for a, r, _, rec in trail.records
            if (a, r) in picked and since <= rec["eventTime"] <= until and matcher.matches(rec)
        }
    )
    assert len(truth) >= 3  # every case finds something

    folders = [str(trail.root / "AWSLogs" / ORG / a / "CloudTrail" / r) for a, r in picked]
    files = _ids(
        clients,
        CollectParams(
            key=key, aliases=aliases, source="files", path=folders, since=since, until=until
        ),
    )

    duck = DuckAthena(table)
    athena = clients.client("athena")
    athena.meta.events.register_first("before-call.athena", duck, unique_id="duck-athena")
    try:
        queried = _ids(
            clients,
            CollectParams(
                key=key,
                aliases=aliases,
                source="athena",
                database=DATABASE,
                table=TABLE,
                partitions="projection",
                accounts=accounts,
                regions=regions,
                since=since,
                until=until,
            ),
        )
    finally:
        athena.meta.events.unregister("before-call.athena", unique_id="duck-athena")

    assert files == truth
    assert queried == truth
    assert set(truth) <= duck.candidates  # the SQL drops no true match
    assert duck.candidates - set(truth)  # and its rows are candidates, checked after
    [sql] = duck.sql
    assert "timestamp BETWEEN" in sql
    assert ("account IN" in sql) == bool(accounts) and ("region IN" in sql) == bool(regions)


def test_the_window_and_partitions_narrow_the_rows_read(table: Any) -> None:
    """The partition predicates are what Athena prunes by: the days, accounts and Regions
    the SQL names bound the rows it can see (so the bytes Athena scans)."""
    from kmsir.actions.trail_query import athena_sql

    sql = athena_sql(
        DATABASE, TABLE, [K1], *W_MID, "projection", accounts=[A1], regions=["eu-west-1"]
    )
    where = sql.split("WHERE", 1)[1].split("ORDER BY")[0]
    partitions = " AND ".join(
        p for p in where.split("\n  AND ") if p.split()[0] in ("timestamp", "account", "region")
    )
    # the test's own constants and kmsir's SQL
    query = f'SELECT DISTINCT account, region, "timestamp" FROM "{DATABASE}"."{TABLE}"'  # noqa: S608
    query += f" WHERE {partitions}"
    seen = table.execute(sqlglot.transpile(query, read="athena", write="duckdb")[0]).fetchall()
    assert sorted(seen) == [(A1, "eu-west-1", "2026/11/25"), (A1, "eu-west-1", "2026/11/26")]

"""``kmsir cloudtrail athena-ddl``: the partition-projected table of an organisation trail.

AWS's table and its projection:
https://docs.aws.amazon.com/athena/latest/ug/create-cloudtrail-table-partition-projection.html
(columns, SerDe, ``timestamp`` as a ``date`` projection); the organisation layout:
https://docs.aws.amazon.com/athena/latest/ug/create-cloudtrail-table-org-wide-trail.html.
(That the table reads what the ``files`` source reads is tests/test_athena_duckdb.py's.)
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
import sqlglot
from sqlglot import exp

from kmsir.actions.trail_query import _ATHENA_COLUMNS, _ATHENA_JSON_COLUMNS, athena_sql
from kmsir.errors import UsageError
from kmsir.trail.athena_ddl import TrailTable

from .clikit import cli
from .test_cli import assert_no_traceback

ORG = "o-abcdefghij"
ACCOUNTS = ("444455556666", "111122223333")


def _properties(ddl: str) -> dict[str, str]:
    return dict(re.findall(r"'([a-z.]+)'='([^']*)'", ddl))


def test_the_organisation_table_projects_account_region_and_day() -> None:
    ddl = TrailTable(
        bucket="org-trail",
        accounts=ACCOUNTS,
        regions=("us-east-1", "eu-west-1"),
        org_id=ORG,
        prefix="/central/",
        since="2025/06/01",
    ).ddl()
    assert ddl.startswith("CREATE EXTERNAL TABLE `default`.`cloudtrail_org` (")
    assert "PARTITIONED BY (`account` STRING, `region` STRING, `timestamp` STRING)" in ddl
    assert "LOCATION 's3://org-trail/central/AWSLogs/o-abcdefghij/'" in ddl
    assert _properties(ddl) == {
        "projection.enabled": "true",
        # enum, not injected: a query without an account predicate still runs (and reads
        # every listed account); injected would fail it with CONSTRAINT_VIOLATION
        "projection.account.type": "enum",
        "projection.account.values": "111122223333,444455556666",
        "projection.region.type": "enum",
        "projection.region.values": "eu-west-1,us-east-1",
        "projection.timestamp.type": "date",
        "projection.timestamp.format": "yyyy/MM/dd",
        "projection.timestamp.interval": "1",
        "projection.timestamp.interval.unit": "DAYS",
        "projection.timestamp.range": "2025/06/01,NOW",
        "storage.location.template": "s3://org-trail/central/AWSLogs/o-abcdefghij/"
        "${account}/CloudTrail/${region}/${timestamp}",
    }
    assert "'org.apache.hive.hcatalog.data.JsonSerDe'" in ddl
    assert "'com.amazon.emr.cloudtrail.CloudTrailInputFormat'" in ddl


def test_a_single_account_trail_has_no_organization_in_its_path() -> None:
    ddl = TrailTable(bucket="trail", accounts=ACCOUNTS[:1], regions=("eu-west-1",)).ddl()
    assert _properties(ddl)["storage.location.template"] == (
        "s3://trail/AWSLogs/${account}/CloudTrail/${region}/${timestamp}"
    )


def test_the_table_has_every_column_the_athena_source_reads() -> None:
    ddl = TrailTable(bucket="trail", accounts=ACCOUNTS, regions=("eu-west-1",)).ddl()
    created = sqlglot.parse_one(ddl, read="athena")
    columns = {c.name: c for c in created.this.expressions if isinstance(c, exp.ColumnDef)}
    assert set(_ATHENA_COLUMNS) | set(_ATHENA_JSON_COLUMNS) <= set(columns)
    resources = columns["resources"].args["kind"]
    assert resources.this == exp.DataType.Type.ARRAY
    assert [f.name for f in resources.expressions[0].expressions] == ["arn", "accountid", "type"]
    # and the SQL of partitions: projection names the table's partition columns
    sql = athena_sql("default", "cloudtrail_org", ["k"], *_window(), "projection", accounts=["1"])
    assert "timestamp BETWEEN" in sql and "account IN ('1')" in sql and "region IN" not in sql


def _window() -> tuple[datetime, datetime]:
    return datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 1, 2, tzinfo=timezone.utc)


def test_the_command_prints_the_ddl() -> None:
    ran = cli(
        "cloudtrail",
        "athena-ddl",
        "--bucket",
        "org-trail",
        "--org-id",
        ORG,
        "--accounts",
        "111122223333, 444455556666",
        "--accounts",
        "777788889999",
        "--table",
        "org_logs",
        "--database",
        "security",
    )
    assert ran.exit_code == 0, ran.stderr
    assert ran.stdout.startswith("CREATE EXTERNAL TABLE `security`.`org_logs` (")
    props = _properties(ran.stdout)
    assert props["projection.account.values"] == "111122223333,444455556666,777788889999"
    regions = props["projection.region.values"].split(",")  # botocore's CloudTrail Regions
    assert {"us-east-1", "eu-west-1", "ap-southeast-2"} <= set(regions)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bucket", "Org_Trail"], "--bucket 'Org_Trail': not an S3 bucket name"),
        (["--org-id", "o-x"], "--org-id 'o-x': not an organization id"),
        (["--org-id", "r-abcd"], "--org-id 'r-abcd': not an organization id"),
        (["--accounts", "1111"], "--accounts '1111': not an AWS account id"),
        (["--regions", "eu-west-1,mars-1"], "--regions 'mars-1': not an AWS Region name"),
        (["--since", "2020-01-01"], "--since '2020-01-01': not a day as YYYY/MM/DD"),
        (["--since", "2021/02/29"], "--since '2021/02/29': no such day"),
        (["--prefix", "a'b"], "--prefix 'a'b': not an S3 key prefix"),
        (["--table", "logs;drop"], "--table 'logs;drop': not letters"),
    ],
)
def test_bad_values_are_one_line_usage_errors(args: list[str], message: str) -> None:
    given = {"--bucket": "org-trail", "--org-id": ORG, "--accounts": "111122223333"}
    given.update(dict(zip(args[::2], args[1::2], strict=True)))
    ran = cli("cloudtrail", "athena-ddl", *(x for kv in given.items() for x in kv))
    assert ran.exit_code == 2, ran.output
    assert message in ran.stderr and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
    assert ran.stdout == ""
    assert_no_traceback(ran)


def test_without_accounts_the_account_partition_is_injected_and_the_command_says_so() -> None:
    """DESIGN's ``athena-ddl --bucket B [--org-id O]``: an organisation's accounts need not be
    listed; Athena then requires every query to name them (injected projection,
    https://docs.aws.amazon.com/athena/latest/ug/partition-projection-dynamic-id-partitioning.html)."""
    ran = cli("cloudtrail", "athena-ddl", "--bucket", "org-trail", "--org-id", ORG)
    assert ran.exit_code == 0, ran.stderr
    assert "'projection.account.type'='injected'" in ran.stdout
    assert "projection.account.values" not in ran.stdout
    assert f"s3://org-trail/AWSLogs/{ORG}/${{account}}/CloudTrail/${{region}}" in ran.stdout
    assert "every query must name its accounts" in ran.stderr
    with pytest.raises(UsageError, match="--regions"):
        TrailTable(bucket="b-1", accounts=ACCOUNTS, regions=())


def test_the_regions_need_no_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --regions the Regions come from botocore's endpoint data: a profile that does
    not exist is never read (issue 20, R2#7: it was an internal error)."""
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile-kmsir")
    ran = cli("cloudtrail", "athena-ddl", "--bucket", "org-trail", "--accounts", ACCOUNTS[0])
    assert ran.exit_code == 0, ran.stderr
    regions = _properties(ran.stdout)["projection.region.values"].split(",")
    assert {"us-east-1", "eu-west-1"} <= set(regions)

"""The Athena table of a trail's logs, partition-projected over account, Region and day.

The ``CREATE EXTERNAL TABLE`` AWS documents for CloudTrail logs with partition projection
(https://docs.aws.amazon.com/athena/latest/ug/create-cloudtrail-table-partition-projection.html:
its columns, the JSON SerDe, CloudTrail's input format, ``timestamp`` a ``date`` projection of
``yyyy/MM/dd`` days up to ``NOW``), with the organisation trail's layout
(https://docs.aws.amazon.com/athena/latest/ug/create-cloudtrail-table-org-wide-trail.html:
``AWSLogs/<org id>/<account>/CloudTrail/<region>/...``, ``account`` a partition) and both
``account`` and ``region`` projected too, so one table holds every account and Region.

``region`` is an ``enum`` projection. ``account`` is one too when the accounts are given: a
query without an account predicate then reads every listed one, and one with
``account IN (...)`` only those; the price is that a new account means altering the table
(``ALTER TABLE ... SET TBLPROPERTIES``). Without a list (an organisation of hundreds of
accounts, which change), ``account`` is ``injected``: nothing to keep up to date, but every
query must name its accounts in the WHERE clause, or Athena refuses it ("CONSTRAINT_VIOLATION:
For the injected projected partition column ...",
https://docs.aws.amazon.com/athena/latest/ug/partition-projection-dynamic-id-partitioning.html):
``cloudtrail.collect`` with ``partitions: projection`` then needs ``accounts``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from kmsir.errors import UsageError
from kmsir.inert import one_line

#: An S3 bucket name (3-63 lower-case letters, digits, dots and hyphens).
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
#: An organization id (Organizations' ``Organization.Id``).
ORG_ID = re.compile(r"o-[a-z0-9]{10,32}")
ACCOUNT = re.compile(r"\d{12}")
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")
#: A trail's S3 key prefix: path segments of what S3 keys safely hold (no quote, no ``$``).
PREFIX = re.compile(r"[A-Za-z0-9!_.*()-]+(/[A-Za-z0-9!_.*()-]+)*")
NAME = re.compile(r"[A-Za-z0-9_]{1,255}")
SINCE = re.compile(r"\d{4}/\d{2}/\d{2}")

#: The columns of AWS's table (the page above), in its order.
COLUMNS = """\
    eventversion STRING,
    useridentity STRUCT<
        type: STRING,
        principalid: STRING,
        arn: STRING,
        accountid: STRING,
        invokedby: STRING,
        accesskeyid: STRING,
        username: STRING,
        onbehalfof: STRUCT<
            userid: STRING,
            identitystorearn: STRING>,
        sessioncontext: STRUCT<
            attributes: STRUCT<
                mfaauthenticated: STRING,
                creationdate: STRING>,
            sessionissuer: STRUCT<
                type: STRING,
                principalid: STRING,
                arn: STRING,
                accountid: STRING,
                username: STRING>,
            ec2roledelivery: STRING,
            webidfederationdata: STRUCT<
                federatedprovider: STRING,
                attributes: MAP<STRING, STRING>>>>,
    eventtime STRING,
    eventsource STRING,
    eventname STRING,
    awsregion STRING,
    sourceipaddress STRING,
    useragent STRING,
    errorcode STRING,
    errormessage STRING,
    requestparameters STRING,
    responseelements STRING,
    additionaleventdata STRING,
    requestid STRING,
    eventid STRING,
    readonly STRING,
    resources ARRAY<STRUCT<
        arn: STRING,
        accountid: STRING,
        type: STRING>>,
    eventtype STRING,
    apiversion STRING,
    recipientaccountid STRING,
    serviceeventdetails STRING,
    sharedeventid STRING,
    vpcendpointid STRING,
    vpcendpointaccountid STRING,
    eventcategory STRING,
    addendum STRUCT<
        reason: STRING,
        updatedfields: STRING,
        originalrequestid: STRING,
        originaleventid: STRING>,
    sessioncredentialfromconsole STRING,
    edgedevicedetails STRING,
    tlsdetails STRUCT<
        tlsversion: STRING,
        ciphersuite: STRING,
        clientprovidedhostheader: STRING>"""


@dataclass(frozen=True)
class TrailTable:
    """Where a trail writes its logs, and the table over them."""

    bucket: str
    accounts: tuple[str, ...]
    regions: tuple[str, ...]
    org_id: str | None = None
    prefix: str = ""
    database: str = "default"
    table: str = "cloudtrail_org"
    since: str = "2020/01/01"

    def __post_init__(self) -> None:
        _check("--bucket", self.bucket, BUCKET, "an S3 bucket name")
        if self.org_id is not None:
            _check(
                "--org-id",
                self.org_id,
                ORG_ID,
                "an organization id (o- and 10-32 lower-case letters or digits)",
            )
        if self.prefix.strip("/"):
            _check("--prefix", self.prefix.strip("/"), PREFIX, "an S3 key prefix (no quotes, no $)")
        _check("--database", self.database, NAME, "letters, digits and _")
        _check("--table", self.table, NAME, "letters, digits and _")
        for account in self.accounts:
            _check("--accounts", account, ACCOUNT, "an AWS account id (12 digits)")
        if not self.regions:
            raise UsageError("--regions: give at least one Region")
        for region in self.regions:
            _check("--regions", region, REGION, "an AWS Region name (eu-west-1)")
        _check("--since", self.since, SINCE, "a day as YYYY/MM/DD")
        try:
            date(*(int(part) for part in self.since.split("/")))
        except ValueError:
            raise UsageError(f"--since '{self.since}': no such day") from None

    @property
    def location(self) -> str:
        """The folder above the accounts' (organisation) or Regions' (one account) logs."""
        prefix = f"{self.prefix.strip('/')}/" if self.prefix.strip("/") else ""
        org = f"{self.org_id}/" if self.org_id else ""
        return f"s3://{self.bucket}/{prefix}AWSLogs/{org}"

    def ddl(self) -> str:
        """The ``CREATE EXTERNAL TABLE`` statement."""
        template = self.location + "${account}/CloudTrail/${region}/${timestamp}"
        properties = {
            "projection.enabled": "true",
            **(
                {
                    "projection.account.type": "enum",
                    "projection.account.values": ",".join(sorted(set(self.accounts))),
                }
                if self.accounts
                else {"projection.account.type": "injected"}
            ),
            "projection.region.type": "enum",
            "projection.region.values": ",".join(sorted(set(self.regions))),
            "projection.timestamp.type": "date",
            "projection.timestamp.format": "yyyy/MM/dd",
            "projection.timestamp.interval": "1",
            "projection.timestamp.interval.unit": "DAYS",
            "projection.timestamp.range": f"{self.since},NOW",
            "storage.location.template": template,
        }
        listed = ",\n".join(f"  '{k}'='{v}'" for k, v in properties.items())
        return (
            f"CREATE EXTERNAL TABLE `{self.database}`.`{self.table}` (\n{COLUMNS}\n)\n"
            "PARTITIONED BY (`account` STRING, `region` STRING, `timestamp` STRING)\n"
            "ROW FORMAT SERDE 'org.apache.hive.hcatalog.data.JsonSerDe'\n"
            "STORED AS INPUTFORMAT 'com.amazon.emr.cloudtrail.CloudTrailInputFormat'\n"
            "OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'\n"
            f"LOCATION '{self.location}'\n"
            f"TBLPROPERTIES (\n{listed}\n);\n"
        )


def _check(option: str, value: str, pattern: re.Pattern[str], what: str) -> None:
    if not pattern.fullmatch(value):
        shown = one_line(value, 80)
        raise UsageError(f"{option} '{shown}': not {what}")


def split_list(values: Sequence[str] | None) -> tuple[str, ...]:
    """Comma-separated and repeated option values, stripped, empty ones dropped."""
    return tuple(v.strip() for value in values or () for v in value.split(",") if v.strip())


def cloudtrail_regions() -> tuple[str, ...]:
    """CloudTrail's Regions of the ``aws`` partition, from botocore's endpoint data: no
    profile or credentials read (an unknown ``AWS_PROFILE`` does not matter)."""
    import botocore.loaders
    import botocore.regions

    data = botocore.loaders.create_loader().load_data("endpoints")
    resolver = botocore.regions.EndpointResolver(data)
    return tuple(sorted(resolver.get_available_endpoints("cloudtrail", "aws")))

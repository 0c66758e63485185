"""What ``kms.blast-radius`` finds by listing: the resources configured with a key.

No recent call shows the resources a key protects that nobody used lately (a disaster
recovery snapshot, a backup bucket): they are found by listing each service's resources and
keeping those whose KMS key is this one, as each API reports it (key id, key ARN, alias name
or alias ARN). Each listing is bounded (pages, items); a cut is said. A listing that fails
(missing permission, a service not offered) is returned as ``unchecked`` with its service,
operation and AWS error code: listed, never hidden, and the step still succeeds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kmsir.actions.base import ActionContext
from kmsir.aws import aws_errors
from kmsir.errors import AwsError

#: Pages read of one listing before it is cut (and the cut said).
MAX_PAGES = 20
#: Buckets (GetBucketEncryption) and tables (DescribeTable) examined one call each.
MAX_EACH = 200
#: Error codes that mean "this item has no KMS configuration", not "could not check".
NOT_CONFIGURED = frozenset(
    {
        "ServerSideEncryptionConfigurationNotFoundError",
        "NoSuchBucket",
        "ResourceNotFoundException",
    }
)


#: The fields by which a page says another follows (EC2/Secrets/SSM, RDS, S3, DynamoDB).
_MORE = ("NextToken", "Marker", "ContinuationToken", "LastEvaluatedTableName")


@dataclass
class Listing:
    """What the listings found: resources using the key, listings that failed, cuts."""

    dependents: list[dict[str, Any]] = field(default_factory=list)
    unchecked: list[dict[str, Any]] = field(default_factory=list)
    cut: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class KeyNames:
    """Every way an API may name the key: id, ARN, alias names and alias ARNs."""

    key_id: str
    arn: str
    aliases: tuple[str, ...]

    def matches(self, reference: Any) -> bool:
        """Whether ``reference`` (a KmsKeyId as some API reports it) names this key."""
        if not isinstance(reference, str) or not reference:
            return False
        if reference in (self.key_id, self.arn):
            return True
        if reference.startswith("arn:") and ":alias/" in reference:
            reference = "alias/" + reference.split(":alias/", 1)[1]
        return reference in self.aliases


def _client(ctx: ActionContext, service: str, region: str) -> Any:
    """A client of a service the typed factory has no overload for (read-only listings)."""
    factory: Any = ctx.clients
    return factory.client(service, region)


def _pages(
    listing: Listing, client: Any, method: str, what: str, **kwargs: Any
) -> Iterator[dict[str, Any]]:
    """The pages of a paginated call, at most ``MAX_PAGES`` (a cut is noted in ``listing``)."""
    for number, page in enumerate(client.get_paginator(method).paginate(**kwargs), 1):
        yield page
        if number >= MAX_PAGES and any(page.get(k) for k in _MORE):
            listing.cut.append(f"{what}: only the first {MAX_PAGES} pages were read")
            return


def _ebs_volumes(ctx: ActionContext, region: str, key: KeyNames, out: Listing) -> None:
    ec2 = _client(ctx, "ec2", region)
    filters = [{"Name": "encrypted", "Values": ["true"]}]
    for page in _pages(out, ec2, "describe_volumes", "EBS volumes", Filters=filters):
        for volume in page.get("Volumes", []):
            if key.matches(volume.get("KmsKeyId")):
                attached = [a.get("InstanceId") for a in volume.get("Attachments", [])]
                note = f"attached to {', '.join(map(str, attached))}" if attached else "detached"
                out.dependents.append(_dependent("ebs-volume", volume.get("VolumeId"), note))


def _ebs_snapshots(ctx: ActionContext, region: str, key: KeyNames, out: Listing) -> None:
    ec2 = _client(ctx, "ec2", region)
    filters = [{"Name": "encrypted", "Values": ["true"]}]
    pages = _pages(
        out, ec2, "describe_snapshots", "EBS snapshots", OwnerIds=["self"], Filters=filters
    )
    for page in pages:
        for snapshot in page.get("Snapshots", []):
            if key.matches(snapshot.get("KmsKeyId")):
                note = str(snapshot.get("Description") or "")
                out.dependents.append(_dependent("ebs-snapshot", snapshot.get("SnapshotId"), note))


def _rds_instances(ctx: ActionContext, region: str, key: KeyNames, out: Listing) -> None:
    rds = _client(ctx, "rds", region)
    for page in _pages(out, rds, "describe_db_instances", "RDS instances"):
        for db in page.get("DBInstances", []):
            if key.matches(db.get("KmsKeyId")):
                note = f"{db.get('Engine', '')} {db.get('DBInstanceStatus', '')}".strip()
                out.dependents.append(
                    _dependent("rds-instance", db.get("DBInstanceIdentifier"), note)
                )


def _rds_snapshots(ctx: ActionContext, region: str, key: KeyNames, out: Listing) -> None:
    rds = _client(ctx, "rds", region)
    for page in _pages(out, rds, "describe_db_snapshots", "RDS snapshots"):
        for snap in page.get("DBSnapshots", []):
            if key.matches(snap.get("KmsKeyId")):
                note = (
                    f"{snap.get('SnapshotType', '')} snapshot of {snap.get('DBInstanceIdentifier')}"
                )
                out.dependents.append(
                    _dependent("rds-snapshot", snap.get("DBSnapshotIdentifier"), note)
                )


def _secrets(ctx: ActionContext, region: str, key: KeyNames, out: Listing) -> None:
    secrets = _client(ctx, "secretsmanager", region)
    for page in _pages(out, secrets, "list_secrets", "Secrets Manager secrets"):
        for secret in page.get("SecretList", []):
            if key.matches(secret.get("KmsKeyId")):
                out.dependents.append(_dependent("secret", secret.get("Name"), secret.get("ARN")))


def _ssm_parameters(ctx: ActionContext, region: str, key: KeyNames, out: Listing) -> None:
    ssm = _client(ctx, "ssm", region)
    secure = [{"Key": "Type", "Values": ["SecureString"]}]
    pages = _pages(out, ssm, "describe_parameters", "SSM parameters", ParameterFilters=secure)
    for page in pages:
        for parameter in page.get("Parameters", []):
            if key.matches(parameter.get("KeyId")):
                out.dependents.append(_dependent("ssm-parameter", parameter.get("Name"), ""))


def _each(
    out: Listing,
    names: list[str],
    what: str,
    service: str,
    operation: str,
    one: Callable[[str], None],
) -> None:
    """Call ``one`` for each of ``names`` (at most ``MAX_EACH``); failures are counted into
    one ``unchecked`` entry per error code, not one per item."""
    if len(names) > MAX_EACH:
        out.cut.append(f"{what}: only the first {MAX_EACH} of {len(names)} were examined")
    failed: dict[str, list[str]] = {}
    for name in names[:MAX_EACH]:
        try:
            one(name)
        except AwsError as exc:
            if exc.code not in NOT_CONFIGURED:
                failed.setdefault(exc.code, []).append(name)
    for code, items in failed.items():
        out.unchecked.append(
            {
                "service": service,
                "operation": operation,
                "error": code,
                "items": len(items),
                "example": items[0][:200],
            }
        )


def _s3_buckets(ctx: ActionContext, region: str, key: KeyNames, out: Listing) -> None:
    s3 = _client(ctx, "s3", region)
    names = [
        str(b.get("Name"))
        for page in _pages(out, s3, "list_buckets", "S3 buckets")
        for b in page.get("Buckets", [])
    ]

    def one(bucket: str) -> None:
        with aws_errors(f"GetBucketEncryption on {bucket}", service="s3"):
            config = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
        for rule in config.get("Rules", []):
            default = rule.get("ApplyServerSideEncryptionByDefault") or {}
            if key.matches(default.get("KMSMasterKeyID")):
                note = "default encryption" + (
                    ", bucket key" if rule.get("BucketKeyEnabled") else ""
                )
                out.dependents.append(_dependent("s3-bucket", bucket, note))
                return

    _each(out, names, "S3 buckets", "s3", "GetBucketEncryption", one)


def _dynamodb_tables(ctx: ActionContext, region: str, key: KeyNames, out: Listing) -> None:
    dynamodb = _client(ctx, "dynamodb", region)
    names = [
        str(t)
        for page in _pages(out, dynamodb, "list_tables", "DynamoDB tables")
        for t in page.get("TableNames", [])
    ]

    def one(table: str) -> None:
        with aws_errors(f"DescribeTable {table}", service="dynamodb"):
            described = dynamodb.describe_table(TableName=table)["Table"]
        sse = described.get("SSEDescription") or {}
        if key.matches(sse.get("KMSMasterKeyArn")):
            out.dependents.append(_dependent("dynamodb-table", table, str(sse.get("Status", ""))))

    _each(out, names, "DynamoDB tables", "dynamodb", "DescribeTable", one)


#: (service, first operation, IAM permissions, lister), in the order they are listed.
LISTINGS: tuple[tuple[str, str, tuple[str, ...], Callable[..., None]], ...] = (
    ("ec2", "DescribeVolumes", ("ec2:DescribeVolumes",), _ebs_volumes),
    ("ec2", "DescribeSnapshots", ("ec2:DescribeSnapshots",), _ebs_snapshots),
    ("rds", "DescribeDBInstances", ("rds:DescribeDBInstances",), _rds_instances),
    ("rds", "DescribeDBSnapshots", ("rds:DescribeDBSnapshots",), _rds_snapshots),
    ("s3", "ListBuckets", ("s3:ListAllMyBuckets", "s3:GetEncryptionConfiguration"), _s3_buckets),
    ("secretsmanager", "ListSecrets", ("secretsmanager:ListSecrets",), _secrets),
    ("ssm", "DescribeParameters", ("ssm:DescribeParameters",), _ssm_parameters),
    ("dynamodb", "ListTables", ("dynamodb:ListTables", "dynamodb:DescribeTable"), _dynamodb_tables),
)


def configured(ctx: ActionContext, region: str, key: KeyNames) -> Listing:
    """The resources of ``region`` configured with ``key``, by listing each service."""
    out = Listing()
    for done, (service, operation, _, lister) in enumerate(LISTINGS, 1):
        try:
            with aws_errors(f"{operation} (blast radius)", service=service):
                lister(ctx, region, key, out)
        except AwsError as exc:
            # a refusal before sending names no operation of its own ("send", "")
            failed = exc.operation if exc.operation not in ("", "send") else operation
            out.unchecked.append({"service": service, "operation": failed, "error": exc.code})
        ctx.reporter.progress("resource listings", done, len(LISTINGS))
    return out


def _dependent(kind: str, name: Any, note: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "name": str(name or "?")[:300],
        "via": "configured",
        "note": str(note or "")[:200],
    }

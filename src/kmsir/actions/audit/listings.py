"""The account's data as the checks of practices 1, 5 and 6 see it: S3 buckets, EBS volumes and
EBS encryption by default, RDS instances and snapshots, DynamoDB tables, Secrets Manager
secrets and SSM SecureString parameters, each with the KMS key that protects it
(``data_keys.protection``) and, where a check needs them, its tags.

Each listing is read once per review (``AuditContext.shared``), saved as evidence, and bounded:
at most ``MAX_ITEMS`` items a listing, and per-item calls (GetBucketEncryption,
GetBucketTagging, DescribeTable, ListTagsOfResource) for at most ``MAX_EACH`` items,
``EACH_WORKERS`` at a time. A per-item call refused marks that item (``Resource.refused``),
never the whole listing; a cut is said in the review's scope. Tags of buckets and tables
(a call each) are read only when a ``sensitive_tag`` asks for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from kmsir.actions.audit.context import AuditContext, Unavailable, concurrently
from kmsir.actions.audit.data_keys import (
    AWS_OWNED,
    S3_MANAGED,
    UNENCRYPTED,
    UNKNOWN,
    Protection,
    partition,
    protection,
    setting_arn,
)

T = TypeVar("T")

#: Items kept of one listing (a longer one is cut, and the cut said).
MAX_ITEMS = 5000
#: Items examined with a call each (buckets, tables).
MAX_EACH = 1000
#: Per-item calls at once.
EACH_WORKERS = 8
#: The IAM permissions of the bucket and table listings (the others need one each).
BUCKET_READS = ("s3:ListAllMyBuckets", "s3:GetEncryptionConfiguration", "s3:GetBucketTagging")
TABLE_READS = ("dynamodb:ListTables", "dynamodb:DescribeTable", "dynamodb:ListTagsOfResource")

#: What S3 answers for a bucket without a default-encryption configuration (AWS applies
#: SSE-S3 to every bucket since January 2023; moto still answers it).
_NO_BUCKET_ENCRYPTION = "ServerSideEncryptionConfigurationNotFoundError"


@dataclass
class Resource:
    """One resource: its ARN, its name, its key, its tags (``None``: not read) and the
    per-item reads refused (field -> why); ``facts`` holds what else a check judges."""

    arn: str
    name: str
    protection: Protection
    tags: dict[str, str] | None = None
    refused: dict[str, Unavailable] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Listing:
    """The resources of one kind (``what``, plural words) and the evidence they were read from."""

    what: str
    resources: tuple[Resource, ...]
    evidence: str


def sensitive_tag(audit: AuditContext) -> tuple[str, str | None] | None:
    """The ``sensitive_tag`` setting as (key, value or ``None`` for any value)."""
    raw = getattr(audit.settings, "sensitive_tag", None)
    if not raw:
        return None
    key, sep, value = str(raw).partition("=")
    return key, (value if sep else None)


def is_sensitive(audit: AuditContext, resource: Resource) -> bool | None:
    """Whether ``resource`` carries the sensitive tag (``None``: its tags were not read)."""
    wanted = sensitive_tag(audit)
    if wanted is None or resource.tags is None:
        return None
    key, value = wanted
    return key in resource.tags and (value is None or resource.tags[key] == value)


def _tags(entries: Any) -> dict[str, str]:
    return {str(t.get("Key")): str(t.get("Value", "")) for t in entries or ()}


def _bounded(audit: AuditContext, items: list[T], what: str, limit: int) -> list[T]:
    if len(items) >= limit:
        audit.cut.append(f"{what}: only the first {limit} were examined")
    return items[:limit]


def _each(items: list[str], one: Callable[[str], T]) -> list[T]:
    """``one`` for every item, ``EACH_WORKERS`` at a time, in the items' order."""
    return concurrently(one, items, EACH_WORKERS)


def _listing(
    audit: AuditContext,
    what: str,
    call: tuple[str, str, str, str],
    resource: Callable[[dict[str, Any]], Resource],
    **kwargs: Any,
) -> Listing:
    """A paginated listing (``call``: service, operation, method, result key) of up to
    ``MAX_ITEMS`` items, saved as evidence, each made a ``Resource``; read once a review."""
    service, operation, method, key = call
    kwargs["PaginationConfig"] = {"MaxItems": MAX_ITEMS, **kwargs.get("PaginationConfig", {})}

    def read() -> Listing:
        listed = audit.pages(service, operation, method, key, **kwargs)
        listed = _bounded(audit, listed, what, MAX_ITEMS)
        path = audit.evidence(f"data/{service}-{method}", {key: listed})
        return Listing(what, tuple(resource(item) for item in listed), path)

    return audit.shared(f"{service}/{method}", read)


def _key(audit: AuditContext, encrypted: Any, reference: Any, default: str) -> Protection:
    return protection(audit, reference, default) if encrypted else Protection(UNENCRYPTED)


def volumes(audit: AuditContext) -> Listing:
    """The Region's EBS volumes, their encryption and tags."""
    prefix = f"arn:{partition(audit.region)}:ec2:{audit.region}:{audit.account}:volume/"
    return _listing(
        audit,
        "EBS volumes",
        ("ec2", "DescribeVolumes", "describe_volumes", "Volumes"),
        lambda v: Resource(
            prefix + str(v["VolumeId"]),
            str(v["VolumeId"]),
            _key(audit, v.get("Encrypted"), v.get("KmsKeyId"), "alias/aws/ebs"),
            tags=_tags(v.get("Tags")),
        ),
    )


def db_instances(audit: AuditContext) -> Listing:
    """The Region's RDS DB instances, their storage encryption and tags."""
    return _listing(
        audit,
        "RDS instances",
        ("rds", "DescribeDBInstances", "describe_db_instances", "DBInstances"),
        lambda db: Resource(
            str(db["DBInstanceArn"]),
            str(db["DBInstanceIdentifier"]),
            _key(audit, db.get("StorageEncrypted"), db.get("KmsKeyId"), "alias/aws/rds"),
            tags=_tags(db.get("TagList")),
        ),
    )


def db_snapshots(audit: AuditContext) -> Listing:
    """The Region's RDS DB snapshots (the account's own) and their encryption."""
    return _listing(
        audit,
        "RDS snapshots",
        ("rds", "DescribeDBSnapshots", "describe_db_snapshots", "DBSnapshots"),
        lambda snap: Resource(
            str(snap["DBSnapshotArn"]),
            str(snap["DBSnapshotIdentifier"]),
            _key(audit, snap.get("Encrypted"), snap.get("KmsKeyId"), "alias/aws/rds"),
            tags=_tags(snap.get("TagList")),
        ),
    )


def secrets(audit: AuditContext) -> Listing:
    """The Region's Secrets Manager secrets: key, tags and rotation (``facts``: the entry;
    ListSecrets reads no secret value)."""
    return _listing(
        audit,
        "Secrets Manager secrets",
        ("secretsmanager", "ListSecrets", "list_secrets", "SecretList"),
        lambda s: Resource(
            str(s["ARN"]),
            str(s.get("Name") or s["ARN"]),
            protection(audit, s.get("KmsKeyId"), "alias/aws/secretsmanager"),
            tags=_tags(s.get("Tags")),
            facts=dict(s),
        ),
    )


def parameters(audit: AuditContext) -> Listing:
    """The Region's SSM SecureString parameters and their keys (no value is read)."""
    prefix = f"arn:{partition(audit.region)}:ssm:{audit.region}:{audit.account}:parameter/"
    return _listing(
        audit,
        "SecureString parameters",
        ("ssm", "DescribeParameters", "describe_parameters", "Parameters"),
        lambda p: Resource(
            str(p.get("ARN") or prefix + str(p["Name"]).lstrip("/")),
            str(p["Name"]),
            protection(audit, p.get("KeyId"), "alias/aws/ssm"),
        ),
        ParameterFilters=[{"Key": "Type", "Values": ["SecureString"]}],
        PaginationConfig={"PageSize": 50},
    )


def ebs_encryption_by_default(audit: AuditContext) -> tuple[bool, str]:
    """Whether EBS encryption by default is on in the Region, and the evidence."""

    def read() -> tuple[bool, str]:
        ec2 = audit.client("ec2")
        response = audit.call(
            "ec2", "GetEbsEncryptionByDefault", lambda: ec2.get_ebs_encryption_by_default()
        )
        path = audit.evidence("data/ec2-ebs-encryption-by-default", response)
        return bool(response.get("EbsEncryptionByDefault")), path

    return audit.shared("ec2/ebs-encryption-by-default", read)


def ebs_default_key(audit: AuditContext) -> Listing:
    """The default key of EBS encryption by default, as a one-resource listing (the setting)."""

    def read() -> Listing:
        ec2 = audit.client("ec2")
        response = audit.call(
            "ec2", "GetEbsDefaultKmsKeyId", lambda: ec2.get_ebs_default_kms_key_id()
        )
        path = audit.evidence("data/ec2-ebs-default-kms-key-id", response)
        setting = Resource(
            setting_arn(audit, "ec2", "ebs-default-kms-key-id"),
            "EBS default KMS key",
            protection(audit, response.get("KmsKeyId"), "alias/aws/ebs"),
        )
        return Listing("EBS default keys", (setting,), path)

    return audit.shared("ec2/ebs-default-kms-key-id", read)


def buckets(audit: AuditContext) -> Listing:
    """The Region's S3 buckets with their default encryption (and tags, when a
    ``sensitive_tag`` is given)."""

    def read() -> Listing:
        listed = audit.pages(
            "s3", "ListAllMyBuckets", "list_buckets", "Buckets", BucketRegion=audit.region
        )
        names = _bounded(audit, [str(b["Name"]) for b in listed], "S3 buckets", MAX_EACH)
        found = [r for r in _each(names, lambda name: _bucket(audit, name)) if r is not None]
        path = audit.evidence("data/s3-buckets", {"Buckets": [record for _, record in found]})
        return Listing("S3 buckets", tuple(r for r, _ in found), path)

    return audit.shared("s3/buckets", read)


def _bucket(audit: AuditContext, name: str) -> tuple[Resource, dict[str, Any]] | None:
    s3 = audit.client("s3")
    out = Resource(f"arn:{partition(audit.region)}:s3:::{name}", name, Protection(UNKNOWN))
    record: dict[str, Any] = {"Name": name}
    try:
        response = audit.call(
            "s3",
            "GetEncryptionConfiguration",
            lambda: s3.get_bucket_encryption(Bucket=name),
            what=f"on {name}",
        )
        config = response["ServerSideEncryptionConfiguration"]
        record["ServerSideEncryptionConfiguration"] = config
        out.protection, out.facts["type"] = _bucket_key(audit, config)
    except Unavailable as exc:
        if exc.code == "NoSuchBucket":  # deleted since it was listed
            return None
        record["EncryptionError"] = exc.code
        if exc.code == _NO_BUCKET_ENCRYPTION:
            out.protection, out.facts["type"] = Protection(S3_MANAGED), "SSE-S3"
            out.facts["unconfigured"] = True
        else:
            out.protection = Protection(UNKNOWN, unavailable=exc)
            out.refused["encryption"] = exc
    if sensitive_tag(audit) is None:
        return out, record
    try:
        tagset = audit.call(
            "s3", "GetBucketTagging", lambda: s3.get_bucket_tagging(Bucket=name), what=f"on {name}"
        )["TagSet"]
    except Unavailable as exc:
        if exc.code != "NoSuchTagSet":
            out.refused["tags"] = exc
            record["TaggingError"] = exc.code
            return out, record
        tagset = []
    out.tags, record["TagSet"] = _tags(tagset), tagset
    return out, record


def _bucket_key(audit: AuditContext, config: dict[str, Any]) -> tuple[Protection, str]:
    """A bucket's default encryption: its key and type (SSE-S3, SSE-KMS, DSSE-KMS)."""
    rules = config.get("Rules") or [{}]
    default = rules[0].get("ApplyServerSideEncryptionByDefault") or {}
    algorithm = str(default.get("SSEAlgorithm") or "AES256")
    if algorithm == "AES256":
        return Protection(S3_MANAGED), "SSE-S3"
    kind = "DSSE-KMS" if algorithm == "aws:kms:dsse" else "SSE-KMS"
    return protection(audit, default.get("KMSMasterKeyID"), "alias/aws/s3"), kind


def tables(audit: AuditContext) -> Listing:
    """The Region's DynamoDB tables with their encryption at rest (and tags, when a
    ``sensitive_tag`` is given)."""

    def read() -> Listing:
        listed = audit.pages("dynamodb", "ListTables", "list_tables", "TableNames")
        names = _bounded(audit, [str(t) for t in listed], "DynamoDB tables", MAX_EACH)
        found = [r for r in _each(names, lambda name: _table(audit, name)) if r is not None]
        path = audit.evidence("data/dynamodb-tables", {"Tables": [record for _, record in found]})
        return Listing("DynamoDB tables", tuple(r for r, _ in found), path)

    return audit.shared("dynamodb/tables", read)


def _table(audit: AuditContext, name: str) -> tuple[Resource, dict[str, Any]] | None:
    dynamodb = audit.client("dynamodb")
    arn = f"arn:{partition(audit.region)}:dynamodb:{audit.region}:{audit.account}:table/{name}"
    try:
        table = audit.call(
            "dynamodb",
            "DescribeTable",
            lambda: dynamodb.describe_table(TableName=name)["Table"],
            what=name,
        )
    except Unavailable as exc:
        if exc.code == "ResourceNotFoundException":  # deleted since it was listed
            return None
        return Resource(arn, name, Protection(UNKNOWN, unavailable=exc), refused={"table": exc}), {
            "TableName": name,
            "Error": exc.code,
        }
    out = Resource(str(table.get("TableArn") or arn), name, _table_key(audit, table))
    record: dict[str, Any] = {"Table": table}
    if sensitive_tag(audit) is not None:
        try:
            listed = _table_tags(audit, out.arn)
            out.tags, record["Tags"] = _tags(listed), listed
        except Unavailable as exc:
            out.refused["tags"] = exc
            record["TagsError"] = exc.code
    return out, record


def _table_key(audit: AuditContext, table: dict[str, Any]) -> Protection:
    """No ``SSEDescription`` (or SSE disabled): the AWS owned key DynamoDB uses by default."""
    sse = table.get("SSEDescription") or {}
    if sse.get("Status") in (None, "DISABLED") or sse.get("SSEType") != "KMS":
        return Protection(AWS_OWNED)
    return protection(audit, sse.get("KMSMasterKeyArn"), "alias/aws/dynamodb")


def _table_tags(audit: AuditContext, arn: str) -> list[dict[str, Any]]:
    dynamodb = audit.client("dynamodb")
    tags: list[dict[str, Any]] = []
    more: dict[str, str] = {}
    for _ in range(10):  # a table has at most 50 tags
        send = partial(dynamodb.list_tags_of_resource, ResourceArn=arn, **more)
        page = audit.call("dynamodb", "ListTagsOfResource", send, what=arn)
        tags.extend(page.get("Tags") or [])
        if not page.get("NextToken"):
            break
        more = {"NextToken": str(page["NextToken"])}
    return tags

"""A scenario's ``resources:``: buckets, volumes, snapshots, secrets, parameters, tables and
databases encrypted with its keys (or not), and the account's configuration around them (IAM,
trails, rules, EBS defaults, stacks: ``posture_seed``), created in moto as AWS would keep them.

They are what ``kms.blast-radius`` finds by listing: the resources a key protects, including
those no recent call shows (a disaster recovery snapshot nobody touched in months), and what
``kms.audit`` judges. Each names the key as the scenario says (``key_reference``: id, ARN or
alias), since AWS reports whatever reference it was given. moto's random generator is left as
it was found, so the ids of everything seeded before and after (grants, access keys) stay what
they were.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from kmsir.sandbox.resource_model import ResourceSpec
from kmsir.sandbox.scenario_model import KeySpec, Scenario

#: What the sandbox's resources hold, a placeholder the scenario's stories never read.
#: moto's setting for the public AMIs (and their snapshots) it gives every account.
SECRET_VALUE = "kmsir-sandbox-not-a-secret"  # noqa: S105 - a placeholder, not a secret


class World(Protocol):
    """What seeding resources needs of a seeded sandbox."""

    scenario: Scenario
    region: str
    account: str
    now: datetime
    keys: dict[str, dict[str, Any]]

    def session(self) -> Any:
        """A boto3 session on the sandbox."""
        ...

    def render(self, value: Any) -> Any:
        """A scenario value with its templates rendered over the seeded world."""
        ...


def key_options(spec: KeySpec) -> dict[str, str]:
    """CreateKey's KeySpec, KeyUsage and Origin for ``spec`` (none for AWS's defaults, so a
    scenario key of before they existed is created by the same call)."""
    options: dict[str, str] = {}
    if spec.spec != "SYMMETRIC_DEFAULT":
        options.update(KeySpec=spec.spec, KeyUsage=spec.key_usage)
    if spec.origin != "AWS_KMS":
        options["Origin"] = spec.origin
    return options


class _Clients:
    """A boto3 session's clients, one per service (making one costs tens of milliseconds, and
    a review scenario creates dozens of resources)."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._made: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._made:
            self._made[service] = self._session.client(service)
        return self._made[service]


def seed(world: World) -> dict[str, str]:
    """Create the scenario's resources, in their order; name -> the ARN AWS gives each (as a
    review names it: an EBS volume's ARN, a parameter's, the key of a stack...)."""
    if not world.scenario.resources:
        return {}
    from moto.moto_api._internal import mock_random

    from kmsir.sandbox import posture_seed

    state = mock_random.getstate()
    try:
        # one session (each new one parses the service models again), one client a service
        session = _Clients(world.session())
        created: dict[str, str] = {}
        for spec in world.scenario.resources:
            if isinstance(spec, ResourceSpec):
                created[spec.name] = _create(session, world, spec)
            else:
                created[spec.name] = posture_seed.create(session, world, spec)
        return created
    finally:
        mock_random.setstate(state)


def partition(region: str) -> str:
    """The ARN partition of ``region``."""
    if region.startswith("cn-"):
        return "aws-cn"
    return "aws-us-gov" if region.startswith("us-gov-") else "aws"


def _reference(world: World, spec: ResourceSpec) -> str | None:
    """How the resource names its key, or ``None`` for AWS's default encryption."""
    if spec.key is None:
        return None
    key = world.keys[spec.key]
    if spec.key_reference == "alias" and key.get("alias"):
        return str(key["alias"])
    return str(key["id"] if spec.key_reference == "id" else key["arn"])


def _tag_list(spec: ResourceSpec) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in spec.tags.items()]


def _create(session: Any, world: World, spec: ResourceSpec) -> str:
    region = world.region
    key = _reference(world, spec)
    kms = {"KmsKeyId": key} if key else {}
    tags = {"Tags": _tag_list(spec)} if spec.tags else {}
    if spec.kind == "s3-bucket":
        return _bucket(session, region, spec, key)
    if spec.kind in ("ebs-volume", "ebs-snapshot"):
        return _ebs(session, world, spec, kms)
    if spec.kind == "secret":
        created = session.client("secretsmanager").create_secret(
            Name=spec.name, SecretString=SECRET_VALUE, **kms, **tags
        )
        if spec.rotation_days is not None:
            from kmsir.sandbox import posture_seed

            posture_seed.rotated_secret(world, spec)
        return str(created["ARN"])
    if spec.kind == "ssm-parameter":
        session.client("ssm").put_parameter(
            Name=spec.name,
            Value=SECRET_VALUE,
            Type="SecureString",
            **({"KeyId": key} if key else {}),
            **tags,
        )
        name = spec.name if spec.name.startswith("/") else f"/{spec.name}"
        return f"arn:{partition(region)}:ssm:{region}:{world.account}:parameter{name}"
    if spec.kind == "dynamodb-table":
        sse = {"Enabled": True, "SSEType": "KMS", **({"KMSMasterKeyId": key} if key else {})}
        table = session.client("dynamodb").create_table(
            TableName=spec.name,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            SSESpecification=sse,
            **tags,
        )
        return str(table["TableDescription"]["TableArn"])
    return _rds(session, spec, kms)


def _bucket(session: Any, region: str, spec: ResourceSpec, key: str | None) -> str:
    """A bucket whose default encryption is the key (SSE-KMS) or SSE-S3 (AWS's default)."""
    s3 = session.client("s3")
    location = {} if region == "us-east-1" else {"LocationConstraint": region}
    s3.create_bucket(
        Bucket=spec.name, **({"CreateBucketConfiguration": location} if location else {})
    )
    default = (
        {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key} if key else {"SSEAlgorithm": "AES256"}
    )
    s3.put_bucket_encryption(
        Bucket=spec.name,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": default, "BucketKeyEnabled": False}]
        },
    )
    if spec.tags:
        s3.put_bucket_tagging(Bucket=spec.name, Tagging={"TagSet": _tag_list(spec)})
    return f"arn:{partition(region)}:s3:::{spec.name}"


def _ebs(session: Any, world: World, spec: ResourceSpec, kms: dict[str, str]) -> str:
    """A volume, or a snapshot: AWS gives a snapshot its volume's key; moto does not, so the
    snapshot is copied with the key (as a cross-Region DR copy is) and the original removed."""
    region = world.region
    ec2 = session.client("ec2")
    if spec.encrypted and not kms:
        # AWS's aws/ebs key, made through KMS's reserved aliases (as AWS-managed, by the
        # shim) before EC2 makes its own (which moto would leave customer-managed)
        session.client("kms").describe_key(KeyId="alias/aws/ebs")
    named = [{"Key": "Name", "Value": spec.name}, *_tag_list(spec)]
    tags = [{"ResourceType": "volume", "Tags": named}]
    volume = ec2.create_volume(
        AvailabilityZone=f"{region}a",
        Size=8,
        Encrypted=spec.encrypted,
        TagSpecifications=tags,
        **kms,
    )["VolumeId"]
    if spec.kind == "ebs-volume":
        return f"arn:{partition(region)}:ec2:{region}:{world.account}:volume/{volume}"
    first = ec2.create_snapshot(VolumeId=volume, Description=spec.name)["SnapshotId"]
    tagged = [{"ResourceType": "snapshot", "Tags": named}] if spec.tags else []
    copy = ec2.copy_snapshot(
        SourceSnapshotId=first,
        SourceRegion=region,
        Description=spec.name,
        Encrypted=True,
        **({"TagSpecifications": tagged} if tagged else {}),
        **kms,
    )["SnapshotId"]
    ec2.delete_snapshot(SnapshotId=first)
    ec2.delete_volume(VolumeId=volume)
    return f"arn:{partition(region)}:ec2:{region}::snapshot/{copy}"


def _rds(session: Any, spec: ResourceSpec, kms: dict[str, str]) -> str:
    """A DB instance, or a manual snapshot of one that is gone since (a kept backup).
    Encrypted without a key, it is on AWS's ``aws/rds`` key, which AWS reports by ARN (moto
    would report a placeholder)."""
    rds = session.client("rds")
    if spec.encrypted and not kms:
        managed = session.client("kms").describe_key(KeyId="alias/aws/rds")["KeyMetadata"]
        kms = {"KmsKeyId": str(managed["Arn"])}
    instance = spec.name if spec.kind == "rds-instance" else f"{spec.name}-source"
    created = rds.create_db_instance(
        DBInstanceIdentifier=instance,
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        MasterUsername="sandbox",
        MasterUserPassword=SECRET_VALUE,
        AllocatedStorage=20,
        StorageEncrypted=spec.encrypted,
        **({"Tags": _tag_list(spec)} if spec.tags and spec.kind == "rds-instance" else {}),
        **kms,
    )["DBInstance"]
    if spec.kind == "rds-instance":
        return str(created["DBInstanceArn"])
    snapshot = rds.create_db_snapshot(
        DBInstanceIdentifier=instance,
        DBSnapshotIdentifier=spec.name,
        **({"Tags": _tag_list(spec)} if spec.tags else {}),
    )
    rds.delete_db_instance(DBInstanceIdentifier=instance, SkipFinalSnapshot=True)
    return str(snapshot["DBSnapshot"]["DBSnapshotArn"])

"""A scenario's ``resources:``: buckets, volumes, snapshots, secrets, parameters, tables and
databases encrypted with its keys, created in moto as AWS would keep them.

They are what ``kms.blast-radius`` finds by listing: the resources a key protects, including
those no recent call shows (a disaster recovery snapshot nobody touched in months). Each
names the key as the scenario says (``key_reference``: id, ARN or alias), since AWS reports
whatever reference it was given. moto's random generator is left as it was found, so the
ids of everything seeded before and after (grants, access keys) stay what they were.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from kmsir.sandbox.scenario_model import ResourceSpec, Scenario

#: What the sandbox's resources hold, a placeholder the scenario's stories never read.
#: moto's setting for the public AMIs (and their snapshots) it gives every account.
_DEFAULT_AMIS = "MOTO_EC2_LOAD_DEFAULT_AMIS"
SECRET_VALUE = "kmsir-sandbox-not-a-secret"  # noqa: S105 - a placeholder, not a secret


class World(Protocol):
    """What seeding resources needs of a seeded sandbox."""

    scenario: Scenario
    region: str
    keys: dict[str, dict[str, Any]]

    def session(self) -> Any:
        """A boto3 session on the sandbox."""
        ...


def seed(world: World) -> dict[str, str]:
    """Create the scenario's resources; name -> the id or ARN moto gave each."""
    if not world.scenario.resources:
        return {}
    from moto.moto_api._internal import mock_random

    state = mock_random.getstate()
    saved = os.environ.get(_DEFAULT_AMIS)
    # moto would give the account a thousand snapshots of public AMIs, which no account owns
    os.environ[_DEFAULT_AMIS] = "false"
    try:
        session = world.session()  # one session: each new one parses the service models again
        return {spec.name: _create(session, world, spec) for spec in world.scenario.resources}
    finally:
        mock_random.setstate(state)
        if saved is None:
            os.environ.pop(_DEFAULT_AMIS, None)
        else:
            os.environ[_DEFAULT_AMIS] = saved


def _reference(world: World, spec: ResourceSpec) -> str | None:
    """How the resource names its key, or ``None`` for AWS's default encryption."""
    if spec.key is None:
        return None
    key = world.keys[spec.key]
    if spec.key_reference == "alias" and key.get("alias"):
        return str(key["alias"])
    return str(key["id"] if spec.key_reference == "id" else key["arn"])


def _create(session: Any, world: World, spec: ResourceSpec) -> str:
    region = world.region
    key = _reference(world, spec)
    kms = {"KmsKeyId": key} if key else {}
    if spec.kind == "s3-bucket":
        s3 = session.client("s3")
        location = {} if region == "us-east-1" else {"LocationConstraint": region}
        s3.create_bucket(
            Bucket=spec.name, **({"CreateBucketConfiguration": location} if location else {})
        )
        default = (
            {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
            if key
            else {"SSEAlgorithm": "AES256"}
        )
        s3.put_bucket_encryption(
            Bucket=spec.name,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {"ApplyServerSideEncryptionByDefault": default, "BucketKeyEnabled": False}
                ]
            },
        )
        return f"arn:aws:s3:::{spec.name}"
    if spec.kind in ("ebs-volume", "ebs-snapshot"):
        return _ebs(session, region, spec, kms)
    if spec.kind == "secret":
        created = session.client("secretsmanager").create_secret(
            Name=spec.name, SecretString=SECRET_VALUE, **kms
        )
        return str(created["ARN"])
    if spec.kind == "ssm-parameter":
        session.client("ssm").put_parameter(
            Name=spec.name,
            Value=SECRET_VALUE,
            Type="SecureString",
            **({"KeyId": key} if key else {}),
        )
        return spec.name
    if spec.kind == "dynamodb-table":
        sse = {"Enabled": True, "SSEType": "KMS", **({"KMSMasterKeyId": key} if key else {})}
        table = session.client("dynamodb").create_table(
            TableName=spec.name,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            SSESpecification=sse,
        )
        return str(table["TableDescription"]["TableArn"])
    return _rds(session, spec, kms)


def _ebs(session: Any, region: str, spec: ResourceSpec, kms: dict[str, str]) -> str:
    """A volume, or a snapshot: AWS gives a snapshot its volume's key; moto does not, so the
    snapshot is copied with the key (as a cross-Region DR copy is) and the original removed."""
    ec2 = session.client("ec2")
    tags = [{"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": spec.name}]}]
    volume = ec2.create_volume(
        AvailabilityZone=f"{region}a", Size=8, Encrypted=True, TagSpecifications=tags, **kms
    )["VolumeId"]
    if spec.kind == "ebs-volume":
        return str(volume)
    first = ec2.create_snapshot(VolumeId=volume, Description=spec.name)["SnapshotId"]
    copy = ec2.copy_snapshot(
        SourceSnapshotId=first,
        SourceRegion=region,
        Description=spec.name,
        Encrypted=True,
        **kms,
    )["SnapshotId"]
    ec2.delete_snapshot(SnapshotId=first)
    ec2.delete_volume(VolumeId=volume)
    return str(copy)


def _rds(session: Any, spec: ResourceSpec, kms: dict[str, str]) -> str:
    """A DB instance, or a manual snapshot of one that is gone since (a kept backup)."""
    rds = session.client("rds")
    instance = spec.name if spec.kind == "rds-instance" else f"{spec.name}-source"
    created = rds.create_db_instance(
        DBInstanceIdentifier=instance,
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        MasterUsername="sandbox",
        MasterUserPassword=SECRET_VALUE,
        AllocatedStorage=20,
        StorageEncrypted=True,
        **kms,
    )["DBInstance"]
    if spec.kind == "rds-instance":
        return str(created["DBInstanceArn"])
    snapshot = rds.create_db_snapshot(DBInstanceIdentifier=instance, DBSnapshotIdentifier=spec.name)
    rds.delete_db_instance(DBInstanceIdentifier=instance, SkipFinalSnapshot=True)
    return str(snapshot["DBSnapshot"]["DBSnapshotArn"])

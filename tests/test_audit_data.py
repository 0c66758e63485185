"""Practices 1 (customer managed keys), 5 (encryption everywhere) and 6 (secrets) of the
posture review, against moto: a configuration that passes and one that fails for each, and
the sandbox shim's GetEbsDefaultKmsKeyId.

The EBS checks read GetEbsDefaultKmsKeyId, which moto lacks: the sandbox's fidelity shim adds
it (``kmsir.sandbox.shim.install``, as every sandbox does). Where moto and AWS differ, AWS is
right, and the test says so with the page.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from kmsir.actions.audit import Audit, AuditParams
from kmsir.actions.audit.context import AuditContext, gather
from kmsir.actions.audit.practice_data import CUSTOMER_KEYS, ENCRYPTION, SECRETS, rotation_due
from kmsir.actions.audit.rules import Rule, evaluate
from kmsir.aws import ClientFactory
from kmsir.posture import Check, Review
from kmsir.sandbox import shim

from .conftest import served, served_cli_env
from .fakes import MemoryArtifacts, context

REGION = "eu-west-1"
ACCOUNT = "123456789012"  # moto's account
EC2_API = "https://docs.aws.amazon.com/AWSEC2/latest/APIReference/"
S3_SSE = "https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingServerSideEncryption.html"
SENSITIVE = [{"Key": "data", "Value": "pii"}]
AWS_CLI = shutil.which("aws", path=str(Path(sys.executable).parent)) or shutil.which("aws")


@pytest.fixture
def aws(moto_clients: ClientFactory) -> ClientFactory:
    """A plain moto account with the sandbox's fidelity shim (GetEbsDefaultKmsKeyId)."""
    shim.install()
    return moto_clients


def client(service: str) -> Any:
    return boto3.client(service, region_name=REGION)  # type: ignore[call-overload]


def customer_key() -> str:
    return str(client("kms").create_key(Description="data")["KeyMetadata"]["Arn"])


def aws_managed_key(alias: str) -> str:
    """The ARN of an AWS managed key, as services report it (moto makes it on first use)."""
    return str(client("kms").describe_key(KeyId=alias)["KeyMetadata"]["Arn"])


def volume(key: str | None = None, *, encrypted: bool = True, tags: Any = ()) -> str:
    kwargs: dict[str, Any] = {"AvailabilityZone": f"{REGION}a", "Size": 1, "Encrypted": encrypted}
    if key:
        kwargs["KmsKeyId"] = key
    if tags:
        kwargs["TagSpecifications"] = [{"ResourceType": "volume", "Tags": list(tags)}]
    volume_id = client("ec2").create_volume(**kwargs)["VolumeId"]
    return f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/{volume_id}"


def database(name: str, key: str | None = None, *, tags: Any = ()) -> str:
    kwargs: dict[str, Any] = {"StorageEncrypted": True, "KmsKeyId": key} if key else {}
    return str(
        client("rds").create_db_instance(
            DBInstanceIdentifier=name,
            DBInstanceClass="db.t3.micro",
            Engine="postgres",
            MasterUsername="admin",
            MasterUserPassword="not-a-real-password",
            AllocatedStorage=20,
            Tags=list(tags),
            **kwargs,
        )["DBInstance"]["DBInstanceArn"]
    )


def table(name: str, sse: dict[str, Any] | None = None, *, tags: Any = ()) -> str:
    kwargs: dict[str, Any] = {"SSESpecification": sse} if sse else {}
    if tags:
        kwargs["Tags"] = list(tags)
    return str(
        client("dynamodb").create_table(
            TableName=name,
            KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            **kwargs,
        )["TableDescription"]["TableArn"]
    )


def bucket(name: str, key: str | None = None, *, sse: str = "", tags: Any = ()) -> str:
    s3 = client("s3")
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    if sse:
        default = {"SSEAlgorithm": sse, **({"KMSMasterKeyID": key} if key else {})}
        s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": default}]
            },
        )
    if tags:
        s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": list(tags)})
    return f"arn:aws:s3:::{name}"


def snapshots() -> set[str]:
    """Every RDS snapshot: the manual ones, and the automated one moto (like AWS, with backups
    on) takes of a new instance."""
    return {s["DBSnapshotArn"] for s in client("rds").describe_db_snapshots()["DBSnapshots"]}


def secret(name: str, key: str | None = None, *, rotate_days: int = 0) -> str:
    sm = client("secretsmanager")
    kwargs: dict[str, Any] = {"KmsKeyId": key} if key else {}
    arn = str(sm.create_secret(Name=name, SecretString="s3cr3t", **kwargs)["ARN"])
    if rotate_days:
        sm.rotate_secret(SecretId=arn, RotationRules={"AutomaticallyAfterDays": rotate_days})
    return arn


def parameter(name: str, key: str | None = None) -> str:
    kwargs: dict[str, Any] = {"KeyId": key} if key else {}
    client("ssm").put_parameter(Name=name, Value="s3cr3t", Type="SecureString", **kwargs)
    return f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/{name.lstrip('/')}"


class Reviewed:
    """The checks of one review, by id, and the artifacts and calls it made."""

    def __init__(self, checks: list[Check], artifacts: MemoryArtifacts, calls: list[Any]):
        self.checks = checks
        self.artifacts = artifacts
        self.calls = calls

    def of(self, check_id: str, status: str | None = None) -> list[Check]:
        return [c for c in self.checks if c.id == check_id and status in (None, c.status)]

    def resources(self, check_id: str, status: str) -> set[str]:
        return {r for c in self.of(check_id, status) for r in c.resources}

    def statuses(self, check_id: str) -> set[str]:
        return {c.status for c in self.of(check_id)}

    def operations(self, operation: str) -> int:
        return sum(1 for call in self.calls if call.operation == operation)


def review(
    clients: ClientFactory,
    rules: Iterable[Rule],
    *,
    later: timedelta = timedelta(0),
    **settings: Any,
) -> Reviewed:
    """``rules`` over the moto account, ``later`` after now."""
    ctx, calls = context(clients)
    moment = datetime.now(timezone.utc) + later
    ctx.now = lambda: moment
    params = AuditParams(all=True, **settings)
    audit = AuditContext(ctx=ctx, region=REGION, account=ACCOUNT, settings=params)
    gather(audit, None)
    artifacts = ctx.artifacts
    assert isinstance(artifacts, MemoryArtifacts)
    return Reviewed(evaluate(audit, rules), artifacts, calls)


def refuse(clients: ClientFactory, service: str, operation: str, when: Any = None) -> None:
    """Make ``operation`` refused (AccessDenied) for the requests ``when`` accepts."""
    event_service = {"secretsmanager": "secrets-manager"}.get(service, service)

    def denied(model: Any, params: dict[str, Any], **_: Any) -> None:
        if when is None or when(params):
            error = {"Error": {"Code": "AccessDenied", "Message": "not allowed"}}
            raise ClientError(error, model.name)  # type: ignore[arg-type]

    handle: Any = clients.client(service, REGION)  # type: ignore[call-overload]
    handle.meta.events.register(f"before-parameter-build.{event_service}.{operation}", denied)


# -- the shim's GetEbsDefaultKmsKeyId ---------------------------------------------------------


def test_get_ebs_default_kms_key_id_answers_the_aws_managed_alias_until_modified(
    aws: ClientFactory,
) -> None:
    # AWS: "AWS creates a unique AWS managed KMS key in each Region for use with encryption by
    # default" until ModifyEbsDefaultKmsKeyId names another (EC2_API +
    # "API_ModifyEbsDefaultKmsKeyId.html"); GetEbsDefaultKmsKeyId answers the ARN of the
    # default key (EC2_API + "API_GetEbsDefaultKmsKeyId.html"). moto 5.2.5 has no
    # GetEbsDefaultKmsKeyId at all (NotImplementedError): the sandbox shim adds it.
    ec2 = client("ec2")
    default = f"arn:aws:kms:{REGION}:{ACCOUNT}:alias/aws/ebs"
    assert ec2.get_ebs_default_kms_key_id()["KmsKeyId"] == default
    volume()  # moto picks its aws/ebs key as default here: not a change AWS reports
    assert ec2.get_ebs_default_kms_key_id()["KmsKeyId"] == default
    key = customer_key()
    assert ec2.modify_ebs_default_kms_key_id(KmsKeyId=key.split("/")[-1])["KmsKeyId"] == key
    assert ec2.get_ebs_default_kms_key_id()["KmsKeyId"] == key
    other = boto3.client("ec2", region_name="us-east-2")
    expected = f"arn:aws:kms:us-east-2:{ACCOUNT}:alias/aws/ebs"
    assert other.get_ebs_default_kms_key_id()["KmsKeyId"] == expected  # one per Region


@pytest.mark.skipif(
    AWS_CLI is None and not os.environ.get("CI"), reason="needs the AWS CLI (pip install awscli)"
)
def test_the_aws_cli_gets_the_default_key_from_kmsir_sandbox_serve(tmp_path: Path) -> None:
    assert AWS_CLI is not None
    with served("rogue-grant", tmp_path) as exported:
        env = served_cli_env(exported)
        done = subprocess.run(
            [AWS_CLI, "ec2", "get-ebs-default-kms-key-id", "--output", "json"],
            env=env,
            capture_output=True,
            text=True,
        )
    assert done.returncode == 0, done.stderr
    region = exported.get("AWS_DEFAULT_REGION") or exported.get("AWS_REGION") or REGION
    expected = f"arn:aws:kms:{region}:{ACCOUNT}:alias/aws/ebs"
    assert json.loads(done.stdout)["KmsKeyId"] == expected


def test_ec2_shim_install_is_idempotent(aws: ClientFactory) -> None:
    shim.install()
    key = customer_key()
    client("ec2").modify_ebs_default_kms_key_id(KmsKeyId=key)
    assert client("ec2").get_ebs_default_kms_key_id()["KmsKeyId"] == key


# -- practice 1 -----------------------------------------------------------------------------


def test_data_on_customer_managed_keys_passes_practice_1(aws: ClientFactory) -> None:
    key = customer_key()
    client("ec2").modify_ebs_default_kms_key_id(KmsKeyId=key)
    planted = {
        volume(key, tags=SENSITIVE),
        database("ledger", key, tags=SENSITIVE),
        table("orders", {"Enabled": True, "SSEType": "KMS", "KMSMasterKeyId": key}, tags=SENSITIVE),
        bucket("data-cmk", key, sse="aws:kms"),
        secret("db-password", key),
        parameter("/app/token", key),
    }
    done = review(aws, CUSTOMER_KEYS, sensitive_tag="data=pii")
    assert done.statuses("aws-managed-keys-in-use") == {"pass"}
    assert planted <= done.resources("aws-managed-keys-in-use", "pass")
    sensitive = done.of("sensitive-data-on-customer-keys")
    assert [c.status for c in sensitive] == ["pass"]
    assert len(sensitive[0].resources) == 3  # the volume, the instance, the table
    assert {c.practice for c in done.checks} == {1}
    assert sensitive[0].doc.startswith("https://docs.aws.amazon.com/kms/")


def test_data_on_aws_managed_keys_is_listed_and_sensitive_data_fails(aws: ClientFactory) -> None:
    sensitive_volume = volume(tags=SENSITIVE)  # encrypted, no key given: aws/ebs
    plain_volume = volume()
    rds_key = aws_managed_key("alias/aws/rds")
    sensitive_db = database("ledger", rds_key, tags=SENSITIVE)
    owned = table("sessions", tags=SENSITIVE)  # no SSE: DynamoDB's AWS owned key
    managed = table("orders", {"Enabled": True, "SSEType": "KMS"})  # aws/dynamodb
    s3_managed = bucket("data-aws-s3", sse="aws:kms")  # SSE-KMS without a key: aws/s3
    default_secret = secret("db-password")  # no KmsKeyId: aws/secretsmanager
    default_parameter = parameter("/app/token")  # no KeyId: aws/ssm
    done = review(aws, CUSTOMER_KEYS, sensitive_tag="data")  # any value of "data"
    infos = {c.detail.split(":")[0]: set(c.resources) for c in done.of("aws-managed-keys-in-use")}
    assert infos["2 of the EBS volumes on AWS managed keys (alias/aws/ebs)"] == {
        sensitive_volume,
        plain_volume,
    }
    assert infos["1 of the EBS default keys on AWS managed keys (alias/aws/ebs)"] == {
        f"arn:aws:ec2:{REGION}:{ACCOUNT}:ebs-default-kms-key-id"
    }
    assert infos["1 of the RDS instances on AWS managed keys (alias/aws/rds)"] == {sensitive_db}
    assert infos["1 of the DynamoDB tables on AWS managed keys (alias/aws/dynamodb)"] == {managed}
    assert infos["1 of the DynamoDB tables on AWS owned keys"] == {owned}
    assert infos["1 of the S3 buckets on AWS managed keys (alias/aws/s3)"] == {s3_managed}
    assert infos[
        "1 of the Secrets Manager secrets on AWS managed keys (alias/aws/secretsmanager)"
    ] == {default_secret}
    assert infos["1 of the SecureString parameters on AWS managed keys (alias/aws/ssm)"] == {
        default_parameter
    }
    assert done.statuses("aws-managed-keys-in-use") == {"info"}
    failed = done.of("sensitive-data-on-customer-keys", "fail")
    assert {c.resources for c in failed} == {(sensitive_volume,), (sensitive_db,), (owned,)}
    assert all(c.severity == "high" and c.practice == 1 for c in failed)
    assert "an AWS owned key" in next(c.detail for c in failed if c.resources == (owned,))


def test_sensitive_data_is_not_applicable_without_a_sensitive_tag(aws: ClientFactory) -> None:
    volume(tags=SENSITIVE)
    done = review(aws, CUSTOMER_KEYS)
    assert done.statuses("sensitive-data-on-customer-keys") == {"not-applicable"}


def test_a_refused_describe_table_is_could_not_check_for_that_table_only(
    aws: ClientFactory,
) -> None:
    hidden = table("hidden", tags=SENSITIVE)
    seen = table("seen", tags=SENSITIVE)
    refuse(aws, "dynamodb", "DescribeTable", lambda p: p.get("TableName") == "hidden")
    done = review(aws, [*CUSTOMER_KEYS, *ENCRYPTION], sensitive_tag="data=pii")
    for check_id in ("sensitive-data-on-customer-keys", "dynamodb-encryption"):
        unknown = done.of(check_id, "could-not-check")
        assert [c.resources for c in unknown] == [(hidden,)], check_id
        assert unknown[0].missing == "dynamodb:DescribeTable"
    assert done.resources("sensitive-data-on-customer-keys", "fail") == {seen}
    assert done.resources("dynamodb-encryption", "info") == {seen}


# -- practice 5 -----------------------------------------------------------------------------


def test_encryption_everywhere_passes_practice_5(aws: ClientFactory) -> None:
    key = customer_key()
    ec2 = client("ec2")
    ec2.enable_ebs_encryption_by_default()
    ec2.modify_ebs_default_kms_key_id(KmsKeyId=key)
    encrypted = volume(key)
    sensitive = bucket("data-sensitive", key, sse="aws:kms", tags=SENSITIVE)
    everyday = bucket("data-everyday")
    db = database("ledger", key)
    snapshot = client("rds").create_db_snapshot(
        DBInstanceIdentifier="ledger", DBSnapshotIdentifier="ledger-copy"
    )["DBSnapshot"]["DBSnapshotArn"]
    orders = table("orders", {"Enabled": True, "SSEType": "KMS", "KMSMasterKeyId": key})
    done = review(aws, ENCRYPTION, sensitive_tag="data=pii")
    setting = f"arn:aws:ec2:{REGION}:{ACCOUNT}:ebs-encryption-by-default"
    assert [(c.status, c.resources) for c in done.of("ebs-encryption-by-default")] == [
        ("pass", (setting,))
    ]
    [default] = done.of("ebs-default-key")
    assert default.status == "info" and f"customer managed key {key}" in default.detail
    assert [(c.status, c.resources) for c in done.of("ebs-volumes-encrypted")] == [
        ("pass", (encrypted,))
    ]
    assert done.statuses("s3-default-encryption") == {"info", "pass"}
    assert done.resources("s3-default-encryption", "pass") == {sensitive}
    assert everyday in done.resources("s3-default-encryption", "info")  # SSE-S3: reported
    assert done.statuses("rds-encrypted") == {"pass", "info"}
    assert snapshot in snapshots()
    assert done.resources("rds-encrypted", "pass") == {db, *snapshots()}
    assert done.of("rds-encrypted", "info")[0].detail.startswith(
        "1 of the encrypted RDS instances on customer managed keys"
    )
    [tables] = done.of("dynamodb-encryption")
    assert tables.status == "info" and tables.resources == (orders,)
    assert "customer managed keys" in tables.detail
    assert {c.practice for c in done.checks} == {5}


def test_unencrypted_data_fails_practice_5(aws: ClientFactory) -> None:
    plain = volume(encrypted=False)
    encrypted = volume()
    # A bucket with no default-encryption configuration: moto answers
    # ServerSideEncryptionConfigurationNotFoundError where AWS, since January 5, 2023, reports
    # SSE-S3 for every bucket (S3_SSE). The check follows AWS: SSE-S3, a fail only when the
    # bucket is tagged sensitive.
    sensitive = bucket("data-sensitive", tags=SENSITIVE)
    everyday = bucket("data-everyday", sse="AES256")
    on_aws_s3 = bucket("data-aws-s3", sse="aws:kms", tags=SENSITIVE)
    dsse = bucket("data-dsse", sse="aws:kms:dsse")
    db = database("ledger")
    snapshot = client("rds").create_db_snapshot(
        DBInstanceIdentifier="ledger", DBSnapshotIdentifier="ledger-copy"
    )["DBSnapshot"]["DBSnapshotArn"]
    owned = table("sessions")
    managed = table("orders", {"Enabled": True, "SSEType": "KMS"})
    done = review(aws, ENCRYPTION, sensitive_tag="data=pii")
    [by_default] = done.of("ebs-encryption-by-default")
    assert by_default.status == "fail" and by_default.practice == 5
    assert by_default.resources == (f"arn:aws:ec2:{REGION}:{ACCOUNT}:ebs-encryption-by-default",)
    [default] = done.of("ebs-default-key")
    assert default.status == "info" and "AWS managed key alias/aws/ebs" in default.detail
    assert done.resources("ebs-volumes-encrypted", "fail") == {plain}
    assert done.resources("ebs-volumes-encrypted", "pass") == {encrypted}
    failed = done.of("s3-default-encryption", "fail")
    assert {c.resources for c in failed} == {(sensitive,), (on_aws_s3,)}
    assert all(c.severity == "high" for c in failed)
    types = {c.detail.split(":")[0]: set(c.resources) for c in done.of("s3-default-encryption")}
    assert types["2 bucket(s) default to SSE-S3 (Amazon S3 managed keys)"] == {sensitive, everyday}
    assert types["1 bucket(s) default to SSE-KMS with the AWS managed key alias/aws/s3"] == {
        on_aws_s3
    }
    assert types["1 bucket(s) default to DSSE-KMS with the AWS managed key alias/aws/s3"] == {dsse}
    sse_s3 = next(c for c in done.of("s3-default-encryption") if sensitive in c.resources)
    assert sse_s3.status == "info" and "since January 5, 2023" in sse_s3.detail
    assert snapshot in snapshots()
    assert {c.resources for c in done.of("rds-encrypted", "fail")} == {
        (arn,) for arn in (db, *snapshots())
    }
    assert done.statuses("rds-encrypted") == {"fail"}
    kinds = {c.detail.split(":")[0]: c.resources for c in done.of("dynamodb-encryption")}
    assert kinds == {
        "1 table(s) encrypted at rest with an AWS owned key": (owned,),
        "1 table(s) encrypted at rest with the AWS managed key alias/aws/dynamodb": (managed,),
    }


def test_a_refused_bucket_read_is_could_not_check_for_that_bucket(aws: ClientFactory) -> None:
    hidden = bucket("data-hidden")
    sealed = bucket("data-sealed", tags=SENSITIVE)
    sensitive = bucket("data-sensitive", tags=SENSITIVE)
    refuse(aws, "s3", "GetBucketTagging", lambda p: p.get("Bucket") == "data-hidden")
    refuse(aws, "s3", "GetBucketEncryption", lambda p: p.get("Bucket") == "data-sealed")
    done = review(aws, ENCRYPTION, sensitive_tag="data=pii")
    unknown = {c.missing: c.resources for c in done.of("s3-default-encryption", "could-not-check")}
    # the IAM action of GetBucketTagging is s3:GetBucketTagging, of GetBucketEncryption
    # s3:GetEncryptionConfiguration
    assert unknown == {
        "s3:GetBucketTagging": (hidden,),
        "s3:GetEncryptionConfiguration": (sealed,),
    }
    assert done.resources("s3-default-encryption", "fail") == {sensitive}
    assert hidden in done.resources("s3-default-encryption", "info")  # its encryption was read


def test_listings_are_read_once_and_tags_only_when_asked(aws: ClientFactory) -> None:
    bucket("data-one")
    bucket("data-two")
    table("orders")
    done = review(aws, [*CUSTOMER_KEYS, *ENCRYPTION, *SECRETS])
    assert done.operations("ListBuckets") == 1  # three checks read the buckets
    assert done.operations("GetBucketEncryption") == 2  # once per bucket
    assert done.operations("DescribeTable") == 1
    assert done.operations("GetBucketTagging") == done.operations("ListTagsOfResource") == 0
    [buckets] = [c for c in done.checks if c.id == "s3-default-encryption"]
    saved = json.loads(done.artifacts.files["data/s3-buckets.json"])
    assert {b["Name"] for b in saved["Buckets"]} == {"data-one", "data-two"}
    assert buckets.evidence[0] == "artifacts/01-test/data/s3-buckets.json"


# -- practice 6 -----------------------------------------------------------------------------


def test_rotated_secrets_on_customer_keys_pass_practice_6(aws: ClientFactory) -> None:
    key = customer_key()
    rotated = secret("db-password", key, rotate_days=30)
    token = parameter("/app/token", key)
    done = review(aws, SECRETS, later=timedelta(days=20))
    assert [(c.status, c.resources) for c in done.of("secrets-rotation")] == [("pass", (rotated,))]
    assert [(c.status, set(c.resources)) for c in done.of("secrets-customer-keys")] == [
        ("pass", {rotated, token})
    ]
    assert {c.practice for c in done.checks} == {6}


def test_unrotated_overdue_and_aws_keyed_secrets_fail_practice_6(aws: ClientFactory) -> None:
    never = secret("api-key")
    overdue = secret("db-password", rotate_days=30)
    token = parameter("/app/token")
    done = review(aws, SECRETS, later=timedelta(days=40))  # 40 days after the last rotation
    failed = {c.resources[0]: c.detail for c in done.of("secrets-rotation", "fail")}
    assert set(failed) == {never, overdue}
    assert failed[never].endswith("rotation is off")
    assert "rotation overdue since" in failed[overdue] and "every 30 day(s)" in failed[overdue]
    keys = {c.resources: c.detail for c in done.of("secrets-customer-keys", "fail")}
    assert set(keys) == {(never,), (overdue,), (token,)}
    assert "AWS managed key alias/aws/secretsmanager" in keys[(never,)]
    assert "AWS managed key alias/aws/ssm" in keys[(token,)]
    assert done.statuses("secrets-customer-keys") == {"fail"}
    assert {c.practice for c in done.checks} == {6}


def test_a_refused_secrets_listing_leaves_parameters_judged(aws: ClientFactory) -> None:
    secret("db-password")
    token = parameter("/app/token")
    refuse(aws, "secretsmanager", "ListSecrets")
    done = review(aws, SECRETS)
    [rotation] = done.of("secrets-rotation")
    assert rotation.status == "could-not-check"
    assert rotation.missing == "secretsmanager:ListSecrets"
    assert done.resources("secrets-customer-keys", "fail") == {token}
    assert {c.missing for c in done.of("secrets-customer-keys", "could-not-check")} == {
        "secretsmanager:ListSecrets"
    }


def test_schedule_expressions_give_the_due_date() -> None:
    # ListSecrets as AWS returns it for a ScheduleExpression (moto 5.2.5 keeps only
    # AutomaticallyAfterDays, and leaves rotation off for a schedule expression): a rate()
    # gives the period from the last rotation; a cron() is judged by NextRotationDate
    # (RotationRulesType, Secrets Manager API reference).
    last = datetime(2026, 1, 1, tzinfo=timezone.utc)
    rate = {"RotationRules": {"ScheduleExpression": "rate(10 days)"}, "LastRotatedDate": last}
    assert rotation_due(rate)[0] == last + timedelta(days=10)
    hours = {"RotationRules": {"ScheduleExpression": "rate(12 hours)"}, "CreatedDate": last}
    assert rotation_due(hours)[0] == last + timedelta(hours=12)
    upcoming = datetime(2026, 3, 1, tzinfo=timezone.utc)
    cron = {
        "RotationRules": {"ScheduleExpression": "cron(0 8 1 * ? *)"},
        "LastRotatedDate": last,
        "NextRotationDate": upcoming,
    }
    assert rotation_due(cron) == (upcoming, "cron(0 8 1 * ? *), next rotation 2026-03-01")
    assert rotation_due({"RotationRules": {"ScheduleExpression": "cron(0 8 1 * ? *)"}})[0] is None


# -- the whole action -----------------------------------------------------------------------


def test_the_audit_action_reports_practices_1_5_and_6(aws: ClientFactory) -> None:
    volume(encrypted=False)
    secret("db-password")
    ctx, _ = context(aws)
    Audit().run(ctx, AuditParams(all=True, sensitive_tag="data=pii"))
    artifacts = ctx.artifacts
    assert isinstance(artifacts, MemoryArtifacts)
    posture = Review.loads(artifacts.files["posture.json"])
    mine = {c.id: c.practice for c in posture.checks if c.practice in (1, 5, 6)}
    assert mine == {
        "aws-managed-keys-in-use": 1,
        "sensitive-data-on-customer-keys": 1,
        "ebs-encryption-by-default": 5,
        "ebs-default-key": 5,
        "ebs-volumes-encrypted": 5,
        "s3-default-encryption": 5,
        "rds-encrypted": 5,
        "dynamodb-encryption": 5,
        "secrets-rotation": 6,
        "secrets-customer-keys": 6,
    }
    failing = {(c.id, c.status) for c in posture.checks if c.practice in (1, 5, 6)}
    assert ("ebs-volumes-encrypted", "fail") in failing
    assert ("secrets-rotation", "fail") in failing
    assert all(c.doc.startswith("https://docs.aws.amazon.com/") for c in posture.checks)

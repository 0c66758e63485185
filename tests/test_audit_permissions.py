"""``could-not-check`` for real: the whole ``kms.audit`` step run as a role lacking one
permission, with moto enforcing IAM for every request (``moto.core.enable_iam_authentication``,
moto 5.2.5: every service answered by ``BaseResponse.call_action`` checks the signer's
policies, S3 its own way).

The same account is reviewed twice, by a role allowed everything and by one allowed
everything but one action (``NotAction``): the step succeeds both times, and the only checks
that change are those that needed the missing action, now ``could-not-check`` naming it.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.core import enable_iam_authentication

from kmsir.actions.audit import Audit, AuditParams
from kmsir.aws import ClientFactory
from kmsir.posture import Check, Review

from .fakes import context

REGION = "eu-west-1"
ACCOUNT = "123456789012"
TRAIL_CHECKS = {"trail-multi-region-kms", "trail-log-validation", "trail-bucket-not-public"}


@pytest.fixture
def account(moto_clients: ClientFactory) -> dict[str, str]:
    """A key, a trail logging KMS events into a bucket, and a rule on key changes. moto has
    no GetEbsDefaultKmsKeyId (AWS does: the EBS checks call it), so the sandbox's shim that
    answers it as AWS would is installed, as every sandbox run does."""
    from kmsir.sandbox.shim import ec2

    ec2.install()
    kms = boto3.client("kms", region_name=REGION)
    key = kms.create_key(Description="payments")["KeyMetadata"]["Arn"]
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="trail-logs", CreateBucketConfiguration={"LocationConstraint": REGION})
    cloudtrail = boto3.client("cloudtrail", region_name=REGION)
    trail = cloudtrail.create_trail(
        Name="main",
        S3BucketName="trail-logs",
        IsMultiRegionTrail=True,
        EnableLogFileValidation=True,
    )["TrailARN"]
    cloudtrail.start_logging(Name="main")
    events = boto3.client("events", region_name=REGION)
    changes = {"eventName": ["ScheduleKeyDeletion", "DisableKey", "PutKeyPolicy"]}
    pattern = {"source": ["aws.kms"], "detail": changes}
    events.put_rule(Name="kms-changes", EventPattern=json.dumps(pattern))
    events.put_targets(
        Rule="kms-changes",
        Targets=[{"Id": "alert", "Arn": f"arn:aws:sns:{REGION}:{ACCOUNT}:kms-alerts"}],
    )
    return {"key": key, "trail": trail, "bucket": "arn:aws:s3:::trail-logs"}


def reviewer(name: str, statement: dict[str, Any]) -> boto3.Session:
    """A session of role ``name`` whose only policy is ``statement`` (assumed before IAM is
    enforced, as the seeding is)."""
    iam = boto3.client("iam", region_name=REGION)
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]
    policy = {"Version": "2012-10-17", "Statement": [statement]}
    iam.put_role_policy(RoleName=name, PolicyName="review", PolicyDocument=json.dumps(policy))
    credentials = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=role["Arn"], RoleSessionName="review"
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        region_name=REGION,
    )


def run_review(session: boto3.Session) -> tuple[list[Check], dict[str, Any]]:
    """The whole ``kms.audit`` step as ``session``'s principal, IAM enforced: its checks and
    outputs."""
    clients = ClientFactory(session_factory=lambda: session, region=REGION, guard_send=True)
    ctx, _ = context(clients)
    with enable_iam_authentication():
        outcome = Audit().run(ctx, AuditParams(all=True))
    review = Review.loads(ctx.artifacts.files["posture.json"])
    return review.checks, outcome.outputs


def verdicts(checks: list[Check]) -> dict[tuple[str, str], str]:
    """(check id, resource) -> status."""
    return {pair: c.status for c in checks for pair in c.pairs()}


def test_iam_is_enforced(account: dict[str, str]) -> None:
    """Not a test that cannot fail: a role allowed nothing is refused, so the comparisons
    below rest on real refusals."""
    session = reviewer(
        "nothing", {"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}
    )
    with enable_iam_authentication(), pytest.raises(ClientError, match="AccessDenied"):
        session.client("cloudtrail").describe_trails()


def test_a_role_without_describe_trails_cannot_check_the_trails(account: dict[str, str]) -> None:
    # both roles made first: the reviews see the same IAM policies (practice 2 reads them)
    everything = reviewer("everything", {"Effect": "Allow", "Action": "*", "Resource": "*"})
    no_trails = reviewer(
        "no-trails", {"Effect": "Allow", "NotAction": "cloudtrail:DescribeTrails", "Resource": "*"}
    )
    full, _ = run_review(everything)
    lacking, outputs = run_review(no_trails)
    assert outputs["checks"] == len(lacking)  # the step succeeded, with its review written
    by_id = {c.id: c for c in full}
    assert {by_id[i].status for i in TRAIL_CHECKS} == {"pass"}  # judged when allowed
    for check in (c for c in lacking if c.id in TRAIL_CHECKS):
        assert check.status == "could-not-check"
        assert check.missing == "cloudtrail:DescribeTrails"
        assert check.practice == 3
    changed = {k for k, v in verdicts(lacking).items() if verdicts(full).get(k) != v}
    assert {i for i, _ in changed} == TRAIL_CHECKS  # every other check judged as before
    judged = {c.id: c.status for c in lacking}
    assert judged["kms-change-alarms"] == "pass"
    assert judged["kms-pending-deletion-use-alarm"] == "fail"


def test_an_unreadable_trail_bucket_cannot_be_checked(account: dict[str, str]) -> None:
    """A bucket whose ACL cannot be read (as a central logging account's bucket): that
    bucket is could-not-check, the trail itself is still judged."""
    checks, _ = run_review(
        reviewer("no-acl", {"Effect": "Allow", "NotAction": "s3:GetBucketAcl", "Resource": "*"})
    )
    (bucket,) = [c for c in checks if c.id == "trail-bucket-not-public"]
    assert bucket.status == "could-not-check"
    assert bucket.resources == (account["bucket"],)
    assert bucket.missing == "s3:GetBucketAcl"
    (trail,) = [c for c in checks if c.id == "trail-multi-region-kms"]
    assert (trail.status, trail.resources) == ("pass", (account["trail"],))

"""Practice 3 (audit and monitor) against moto: the trail checks (multi-Region KMS logging,
log file validation, the trail bucket not public) and the alarm checks (key changes, use of
a key pending deletion), each with a configuration that passes and one that fails.

Where moto and AWS differ, the checks follow AWS and the tests say so:
- ``GetEventSelectors`` on a trail never given selectors answers ``[]`` in moto; AWS answers
  its default selector (all management events, read and write: "By default, trails ... log
  management events", https://docs.aws.amazon.com/awscloudtrail/latest/userguide/
  logging-management-events-with-cloudtrail.html). The check reads no selectors at all as
  that default, so a plain trail passes in both.
- A new bucket has all four Block Public Access settings on in AWS (moto: none), so the
  public-bucket tests first turn them off, as anyone making a bucket public on AWS must.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from kmsir.actions.audit import AuditParams
from kmsir.actions.audit.context import AuditContext
from kmsir.actions.audit.practice_monitoring import RULES
from kmsir.actions.audit.rules import evaluate
from kmsir.aws import ClientFactory
from kmsir.posture import Check

from .fakes import context

REGION = "eu-west-1"
ACCOUNT = "123456789012"
SNS = f"arn:aws:sns:{REGION}:{ACCOUNT}:kms-alerts"
IDS = {r.id for r in RULES}
OFF = {
    "BlockPublicAcls": False,
    "IgnorePublicAcls": False,
    "BlockPublicPolicy": False,
    "RestrictPublicBuckets": False,
}


def review(clients: ClientFactory) -> tuple[dict[str, list[Check]], dict[str, bytes]]:
    """Practice 3's checks on the moto account, by id, and the artifacts written."""
    ctx, _ = context(clients)
    audit = AuditContext(ctx=ctx, region=REGION, account=ACCOUNT, settings=AuditParams(all=True))
    found: dict[str, list[Check]] = {}
    for check in evaluate(audit, RULES):
        assert check.practice == 3, check
        assert check.doc.startswith("https://docs.aws.amazon.com/"), check
        found.setdefault(check.id, []).append(check)
    assert set(found) == IDS
    return found, ctx.artifacts.files


def only(checks: list[Check], status: str) -> list[Check]:
    return [c for c in checks if c.status == status]


def by_resource(checks: list[Check]) -> dict[str, str]:
    """resource -> status."""
    return {r: c.status for c in checks for r in c.resources}


def bucket(name: str, region: str = REGION) -> str:
    s3 = boto3.client("s3", region_name=region)
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    return name


def trail(
    name: str,
    bucket_name: str,
    *,
    region: str = REGION,
    multi: bool = True,
    validation: bool = True,
    logging: bool = True,
    **selectors: Any,
) -> str:
    cloudtrail = boto3.client("cloudtrail", region_name=region)
    arn = cloudtrail.create_trail(
        Name=name,
        S3BucketName=bucket_name,
        IsMultiRegionTrail=multi,
        EnableLogFileValidation=validation,
    )["TrailARN"]
    if logging:
        cloudtrail.start_logging(Name=name)
    if selectors:
        cloudtrail.put_event_selectors(TrailName=name, **selectors)
    return str(arn)


def kms_alarm_arn(event: str) -> str:
    return f"arn:aws:kms:{REGION}:{ACCOUNT}:alarm-on/{event}"


@pytest.fixture
def private_bucket(moto_clients: ClientFactory) -> str:
    name = bucket("trail-logs")
    boto3.client("s3", region_name=REGION).put_public_access_block(
        Bucket=name, PublicAccessBlockConfiguration={k: True for k in OFF}
    )
    return name


# -- trail-multi-region-kms ---------------------------------------------------------------


def test_a_multi_region_trail_of_another_region_logging_kms_passes(
    moto_clients: ClientFactory, private_bucket: str
) -> None:
    """Made in us-east-1, seen from eu-west-1 as a shadow trail (includeShadowTrails)."""
    arn = trail("org-trail", private_bucket, region="us-east-1")
    found, files = review(moto_clients)
    (check,) = found["trail-multi-region-kms"]
    assert check.status == "pass"
    assert check.resources == (arn,)
    assert arn.startswith("arn:aws:cloudtrail:us-east-1:")
    assert "artifacts/01-test/cloudtrail/trails.json" in check.evidence
    assert json.loads(files["cloudtrail/trails.json"])["trailList"][0]["TrailARN"] == arn


def test_no_trail_fails_on_the_region_setting(moto_clients: ClientFactory) -> None:
    found, _ = review(moto_clients)
    (check,) = found["trail-multi-region-kms"]
    assert check.status == "fail"
    assert check.severity == "high"
    assert check.resources == (f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:multi-region-kms-trail",)
    assert found["trail-log-validation"][0].status == "not-applicable"
    assert found["trail-bucket-not-public"][0].status == "not-applicable"


def test_trails_short_of_kms_events_fail_each_with_why(
    moto_clients: ClientFactory, private_bucket: str
) -> None:
    local = trail("local-only", private_bucket, multi=False)
    stopped = trail("stopped", private_bucket, logging=False)
    excluded = trail(
        "kms-excluded",
        private_bucket,
        EventSelectors=[
            {
                "ReadWriteType": "All",
                "IncludeManagementEvents": True,
                "ExcludeManagementEventSources": ["kms.amazonaws.com"],
            }
        ],
    )
    advanced = trail(
        "advanced-excluded",
        private_bucket,
        AdvancedEventSelectors=[
            {
                "Name": "management but KMS",
                "FieldSelectors": [
                    {"Field": "eventCategory", "Equals": ["Management"]},
                    {"Field": "eventSource", "NotEquals": ["kms.amazonaws.com"]},
                ],
            }
        ],
    )
    writes = trail(
        "writes-only",
        private_bucket,
        EventSelectors=[{"ReadWriteType": "WriteOnly", "IncludeManagementEvents": True}],
    )
    found, _ = review(moto_clients)
    checks = found["trail-multi-region-kms"]
    assert by_resource(checks) == dict.fromkeys(
        [local, stopped, excluded, advanced, writes], "fail"
    )
    detail = {c.resources[0]: c.detail for c in checks}
    assert "not multi-Region" in detail[local]
    assert "not logging" in detail[stopped]
    assert "KMS management events not selected" in detail[excluded]
    assert "KMS management events not selected" in detail[advanced]
    assert "KMS read events (Decrypt" in detail[writes]
    severity = {c.resources[0]: c.severity for c in checks}
    assert severity[writes] == "medium"  # the write events are logged: only Decrypt & co not
    assert severity[excluded] == "high"


def test_advanced_selectors_of_all_management_events_pass(
    moto_clients: ClientFactory, private_bucket: str
) -> None:
    arn = trail(
        "advanced",
        private_bucket,
        AdvancedEventSelectors=[
            {
                "Name": "management",
                "FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]}],
            }
        ],
    )
    found, _ = review(moto_clients)
    assert by_resource(found["trail-multi-region-kms"]) == {arn: "pass"}


# -- trail-log-validation -------------------------------------------------------------------


def test_log_validation_on_every_trail_logging_kms(
    moto_clients: ClientFactory, private_bucket: str
) -> None:
    on = trail("validated", private_bucket)
    off = trail("unvalidated", private_bucket, multi=False, validation=False)
    ignored = trail("stopped", private_bucket, validation=False, logging=False)
    found, _ = review(moto_clients)
    checks = found["trail-log-validation"]
    assert by_resource(checks) == {on: "pass", off: "fail"}
    assert ignored not in by_resource(checks)  # it logs nothing now
    (failed,) = only(checks, "fail")
    assert "LogFileValidationEnabled false" in failed.detail
    assert failed.severity == "medium"


# -- trail-bucket-not-public ----------------------------------------------------------------


def test_a_blocked_bucket_passes(moto_clients: ClientFactory, private_bucket: str) -> None:
    trail("main", private_bucket)
    found, files = review(moto_clients)
    (check,) = found["trail-bucket-not-public"]
    assert check.status == "pass"
    assert check.resources == (f"arn:aws:s3:::{private_bucket}",)
    assert "all four Block Public Access settings on" in check.detail
    assert "trail-buckets/trail-logs.json" in files


def test_public_trail_buckets_fail(moto_clients: ClientFactory) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    by_acl = bucket("public-acl-logs")
    by_policy = bucket("public-policy-logs")
    private = bucket("unblocked-private-logs")
    ignored = bucket("ignored-acl-logs")
    for name in (by_acl, by_policy, private, ignored):
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=OFF)
    s3.put_bucket_acl(Bucket=by_acl, ACL="public-read")
    s3.put_bucket_acl(Bucket=ignored, ACL="authenticated-read")
    s3.put_public_access_block(
        Bucket=ignored, PublicAccessBlockConfiguration={**OFF, "IgnorePublicAcls": True}
    )
    s3.put_bucket_policy(
        Bucket=by_policy,
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "s3:GetObject",
                        "Resource": f"arn:aws:s3:::{by_policy}/*",
                    }
                ],
            }
        ),
    )
    for number, name in enumerate((by_acl, by_policy, private, ignored)):
        trail(f"trail-{number}", name)
    found, _ = review(moto_clients)
    checks = found["trail-bucket-not-public"]
    assert by_resource(checks) == {
        f"arn:aws:s3:::{by_acl}": "fail",
        f"arn:aws:s3:::{by_policy}": "fail",
        f"arn:aws:s3:::{private}": "pass",
        f"arn:aws:s3:::{ignored}": "pass",
    }
    detail = {c.resources[0]: c.detail for c in only(checks, "fail")}
    assert "ACL grants AllUsers" in detail[f"arn:aws:s3:::{by_acl}"]
    assert "bucket policy is public" in detail[f"arn:aws:s3:::{by_policy}"]
    assert all(c.severity == "high" for c in only(checks, "fail"))


def test_a_trail_bucket_that_no_longer_exists_fails(moto_clients: ClientFactory) -> None:
    """Anyone may create a bucket of that name and, letting CloudTrail write, get the logs."""
    name = bucket("deleted-logs")
    trail("orphan", name)
    boto3.client("s3", region_name=REGION).delete_bucket(Bucket=name)
    found, _ = review(moto_clients)
    (check,) = found["trail-bucket-not-public"]
    assert check.status == "fail"
    assert check.resources == (f"arn:aws:s3:::{name}",)
    assert "does not exist" in check.detail


# -- kms-change-alarms ----------------------------------------------------------------------


def rule(name: str, pattern: dict[str, Any], *, target: bool = True, state: str = "ENABLED") -> str:
    events = boto3.client("events", region_name=REGION)
    arn = events.put_rule(Name=name, EventPattern=json.dumps(pattern), State=state)["RuleArn"]
    if target:
        events.put_targets(Rule=name, Targets=[{"Id": "alert", "Arn": SNS}])
    return str(arn)


def alarmed_filter(name: str, pattern: str, *, actions: bool = True, region: str = REGION) -> str:
    """A metric filter on a CloudTrail log group of ``region``, and an alarm on its metric."""
    logs = boto3.client("logs", region_name=region)
    if not logs.describe_log_groups(logGroupNamePrefix="cloudtrail")["logGroups"]:
        logs.create_log_group(logGroupName="cloudtrail")
    logs.put_metric_filter(
        logGroupName="cloudtrail",
        filterName=name,
        filterPattern=pattern,
        metricTransformations=[
            {"metricName": name, "metricNamespace": "CloudTrailLogMetrics", "metricValue": "1"}
        ],
    )
    boto3.client("cloudwatch", region_name=region).put_metric_alarm(
        AlarmName=f"{name}-alarm",
        MetricName=name,
        Namespace="CloudTrailLogMetrics",
        Statistic="Sum",
        Period=300,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        AlarmActions=[SNS] if actions else [],
    )
    return f"arn:aws:cloudwatch:{region}:{ACCOUNT}:alarm:{name}-alarm"


KMS_CALLS = {"source": ["aws.kms"], "detail-type": ["AWS API Call via CloudTrail"]}


def test_one_rule_on_the_three_changes_passes(moto_clients: ClientFactory) -> None:
    """The pattern of AWS's page (events-ref-kms), naming the three calls."""
    arn = rule(
        "kms-changes",
        {
            **KMS_CALLS,
            "detail": {
                "eventSource": ["kms.amazonaws.com"],
                "eventName": ["ScheduleKeyDeletion", "DisableKey", "PutKeyPolicy"],
            },
        },
    )
    found, files = review(moto_clients)
    (check,) = found["kms-change-alarms"]
    assert check.status == "pass"
    assert set(check.resources) == {
        kms_alarm_arn(e) for e in ("ScheduleKeyDeletion", "DisableKey", "PutKeyPolicy")
    }
    assert arn in check.detail
    assert "events/rule-targets.json" in files


def test_a_rule_on_every_kms_call_covers_the_changes(moto_clients: ClientFactory) -> None:
    rule("all-kms", {"source": ["aws.kms"]})  # no eventName filter: every KMS event
    found, _ = review(moto_clients)
    assert [c.status for c in found["kms-change-alarms"]] == ["pass"]


def test_uncovered_changes_fail_one_by_one(moto_clients: ClientFactory) -> None:
    rule("disable", {**KMS_CALLS, "detail": {"eventName": [{"prefix": "Disable"}]}})
    alarm = alarmed_filter(
        "schedule",
        "{ ($.eventSource = kms.amazonaws.com) && ($.eventName = ScheduleKeyDeletion) }",
    )
    # none of these tells anyone of PutKeyPolicy:
    rule("no-target", {**KMS_CALLS, "detail": {"eventName": ["PutKeyPolicy"]}}, target=False)
    rule("disabled", {**KMS_CALLS, "detail": {"eventName": ["PutKeyPolicy"]}}, state="DISABLED")
    rule("some-keys", {**KMS_CALLS, "detail": {"requestParameters": {"keyId": ["1234"]}}})
    rule("not-it", {**KMS_CALLS, "detail": {"eventName": [{"anything-but": "PutKeyPolicy"}]}})
    alarmed_filter("silent", '{ $.eventName = "PutKeyPolicy" }', actions=False)
    alarmed_filter("negated", "{ $.eventName != PutKeyPolicy }")
    found, _ = review(moto_clients)
    checks = found["kms-change-alarms"]
    assert by_resource(checks) == {
        kms_alarm_arn("ScheduleKeyDeletion"): "pass",
        kms_alarm_arn("DisableKey"): "pass",
        kms_alarm_arn("PutKeyPolicy"): "fail",
    }
    (passed,) = only(checks, "pass")
    assert alarm in passed.detail
    assert all(c.severity == "medium" for c in checks)


def test_alarms_on_the_log_group_of_a_trail_homed_elsewhere_count(
    moto_clients: ClientFactory, private_bucket: str
) -> None:
    """A multi-Region trail sends every Region's events to its log group in its home Region:
    the metric filters and alarms there watch this Region's keys too."""
    home = "us-east-1"
    boto3.client("cloudtrail", region_name=home).create_trail(
        Name="org-trail",
        S3BucketName=private_bucket,
        IsMultiRegionTrail=True,
        CloudWatchLogsLogGroupArn=f"arn:aws:logs:{home}:{ACCOUNT}:log-group:cloudtrail:*",
        CloudWatchLogsRoleArn=f"arn:aws:iam::{ACCOUNT}:role/cloudtrail-to-logs",
    )
    boto3.client("cloudtrail", region_name=home).start_logging(Name="org-trail")
    pattern = "{ ($.eventName = ScheduleKeyDeletion) || ($.eventName = DisableKey) || "
    alarm = alarmed_filter("changes", pattern + "($.eventName = PutKeyPolicy) }", region=home)
    found, files = review(moto_clients)
    assert [c.status for c in found["kms-change-alarms"]] == ["pass"]
    assert alarm in found["kms-change-alarms"][0].detail
    assert "logs/metric-filters-us-east-1.json" in files


# -- kms-pending-deletion-use-alarm --------------------------------------------------------


def test_aws_pending_deletion_alarm_passes(moto_clients: ClientFactory) -> None:
    """The metric filter of AWS's page (deleting-keys-creating-cloudwatch-alarm)."""
    alarm = alarmed_filter(
        "KMSKeyPendingDeletionErrorCount",
        '{ $.eventSource = kms* && $.errorMessage = "* is pending deletion."}',
    )
    found, _ = review(moto_clients)
    (check,) = found["kms-pending-deletion-use-alarm"]
    assert check.status == "pass"
    assert check.resources == (kms_alarm_arn("pending-deletion-use"),)
    assert alarm in check.detail
    assert "artifacts/01-test/cloudwatch/alarms-eu-west-1.json" in check.evidence


def test_an_eventbridge_rule_on_the_error_passes(moto_clients: ClientFactory) -> None:
    rule(
        "pending-use",
        {**KMS_CALLS, "detail": {"errorMessage": [{"suffix": "is pending deletion."}]}},
    )
    found, _ = review(moto_clients)
    assert [c.status for c in found["kms-pending-deletion-use-alarm"]] == ["pass"]


def test_no_pending_deletion_alarm_fails(moto_clients: ClientFactory) -> None:
    # key-change watchers do not see a Decrypt refused because the key is pending deletion
    rule("changes", {**KMS_CALLS, "detail": {"eventName": ["ScheduleKeyDeletion"]}})
    alarmed_filter("disable", "{ $.eventName = DisableKey }")
    found, _ = review(moto_clients)
    (check,) = found["kms-pending-deletion-use-alarm"]
    assert check.status == "fail"
    assert check.resources == (kms_alarm_arn("pending-deletion-use"),)
    assert check.severity == "low"

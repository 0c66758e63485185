"""Practice 3 (audit and monitor): every KMS call is recorded by a trail that covers every
Region, whose log files can be proven intact and are not public; someone is told when a key
is scheduled for deletion, disabled or given a new policy, and when a key pending deletion
is still used.

KMS's cryptographic operations (``Decrypt``, ``Encrypt``, ``GenerateDataKey``) are *read*
management events: a trail logging only write events cannot say who used a key, and the
pending-deletion alarm never sees anything. So the trail check asks for both; a trail short
only of the reads fails at medium rather than high. (How a trail's selection is read:
``monitoring_trails``.)

An alarm counts when it tells someone: an enabled EventBridge rule of the default bus with a
target, or a CloudWatch Logs metric filter with a CloudWatch alarm that has an action.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from kmsir.actions.audit.context import AuditContext, Unavailable
from kmsir.actions.audit.monitoring_alarms import change_alarms, pending_deletion_alarm
from kmsir.actions.audit.monitoring_trails import Trail, Trails, partition, setting, trails
from kmsir.actions.audit.rules import Result, Rule, cannot
from kmsir.actions.kmskeys import strip_metadata

_TRAILS = ("cloudtrail:DescribeTrails", "cloudtrail:GetTrailStatus", "cloudtrail:GetEventSelectors")
_ALARMS = (
    *_TRAILS,  # where the trails' log groups are
    "events:ListRules",
    "events:ListTargetsByRule",
    "logs:DescribeMetricFilters",
    "cloudwatch:DescribeAlarms",
)
_PUBLIC_GROUPS = frozenset(
    {
        "http://acs.amazonaws.com/groups/global/AllUsers",
        "http://acs.amazonaws.com/groups/global/AuthenticatedUsers",
    }
)
_BLOCKS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
_GONE = (
    "the bucket does not exist: nothing is delivered, and whoever creates a bucket of that "
    "name and lets CloudTrail write to it receives the trail's logs"
)
_NOT_LOGGED = "no logging trail records KMS events (see trail-multi-region-kms)"


def _multi_region(audit: AuditContext) -> Iterator[Result]:
    seen = trails(audit)
    full = [t for t in seen.items if t.unavailable is None and not t.gaps()]
    if full:
        names = ", ".join(t.name for t in full)
        detail = f"logging KMS read and write events in every Region: {names}"
        yield Result("pass", tuple(t.arn for t in full), detail, seen.evidence)
        return
    if not seen.items:
        resource = setting(audit, "cloudtrail", "multi-region-kms-trail")
        detail = "no trail: KMS calls are kept only 90 days, in the event history"
        yield Result("fail", (resource,), detail, seen.evidence)
    for trail in seen.items:
        if trail.unavailable is not None:
            yield cannot(trail.unavailable, (trail.arn,))
            continue
        gaps = trail.gaps()
        reads = len(gaps) == 1 and gaps[0].startswith("KMS read")
        detail = f"{trail.name}: {'; '.join(gaps)}"
        yield Result(
            "fail", (trail.arn,), detail, seen.evidence, severity="medium" if reads else None
        )


def _kms_trails(audit: AuditContext) -> tuple[Trails, list[Trail], list[Trail]]:
    """The trails, those logging KMS events, and those whose status or selectors were
    refused (they may log KMS events)."""
    seen = trails(audit)
    unknown = [t for t in seen.items if t.unavailable is not None]
    return seen, [t for t in seen.items if t.unavailable is None and t.logs_kms()], unknown


def _validation(audit: AuditContext) -> Iterator[Result]:
    seen, logging, unknown = _kms_trails(audit)
    # a trail whose status or selectors were refused matters only if its validation is off
    blind = [t for t in unknown if not t.description.get("LogFileValidationEnabled")]
    for trail in blind:
        if trail.unavailable is not None:
            yield cannot(trail.unavailable, (trail.arn,))
    if not logging and not blind:
        yield Result("not-applicable", (), _NOT_LOGGED, seen.evidence)
    on = [t for t in logging if t.description.get("LogFileValidationEnabled")]
    if on:
        yield Result("pass", tuple(t.arn for t in on), "log file validation on", seen.evidence)
    for trail in logging:
        if trail not in on:
            detail = f"{trail.name}: LogFileValidationEnabled false (no digest files)"
            yield Result("fail", (trail.arn,), detail, seen.evidence)


def _buckets(audit: AuditContext) -> Iterator[Result]:
    seen, logging, unknown = _kms_trails(audit)
    for trail in unknown:
        if trail.unavailable is not None:
            yield cannot(trail.unavailable, (trail.arn,))
    by_bucket: dict[str, list[str]] = {}
    for trail in logging:
        if trail.description.get("S3BucketName"):
            by_bucket.setdefault(str(trail.description["S3BucketName"]), []).append(trail.name)
    if not by_bucket and not unknown:
        yield Result("not-applicable", (), _NOT_LOGGED, seen.evidence)
    passed: list[tuple[str, str, str]] = []
    for bucket, names in sorted(by_bucket.items()):
        arn = f"arn:{partition(audit)}:s3:::{bucket}"
        try:
            public, why, path = _bucket(audit, bucket)
        except Unavailable as exc:
            if exc.code == "NoSuchBucket":
                yield Result("fail", (arn,), f"trail {', '.join(names)}: {_GONE}")
                continue
            detail = (
                f"{exc.detail} (trail {', '.join(names)}; a bucket of another account, as an "
                "organisation trail's often is, is reviewed with that account's credentials)"
            )
            yield Result("could-not-check", (arn,), detail, missing=exc.permission)
            continue
        if public:
            yield Result("fail", (arn,), f"trail {', '.join(names)}: {why}", (path,))
        else:
            passed.append((arn, f"{bucket}: {why}", path))
    if passed:
        detail = "; ".join(w for _, w, _ in passed)
        yield Result("pass", tuple(a for a, _, _ in passed), detail, tuple(p for *_, p in passed))


def _bucket(audit: AuditContext, bucket: str) -> tuple[bool, str, str]:
    """(public, why, evidence) of a trail's bucket. Public: its policy is public
    (``GetBucketPolicyStatus``) and ``RestrictPublicBuckets`` is off, or its ACL grants
    AllUsers or AuthenticatedUsers and ``IgnorePublicAcls`` is off. All four Block Public
    Access settings on passes whatever the policy and ACL say; no Block Public Access
    configuration is no failure by itself (said in the detail)."""
    s3 = audit.client("s3")

    def read(operation: str, missing: str | None, send: Callable[[], Any]) -> dict[str, Any] | None:
        # GetPublicAccessBlock's IAM action has another name
        permission = (
            "s3:GetBucketPublicAccessBlock" if operation == "GetPublicAccessBlock" else None
        )
        try:
            response = audit.call("s3", operation, send, what=f"on {bucket}", permission=permission)
        except Unavailable as exc:
            if exc.code == missing:  # not configured
                return None
            raise
        return strip_metadata(response)

    block = read(
        "GetPublicAccessBlock",
        "NoSuchPublicAccessBlockConfiguration",
        lambda: s3.get_public_access_block(Bucket=bucket),
    )
    settings = (block or {}).get("PublicAccessBlockConfiguration") or {}
    if all(settings.get(s) for s in _BLOCKS):
        path = audit.evidence(f"trail-buckets/{bucket}", {"PublicAccessBlock": block})
        return False, "all four Block Public Access settings on", path
    status = read(
        "GetBucketPolicyStatus",
        "NoSuchBucketPolicy",
        lambda: s3.get_bucket_policy_status(Bucket=bucket),
    )
    acl = read("GetBucketAcl", None, lambda: s3.get_bucket_acl(Bucket=bucket)) or {}
    responses = {"PublicAccessBlock": block, "PolicyStatus": status, "Acl": acl}
    path = audit.evidence(f"trail-buckets/{bucket}", responses)
    reasons = []
    policy = (status or {}).get("PolicyStatus") or {}
    if policy.get("IsPublic") and not settings.get("RestrictPublicBuckets"):
        reasons.append("its bucket policy is public and RestrictPublicBuckets is off")
    granted = {str((g.get("Grantee") or {}).get("URI")) for g in acl.get("Grants") or []}
    if granted & _PUBLIC_GROUPS and not settings.get("IgnorePublicAcls"):
        who = ", ".join(sorted(g.rsplit("/", 1)[-1] for g in granted & _PUBLIC_GROUPS))
        reasons.append(f"its ACL grants {who} and IgnorePublicAcls is off")
    if reasons:
        return True, "; ".join(reasons), path
    note = "" if block else " (no Block Public Access configuration)"
    return False, "policy and ACL not public" + note, path


RULES: tuple[Rule, ...] = (
    Rule(
        id="trail-multi-region-kms",
        practice=3,
        title="A multi-Region trail is logging KMS's read and write management events",
        severity="high",
        fix=(
            "Make a trail multi-Region and logging (aws cloudtrail update-trail --name TRAIL "
            "--is-multi-region-trail; aws cloudtrail start-logging --name TRAIL) with management "
            "events Read and Write selected and AWS KMS events not excluded."
        ),
        doc="https://docs.aws.amazon.com/kms/latest/developerguide/logging-using-cloudtrail.html",
        judge=_multi_region,
        permissions=_TRAILS,
    ),
    Rule(
        id="trail-log-validation",
        practice=3,
        title="Trails logging KMS events validate their log files",
        severity="medium",
        fix="aws cloudtrail update-trail --name TRAIL --enable-log-file-validation",
        doc=(
            "https://docs.aws.amazon.com/awscloudtrail/latest/userguide/"
            "cloudtrail-log-file-validation-intro.html"
        ),
        judge=_validation,
        permissions=_TRAILS,
    ),
    Rule(
        id="trail-bucket-not-public",
        practice=3,
        title="The S3 buckets of trails logging KMS events are not public",
        severity="high",
        fix=(
            "aws s3api put-public-access-block --bucket BUCKET --public-access-block-configuration "
            "BlockPublicAcls=true,IgnorePublicAcls=true,BlockPublicPolicy=true,"
            "RestrictPublicBuckets=true; remove public statements and AllUsers grants."
        ),
        doc=(
            "https://docs.aws.amazon.com/AmazonS3/latest/userguide/"
            "access-control-block-public-access.html"
        ),
        judge=_buckets,
        permissions=(
            *_TRAILS,
            "s3:GetBucketPublicAccessBlock",
            "s3:GetBucketPolicyStatus",
            "s3:GetBucketAcl",
        ),
    ),
    Rule(
        id="kms-change-alarms",
        practice=3,
        title="Someone is told when a key is scheduled for deletion, disabled or re-policied",
        severity="medium",
        fix=(
            'An EventBridge rule on the default bus with the pattern {"source": ["aws.kms"], '
            '"detail-type": ["AWS API Call via CloudTrail"], "detail": {"eventName": '
            '["ScheduleKeyDeletion", "DisableKey", "PutKeyPolicy"]}} and an SNS target.'
        ),
        doc="https://docs.aws.amazon.com/eventbridge/latest/ref/events-ref-kms.html",
        judge=change_alarms,
        permissions=_ALARMS,
    ),
    Rule(
        id="kms-pending-deletion-use-alarm",
        practice=3,
        title="Someone is told when a key pending deletion is still used",
        severity="low",
        fix=(
            "On the trail's CloudWatch Logs group, a metric filter "
            '{ $.eventSource = kms* && $.errorMessage = "* is pending deletion." } and an '
            "alarm on its metric (>= 1) notifying an SNS topic."
        ),
        doc=(
            "https://docs.aws.amazon.com/kms/latest/developerguide/"
            "deleting-keys-creating-cloudwatch-alarm.html"
        ),
        judge=pending_deletion_alarm,
        permissions=_ALARMS,
    ),
)

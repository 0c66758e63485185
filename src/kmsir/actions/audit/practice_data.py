"""Practices 1 and 6, judged on the account's data: what is protected by AWS managed keys,
and whether sensitive data is on customer managed keys (1); Secrets Manager rotation, and
secrets and SecureString parameters on customer managed keys (6). Practice 5 (encryption
everywhere) is ``practice_encryption``'s, exported here as ``ENCRYPTION`` with the others.

The resources come from ``listings`` (each read once a review and saved as evidence) and the
key behind each from ``data_keys.protection``. A refused listing is could-not-check for its
kind only, a refused per-item call (a bucket's encryption, a table's tags) for that item only.

A secret with rotation on is overdue when its next rotation is more than ``ROTATION_GRACE``
past due. Due is the last rotation (``LastRotatedDate``, or ``CreatedDate`` if it never
rotated) plus the period: ``RotationRules.AutomaticallyAfterDays``, which ListSecrets computes
from any schedule after each successful rotation, else the period of a ``rate()``
``ScheduleExpression``; a ``cron()`` schedule without either is judged by
``NextRotationDate``, and without that too the secret is info (nothing to judge by).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from kmsir.actions.audit.context import AuditContext, Unavailable
from kmsir.actions.audit.data_keys import AWS_MANAGED, AWS_OWNED, UNENCRYPTED
from kmsir.actions.audit.data_results import arns, each, evidence, names, refused, unknown
from kmsir.actions.audit.listings import (
    BUCKET_READS,
    TABLE_READS,
    Resource,
    buckets,
    db_instances,
    ebs_default_key,
    is_sensitive,
    parameters,
    secrets,
    sensitive_tag,
    tables,
    volumes,
)
from kmsir.actions.audit.practice_encryption import ENCRYPTION
from kmsir.actions.audit.rules import Result, Rule

__all__ = ["CUSTOMER_KEYS", "ENCRYPTION", "SECRETS"]

#: A rotation is overdue once this long past its due date (the rotation window of a day's
#: schedule closes at the end of the UTC day, RotationRulesType in the API reference).
ROTATION_GRACE = timedelta(days=1)

# -- practice 1 -----------------------------------------------------------------------------

_DATA = (
    ("S3 buckets", buckets),
    ("EBS volumes", volumes),
    ("EBS default keys", ebs_default_key),
    ("RDS instances", db_instances),
    ("DynamoDB tables", tables),
    ("Secrets Manager secrets", secrets),
    ("SecureString parameters", parameters),
)


def _aws_managed_in_use(audit: AuditContext) -> list[Result]:
    out: list[Result] = []
    customer: list[Resource] = []
    paths: list[str] = []
    for listing in each(audit, _DATA, out):
        paths.append(listing.evidence)
        for kind in (AWS_MANAGED, AWS_OWNED):
            found = [r for r in listing.resources if r.protection.kind == kind]
            keys = sorted({r.protection.key for r in found if r.protection.key})
            if found:
                out.append(
                    Result(
                        "info",
                        arns(found),
                        detail=f"{len(found)} of the {listing.what} on {kind}s"
                        + (f" ({', '.join(keys)})" if keys else "")
                        + f": {names(found)}",
                        evidence=evidence(listing, found),
                    )
                )
        out += refused(unknown(listing.resources), listing.what)
        customer += [r for r in listing.resources if r.protection.customer]
    if customer:
        detail = f"{len(customer)} resource(s) on customer managed keys"
        out.append(Result("pass", arns(customer), detail=detail, evidence=tuple(paths)))
    if not out:
        detail = f"no data on a KMS key of any kind was found in {audit.region}"
        out.append(Result("not-applicable", detail=detail))
    return out


def _sensitive_on_customer_keys(audit: AuditContext) -> list[Result]:
    if sensitive_tag(audit) is None:
        detail = "no sensitive_tag given (Key or Key=Value): nothing marks data as sensitive"
        return [Result("not-applicable", detail=detail)]
    reads = (("EBS volumes", volumes), ("RDS instances", db_instances), ("DynamoDB tables", tables))
    tag = audit.settings.sensitive_tag
    out: list[Result] = []
    good: list[Resource] = []
    paths: list[str] = []
    for listing in each(audit, reads, out):
        paths.append(listing.evidence)
        unread: list[tuple[str, Unavailable]] = []
        for r in listing.resources:
            flag = is_sensitive(audit, r)
            if r.protection.customer or flag is False:
                good += [r] if flag else []
                continue
            refusal = r.refused.get("tags") or r.refused.get("table") or r.protection.unavailable
            if flag is None or r.protection.unavailable is not None:
                unread += [(r.arn, refusal)] if refusal is not None else []
                continue
            plain = r.protection.kind == UNENCRYPTED
            how = "is not encrypted" if plain else f"is on {r.protection.words()}"
            detail = f"{r.name} ({listing.what}) is tagged {tag} but {how}"
            out.append(Result("fail", (r.arn,), detail, evidence(listing, [r])))
        out += refused(unread, listing.what)
    if good:
        detail = f"{len(good)} sensitive resource(s) on customer managed keys: {names(good)}"
        out.append(Result("pass", arns(good), detail=detail, evidence=tuple(paths)))
    if not out:
        detail = f"no EBS volume, RDS instance or DynamoDB table is tagged {tag}"
        out.append(Result("not-applicable", detail=detail))
    return out


# -- practice 6 -----------------------------------------------------------------------------


def _period(rules: dict[str, Any]) -> timedelta | None:
    """The rotation period: ``AutomaticallyAfterDays`` (ListSecrets computes it from any
    schedule after each successful rotation), else a ``rate()`` expression's; ``None`` for a
    ``cron()`` schedule."""
    days = rules.get("AutomaticallyAfterDays")
    if isinstance(days, int) and days > 0:
        return timedelta(days=days)
    rate = re.fullmatch(r"rate\((\d+) (hour|day)s?\)", str(rules.get("ScheduleExpression", "")))
    if rate is None:
        return None
    n = int(rate[1])
    return timedelta(hours=n) if rate[2] == "hour" else timedelta(days=n)


def rotation_due(secret: dict[str, Any]) -> tuple[datetime | None, str]:
    """When the next rotation is due: the last rotation (or the creation, if never rotated)
    plus the period; for a cron() schedule, ``NextRotationDate``. And how it was told."""
    rules = secret.get("RotationRules") or {}
    last = secret.get("LastRotatedDate") or secret.get("CreatedDate")
    since = "last rotated" if secret.get("LastRotatedDate") else "never rotated, created"
    period = _period(rules)
    if period is not None and isinstance(last, datetime):
        every = f"{period.days} day(s)" if period.days else f"{period.seconds // 3600} hour(s)"
        return last + period, f"every {every}, {since} {last:%Y-%m-%d}"
    schedule = str(rules.get("ScheduleExpression") or "no schedule")
    upcoming = secret.get("NextRotationDate")
    if isinstance(upcoming, datetime):
        return upcoming, f"{schedule}, next rotation {upcoming:%Y-%m-%d}"
    return None, schedule


def _secrets_rotation(audit: AuditContext) -> list[Result]:
    listing = secrets(audit)
    if not listing.resources:
        return [Result("not-applicable", detail=f"no Secrets Manager secret in {audit.region}")]
    out: list[Result] = []
    good: list[Resource] = []
    for r in listing.resources:
        if not r.facts.get("RotationEnabled"):
            out.append(
                Result("fail", (r.arn,), f"secret {r.name}: rotation is off", evidence(listing))
            )
            continue
        due, how = rotation_due(r.facts)
        if due is None:
            detail = f"secret {r.name}: rotation on ({how}); no period or next date to judge by"
            out.append(Result("info", (r.arn,), detail, evidence(listing)))
        elif audit.now > due + ROTATION_GRACE:
            detail = f"secret {r.name}: rotation overdue since {due:%Y-%m-%d} ({how})"
            out.append(Result("fail", (r.arn,), detail, evidence(listing)))
        else:
            good.append(r)
    if good:
        detail = f"{len(good)} secret(s) rotating on schedule: {names(good)}"
        out.append(Result("pass", arns(good), detail, evidence(listing)))
    return out


def _secrets_customer_keys(audit: AuditContext) -> list[Result]:
    reads = (("Secrets Manager secrets", secrets), ("SecureString parameters", parameters))
    out: list[Result] = []
    good: list[Resource] = []
    paths: list[str] = []
    for listing in each(audit, reads, out):
        paths.append(listing.evidence)
        for r in listing.resources:
            if r.protection.customer:
                good.append(r)
            elif r.protection.unavailable is None:
                detail = f"{r.name} ({listing.what}) is encrypted with {r.protection.words()}"
                out.append(Result("fail", (r.arn,), detail, evidence(listing, [r])))
        out += refused(unknown(listing.resources), listing.what)
    if good:
        detail = f"{len(good)} secret(s) and parameter(s) on customer managed keys"
        out.append(Result("pass", arns(good), detail, tuple(paths)))
    if not out:
        detail = f"no Secrets Manager secret or SecureString parameter in {audit.region}"
        out.append(Result("not-applicable", detail=detail))
    return out


# -- the rules ------------------------------------------------------------------------------

_KMS = "https://docs.aws.amazon.com/kms/latest/developerguide/"
_SECRET_READS = ("secretsmanager:ListSecrets", "ssm:DescribeParameters", "kms:DescribeKey")

CUSTOMER_KEYS: tuple[Rule, ...] = (
    Rule(
        id="aws-managed-keys-in-use",
        practice=1,
        title="The data protected by AWS managed keys (alias/aws/*) is known",
        severity="info",
        fix=(
            "Create a customer managed key (aws kms create-key) and move the data listed to it, "
            "e.g. aws secretsmanager update-secret --kms-key-id KEY, aws dynamodb update-table "
            "--sse-specification Enabled=true,SSEType=KMS,KMSMasterKeyId=KEY."
        ),
        doc=_KMS + "concepts.html#aws-managed-key",
        judge=_aws_managed_in_use,
        permissions=(
            *BUCKET_READS,
            "ec2:DescribeVolumes",
            "ec2:GetEbsDefaultKmsKeyId",
            "rds:DescribeDBInstances",
            *TABLE_READS,
            *_SECRET_READS,
        ),
    ),
    Rule(
        id="sensitive-data-on-customer-keys",
        practice=1,
        title="Sensitive EBS volumes, RDS instances and DynamoDB tables use customer managed keys",
        severity="high",
        fix=(
            "Copy the EBS or RDS snapshot with --kms-key-id KEY (a customer managed key) and "
            "restore from the copy; for a table, aws dynamodb update-table --table-name T "
            "--sse-specification Enabled=true,SSEType=KMS,KMSMasterKeyId=KEY."
        ),
        doc=_KMS + "concepts.html#customer-mgn-key",
        judge=_sensitive_on_customer_keys,
        permissions=(
            "ec2:DescribeVolumes",
            "rds:DescribeDBInstances",
            *TABLE_READS,
            "kms:DescribeKey",
        ),
    ),
)

SECRETS: tuple[Rule, ...] = (
    Rule(
        id="secrets-rotation",
        practice=6,
        title="Secrets rotate automatically, within their rotation period",
        severity="medium",
        fix=(
            "aws secretsmanager rotate-secret --secret-id S --rotation-lambda-arn FN "
            "--rotation-rules AutomaticallyAfterDays=N; for an overdue secret, read the rotation "
            "function's logs and rotate it now."
        ),
        doc="https://docs.aws.amazon.com/secretsmanager/latest/userguide/rotating-secrets.html",
        judge=_secrets_rotation,
        permissions=("secretsmanager:ListSecrets",),
    ),
    Rule(
        id="secrets-customer-keys",
        practice=6,
        title="Secrets and SecureString parameters use customer managed keys",
        severity="medium",
        fix=(
            "aws secretsmanager update-secret --secret-id S --kms-key-id KEY; for a parameter, "
            "aws ssm put-parameter --name P --type SecureString --key-id KEY --overwrite."
        ),
        doc="https://docs.aws.amazon.com/secretsmanager/latest/userguide/security-encryption.html",
        judge=_secrets_customer_keys,
        permissions=_SECRET_READS,
    ),
)

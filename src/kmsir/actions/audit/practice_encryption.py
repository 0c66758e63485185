"""Practice 5, encryption everywhere: EBS encryption by default in the Region and its default
key, every EBS volume encrypted, S3 buckets' default encryption (SSE-S3 is what S3 applies to
every bucket since January 5, 2023: the key type is reported, and only buckets tagged as
sensitive that are not on a customer managed key fail), RDS instances and snapshots encrypted
(and with which key), and DynamoDB tables' keys (always encrypted at rest: which key is info).
"""

from __future__ import annotations

from collections.abc import Iterable

from kmsir.actions.audit.context import AuditContext, Unavailable
from kmsir.actions.audit.data_keys import UNENCRYPTED, setting_arn
from kmsir.actions.audit.data_results import arns, each, evidence, names, refused, unknown
from kmsir.actions.audit.listings import (
    BUCKET_READS,
    TABLE_READS,
    Resource,
    buckets,
    db_instances,
    db_snapshots,
    ebs_default_key,
    ebs_encryption_by_default,
    is_sensitive,
    sensitive_tag,
    tables,
    volumes,
)
from kmsir.actions.audit.rules import Result, Rule


def _ebs_by_default(audit: AuditContext) -> list[Result]:
    on, path = ebs_encryption_by_default(audit)
    arn = setting_arn(audit, "ec2", "ebs-encryption-by-default")
    if on:
        return [
            Result("pass", (arn,), f"EBS encryption by default is on in {audit.region}", (path,))
        ]
    detail = (
        f"EBS encryption by default is off in {audit.region}: a new volume is unencrypted "
        "unless its creator asks for encryption"
    )
    return [Result("fail", (arn,), detail, (path,))]


def _ebs_default(audit: AuditContext) -> list[Result]:
    listing = ebs_default_key(audit)
    setting = listing.resources[0]
    key = setting.protection
    if key.unavailable is not None:
        return refused([(setting.arn, key.unavailable)], "EBS default keys")
    detail = f"EBS encryption by default uses {key.words()}"
    if not key.customer:
        detail += ": its key policy is AWS's; a customer managed key lets you decide who uses it"
    return [Result("info", (setting.arn,), detail, evidence(listing, [setting]))]


def _ebs_volumes(audit: AuditContext) -> list[Result]:
    listing = volumes(audit)
    if not listing.resources:
        return [Result("not-applicable", detail=f"no EBS volume in {audit.region}")]
    plain = [r for r in listing.resources if r.protection.kind == UNENCRYPTED]
    out = [
        Result("fail", (r.arn,), f"volume {r.name} is not encrypted", (listing.evidence,))
        for r in plain
    ]
    encrypted = [r for r in listing.resources if r.protection.kind != UNENCRYPTED]
    if encrypted:
        detail = f"{len(encrypted)} volume(s) encrypted"
        out.append(Result("pass", arns(encrypted), detail, (listing.evidence,)))
    return out


def _bucket_type(r: Resource) -> str:
    kind = str(r.facts.get("type", ""))
    if kind == "SSE-S3":
        return "SSE-S3 (Amazon S3 managed keys)"
    if r.protection.customer:
        return f"{kind} with a customer managed key"
    return f"{kind} with {r.protection.words()}"


def _s3_default_encryption(audit: AuditContext) -> list[Result]:
    listing = buckets(audit)
    if not listing.resources:
        return [Result("not-applicable", detail=f"no S3 bucket in {audit.region}")]
    groups: dict[str, list[Resource]] = {}
    for r in listing.resources:
        if r.protection.unavailable is None:
            groups.setdefault(_bucket_type(r), []).append(r)
    out: list[Result] = []
    for label, found in sorted(groups.items()):
        detail = f"{len(found)} bucket(s) default to {label}: {names(found)}"
        if defaulted := sum(1 for r in found if r.facts.get("unconfigured")):
            detail += (
                f" ({defaulted} with no configuration returned: SSE-S3 is what S3 applies "
                "to every bucket since January 5, 2023)"
            )
        out.append(Result("info", arns(found), detail, evidence(listing, found)))
    out += refused(unknown(listing.resources), "S3 buckets")
    if sensitive_tag(audit) is None:
        return out
    good: list[Resource] = []
    unread: list[tuple[str, Unavailable]] = []
    for r in listing.resources:
        flag = is_sensitive(audit, r)
        # a bucket whose key is unknown is already a could-not-check above
        if r.protection.customer or flag is False or r.protection.unavailable is not None:
            good += [r] if flag and r.protection.customer else []
        elif flag is None:
            unread += [(r.arn, r.refused["tags"])] if "tags" in r.refused else []
        else:
            tag = audit.settings.sensitive_tag
            detail = f"bucket {r.name} is tagged {tag} but defaults to {_bucket_type(r)}"
            out.append(Result("fail", (r.arn,), detail, evidence(listing, [r])))
    out += refused(unread, "S3 bucket tags")
    if good:
        detail = f"{len(good)} sensitive bucket(s) on customer managed keys: {names(good)}"
        out.append(Result("pass", arns(good), detail, evidence(listing, good)))
    return out


def _by_key(resources: Iterable[Resource]) -> dict[str, list[Resource]]:
    """Resources grouped by the kind of key (customer managed keys together)."""
    groups: dict[str, list[Resource]] = {}
    for r in resources:
        label = "customer managed keys" if r.protection.customer else r.protection.words()
        if r.protection.unavailable is not None:
            label = f"{r.protection.words()} ({r.protection.unavailable.code})"
        groups.setdefault(label, []).append(r)
    return groups


def _rds_encrypted(audit: AuditContext) -> list[Result]:
    reads = (("RDS instances", db_instances), ("RDS snapshots", db_snapshots))
    out: list[Result] = []
    encrypted: list[Resource] = []
    paths: list[str] = []
    for listing in each(audit, reads, out):
        paths.append(listing.evidence)
        for r in listing.resources:
            if r.protection.kind == UNENCRYPTED:
                detail = f"{listing.what[:-1]} {r.name} is not encrypted"
                out.append(Result("fail", (r.arn,), detail, (listing.evidence,)))
        done = [r for r in listing.resources if r.protection.kind != UNENCRYPTED]
        for label, found in sorted(_by_key(done).items()):
            detail = f"{len(found)} of the encrypted {listing.what} on {label}: {names(found)}"
            out.append(Result("info", arns(found), detail, evidence(listing, found)))
        encrypted += done
    if encrypted:
        detail = f"{len(encrypted)} RDS instance(s) and snapshot(s) encrypted"
        out.append(Result("pass", arns(encrypted), detail, tuple(paths)))
    if not out:
        detail = f"no RDS instance or snapshot in {audit.region}"
        out.append(Result("not-applicable", detail=detail))
    return out


def _dynamodb(audit: AuditContext) -> list[Result]:
    listing = tables(audit)
    if not listing.resources:
        return [Result("not-applicable", detail=f"no DynamoDB table in {audit.region}")]
    known = [r for r in listing.resources if r.protection.unavailable is None]
    out = [
        Result(
            "info",
            arns(found),
            f"{len(found)} table(s) encrypted at rest with {label}: {names(found)}",
            evidence(listing, found),
        )
        for label, found in sorted(_by_key(known).items())
    ]
    return out + refused(unknown(listing.resources), "DynamoDB tables")


ENCRYPTION: tuple[Rule, ...] = (
    Rule(
        id="ebs-encryption-by-default",
        practice=5,
        title="EBS encryption by default is on in the Region",
        severity="medium",
        fix=(
            "aws ec2 enable-ebs-encryption-by-default --region REGION (EC2 console: Settings, "
            "Data protection and security, EBS encryption, Always encrypt new EBS volumes)."
        ),
        doc="https://docs.aws.amazon.com/ebs/latest/userguide/encryption-by-default.html",
        judge=_ebs_by_default,
        permissions=("ec2:GetEbsEncryptionByDefault",),
    ),
    Rule(
        id="ebs-default-key",
        practice=5,
        title="The default key of EBS encryption is known",
        severity="low",
        fix="aws ec2 modify-ebs-default-kms-key-id --kms-key-id KEY_ARN (a customer managed key).",
        doc=(
            "https://docs.aws.amazon.com/AWSEC2/latest/APIReference/"
            "API_ModifyEbsDefaultKmsKeyId.html"
        ),
        judge=_ebs_default,
        permissions=("ec2:GetEbsDefaultKmsKeyId", "kms:DescribeKey"),
    ),
    Rule(
        id="ebs-volumes-encrypted",
        practice=5,
        title="Every EBS volume is encrypted",
        severity="high",
        fix=(
            "Snapshot the volume, aws ec2 copy-snapshot --encrypted --kms-key-id KEY, create a "
            "volume from the copy and swap it in; turn on EBS encryption by default."
        ),
        doc="https://docs.aws.amazon.com/ebs/latest/userguide/ebs-encryption.html",
        judge=_ebs_volumes,
        permissions=("ec2:DescribeVolumes",),
    ),
    Rule(
        id="s3-default-encryption",
        practice=5,
        title="Buckets' default encryption is known; sensitive buckets use customer managed keys",
        severity="high",
        fix=(
            "aws s3api put-bucket-encryption --bucket B --server-side-encryption-configuration "
            '\'{"Rules":[{"ApplyServerSideEncryptionByDefault":{"SSEAlgorithm":"aws:kms",'
            '"KMSMasterKeyID":"KEY_ARN"},"BucketKeyEnabled":true}]}\' (new objects; copy the '
            "existing ones to re-encrypt them)."
        ),
        doc=(
            "https://docs.aws.amazon.com/AmazonS3/latest/userguide/UsingServerSideEncryption.html"
        ),
        judge=_s3_default_encryption,
        permissions=(*BUCKET_READS, "kms:DescribeKey"),
    ),
    Rule(
        id="rds-encrypted",
        practice=5,
        title="RDS instances and snapshots are encrypted",
        severity="high",
        fix=(
            "An instance cannot be encrypted in place: snapshot it, aws rds copy-db-snapshot "
            "--kms-key-id KEY, restore from the encrypted copy and switch over."
        ),
        doc="https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/Overview.Encryption.html",
        judge=_rds_encrypted,
        permissions=("rds:DescribeDBInstances", "rds:DescribeDBSnapshots", "kms:DescribeKey"),
    ),
    Rule(
        id="dynamodb-encryption",
        practice=5,
        title="The key encrypting each DynamoDB table at rest is known",
        severity="info",
        fix=(
            "For a table holding sensitive data: aws dynamodb update-table --table-name T "
            "--sse-specification Enabled=true,SSEType=KMS,KMSMasterKeyId=KEY."
        ),
        doc="https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/EncryptionAtRest.html",
        judge=_dynamodb,
        permissions=(*TABLE_READS, "kms:DescribeKey"),
    ),
)

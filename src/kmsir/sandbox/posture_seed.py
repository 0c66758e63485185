"""The account configuration a posture review judges, seeded in moto as AWS would hold it:
IAM roles and customer-managed policies, CloudTrail trails with their buckets, EventBridge
rules, EBS encryption by default, a key made by a CloudFormation stack, and a secret's
rotation record. And ``planted``: a scenario's planted problems with the ARNs the sandbox
gave what they name, for comparing a review with what the world holds.

Where moto falls short of AWS, the seeding makes up the difference, each said where it is
done: the rotation Lambda function of a secret (moto would invoke it), CloudFormation's
stack tags on the key it creates and the rotation period it sets, and a key policy given as a
template object.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from kmsir.playbook.values import duration_seconds
from kmsir.sandbox.resource_model import (
    ALARM_SETTING,
    EbsDefaultSpec,
    EventRuleSpec,
    IamPolicySpec,
    IamRoleSpec,
    ResourceSpec,
    StackSpec,
    TrailSpec,
)

if TYPE_CHECKING:
    from kmsir.sandbox.resources import World

#: The logical id of a stack's key in the template the sandbox gives CloudFormation.
STACK_KEY = "Key"


def create(session: Any, world: World, spec: Any) -> str:
    """Create one configuration resource; the ARN AWS gives it (for an EBS setting, the
    account-level ARN a review names it by; for a stack, its key's)."""
    if isinstance(spec, IamRoleSpec):
        return _role(session, spec, world)
    if isinstance(spec, IamPolicySpec):
        iam = session.client("iam")
        document = json.dumps(world.render(spec.document))
        arn = str(iam.create_policy(PolicyName=spec.name, PolicyDocument=document)["Policy"]["Arn"])
        for role in spec.roles:
            iam.attach_role_policy(RoleName=role, PolicyArn=arn)
        return arn
    if isinstance(spec, TrailSpec):
        return _trail(session, world, spec)
    if isinstance(spec, EventRuleSpec):
        return _rule(session, world, spec)
    if isinstance(spec, EbsDefaultSpec):
        return _ebs_default(session, world, spec)
    if isinstance(spec, StackSpec):
        return _stack(session, world, spec)
    raise TypeError(f"not a configuration resource: {type(spec).__name__}")


def _partition(world: World) -> str:
    from kmsir.sandbox.resources import partition

    return partition(world.region)


def _role(session: Any, spec: IamRoleSpec, world: World) -> str:
    iam = session.client("iam")
    principal = (
        {"Service": spec.assumed_by}
        if spec.assumed_by.endswith(".amazonaws.com")
        else {"AWS": spec.assumed_by}
    )
    trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}],
    }
    tags = [{"Key": k, "Value": v} for k, v in spec.tags.items()]
    role = iam.create_role(
        RoleName=spec.name,
        AssumeRolePolicyDocument=json.dumps(trust),
        **({"Tags": tags} if tags else {}),
    )["Role"]
    for name, document in spec.inline.items():
        iam.put_role_policy(
            RoleName=spec.name, PolicyName=name, PolicyDocument=json.dumps(world.render(document))
        )
    return str(role["Arn"])


def sandbox_trail(session: Any, world: World, name: str, bucket: str) -> str | None:
    """The sandbox's own trail ``name`` (multi-Region, logging, log file validation on),
    delivering to its existing trail ``bucket``, unless the scenario declares trails of its
    own (``None``: those stand, as the scenario has them)."""
    if any(isinstance(spec, TrailSpec) for spec in world.scenario.resources):
        return None
    spec = TrailSpec(kind="trail", name=name, bucket=bucket)
    return _trail(session, world, spec, bucket_exists=True)


def _trail(session: Any, world: World, spec: TrailSpec, *, bucket_exists: bool = False) -> str:
    """The trail's bucket (AWS's CloudTrail bucket policy; public access blocked, or open to
    anyone), then the trail, its event selectors and whether it logs."""
    s3 = session.client("s3")
    bucket = spec.bucket or f"aws-cloudtrail-logs-{world.account}-{spec.name.lower()}"[:63]
    region, account = world.region, world.account
    trail_arn = f"arn:{_partition(world)}:cloudtrail:{region}:{account}:trail/{spec.name}"
    location = {} if region == "us-east-1" else {"LocationConstraint": region}
    if not bucket_exists:
        config = {"CreateBucketConfiguration": location} if location else {}
        s3.create_bucket(Bucket=bucket, **config)
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )
    service = {"Service": "cloudtrail.amazonaws.com"}
    source = {"aws:SourceArn": trail_arn}
    bucket_arn = f"arn:{_partition(world)}:s3:::{bucket}"
    statements: list[dict[str, Any]] = [
        {
            "Sid": "AWSCloudTrailAclCheck",
            "Effect": "Allow",
            "Principal": service,
            "Action": "s3:GetBucketAcl",
            "Resource": bucket_arn,
            "Condition": {"StringEquals": source},
        },
        {
            "Sid": "AWSCloudTrailWrite",
            "Effect": "Allow",
            "Principal": service,
            "Action": "s3:PutObject",
            "Resource": f"{bucket_arn}/AWSLogs/{account}/*",
            "Condition": {"StringEquals": {"s3:x-amz-acl": "bucket-owner-full-control", **source}},
        },
    ]
    if spec.public_bucket:
        statements.append(
            {
                "Sid": "PublicRead",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"{bucket_arn}/*",
            }
        )
    else:
        flags = (
            "BlockPublicAcls",
            "IgnorePublicAcls",
            "BlockPublicPolicy",
            "RestrictPublicBuckets",
        )
        s3.put_public_access_block(
            Bucket=bucket, PublicAccessBlockConfiguration=dict.fromkeys(flags, True)
        )
    policy = {"Version": "2012-10-17", "Statement": statements}
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    cloudtrail = session.client("cloudtrail")
    created = cloudtrail.create_trail(
        Name=spec.name,
        S3BucketName=bucket,
        IsMultiRegionTrail=spec.multi_region,
        EnableLogFileValidation=spec.log_file_validation,
        IncludeGlobalServiceEvents=True,
    )
    selector: dict[str, Any] = {"ReadWriteType": "All", "IncludeManagementEvents": True}
    if spec.exclude_kms:
        selector["ExcludeManagementEventSources"] = ["kms.amazonaws.com"]
    cloudtrail.put_event_selectors(TrailName=spec.name, EventSelectors=[selector])
    if spec.logging:
        cloudtrail.start_logging(Name=spec.name)
    return str(created["TrailARN"])


def _rule(session: Any, world: World, spec: EventRuleSpec) -> str:
    events = session.client("events")
    arn = events.put_rule(
        Name=spec.name,
        EventPattern=json.dumps(world.render(spec.pattern)),
        State="ENABLED" if spec.enabled else "DISABLED",
    )["RuleArn"]
    if spec.topic is not None:
        topic = session.client("sns").create_topic(Name=spec.topic)["TopicArn"]
        events.put_targets(Rule=spec.name, Targets=[{"Id": spec.topic, "Arn": topic}])
    return str(arn)


def _ebs_default(session: Any, world: World, spec: EbsDefaultSpec) -> str:
    ec2 = session.client("ec2")
    if spec.enabled:
        ec2.enable_ebs_encryption_by_default()
    else:
        ec2.disable_ebs_encryption_by_default()
    if spec.key is not None:
        ec2.modify_ebs_default_kms_key_id(KmsKeyId=world.keys[spec.key]["arn"])
    return f"arn:{_partition(world)}:ec2:{world.region}:{world.account}:ebs-encryption-by-default"


def _stack(session: Any, world: World, spec: StackSpec) -> str:
    """A stack holding one key (and its alias), as CloudFormation leaves it: the stack's tags
    and CloudFormation's ``aws:cloudformation:*`` tags on the key (moto puts them on EC2
    resources only), its rotation period (moto ignores ``RotationPeriodInDays``), and its policy
    kept as JSON (moto keeps the template's object, which its DescribeKey cannot read)."""
    from moto.kms.models import kms_backends

    account, region = world.account, world.region
    policy = world.render(spec.policy) if spec.policy is not None else _default_policy(world)
    properties: dict[str, Any] = {
        "Description": spec.description,
        "EnableKeyRotation": spec.rotation,
        "KeyPolicy": policy,
    }
    if spec.rotation_period_days:
        properties["RotationPeriodInDays"] = spec.rotation_period_days
    resources: dict[str, Any] = {STACK_KEY: {"Type": "AWS::KMS::Key", "Properties": properties}}
    if spec.alias:
        resources[f"{STACK_KEY}Alias"] = {
            "Type": "AWS::KMS::Alias",
            "Properties": {"AliasName": spec.alias, "TargetKeyId": {"Ref": STACK_KEY}},
        }
    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": spec.description or f"KMS key {spec.alias or spec.name}",
        "Resources": resources,
        "Outputs": {"KeyArn": {"Value": {"Fn::GetAtt": [STACK_KEY, "Arn"]}}},
    }
    cloudformation = session.client("cloudformation")
    stack_tags = [{"Key": k, "Value": v} for k, v in spec.tags.items()]
    stack_id = cloudformation.create_stack(
        StackName=spec.name,
        TemplateBody=json.dumps(template),
        **({"Tags": stack_tags} if stack_tags else {}),
    )["StackId"]
    key_id = str(
        cloudformation.describe_stack_resource(StackName=spec.name, LogicalResourceId=STACK_KEY)[
            "StackResourceDetail"
        ]["PhysicalResourceId"]
    )
    backend = kms_backends[account][region]
    key = backend.keys[key_id]
    if not isinstance(key.policy, str):
        key.policy = json.dumps(key.policy)
    cfn_tags = {
        **spec.tags,
        "aws:cloudformation:stack-name": spec.name,
        "aws:cloudformation:stack-id": str(stack_id),
        "aws:cloudformation:logical-id": STACK_KEY,
    }
    backend.tagger.tag_resource(key_id, [{"TagKey": k, "TagValue": v} for k, v in cfn_tags.items()])
    if spec.rotation:
        period = spec.rotation_period_days
        session.client("kms").enable_key_rotation(
            KeyId=key_id, **({"RotationPeriodInDays": period} if period else {})
        )
    return str(key.arn)


def _default_policy(world: World) -> dict[str, Any]:
    """AWS's default key policy: the account's IAM policies decide."""
    return {
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [
            {
                "Sid": "Enable IAM User Permissions",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:{_partition(world)}:iam::{world.account}:root"},
                "Action": "kms:*",
                "Resource": "*",
            }
        ],
    }


def rotated_secret(world: World, spec: ResourceSpec) -> None:
    """Record a secret's rotation as its rotation function left it: on, every
    ``rotation_days``, last done ``last_rotated`` ago (default: as the period began). AWS
    needs a rotation Lambda function, which moto would invoke: the record is written in
    moto's store instead, as ``Sandbox._backdate_grant`` backdates a grant."""
    from moto.secretsmanager.models import secretsmanager_backends

    assert spec.rotation_days is not None
    period = timedelta(days=spec.rotation_days)
    ago = timedelta(seconds=duration_seconds((spec.last_rotated or "0s").removeprefix("-")))
    last = world.now - ago
    secret: Any = secretsmanager_backends[world.account][world.region].secrets[spec.name]
    function = spec.name.replace("/", "-")[:40]
    secret.rotation_requested = True
    secret.rotation_enabled = True
    secret.rotation_lambda_arn = (
        f"arn:{_partition(world)}:lambda:{world.region}:{world.account}:function:rotate-{function}"
    )
    secret.auto_rotate_after_days = spec.rotation_days
    secret.created_date = int((last - period).timestamp())
    secret.last_changed_date = int(last.timestamp())
    secret.last_rotation_date = int(last.timestamp())
    secret.next_rotation_date = int((last + period).timestamp())


# -- planted problems --------------------------------------------------------------------


@dataclass(frozen=True)
class Plant:
    """A planted problem, resolved: check ``check`` should fail on ``arn`` (``None``: on the
    account as a whole, whatever it names). A grant has no ARN: its key's, and ``grant_id``.
    ``derived``: ARN prefixes of what AWS makes of the resource and that shares its problem
    (an RDS instance's automated snapshots, named by the time AWS took them)."""

    check: str
    name: str | None
    arn: str | None
    grant_id: str | None = None
    note: str = ""
    derived: tuple[str, ...] = ()

    def covers(self, check: str, resource: str) -> bool:
        """Whether a review's failure of ``check`` on ``resource`` is this planted problem."""
        if check != self.check:
            return False
        if self.arn is None or resource == self.arn:
            return True
        if any(resource.startswith(prefix) for prefix in self.derived):
            return True
        # a grant, named by its key and its id
        if self.grant_id is not None:
            return resource.startswith(self.arn) and self.grant_id in resource
        return False


def planted(world: Any) -> list[Plant]:
    """The scenario's ``planted`` problems with the ARNs the seeded ``world`` (a ``Sandbox``)
    gave what they name."""
    kinds = {r.name: r.kind for r in world.scenario.resources}
    found = []
    for spec in world.scenario.planted:
        arn, grant_id = None, None
        derived: tuple[str, ...] = ()
        if spec.resource is not None:
            name, _, inline = spec.resource.partition("#")
            if name.startswith(ALARM_SETTING):  # the review names settings like ARNs
                arn = f"arn:{_partition(world)}:kms:{world.region}:{world.account}:{name}"
            elif name in world.keys:
                arn = str(world.keys[name]["arn"])
            elif name in world.grants:
                grant = world.grants[name]
                arn = next(str(k["arn"]) for k in world.keys.values() if k["id"] == grant["key"])
                grant_id = str(grant["id"])
            else:
                arn = str(world.resources[name])
            if inline:
                arn += f"#{inline}"
            if kinds.get(name) == "rds-instance":  # AWS backs it up daily, in its own image
                derived = (arn.replace(":db:", ":snapshot:rds:", 1) + "-",)
        found.append(Plant(spec.check, spec.resource, arn, grant_id, spec.note, derived))
    return found


def compare(
    plants: list[Plant], failures: Iterable[tuple[str, str]]
) -> tuple[list[Plant], list[tuple[str, str]]]:
    """The planted problems no failure reports, and the failures (check id, resource) no
    planted problem explains: both empty when a review found exactly what was planted."""
    failures = list(failures)
    missed = [p for p in plants if not any(p.covers(c, r) for c, r in failures)]
    unplanted = [(c, r) for c, r in failures if not any(p.covers(c, r) for p in plants)]
    return missed, unplanted

"""The records of a scenario's ``resources:`` and ``planted:`` (``scenario_model`` holds the rest).

A resource is one of the kinds below, told apart by ``kind``: data encrypted with one of the
scenario's keys or with AWS's default (buckets, volumes, snapshots, secrets, parameters,
tables, databases), and the account's configuration a posture review judges (IAM roles and
policies, trails, EventBridge rules, EBS encryption by default, a CloudFormation stack holding
a key). ``sandbox.resources`` and ``sandbox.posture_seed`` create them in moto.

``planted:`` lists the problems a review scenario plants on purpose: a check id and the
scenario's name of what it fails on, so a test (or a tabletop) compares what the review
reports with what the world holds.

Every field added after the first scenarios shipped is left out of the dump when it is at its
default: the fingerprint of a scenario that does not use it stays what it was, and a recorded
sandbox run of it still resumes.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from kmsir.playbook.values import duration_seconds


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _drop_defaults(data: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the fields (of ``defaults``) that hold their default value."""
    for name, default in defaults.items():
        if name in data and data[name] == default:
            del data[name]
    return data


def _relative(value: str) -> str:
    """A duration before now (``-95d`` or ``95d``), checked."""
    duration_seconds(value.removeprefix("-"))
    return value


def _tags(value: dict[str, str]) -> dict[str, str]:
    """Tags as AWS takes them: keys of 1-128 characters, not in AWS's ``aws:`` namespace."""
    for key, tag in value.items():
        if not 1 <= len(key) <= 128 or len(tag) > 256:
            raise ValueError(f"tag {key[:40]!r}: keys have 1-128 characters, values up to 256")
        if key.lower().startswith("aws:"):
            raise ValueError(f"tag {key[:40]!r}: the aws: prefix is reserved for AWS")
    return value


Tags = Annotated[dict[str, str], AfterValidator(_tags), Field(max_length=50)]


#: The kinds of resource that hold data, encrypted with one of the scenario's keys or AWS's
#: default (``sandbox.resources``).
DataKind = Literal[
    "s3-bucket",
    "ebs-volume",
    "ebs-snapshot",
    "secret",
    "ssm-parameter",
    "dynamodb-table",
    "rds-instance",
    "rds-snapshot",
]
#: The kinds that may be unencrypted (``encrypted: false``): AWS encrypts the others always.
UNENCRYPTABLE = ("ebs-volume", "rds-instance")


class ResourceSpec(_Model):
    """A resource encrypted with one of the scenario's keys (``key``), or with AWS's default
    (no ``key``): what a blast radius finds by listing, used lately or not at all.

    ``name``: the bucket, secret, parameter, table or DB instance name, or the description
    of an EBS volume or snapshot (their ids are moto's); ``key_reference``: how the resource
    names the key (``id``, ``arn`` or ``alias``), as AWS keeps whatever it was given.
    ``tags`` (a sensitive-data tag, an owner); ``encrypted: false`` for an EBS volume or RDS
    instance created unencrypted; for a secret, ``rotation_days`` (rotation on, every so many
    days) and ``last_rotated`` (how long ago it last rotated: older than the period when the
    rotation function has been failing).
    """

    kind: DataKind
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9/_.:+=@ -]+$")
    key: str | None = None
    key_reference: Literal["id", "arn", "alias"] = "arn"
    tags: Tags = Field(default_factory=dict)
    encrypted: bool = True
    rotation_days: int | None = Field(default=None, ge=1, le=1000)
    last_rotated: Annotated[str, AfterValidator(_relative)] | None = None

    @model_validator(mode="after")
    def _fits_kind(self) -> ResourceSpec:
        if not self.encrypted:
            if self.kind not in UNENCRYPTABLE:
                raise ValueError(
                    f"encrypted: false: AWS encrypts every {self.kind} (only "
                    f"{' and '.join(UNENCRYPTABLE)} may be unencrypted)"
                )
            if self.key is not None:
                raise ValueError("encrypted: false with a key: an unencrypted resource has none")
        if self.kind != "secret" and (self.rotation_days or self.last_rotated):
            raise ValueError("rotation_days and last_rotated are a secret's")
        if self.last_rotated is not None and self.rotation_days is None:
            raise ValueError("last_rotated needs rotation_days (the rotation it belongs to)")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        defaults = {"tags": {}, "encrypted": True, "rotation_days": None, "last_rotated": None}
        return _drop_defaults(handler(self), defaults)


class IamRoleSpec(_Model):
    """An IAM role (``name``) trusting ``assumed_by`` (a service principal such as
    ``ecs-tasks.amazonaws.com``, or an ARN), with ``inline`` policies (name -> document, a
    template over the world): a key policy's principals exist, and inline policies are
    reviewed like customer-managed ones."""

    kind: Literal["iam-role"]
    name: str = Field(pattern=r"^[\w+=,.@-]{1,64}$")
    assumed_by: str = Field(default="ec2.amazonaws.com", min_length=1, max_length=2048)
    inline: dict[Annotated[str, Field(pattern=r"^[\w+=,.@-]{1,128}$")], dict[str, Any]] = Field(
        default_factory=dict, max_length=20
    )
    tags: Tags = Field(default_factory=dict)


class IamPolicySpec(_Model):
    """A customer-managed IAM policy (``document``, a template over the world), attached to
    the ``roles`` named (iam-role resources listed before it)."""

    kind: Literal["iam-policy"]
    name: str = Field(pattern=r"^[\w+=,.@-]{1,128}$")
    document: dict[str, Any]
    roles: list[str] = Field(default_factory=list, max_length=20)


class TrailSpec(_Model):
    """A CloudTrail trail and the S3 bucket it delivers to (``bucket``, default
    ``aws-cloudtrail-logs-<account>-<name>``), with AWS's CloudTrail bucket policy.

    ``multi_region``, ``log_file_validation``, ``logging`` (started or stopped); ``exclude_kms``
    drops KMS's management events (``ExcludeManagementEventSources``, to cut cost: the
    trail then records no KMS call); ``public_bucket`` lets anyone read the logs (a bucket
    policy granting ``*``, no public access block) instead of blocking public access.
    """

    kind: Literal["trail"]
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{2,127}$")
    multi_region: bool = True
    log_file_validation: bool = True
    exclude_kms: bool = False
    logging: bool = True
    bucket: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    public_bucket: bool = False


class EventRuleSpec(_Model):
    """An EventBridge rule on the default bus matching ``pattern`` (a template over the world),
    sending to the SNS topic ``topic`` (created if need be; ``None``: no target)."""

    kind: Literal["event-rule"]
    name: str = Field(pattern=r"^[.\-_A-Za-z0-9]{1,64}$")
    pattern: dict[str, Any] = Field(min_length=1)
    enabled: bool = True
    topic: str | None = Field(default="security-alerts", pattern=r"^[A-Za-z0-9_-]{1,256}$")


class EbsDefaultSpec(_Model):
    """The Region's EBS encryption by default (``enabled``) and its default KMS key (``key``,
    one of the scenario's keys; none: AWS's ``alias/aws/ebs``). Seeded in list order: a volume
    listed before it was created before the setting changed."""

    kind: Literal["ebs-encryption-default"]
    name: str = Field(default="ebs-encryption-by-default", pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    enabled: bool
    key: str | None = None


class StackSpec(_Model):
    """A CloudFormation stack (``name``) holding one KMS key (logical id ``Key``) and its
    alias: a key managed as code. ``policy`` (a template over the world; default: AWS's
    default key policy), rotation (``rotation``, ``rotation_period_days``) and ``tags`` (the
    stack's, which CloudFormation propagates to the key with its own ``aws:cloudformation:*``
    tags). The scenario's name of the stack stands for its key."""

    kind: Literal["cloudformation-stack"]
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9-]{0,127}$")
    description: str = Field(default="", max_length=8192)
    alias: str | None = Field(default=None, pattern=r"^alias/[A-Za-z0-9/_-]{1,250}$")
    rotation: bool = True
    rotation_period_days: int | None = Field(default=None, ge=90, le=2560)
    policy: dict[str, Any] | None = None
    tags: Tags = Field(default_factory=dict)

    @model_validator(mode="after")
    def _period(self) -> StackSpec:
        if self.rotation_period_days is not None and not self.rotation:
            raise ValueError("rotation_period_days needs rotation: true")
        return self


#: Any resource of a scenario, by ``kind``.
Resource = Annotated[
    ResourceSpec
    | IamRoleSpec
    | IamPolicySpec
    | TrailSpec
    | EventRuleSpec
    | EbsDefaultSpec
    | StackSpec,
    Field(discriminator="kind"),
]


def templates(resource: Resource) -> list[tuple[tuple[Any, ...], Any]]:
    """The fields of ``resource`` the sandbox renders as templates over the seeded world,
    each with its path below the resource (for checking them when the scenario loads)."""
    if isinstance(resource, IamRoleSpec):
        return [(("inline", name), doc) for name, doc in resource.inline.items()]
    if isinstance(resource, IamPolicySpec):
        return [(("document",), resource.document)]
    if isinstance(resource, EventRuleSpec):
        return [(("pattern",), resource.pattern)]
    if isinstance(resource, StackSpec) and resource.policy is not None:
        return [(("policy",), resource.policy)]
    return []


class PlantedSpec(_Model):
    """A problem the scenario plants: review check ``check`` fails on ``resource``.

    ``resource``: the scenario's name of a key, grant or resource, with ``#policy/NAME`` for
    an inline policy of an iam-role resource; none for what the account lacks as a whole (no
    alarm, no multi-Region trail: the check fails whatever it names). ``note``: what is wrong,
    one line for the people in the exercise.
    """

    check: str = Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$", max_length=100)
    resource: str | None = Field(default=None, min_length=1, max_length=300)
    note: str = Field(default="", max_length=300)

    @field_validator("note")
    @classmethod
    def _one_line(cls, value: str) -> str:
        value = value.strip()
        if "\n" in value:
            raise ValueError("note: one line (use a folded block, >-, for long text)")
        return value


#: A planted problem on the account's alarms names the setting the review judges:
#: ``alarm-on/<event>`` (the three changes it watches, and the use of a key pending deletion).
ALARM_SETTING = "alarm-on/"
ALARMED = ("ScheduleKeyDeletion", "DisableKey", "PutKeyPolicy", "pending-deletion-use")


def planted_problem(
    reference: str, keys: Collection[str], grants: Collection[str], resources: Sequence[Resource]
) -> str:
    """Why ``reference`` (a ``planted`` entry's resource) names nothing of a scenario with
    these keys, grants and resources, or ``""``: exactly one key, grant or resource, with
    ``#policy/NAME`` only for an inline policy of an iam-role resource."""
    if reference.startswith(ALARM_SETTING):
        watched = reference.removeprefix(ALARM_SETTING)
        if watched in ALARMED:
            return ""
        return f"{reference!r}: an alarm setting is alarm-on/ and one of {', '.join(ALARMED)}"
    name, _, inline = reference.partition("#")
    found = [
        *(["key"] if name in keys else []),
        *(["grant"] if name in grants else []),
        *[r.kind for r in resources if r.name == name],
    ]
    if not found:
        return f"{name!r} is no key, grant or resource of the scenario"
    if len(found) > 1:
        return f"{name!r} names several things ({', '.join(found)}): rename one"
    if inline:
        role = next((r for r in resources if r.name == name), None)
        policy = inline.removeprefix("policy/")
        if not isinstance(role, IamRoleSpec) or not inline.startswith("policy/"):
            return f"{reference!r}: only an iam-role resource has #policy/NAME (inline policies)"
        if policy not in role.inline:
            return f"{reference!r}: role {name} has no inline policy {policy!r}"
    return ""

"""The scenario model: frozen pydantic records of what a scenario file holds.

A ``Scenario`` names keys, grants, IAM users with access keys, identities, a CloudTrail history
with times relative to now, the playbook it exercises, its inputs, the scripted answers of its
demo, and injects: what the attacker does in the sandbox after a given step of the playbook;
its resources and the problems it plants are ``resource_model``'s records. Each record checks
its own fields (patterns, ranges, durations, Region names); what spans records (references
between them, templates, the playbook's steps) is checked when the scenario loads
(``scenario_checks``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from kmsir.playbook import yamlsafe
from kmsir.playbook.values import duration_seconds, is_region
from kmsir.sandbox.resource_model import (
    IamPolicySpec,
    IamRoleSpec,
    PlantedSpec,
    Resource,
    ResourceSpec,
    planted_problem,
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _region_name(value: str) -> str:
    if not is_region(value):
        raise ValueError(f"{yamlsafe.shorten(value)} is not an AWS Region name like us-east-1")
    return value


#: Key specs a scenario may create, with the key usages AWS allows each (the first: the
#: default). SM2 is offered in China Regions only; ML-DSA, moto cannot create.
KEY_USAGES: dict[str, tuple[str, ...]] = {
    "SYMMETRIC_DEFAULT": ("ENCRYPT_DECRYPT",),
    **{f"RSA_{bits}": ("ENCRYPT_DECRYPT", "SIGN_VERIFY") for bits in (2048, 3072, 4096)},
    **{spec: ("SIGN_VERIFY",) for spec in ("ECC_NIST_P256", "ECC_NIST_P384", "ECC_NIST_P521")},
    "ECC_SECG_P256K1": ("SIGN_VERIFY",),
    **{f"HMAC_{bits}": ("GENERATE_VERIFY_MAC",) for bits in (224, 256, 384, 512)},
}
KeySpecName = Literal[
    "SYMMETRIC_DEFAULT",
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "ECC_NIST_P256",
    "ECC_NIST_P384",
    "ECC_NIST_P521",
    "ECC_SECG_P256K1",
    "HMAC_224",
    "HMAC_256",
    "HMAC_384",
    "HMAC_512",
]


class KeySpec(_Model):
    """A customer-managed key to create."""

    description: str = ""
    alias: str | None = Field(default=None, pattern=r"^alias/[A-Za-z0-9/_-]{1,250}$")
    tags: dict[str, str] = Field(default_factory=dict)
    rotation: bool = False
    #: The rotation period (EnableKeyRotation's RotationPeriodInDays, 90-2560; default: AWS's
    #: 365 days).
    rotation_period_days: int | None = Field(default=None, ge=90, le=2560)
    #: The key spec (CreateKey's KeySpec) and usage (default: the spec's first in
    #: ``KEY_USAGES``): an asymmetric or HMAC key, which cannot rotate automatically.
    spec: KeySpecName = "SYMMETRIC_DEFAULT"
    usage: Literal["ENCRYPT_DECRYPT", "SIGN_VERIFY", "GENERATE_VERIFY_MAC"] | None = None
    #: Where the key material comes from: KMS, or imported (``EXTERNAL``: CreateKey with
    #: Origin EXTERNAL; moto keeps no imported material, and shows the key Enabled).
    origin: Literal["AWS_KMS", "EXTERNAL"] = "AWS_KMS"
    enabled: bool = True
    #: Scheduled for deletion when the scenario starts, with this waiting period (7-30 days).
    pending_deletion_days: int | None = Field(default=None, ge=7, le=30)
    #: The key policy at the start (a template over the world, like the history); default:
    #: AWS's default policy.
    policy: dict[str, Any] | None = None
    #: A multi-Region primary key (CreateKey with MultiRegion; its id starts ``mrk-``).
    multi_region: bool = False
    #: Regions to replicate the multi-Region key into (ReplicateKey, once the key exists, its
    #: alias and rotation set): each replica has the same key id, its own ARN, the default key
    #: policy, no alias, no grant, and is Enabled.
    replicas: list[Annotated[str, AfterValidator(_region_name)]] = Field(
        default_factory=list, max_length=30
    )

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Without the multi-Region fields when unused: the fingerprint of a scenario that has
        none stays what it was before they existed (a recorded sandbox run still resumes)."""
        data: dict[str, Any] = handler(self)
        if not self.multi_region and not self.replicas:
            del data["multi_region"], data["replicas"]
        # so are the spec, usage, origin and rotation period (added since)
        defaults = {
            "rotation_period_days": None,
            "spec": "SYMMETRIC_DEFAULT",
            "usage": None,
            "origin": "AWS_KMS",
        }
        return {k: v for k, v in data.items() if k not in defaults or v != defaults[k]}

    @model_validator(mode="after")
    def _fits(self) -> KeySpec:
        usages = KEY_USAGES[self.spec]
        if self.usage is not None and self.usage not in usages:
            raise ValueError(f"usage {self.usage}: a {self.spec} key is for {' or '.join(usages)}")
        if self.rotation_period_days is not None and not self.rotation:
            raise ValueError("rotation_period_days needs rotation: true")
        if self.rotation and (self.spec != "SYMMETRIC_DEFAULT" or self.origin != "AWS_KMS"):
            raise ValueError(
                "rotation: AWS rotates only symmetric encryption keys with key material "
                "from KMS (rotate the others manually)"
            )
        return self

    @property
    def key_usage(self) -> str:
        """The key usage CreateKey is given."""
        return self.usage or KEY_USAGES[self.spec][0]


class GrantSpec(_Model):
    """A grant to create on one of the scenario's keys; ``constraints`` as CreateGrant takes
    them (an encryption context the grant's operations must carry)."""

    key: str
    name: str
    grantee: str
    operations: list[str] = Field(min_length=1)
    created: str | None = None
    constraints: (
        dict[Literal["EncryptionContextSubset", "EncryptionContextEquals"], dict[str, str]] | None
    ) = None

    @field_validator("created")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        if value is not None:
            duration_seconds(value.removeprefix("-"))
        return value

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Without ``constraints`` when there are none: the fingerprint of a scenario without
        them stays what it was before they existed (a recorded sandbox run still resumes)."""
        data: dict[str, Any] = handler(self)
        if self.constraints is None:
            del data["constraints"]
        return data


class UserSpec(_Model):
    """An IAM user to create, with its access keys (AWS allows two a user)."""

    name: str = Field(pattern=r"^[\w+=,.@-]{1,64}$")
    access_keys: int = Field(default=1, ge=0, le=2)
    tags: dict[str, str] = Field(default_factory=dict)


class IdentitySpec(_Model):
    """Who appears in the CloudTrail history.

    ``user`` names one of the scenario's IAM users (``type: IAMUser``): the events then carry
    that user's name, ARN and first access key, as the sandbox created them.
    """

    type: Literal["AssumedRole", "IAMUser", "Root", "AWSService"] = "AssumedRole"
    account: str | None = None
    name: str | None = None
    user: str | None = None
    session: str | None = None
    access_key_id: str | None = None

    @model_validator(mode="after")
    def _named(self) -> IdentitySpec:
        if self.user is not None and self.type != "IAMUser":
            raise ValueError("user: only an IAMUser identity is one of the scenario's users")
        if self.user is None and not self.name:
            raise ValueError("name is required (or, for an IAMUser, user: one of users)")
        return self


class EventSpec(_Model):
    """One (or ``count``) CloudTrail events, ``at`` a duration before now (``-2d``)."""

    at: str
    event: str
    identity: str
    key: str | None = None
    source_ip: str = "198.51.100.10"
    user_agent: str = "aws-cli/2.17.0 Python/3.11.8 Linux/6.1 exe/x86_64"
    request: dict[str, Any] = Field(default_factory=dict)
    response: dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None
    count: int = Field(default=1, ge=1, le=100_000)
    every: str = "1m"
    read_only: bool | None = None

    @field_validator("at")
    @classmethod
    def _relative(cls, value: str) -> str:
        duration_seconds(value.removeprefix("-"))
        return value

    @field_validator("every")
    @classmethod
    def _every(cls, value: str) -> str:
        duration_seconds(value)
        return value


class InjectEventSpec(EventSpec):
    """A CloudTrail event an inject adds, ``at`` a duration before the inject (default: then)."""

    at: str = "0s"


class _KeyCall(_Model):
    key: str


class ScheduleDeletionCall(_KeyCall):
    """``ScheduleKeyDeletion`` on a scenario key."""

    call: Literal["ScheduleKeyDeletion"]
    pending_window_days: int = Field(default=30, ge=7, le=30)


class KeyStateCall(_KeyCall):
    """``DisableKey``, ``EnableKey`` or ``CancelKeyDeletion`` on a scenario key."""

    call: Literal["DisableKey", "EnableKey", "CancelKeyDeletion"]


class CreateGrantCall(_KeyCall):
    """``CreateGrant`` on a scenario key (``grantee`` is a template over the world)."""

    call: Literal["CreateGrant"]
    grantee: str
    operations: list[str] = Field(min_length=1)
    name: str | None = None


class PutKeyPolicyCall(_KeyCall):
    """``PutKeyPolicy`` on a scenario key (``policy`` is a template over the world)."""

    call: Literal["PutKeyPolicy"]
    policy: dict[str, Any]


CallSpec = Annotated[
    ScheduleDeletionCall | KeyStateCall | CreateGrantCall | PutKeyPolicyCall,
    Field(discriminator="call"),
]


class InjectSpec(_Model):
    """What happens in the sandbox once the step ``after`` was done (succeeded, or found
    already so): a line for the people in the exercise, the attacker's calls, and the
    CloudTrail events they leave."""

    after: str
    say: str = Field(min_length=1, max_length=500)
    calls: list[CallSpec] = Field(default_factory=list, max_length=20)
    history: list[InjectEventSpec] = Field(default_factory=list, max_length=100)
    #: The identity the calls are made as (default: that of the first history event): a
    #: contained one is refused as AWS would refuse it (``sandbox.containment``).
    identity: str | None = None
    #: The line shown instead of ``say`` when the attempt was blocked (default: "Attempt
    #: blocked: <why>. The attempt: <say>").
    say_blocked: str | None = Field(default=None, min_length=1, max_length=500)

    @field_validator("say", "say_blocked")
    @classmethod
    def _one_line(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        value = value.strip()
        if not value or "\n" in value:
            raise ValueError(f"{info.field_name}: one line (use a folded block, >-, for long text)")
        return value

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Without ``identity`` and ``say_blocked`` when unset: a scenario's fingerprint stays
        what it was before they existed (a recorded sandbox run still resumes)."""
        data: dict[str, Any] = handler(self)
        for name in ("identity", "say_blocked"):
            if data.get(name) is None:
                data.pop(name, None)
        return data


class Scenario(_Model):
    """A whole scenario."""

    id: str = Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")
    title: str
    story: str
    playbook: str
    region: str = "eu-west-1"
    seed: int = 0
    inputs: dict[str, Any] = Field(default_factory=dict)
    keys: dict[str, KeySpec] = Field(min_length=1)
    grants: dict[str, GrantSpec] = Field(default_factory=dict)
    users: dict[str, UserSpec] = Field(default_factory=dict)
    identities: dict[str, IdentitySpec] = Field(default_factory=dict)
    history: list[EventSpec] = Field(default_factory=list)
    answers: dict[str, Any] = Field(default_factory=dict)
    injects: list[InjectSpec] = Field(default_factory=list)
    #: Resources encrypted with the scenario's keys, and the account's configuration
    #: (``sandbox.resources`` and ``sandbox.posture_seed`` seed them).
    resources: list[Resource] = Field(default_factory=list, max_length=100)
    #: The problems a review scenario plants on purpose (``planted`` compares a review).
    planted: list[PlantedSpec] = Field(default_factory=list, max_length=200)

    @model_validator(mode="after")
    def _resource_references(self) -> Scenario:
        roles: set[str] = set()
        for n, resource in enumerate(self.resources):
            key = getattr(resource, "key", None)
            if key is not None and key not in self.keys:
                known = ", ".join(self.keys)
                raise ValueError(
                    f"resources[{n}] ({resource.name}): unknown key {key!r} (known: {known})"
                )
            if isinstance(resource, ResourceSpec):
                if key is None and resource.key_reference == "alias":
                    raise ValueError(f"resources[{n}] ({resource.name}): key_reference needs a key")
            elif isinstance(resource, IamRoleSpec):
                roles.add(resource.name)
            elif isinstance(resource, IamPolicySpec):
                for role in resource.roles:
                    if role not in roles:
                        raise ValueError(
                            f"resources[{n}] ({resource.name}): role {role!r} is no iam-role "
                            "resource listed before it"
                        )
        for n, planted in enumerate(self.planted):
            if planted.resource is not None:
                problem = planted_problem(planted.resource, self.keys, self.grants, self.resources)
                if problem:
                    raise ValueError(f"planted[{n}] ({planted.check}): {problem}")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Without ``resources`` and ``planted`` when there are none: the fingerprint of a
        scenario without them stays what it was before they existed (a recorded sandbox run
        still resumes)."""
        data: dict[str, Any] = handler(self)
        if not self.resources:
            del data["resources"]
        if not self.planted:
            del data["planted"]
        return data

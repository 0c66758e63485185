"""The scenario model: frozen pydantic records of what a scenario file holds.

A ``Scenario`` names keys, grants, IAM users with access keys, identities, a CloudTrail history
with times relative to now, the playbook it exercises, its inputs, the scripted answers of its
demo, and injects: what the attacker does in the sandbox after a given step of the playbook;
its keys (with imported material) and custom key stores are ``key_model``'s records, its
resources and the problems it plants ``resource_model``'s. Each record checks
its own fields (patterns, ranges, durations, Region names); what spans records (references
between them, templates, the playbook's steps) is checked when the scenario loads
(``scenario_checks``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from kmsir.playbook.values import duration_seconds
from kmsir.sandbox.hidden_model import (
    HIDDEN_FIELDS,
    EvidenceSpec,
    ExpectedSpec,
    GroundTruth,
    PreventionSpec,
    TargetsSpec,
)
from kmsir.sandbox.key_model import (
    KEY_USAGES,
    KeySpec,
    KeySpecName,
    KeyStoreSpec,
    MaterialSpec,
    relative_file,
)
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


__all__ = [
    "KEY_USAGES",
    "CallSpec",
    "EventSpec",
    "EvidenceSpec",
    "ExpectedSpec",
    "GrantSpec",
    "GroundTruth",
    "IdentitySpec",
    "InjectSpec",
    "KeySpec",
    "KeySpecName",
    "KeyStoreSpec",
    "MaterialSpec",
    "PreventionSpec",
    "Scenario",
    "TargetsSpec",
    "UserSpec",
]


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
    #: ``deleted``: someone deleted the trail log file holding the event from the trail bucket
    #: (LookupEvents keeps it; the digest that listed the file still does).
    log_file: Literal["deleted"] | None = None

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

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Without ``log_file`` when unset: a scenario's fingerprint stays what it was before
        it existed (a recorded sandbox run still resumes)."""
        data: dict[str, Any] = handler(self)
        if data.get("log_file") is None:
            data.pop("log_file", None)
        return data


class InjectEventSpec(EventSpec):
    """A CloudTrail event an inject adds, ``at`` a duration before the inject (default: then)."""

    at: str = "0s"

    @model_validator(mode="after")
    def _no_tampering(self) -> InjectEventSpec:
        if self.log_file is not None:
            raise ValueError("log_file: only events of the scenario's history (seeded) have one")
        return self


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
    already so), or once ``after_minutes`` have passed since the world's start (at the next
    step boundary, unless the facilitator holds it): a line for the people in the exercise,
    the attacker's calls, and the CloudTrail events they leave. Exactly one of ``after`` and
    ``after_minutes``; a facilitator may also fire any inject at once."""

    after: str | None = None
    #: Minutes after the world's start (the sandbox's ``now``) when it is due.
    after_minutes: float | None = Field(default=None, ge=0, le=24 * 60)
    #: A short name for the facilitator's list of injects (never shown to the players).
    title: str | None = Field(default=None, min_length=1, max_length=80)
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

    @model_validator(mode="after")
    def _one_trigger(self) -> InjectSpec:
        if (self.after is None) == (self.after_minutes is None):
            raise ValueError("give exactly one of after (a step id) and after_minutes")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Without the fields added later when unset (``identity``, ``say_blocked``,
        ``after_minutes``, ``after``), and never ``title`` (a name, not the world): a
        scenario's fingerprint stays what it was before they existed (a recorded sandbox run
        still resumes)."""
        data: dict[str, Any] = handler(self)
        for name in ("identity", "say_blocked", "after_minutes", "after"):
            if data.get(name) is None:
                data.pop(name, None)
        data.pop("title", None)
        return data


class Scenario(_Model):
    """A whole scenario: ``title`` and ``briefing`` are what the players are told, the
    hidden parts (``hidden_model``) what the facilitator knows."""

    id: str = Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")
    title: str
    #: What the players are told: the alert or page that starts the exercise.
    briefing: str = Field(min_length=1)
    playbook: str
    region: str = "eu-west-1"
    seed: int = 0
    #: The playbook's inputs; ``{file: PATH}`` names a file relative to the scenario file
    #: (an escrow copy of key material), which the run is given as a path it can open.
    inputs: dict[str, Any] = Field(default_factory=dict)
    keys: dict[str, KeySpec] = Field(min_length=1)
    #: Custom key stores the keys may live in (``store:`` of a key).
    key_stores: dict[str, KeyStoreSpec] = Field(default_factory=dict, max_length=10)
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
    #: The hidden parts (``hidden_model``): never shown to the players.
    ground_truth: GroundTruth | None = None
    expected: dict[str, ExpectedSpec] = Field(default_factory=dict)
    evidence_to_see: list[EvidenceSpec] = Field(default_factory=list, max_length=50)
    prevented_by: list[PreventionSpec] = Field(default_factory=list, max_length=10)
    targets: TargetsSpec | None = None
    #: ``required``: a second person approves the playbook's steps that ask for it, as in a
    #: live run (a tabletop rehearses the two-person rule); by default the sandbox skips them.
    approvals: Literal["required"] | None = None

    #: The folder of the scenario file, once ``scenario.load`` located it, and the inputs it
    #: turned from ``{file: PATH}`` into paths (by name: the PATH as written).
    _folder: Path | None = PrivateAttr(default=None)
    _file_inputs: dict[str, str] = PrivateAttr(default_factory=dict)
    #: Written with ``story:``, as release 0.2 wrote scenarios (``briefing`` since).
    _story: bool = PrivateAttr(default=False)

    @model_validator(mode="wrap")
    @classmethod
    def _old_story(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Scenario:
        """Read a scenario written before ``briefing`` (its ``story:`` is the briefing), so a
        run recorded in it then still resumes (``world_dump``)."""
        if not (isinstance(data, dict) and "story" in data and "briefing" not in data):
            return cast(Scenario, handler(data))
        data = {("briefing" if k == "story" else k): v for k, v in data.items()}
        scenario = cast(Scenario, handler(data))
        scenario._story = True
        return scenario

    @field_validator("inputs")
    @classmethod
    def _file_input(cls, inputs: dict[str, Any]) -> dict[str, Any]:
        for name, value in inputs.items():
            if isinstance(value, dict) and "file" in value:
                if set(value) != {"file"} or not isinstance(value["file"], str):
                    raise ValueError(f"inputs.{name}: a file input is {{file: PATH}} alone")
                relative_file(value["file"])
        return inputs

    def file_inputs(self) -> dict[str, str]:
        """The inputs written ``{file: PATH}``: name -> PATH (relative to the scenario)."""
        if self._file_inputs:
            return dict(self._file_inputs)
        return {
            name: str(value["file"])
            for name, value in self.inputs.items()
            if isinstance(value, dict) and "file" in value
        }

    @property
    def folder(self) -> Path | None:
        """The folder of the scenario file (``None``: a scenario not loaded from a file)."""
        return self._folder

    def located(self, folder: Path, files: dict[str, Path]) -> Scenario:
        """This scenario as loaded from a file in ``folder``, its file inputs given as the
        paths ``files`` found for them; it dumps (and so fingerprints) as written."""
        written = self.file_inputs()
        copy = self.model_copy(
            update={"inputs": {**self.inputs, **{n: str(p) for n, p in files.items()}}}
        )
        copy._folder = folder
        copy._file_inputs = written
        copy._story = self._story
        return copy

    def world_dump(self) -> dict[str, Any]:
        """What shapes the seeded world (what ``Sandbox.fingerprint`` covers): the scenario
        without what the players are told (``title``, ``briefing``) or the hidden parts, so
        editing either never breaks a resume. A scenario written with ``story:`` dumps as
        release 0.2 fingerprinted it (title and story included)."""
        data = self.model_dump(mode="json")
        for name in (*HIDDEN_FIELDS, "approvals"):  # whether a run waits, not the world
            data.pop(name, None)
        if self._story:
            data["story"] = data.pop("briefing")
            return data
        del data["title"], data["briefing"]
        return data

    @model_validator(mode="after")
    def _store_references(self) -> Scenario:
        for name, key in self.keys.items():
            if key.store is not None and key.store not in self.key_stores:
                known = ", ".join(self.key_stores) or "none"
                raise ValueError(
                    f"keys.{name}.store: unknown key store {key.store!r} (key_stores: {known})"
                )
        return self

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
        """Without ``resources``, ``planted`` and ``key_stores`` when there are none: the
        fingerprint of a scenario without them stays what it was before they existed (a
        recorded sandbox run still resumes); file inputs as written, not where they were
        found (a scenario keeps its fingerprint wherever kmsir is installed)."""
        data: dict[str, Any] = handler(self)
        if not self.resources:
            del data["resources"]
        if not self.planted:
            del data["planted"]
        if not self.key_stores:
            del data["key_stores"]
        for name, written in self._file_inputs.items():
            data["inputs"][name] = {"file": written}
        return data

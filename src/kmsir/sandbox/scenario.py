"""Scenario files: the seeded world of a tabletop exercise or demo.

A scenario (``playbooks/scenarios/<name>.yaml``) names keys, grants, IAM users with access
keys, identities, a CloudTrail history with times relative to now, the playbook it exercises,
its inputs, the scripted answers of its demo, and injects: what the attacker does in the
sandbox after a given step of the playbook. Strings in the history are templates over the
seeded world (``{{ keys.payments.arn }}``, ``{{ grants.rogue.id }}``,
``{{ users.reports.access_key_id }}``, ``{{ keys.hr.replicas }}``, ``{{ account }}``), and so
are key policies, grantees and an inject's line and calls. A template that does not render is
refused when the scenario loads (against a stand-in of the seeded world: same names, made-up
ids), not mid-run.
"""

from __future__ import annotations

import difflib
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from kmsir import resources
from kmsir.errors import PlaybookError, UsageError
from kmsir.playbook import yamlsafe
from kmsir.playbook.values import duration_seconds, is_region

#: moto's default account: the sandbox's dummy credentials see this account.
ACCOUNT = "123456789012"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _region_name(value: str) -> str:
    if not is_region(value):
        raise ValueError(f"{yamlsafe.shorten(value)} is not an AWS Region name like us-east-1")
    return value


class KeySpec(_Model):
    """A customer-managed key to create."""

    description: str = ""
    alias: str | None = Field(default=None, pattern=r"^alias/[A-Za-z0-9/_-]{1,250}$")
    tags: dict[str, str] = Field(default_factory=dict)
    rotation: bool = False
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
        return data


class GrantSpec(_Model):
    """A grant to create on one of the scenario's keys."""

    key: str
    name: str
    grantee: str
    operations: list[str] = Field(min_length=1)
    created: str | None = None

    @field_validator("created")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        if value is not None:
            duration_seconds(value.removeprefix("-"))
        return value


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

    @field_validator("say")
    @classmethod
    def _one_line(cls, value: str) -> str:
        value = value.strip()
        if not value or "\n" in value:
            raise ValueError("say: one line (use a folded block, >-, for long text)")
        return value


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


def scenario_dir() -> Path:
    """Where the built-in scenarios live."""
    return resources.playbooks_dir() / "scenarios"


def available() -> dict[str, Path]:
    """Built-in scenario name -> file."""
    return {p.stem: p for p in sorted(scenario_dir().glob("*.yaml"))}


def load(name_or_path: str) -> Scenario:
    """Load a built-in scenario by name, or a scenario file by path."""
    path = Path(name_or_path)
    if not path.suffix:
        known = available()
        if name_or_path not in known:
            raise UsageError(f"no scenario {name_or_path!r}; known: {', '.join(known) or 'none'}")
        path = known[name_or_path]
    document = yamlsafe.load_file(path)
    try:
        scenario = Scenario.model_validate(document.data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False, include_input=False):
            loc = tuple(error["loc"])
            problems.append(f"{document.where(loc)}: {'.'.join(map(str, loc))}: {error['msg']}")
        raise PlaybookError(problems) from None
    _check_references(scenario, document, path)
    return scenario


def trail_bucket(account: str) -> str:
    """The moto S3 bucket the sandbox's trail delivers to."""
    return f"kmsir-sandbox-trail-{account}"


def stand_in_world(scenario: Scenario) -> dict[str, Any]:
    """What ``Sandbox.template_context`` holds once ``scenario`` is seeded, with made-up ids of
    the same shapes (the real ones exist only once moto has seeded the world): the names the
    scenario's templates may use, for checking them when it loads."""
    keys: dict[str, dict[str, Any]] = {}
    for n, (name, key) in enumerate(scenario.keys.items(), 1):
        key_id = ("mrk-" if key.multi_region else "") + str(uuid.UUID(int=n, version=4))
        arn = f"arn:aws:kms:{scenario.region}:{ACCOUNT}:key/{key_id}"
        replicas = [f"arn:aws:kms:{r}:{ACCOUNT}:key/{key_id}" for r in key.replicas]
        keys[name] = {"id": key_id, "arn": arn, "alias": key.alias or "", "replicas": replicas}
    grants = {
        name: {
            "id": f"{n:08x}",  # moto's grant ids are 8 hex digits
            "key": keys[grant.key]["id"] if grant.key in keys else "",
            "name": grant.name,
        }
        for n, (name, grant) in enumerate(scenario.grants.items(), 1)
    }
    users: dict[str, dict[str, Any]] = {}
    for n, (name, user) in enumerate(scenario.users.items(), 1):
        access_keys = [f"AKIA{n:08d}{k:08d}" for k in range(1, user.access_keys + 1)]
        users[name] = {
            "name": user.name,
            "arn": f"arn:aws:iam::{ACCOUNT}:user/{user.name}",
            "access_key_ids": access_keys,
            "access_key_id": access_keys[0] if access_keys else None,
        }
    return {
        "account": ACCOUNT,
        "region": scenario.region,
        "keys": keys,
        "grants": grants,
        "users": users,
        "trail_bucket": trail_bucket(ACCOUNT),
    }


def _check_references(scenario: Scenario, document: yamlsafe.Document, path: Path) -> None:
    problems = []

    def unknown(where: tuple[Any, ...], what: str, name: str, known: Any) -> None:
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(f"{document.where(where)}: unknown {what} {name!r}{hint}")

    for name, key in scenario.keys.items():
        problems += _check_replicas(scenario, name, key, document)
    for name, grant in scenario.grants.items():
        if grant.key not in scenario.keys:
            unknown(("grants", name, "key"), "key", grant.key, scenario.keys)
    for name, identity in scenario.identities.items():
        if identity.user is not None and identity.user not in scenario.users:
            unknown(("identities", name, "user"), "user", identity.user, scenario.users)
    histories: list[tuple[tuple[Any, ...], list[Any]]] = [(("history",), scenario.history)]
    histories += [(("injects", n, "history"), i.history) for n, i in enumerate(scenario.injects)]
    for prefix, history in histories:
        for index, event in enumerate(history):
            if event.identity not in scenario.identities:
                at = (*prefix, index, "identity")
                unknown(at, "identity", event.identity, scenario.identities)
            if event.key is not None and event.key not in scenario.keys:
                unknown((*prefix, index, "key"), "key", event.key, scenario.keys)
    for n, inject in enumerate(scenario.injects):
        for c, call in enumerate(inject.calls):
            if call.key not in scenario.keys:
                unknown(("injects", n, "calls", c, "key"), "key", call.key, scenario.keys)
    if scenario.injects:
        steps = _playbook_steps(scenario, document, path, problems)
        for n, inject in enumerate(scenario.injects):
            if steps is not None and inject.after not in steps:
                close = difflib.get_close_matches(inject.after, steps, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(
                    f"{document.where(('injects', n, 'after'))}: playbook {scenario.playbook} "
                    f"has no step {inject.after!r}{hint}"
                )
    problems += _check_templates(scenario, document)
    if problems:
        raise PlaybookError(problems)


def _check_replicas(
    scenario: Scenario, name: str, key: KeySpec, document: yamlsafe.Document
) -> list[str]:
    """A key's replicas: only of a multi-Region key, each in a Region where KMS is offered
    (in the scenario Region's partition), other than the scenario's, and once."""
    if not key.replicas:
        return []
    if not key.multi_region:
        at = ("keys", name, "replicas")
        return [f"{document.where(at)}: keys.{name}.replicas: replicas need multi_region: true"]
    problems = []
    offered = _kms_regions(scenario.region)
    for index, region in enumerate(key.replicas):
        where = f"{document.where(('keys', name, 'replicas', index))}: "
        where += f"keys.{name}.replicas.{index}: "
        if region == scenario.region:
            problems.append(
                f"{where}{region} is the scenario's Region: a replica is in another Region"
            )
        elif region in key.replicas[:index]:
            problems.append(f"{where}{region} is named twice (one replica per Region)")
        elif region not in offered:
            close = difflib.get_close_matches(region, offered, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(
                f"{where}{region} is not a Region with KMS in the partition of the "
                f"scenario's Region, {scenario.region}{hint}"
            )
    return problems


def _kms_regions(region: str) -> list[str]:
    """The Regions where KMS is offered, as botocore (and so moto) knows them: those of
    ``region``'s partition, or of every partition if ``region`` is in none. Read from
    botocore's endpoint data, without a session (which a missing profile would break)."""
    from botocore.loaders import create_loader
    from botocore.regions import EndpointResolver

    resolver = EndpointResolver(create_loader().load_data("endpoints"))
    partitions = [
        list(resolver.get_available_endpoints("kms", partition))
        for partition in resolver.get_available_partitions()
    ]
    same = next((regions for regions in partitions if region in regions), None)
    return same if same is not None else [r for regions in partitions for r in regions]


def _check_templates(scenario: Scenario, document: yamlsafe.Document) -> list[str]:
    """Render every template of the scenario against a stand-in of its seeded world, as the
    sandbox renders it (the same names at the same moment of seeding); what does not render
    is a problem naming its file and line."""
    from kmsir.errors import TemplateError
    from kmsir.playbook import templating

    world = stand_in_world(scenario)
    problems: list[str] = []

    _failed = object()

    def check(at: tuple[Any, ...], value: Any, context: Mapping[str, Any]) -> Any:
        """Render ``value`` (recursively) at ``at``: the result, or ``_failed``."""
        if isinstance(value, Mapping):
            return {k: check((*at, k), v, context) for k, v in value.items()}
        if isinstance(value, list):
            return [check((*at, n), v, context) for n, v in enumerate(value)]
        try:
            return templating.render_value(value, context)
        except TemplateError as exc:
            problems.append(f"{document.where(at)}: {'.'.join(map(str, at))}: {exc}")
            return _failed

    def text(at: tuple[Any, ...], value: str, context: Mapping[str, Any]) -> None:
        """Render ``value``, which must come out a string (a principal AWS is sent)."""
        rendered = check(at, value, context)
        if rendered is not _failed and not isinstance(rendered, str):
            problems.append(
                f"{document.where(at)}: {'.'.join(map(str, at))}: renders to "
                f"{type(rendered).__name__}, not a string"
            )

    # seeding renders each key's policy once that key exists, before any grant
    for n, (name, key) in enumerate(scenario.keys.items()):
        if key.policy is not None:
            seeded = dict(list(world["keys"].items())[: n + 1])
            check(("keys", name, "policy"), key.policy, {**world, "keys": seeded, "grants": {}})
    for n, (name, grant) in enumerate(scenario.grants.items()):
        seeded = dict(list(world["grants"].items())[:n])
        text(("grants", name, "grantee"), grant.grantee, {**world, "grants": seeded})
    histories: list[tuple[tuple[Any, ...], list[Any]]] = [(("history",), scenario.history)]
    histories += [(("injects", n, "history"), i.history) for n, i in enumerate(scenario.injects)]
    for prefix, events in histories:
        for index, event in enumerate(events):
            for field, value in _event_templates(event):
                check((*prefix, index, field), value, world)
    for n, inject in enumerate(scenario.injects):
        check(("injects", n, "say"), inject.say, world)
        for c, call in enumerate(inject.calls):
            if isinstance(call, CreateGrantCall):
                text(("injects", n, "calls", c, "grantee"), call.grantee, world)
            elif isinstance(call, PutKeyPolicyCall):
                check(("injects", n, "calls", c, "policy"), call.policy, world)
    return problems


def _event_templates(event: EventSpec) -> list[tuple[str, Any]]:
    """The fields of an event the sandbox renders (``history._event``), by name."""
    fields: list[tuple[str, Any]] = [
        ("source_ip", event.source_ip),
        ("user_agent", event.user_agent),
        ("request", event.request),
    ]
    if event.response is not None:
        fields.append(("response", event.response))
    if event.error_code:
        if event.error_message:
            fields.append(("error_message", event.error_message))
        else:
            fields.append(("error_code", event.error_code))
    return fields


def _playbook_steps(
    scenario: Scenario, document: yamlsafe.Document, path: Path, problems: list[str]
) -> list[str] | None:
    """The step ids of the scenario's playbook (a built-in name, or a file beside the
    scenario), for checking where injects go; ``None`` (and a problem) if it is missing."""
    name = scenario.playbook
    candidates = [path.parent / name, resources.playbooks_dir() / f"{name}.yaml"]
    found = next((c for c in candidates if c.suffix in (".yaml", ".yml") and c.is_file()), None)
    if found is None:
        problems.append(
            f"{document.where(('playbook',))}: no playbook {name!r} (built-in name or a file "
            "beside the scenario) to check the injects' steps against"
        )
        return None
    data = yamlsafe.load_file(found).data
    steps = data.get("steps") if isinstance(data, dict) else None
    return (
        [str(s.get("id")) for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []
    )

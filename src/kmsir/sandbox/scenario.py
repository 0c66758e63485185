"""Scenario files: the seeded world of a tabletop exercise or demo.

A scenario (``playbooks/scenarios/<name>.yaml``) names keys, grants, IAM users with access
keys, identities, a CloudTrail history with times relative to now, the playbook it exercises,
its inputs, the scripted answers of its demo, and injects: what the attacker does in the
sandbox after a given step of the playbook. Strings in the history are templates over the
seeded world (``{{ keys.payments.arn }}``, ``{{ grants.rogue.id }}``,
``{{ users.reports.access_key_id }}``, ``{{ account }}``).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from kmsir import resources, yamlsafe
from kmsir.errors import PlaybookError, UsageError
from kmsir.values import duration_seconds


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


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
    """What happens in the sandbox once the step ``after`` has ended: a line for the people
    in the exercise, the attacker's calls, and the CloudTrail events they leave."""

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


def _check_references(scenario: Scenario, document: yamlsafe.Document, path: Path) -> None:
    problems = []

    def unknown(where: tuple[Any, ...], what: str, name: str, known: Any) -> None:
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(f"{document.where(where)}: unknown {what} {name!r}{hint}")

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
    if problems:
        raise PlaybookError(problems)


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

"""Scenario files: the seeded world of a tabletop exercise or demo.

A scenario (``playbooks/scenarios/<name>.yaml``) names keys, grants, identities, a CloudTrail
history with times relative to now, the playbook it exercises, its inputs and the scripted
answers of its demo. Strings in the history are templates over the seeded world
(``{{ keys.payments.arn }}``, ``{{ grants.rogue.id }}``, ``{{ account }}``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


class IdentitySpec(_Model):
    """Who appears in the CloudTrail history."""

    type: Literal["AssumedRole", "IAMUser", "Root", "AWSService"] = "AssumedRole"
    account: str | None = None
    name: str
    session: str | None = None
    access_key_id: str | None = None


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
    identities: dict[str, IdentitySpec] = Field(default_factory=dict)
    history: list[EventSpec] = Field(default_factory=list)
    answers: dict[str, Any] = Field(default_factory=dict)


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
    _check_references(scenario, document)
    return scenario


def _check_references(scenario: Scenario, document: yamlsafe.Document) -> None:
    problems = []
    for name, grant in scenario.grants.items():
        if grant.key not in scenario.keys:
            problems.append(f"{document.where(('grants', name, 'key'))}: unknown key {grant.key!r}")
    for index, event in enumerate(scenario.history):
        if event.identity not in scenario.identities:
            where = document.where(("history", index, "identity"))
            problems.append(f"{where}: unknown identity {event.identity!r}")
        if event.key is not None and event.key not in scenario.keys:
            problems.append(
                f"{document.where(('history', index, 'key'))}: unknown key {event.key!r}"
            )
    if problems:
        raise PlaybookError(problems)

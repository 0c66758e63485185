"""Scenario files: the seeded world of a tabletop exercise or demo.

A scenario (``playbooks/scenarios/<name>.yaml``) names keys, grants, IAM users with access
keys, identities, a CloudTrail history with times relative to now, the playbook it exercises,
its inputs, the scripted answers of its demo, and injects: what the attacker does in the
sandbox after a given step of the playbook. Strings in the history are templates over the
seeded world (``{{ keys.payments.arn }}``, ``{{ grants.rogue.id }}``,
``{{ users.reports.access_key_id }}``, ``{{ keys.hr.replicas }}``, ``{{ key_stores.vault.id
}}``, ``{{ account }}``), and so
are key policies, grantees and an inject's line and calls. A template that does not render is
refused when the scenario loads (against a stand-in of the seeded world: same names, made-up
ids), not mid-run.

Files a scenario names (the key material it imports, an escrow copy given to the playbook as
an input ``{file: PATH}``) are relative to the scenario file.

This module finds and loads scenario files, finds the files they name (``scenario_file``), and
says what the seeded world will be called before moto seeds it (``ACCOUNT``,
``trail_bucket``, ``stand_in_world``). The records a scenario
holds are in ``scenario_model``; what loading checks beyond them, in ``scenario_checks``.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kmsir import resources
from kmsir.errors import PlaybookError, UsageError
from kmsir.keymaterial import MATERIAL_BYTES
from kmsir.playbook import yamlsafe
from kmsir.sandbox import scenario_checks
from kmsir.sandbox.scenario_model import Scenario

#: moto's default account: the sandbox's dummy credentials see this account.
ACCOUNT = "123456789012"


def scenario_dir() -> Path:
    """Where the built-in scenarios live."""
    return resources.playbooks_dir() / "scenarios"


def available() -> dict[str, Path]:
    """Built-in scenario name -> file."""
    return {p.stem: p for p in sorted(scenario_dir().glob("*.yaml"))}


def load(name_or_path: str | Path) -> Scenario:
    """Load a built-in scenario by name, or a scenario file by path (a ``Path`` always is
    one; a string is a name unless it has a suffix)."""
    path = Path(name_or_path)
    if isinstance(name_or_path, str) and not path.suffix:
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
    scenario = _located(scenario, document, path)
    scenario_checks.check(scenario, document, path, stand_in_world(scenario))
    return scenario


def scenario_file(scenario: Scenario, name: str) -> Path | None:
    """The file a scenario names (imported material, a file input): relative to the
    scenario file, else to the built-in scenarios (a built-in scenario copied elsewhere
    still finds its escrow files); ``None`` if neither has it."""
    folders = [scenario.folder] if scenario.folder is not None else []
    for folder in (*folders, scenario_dir()):
        candidate = folder / name
        if candidate.is_file():
            return candidate.resolve()
    return None


def _located(scenario: Scenario, document: yamlsafe.Document, path: Path) -> Scenario:
    """``scenario`` as loaded from ``path``: its file inputs turned into paths a run can
    open, and every file it names checked (imported material: exactly 32 bytes)."""
    scenario = scenario.located(path.parent.resolve(), {})
    problems: list[str] = []
    found: dict[str, Path] = {}
    for name, written in scenario.file_inputs().items():
        where = scenario_file(scenario, written)
        if where is None:
            where_input = document.where(("inputs", name, "file"))
            problems.append(f"{where_input}: inputs.{name}.file: no file {written!r}")
        else:
            found[name] = where
    for name, key in scenario.keys.items():
        if key.material is None:
            continue
        at = ("keys", name, "material", "file")
        where = scenario_file(scenario, key.material.file)
        if where is None:
            problems.append(
                f"{document.where(at)}: keys.{name}.material.file: no file "
                f"{key.material.file!r} beside the scenario"
            )
        elif where.stat().st_size != MATERIAL_BYTES:
            problems.append(
                f"{document.where(at)}: keys.{name}.material.file: {key.material.file} holds "
                f"{where.stat().st_size} bytes; AWS imports {MATERIAL_BYTES} (a 256-bit key)"
            )
    if problems:
        raise PlaybookError(problems)
    return scenario.located(path.parent.resolve(), found)


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
            "id": f"{n:064x}",  # grant ids are 64 hex digits, as AWS makes them (the shim)
            "key": keys[grant.key]["id"] if grant.key in keys else "",
            "name": grant.name,
        }
        for n, (name, grant) in enumerate(scenario.grants.items(), 1)
    }
    key_stores = {
        name: {
            "id": f"cks-{n:017x}",
            "name": store.name or name,
            "type": store.store_type,
        }
        for n, (name, store) in enumerate(scenario.key_stores.items(), 1)
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
        "key_stores": key_stores,
        "grants": grants,
        "users": users,
        "trail_bucket": trail_bucket(ACCOUNT),
    }

"""A shipped playbook over several accounts (issue 20 review): kms-key-compromise on a key in
another account of the scope. Its later steps name the key by ``steps.snapshot.key_id`` (a
key id, not an ARN): the run routes them to the account and Region its snapshot found the key
in. Then ``kmsir rollback`` undoes the containment in that same account, from the scope the
run recorded. The moto world (4 accounts x 3 Regions, one AssumeRole refused) is
tests/test_fanout.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from kmsir import actions
from kmsir.evidence.bundle import JOURNAL, read_journal
from kmsir.evidence.view import RunView
from kmsir.playbook import model as playbook
from kmsir.prompts import ScriptedPrompter
from kmsir.run.engine import RunOptions, RunResult

from .clikit import cli
from .test_fanout import CALLER, World, world

__all__ = ["world"]  # the module's moto world, as a fixture here

#: The key of the run: in the third account, in us-east-1.
SHIPPED = ("222222222222", "us-east-1")
PLAYBOOK = Path(__file__).parent.parent / "playbooks" / "kms-key-compromise.yaml"


@dataclass
class Shipped:
    result: RunResult
    view: RunView
    key: str
    states: dict[str, str]


@pytest.fixture(scope="module")
def shipped(world: World) -> Shipped:
    key = world.keys[SHIPPED][0]
    loaded = playbook.load(PLAYBOOK, actions.catalog())
    options = RunOptions(
        incident_id="INC-shipped",
        evidence_dir=world.tmp / "evidence",
        mode="sandbox",
        extra={"scope": world.scope.to_json()},
    )
    prompter = ScriptedPrompter({"decide": "disable", "disable": "run"}, source="test answers")
    inputs = playbook.resolve_inputs(loaded.playbook, {"key": key})
    result = world.engine(prompter, "INC-shipped").run(loaded, inputs, options)
    view = read_journal(result.bundle / JOURNAL).view()
    return Shipped(result, view, key, world.states())


def test_the_key_named_by_its_id_is_contained_in_its_own_account(shipped: Shipped) -> None:
    assert shipped.result.status == "succeeded", shipped.result.error
    steps = shipped.view.steps
    assert steps["disable"].status == "succeeded"
    assert (steps["disable"].params or {})["key"] == shipped.key.rsplit("/", 1)[-1]  # the key id
    disabled = [c for c in steps["disable"].calls if c.operation == "DisableKey"]
    assert [(c.account, c.region) for c in disabled] == [SHIPPED]
    assert shipped.states[shipped.key] == "Disabled"
    others = {arn: s for arn, s in shipped.states.items() if arn != shipped.key}
    assert "Disabled" not in {s for arn, s in others.items() if SHIPPED[0] in arn}
    for step in ("recheck", "after"):  # read again in the key's account, by its id
        assert steps[step].outputs["arn"] == shipped.key
        assert steps[step].outputs["state"] == "Disabled"


def test_the_rollback_undoes_it_in_the_key_s_own_account(
    shipped: Shipped, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``kmsir rollback`` rebuilds the run's scope: the key (in another account) is read and
    enabled again there, not looked for in the caller's account."""
    # the caller's credentials, as a live rollback finds them (moto: the caller's account)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    ran = cli("rollback", shipped.result.bundle, "--yes", "--region", "eu-west-1")
    assert ran.exit_code == 0, ran.stderr
    assert "could not be read" not in ran.stderr
    assert world.states()[shipped.key] == "Enabled"
    runs = (world.tmp / "evidence" / "INC-shipped").glob(f"*/{JOURNAL}")
    (rolled,) = [p.parent for p in runs if p.parent != shipped.result.bundle]
    view = read_journal(rolled / JOURNAL).view()
    enabled = [c for s in view.steps.values() for c in s.calls if c.operation == "EnableKey"]
    assert [(c.account, c.region) for c in enabled] == [SHIPPED]
    assert view.meta is not None and (view.meta.scope or {})["caller_account"] == CALLER

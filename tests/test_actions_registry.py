"""The action registry imports an action's module only when the action is looked up, and a
run makes each AWS client once per service and Region, whatever its threads do."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import boto3

from kmsir import actions
from kmsir.aws import ClientFactory

from .conftest import bundles, load_playbook, run_playbook

REPO = Path(__file__).resolve().parent.parent


def test_the_table_names_each_action_as_its_class_does() -> None:
    found = actions.registry()
    for name, (module, cls, mutating) in actions.WHERE.items():
        action = getattr(importlib.import_module(f"kmsir.actions.{module}"), cls)()
        assert (action.name, action.mutating) == (name, mutating)
        assert type(found[name]) is type(action)
    assert len(set(found)) == len(found) == len(actions.WHERE)


def test_the_catalog_says_what_the_actions_say() -> None:
    catalog = actions.catalog()
    registry = actions.registry()
    assert list(catalog) == list(registry)
    for name, action in registry.items():
        assert catalog[name] is action.params
        assert dict(catalog.outputs[name]) == dict(action.outputs)
        assert (name in catalog.mutating) == action.mutating
    assert catalog.get("kms.no-such-action") is None


def test_a_run_imports_only_the_actions_its_playbook_uses(tmp_path: Path) -> None:
    book = tmp_path / "book.yaml"
    book.write_text(
        "id: snap\ntitle: t\nsteps:\n"
        "  - {id: snapshot, action: kms.snapshot, with: {all: true}}\n"
        "  - {id: done, action: note, with: {text: done}}\n"
    )
    probe = (
        "import sys, json\n"
        "from kmsir import actions\n"
        "from kmsir.playbook import model\n"
        f"loaded = model.load(__import__('pathlib').Path({str(book)!r}), actions.catalog())\n"
        "registry = actions.registry()\n"
        "[registry[s.action] for s in loaded.playbook.steps]\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('kmsir.actions.'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True, cwd=REPO
    )
    imported = set(json.loads(out.stdout))
    assert {"kmsir.actions.kms_snapshot", "kmsir.actions.human"} <= imported
    # the audit, CloudTrail and IAM actions (their rule sets, the scanner) stay unimported
    assert not imported & {
        "kmsir.actions.audit",
        "kmsir.actions.cloudtrail",
        "kmsir.actions.iam",
        "kmsir.actions.kms_policy",
    }


def test_a_run_makes_one_client_per_service_and_region(tmp_path: Path) -> None:
    from moto import mock_aws

    made: list[str] = []

    def session() -> boto3.Session:
        created = boto3.Session(region_name="eu-west-1")
        # botocore announces each client it makes: counted per service
        created.events.register(
            "creating-client-class", lambda event_name, **_: made.append(event_name.split(".")[1])
        )
        return created

    book = tmp_path / "book.yaml"
    book.write_text(
        "id: snap\ntitle: t\nsteps:\n"
        "  - {id: one, action: kms.snapshot, with: {all: true}}\n"
        "  - {id: two, action: kms.snapshot, with: {all: true}}\n"
    )
    with mock_aws():
        kms = boto3.client("kms", region_name="eu-west-1")
        keys = [kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(12)]
        clients = ClientFactory(session_factory=session, region="eu-west-1", guard_send=True)
        result = run_playbook(load_playbook(book), clients, tmp_path / "ev", mode="live")
    assert result.status == "succeeded"
    # two steps, 12 keys over the worker threads: still one KMS client (and one STS client,
    # for the operator's identity)
    assert sorted(made) == ["kms", "sts"]
    (bundle,) = bundles(tmp_path / "ev" / "INC-test")
    for step in ("01-one", "02-two"):
        snapped = {p.name for p in (bundle / "artifacts" / step).iterdir() if p.is_dir()}
        assert snapped == set(keys)

"""Each built-in scenario, run through its playbook with its scripted answers: the final AWS
state and the findings a facilitator expects."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from kmsir.sandbox import Sandbox
from kmsir.sandbox import scenario as scenarios

from .conftest import PLAYBOOKS, played


@contextlib.contextmanager
def play(name: str, tmp_path: Path) -> Iterator[tuple[Sandbox, Path]]:
    """The scenario's playbook run in its sandbox, which stays up for the test to inspect."""
    with played(name, tmp_path) as (sandbox, result):
        yield sandbox, result.bundle


def findings(bundle: Path) -> list[dict[str, object]]:
    (path,) = bundle.glob("artifacts/*-findings/findings.json")
    return list(json.loads(path.read_text()))


def test_every_scenario_names_an_existing_playbook() -> None:
    for name in scenarios.available():
        world = scenarios.load(name)
        assert (PLAYBOOKS / f"{world.playbook}.yaml").is_file(), name


def test_ransom_deletion_is_cancelled_and_the_key_kept_disabled(tmp_path: Path) -> None:
    with play("ransom-deletion", tmp_path) as (sandbox, bundle):
        kms = sandbox.session().client("kms")
        metadata = kms.describe_key(KeyId="alias/orders-db")["KeyMetadata"]
        assert metadata["KeyState"] == "Disabled" and "DeletionDate" not in metadata
    titles = {(f["severity"], f["title"]) for f in findings(bundle)}
    assert ("critical", "Key scheduled for deletion") in titles
    attacker = "arn:aws:sts::123456789012:assumed-role/ops-automation/maint-2291"
    assert any(f["principal"] == attacker for f in findings(bundle))


def test_rogue_grant_is_revoked_and_the_key_disabled(tmp_path: Path) -> None:
    with play("rogue-grant", tmp_path) as (sandbox, bundle):
        kms = sandbox.session().client("kms")
        metadata = kms.describe_key(KeyId="alias/payments-prod")["KeyMetadata"]
        grants = kms.list_grants(KeyId=metadata["KeyId"])["Grants"]
        assert metadata["KeyState"] == "Disabled"
        assert {g["GranteePrincipal"] for g in grants} == {
            "arn:aws:iam::123456789012:role/payments-app"
        }
    titles = {(f["severity"], f["title"]) for f in findings(bundle)}
    assert ("high", "Grant created for an outside account") in titles


def test_disabled_key_outage_is_found_and_the_key_enabled(tmp_path: Path) -> None:
    with play("disabled-key-outage", tmp_path) as (sandbox, bundle):
        kms = sandbox.session().client("kms")
        assert kms.describe_key(KeyId="alias/billing-data")["KeyMetadata"]["KeyState"] == "Enabled"
    found = findings(bundle)
    disabled = next(f for f in found if f["title"] == "Key disabled")
    assert disabled["severity"] == "high"
    assert disabled["principal"] == "arn:aws:iam::123456789012:user/j.doe"


def test_policy_tampering_is_found_and_the_key_quarantined(tmp_path: Path) -> None:
    with play("policy-tampering", tmp_path) as (sandbox, bundle):
        from moto.kms.models import kms_backends

        key = sandbox.keys["hr"]["id"]
        stored = kms_backends[sandbox.account][sandbox.region].keys[key].policy
        statements = json.loads(stored)["Statement"]
    deny = next(s for s in statements if s["Effect"] == "Deny")
    assert deny["Action"] == "kms:*" and deny["Principal"] == {"AWS": "*"}
    assert deny["Condition"]  # everyone but break-glass (the operator)
    found = findings(bundle)
    changed = next(f for f in found if f["title"] == "Key policy changed")
    assert changed["severity"] == "high"
    assert changed["principal"].endswith("assumed-role/platform-admin/stolen-4f2a")

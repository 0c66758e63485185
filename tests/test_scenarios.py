"""Each built-in scenario, run through its playbook with its scripted answers: the final AWS
state and the findings a facilitator expects."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kmsir.sandbox import Sandbox
from kmsir.sandbox import scenario as scenarios

from .conftest import PLAYBOOKS, played, refused_scenario


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


def test_policy_tampering_key_has_a_replica_the_snapshot_preserves(tmp_path: Path) -> None:
    """The HR key is a multi-Region primary with a replica in us-east-1 (same key id, its
    own ARN, policy and state); the playbook's snapshot reads it there, and the quarantine
    (``replicas: true``) denies in every Region, which the hand-over note says."""
    with play("policy-tampering", tmp_path) as (sandbox, bundle):
        hr = sandbox.keys["hr"]
        replica_arn = hr["arn"].replace(":eu-west-1:", ":us-east-1:")
        assert hr["id"].startswith("mrk-") and hr["replicas"] == [replica_arn]
        east = sandbox.session().client("kms", region_name="us-east-1")
        replica = east.describe_key(KeyId=hr["id"])["KeyMetadata"]
        config = replica["MultiRegionConfiguration"]
        assert (replica["Arn"], replica["KeyState"]) == (replica_arn, "Enabled")
        assert config["MultiRegionKeyType"] == "REPLICA"
        assert config["PrimaryKey"] == {"Arn": hr["arn"], "Region": "eu-west-1"}
        assert config["ReplicaKeys"] == [{"Arn": replica_arn, "Region": "us-east-1"}]
        primary = sandbox.session().client("kms").describe_key(KeyId=hr["id"])["KeyMetadata"]
        assert primary["MultiRegionConfiguration"]["MultiRegionKeyType"] == "PRIMARY"
        assert east.list_aliases(KeyId=hr["id"])["Aliases"] == []  # aliases are per Region
        replica_policy = json.loads(
            east.get_key_policy(KeyId=hr["id"], PolicyName="default")["Policy"]
        )
    # the replica's own policy (no tampering there), quarantined too
    assert [s["Sid"] for s in replica_policy["Statement"] if s["Effect"] == "Deny"] == [
        "kmsir-quarantine-INC-test"
    ]
    assert "backup-access" not in {s.get("Sid") for s in replica_policy["Statement"]}
    journal = [json.loads(line) for line in (bundle / "journal.jsonl").read_text().splitlines()]
    outputs = next(
        e["data"]["outputs"]
        for e in journal
        if e["type"] == "step-succeeded" and e["step"] == "snapshot"
    )
    assert outputs["multi_region"] == "PRIMARY"
    (seen,) = outputs["replicas"]
    assert (seen["arn"], seen["region"], seen["role"], seen["state"]) == (
        replica_arn,
        "us-east-1",
        "REPLICA",
        "Enabled",
    )
    (folder,) = bundle.glob("artifacts/*-snapshot")
    saved = json.loads((folder / "replica-us-east-1-key.json").read_text())
    assert saved["KeyMetadata"]["Arn"] == replica_arn
    assert (folder / "replica-us-east-1-policy-default.json").is_file()
    assert (folder / "replica-us-east-1-grants.json").is_file()
    recovery = next(
        e["data"]["text"] for e in journal if e["type"] == "note" and e["step"] == "recovery"
    )
    covered = "The quarantine covered the replicas too, each under its own key policy"
    assert f"{covered}: {replica_arn}." in recovery


def test_leaked_credentials_spike_is_found_and_the_access_key_deactivated(
    tmp_path: Path,
) -> None:
    with play("leaked-credentials-decrypt-spike", tmp_path) as (sandbox, bundle):
        leaked = sandbox.users["reports"]["access_key_id"]
        iam = sandbox.session().client("iam")
        keys = iam.list_access_keys(UserName="svc-reports")["AccessKeyMetadata"]
        assert [(k["AccessKeyId"], k["Status"]) for k in keys] == [(leaked, "Inactive")]
        kms = sandbox.session().client("kms")
        assert kms.describe_key(KeyId="alias/analytics-exports")["KeyMetadata"]["KeyState"] == (
            "Enabled"
        )
    user = "arn:aws:iam::123456789012:user/svc-reports"
    found = findings(bundle)
    spike = next(f for f in found if f["title"] == "Spike in data calls")
    assert spike["principal"] == user and spike["details"]["factor"] >= 10
    new_ip = next(f for f in found if f["title"] == "New source IP")
    assert new_ip["principal"] == user and "203.0.113.66" in str(new_ip["why"])
    journal = [json.loads(line) for line in (bundle / "journal.jsonl").read_text().splitlines()]
    outputs = next(
        e["data"]["outputs"]
        for e in journal
        if e["type"] == "step-succeeded" and e["step"] == "findings"
    )
    (actor,) = outputs["actors"]  # the ETL role decrypting as usual is behind no finding
    assert (actor["user"], actor["access_keys"]) == ("svc-reports", [leaked])
    deactivated = next(
        e for e in journal if e["type"] == "step-succeeded" and e["step"] == "deactivate"
    )
    assert deactivated["data"]["before"]["status"] == "Active"
    assert deactivated["data"]["inverse"] == "iam.reactivate-access-key"


def test_the_leaked_access_key_id_is_the_same_in_every_world() -> None:
    """moto's generator is seeded: the key the history names is the key IAM holds, and both
    are the same in every run (resume and scripted exercises rely on it)."""
    world = scenarios.load("leaked-credentials-decrypt-spike")
    seen = []
    for _ in range(2):
        with Sandbox(world) as sandbox:
            leaked = sandbox.users["reports"]["access_key_id"]
            events = (
                sandbox.session()
                .client("cloudtrail")
                .lookup_events(
                    LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": "svc-reports"}]
                )["Events"]
            )
            assert events and {e["AccessKeyId"] for e in events} == {leaked}
            seen.append(leaked)
    assert seen[0] == seen[1] and seen[0].startswith("AKIA")


def test_a_replica_is_seeded_the_same_in_every_world() -> None:
    """moto's generator is seeded: the multi-Region key and its replica have the same ids in
    every run, and templates name the replica (``keys.NAME.replicas``)."""
    world = scenarios.load("policy-tampering")
    seen = []
    for _ in range(2):
        with Sandbox(world) as sandbox:
            seen.append(dict(sandbox.keys))
            assert sandbox.render("{{ keys.hr.replicas[0] }}") == sandbox.keys["hr"]["replicas"][0]
    assert seen[0] == seen[1] and seen[0]["hr"]["replicas"][0].startswith("arn:aws:kms:us-east-1:")


@pytest.mark.parametrize(
    ("good", "bad", "message"),
    [
        ("    multi_region: true\n", "", "keys.hr.replicas: replicas need multi_region: true"),
        ("[us-east-1]", "[mars-1]", "keys.hr.replicas.0: Value error, 'mars-1' is not an AWS"),
        ("[us-east-1]", "[eu-west-1]", "keys.hr.replicas.0: eu-west-1 is the scenario's Region"),
        (
            "[us-east-1]",
            "[us-east-1, us-east-1]",
            "replicas.1: us-east-1 is named twice (one replica per Region)",
        ),
        (
            "[us-east-1]",
            "[eu-west-9]",
            "eu-west-9 is not a Region with KMS in the partition of the scenario's Region, "
            "eu-west-1 (did you mean 'eu-west-3'?)",
        ),
        ("[us-east-1]", "[cn-north-1]", "cn-north-1 is not a Region with KMS"),
    ],
)
def test_a_bad_replica_is_refused_naming_its_line(
    tmp_path: Path, good: str, bad: str, message: str
) -> None:
    path, problem = refused_scenario(tmp_path, "policy-tampering", good, bad)
    line = next(n for n, t in enumerate(path.read_text().splitlines(), 1) if "replicas:" in t)
    assert problem.startswith(f"{path}:{line}:") and message in problem, problem

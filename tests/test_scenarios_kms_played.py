"""The two scenarios built on imported key material and custom key stores, played end to end
with their scripted answers: ``imported-material-deleted`` (kms-imported-material) and
``key-store-disconnect`` (kms-key-store-incident); and a rebuilt sandbox importing a journaled
material file again. What the scenario files may say and how they are seeded:
tests/test_scenarios_kms_extra.py.

AWS's behaviour these follow:
https://docs.aws.amazon.com/kms/latest/developerguide/importing-keys-delete-key-material.html
(only the same material can be imported again),
https://docs.aws.amazon.com/kms/latest/developerguide/disconnect-keystore.html (while a key
store is disconnected its keys are Unavailable; connecting it gives them back).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from botocore.exceptions import ClientError

from kmsir import report
from kmsir.sandbox import Sandbox
from kmsir.sandbox import scenario as scenarios

from .clikit import cli
from .conftest import PLAYBOOKS, load_playbook, played, run_playbook
from .journalkit import journal_lines
from .test_scenarios_kms_extra import ESCROW


def steps_of(bundle: Path) -> dict[str, dict[str, Any]]:
    """Each succeeded step's outputs, by step id."""
    return {
        str(line["step"]): line["data"]["outputs"]
        for line in journal_lines(bundle / "journal.jsonl")
        if line.get("type") == "step-succeeded"
    }


# -- imported-material-deleted, end to end ---------------------------------------------------


def test_imported_material_deleted_is_found_contained_and_reimported(tmp_path: Path) -> None:
    with played("imported-material-deleted", tmp_path) as (sandbox, result):
        kms = sandbox.session().client("kms")
        key = kms.describe_key(KeyId="alias/payments-tokens")["KeyMetadata"]
        sealed = kms.encrypt(KeyId=key["KeyId"], Plaintext=b"4111")["CiphertextBlob"]
        assert kms.decrypt(CiphertextBlob=sealed)["Plaintext"] == b"4111"
        iam = sandbox.session().client("iam")
        contained = iam.list_role_policies(RoleName="kms-key-admins")["PolicyNames"]
    assert (key["Origin"], key["KeyState"]) == ("EXTERNAL", "Enabled")
    assert key.get("CurrentKeyMaterialId")
    assert "AWSRevokeOlderSessions" in contained
    outputs = steps_of(result.bundle)
    assert outputs["snapshot"]["state"] == "PendingImport"
    (finding,) = [
        f
        for f in json.loads(
            next(result.bundle.glob("artifacts/*-findings/findings.json")).read_text()
        )
        if f["title"] == "Imported key material deleted"
    ]
    assert finding["severity"] == "critical"
    assert finding["principal"].endswith("assumed-role/kms-key-admins/ops-laptop-7731")
    imported = outputs["reimport"]
    assert imported["state"] == "Enabled"
    assert imported["material_sha256"] == hashlib.sha256(ESCROW.read_bytes()).hexdigest()
    assert outputs["after"]["state"] == "Enabled"
    # the material itself is nowhere in the bundle
    material = ESCROW.read_bytes()
    assert not any(material in p.read_bytes() for p in result.bundle.rglob("*") if p.is_file())
    md = report.render(result.bundle, fmt="md")
    assert key["KeyId"] in md and "alias/payments-tokens" in md
    assert cli("verify", result.bundle).exit_code == 0


def test_ciphertext_made_before_the_deletion_decrypts_after_the_reimport(tmp_path: Path) -> None:
    """The escrow copy is the key's own material: data encrypted before the attacker deleted
    it decrypts again once the playbook has imported it back (any other material AWS would
    refuse)."""
    world = scenarios.load("imported-material-deleted")
    key = world.keys["payments"]
    assert key.material is not None
    kept = key.model_copy(update={"material": key.material.model_copy(update={"deleted": False})})
    before = world.model_copy(update={"keys": {"payments": kept}})
    with Sandbox(before) as sandbox:
        kms = sandbox.session().client("kms")
        key_id = sandbox.keys["payments"]["id"]
        sealed = kms.encrypt(KeyId=key_id, Plaintext=b"card token")["CiphertextBlob"]
        kms.delete_imported_key_material(KeyId=key_id)  # the attacker
        with pytest.raises(ClientError) as failed:
            kms.decrypt(CiphertextBlob=sealed)
        assert failed.value.response["Error"]["Code"] == "KMSInvalidStateException"
        result = run_playbook(
            load_playbook(PLAYBOOKS / f"{world.playbook}.yaml"),
            sandbox.client_factory(),
            tmp_path,
            inputs=world.inputs,
            answers=world.answers,
            scenario=world.id,
        )
        assert result.status == "succeeded", result.error
        assert kms.decrypt(CiphertextBlob=sealed)["Plaintext"] == b"card token"


def test_keeping_the_key_pending_import_says_what_is_left(tmp_path: Path) -> None:
    with played("imported-material-deleted", tmp_path, answers={"decide": "keep-pending"}) as (
        sandbox,
        result,
    ):
        state = sandbox.session().client("kms").describe_key(KeyId="alias/payments-tokens")
    assert state["KeyMetadata"]["KeyState"] == "PendingImport"
    recovery = next(
        line["data"]["text"]
        for line in journal_lines(result.bundle / "journal.jsonl")
        if line.get("type") == "note" and line.get("step") == "recovery"
    )
    assert "is PendingImport. It holds no key material" in recovery
    assert "succeed again" not in recovery


# -- key-store-disconnect, end to end --------------------------------------------------------


def test_key_store_disconnect_contains_every_key_then_reconnects(tmp_path: Path) -> None:
    with played("key-store-disconnect", tmp_path) as (sandbox, result):
        kms = sandbox.session().client("kms")
        (store,) = kms.describe_custom_key_stores(CustomKeyStoreName="card-issuing-xks")[
            "CustomKeyStores"
        ]
        keys = {
            name: kms.describe_key(KeyId=sandbox.keys[name]["id"])["KeyMetadata"]
            for name in ("pan", "pin")
        }
        grants = kms.list_grants(KeyId=sandbox.keys["pan"]["id"])["Grants"]
        ids = {name: sandbox.keys[name]["id"] for name in ("pan", "pin")}
    assert store["ConnectionState"] == "CONNECTED"
    assert {k["KeyState"] for k in keys.values()} == {"Enabled"}
    assert {k["CustomKeyStoreId"] for k in keys.values()} == {store["CustomKeyStoreId"]}
    assert grants == []  # the outside account's grant is revoked
    outputs = steps_of(result.bundle)
    disconnected = outputs["disconnect"]
    assert disconnected["state"] == "DISCONNECTED"
    # every key in the store, the one the playbook did not name too, was Unavailable
    assert disconnected["key_states"] == {ids["pan"]: "Unavailable", ids["pin"]: "Unavailable"}
    assert outputs["connect"]["state"] == "CONNECTED"
    md = report.render(result.bundle, fmt="md")
    assert ids["pan"] in md and "card-issuing-xks" in md
    assert cli("verify", result.bundle).exit_code == 0


def test_a_store_kept_disconnected_leaves_its_keys_unavailable(tmp_path: Path) -> None:
    answers = {"reconnect": "keep-disconnected"}
    with played("key-store-disconnect", tmp_path, answers=answers) as (sandbox, result):
        kms = sandbox.session().client("kms")
        (store,) = kms.describe_custom_key_stores(CustomKeyStoreName="card-issuing-xks")[
            "CustomKeyStores"
        ]
        pan = kms.describe_key(KeyId="alias/card-pan-xks")["KeyMetadata"]
    assert (store["ConnectionState"], pan["KeyState"]) == ("DISCONNECTED", "Unavailable")
    recovery = next(
        line["data"]["text"]
        for line in journal_lines(result.bundle / "journal.jsonl")
        if line.get("type") == "note" and line.get("step") == "recovery"
    )
    assert f"Key {pan['KeyId']} is Unavailable: key store card-issuing-xks is disconnected" in (
        recovery
    )


def test_a_rebuilt_sandbox_imports_the_journaled_material_again(tmp_path: Path) -> None:
    """Resume and rollback rebuild the sandbox from the journal, which keeps the material
    file's path and sha256 but never the material: the same file is imported again, and one
    that changed since is refused, not imported."""
    from kmsir.evidence.bundle import JOURNAL, read_journal
    from kmsir.run.launch import rebuild_sandbox

    with played("imported-material-deleted", tmp_path) as (original, result):
        world = original.record()
    view = read_journal(result.bundle / JOURNAL).view()
    with rebuild_sandbox(world, "imported-material-deleted") as sandbox:
        replayed = sandbox.replay(view)
        key = sandbox.session().client("kms").describe_key(KeyId="alias/payments-tokens")
    assert not replayed["refused"]
    assert key["KeyMetadata"]["KeyState"] == "Enabled"

    other = tmp_path / "not-the-escrow.key"
    other.write_bytes(bytes(32))
    for moment in view.input_files:
        moment.record = msgspec.structs.replace(moment.record, path=str(other))
    with rebuild_sandbox(world, "imported-material-deleted") as sandbox:
        replayed = sandbox.replay(view)
        key = sandbox.session().client("kms").describe_key(KeyId="alias/payments-tokens")
    assert replayed["refused"] == [
        f"ImportKeyMaterial: material file {other} has changed since the run (sha256 differs)"
    ]
    assert key["KeyMetadata"]["KeyState"] == "PendingImport"

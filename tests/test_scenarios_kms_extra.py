"""Scenarios with imported key material and custom key stores: what the scenario files may say
(``origin: EXTERNAL`` with ``material:``, ``key_stores:`` and a key's ``store:``), how the
sandbox seeds it with the calls AWS documents, and the two scenarios built on them played end
to end with their scripted answers: ``imported-material-deleted`` (kms-imported-material) and
``key-store-disconnect`` (kms-key-store-incident).

AWS's behaviour these follow:
https://docs.aws.amazon.com/kms/latest/developerguide/importing-keys.html (an EXTERNAL key is
PendingImport until material is imported, and again once it is deleted or expires),
https://docs.aws.amazon.com/kms/latest/developerguide/importing-keys-delete-key-material.html
(only the same material can be imported again),
https://docs.aws.amazon.com/kms/latest/developerguide/disconnect-keystore.html (while a key
store is disconnected its keys are Unavailable, unless pending deletion; connecting it gives
them back).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from botocore.exceptions import ClientError

from kmsir import report
from kmsir.actions.audit import AuditParams, practice_key_stores
from kmsir.actions.audit.context import AuditContext, gather
from kmsir.actions.audit.rules import evaluate
from kmsir.aws import ClientFactory
from kmsir.errors import PlaybookError
from kmsir.posture import Check
from kmsir.sandbox import Sandbox
from kmsir.sandbox import scenario as scenarios
from kmsir.sandbox.scenario_model import Scenario

from .clikit import cli
from .conftest import PLAYBOOKS, load_playbook, played, run_playbook
from .fakes import context
from .journalkit import journal_lines

ESCROW = scenarios.scenario_dir() / "escrow" / "payments-tokens.key"

#: A minimal scenario the model tests vary.
BASE: dict[str, Any] = {
    "id": "kms-extra",
    "title": "t",
    "story": "s",
    "playbook": "kms-key-outage",
    "keys": {"k": {"description": "d"}},
}


def scenario(**changes: Any) -> Scenario:
    return Scenario.model_validate({**BASE, **changes})


def refused(tmp_path: Path, data: dict[str, Any]) -> str:
    """The one problem loading ``data`` (written beside a copy of the escrow folder) names."""
    shutil.copytree(ESCROW.parent, tmp_path / "escrow", dirs_exist_ok=True)
    path = tmp_path / "world.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(PlaybookError) as raised:
        scenarios.load(str(path))
    (problem,) = raised.value.problems
    return str(problem)


def steps_of(bundle: Path) -> dict[str, dict[str, Any]]:
    """Each succeeded step's outputs, by step id."""
    return {
        str(line["step"]): line["data"]["outputs"]
        for line in journal_lines(bundle / "journal.jsonl")
        if line.get("type") == "step-succeeded"
    }


# -- the model ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ({"material": {"file": "escrow/payments-tokens.key"}}, "only a key with origin: EXTERNAL"),
        ({"origin": "EXTERNAL", "material": {"file": "/etc/key"}}, "relative to the scenario"),
        ({"origin": "EXTERNAL", "material": {"file": "m", "valid_to": "soon"}}, "duration"),
        ({"origin": "EXTERNAL", "material": {"file": "m", "valid_to": "366d"}}, "at most 365"),
        ({"origin": "EXTERNAL", "rotation": True}, "key material from KMS"),
        ({"origin": "EXTERNAL", "enabled": False}, "PendingImport, which AWS does not disable"),
        ({"store": "hsm", "origin": "EXTERNAL"}, "takes its origin from the store"),
        ({"store": "hsm", "spec": "RSA_2048"}, "single-Region symmetric"),
        ({"store": "hsm", "multi_region": True}, "single-Region symmetric"),
        ({"store": "hsm", "rotation": True}, "key material from KMS"),
        ({"store": "vault"}, "unknown key store 'vault' (key_stores: hsm)"),
    ],
)
def test_a_key_asks_only_what_aws_allows(key: dict[str, Any], problem: str) -> None:
    stores = {"hsm": {"type": "CLOUDHSM"}}
    with pytest.raises(ValueError, match="validation error") as raised:
        scenario(keys={"k": key}, key_stores=stores)
    assert problem in str(raised.value)


def test_a_scenario_without_the_new_fields_dumps_as_before() -> None:
    """No ``key_stores``, ``material`` or ``store`` in the dump of a scenario that does not
    use them: its fingerprint (a recorded sandbox run resumes on it) stays what it was."""
    dumped = scenarios.load("rogue-grant").model_dump(mode="json")
    assert "key_stores" not in dumped
    assert all("material" not in k and "store" not in k for k in dumped["keys"].values())


def test_a_file_input_is_a_path_the_run_opens_and_dumps_as_written(tmp_path: Path) -> None:
    world = scenarios.load("imported-material-deleted")
    given = Path(world.inputs["material"])
    assert given.is_absolute() and given.read_bytes() == ESCROW.read_bytes()
    assert world.model_dump(mode="json")["inputs"]["material"] == {
        "file": "escrow/payments-tokens.key"
    }
    # the same scenario elsewhere (its escrow folder not beside it) finds the built-in copy,
    # and fingerprints the same
    copy = tmp_path / "copy.yaml"
    copy.write_text((scenarios.scenario_dir() / "imported-material-deleted.yaml").read_text())
    moved = scenarios.load(str(copy))
    assert Path(moved.inputs["material"]) == given
    assert moved.model_dump(mode="json") == world.model_dump(mode="json")


def test_a_missing_or_wrong_sized_material_file_is_refused_at_load(tmp_path: Path) -> None:
    key = {"origin": "EXTERNAL", "material": {"file": "escrow/none.key"}}
    problem = refused(tmp_path, {**BASE, "keys": {"k": key}})
    assert problem.startswith(f"{tmp_path / 'world.yaml'}:")
    assert "keys.k.material.file: no file 'escrow/none.key'" in problem
    (tmp_path / "short.key").write_bytes(b"0123456789abcdef")  # 16 bytes
    key = {"origin": "EXTERNAL", "material": {"file": "short.key"}}
    problem = refused(tmp_path, {**BASE, "keys": {"k": key}})
    assert "holds 16 bytes; AWS imports 32" in problem
    problem = refused(tmp_path, {**BASE, "inputs": {"material": {"file": "nowhere.key"}}})
    assert "inputs.material.file: no file 'nowhere.key'" in problem


# -- seeding ---------------------------------------------------------------------------------


@pytest.fixture
def seeded() -> Iterator[tuple[Sandbox, datetime]]:
    """A sandbox with every kind of key the new fields make (one sandbox at a time: moto's
    world is the process's)."""
    world = scenarios.load("imported-material-deleted")
    material = {"file": "escrow/payments-tokens.key"}
    world = Scenario.model_validate(
        {
            **BASE,
            "key_stores": {
                "hsm": {"type": "CLOUDHSM", "connected": False},
                "xks": {"type": "EXTERNAL", "name": "proxy-store"},
            },
            "keys": {
                "expiring": {"origin": "EXTERNAL", "material": {**material, "valid_to": "20d"}},
                "lasting": {"origin": "EXTERNAL", "material": material},
                "deleted": {"origin": "EXTERNAL", "material": {**material, "deleted": True}},
                "never": {"origin": "EXTERNAL"},
                "in-hsm": {"store": "hsm", "alias": "alias/in-hsm"},
                "in-xks": {"store": "xks"},
            },
        }
    ).located(world.folder or scenarios.scenario_dir(), {})
    now = datetime.now(timezone.utc)
    with Sandbox(world, now=now) as sandbox:
        yield sandbox, now


def described(sandbox: Sandbox, name: str) -> dict[str, Any]:
    kms = sandbox.session().client("kms")
    return dict(kms.describe_key(KeyId=sandbox.keys[name]["id"])["KeyMetadata"])


def test_imported_material_is_seeded_with_its_expiry(seeded: tuple[Sandbox, datetime]) -> None:
    sandbox, now = seeded
    expiring = described(sandbox, "expiring")
    assert (expiring["Origin"], expiring["KeyState"]) == ("EXTERNAL", "Enabled")
    assert expiring["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    assert abs(expiring["ValidTo"] - (now + timedelta(days=20))) < timedelta(seconds=5)
    lasting = described(sandbox, "lasting")
    assert lasting["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE"
    assert "ValidTo" not in lasting
    assert described(sandbox, "deleted")["KeyState"] == "PendingImport"
    assert described(sandbox, "never")["KeyState"] == "PendingImport"
    kms = sandbox.session().client("kms")
    sealed = kms.encrypt(KeyId=sandbox.keys["lasting"]["id"], Plaintext=b"pan")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=sealed)["Plaintext"] == b"pan"
    with pytest.raises(ClientError) as failed:
        kms.encrypt(KeyId=sandbox.keys["deleted"]["id"], Plaintext=b"pan")
    assert failed.value.response["Error"]["Code"] == "KMSInvalidStateException"


def test_key_stores_are_seeded_with_their_keys(seeded: tuple[Sandbox, datetime]) -> None:
    sandbox, _ = seeded
    kms = sandbox.session().client("kms")
    stores = {
        s["CustomKeyStoreName"]: s for s in kms.describe_custom_key_stores()["CustomKeyStores"]
    }
    assert set(stores) == {"hsm", "proxy-store"}
    hsm, xks = stores["hsm"], stores["proxy-store"]
    assert (hsm["CustomKeyStoreType"], hsm["ConnectionState"]) == ("AWS_CLOUDHSM", "DISCONNECTED")
    assert (xks["CustomKeyStoreType"], xks["ConnectionState"]) == (
        "EXTERNAL_KEY_STORE",
        "CONNECTED",
    )
    assert sandbox.key_stores == {
        "hsm": {"id": hsm["CustomKeyStoreId"], "name": "hsm", "type": "AWS_CLOUDHSM"},
        "xks": {"id": xks["CustomKeyStoreId"], "name": "proxy-store", "type": "EXTERNAL_KEY_STORE"},
    }
    in_hsm, in_xks = described(sandbox, "in-hsm"), described(sandbox, "in-xks")
    assert (in_hsm["Origin"], in_hsm["KeyState"]) == ("AWS_CLOUDHSM", "Unavailable")
    assert in_hsm["CustomKeyStoreId"] == hsm["CustomKeyStoreId"]
    assert (in_xks["Origin"], in_xks["KeyState"]) == ("EXTERNAL_KEY_STORE", "Enabled")
    assert in_xks["XksKeyConfiguration"] == {"Id": "xks-key-in-xks"}
    assert kms.list_aliases(KeyId=in_hsm["KeyId"])["Aliases"][0]["AliasName"] == "alias/in-hsm"
    # templates see the stores as seeded, and the stand-in world has the same names
    assert sandbox.template_context()["key_stores"] == sandbox.key_stores
    stand_in = scenarios.stand_in_world(sandbox.scenario)["key_stores"]
    assert {n: s["type"] for n, s in stand_in.items()} == {
        n: s["type"] for n, s in sandbox.key_stores.items()
    }


def store_checks(clients: ClientFactory, account: str) -> list[Check]:
    """The key-store check of the posture review over every key of the Region."""
    ctx, _ = context(clients)
    audit = AuditContext(
        ctx=ctx, region="eu-west-1", account=account, settings=AuditParams(all=True)
    )
    gather(audit, None)
    return evaluate(audit, practice_key_stores.RULES)


def test_the_review_fails_a_disconnected_store_that_holds_keys(
    seeded: tuple[Sandbox, datetime],
) -> None:
    sandbox, _ = seeded
    checks = {c.status: c for c in store_checks(sandbox.client_factory(), sandbox.account)}
    assert set(checks) == {"fail", "pass"}
    failed = checks["fail"]
    assert (failed.id, failed.practice, failed.severity) == ("key-store-connected", 7, "medium")
    assert failed.resources == (sandbox.keys["in-hsm"]["arn"],)
    store = sandbox.key_stores["hsm"]["id"]
    assert f"AWS_CLOUDHSM key store {store} (hsm) is DISCONNECTED" in failed.detail
    assert "(Unavailable)" in failed.detail
    assert any(e.endswith("custom-key-stores.json") for e in failed.evidence)
    assert checks["pass"].resources == (sandbox.keys["in-xks"]["arn"],)


def test_the_store_check_does_not_apply_without_keys_in_a_store(
    moto_clients: ClientFactory,
) -> None:
    moto_clients.client("kms").create_key(Origin="EXTERNAL")
    (check,) = store_checks(moto_clients, "123456789012")
    assert check.status == "not-applicable"


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

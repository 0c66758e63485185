"""Scenarios with imported key material and custom key stores: what the scenario files may say
(``origin: EXTERNAL`` with ``material:``, ``key_stores:`` and a key's ``store:``), how the
sandbox seeds it with the calls AWS documents, and the posture review's key-store check on
it. The two scenarios built on them, played end to end: tests/test_scenarios_kms_played.py.

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

import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError

from kmsir.actions.audit import AuditParams, practice_key_stores
from kmsir.actions.audit.context import AuditContext, gather
from kmsir.actions.audit.rules import evaluate
from kmsir.aws import ClientFactory
from kmsir.errors import PlaybookError
from kmsir.posture import Check
from kmsir.sandbox import Sandbox
from kmsir.sandbox import scenario as scenarios
from kmsir.sandbox.scenario_model import Scenario

from .fakes import context

ESCROW = scenarios.scenario_dir() / "escrow" / "payments-tokens.key"

#: A minimal scenario the model tests vary.
BASE: dict[str, Any] = {
    "id": "kms-extra",
    "title": "t",
    "briefing": "s",
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


# -- the model ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ({"material": {"file": "escrow/payments-tokens.key"}}, "only a key with origin: EXTERNAL"),
        ({"origin": "EXTERNAL", "material": {"file": "/etc/key"}}, "relative to the scenario"),
        ({"origin": "EXTERNAL", "material": {"file": "m", "valid_to": "soon"}}, "duration"),
        ({"origin": "EXTERNAL", "material": {"file": "m", "valid_to": "366d"}}, "at most 365"),
        ({"origin": "EXTERNAL", "material": {"file": "m", "valid_to": "0d"}}, "for a while"),
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


def test_a_world_rebuilt_after_its_material_expired_has_the_key_pending_import() -> None:
    """Resume and rollback rebuild a world at the clock it started with: material that would
    have expired since is gone, as AWS deletes expired material, and seeding does not fail on
    a ValidTo in the past."""
    world = scenarios.load("posture-drift")  # card-issuing's material: valid_to 12d
    started = datetime.now(timezone.utc) - timedelta(days=13)
    with Sandbox(world, now=started) as sandbox:
        kms = sandbox.session().client("kms")
        key = kms.describe_key(KeyId="alias/card-issuing-byok")["KeyMetadata"]
    assert (key["Origin"], key["KeyState"]) == ("EXTERNAL", "PendingImport")


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

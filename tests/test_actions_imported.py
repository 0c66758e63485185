"""``kms.delete-imported-material`` and ``kms.import-key-material`` against the sandbox: the
key's state and its use, the journal (the material's sha256, never the material), the inverse
in a rollback plan, each refusal, check mode.

AWS's behaviour checked here:
- DeleteImportedKeyMaterial makes the key unusable at once, state PendingImport; only the same
  material can be imported again:
  https://docs.aws.amazon.com/kms/latest/APIReference/API_DeleteImportedKeyMaterial.html
- ImportKeyMaterial: the key must be EXTERNAL and PendingImport; other material is refused
  (IncorrectKeyMaterialException); ValidTo is in the future, at most 365 days ahead, and is
  omitted with KEY_MATERIAL_DOES_NOT_EXPIRE:
  https://docs.aws.amazon.com/kms/latest/APIReference/API_ImportKeyMaterial.html
- The material is a 256-bit symmetric key, wrapped under GetParametersForImport's public key:
  https://docs.aws.amazon.com/kms/latest/developerguide/importing-keys.html
"""

from __future__ import annotations

import hashlib
import json
import os
from base64 import b64encode
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from kmsir import actions
from kmsir.actions.kms_imported import (
    DeleteImportedMaterial,
    ImportMaterial,
    ImportParams,
)
from kmsir.actions.kmskeys import KeyParams
from kmsir.errors import ActionError
from kmsir.evidence.bundle import JOURNAL, read_journal
from kmsir.evidence.calls import describe
from kmsir.run import rollback
from kmsir.sandbox import Sandbox
from kmsir.sandbox.seed_kms import import_bytes

from .conftest import load_playbook, run_playbook
from .fakes import context
from .test_shim import error_code

MATERIAL = bytes(range(1, 33))


def external_key(sandbox: Sandbox, material: bytes | None = MATERIAL) -> str:
    """An EXTERNAL key, with ``material`` imported as the sandbox seeds it (``import_bytes``)."""
    kms = sandbox.session().client("kms")
    key_id = str(kms.create_key(Origin="EXTERNAL", Description="imported")["KeyMetadata"]["KeyId"])
    if material is not None:
        import_bytes(kms, key_id, material, {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"})
    return key_id


def metadata(sandbox: Sandbox, key_id: str) -> dict[str, Any]:
    return dict(sandbox.session().client("kms").describe_key(KeyId=key_id)["KeyMetadata"])


def material_file(tmp_path: Path, data: bytes = MATERIAL, name: str = "escrow.bin") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_delete_stops_every_use_and_the_same_material_brings_the_key_back(
    rogue_grant: Sandbox, tmp_path: Path
) -> None:
    key_id = external_key(rogue_grant)
    kms = rogue_grant.session().client("kms")
    sealed = kms.encrypt(KeyId=key_id, Plaintext=b"card data")["CiphertextBlob"]
    material_id = metadata(rogue_grant, key_id).get("CurrentKeyMaterialId")
    ctx, calls = context(rogue_grant.client_factory())

    preview = DeleteImportedMaterial().preview(ctx, KeyParams(key=key_id))
    assert [describe(c) for c in preview.calls] == [f"kms:DeleteImportedKeyMaterial KeyId={key_id}"]
    assert key_id in preview.typed  # high impact: the key id is typed to approve
    assert any("reversible only with the original material" in n for n in preview.notes)
    outcome = DeleteImportedMaterial().run(ctx, KeyParams(key=key_id))
    assert metadata(rogue_grant, key_id)["KeyState"] == "PendingImport"
    assert outcome.outputs["state"] == "PendingImport"
    assert outcome.outputs["key_material_id"] == material_id
    assert (outcome.before or {})["state"] == "Enabled"
    assert "reversible only with the original material" in outcome.summary
    assert error_code(lambda: kms.decrypt(CiphertextBlob=sealed)) == "KMSInvalidStateException"
    assert DeleteImportedMaterial().run(ctx, KeyParams(key=key_id)).status == "already"
    assert sum(c.operation == "DeleteImportedKeyMaterial" for c in calls) == 1

    params = ImportParams(key=key_id, material=material_file(tmp_path))
    shown = ImportMaterial().preview(ctx, params)
    assert [c.operation for c in shown.calls] == ["GetParametersForImport", "ImportKeyMaterial"]
    assert shown.calls[1].params["ExpirationModel"] == "KEY_MATERIAL_DOES_NOT_EXPIRE"
    imported = ImportMaterial().run(ctx, params)
    assert metadata(rogue_grant, key_id)["KeyState"] == "Enabled"
    assert kms.decrypt(CiphertextBlob=sealed)["Plaintext"] == b"card data"
    assert imported.outputs["material_sha256"] == hashlib.sha256(MATERIAL).hexdigest()
    assert imported.outputs["valid_to"] is None
    assert imported.outputs["key_material_id"]
    again = ImportMaterial().run(ctx, params)
    assert again.status == "already" and "already has key material" in again.summary
    assert sum(c.operation == "ImportKeyMaterial" for c in calls) == 1
    # the material's file was journaled by its sha256, the material itself never
    files = [data for kind, data in ctx.artifacts.events if kind == "input-file"]  # type: ignore[attr-defined]
    assert files and all(f["sha256"] == imported.outputs["material_sha256"] for f in files)
    recorded = json.dumps(ctx.artifacts.events, default=str) + repr(calls)  # type: ignore[attr-defined]
    for form in (MATERIAL.hex(), b64encode(MATERIAL).decode(), repr(MATERIAL)):
        assert form not in recorded


def test_valid_to_sets_the_expiry_and_is_checked(rogue_grant: Sandbox, tmp_path: Path) -> None:
    key_id = external_key(rogue_grant, material=None)
    ctx, _ = context(rogue_grant.client_factory())
    path = material_file(tmp_path)
    with pytest.raises(ValueError, match="neither a duration like 365d nor an ISO 8601 time"):
        ImportParams(key=key_id, material=path, valid_to="soon")
    with pytest.raises(ActionError, match="at most 365 days ahead"):
        ImportMaterial().run(ctx, ImportParams(key=key_id, material=path, valid_to="400d"))
    past = (datetime.now(timezone.utc) - timedelta(days=1)).isoformat()
    with pytest.raises(ActionError, match="in the future"):
        ImportMaterial().run(ctx, ImportParams(key=key_id, material=path, valid_to=past))
    assert metadata(rogue_grant, key_id)["KeyState"] == "PendingImport"

    outcome = ImportMaterial().run(ctx, ImportParams(key=key_id, material=path, valid_to="30d"))
    found = metadata(rogue_grant, key_id)
    assert found["ExpirationModel"] == "KEY_MATERIAL_EXPIRES"
    expected = datetime.now(timezone.utc) + timedelta(days=30)
    assert abs(found["ValidTo"] - expected) < timedelta(minutes=5)
    assert outcome.outputs["valid_to"] == found["ValidTo"].isoformat()


def test_other_material_is_refused_and_the_key_stays_pending_import(
    rogue_grant: Sandbox, tmp_path: Path
) -> None:
    key_id = external_key(rogue_grant)
    ctx, _ = context(rogue_grant.client_factory())
    DeleteImportedMaterial().run(ctx, KeyParams(key=key_id))
    wrong = material_file(tmp_path, os.urandom(32), "wrong.bin")
    with pytest.raises(ActionError, match="not the key's original material"):
        ImportMaterial().run(ctx, ImportParams(key=key_id, material=wrong))
    assert metadata(rogue_grant, key_id)["KeyState"] == "PendingImport"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b64encode(MATERIAL) + b"\n", "holds 45 bytes"),  # base64 text, not the raw bytes
        (None, "cannot read"),
    ],
)
def test_the_material_file_must_hold_the_32_raw_bytes(
    rogue_grant: Sandbox, tmp_path: Path, data: bytes | None, problem: str
) -> None:
    key_id = external_key(rogue_grant, material=None)
    ctx, calls = context(rogue_grant.client_factory())
    path = tmp_path / "escrow.bin"
    if data is not None:
        path.write_bytes(data)
    with pytest.raises(ActionError, match=problem):
        ImportMaterial().run(ctx, ImportParams(key=key_id, material=str(path)))
    assert all(c.read_only for c in calls)


def test_keys_whose_material_kms_made_are_refused(rogue_grant: Sandbox, tmp_path: Path) -> None:
    ctx, calls = context(rogue_grant.client_factory())
    refusal = "its origin is AWS_KMS, not EXTERNAL"
    with pytest.raises(ActionError, match=refusal):
        DeleteImportedMaterial().preview(ctx, KeyParams(key="alias/payments-prod"))
    with pytest.raises(ActionError, match=refusal):
        DeleteImportedMaterial().run(ctx, KeyParams(key="alias/payments-prod"))
    params = ImportParams(key="alias/payments-prod", material=material_file(tmp_path))
    with pytest.raises(ActionError, match=refusal):
        ImportMaterial().run(ctx, params)
    assert all(c.read_only for c in calls)
    key_id = rogue_grant.keys["payments"]["id"]
    assert metadata(rogue_grant, key_id)["KeyState"] == "Enabled"
    # AWS refuses it too (the shim answers as the API reference says)
    kms = rogue_grant.session().client("kms")
    assert error_code(lambda: kms.delete_imported_key_material(KeyId=key_id)) == (
        "UnsupportedOperationException"
    )


def playbook(tmp_path: Path, key_id: str, material: str) -> Path:
    path = tmp_path / "imported.yaml"
    path.write_text(
        "id: imported\ntitle: Imported material\nsteps:\n"
        f"  - {{id: delete, action: kms.delete-imported-material, with: {{key: {key_id}}}}}\n"
        "  - id: reimport\n"
        "    action: kms.import-key-material\n"
        f"    with: {{key: {key_id}, material: '{material}', valid_to: 90d}}\n"
    )
    return path


def test_check_mode_changes_nothing(rogue_grant: Sandbox, tmp_path: Path) -> None:
    key_id = external_key(rogue_grant)
    result = run_playbook(
        load_playbook(playbook(tmp_path, key_id, material_file(tmp_path))),
        rogue_grant.client_factory(),
        tmp_path / "ev",
        mode="check",
        yes=True,
    )
    assert result.status == "succeeded", result.error
    assert {s.step_id: s.status for s in result.steps} == {
        "delete": "would-run",
        "reimport": "would-run",
    }
    assert metadata(rogue_grant, key_id)["KeyState"] == "Enabled"
    view = read_journal(result.bundle / JOURNAL).view()
    assert not view.world


def test_the_journal_and_the_rollback_plan(rogue_grant: Sandbox, tmp_path: Path) -> None:
    key_id = external_key(rogue_grant)
    escrow = material_file(tmp_path)
    book = tmp_path / "delete.yaml"
    book.write_text(
        "id: contain\ntitle: Contain\nsteps:\n"
        f"  - {{id: delete, action: kms.delete-imported-material, with: {{key: {key_id}}}}}\n"
    )
    deleted = run_playbook(
        load_playbook(book), rogue_grant.client_factory(), tmp_path / "ev", yes=True
    )
    assert deleted.status == "succeeded", deleted.error
    view = read_journal(deleted.bundle / JOURNAL).view()
    step = view.steps["delete"]
    assert (step.before or {})["state"] == "Enabled"
    assert (step.after or {})["state"] == "PendingImport"
    assert step.inverse == "kms.import-key-material"
    now = datetime.now(timezone.utc)
    (item,) = rollback.plan(deleted.bundle, view, actions.registry(), now).items
    assert item.kind == "irreversible"
    assert "reversible only with the original material" in item.text
    assert "kms.import-key-material" in item.text

    book.write_text(
        "id: recover\ntitle: Recover\nsteps:\n"
        "  - id: reimport\n    action: kms.import-key-material\n"
        f"    with: {{key: {key_id}, material: '{escrow}', valid_to: 90d}}\n"
    )
    imported = run_playbook(
        load_playbook(book), rogue_grant.client_factory(), tmp_path / "ev", yes=True
    )
    assert imported.status == "succeeded", imported.error
    raw = (imported.bundle / JOURNAL).read_text()
    assert hashlib.sha256(MATERIAL).hexdigest() in raw  # the file's sha256 is journaled
    for form in (MATERIAL.hex(), b64encode(MATERIAL).decode()):
        assert form not in raw  # the material is not
    kept = b"".join(p.read_bytes() for p in imported.bundle.rglob("*") if p.is_file())
    assert MATERIAL not in kept and MATERIAL.hex().encode() not in kept
    view = read_journal(imported.bundle / JOURNAL).view()
    assert (view.steps["reimport"].after or {})["state"] == "Enabled"
    (item,) = rollback.plan(imported.bundle, view, actions.registry(), now).items
    assert item.kind == "undo" and item.undo is not None
    assert (item.undo.action, item.undo.params) == ("kms.delete-imported-material", {"key": key_id})
    # the inverse, run as the rollback would run it
    ctx, _ = context(rogue_grant.client_factory())
    DeleteImportedMaterial().run(ctx, KeyParams(**item.undo.params))
    assert metadata(rogue_grant, key_id)["KeyState"] == "PendingImport"

    # a run that deletes the material and imports it again undid its own change: the
    # rollback leaves both steps alone (it would otherwise delete the material once more)
    ImportMaterial().run(ctx, ImportParams(key=key_id, material=escrow))
    both = run_playbook(
        load_playbook(playbook(tmp_path, key_id, escrow)),
        rogue_grant.client_factory(),
        tmp_path / "ev",
        yes=True,
    )
    assert both.status == "succeeded", both.error
    view = read_journal(both.bundle / JOURNAL).view()
    items = rollback.plan(both.bundle, view, actions.registry(), now).items
    assert [(i.step_id, i.kind) for i in items] == [("reimport", "undone"), ("delete", "undone")]


def test_a_key_that_has_material_is_left_alone_and_the_file_not_vouched_for(
    rogue_grant: Sandbox, tmp_path: Path
) -> None:
    """Nothing is imported into a key with material, so nothing says the file holds it: no
    ``material_sha256``; and the advice for a new expiry is AWS's (import the same material
    again), never to delete the material first."""
    key_id = external_key(rogue_grant)
    ctx, calls = context(rogue_grant.client_factory())
    other = material_file(tmp_path, os.urandom(32), "other.bin")  # not the key's material
    params = ImportParams(key=key_id, material=other, valid_to="30d")
    preview = ImportMaterial().preview(ctx, params)
    assert preview.calls == ()
    outcome = ImportMaterial().run(ctx, params)
    assert outcome.status == "already"
    assert outcome.outputs["material_sha256"] is None
    assert (
        outcome.outputs["key_material_id"] == metadata(rogue_grant, key_id)["CurrentKeyMaterialId"]
    )
    for text in (outcome.summary, *preview.notes):
        assert "was not checked against the key's material" in text
        assert "AWS takes the same material again with ImportKeyMaterial" in text
        assert "delete and re-import" not in text
    assert all(c.read_only for c in calls)


@pytest.mark.parametrize("material", [MATERIAL, None], ids=["with-material", "without"])
def test_a_key_pending_deletion_is_refused(
    rogue_grant: Sandbox, tmp_path: Path, material: bytes | None
) -> None:
    """With material or without, a key pending deletion takes no import (AWS answers
    KMSInvalidStateException): cancel the deletion first."""
    key_id = external_key(rogue_grant, material=material)
    rogue_grant.session().client("kms").schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    ctx, calls = context(rogue_grant.client_factory())
    params = ImportParams(key=key_id, material=material_file(tmp_path))
    for attempt in (ImportMaterial().preview, ImportMaterial().run):
        with pytest.raises(ActionError, match=r"is PendingDeletion .*cancel the deletion first"):
            attempt(ctx, params)
    assert all(c.read_only for c in calls)
    assert metadata(rogue_grant, key_id)["KeyState"] == "PendingDeletion"

"""Mutating steps end to end: check mode sends nothing, every change journals its inverse,
errors are one line naming step, action, key and AWS code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from kmsir.actions import registry
from kmsir.aws import aws_errors
from kmsir.errors import AwsError, CheckModeRefusal
from kmsir.evidence.calls import Call, is_read_only
from kmsir.evidence.entries import CheckMode, read
from kmsir.sandbox import Sandbox

from .conftest import load_playbook, run_playbook

GLASS = "arn:aws:sts::123456789012:user/moto"


def every_mutating_step(key: str, rogue: str) -> str:
    return f"""\
id: all-changes
title: Every mutating action once
steps:
  - {{id: snap, action: kms.snapshot, with: {{key: {key}}}}}
  - {{id: tag, action: kms.tag-key, with: {{key: {key}}}}}
  - {{id: rotation, action: kms.enable-rotation, with: {{key: {key}, period_days: 90}}}}
  - {{id: rotate, action: kms.rotate-now, with: {{key: {key}}}}}
  - {{id: revoke, action: kms.revoke-grants, with: {{key: {key}, grant_ids: [{rogue}]}}}}
  - {{id: quarantine, action: kms.quarantine, with: {{key: {key}, break_glass: ["{GLASS}"]}}}}
  - {{id: restore, action: kms.restore-policy, with: {{key: {key}, from: quarantine}}}}
  - id: policy
    action: kms.put-policy
    with:
      key: {key}
      policy: {{Statement: [{{Sid: Admins, Effect: Allow, Principal: {{AWS: "123456789012"}},
                            Action: "kms:*", Resource: "*"}}]}}
  - {{id: disable, action: kms.disable-key, with: {{key: {key}}}}}
  - {{id: enable, action: kms.enable-key, with: {{key: {key}}}}}
  - {{id: delete, action: kms.schedule-deletion, with: {{key: {key}, pending_window_days: 7}}}}
  - {{id: cancel, action: kms.cancel-deletion, with: {{key: {key}}}}}
"""


@pytest.fixture
def moto_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every KMS operation that reaches moto's request handling."""
    from moto.kms.responses import KmsResponse

    seen: list[str] = []
    original = KmsResponse.call_action

    def counting(self: Any) -> Any:
        seen.append(self._get_action())
        return original(self)

    monkeypatch.setattr(KmsResponse, "call_action", counting)
    return seen


def journal(bundle: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (bundle / "journal.jsonl").read_text().splitlines()]


def test_check_mode_sends_no_mutating_call(
    rogue_grant: Sandbox, tmp_path: Path, moto_calls: list[str]
) -> None:
    book = tmp_path / "all.yaml"
    book.write_text(
        every_mutating_step(rogue_grant.keys["payments"]["id"], rogue_grant.grants["rogue"]["id"])
    )
    result = run_playbook(
        load_playbook(book),
        rogue_grant.client_factory(),
        tmp_path / "ev",
        mode="check",
        yes=True,
        scenario="rogue-grant",
    )
    assert result.status == "succeeded", result.error
    assert moto_calls, "the counting hook saw nothing"
    assert [op for op in moto_calls if not is_read_only(op)] == []
    statuses = {s.step_id: s.status for s in result.steps}
    assert statuses.pop("snap") == "succeeded"
    assert set(statuses.values()) == {"would-run"}
    would = {
        e.step: e.data.would_call
        for e in map(read, journal(result.bundle))
        if isinstance(e.data, CheckMode)
    }
    revoke = {
        "KeyId": rogue_grant.keys["payments"]["id"],
        "GrantId": rogue_grant.grants["rogue"]["id"],
    }
    assert would["revoke"] == [Call(service="kms", operation="RevokeGrant", params=revoke)]


def test_the_guard_refuses_mutating_calls_in_check_mode(rogue_grant: Sandbox) -> None:
    factory = rogue_grant.client_factory()
    factory.check_mode = True
    with pytest.raises(CheckModeRefusal, match="refused to send kms:DisableKey"):
        factory.client("kms").disable_key(KeyId=rogue_grant.keys["payments"]["id"])
    assert factory.client("kms").describe_key(KeyId="alias/payments-prod")["KeyMetadata"]


def test_every_change_records_its_inverse(rogue_grant: Sandbox, tmp_path: Path) -> None:
    book = tmp_path / "all.yaml"
    book.write_text(
        every_mutating_step(rogue_grant.keys["payments"]["id"], rogue_grant.grants["rogue"]["id"])
    )
    result = run_playbook(
        load_playbook(book),
        rogue_grant.client_factory(),
        tmp_path / "ev",
        yes=True,
        scenario="rogue-grant",
    )
    assert result.status == "succeeded", result.error
    entries = journal(result.bundle)
    done = {e["step"]: e["data"] for e in entries if e["type"] == "step-succeeded"}
    actions = registry()
    for step, data in done.items():
        action = actions[data["action"]]
        if action.mutating:
            assert data["inverse"] == action.inverse, step
    assert done["revoke"]["inverse"] == "irreversible"
    assert done["delete"]["inverse"] == "kms.cancel-deletion"
    assert done["delete"]["inverse_until"] == done["delete"]["outputs"]["deletion_date"]
    decisions = [e for e in entries if e["type"] == "decision"]
    assert {d["step"] for d in decisions} == set(done) - {"snap"}
    assert all(d["data"]["by"] == "auto-approved" for d in decisions)


def test_aws_errors_are_one_line_naming_step_action_key_and_code(
    rogue_grant: Sandbox, tmp_path: Path
) -> None:
    book = tmp_path / "missing.yaml"
    book.write_text(
        "id: m\ntitle: M\nsteps:\n"
        "  - {id: stop-it, action: kms.disable-key, with: {key: alias/nope}}\n"
    )
    result = run_playbook(
        load_playbook(book),
        rogue_grant.client_factory(),
        tmp_path / "ev",
        yes=True,
        scenario="rogue-grant",
    )
    assert result.status == "failed"
    assert result.error is not None and "\n" not in result.error
    assert result.error.startswith(
        "step 'stop-it' (kms.disable-key): DescribeKey on alias/nope: AWS NotFoundException"
    )


def test_access_denied_names_the_missing_permission() -> None:
    denied = ClientError(
        {"Error": {"Code": "AccessDeniedException", "Message": "User: x is not authorized"}},
        "DisableKey",
    )
    with pytest.raises(AwsError) as caught, aws_errors("DisableKey on 1234"):
        raise denied
    assert str(caught.value) == (
        "DisableKey on 1234: AWS AccessDeniedException: User: x is not "
        "authorized (missing IAM permission kms:DisableKey?)"
    )
    assert caught.value.code == "AccessDeniedException"


def test_a_change_already_made_records_no_inverse(rogue_grant: Sandbox, tmp_path: Path) -> None:
    key_id = rogue_grant.keys["payments"]["id"]
    rogue_grant.session().client("kms").disable_key(KeyId=key_id)
    book = tmp_path / "again.yaml"
    book.write_text(
        f"id: a\ntitle: A\nsteps:\n"
        f"  - {{id: disable, action: kms.disable-key, with: {{key: {key_id}}}}}\n"
    )
    result = run_playbook(
        load_playbook(book),
        rogue_grant.client_factory(),
        tmp_path / "ev",
        yes=True,
        scenario="rogue-grant",
    )
    done = [e["data"] for e in journal(result.bundle) if e["type"] == "step-succeeded"]
    assert (done[0]["status"], done[0]["inverse"]) == ("already", None)

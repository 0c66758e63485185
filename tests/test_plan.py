"""kmsir plan: what a playbook would do, read without running it and without any AWS call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from kmsir import actions
from kmsir.evidence.calls import Call, describe
from kmsir.run import plan

from .clikit import cli
from .conftest import PLAYBOOKS, load_playbook


def kmsir(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-X", "importtime", "-m", "kmsir", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, check=False)


def test_plan_shows_every_step_its_calls_and_undo_without_touching_aws(tmp_path: Path) -> None:
    done = kmsir("plan", "kms-key-compromise", "-i", "key=alias/payments-prod", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-500:]
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert not {m for m in imported if m.startswith(("boto3", "botocore", "moto"))}
    out = done.stdout
    steps = load_playbook(PLAYBOOKS / "kms-key-compromise.yaml").playbook.steps
    for number, step in enumerate(steps, start=1):
        assert f"{number:2d}. {step.id}" in out
    assert "Inputs: key=alias/payments-prod, lookback=7d, window=4d" in out
    # decided at run time: shown as its template
    assert "kms:DisableKey KeyId={{ steps.snapshot.key_id if 'snapshot' in steps" in out
    assert "action: kms.revoke-grants (IRREVERSIBLE)" in out
    assert "action: kms.disable-key (undo: kms.enable-key)" in out
    assert "Changes AWS state: revoke, disable" in out
    assert "kms:RevokeGrant" in out.splitlines()[-1]  # the whole playbook's permissions


def test_values_from_inputs_are_filled_in(tmp_path: Path) -> None:
    book = tmp_path / "p.yaml"
    book.write_text(
        "id: p\ntitle: P\ninputs:\n  key: {type: kms-key, required: true}\nsteps:\n"
        "  - {id: disable, action: kms.disable-key, with: {key: '{{ inputs.key }}'}}\n"
        "  - {id: delete, action: kms.schedule-deletion,"
        " with: {key: '{{ inputs.key }}', pending_window_days: 7}}\n"
    )
    planned = plan.plan(load_playbook(book).playbook, actions.registry(), {"key": "alias/x"})
    assert planned[0].calls == (
        Call(service="kms", operation="DisableKey", params={"KeyId": "alias/x"}),
    )
    assert (
        describe(planned[1].calls[0])
        == "kms:ScheduleKeyDeletion KeyId=alias/x PendingWindowInDays=7"
    )
    assert [plan.describe_inverse(s) for s in planned] == [
        "undo: kms.enable-key",
        "undo: kms.cancel-deletion",
    ]
    assert "kms:ScheduleKeyDeletion" in plan.permissions(planned)


def test_read_only_steps_show_what_they_read_and_how_often(tmp_path: Path) -> None:
    book = tmp_path / "p.yaml"
    book.write_text(
        "id: p\ntitle: P\nsteps:\n"
        "  - {id: s3, action: cloudtrail.collect,"
        " with: {key: alias/x, source: s3, bucket: trail-logs}}\n"
        "  - {id: lake, action: cloudtrail.collect,"
        " with: {key: alias/x, source: lake, event_data_store: eds-1}}\n"
        "  - {id: snap, action: kms.snapshot, with: {key: alias/x}}\n"
    )
    planned = plan.plan(load_playbook(book).playbook, actions.registry(), {})
    shown = [[describe(c) for c in step.calls] for step in planned]
    assert shown[0] == [
        "s3:ListObjectsV2 Bucket=trail-logs (the window's day prefixes and their digests')",
        "s3:GetObject Bucket=trail-logs"
        " (each trail file and digest; HeadObject for one changed while read)",
        "cloudtrail:ListPublicKeys (each digest's Region)",
    ]
    assert shown[1] == [
        "cloudtrail:StartQuery EventDataStore=eds-1",
        "cloudtrail:GetQueryResults (every page)",
    ]
    assert shown[2][:2] == ["kms:DescribeKey", "kms:ListKeyPolicies"]


def test_an_unknown_input_is_one_clear_line(tmp_path: Path) -> None:
    done = cli("plan", "kms-key-compromise", "-i", "nope=1", cwd=tmp_path)
    assert done.exit_code == 2
    assert done.stderr.strip().splitlines() == [
        "kmsir: error: playbook 'kms-key-compromise' has no input 'nope'"
    ]

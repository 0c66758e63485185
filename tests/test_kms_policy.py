"""Policy actions against the sandbox: quarantine, put, restore (from this or another bundle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from kmsir.actions.kms_policy import (
    PutPolicy,
    PutPolicyParams,
    Quarantine,
    QuarantineParams,
    RestorePolicy,
    RestorePolicyParams,
)
from kmsir.errors import ActionError, EvidenceError
from kmsir.evidence import integrity
from kmsir.sandbox import Sandbox

from .conftest import PLAYBOOKS, load_playbook, run_playbook
from .fakes import context

CALLER = "arn:aws:sts::123456789012:user/moto"  # who moto says the sandbox's caller is
GLASS = "arn:aws:iam::123456789012:role/BreakGlass"


def policy_of(sandbox: Sandbox, key_id: str) -> dict[str, Any]:
    """The stored policy, read inside moto: a quarantine may have locked the caller out."""
    from moto.kms.models import kms_backends

    return dict(json.loads(kms_backends[sandbox.account][sandbox.region].keys[key_id].policy))


def test_quarantine_adds_the_deny_and_keeps_break_glass(rogue_grant: Sandbox) -> None:
    key_id = rogue_grant.keys["payments"]["id"]
    before = policy_of(rogue_grant, key_id)
    ctx, calls = context(rogue_grant.client_factory())
    params = QuarantineParams(key=key_id, break_glass=[CALLER, GLASS])
    preview = Quarantine().preview(ctx, params)
    assert any(GLASS in note for note in preview.notes)
    outcome = Quarantine().run(ctx, params)
    after = policy_of(rogue_grant, key_id)
    assert after["Statement"][-1] == {
        "Sid": "kmsir-quarantine-INC-test",
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Action": "kms:*",
        "Resource": "*",
        "Condition": {"ArnNotLike": {"aws:PrincipalArn": [CALLER, GLASS]}},
    }
    assert after["Statement"][:-1] == before["Statement"]
    # the caller keeps access, so AWS's own lockout check runs as well
    assert [
        c.params["BypassPolicyLockoutSafetyCheck"] for c in calls if c.operation == "PutKeyPolicy"
    ] == [False]
    # what the preview showed is what was sent (the policy, the lockout check's setting)
    assert [c.identity for c in calls if c.operation == "PutKeyPolicy"] == [
        c.identity for c in preview.calls
    ]
    assert outcome.outputs["able_to_manage"] == [CALLER, GLASS]
    assert {"policy-before.json", "policy-after.json"} <= set(ctx.artifacts.files)  # type: ignore[attr-defined]
    assert Quarantine().run(context(rogue_grant.client_factory())[0], params).status == "already"


def test_quarantine_that_shuts_out_the_caller_needs_allow_lockout(rogue_grant: Sandbox) -> None:
    key_id = rogue_grant.keys["payments"]["id"]
    kms = rogue_grant.session().client("kms")
    blob = kms.encrypt(KeyId=key_id, Plaintext=b"secret")["CiphertextBlob"]
    with pytest.raises(
        ActionError,
        match=r"you \(arn:aws:sts::123456789012:user/moto\) could "
        "not change the policy afterwards",
    ):
        Quarantine().run(
            context(rogue_grant.client_factory())[0],
            QuarantineParams(key=key_id, break_glass=[GLASS]),
        )
    ctx, calls = context(rogue_grant.client_factory())
    Quarantine().run(ctx, QuarantineParams(key=key_id, break_glass=[GLASS], allow_lockout=True))
    # only an explicit allow_lockout switches AWS's own check off
    assert [
        c.params["BypassPolicyLockoutSafetyCheck"] for c in calls if c.operation == "PutKeyPolicy"
    ] == [True]
    for denied in (
        lambda: kms.describe_key(KeyId=key_id),
        lambda: kms.encrypt(KeyId=key_id, Plaintext=b"x"),
        lambda: kms.decrypt(CiphertextBlob=blob),
    ):
        with pytest.raises(ClientError, match="explicit deny"):
            denied()
    assert kms.list_aliases()["Aliases"]  # IAM alone decides ListAliases


def test_break_glass_role_sessions_are_exempted_by_role(rogue_grant: Sandbox) -> None:
    key_id = rogue_grant.keys["payments"]["id"]
    session = "arn:aws:sts::123456789012:assumed-role/IR/bob"
    Quarantine().run(
        context(rogue_grant.client_factory())[0],
        QuarantineParams(key=key_id, break_glass=[CALLER, session]),
    )
    exempt = policy_of(rogue_grant, key_id)["Statement"][-1]["Condition"]["ArnNotLike"]
    assert exempt == {"aws:PrincipalArn": [CALLER, "arn:aws:iam::123456789012:role/IR"]}


def test_restore_refuses_another_keys_policy(rogue_grant: Sandbox, tmp_path: Path) -> None:
    kms = rogue_grant.session().client("kms")
    other = kms.create_key(Description="other")["KeyMetadata"]["KeyId"]
    payments = rogue_grant.keys["payments"]["id"]
    book = tmp_path / "wrong.yaml"
    book.write_text(f"""\
id: wrong
title: Restore from the wrong key
steps:
  - {{id: snap, action: kms.snapshot, with: {{keys: [{other}, {payments}]}}}}
  - {{id: restore-other, action: kms.restore-policy, with: {{key: {other}, from: snap}}}}
  - {{id: snap-other, action: kms.snapshot, with: {{key: {other}}}}}
  - {{id: restore, action: kms.restore-policy, with: {{key: {payments}, from: snap-other}}}}
""")
    result = run_playbook(
        load_playbook(book),
        rogue_grant.client_factory(),
        tmp_path / "ev",
        yes=True,
        scenario="rogue-grant",
    )
    assert [s.status for s in result.steps][:2] == ["succeeded", "already"]
    assert result.error is not None
    assert result.error.endswith(
        f"step snap-other kept the policy of key {other}, not of {payments}"
    )


def test_quarantine_without_break_glass_is_refused_unless_allowed(rogue_grant: Sandbox) -> None:
    key_id = rogue_grant.keys["payments"]["id"]
    before = policy_of(rogue_grant, key_id)
    ctx, calls = context(rogue_grant.client_factory())
    with pytest.raises(ActionError, match="nobody could call kms:PutKeyPolicy"):
        Quarantine().run(ctx, QuarantineParams(key=key_id))
    assert policy_of(rogue_grant, key_id) == before
    assert not [c for c in calls if c.operation == "PutKeyPolicy"]
    Quarantine().run(
        context(rogue_grant.client_factory())[0], QuarantineParams(key=key_id, allow_lockout=True)
    )
    assert policy_of(rogue_grant, key_id)["Statement"][-1]["Effect"] == "Deny"


def test_put_policy_from_a_file_with_lockout_check(rogue_grant: Sandbox, tmp_path: Path) -> None:
    key_id = rogue_grant.keys["payments"]["id"]
    good = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Admins",
                "Effect": "Allow",
                "Principal": {"AWS": "123456789012"},
                "Action": "kms:*",
                "Resource": "*",
            }
        ],
    }
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(good))
    ctx, calls = context(rogue_grant.client_factory())
    PutPolicy().run(ctx, PutPolicyParams(key=key_id, policy=str(path)))
    assert policy_of(rogue_grant, key_id) == good
    assert [
        c.params["BypassPolicyLockoutSafetyCheck"] for c in calls if c.operation == "PutKeyPolicy"
    ] == [False]
    lockout = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": "123456789012"},
                "Action": "kms:Decrypt",
                "Resource": "*",
            }
        ],
    }
    with pytest.raises(ActionError, match="nobody could call"):
        PutPolicy().run(
            context(rogue_grant.client_factory())[0], PutPolicyParams(key=key_id, policy=lockout)
        )
    assert policy_of(rogue_grant, key_id) == good


def test_restore_policy_from_an_earlier_step_and_from_another_bundle(
    rogue_grant: Sandbox, tmp_path: Path
) -> None:
    key_id = rogue_grant.keys["payments"]["id"]
    original = policy_of(rogue_grant, key_id)
    book = tmp_path / "q.yaml"
    book.write_text(f"""\
id: q
title: Quarantine and restore
steps:
  - {{id: snap, action: kms.snapshot, with: {{key: {key_id}}}}}
  - id: quarantine
    action: kms.quarantine
    with: {{key: {key_id}, break_glass: ["{{{{ run.operator }}}}"]}}
  - {{id: restore, action: kms.restore-policy, with: {{key: {key_id}, from: quarantine}}}}
""")
    result = run_playbook(
        load_playbook(book),
        rogue_grant.client_factory(),
        tmp_path / "ev",
        yes=True,
        scenario="rogue-grant",
    )
    assert result.status == "succeeded", result.error
    assert policy_of(rogue_grant, key_id) == original
    assert integrity.verify(result.bundle) == []

    # Quarantine again by hand, then restore from the first bundle's snapshot artifact
    Quarantine().run(
        context(rogue_grant.client_factory())[0], QuarantineParams(key=key_id, break_glass=[CALLER])
    )
    artifact = result.bundle / "artifacts" / "01-snap" / "policy-default.json"
    ctx, _ = context(rogue_grant.client_factory())
    RestorePolicy().run(
        ctx, RestorePolicyParams.model_validate({"key": key_id, "from": str(artifact)})
    )
    assert policy_of(rogue_grant, key_id) == original

    artifact.chmod(0o600)
    artifact.write_text(json.dumps({"Policy": json.dumps({"Statement": [{}]})}))
    with pytest.raises(EvidenceError, match="altered since bundle"):
        RestorePolicy().run(
            ctx, RestorePolicyParams.model_validate({"key": key_id, "from": str(artifact)})
        )


def test_demo_playbook_still_runs_with_the_split_actions(
    rogue_grant: Sandbox, tmp_path: Path
) -> None:
    loaded = load_playbook(PLAYBOOKS / "kms-key-compromise.yaml")
    result = run_playbook(
        loaded,
        rogue_grant.client_factory(),
        tmp_path,
        inputs=rogue_grant.scenario.inputs,
        answers=rogue_grant.scenario.answers,
    )
    assert result.status == "succeeded"

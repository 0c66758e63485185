"""KMS actions against moto: resulting AWS state, outputs, artifacts, idempotency, refusals."""

from __future__ import annotations

import json

import pytest

from kmsir.actions.kms_grants import RevokeGrants, RevokeGrantsParams
from kmsir.actions.kms_lifecycle import DisableKey, EnableKey
from kmsir.actions.kms_snapshot import Snapshot, SnapshotParams
from kmsir.actions.kmskeys import KeyParams, ReplicasParams
from kmsir.errors import ActionError
from kmsir.evidence.calls import Call, describe
from kmsir.sandbox import Sandbox

from .fakes import MemoryArtifacts, context


def test_snapshot_by_alias_records_everything(rogue_grant: Sandbox) -> None:
    ctx, calls = context(rogue_grant.client_factory())
    outcome = Snapshot().run(ctx, SnapshotParams(key="alias/payments-prod"))
    key = rogue_grant.keys["payments"]
    out = outcome.outputs
    assert out["key_id"] == key["id"] and out["arn"] == key["arn"]
    assert out["aliases"] == ["alias/payments-prod"]
    assert out["state"] == "Enabled" and out["key_manager"] == "CUSTOMER"
    assert sorted(out["grant_ids"]) == sorted(g["id"] for g in rogue_grant.grants.values())
    assert out["external_grant_ids"] == [rogue_grant.grants["rogue"]["id"]]
    assert out["rotation_enabled"] is True
    assert out["tags"]["owner"] == "payments-team"
    assert out["policy"]["Statement"]
    assert isinstance(ctx.artifacts, MemoryArtifacts)
    files = ctx.artifacts.files
    assert set(files) == {
        "key.json",
        "policy-default.json",
        "grants.json",
        "aliases.json",
        "tags.json",
        "rotation.json",
        "rotations.json",
    }
    grants = json.loads(files["grants.json"])["Grants"]
    assert {g["GranteePrincipal"] for g in grants} == {
        "arn:aws:iam::123456789012:role/payments-app",
        "arn:aws:iam::444455556666:role/backup-sync",
    }
    assert {c.operation for c in calls} >= {"DescribeKey", "GetKeyPolicy", "ListGrants"}
    assert all(c.http_status == 200 and c.request_id for c in calls)


def test_disable_key_by_alias_arn_then_idempotent(rogue_grant: Sandbox) -> None:
    kms = rogue_grant.session().client("kms")
    alias_arn = "arn:aws:kms:eu-west-1:123456789012:alias/payments-prod"
    ctx, calls = context(rogue_grant.client_factory())
    outcome = DisableKey().run(ctx, ReplicasParams(key=alias_arn))
    key_id = rogue_grant.keys["payments"]["id"]
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Disabled"
    assert outcome.status == "succeeded"
    assert outcome.before == {"key_id": key_id, "state": "Enabled", "deletion_date": None}
    assert outcome.after is not None and outcome.after["state"] == "Disabled"
    assert [c.params for c in calls if c.operation == "DisableKey"] == [{"KeyId": key_id}]

    calls.clear()
    again = DisableKey().run(ctx, ReplicasParams(key=alias_arn))
    assert again.status == "already"
    assert "already Disabled" in again.summary
    assert [c.operation for c in calls] == ["DescribeKey"]

    EnableKey().run(ctx, ReplicasParams(key=key_id))
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"


def test_revoke_grants_removes_only_the_rogue_grant(rogue_grant: Sandbox) -> None:
    kms = rogue_grant.session().client("kms")
    key_id = rogue_grant.keys["payments"]["id"]
    rogue, app = rogue_grant.grants["rogue"]["id"], rogue_grant.grants["app"]["id"]
    ctx, _ = context(rogue_grant.client_factory())
    params = RevokeGrantsParams(key="alias/payments-prod", grant_ids=[rogue])

    preview = RevokeGrants().preview(ctx, params)
    assert preview.calls == (
        Call(service="kms", operation="RevokeGrant", params={"KeyId": key_id, "GrantId": rogue}),
    )
    assert describe(preview.calls[0]) == f"kms:RevokeGrant KeyId={key_id} GrantId={rogue}"
    assert preview.typed == (key_id, "alias/payments-prod")
    assert any("444455556666:role/backup-sync" in n for n in preview.notes)

    outcome = RevokeGrants().run(ctx, params)
    remaining = [g["GrantId"] for g in kms.list_grants(KeyId=key_id)["Grants"]]
    assert remaining == [app]
    assert outcome.outputs["revoked"] == [rogue]
    assert "grants-before.json" in ctx.artifacts.files  # type: ignore[attr-defined]

    again = RevokeGrants().run(context(rogue_grant.client_factory())[0], params)
    assert again.status == "already"
    assert again.outputs["already_gone"] == [rogue]


def test_aws_managed_keys_are_refused(rogue_grant: Sandbox) -> None:
    from moto.kms.models import kms_backends

    key_id = rogue_grant.keys["payments"]["id"]
    kms_backends["123456789012"]["eu-west-1"].keys[key_id].key_manager = "AWS"
    ctx, calls = context(rogue_grant.client_factory())
    with pytest.raises(ActionError, match="AWS-managed key"):
        DisableKey().run(ctx, ReplicasParams(key=key_id))
    with pytest.raises(ActionError, match="AWS-managed key"):
        RevokeGrants().run(ctx, RevokeGrantsParams(key=key_id, grant_ids=["abc"]))
    assert not [c for c in calls if c.operation in ("DisableKey", "RevokeGrant")]


def test_unknown_key_is_one_clear_line(rogue_grant: Sandbox) -> None:
    ctx, _ = context(rogue_grant.client_factory())
    with pytest.raises(ActionError) as caught:
        Snapshot().run(ctx, SnapshotParams(key="alias/does-not-exist"))
    message = str(caught.value)
    assert message.startswith("DescribeKey on alias/does-not-exist: AWS NotFoundException")
    assert "\n" not in message


@pytest.mark.parametrize("bad", ["payments", "alias/", "arn:aws:kms:eu-west-1:1:key/x", "a" * 500])
def test_key_parameter_is_validated(bad: str) -> None:
    with pytest.raises(ValueError, match="not a KMS key"):
        KeyParams(key=bad)

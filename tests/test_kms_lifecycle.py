"""Containment and recovery actions against the sandbox: state, idempotency, refusals."""

from __future__ import annotations

from typing import Any

import pytest

from kmsir.actions.base import Action
from kmsir.actions.kms_deletion import CancelDeletion, ScheduleDeletion, ScheduleDeletionParams
from kmsir.actions.kms_deny import DenyPrincipals, DenyPrincipalsParams
from kmsir.actions.kms_grants import (
    GrantFilter,
    RetireGrants,
    RetireGrantsParams,
    RevokeGrants,
    RevokeGrantsParams,
)
from kmsir.actions.kms_imported import DeleteImportedMaterial, ImportMaterial, ImportParams
from kmsir.actions.kms_lifecycle import DisableKey, EnableKey, TagKey, TagParams
from kmsir.actions.kms_policy import PutPolicy, PutPolicyParams, Quarantine, QuarantineParams
from kmsir.actions.kms_rotation import EnableRotation, RotateNow, RotationParams
from kmsir.actions.kmskeys import KeyParams, ReplicasParams
from kmsir.errors import ActionError
from kmsir.evidence.calls import Call, describe
from kmsir.sandbox import Sandbox

from .fakes import context


def state(sandbox: Sandbox, key_id: str, region: str | None = None) -> str:
    kms = sandbox.session().client("kms", region_name=region or sandbox.region)
    return str(kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"])


@pytest.fixture
def key_id(rogue_grant: Sandbox) -> str:
    return rogue_grant.keys["payments"]["id"]


def test_schedule_then_cancel_deletion(rogue_grant: Sandbox, key_id: str) -> None:
    ctx, calls = context(rogue_grant.client_factory())
    params = ScheduleDeletionParams(key="alias/payments-prod", pending_window_days=7)
    preview = ScheduleDeletion().preview(ctx, params)
    (call,) = preview.calls
    assert describe(call) == f"kms:ScheduleKeyDeletion KeyId={key_id} PendingWindowInDays=7"
    assert "alias/payments-prod" in preview.typed
    outcome = ScheduleDeletion().run(ctx, params)
    assert state(rogue_grant, key_id) == "PendingDeletion"
    assert outcome.inverse_until == outcome.outputs["deletion_date"] is not None
    again = ScheduleDeletion().run(ctx, params)
    assert again.status == "already"
    assert sum(c.operation == "ScheduleKeyDeletion" for c in calls) == 1

    cancelled = CancelDeletion().run(ctx, ReplicasParams(key=key_id))
    assert cancelled.after == {"key_id": key_id, "state": "Disabled", "deletion_date": None}
    assert CancelDeletion().run(ctx, ReplicasParams(key=key_id)).status == "already"
    EnableKey().run(ctx, ReplicasParams(key=key_id))
    assert state(rogue_grant, key_id) == "Enabled"


@pytest.mark.parametrize("days", [6, 31])
def test_deletion_window_is_validated_by_us(days: int) -> None:
    with pytest.raises(ValueError, match=r"greater than or equal to 7|less than or equal to 30"):
        ScheduleDeletionParams(key="alias/x", pending_window_days=days)


def test_disable_refused_while_pending_deletion(rogue_grant: Sandbox, key_id: str) -> None:
    ctx, _ = context(rogue_grant.client_factory())
    ScheduleDeletion().run(ctx, ScheduleDeletionParams(key=key_id))
    with pytest.raises(ActionError, match="cancel the deletion first"):
        EnableKey().run(ctx, ReplicasParams(key=key_id))


def test_revoke_grants_by_filter(rogue_grant: Sandbox, key_id: str) -> None:
    kms = rogue_grant.session().client("kms")
    partner = kms.create_grant(
        KeyId=key_id,
        Operations=["Encrypt"],
        GranteePrincipal="arn:aws:iam::777788889999:role/partner",
    )["GrantId"]
    ctx, _ = context(rogue_grant.client_factory())
    params = RevokeGrantsParams(key=key_id, filter=GrantFilter(allowed_accounts=["777788889999"]))
    preview = RevokeGrants().preview(ctx, params)
    rogue = rogue_grant.grants["rogue"]["id"]
    assert preview.calls == (
        Call(service="kms", operation="RevokeGrant", params={"KeyId": key_id, "GrantId": rogue}),
    )
    assert any("444455556666:role/backup-sync" in n for n in preview.notes)
    RevokeGrants().run(ctx, params)
    remaining = {g["GrantId"] for g in kms.list_grants(KeyId=key_id)["Grants"]}
    assert remaining == {rogue_grant.grants["app"]["id"], partner}

    by_operation = RevokeGrantsParams(key=key_id, filter=GrantFilter(operations=["Encrypt"]))
    fresh = context(rogue_grant.client_factory())[0]
    assert RevokeGrants().run(fresh, by_operation).outputs["revoked"] == [partner]
    # the app's grant is 200 days old in the scenario; a grant made just now is recent
    newer = kms.create_grant(
        KeyId=key_id, Operations=["Decrypt"], GranteePrincipal="arn:aws:iam::123456789012:role/new"
    )["GrantId"]
    recent = RevokeGrantsParams(key=key_id, filter=GrantFilter(created_after="1h"))
    fresh = context(rogue_grant.client_factory())[0]
    assert RevokeGrants().run(fresh, recent).outputs["revoked"] == [newer]


def test_revoke_acts_on_no_grant_the_responder_was_not_shown(
    rogue_grant: Sandbox, key_id: str
) -> None:
    kms = rogue_grant.session().client("kms")
    ctx, _ = context(rogue_grant.client_factory())
    params = RevokeGrantsParams(key=key_id, filter=GrantFilter(allowed_accounts=[]))
    ctx.approved = RevokeGrants().preview(ctx, params)
    late = kms.create_grant(
        KeyId=key_id, Operations=["Decrypt"], GranteePrincipal="arn:aws:iam::999988887777:role/late"
    )["GrantId"]
    outcome = RevokeGrants().run(ctx, params)
    assert outcome.outputs["revoked"] == [rogue_grant.grants["rogue"]["id"]]
    assert outcome.outputs["not_approved"] == [late]
    assert late in {g["GrantId"] for g in kms.list_grants(KeyId=key_id)["Grants"]}


def test_revoke_filter_needs_a_criterion_and_one_mode() -> None:
    with pytest.raises(ValueError, match="at least one criterion"):
        GrantFilter()
    with pytest.raises(ValueError, match="exactly one of grant_ids or filter"):
        RevokeGrantsParams(key="alias/x", grant_ids=["abc"], filter=GrantFilter(operations=["X"]))


def test_tag_key_with_the_incident_and_idempotent(rogue_grant: Sandbox, key_id: str) -> None:
    ctx, calls = context(rogue_grant.client_factory())
    outcome = TagKey().run(ctx, TagParams(key=key_id))
    assert outcome.outputs["tags"]["kmsir-incident"] == "INC-test"
    assert TagKey().run(ctx, TagParams(key=key_id)).status == "already"
    assert sum(c.operation == "TagResource" for c in calls) == 1
    with pytest.raises(ValueError, match="not 'aws:'"):
        TagParams(key=key_id, tags={"aws:x": "y"})


def test_rotation_period_and_rotate_now(rogue_grant: Sandbox, key_id: str) -> None:
    ctx, _ = context(rogue_grant.client_factory())
    outcome = EnableRotation().run(ctx, RotationParams(key=key_id, period_days=90))
    assert outcome.after is not None and outcome.after["period_days"] == 90
    assert EnableRotation().run(ctx, RotationParams(key=key_id, period_days=90)).status == "already"
    rotated = RotateNow().run(ctx, KeyParams(key=key_id))
    assert rotated.outputs["rotations"] == 1
    with pytest.raises(ValueError, match="greater than or equal to 90"):
        RotationParams(key=key_id, period_days=30)


SENT_AS_SHOWN: list[tuple[Action[Any], Any]] = [
    (DisableKey(), ReplicasParams(key="alias/payments-prod")),
    (ScheduleDeletion(), ScheduleDeletionParams(key="alias/payments-prod", pending_window_days=7)),
    (TagKey(), TagParams(key="alias/payments-prod", tags={"incident": "INC-test"})),
    (EnableRotation(), RotationParams(key="alias/payments-prod", period_days=180)),
    (RotateNow(), KeyParams(key="alias/payments-prod")),
]


@pytest.mark.parametrize(
    ("action", "params"), SENT_AS_SHOWN, ids=[a.name for a, _ in SENT_AS_SHOWN]
)
def test_the_calls_sent_are_the_calls_previewed(
    rogue_grant: Sandbox, action: Action[Any], params: Any
) -> None:
    ctx, calls = context(rogue_grant.client_factory())
    preview = action.preview(ctx, params)
    assert preview.calls, "nothing previewed"
    action.run(ctx, params)
    # the key's id, not the alias the playbook named; the parameters as sent
    assert [c.identity for c in calls if not c.read_only] == [c.identity for c in preview.calls]


MUTATING: list[tuple[Action[Any], Any]] = [
    (DisableKey(), KeyParams(key="alias/aws/s3")),
    (EnableKey(), KeyParams(key="alias/aws/s3")),
    (ScheduleDeletion(), ScheduleDeletionParams(key="alias/aws/s3")),
    (CancelDeletion(), KeyParams(key="alias/aws/s3")),
    (RevokeGrants(), RevokeGrantsParams(key="alias/aws/s3", grant_ids=["abc"])),
    (RetireGrants(), RetireGrantsParams(key="alias/aws/s3", grant_ids=["abc"])),
    (Quarantine(), QuarantineParams(key="alias/aws/s3")),
    (DenyPrincipals(), DenyPrincipalsParams(key="alias/aws/s3", principals=["444455556666"])),
    (PutPolicy(), PutPolicyParams(key="alias/aws/s3", policy={"Statement": [{}]})),
    (TagKey(), TagParams(key="alias/aws/s3")),
    (EnableRotation(), RotationParams(key="alias/aws/s3")),
    (RotateNow(), KeyParams(key="alias/aws/s3")),
    (DeleteImportedMaterial(), KeyParams(key="alias/aws/s3")),
    (ImportMaterial(), ImportParams(key="alias/aws/s3", material="escrow.bin")),
]


@pytest.mark.parametrize(("action", "params"), MUTATING, ids=[a.name for a, _ in MUTATING])
def test_aws_managed_keys_are_refused_by_every_mutating_action(
    rogue_grant: Sandbox, action: Action[Any], params: Any
) -> None:
    ctx, calls = context(rogue_grant.client_factory())
    with pytest.raises(ActionError, match="AWS-managed key"):
        action.preview(ctx, params)
    with pytest.raises(ActionError, match="AWS-managed key"):
        action.run(ctx, params)
    assert all(c.operation.startswith(("Describe", "Get", "List")) for c in calls)


def test_every_mutating_action_is_covered_above() -> None:
    from kmsir.actions import registry

    mutating = {name for name, a in registry().items() if a.mutating and name.startswith("kms.")}
    # the key store actions name a store, not a key (no AWS-managed key is in a store)
    stores = {"kms.disconnect-key-store", "kms.connect-key-store"}
    assert mutating - {"kms.restore-policy", *stores} == {a.name for a, _ in MUTATING}


def test_a_key_of_another_region_is_changed_and_read_there(rogue_grant: Sandbox) -> None:
    west = rogue_grant.session().client("kms", region_name="us-west-2")
    arn = west.create_key(Description="elsewhere")["KeyMetadata"]["Arn"]
    ctx, calls = context(rogue_grant.client_factory())  # the run's Region is eu-west-1
    outcome = DisableKey().run(ctx, ReplicasParams(key=arn))
    assert outcome.after is not None and outcome.after["state"] == "Disabled"
    assert {c.region for c in calls} == {"us-west-2"}


def test_rotation_cannot_change_on_a_disabled_key(rogue_grant: Sandbox, key_id: str) -> None:
    from botocore.exceptions import ClientError

    kms = rogue_grant.session().client("kms")
    kms.disable_key(KeyId=key_id)
    with pytest.raises(ClientError, match="DisabledException"):
        kms.enable_key_rotation(KeyId=key_id)
    with pytest.raises(ActionError, match="DisabledException"):
        RotateNow().run(context(rogue_grant.client_factory())[0], KeyParams(key=key_id))

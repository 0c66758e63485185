"""kms.snapshot in depth: policies, rotation, paging, multi-Region keys, many keys at once."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kmsir.actions.kms_snapshot import Snapshot, SnapshotParams
from kmsir.sandbox import Sandbox

from .fakes import context


def test_grants_are_followed_across_pages(rogue_grant: Sandbox) -> None:
    kms = rogue_grant.session().client("kms")
    key_id = rogue_grant.keys["payments"]["id"]
    for n in range(120):  # ListGrants pages at 50 by default
        kms.create_grant(
            KeyId=key_id,
            GranteePrincipal=f"arn:aws:iam::123456789012:role/r{n}",
            Operations=["Decrypt"],
        )
    ctx, calls = context(rogue_grant.client_factory())
    out = Snapshot().run(ctx, SnapshotParams(key=key_id)).outputs
    assert len(out["grant_ids"]) == 122 and len(set(out["grant_ids"])) == 122
    assert sum(1 for c in calls if c.operation == "ListGrants") == 3
    stored = json.loads(ctx.artifacts.files["grants.json"])["Grants"]  # type: ignore[attr-defined]
    assert len(stored) == 122


def test_rotation_and_preflight_outputs(rogue_grant: Sandbox) -> None:
    kms = rogue_grant.session().client("kms")
    key_id = rogue_grant.keys["payments"]["id"]
    kms.enable_key_rotation(KeyId=key_id, RotationPeriodInDays=90)
    kms.rotate_key_on_demand(KeyId=key_id)
    ctx, _ = context(rogue_grant.client_factory())
    out = Snapshot().run(ctx, SnapshotParams(key="alias/payments-prod")).outputs
    assert out["rotation_enabled"] is True
    assert out["rotation_period_days"] == 90
    assert out["next_rotation_date"] is not None
    assert out["rotations"] == 1
    assert (out["key_manager"], out["origin"], out["multi_region"]) == ("CUSTOMER", "AWS_KMS", None)
    assert out["policies"]["default"] == out["policy"]
    assert out["valid_to"] is None and out["deletion_date"] is None


def test_pending_deletion_key_reports_its_date(rogue_grant: Sandbox) -> None:
    kms = rogue_grant.session().client("kms")
    key_id = rogue_grant.keys["payments"]["id"]
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    ctx, _ = context(rogue_grant.client_factory())
    out = Snapshot().run(ctx, SnapshotParams(key=key_id)).outputs
    assert out["state"] == "PendingDeletion" and out["deletion_date"] is not None


def test_multi_region_key_snapshots_every_region(rogue_grant: Sandbox) -> None:
    kms = rogue_grant.session().client("kms")
    primary = kms.create_key(MultiRegion=True, Description="global")["KeyMetadata"]
    kms.replicate_key(KeyId=primary["KeyId"], ReplicaRegion="us-east-1")
    east = rogue_grant.session().client("kms", region_name="us-east-1")
    east.create_grant(
        KeyId=primary["KeyId"],
        Operations=["Decrypt"],
        GranteePrincipal="arn:aws:iam::444455556666:role/x",
    )
    ctx, calls = context(rogue_grant.client_factory())
    out = Snapshot().run(ctx, SnapshotParams(key=primary["KeyId"])).outputs
    assert out["multi_region"] == "PRIMARY"
    assert [(r["region"], r["role"]) for r in out["replicas"]] == [("us-east-1", "REPLICA")]
    assert len(out["replicas"][0]["grant_ids"]) == 1
    files = set(ctx.artifacts.files)  # type: ignore[attr-defined]
    assert {
        "replica-us-east-1-key.json",
        "replica-us-east-1-policy-default.json",
        "replica-us-east-1-grants.json",
    } <= files
    assert {c.region for c in calls if c.operation == "ListGrants"} == {"eu-west-1", "us-east-1"}

    replica_ctx, _ = context(rogue_grant.client_factory())
    from_replica = (
        Snapshot()
        .run(replica_ctx, SnapshotParams(key=primary["Arn"].replace("eu-west-1", "us-east-1")))
        .outputs
    )
    assert from_replica["multi_region"] == "REPLICA"
    assert [r["role"] for r in from_replica["replicas"]] == ["PRIMARY"]


OUTSIDE, INSIDE = "444455556666", "123456789012"


def make_keys(sandbox: Sandbox, count: int) -> list[str]:
    kms = sandbox.session().client("kms")
    ids = []
    for n in range(count):
        key_id = kms.create_key(Description=f"k{n}")["KeyMetadata"]["KeyId"]
        kms.create_grant(
            KeyId=key_id,
            Operations=["Decrypt"],
            GranteePrincipal=f"arn:aws:iam::{OUTSIDE if n % 5 == 0 else INSIDE}:role/app",
        )
        ids.append(key_id)
    return ids


def test_all_keys_concurrently(rogue_grant: Sandbox) -> None:
    created = make_keys(rogue_grant, 30)
    ctx, _ = context(rogue_grant.client_factory())
    out = Snapshot().run(ctx, SnapshotParams(all=True)).outputs
    ids = {k["key_id"] for k in out["keys"]}
    assert set(created) <= ids and rogue_grant.keys["payments"]["id"] in ids
    assert out["count"] == len(ids) and out["failed"] == {}
    assert set(out["external_grants"]) == {created[n] for n in range(0, 30, 5)} | {
        rogue_grant.keys["payments"]["id"]
    }
    files = ctx.artifacts.files  # type: ignore[attr-defined]
    for key_id in created:
        assert json.loads(files[f"{key_id}/key.json"])["KeyMetadata"]["KeyId"] == key_id
        assert f"{key_id}/policy-default.json" in files


def test_listed_keys_and_failures(rogue_grant: Sandbox) -> None:
    created = make_keys(rogue_grant, 3)
    ghost = "00000000-0000-4000-8000-000000000000"
    ctx, _ = context(rogue_grant.client_factory())
    out = Snapshot().run(ctx, SnapshotParams(keys=[*created, ghost, created[0]])).outputs
    assert [k["key_id"] for k in out["keys"]] == sorted(created)
    assert list(out["failed"]) == [ghost] and "NotFoundException" in out["failed"][ghost]


@pytest.mark.parametrize("params", [{}, {"key": "alias/a", "all": True}, {"keys": []}])
def test_exactly_one_target(params: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"exactly one|at least 1"):
        SnapshotParams(**params)


def test_the_same_key_named_three_ways_is_snapshotted_once(rogue_grant: Sandbox) -> None:
    key = rogue_grant.keys["payments"]
    ctx, _ = context(rogue_grant.client_factory())
    out = Snapshot().run(ctx, SnapshotParams(keys=[key["id"], "alias/payments-prod", key["arn"]]))
    assert [k["key_id"] for k in out.outputs["keys"]] == [key["id"]]
    assert out.outputs["failed"] == {}

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
    east.create_alias(AliasName="alias/global-east", TargetKeyId=primary["KeyId"])
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
    # each Region has aliases of its own
    assert out["replicas"][0]["aliases"] == ["alias/global-east"]
    assert out["aliases"] == []
    assert "replica-us-east-1-aliases.json" in files

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


def test_imported_material_and_key_store_are_recorded(rogue_grant: Sandbox) -> None:
    """Origin, ``ValidTo``, expiration model and key material id of an EXTERNAL key, and the
    custom key store a key lives in (DescribeKey's KeyMetadata,
    https://docs.aws.amazon.com/kms/latest/APIReference/API_KeyMetadata.html; the store as
    DescribeCustomKeyStores reports it,
    https://docs.aws.amazon.com/kms/latest/APIReference/API_DescribeCustomKeyStores.html)."""
    import os
    from datetime import datetime, timedelta, timezone

    from kmsir.sandbox.seed_kms import import_bytes

    kms = rogue_grant.session().client("kms")
    external = kms.create_key(Origin="EXTERNAL")["KeyMetadata"]["KeyId"]
    valid_to = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=30)
    expiry = {"ValidTo": valid_to, "ExpirationModel": "KEY_MATERIAL_EXPIRES"}
    material = import_bytes(kms, external, os.urandom(32), expiry)["KeyMaterialId"]
    ctx, _ = context(rogue_grant.client_factory())
    out = Snapshot().run(ctx, SnapshotParams(key=external)).outputs
    assert (out["origin"], out["state"]) == ("EXTERNAL", "Enabled")
    assert out["expiration_model"] == "KEY_MATERIAL_EXPIRES"
    assert out["valid_to"] is not None and datetime.fromisoformat(out["valid_to"]) == valid_to
    assert out["key_material_ids"] == [material]
    assert out["key_store"] is None

    store = kms.create_custom_key_store(
        CustomKeyStoreName="hsm-snapshot",
        CloudHsmClusterId="cluster-12345678901",
        TrustAnchorCertificate="-----BEGIN CERTIFICATE-----\n...",
        KeyStorePassword="kmsuser-pass",
    )["CustomKeyStoreId"]
    kms.connect_custom_key_store(CustomKeyStoreId=store)
    in_store = kms.create_key(CustomKeyStoreId=store, Origin="AWS_CLOUDHSM")["KeyMetadata"]
    kms.disconnect_custom_key_store(CustomKeyStoreId=store)
    ctx, _ = context(rogue_grant.client_factory())
    out = Snapshot().run(ctx, SnapshotParams(key=in_store["KeyId"])).outputs
    assert (out["origin"], out["state"]) == ("AWS_CLOUDHSM", "Unavailable")
    assert out["key_store"] == {
        "id": store,
        "name": "hsm-snapshot",
        "type": "AWS_CLOUDHSM",
        "connection_state": "DISCONNECTED",
    }
    kept = json.loads(ctx.artifacts.files["key-store.json"])  # type: ignore[attr-defined]
    assert kept["CustomKeyStores"][0]["CustomKeyStoreId"] == store

    many, _ = context(rogue_grant.client_factory())
    summary = Snapshot().run(many, SnapshotParams(keys=[external, in_store["KeyId"]])).outputs
    by_key = {k["key_id"]: k for k in summary["keys"]}
    assert by_key[external]["expiration_model"] == "KEY_MATERIAL_EXPIRES"
    assert by_key[in_store["KeyId"]]["key_store"]["connection_state"] == "DISCONNECTED"


def test_an_external_key_stores_proxy_access_key_id_is_not_kept(rogue_grant: Sandbox) -> None:
    """botocore's model marks ``XksProxyConfiguration.AccessKeyId`` sensitive: the snapshot
    keeps the store as the journal keeps a sensitive parameter, by its size only."""
    access_key_id = "ABCDE12345670EXAMPLE"
    kms = rogue_grant.session().client("kms")
    store = kms.create_custom_key_store(
        CustomKeyStoreName="partner-xks",
        CustomKeyStoreType="EXTERNAL_KEY_STORE",
        XksProxyUriEndpoint="https://xks.example.com",
        XksProxyUriPath="/kms/xks/v1",
        XksProxyConnectivity="PUBLIC_ENDPOINT",
        XksProxyAuthenticationCredential={
            "AccessKeyId": access_key_id,
            "RawSecretAccessKey": "DXjSUawnel2fr6SKC7G25CNxTyWKE5PF9XX6H/u9pSo=",
        },
    )["CustomKeyStoreId"]
    kms.connect_custom_key_store(CustomKeyStoreId=store)
    shown = kms.describe_custom_key_stores(CustomKeyStoreId=store)["CustomKeyStores"][0]
    assert shown["XksProxyConfiguration"]["AccessKeyId"] == access_key_id  # AWS answers it
    key = kms.create_key(
        CustomKeyStoreId=store, Origin="EXTERNAL_KEY_STORE", XksKeyId="bb8562717f809024"
    )["KeyMetadata"]["KeyId"]

    ctx, _ = context(rogue_grant.client_factory())
    out = Snapshot().run(ctx, SnapshotParams(key=key)).outputs
    assert out["key_store"]["type"] == "EXTERNAL_KEY_STORE"
    files: dict[str, bytes] = ctx.artifacts.files  # type: ignore[attr-defined]
    assert "key-store.json" in files
    for name, data in files.items():
        assert access_key_id.encode() not in data, name
    kept = json.loads(files["key-store.json"])["CustomKeyStores"][0]
    assert kept["CustomKeyStoreId"] == store
    assert kept["XksProxyConfiguration"]["AccessKeyId"] == "<sensitive, 20 bytes>"
    assert kept["XksProxyConfiguration"]["UriEndpoint"] == "https://xks.example.com"
    assert access_key_id not in json.dumps(out)

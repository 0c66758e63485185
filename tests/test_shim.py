"""The sandbox's KMS fidelity shim: each patch point behaves as the AWS documentation says.

References: "Key states of AWS KMS keys" (KMS developer guide) and the API reference of
DisableKey, EnableKey, ScheduleKeyDeletion, CancelKeyDeletion, ListGrants, EnableKeyRotation
and GetKeyRotationStatus. If a moto upgrade moves a patch point, these fail.
"""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from kmsir.sandbox import Sandbox, shim


@pytest.fixture
def kms(rogue_grant: Sandbox) -> Any:
    return rogue_grant.session().client("kms")


@pytest.fixture
def key(rogue_grant: Sandbox) -> dict[str, str]:
    return rogue_grant.keys["payments"]


def error_code(call: Any) -> str:
    with pytest.raises(ClientError) as caught:
        call()
    return str(caught.value.response["Error"]["Code"])


def state(kms: Any, key_id: str) -> str:
    return str(kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"])


def test_crypto_on_a_disabled_key_raises_disabled_exception(kms: Any, key: dict[str, str]) -> None:
    blob = kms.encrypt(KeyId=key["id"], Plaintext=b"secret")["CiphertextBlob"]
    kms.disable_key(KeyId=key["id"])
    assert error_code(lambda: kms.encrypt(KeyId=key["id"], Plaintext=b"x")) == "DisabledException"
    assert error_code(lambda: kms.decrypt(CiphertextBlob=blob)) == "DisabledException"
    assert (
        error_code(lambda: kms.generate_data_key(KeyId="alias/payments-prod", KeySpec="AES_256"))
        == "DisabledException"
    )
    kms.enable_key(KeyId=key["id"])
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"secret"


def test_crypto_on_a_key_pending_deletion_is_invalid_state(kms: Any, key: dict[str, str]) -> None:
    blob = kms.encrypt(KeyId=key["id"], Plaintext=b"secret")["CiphertextBlob"]
    kms.schedule_key_deletion(KeyId=key["id"], PendingWindowInDays=7)
    assert state(kms, key["id"]) == "PendingDeletion"
    assert error_code(lambda: kms.decrypt(CiphertextBlob=blob)) == "KMSInvalidStateException"
    assert error_code(lambda: kms.enable_key(KeyId=key["id"])) == "KMSInvalidStateException"
    assert error_code(lambda: kms.disable_key(KeyId=key["id"])) == "KMSInvalidStateException"
    assert (
        error_code(lambda: kms.schedule_key_deletion(KeyId=key["id"], PendingWindowInDays=7))
        == "KMSInvalidStateException"
    )


@pytest.mark.parametrize("days", [1, 6, 31, 365])
def test_bad_deletion_windows_are_rejected(kms: Any, key: dict[str, str], days: int) -> None:
    code = error_code(lambda: kms.schedule_key_deletion(KeyId=key["id"], PendingWindowInDays=days))
    assert code == "ValidationException"
    assert state(kms, key["id"]) == "Enabled"


def test_key_arns_work_in_state_changes(kms: Any, key: dict[str, str]) -> None:
    kms.disable_key(KeyId=key["arn"])
    assert state(kms, key["id"]) == "Disabled"
    kms.enable_key(KeyId=key["arn"])
    assert state(kms, key["id"]) == "Enabled"
    deletion = kms.schedule_key_deletion(KeyId=key["arn"], PendingWindowInDays=30)
    assert deletion["DeletionDate"] is not None
    kms.cancel_key_deletion(KeyId=key["arn"])
    assert state(kms, key["id"]) == "Disabled"  # CancelKeyDeletion leaves the key disabled


def test_cancel_deletion_needs_a_pending_key(kms: Any, key: dict[str, str]) -> None:
    assert error_code(lambda: kms.cancel_key_deletion(KeyId=key["id"])) == (
        "KMSInvalidStateException"
    )


def test_unknown_keys_are_not_found(kms: Any) -> None:
    ghost = "arn:aws:kms:eu-west-1:123456789012:key/00000000-0000-4000-8000-000000000000"
    assert error_code(lambda: kms.disable_key(KeyId=ghost)) == "NotFoundException"


def test_multi_region_primary_with_replicas_waits_for_them(rogue_grant: Sandbox) -> None:
    kms = rogue_grant.session().client("kms")
    primary = kms.create_key(MultiRegion=True)["KeyMetadata"]
    rogue_grant.session().client("kms").replicate_key(
        KeyId=primary["KeyId"], ReplicaRegion="us-east-1"
    )
    kms.schedule_key_deletion(KeyId=primary["KeyId"], PendingWindowInDays=7)
    assert state(kms, primary["KeyId"]) == "PendingReplicaDeletion"


def test_list_grants_pages(kms: Any, key: dict[str, str]) -> None:
    for n in range(5):
        kms.create_grant(
            KeyId=key["id"],
            GranteePrincipal=f"arn:aws:iam::123456789012:role/r{n}",
            Operations=["Decrypt"],
        )
    pages, marker = [], None
    while True:
        page = kms.list_grants(KeyId=key["id"], Limit=3, **({"Marker": marker} if marker else {}))
        pages.append([g["GrantId"] for g in page["Grants"]])
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    assert [len(p) for p in pages] == [3, 3, 1]  # the scenario's 2 grants and 5 new ones
    assert len({g for p in pages for g in p}) == 7
    assert error_code(lambda: kms.list_grants(KeyId=key["id"], Limit=101)) == (
        "ValidationException"
    )


def test_rotation_period(rogue_grant: Sandbox, kms: Any, key: dict[str, str]) -> None:
    kms.enable_key_rotation(KeyId=key["id"], RotationPeriodInDays=90)
    status = kms.get_key_rotation_status(KeyId=key["id"])
    assert status["KeyRotationEnabled"] is True
    assert status["RotationPeriodInDays"] == 90
    assert status["NextRotationDate"] is not None
    from botocore.config import Config

    # botocore checks the range too; switch that off to see the service's own answer
    raw = rogue_grant.session().client("kms", config=Config(parameter_validation=False))
    assert (
        error_code(lambda: raw.enable_key_rotation(KeyId=key["id"], RotationPeriodInDays=30))
        == "ValidationException"
    )


def test_install_is_idempotent() -> None:
    from moto.kms.models import KmsBackend

    before = KmsBackend.encrypt
    shim.install()
    assert KmsBackend.encrypt is before


def test_primary_and_replica_know_their_roles(rogue_grant: Sandbox) -> None:
    kms = rogue_grant.session().client("kms")
    primary = kms.create_key(MultiRegion=True)["KeyMetadata"]
    kms.replicate_key(KeyId=primary["KeyId"], ReplicaRegion="us-east-1")
    kms.replicate_key(KeyId=primary["KeyId"], ReplicaRegion="ap-south-1")
    east = rogue_grant.session().client("kms", region_name="us-east-1")
    replica = east.describe_key(KeyId=primary["KeyId"])["KeyMetadata"]["MultiRegionConfiguration"]
    config = kms.describe_key(KeyId=primary["KeyId"])["KeyMetadata"]["MultiRegionConfiguration"]
    assert (config["MultiRegionKeyType"], replica["MultiRegionKeyType"]) == ("PRIMARY", "REPLICA")
    assert {r["Region"] for r in config["ReplicaKeys"]} == {"us-east-1", "ap-south-1"}
    assert replica["PrimaryKey"]["Region"] == "eu-west-1"


def test_aws_managed_aliases_point_to_aws_managed_keys(kms: Any) -> None:
    assert kms.describe_key(KeyId="alias/aws/s3")["KeyMetadata"]["KeyManager"] == "AWS"


def test_a_replica_has_its_own_grants_aliases_policy_and_state(rogue_grant: Sandbox) -> None:
    """AWS shares key id, material and rotation between a primary and its replicas; policy,
    grants, aliases, tags and state are each Region's (moto copies the primary's)."""
    kms = rogue_grant.session().client("kms")
    east = rogue_grant.session().client("kms", region_name="us-east-1")
    primary = kms.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    kms.create_alias(AliasName="alias/global", TargetKeyId=primary)
    kms.create_grant(
        KeyId=primary, GranteePrincipal="arn:aws:iam::123456789012:role/a", Operations=["Decrypt"]
    )
    blob = kms.encrypt(KeyId=primary, Plaintext=b"hr")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob, KeyId=primary)["Plaintext"] == b"hr"
    kms.put_key_policy(KeyId=primary, PolicyName="default", Policy='{"Statement": []}')
    kms.disable_key(KeyId=primary)
    replica = kms.replicate_key(KeyId=primary, ReplicaRegion="us-east-1")["ReplicaKeyMetadata"]
    assert (replica["KeyId"], replica["KeyState"]) == (primary, "Enabled")
    assert east.list_grants(KeyId=primary)["Grants"] == []
    assert east.list_aliases(KeyId=primary)["Aliases"] == []
    assert (
        "Enable IAM User Permissions"
        in east.get_key_policy(KeyId=primary, PolicyName="default")["Policy"]
    )
    east.create_grant(
        KeyId=primary, GranteePrincipal="arn:aws:iam::123456789012:role/b", Operations=["Decrypt"]
    )
    assert len(kms.list_grants(KeyId=primary)["Grants"]) == 1
    assert state(kms, primary) == "Disabled"
    decrypted = east.decrypt(CiphertextBlob=blob)  # the same key material
    assert (decrypted["Plaintext"], decrypted["KeyId"]) == (b"hr", replica["Arn"])


def test_replicate_key_refuses_what_aws_refuses(rogue_grant: Sandbox, kms: Any) -> None:
    single = kms.create_key()["KeyMetadata"]["KeyId"]
    primary = kms.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    kms.replicate_key(KeyId=primary, ReplicaRegion="us-east-1")
    east = rogue_grant.session().client("kms", region_name="us-east-1")
    replicate = kms.replicate_key
    assert error_code(lambda: replicate(KeyId=single, ReplicaRegion="us-east-1")) == (
        "UnsupportedOperationException"
    )
    assert error_code(lambda: east.replicate_key(KeyId=primary, ReplicaRegion="us-west-2")) == (
        "UnsupportedOperationException"  # a replica is not replicated
    )
    assert error_code(lambda: replicate(KeyId=primary, ReplicaRegion="us-east-1")) == (
        "AlreadyExistsException"
    )
    assert error_code(lambda: replicate(KeyId=primary, ReplicaRegion="eu-west-1")) == (
        "AlreadyExistsException"  # the primary's own Region
    )
    assert error_code(lambda: replicate(KeyId=primary, ReplicaRegion="mars-1")) == (
        "ValidationException"
    )
    pending = kms.create_key(MultiRegion=True)["KeyMetadata"]["KeyId"]
    kms.schedule_key_deletion(KeyId=pending, PendingWindowInDays=7)
    assert error_code(lambda: replicate(KeyId=pending, ReplicaRegion="us-east-1")) == (
        "KMSInvalidStateException"
    )

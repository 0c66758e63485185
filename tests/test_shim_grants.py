"""The sandbox's grants and data key pairs, as the KMS API reference has them.

References (the AWS KMS API reference):
- RetireGrant, https://docs.aws.amazon.com/kms/latest/APIReference/API_RetireGrant.html:
  "This operation can be called by the retiring principal for a grant, by the grantee
  principal if the grant allows the RetireGrant operation, and by the Amazon Web Services
  account in which the grant is created"; cross-account use: yes; NotFoundException,
  InvalidGrantTokenException.
- RevokeGrant, https://docs.aws.amazon.com/kms/latest/APIReference/API_RevokeGrant.html
  (NotFoundException for a grant the key does not have).
- CreateGrant / GrantListEntry: a grant id is 64 hex characters ("A grant ID is a 64 character
  unique identifier of a grant").
- GenerateDataKeyPair, https://docs.aws.amazon.com/kms/latest/APIReference/API_GenerateDataKeyPair.html
  and GenerateDataKeyPairWithoutPlaintext: the private key (DER PKCS #8) encrypted under a
  symmetric encryption key, the public key (DER SubjectPublicKeyInfo); InvalidKeyUsageException
  for any other key. Not in a custom key store: "GenerateDataKeyPair and
  GenerateDataKeyPairWithoutPlaintext are not supported in custom key stores" ("Use KMS keys in
  custom key stores", https://docs.aws.amazon.com/kms/latest/developerguide/use-cmk-keystore.html).
"""

from __future__ import annotations

import re
from typing import Any

import boto3

from kmsir.sandbox import Sandbox
from kmsir.sandbox import scenario as scenarios

from .test_shim import error_code

OUTSIDER = "arn:aws:iam::444455556666:role/backup-sync"


def as_role(sandbox: Sandbox, role_arn: str) -> Any:
    """A KMS client whose caller is a session of ``role_arn`` (moto's STS remembers it)."""
    sts = sandbox.session().client("sts")
    creds = sts.assume_role(RoleArn=role_arn, RoleSessionName="grant-test")["Credentials"]
    return boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=sandbox.region,
    ).client("kms")


def test_grant_ids_are_64_hex_and_the_same_each_time() -> None:
    ids = []
    for _ in range(2):
        with Sandbox(scenarios.load("rogue-grant")) as sandbox:
            ids.append({name: grant["id"] for name, grant in sandbox.grants.items()})
            kms = sandbox.session().client("kms")
            listed = kms.list_grants(KeyId=sandbox.keys["payments"]["id"])["Grants"]
            assert {g["GrantId"] for g in listed} == set(ids[-1].values())
    assert ids[0] == ids[1]
    assert all(re.fullmatch(r"[0-9a-f]{64}", grant_id) for grant_id in ids[0].values())


def test_who_may_retire_a_grant(rogue_grant: Sandbox) -> None:
    kms = rogue_grant.session().client("kms")
    key = rogue_grant.keys["payments"]
    outsider = as_role(rogue_grant, OUTSIDER)

    def grant(**extra: Any) -> dict[str, str]:
        return dict(kms.create_grant(KeyId=key["id"], **extra))

    plain = grant(GranteePrincipal=OUTSIDER, Operations=["Decrypt"])
    retirable = grant(GranteePrincipal=OUTSIDER, Operations=["Decrypt", "RetireGrant"])
    retiring = grant(
        GranteePrincipal="arn:aws:iam::123456789012:role/app",
        Operations=["Decrypt"],
        RetiringPrincipal=OUTSIDER,
    )
    by_token = grant(
        GranteePrincipal="arn:aws:iam::123456789012:role/app",
        Operations=["Decrypt"],
        RetiringPrincipal=OUTSIDER,
    )

    # a grantee whose grant does not allow RetireGrant, from another account: refused
    assert error_code(
        lambda: outsider.retire_grant(KeyId=key["arn"], GrantId=plain["GrantId"])
    ) == ("AccessDeniedException")
    # the grantee of a grant that allows it, and the retiring principal (by id or token)
    outsider.retire_grant(KeyId=key["arn"], GrantId=retirable["GrantId"])
    outsider.retire_grant(KeyId=key["arn"], GrantId=retiring["GrantId"])
    outsider.retire_grant(GrantToken=by_token["GrantToken"])
    # the account the grant was made in
    kms.retire_grant(KeyId=key["id"], GrantId=plain["GrantId"])
    left = {g["GrantId"] for g in kms.list_grants(KeyId=key["id"])["Grants"]}
    gone = {g["GrantId"] for g in (plain, retirable, retiring, by_token)}
    assert not left & gone
    assert left == {g["id"] for g in rogue_grant.grants.values()}


def test_unknown_grants_are_not_found(rogue_grant: Sandbox) -> None:
    kms = rogue_grant.session().client("kms")
    key = rogue_grant.keys["payments"]
    ghost = "0" * 64
    assert error_code(lambda: kms.retire_grant(KeyId=key["id"], GrantId=ghost)) == (
        "NotFoundException"
    )
    assert error_code(lambda: kms.revoke_grant(KeyId=key["arn"], GrantId=ghost)) == (
        "NotFoundException"
    )
    assert error_code(lambda: kms.retire_grant(GrantToken="not-a-token")) == (
        "InvalidGrantTokenException"
    )
    rogue = rogue_grant.grants["rogue"]["id"]
    kms.revoke_grant(KeyId=key["arn"], GrantId=rogue)  # by key ARN, as AWS takes it
    assert error_code(lambda: kms.revoke_grant(KeyId=key["id"], GrantId=rogue)) == (
        "NotFoundException"  # revoked already
    )


def test_generate_data_key_pair(rogue_grant: Sandbox) -> None:
    from cryptography.hazmat.primitives import serialization

    kms = rogue_grant.session().client("kms")
    key = rogue_grant.keys["payments"]
    context = {"purpose": "pair"}
    pair = kms.generate_data_key_pair(
        KeyId="alias/payments-prod", KeyPairSpec="ECC_NIST_P256", EncryptionContext=context
    )
    assert (pair["KeyId"], pair["KeyPairSpec"]) == (key["arn"], "ECC_NIST_P256")
    private = serialization.load_der_private_key(pair["PrivateKeyPlaintext"], password=None)
    public = serialization.load_der_public_key(pair["PublicKey"])
    assert private.public_key().public_numbers() == public.public_numbers()  # type: ignore[union-attr]
    decrypted = kms.decrypt(
        CiphertextBlob=pair["PrivateKeyCiphertextBlob"], EncryptionContext=context
    )
    assert decrypted["Plaintext"] == pair["PrivateKeyPlaintext"]
    assert (
        error_code(lambda: kms.decrypt(CiphertextBlob=pair["PrivateKeyCiphertextBlob"]))
        == "InvalidCiphertextException"
    )  # the encryption context is part of it

    rsa = kms.generate_data_key_pair_without_plaintext(KeyId=key["id"], KeyPairSpec="RSA_2048")
    assert "PrivateKeyPlaintext" not in rsa
    der = kms.decrypt(CiphertextBlob=rsa["PrivateKeyCiphertextBlob"])["Plaintext"]
    assert serialization.load_der_private_key(der, password=None).key_size == 2048  # type: ignore[union-attr]

    signing = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    assert (
        error_code(lambda: kms.generate_data_key_pair(KeyId=signing, KeyPairSpec="RSA_2048"))
        == "InvalidKeyUsageException"
    )
    assert (
        error_code(lambda: kms.generate_data_key_pair(KeyId=key["id"], KeyPairSpec="RSA_1024"))
        == "ValidationException"
    )


def test_no_data_key_pairs_under_a_key_in_a_custom_key_store(rogue_grant: Sandbox) -> None:
    """Use KMS keys in custom key stores: "GenerateDataKeyPair and
    GenerateDataKeyPairWithoutPlaintext are not supported in custom key stores"
    (https://docs.aws.amazon.com/kms/latest/developerguide/use-cmk-keystore.html):
    UnsupportedOperationException, for a CloudHSM and an external key store's key alike; a key
    that is Unavailable gets its key-state error first (key-state table [11])."""
    kms = rogue_grant.session().client("kms")
    hsm = kms.create_custom_key_store(
        CustomKeyStoreName="pairs-hsm",
        CloudHsmClusterId="cluster-pairs000001",
        TrustAnchorCertificate="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        KeyStorePassword="kmsPswd-0001",
    )["CustomKeyStoreId"]
    xks = kms.create_custom_key_store(
        CustomKeyStoreName="pairs-xks",
        CustomKeyStoreType="EXTERNAL_KEY_STORE",
        XksProxyUriEndpoint="https://xks-pairs.example.com",
        XksProxyUriPath="/example/kms/xks/v1",
        XksProxyConnectivity="PUBLIC_ENDPOINT",
        XksProxyAuthenticationCredential={
            "AccessKeyId": "ABCDE12345670EXAMPLE",
            "RawSecretAccessKey": "DXjSUawnel2fr6SKC7G25CNxTyWKE5PF9XX6H/u9pSo=",
        },
    )["CustomKeyStoreId"]
    keys = []
    for store, origin, extra in (
        (hsm, "AWS_CLOUDHSM", {}),
        (xks, "EXTERNAL_KEY_STORE", {"XksKeyId": "pairs-external-key"}),
    ):
        kms.connect_custom_key_store(CustomKeyStoreId=store)
        created = kms.create_key(CustomKeyStoreId=store, Origin=origin, **extra)["KeyMetadata"]
        keys.append(created["KeyId"])
    for key in keys:
        assert kms.encrypt(KeyId=key, Plaintext=b"usable")["CiphertextBlob"]  # Enabled
        for generate in (kms.generate_data_key_pair, kms.generate_data_key_pair_without_plaintext):
            assert error_code(lambda g=generate, k=key: g(KeyId=k, KeyPairSpec="RSA_2048")) == (
                "UnsupportedOperationException"
            )
    kms.disconnect_custom_key_store(CustomKeyStoreId=hsm)
    assert error_code(
        lambda: kms.generate_data_key_pair(KeyId=keys[0], KeyPairSpec="ECC_NIST_P256")
    ) == ("KMSInvalidStateException")  # Unavailable: the key state answers first


def test_enabling_an_unavailable_key_takes_effect_on_connecting(rogue_grant: Sandbox) -> None:
    """Footnote [12] of the key-state table: EnableKey/DisableKey of an Unavailable key
    succeed, and the key state changes when the key becomes available."""
    kms = rogue_grant.session().client("kms")
    store = kms.create_custom_key_store(
        CustomKeyStoreName="grants-test",
        CloudHsmClusterId="cluster-abcdefghijk",
        TrustAnchorCertificate="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        KeyStorePassword="kmsPswd-0001",
    )["CustomKeyStoreId"]
    kms.connect_custom_key_store(CustomKeyStoreId=store)
    key = kms.create_key(CustomKeyStoreId=store, Origin="AWS_CLOUDHSM")["KeyMetadata"]["KeyId"]
    kms.disconnect_custom_key_store(CustomKeyStoreId=store)
    kms.disable_key(KeyId=key)
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Unavailable"
    kms.connect_custom_key_store(CustomKeyStoreId=store)
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Disabled"


def test_a_resumed_old_run_revokes_the_grant_it_named_by_its_old_id() -> None:
    """Release 0.2.0's sandbox journal revoked the rogue grant by moto's 8-character id
    (tests/data/old-release); replayed into today's world, the same grant is revoked."""
    from pathlib import Path

    from kmsir.evidence.bundle import read_journal

    old = Path(__file__).resolve().parent / "data" / "old-release"
    view = read_journal(old / "sandbox" / "journal.jsonl").view()
    with Sandbox(scenarios.load(str(old / "scenarios" / "rogue-grant.yaml"))) as sandbox:
        replayed = sandbox.replay(view)
        kms = sandbox.session().client("kms")
        left = {
            g["GrantId"] for g in kms.list_grants(KeyId=sandbox.keys["payments"]["id"])["Grants"]
        }
    assert replayed["refused"] == []
    assert left == {sandbox.grants["app"]["id"]}  # the rogue grant is gone

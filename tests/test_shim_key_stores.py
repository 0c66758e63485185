"""The sandbox's emulation of custom key stores, CloudHSM and external (moto has none): each
patch point answers as the AWS documentation says.

References (AWS, not moto):
- https://docs.aws.amazon.com/kms/latest/APIReference/API_CreateCustomKeyStore.html
- https://docs.aws.amazon.com/kms/latest/APIReference/API_DescribeCustomKeyStores.html
- https://docs.aws.amazon.com/kms/latest/APIReference/API_ConnectCustomKeyStore.html
- https://docs.aws.amazon.com/kms/latest/APIReference/API_DisconnectCustomKeyStore.html
- https://docs.aws.amazon.com/kms/latest/APIReference/API_UpdateCustomKeyStore.html
- https://docs.aws.amazon.com/kms/latest/APIReference/API_DeleteCustomKeyStore.html
- https://docs.aws.amazon.com/kms/latest/APIReference/API_CreateKey.html
- https://docs.aws.amazon.com/kms/latest/developerguide/key-state.html (the Unavailable state)

One sandbox for the module: each test makes stores (unique names) and keys of its own.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kmsir.sandbox import DUMMY_CREDENTIALS, Sandbox
from kmsir.sandbox import scenario as scenarios
from kmsir.sandbox.shim import common

from .test_shim import error_code, state

AWS = shutil.which("aws", path=str(Path(sys.executable).parent)) or shutil.which("aws")
_numbers = itertools.count()


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(scenarios.load("rogue-grant")) as world:
        yield world


@pytest.fixture
def kms(sandbox: Sandbox) -> Any:
    return sandbox.session().client("kms")


def store(kms: Any, store_id: str) -> dict[str, Any]:
    stores = kms.describe_custom_key_stores(CustomKeyStoreId=store_id)["CustomKeyStores"]
    assert len(stores) == 1
    return dict(stores[0])


def cloudhsm_store(kms: Any, *, connect: bool = True) -> str:
    n = next(_numbers)
    store_id = kms.create_custom_key_store(
        CustomKeyStoreName=f"hsm-{n}",
        CloudHsmClusterId=f"cluster-{n:011d}",
        TrustAnchorCertificate="-----BEGIN CERTIFICATE-----\n...",
        KeyStorePassword="kmsuser-pass",
    )["CustomKeyStoreId"]
    if connect:
        kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    return str(store_id)


def external_store(kms: Any, *, connect: bool = True, **overrides: Any) -> str:
    n = next(_numbers)
    params = {
        "CustomKeyStoreName": f"xks-{n}",
        "CustomKeyStoreType": "EXTERNAL_KEY_STORE",
        "XksProxyUriEndpoint": f"https://xks-{n}.example.com",
        "XksProxyUriPath": "/example/kms/xks/v1",
        "XksProxyConnectivity": "PUBLIC_ENDPOINT",
        "XksProxyAuthenticationCredential": {
            "AccessKeyId": "ABCDE12345670EXAMPLE",
            "RawSecretAccessKey": "DXjSUawnel2fr6SKC7G25CNxTyWKE5PF9XX6H/u9pSo=",
        },
        **overrides,
    }
    store_id = kms.create_custom_key_store(**params)["CustomKeyStoreId"]
    if connect:
        kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    return str(store_id)


def test_a_new_store_is_disconnected_and_described(kms: Any) -> None:
    store_id = cloudhsm_store(kms, connect=False)
    assert re.fullmatch(r"cks-[0-9a-f]{17}", store_id)
    entry = store(kms, store_id)
    assert entry["ConnectionState"] == "DISCONNECTED"
    assert entry["CustomKeyStoreType"] == "AWS_CLOUDHSM"  # the default type
    assert entry["CloudHsmClusterId"].startswith("cluster-")
    assert "TrustAnchorCertificate" in entry and "KeyStorePassword" not in entry
    by_name = kms.describe_custom_key_stores(CustomKeyStoreName=entry["CustomKeyStoreName"])
    assert [s["CustomKeyStoreId"] for s in by_name["CustomKeyStores"]] == [store_id]
    xks = store(kms, external_store(kms, connect=False))
    proxy = xks["XksProxyConfiguration"]
    assert (xks["CustomKeyStoreType"], proxy["Connectivity"]) == (
        "EXTERNAL_KEY_STORE",
        "PUBLIC_ENDPOINT",
    )
    assert proxy["AccessKeyId"] == "ABCDE12345670EXAMPLE" and "RawSecretAccessKey" not in proxy
    assert "CloudHsmClusterId" not in xks


def test_describe_pages_and_refuses_the_unknown(kms: Any) -> None:
    for _ in range(3):
        cloudhsm_store(kms, connect=False)
    every = kms.describe_custom_key_stores()["CustomKeyStores"]
    pages, marker = [], None
    while True:
        page = kms.describe_custom_key_stores(Limit=2, **({"Marker": marker} if marker else {}))
        pages.append([s["CustomKeyStoreId"] for s in page["CustomKeyStores"]])
        if not page["Truncated"]:
            break
        marker = page["NextMarker"]
    assert [s for p in pages for s in p] == [s["CustomKeyStoreId"] for s in every]
    assert all(len(p) == 2 for p in pages[:-1])
    unknown = "cks-0000000000000000f"
    code = "CustomKeyStoreNotFoundException"
    assert error_code(lambda: kms.describe_custom_key_stores(CustomKeyStoreId=unknown)) == code
    assert error_code(lambda: kms.describe_custom_key_stores(CustomKeyStoreName="ghost")) == code
    assert error_code(lambda: kms.connect_custom_key_store(CustomKeyStoreId=unknown)) == code
    assert error_code(lambda: kms.describe_custom_key_stores(Marker="%%%")) == (
        "InvalidMarkerException"
    )


def test_create_refuses_what_aws_refuses(sandbox: Sandbox, kms: Any) -> None:
    taken = store(kms, external_store(kms, connect=False))
    proxy = taken["XksProxyConfiguration"]
    assert error_code(
        lambda: external_store(kms, CustomKeyStoreName=taken["CustomKeyStoreName"])
    ) == ("CustomKeyStoreNameInUseException")
    assert error_code(
        lambda: external_store(
            kms, XksProxyUriEndpoint=proxy["UriEndpoint"], XksProxyUriPath=proxy["UriPath"]
        )
    ) == ("XksProxyUriInUseException")
    assert error_code(lambda: external_store(kms, XksProxyUriEndpoint="http://plain.example")) == (
        "ValidationException"  # the proxy endpoint must be HTTPS
    )
    assert error_code(lambda: external_store(kms, XksProxyUriPath="/kms/xks/v2")) == (
        "ValidationException"
    )
    assert error_code(lambda: external_store(kms, XksProxyConnectivity="VPC_ENDPOINT_SERVICE")) == (
        "ValidationException"  # VPC connectivity needs the endpoint service's name
    )
    hsm = store(kms, cloudhsm_store(kms, connect=False))
    assert error_code(
        lambda: kms.create_custom_key_store(
            CustomKeyStoreName="another",
            CloudHsmClusterId=hsm["CloudHsmClusterId"],
            TrustAnchorCertificate="cert",
            KeyStorePassword="kmsuser-pass",
        )
    ) == ("CloudHsmClusterInUseException")
    from botocore.config import Config

    # botocore checks the length too; switch that off to see the service's own answer
    raw = sandbox.session().client("kms", config=Config(parameter_validation=False))
    assert error_code(
        lambda: raw.create_custom_key_store(
            CustomKeyStoreName="short-password",
            CloudHsmClusterId="cluster-99999999999",
            TrustAnchorCertificate="cert",
            KeyStorePassword="abc",  # 7 to 32 characters
        )
    ) == ("ValidationException")


@pytest.mark.parametrize("kind", ["cloudhsm", "external"])
def test_keys_are_made_only_in_a_connected_store(kms: Any, kind: str) -> None:
    make = cloudhsm_store if kind == "cloudhsm" else external_store
    origin = "AWS_CLOUDHSM" if kind == "cloudhsm" else "EXTERNAL_KEY_STORE"
    extra = {} if kind == "cloudhsm" else {"XksKeyId": f"ext-{next(_numbers)}"}
    store_id = make(kms, connect=False)
    assert error_code(
        lambda: kms.create_key(CustomKeyStoreId=store_id, Origin=origin, **extra)
    ) == ("CustomKeyStoreInvalidStateException")
    kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    assert store(kms, store_id)["ConnectionState"] == "CONNECTED"
    created = kms.create_key(CustomKeyStoreId=store_id, Origin=origin, **extra)["KeyMetadata"]
    described = kms.describe_key(KeyId=created["KeyId"])["KeyMetadata"]
    assert (described["KeyState"], described["Origin"], described["CustomKeyStoreId"]) == (
        "Enabled",
        origin,
        store_id,
    )
    if kind == "cloudhsm":
        assert described["CloudHsmClusterId"] == store(kms, store_id)["CloudHsmClusterId"]
        assert "XksKeyConfiguration" not in described
    else:
        assert described["XksKeyConfiguration"] == {"Id": extra["XksKeyId"]}
        assert error_code(
            lambda: kms.create_key(CustomKeyStoreId=store_id, Origin=origin, **extra)
        ) == ("XksKeyAlreadyInUseException")
        assert error_code(lambda: kms.create_key(CustomKeyStoreId=store_id, Origin=origin)) == (
            "ValidationException"  # XksKeyId is required
        )
    blob = kms.encrypt(KeyId=created["KeyId"], Plaintext=b"x")["CiphertextBlob"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"
    # the wrong origin, or a key a custom key store does not hold
    assert error_code(lambda: kms.create_key(CustomKeyStoreId=store_id, Origin="AWS_KMS")) == (
        "UnsupportedOperationException"
    )
    assert error_code(
        lambda: kms.create_key(
            CustomKeyStoreId=store_id, Origin=origin, KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY"
        )
    ) == ("UnsupportedOperationException")
    assert error_code(
        lambda: kms.create_key(CustomKeyStoreId="cks-0000000000000000f", Origin=origin)
    ) == ("CustomKeyStoreNotFoundException")


def test_disconnecting_makes_every_key_unavailable_until_connected(kms: Any) -> None:
    store_id = cloudhsm_store(kms)
    made = [
        kms.create_key(CustomKeyStoreId=store_id, Origin="AWS_CLOUDHSM")["KeyMetadata"]["KeyId"]
        for _ in range(4)
    ]
    enabled, disabled, pending, switched = made
    blob = kms.encrypt(KeyId=enabled, Plaintext=b"ledger")["CiphertextBlob"]
    kms.disable_key(KeyId=disabled)
    kms.schedule_key_deletion(KeyId=pending, PendingWindowInDays=7)
    kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
    assert store(kms, store_id)["ConnectionState"] == "DISCONNECTED"
    # key-state table: Unavailable, except a key pending deletion ([13]: it can be cancelled)
    assert [state(kms, k) for k in made] == [
        "Unavailable",
        "Unavailable",
        "PendingDeletion",
        "Unavailable",
    ]
    assert kms.describe_key(KeyId=enabled)["KeyMetadata"]["Enabled"] is False
    assert error_code(lambda: kms.decrypt(CiphertextBlob=blob)) == "KMSInvalidStateException"
    assert error_code(lambda: kms.encrypt(KeyId=enabled, Plaintext=b"x")) == (
        "KMSInvalidStateException"
    )
    assert error_code(lambda: kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)) == (
        "CustomKeyStoreInvalidStateException"  # already disconnected
    )
    # key-state table [12]: DisableKey succeeds, the key stays Unavailable until connected
    kms.disable_key(KeyId=switched)
    assert state(kms, switched) == "Unavailable"
    kms.cancel_key_deletion(KeyId=pending)  # a cancelled deletion leaves it Disabled: Unavailable
    assert state(kms, pending) == "Unavailable"
    kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    assert [state(kms, k) for k in made] == ["Enabled", "Disabled", "Disabled", "Disabled"]
    assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"ledger"
    kms.connect_custom_key_store(CustomKeyStoreId=store_id)  # connecting again: no change
    assert state(kms, enabled) == "Enabled"


def test_store_state_change_records_what_an_unavailable_key_returns_to(kms: Any) -> None:
    """``common.store_state_change`` (contract 2): what EnableKey/DisableKey wrappers call."""
    store_id = cloudhsm_store(kms)
    key_id = kms.create_key(CustomKeyStoreId=store_id, Origin="AWS_CLOUDHSM")["KeyMetadata"]
    from moto.kms.models import kms_backends

    key = kms_backends["123456789012"]["eu-west-1"].keys[key_id["KeyId"]]
    assert common.store_state_change(key, "Disabled") is False  # connected: not handled here
    kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
    assert common.store_state_change(key, "Disabled") is True
    assert (key.key_state, key.enabled) == ("Unavailable", False)
    kms.connect_custom_key_store(CustomKeyStoreId=store_id)
    assert (key.key_state, key.enabled) == ("Disabled", False)
    common.set_state(key, "Enabled")
    assert (key.key_state, key.enabled) == ("Enabled", True)


def test_update_changes_most_settings_only_while_disconnected(kms: Any) -> None:
    store_id = external_store(kms)
    kms.update_custom_key_store(
        CustomKeyStoreId=store_id, NewCustomKeyStoreName=f"renamed-{store_id}"
    )
    kms.update_custom_key_store(CustomKeyStoreId=store_id, XksProxyUriPath="/v2/kms/xks/v1")
    entry = store(kms, store_id)
    assert entry["CustomKeyStoreName"] == f"renamed-{store_id}"
    assert entry["XksProxyConfiguration"]["UriPath"] == "/v2/kms/xks/v1"
    moved = "https://moved.example.com"
    assert error_code(
        lambda: kms.update_custom_key_store(CustomKeyStoreId=store_id, XksProxyUriEndpoint=moved)
    ) == ("CustomKeyStoreInvalidStateException")
    kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
    kms.update_custom_key_store(CustomKeyStoreId=store_id, XksProxyUriEndpoint=moved)
    assert store(kms, store_id)["XksProxyConfiguration"]["UriEndpoint"] == moved
    hsm = cloudhsm_store(kms)
    assert error_code(
        lambda: kms.update_custom_key_store(CustomKeyStoreId=hsm, KeyStorePassword="new-pass-1")
    ) == ("CustomKeyStoreInvalidStateException")
    assert error_code(
        lambda: kms.update_custom_key_store(
            CustomKeyStoreId=hsm, NewCustomKeyStoreName=f"renamed-{store_id}"
        )
    ) == ("CustomKeyStoreNameInUseException")


def test_delete_only_a_disconnected_empty_store(kms: Any) -> None:
    store_id = cloudhsm_store(kms)
    key_id = kms.create_key(CustomKeyStoreId=store_id, Origin="AWS_CLOUDHSM")["KeyMetadata"]
    delete = kms.delete_custom_key_store
    assert error_code(lambda: delete(CustomKeyStoreId=store_id)) == (
        "CustomKeyStoreInvalidStateException"
    )
    kms.disconnect_custom_key_store(CustomKeyStoreId=store_id)
    assert error_code(lambda: delete(CustomKeyStoreId=store_id)) == (
        "CustomKeyStoreHasCMKsException"
    )
    kms.schedule_key_deletion(KeyId=key_id["KeyId"], PendingWindowInDays=7)  # not yet deleted
    assert error_code(lambda: delete(CustomKeyStoreId=store_id)) == (
        "CustomKeyStoreHasCMKsException"
    )
    empty = cloudhsm_store(kms, connect=False)
    delete(CustomKeyStoreId=empty)
    assert error_code(lambda: store(kms, empty)) == "CustomKeyStoreNotFoundException"


def test_automatic_rotation_is_not_for_keys_in_a_store(kms: Any) -> None:
    store_id = cloudhsm_store(kms)
    key_id = kms.create_key(CustomKeyStoreId=store_id, Origin="AWS_CLOUDHSM")["KeyMetadata"]
    assert error_code(lambda: kms.enable_key_rotation(KeyId=key_id["KeyId"])) == (
        "UnsupportedOperationException"  # key-state table [7]
    )


def test_stores_live_on_moto_backends_and_are_reset_with_them(sandbox: Sandbox) -> None:
    """Per account and Region: another Region sees none of this one's stores."""
    kms = sandbox.session().client("kms")
    cloudhsm_store(kms, connect=False)
    east = sandbox.session().client("kms", region_name="us-east-1")
    assert east.describe_custom_key_stores()["CustomKeyStores"] == []
    from moto.kms.models import kms_backends

    assert kms_backends["123456789012"]["eu-west-1"].kmsir_key_stores


@pytest.mark.skipif(
    AWS is None and not os.environ.get("CI"), reason="needs the AWS CLI (pip install awscli)"
)
def test_the_aws_cli_sees_the_emulator_through_sandbox_serve(sandbox: Sandbox) -> None:
    """One sample through ``sandbox serve``: a store disconnected by the AWS CLI leaves its
    key Unavailable, and an EXTERNAL key waits for its material."""
    assert AWS is not None
    server, endpoint = sandbox.serve()
    try:
        env = {
            **os.environ,
            **DUMMY_CREDENTIALS,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_DEFAULT_REGION": sandbox.region,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }
        env.pop("AWS_PROFILE", None)

        def aws(*args: str) -> dict[str, Any]:
            done = subprocess.run(
                [AWS, "kms", *args, "--output", "json"], env=env, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr
            return dict(json.loads(done.stdout or "{}"))

        kms = sandbox.session().client("kms")
        store_id = cloudhsm_store(kms)
        key_id = kms.create_key(CustomKeyStoreId=store_id, Origin="AWS_CLOUDHSM")["KeyMetadata"]
        aws("disconnect-custom-key-store", "--custom-key-store-id", store_id)
        described = aws("describe-key", "--key-id", key_id["KeyId"])["KeyMetadata"]
        assert (described["KeyState"], described["CustomKeyStoreId"]) == ("Unavailable", store_id)
        external = aws("create-key", "--origin", "EXTERNAL")["KeyMetadata"]
        assert external["KeyState"] == "PendingImport"
    finally:
        server.stop()


def test_generate_random_in_a_cloudhsm_store_needs_it_connected(kms: Any) -> None:
    """GenerateRandom's CustomKeyStoreId: a connected CloudHSM key store; an external key
    store's id is refused (https://docs.aws.amazon.com/kms/latest/APIReference/API_GenerateRandom.html)."""
    hsm = cloudhsm_store(kms, connect=False)
    assert error_code(lambda: kms.generate_random(NumberOfBytes=8, CustomKeyStoreId=hsm)) == (
        "CustomKeyStoreInvalidStateException"
    )
    kms.connect_custom_key_store(CustomKeyStoreId=hsm)
    assert len(kms.generate_random(NumberOfBytes=8, CustomKeyStoreId=hsm)["Plaintext"]) == 8
    xks = external_store(kms)
    assert error_code(lambda: kms.generate_random(NumberOfBytes=8, CustomKeyStoreId=xks)) == (
        "UnsupportedOperationException"
    )
    assert len(kms.generate_random(NumberOfBytes=8)["Plaintext"]) == 8

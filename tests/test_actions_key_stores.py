"""``kms.disconnect-key-store`` and ``kms.connect-key-store`` against the sandbox: the store's
connection state and its keys' states and use, the journal, the inverse in a rollback plan,
the refusals (keys the playbook did not name, keys that entered the store after the preview,
an unknown store), check mode.

AWS's behaviour checked here:
- While a custom key store is disconnected its keys are ``Unavailable`` (unless pending
  deletion) and cannot be used; connecting restores them:
  https://docs.aws.amazon.com/kms/latest/developerguide/disconnect-keystore.html
  https://docs.aws.amazon.com/kms/latest/APIReference/API_DisconnectCustomKeyStore.html
  https://docs.aws.amazon.com/kms/latest/APIReference/API_ConnectCustomKeyStore.html
- Key states (Unavailable refuses cryptographic use with KMSInvalidStateException):
  https://docs.aws.amazon.com/kms/latest/developerguide/key-state.html
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from kmsir import actions
from kmsir.actions.base import Done
from kmsir.actions.kms_key_stores import (
    ConnectKeyStore,
    DisconnectKeyStore,
    DisconnectParams,
    StoreParams,
)
from kmsir.errors import ActionError
from kmsir.evidence.bundle import JOURNAL, read_journal
from kmsir.evidence.calls import describe
from kmsir.run import rollback
from kmsir.sandbox import Sandbox

from .conftest import load_playbook, run_playbook
from .fakes import context

ANCHOR = "-----BEGIN CERTIFICATE-----\nMIIBsandbox\n-----END CERTIFICATE-----"


def hsm_store(sandbox: Sandbox, name: str = "payments-hsm", keys: int = 2) -> tuple[str, list[str]]:
    """A connected CloudHSM key store with ``keys`` keys in it (the first one aliased)."""
    kms = sandbox.session().client("kms")
    store = kms.create_custom_key_store(
        CustomKeyStoreName=name,
        CloudHsmClusterId="cluster-1a23b4cdefg",
        TrustAnchorCertificate=ANCHOR,
        KeyStorePassword="kmsPswd1",
    )["CustomKeyStoreId"]
    kms.connect_custom_key_store(CustomKeyStoreId=store)
    made = [
        str(kms.create_key(CustomKeyStoreId=store, Origin="AWS_CLOUDHSM")["KeyMetadata"]["KeyId"])
        for _ in range(keys)
    ]
    if made:
        kms.create_alias(AliasName=f"alias/{name}", TargetKeyId=made[0])
    return str(store), made


def xks_store(sandbox: Sandbox) -> tuple[str, str]:
    """A connected external key store with one key in it."""
    kms = sandbox.session().client("kms")
    store = kms.create_custom_key_store(
        CustomKeyStoreName="partner-xks",
        CustomKeyStoreType="EXTERNAL_KEY_STORE",
        XksProxyUriEndpoint="https://xks.example.com",
        XksProxyUriPath="/kms/xks/v1",
        XksProxyConnectivity="PUBLIC_ENDPOINT",
        XksProxyAuthenticationCredential={
            "AccessKeyId": "ABCDE12345670EXAMPLE",
            "RawSecretAccessKey": "DXjSUawnel2fr6SKC7G25CNxTyWKE5PF9XX6H/u9pSo=",
        },
    )["CustomKeyStoreId"]
    kms.connect_custom_key_store(CustomKeyStoreId=store)
    key = kms.create_key(
        CustomKeyStoreId=store, Origin="EXTERNAL_KEY_STORE", XksKeyId="bb8562717f809024"
    )["KeyMetadata"]["KeyId"]
    return str(store), str(key)


def connection(sandbox: Sandbox, store: str) -> str:
    kms = sandbox.session().client("kms")
    found = kms.describe_custom_key_stores(CustomKeyStoreId=store)["CustomKeyStores"]
    return str(found[0]["ConnectionState"])


def state(sandbox: Sandbox, key_id: str) -> str:
    kms = sandbox.session().client("kms")
    return str(kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"])


def encrypt_error(sandbox: Sandbox, key_id: str) -> str | None:
    try:
        sandbox.session().client("kms").encrypt(KeyId=key_id, Plaintext=b"x")
    except ClientError as exc:
        return str(exc.response["Error"]["Code"])
    return None


def test_disconnect_makes_every_key_unavailable_and_connect_restores_each(
    rogue_grant: Sandbox,
) -> None:
    store, keys = hsm_store(rogue_grant)
    rogue_grant.session().client("kms").disable_key(KeyId=keys[1])
    ctx, calls = context(rogue_grant.client_factory())
    params = DisconnectParams(store="payments-hsm", keys=["alias/payments-hsm", keys[1]])

    preview = DisconnectKeyStore().preview(ctx, params)
    assert [describe(c) for c in preview.calls] == [
        f"kms:DisconnectCustomKeyStore CustomKeyStoreId={store}"
    ]
    assert preview.typed == ()  # every key in it is named
    assert f"key {keys[0]} (alias/payments-hsm): Enabled -> Unavailable" in preview.notes
    assert f"key {keys[1]}: Disabled -> Unavailable" in preview.notes
    assert set(preview.items) == set(keys)
    ctx.approved = preview
    outcome = DisconnectKeyStore().run(ctx, params)
    assert connection(rogue_grant, store) == "DISCONNECTED"
    assert [state(rogue_grant, k) for k in keys] == ["Unavailable", "Unavailable"]
    assert encrypt_error(rogue_grant, keys[0]) == "KMSInvalidStateException"
    assert outcome.outputs["store_id"] == store and outcome.outputs["state"] == "DISCONNECTED"
    assert sorted(outcome.outputs["keys"]) == sorted(keys)
    assert outcome.outputs["key_states"] == dict.fromkeys(keys, "Unavailable")
    assert outcome.before == {
        "store_id": store,
        "state": "CONNECTED",
        "keys": {keys[0]: "Enabled", keys[1]: "Disabled"},
    }
    again = DisconnectKeyStore().run(ctx, params)
    assert again.status == "already"
    assert sum(c.operation == "DisconnectCustomKeyStore" for c in calls) == 1

    by_id = StoreParams(store=store)
    shown = ConnectKeyStore().preview(ctx, by_id)
    assert [describe(c) for c in shown.calls] == [
        f"kms:ConnectCustomKeyStore CustomKeyStoreId={store}"
    ]
    connected = ConnectKeyStore().run(ctx, by_id)
    assert connected.outputs["state"] == connection(rogue_grant, store) == "CONNECTED"
    # each key takes back its own state: the disabled one stays disabled
    assert [state(rogue_grant, k) for k in keys] == ["Enabled", "Disabled"]
    assert encrypt_error(rogue_grant, keys[0]) is None
    assert ConnectKeyStore().run(ctx, by_id).status == "already"


def test_keys_the_playbook_did_not_name_need_the_typed_confirmation(
    rogue_grant: Sandbox,
) -> None:
    store, keys = hsm_store(rogue_grant)
    ctx, calls = context(rogue_grant.client_factory())
    params = DisconnectParams(store=store, keys=["alias/payments-hsm"])
    preview = DisconnectKeyStore().preview(ctx, params)
    assert preview.typed == (store, "payments-hsm")
    assert f"key {keys[1]}: Enabled -> Unavailable (NOT NAMED by the playbook)" in preview.notes

    # not approved with the typed confirmation: refused, nothing sent
    with pytest.raises(ActionError, match="did not name"):
        DisconnectKeyStore().run(ctx, params)
    assert connection(rogue_grant, store) == "CONNECTED"
    assert all(c.read_only for c in calls)

    # approved as previewed (the store's id or name typed): disconnected, the unnamed key said
    ctx.approved = preview
    outcome = DisconnectKeyStore().run(ctx, params)
    assert connection(rogue_grant, store) == "DISCONNECTED"
    assert outcome.outputs["not_named"] == [keys[1]]


def test_a_key_that_entered_the_store_after_the_preview_stops_the_step(
    rogue_grant: Sandbox,
) -> None:
    store, keys = hsm_store(rogue_grant, keys=1)
    ctx, calls = context(rogue_grant.client_factory())
    params = DisconnectParams(store=store, keys=keys)
    ctx.approved = DisconnectKeyStore().preview(ctx, params)
    late = (
        rogue_grant.session()
        .client("kms")
        .create_key(CustomKeyStoreId=store, Origin="AWS_CLOUDHSM")["KeyMetadata"]["KeyId"]
    )
    with pytest.raises(ActionError, match=f"key\\(s\\) {late} entered"):
        DisconnectKeyStore().run(ctx, params)
    assert connection(rogue_grant, store) == "CONNECTED"
    assert all(c.read_only for c in calls)


def test_an_external_key_store_by_name(rogue_grant: Sandbox) -> None:
    store, key = xks_store(rogue_grant)
    ctx, _ = context(rogue_grant.client_factory())
    params = DisconnectParams(store="partner-xks", keys=[key])
    ctx.approved = DisconnectKeyStore().preview(ctx, params)
    assert "EXTERNAL_KEY_STORE" in ctx.approved.target
    outcome = DisconnectKeyStore().run(ctx, params)
    assert outcome.outputs["store_type"] == "EXTERNAL_KEY_STORE"
    assert outcome.outputs["store_id"] == store
    assert state(rogue_grant, key) == "Unavailable"
    ConnectKeyStore().run(ctx, StoreParams(store="partner-xks"))
    assert state(rogue_grant, key) == "Enabled"


def test_an_unknown_store_is_named_in_the_error(rogue_grant: Sandbox) -> None:
    ctx, _ = context(rogue_grant.client_factory())
    with pytest.raises(ActionError, match="no custom key store nope"):
        DisconnectKeyStore().preview(ctx, DisconnectParams(store="nope"))
    with pytest.raises(ActionError, match="no custom key store cks-0123456789abcdef0"):
        ConnectKeyStore().run(ctx, StoreParams(store="cks-0123456789abcdef0"))
    with pytest.raises(ValueError, match="not a KMS key id"):
        DisconnectParams(store="x", keys=["not a key"])


def book(tmp_path: Path, store: str, keys: list[str]) -> Path:
    path = tmp_path / "stores.yaml"
    path.write_text(
        "id: stores\ntitle: Contain the key store\nsteps:\n"
        "  - id: disconnect\n    action: kms.disconnect-key-store\n"
        f"    with: {{store: {store}, keys: [{', '.join(keys)}]}}\n"
    )
    return path


def test_check_mode_changes_nothing(rogue_grant: Sandbox, tmp_path: Path) -> None:
    store, keys = hsm_store(rogue_grant)
    result = run_playbook(
        load_playbook(book(tmp_path, store, keys)),
        rogue_grant.client_factory(),
        tmp_path / "ev",
        mode="check",
        yes=True,
    )
    assert result.status == "succeeded", result.error
    assert [s.status for s in result.steps] == ["would-run"]
    assert connection(rogue_grant, store) == "CONNECTED"
    assert not read_journal(result.bundle / JOURNAL).view().world


def test_the_journal_and_the_rollback_plan(rogue_grant: Sandbox, tmp_path: Path) -> None:
    store, keys = hsm_store(rogue_grant)
    result = run_playbook(
        load_playbook(book(tmp_path, store, keys)),
        rogue_grant.client_factory(),
        tmp_path / "ev",
        yes=True,
    )
    assert result.status == "succeeded", result.error
    view = read_journal(result.bundle / JOURNAL).view()
    step = view.steps["disconnect"]
    assert step.inverse == "kms.connect-key-store"
    assert (step.before or {})["state"] == "CONNECTED"
    assert (step.after or {})["keys"] == dict.fromkeys(keys, "Unavailable")
    assert [c.operation for c in step.intents] == ["DisconnectCustomKeyStore"]
    now = datetime.now(timezone.utc)
    (item,) = rollback.plan(result.bundle, view, actions.registry(), now).items
    assert item.kind == "undo" and item.undo is not None
    assert (item.undo.action, item.undo.params) == ("kms.connect-key-store", {"store": store})
    # the inverse, run as the rollback would run it; and its own inverse names the keys
    ctx, _ = context(rogue_grant.client_factory())
    outcome = ConnectKeyStore().run(ctx, StoreParams(**item.undo.params))
    assert [state(rogue_grant, k) for k in keys] == ["Enabled", "Enabled"]
    undo: Any = ConnectKeyStore().undo(
        Done(
            step_id="reconnect",
            params=dict(item.undo.params),
            outputs=outcome.outputs,
            before=outcome.before,
            after=outcome.after,
            bundle=str(result.bundle),
        )
    )
    assert undo.action == "kms.disconnect-key-store"
    assert undo.params == {"store": store, "keys": outcome.outputs["keys"]}


def test_a_store_disconnected_and_connected_again_in_one_run_is_left_alone_by_rollback(
    rogue_grant: Sandbox, tmp_path: Path
) -> None:
    store, keys = hsm_store(rogue_grant)
    path = book(tmp_path, store, keys)
    path.write_text(
        path.read_text()
        + "  - {id: reconnect, action: kms.connect-key-store, with: {store: payments-hsm}}\n"
    )
    result = run_playbook(
        load_playbook(path), rogue_grant.client_factory(), tmp_path / "ev", yes=True
    )
    assert result.status == "succeeded", result.error
    assert connection(rogue_grant, store) == "CONNECTED"
    view = read_journal(result.bundle / JOURNAL).view()
    now = datetime.now(timezone.utc)
    items = rollback.plan(result.bundle, view, actions.registry(), now).items
    assert [(i.step_id, i.kind) for i in items] == [
        ("reconnect", "undone"),
        ("disconnect", "undone"),
    ]

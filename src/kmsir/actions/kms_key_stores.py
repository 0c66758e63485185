"""Custom key stores (CloudHSM, external): disconnect one, connect it again.

Disconnecting a custom key store is containment that covers every key in it at once: while
the store is disconnected each of its keys reports ``Unavailable`` and every cryptographic use
fails (a key pending deletion stays so). Connecting it again gives each key back its own
state. So the disconnect's preview lists every key in the store, and a key the playbook did
not name (``keys:``) makes the step high impact: it asks for the store's id or name to be
typed, and no key that entered the store after the preview is disconnected unseen.

https://docs.aws.amazon.com/kms/latest/developerguide/custom-key-store-overview.html
https://docs.aws.amazon.com/kms/latest/APIReference/API_DisconnectCustomKeyStore.html
https://docs.aws.amazon.com/kms/latest/APIReference/API_ConnectCustomKeyStore.html
"""

from __future__ import annotations

import dataclasses
from types import MappingProxyType
from typing import Any

from pydantic import Field, field_validator

from kmsir.actions.base import Action, ActionContext, Done, Outcome, Params, Preview, Undo
from kmsir.actions.kms_store_info import STORE_ID, StoreInfo, aliases_by_key, named, store_info
from kmsir.actions.kmskeys import check_key_reference, describe
from kmsir.aws import aws_errors
from kmsir.errors import ActionError
from kmsir.evidence.calls import Call

__all__ = [
    "STORE_ID",
    "ConnectKeyStore",
    "DisconnectKeyStore",
    "DisconnectParams",
    "StoreInfo",
    "StoreParams",
    "store_info",
]

#: Key states a disconnect leaves as they are (AWS: "Unavailable, unless PendingDeletion").
_KEPT = ("PendingDeletion", "PendingReplicaDeletion")

_OUTPUTS = MappingProxyType(
    {
        "store_id": "str",
        "store_name": "str",
        "store_type": "str",
        "state": "str",
        "keys": "list[str]",
        "key_states": "dict",
    }
)


class StoreParams(Params):
    """A custom key store: its id (``cks-`` and 17 hex digits) or its name."""

    store: str = Field(min_length=1, max_length=256)

    @field_validator("store")
    @classmethod
    def _store(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("a custom key store id (cks-...) or name")
        return value


class DisconnectParams(StoreParams):
    """The store, and the keys the playbook expects in it (any other needs a typed
    confirmation)."""

    keys: list[str] | None = Field(default=None, max_length=1000)

    @field_validator("keys")
    @classmethod
    def _keys(cls, value: list[str] | None) -> list[str] | None:
        return [check_key_reference(k) for k in value] if value is not None else None


def _call(operation: str, store_id: str) -> Call:
    return Call(service="kms", operation=operation, params={"CustomKeyStoreId": store_id})


class _StoreChange(Action[Any]):
    """One call on a store, one desired connection state."""

    operation: str
    #: States that already count as done (connecting is on its way to connected).
    settled_states: tuple[str, ...]
    permissions_common = (
        "kms:DescribeCustomKeyStores",
        "kms:ListKeys",
        "kms:DescribeKey",
        "kms:ListAliases",
    )

    def api_calls(self, params: Any) -> list[Call]:
        return [_call(self.operation, params.store)]

    def _send(self, ctx: ActionContext, store: StoreInfo) -> StoreInfo:
        from botocore import xform_name  # botocore is imported when a call is made

        ctx.changing(store.summary)
        kms = ctx.clients.client("kms")
        with aws_errors(f"{self.operation} {store.store_id}"):
            getattr(kms, xform_name(self.operation))(CustomKeyStoreId=store.store_id)
        return store_info(ctx, store.store_id)

    def _settled(self, ctx: ActionContext, store: StoreInfo, summary: str) -> Outcome:
        """Nothing to send: "already", or on a resumed re-check the change sent before the run
        stopped."""
        earlier = ctx.changed_by_earlier_attempt()
        if earlier is None:
            return Outcome(
                outputs=store.outputs(),
                summary=summary,
                status="already",
                before=store.summary,
                after=store.summary,
            )
        return Outcome(
            outputs=store.outputs(),
            summary=f"{store.label}: {earlier.get('state')} -> {store.state}",
            before=earlier,
            after=store.summary,
        )

    def _changed(self, before: StoreInfo, after: StoreInfo, extra: str) -> Outcome:
        return Outcome(
            outputs=after.outputs(),
            summary=f"{before.label}: {before.state} -> {after.state}; {extra}",
            before=before.summary,
            after=after.summary,
        )


class DisconnectKeyStore(_StoreChange):
    """Disconnect a CloudHSM or external key store: every key in it becomes Unavailable.

    ```yaml
    - id: disconnect
      action: kms.disconnect-key-store
      with: {store: payments-hsm, keys: [alias/payments-hsm]}
    ```
    ``keys``: the keys the playbook expects in the store (ids, ARNs, aliases). The preview lists
    every key in it; one the playbook did not name needs the store's id or name typed to
    approve, and a key that entered the store after the preview stops the step.
    Outputs: ``store_id``, ``store_name``, ``store_type``, ``state`` (ConnectionState),
    ``keys`` (the key ids in the store), ``key_states``, ``not_named``.
    """

    name = "kms.disconnect-key-store"
    high_impact = True  # every key in the store is unusable
    params = DisconnectParams
    outputs = MappingProxyType({**_OUTPUTS, "not_named": "list[str]"})
    permissions = (*_StoreChange.permissions_common, "kms:DisconnectCustomKeyStore")
    mutating = True
    inverse = "kms.connect-key-store"
    operation = "DisconnectCustomKeyStore"
    settled_states = ("DISCONNECTED", "DISCONNECTING")

    def _not_named(
        self, ctx: ActionContext, params: DisconnectParams, store: StoreInfo
    ) -> tuple[list[str], list[str]]:
        """(keys in the store the playbook did not name, keys it named that are not in it)."""
        named = {describe(ctx, k).key_id for k in params.keys or []}
        inside = [k.key_id for k in store.keys]
        return [k for k in inside if k not in named], sorted(named - set(inside))

    def preview(self, ctx: ActionContext, params: DisconnectParams) -> Preview:
        store = store_info(ctx, params.store)
        unnamed, absent = self._not_named(ctx, params, store)
        aliases = aliases_by_key(ctx)
        pending = store.state not in self.settled_states
        notes = [
            f"key {named(aliases, k)}: {k.state} -> "
            + (k.state if k.state in _KEPT or not pending else "Unavailable")
            + (" (NOT NAMED by the playbook)" if k.key_id in unnamed else "")
            for k in store.keys
        ]
        if not store.keys:
            notes.append("no key is in the store")
        notes += [f"key {k}: named by the playbook, but not in this store" for k in absent]
        notes += [
            f"key {k}: could not be read (AccessDenied), it may be in this store"
            for k in store.unreadable
        ]
        notes.append(
            "every cryptographic use of the store's keys fails until kms.connect-key-store; "
            "data keys already decrypted keep working until they are needed again"
        )
        return Preview(
            calls=(_call(self.operation, store.store_id),) if pending else (),
            target=store.label,
            state=f"connection state {store.state}, {len(store.keys)} key(s) in the store",
            typed=(store.store_id, store.name) if (unnamed or store.unreadable) and pending else (),
            notes=tuple(notes),
            items=tuple(k.key_id for k in store.keys),
        )

    def run(self, ctx: ActionContext, params: DisconnectParams) -> Outcome:
        store = store_info(ctx, params.store)
        unnamed, _ = self._not_named(ctx, params, store)
        if store.state in self.settled_states:
            outcome = self._settled(
                ctx, store, f"{store.label} was already {store.state}: nothing sent"
            )
            return _more(outcome, not_named=unnamed)
        approved = ctx.approved
        unseen = [k for k in store.outputs()["keys"] if approved and k not in approved.items]
        if unseen:
            raise ActionError(
                f"{self.name} stopped: key(s) {', '.join(unseen)} entered {store.label} after "
                "its preview was approved; nothing sent (run the step again to see them)"
            )
        unknown = [*unnamed, *store.unreadable]
        if unknown and (approved is None or not approved.typed):
            raise ActionError(
                f"{self.name} refused: {store.label} holds key(s) the playbook did not name "
                f"({', '.join(unknown)}); disconnecting them needs the store's id or name typed "
                "to approve (or name them in keys:)"
            )
        after = self._send(ctx, store)
        unavailable = [k for k, s in after.key_states.items() if s == "Unavailable"]
        outcome = self._changed(
            store,
            after,
            f"{len(unavailable)} key(s) Unavailable until kms.connect-key-store"
            + (f": {', '.join(unavailable)}" if unavailable else ""),
        )
        return _more(outcome, not_named=unnamed)

    def undo(self, done: Done) -> Undo | None:
        """Connect the store again: each key gets its own state back."""
        store = done.outputs.get("store_id") or (done.before or {}).get("store_id")
        if not store:
            return None
        keys = done.outputs.get("keys") or []
        return Undo(
            "kms.connect-key-store",
            {"store": str(store)},
            f"connect custom key store {store} again (step {done.step_id} disconnected it); "
            f"its {len(keys)} key(s) become usable again",
        )


class ConnectKeyStore(_StoreChange):
    """Connect a CloudHSM or external key store: its keys become usable again.

    The inverse of ``kms.disconnect-key-store``: each key takes back its own state (one
    disabled while the store was disconnected stays disabled).

    ```yaml
    - id: reconnect
      action: kms.connect-key-store
      with: {store: "{{ steps.disconnect.store_id }}"}
    ```
    Outputs: ``store_id``, ``store_name``, ``store_type``, ``state`` (``CONNECTING`` while AWS
    connects it in the background), ``keys``, ``key_states``.
    """

    name = "kms.connect-key-store"
    params = StoreParams
    outputs = _OUTPUTS
    permissions = (*_StoreChange.permissions_common, "kms:ConnectCustomKeyStore")
    mutating = True
    inverse = "kms.disconnect-key-store"
    operation = "ConnectCustomKeyStore"
    settled_states = ("CONNECTED", "CONNECTING")

    def _refuse_failed(self, store: StoreInfo) -> None:
        if store.state == "FAILED":
            raise ActionError(
                f"{self.name} refused: {store.label} is FAILED"
                + (f" ({store.error})" if store.error else "")
                + "; AWS connects a failed store only after it is disconnected "
                "(kms.disconnect-key-store first, once the cause is fixed)"
            )

    def preview(self, ctx: ActionContext, params: StoreParams) -> Preview:
        store = store_info(ctx, params.store)
        self._refuse_failed(store)
        aliases = aliases_by_key(ctx)
        pending = store.state not in self.settled_states
        notes = [
            f"key {named(aliases, k)}: {k.state}"
            + (" -> its own state again (usable unless disabled)" if pending else "")
            for k in store.keys
        ]
        return Preview(
            calls=(_call(self.operation, store.store_id),) if pending else (),
            target=store.label,
            state=f"connection state {store.state}, {len(store.keys)} key(s) in the store",
            notes=tuple(notes) or ("no key is in the store",),
        )

    def run(self, ctx: ActionContext, params: StoreParams) -> Outcome:
        store = store_info(ctx, params.store)
        if store.state in self.settled_states:
            return self._settled(
                ctx, store, f"{store.label} was already {store.state}: nothing sent"
            )
        self._refuse_failed(store)
        after = self._send(ctx, store)
        usable = [k for k, s in after.key_states.items() if s == "Enabled"]
        extra = f"{len(usable)} key(s) Enabled"
        if after.state == "CONNECTING":
            extra += "; AWS connects it in the background (DescribeCustomKeyStores shows when)"
        return self._changed(store, after, extra)

    def undo(self, done: Done) -> Undo | None:
        """Disconnect the store again, naming the keys it held (any other asks)."""
        store = done.outputs.get("store_id") or (done.before or {}).get("store_id")
        if not store:
            return None
        keys = [str(k) for k in done.outputs.get("keys") or []]
        return Undo(
            "kms.disconnect-key-store",
            {"store": str(store), "keys": keys},
            f"disconnect custom key store {store} again (step {done.step_id} connected it); "
            f"its {len(keys)} key(s) become Unavailable",
        )


def _more(outcome: Outcome, **outputs: Any) -> Outcome:
    return dataclasses.replace(outcome, outputs={**outcome.outputs, **outputs})

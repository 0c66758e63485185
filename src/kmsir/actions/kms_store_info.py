"""A custom key store as the store actions see it: DescribeCustomKeyStores, and the keys in
it (AWS lists no store's keys directly: ``ListKeys``, then ``DescribeKey`` of each).

Used by ``kms_key_stores`` (disconnect, connect), which decides what to send.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kmsir.actions.base import ActionContext
from kmsir.actions.kmskeys import KeyInfo, describe, list_all
from kmsir.aws import aws_errors
from kmsir.errors import ActionError, AwsError

#: A custom key store id, as AWS makes them.
STORE_ID = re.compile(r"cks-[0-9a-f]{17}")


@dataclass(frozen=True)
class StoreInfo:
    """A custom key store as DescribeCustomKeyStores reports it, with the keys in it."""

    store_id: str
    name: str
    type: str
    state: str
    error: str | None
    keys: tuple[KeyInfo, ...]
    #: Keys DescribeKey refused to show (AccessDenied): each may be in the store.
    unreadable: tuple[str, ...] = ()

    @property
    def summary(self) -> dict[str, Any]:
        """What the journal records before and after a change."""
        return {"store_id": self.store_id, "state": self.state, "keys": self.key_states}

    @property
    def key_states(self) -> dict[str, str]:
        """Each key of the store and its state."""
        return {k.key_id: k.state for k in self.keys}

    @property
    def label(self) -> str:
        """The store as a preview names it."""
        return f"custom key store {self.name} ({self.store_id}, {self.type})"

    def outputs(self, **more: Any) -> dict[str, Any]:
        """The outputs every path gives."""
        return {
            "store_id": self.store_id,
            "store_name": self.name,
            "store_type": self.type,
            "state": self.state,
            "keys": [k.key_id for k in self.keys],
            "key_states": self.key_states,
            **more,
        }


def store_info(ctx: ActionContext, reference: str) -> StoreInfo:
    """The store ``reference`` (id or name) names, and every key in it (``ListKeys``, then
    ``DescribeKey`` of each: AWS lists no store's keys directly)."""
    by_id = bool(STORE_ID.fullmatch(reference))
    kms = ctx.clients.client("kms")
    try:
        with aws_errors(f"DescribeCustomKeyStores for {reference}"):
            response = (
                kms.describe_custom_key_stores(CustomKeyStoreId=reference)
                if by_id
                else kms.describe_custom_key_stores(CustomKeyStoreName=reference)
            )
        found: list[Any] = list(response["CustomKeyStores"])
    except AwsError as exc:
        if exc.code != "CustomKeyStoreNotFoundException":
            raise
        found = []
    if not found:
        raise ActionError(
            f"no custom key store {reference} in {ctx.clients.resolved_region} "
            "(CustomKeyStoreNotFoundException)"
        )
    store = found[0]
    store_id = str(store["CustomKeyStoreId"])
    keys, unreadable = [], []
    for entry in list_all(ctx, "ListKeys", "Keys"):
        try:
            info = describe(ctx, str(entry["KeyId"]))
        except AwsError as exc:
            if "AccessDenied" not in exc.code:
                raise
            unreadable.append(str(entry["KeyId"]))  # it may be in the store: said, not skipped
            continue
        if info.metadata.get("CustomKeyStoreId") == store_id:
            keys.append(info)
    return StoreInfo(
        store_id=store_id,
        name=str(store.get("CustomKeyStoreName", store_id)),
        type=str(store.get("CustomKeyStoreType", "AWS_CLOUDHSM")),
        state=str(store.get("ConnectionState", "UNKNOWN")),
        error=store.get("ConnectionErrorCode"),
        keys=tuple(keys),
        unreadable=tuple(unreadable),
    )


def aliases_by_key(ctx: ActionContext) -> dict[str, list[str]]:
    """Alias names by the key id they point to (one ListAliases for the whole Region)."""
    found: dict[str, list[str]] = {}
    for alias in list_all(ctx, "ListAliases", "Aliases"):
        if alias.get("TargetKeyId"):
            found.setdefault(str(alias["TargetKeyId"]), []).append(str(alias["AliasName"]))
    return found


def named(aliases: dict[str, list[str]], key: KeyInfo) -> str:
    """A key as a preview names it: its id, and its aliases (``aliases_by_key``)."""
    names = aliases.get(key.key_id)
    return f"{key.key_id} ({', '.join(names)})" if names else key.key_id

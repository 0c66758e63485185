"""Practice 7, the key stores themselves: a custom key store that holds keys is connected.

While a CloudHSM or external key store is disconnected (or failed to connect), every key in
it is ``Unavailable`` (unless pending deletion): nothing encrypted under those keys can be
decrypted until the store is connected again. AWS lets an owner keep a store disconnected on
purpose, so this check names each such store and its keys, and the owner connects it or
waives the failure with the reason. ``practice_keys``'s origin record lists the same keys
among the others, as a record.
"""

from __future__ import annotations

from collections.abc import Iterator

from kmsir.actions.audit.context import AuditContext, KeyFacts, Unavailable
from kmsir.actions.audit.keysets import arns, evidence, names, staying
from kmsir.actions.audit.practice_keys import custom_key_stores
from kmsir.actions.audit.rules import Result, Rule, cannot

__all__ = ["RULES"]

_GUIDE = "https://docs.aws.amazon.com/kms/latest/developerguide/"
#: Connection states in which the store's keys can be used (or soon can).
_USABLE = frozenset({"CONNECTED", "CONNECTING"})


def _connected(audit: AuditContext) -> Iterator[Result]:
    keys, aside = staying(k for k in audit.customer_keys() if k.metadata.get("CustomKeyStoreId"))
    if not keys:
        yield Result(
            "not-applicable", detail="no customer-managed key in a custom key store" + aside
        )
        return
    try:
        stores, path = custom_key_stores(audit)
    except Unavailable as exc:
        yield cannot(exc, arns(keys))
        return
    held: dict[str, list[KeyFacts]] = {}
    for key in keys:
        held.setdefault(str(key.metadata["CustomKeyStoreId"]), []).append(key)
    usable: list[KeyFacts] = []
    for store_id, group in held.items():
        store = stores.get(store_id)
        if store is None:
            yield Result(
                "could-not-check",
                arns(group),
                f"key store {store_id} of {names(group)} is not listed by "
                "DescribeCustomKeyStores" + aside,
                (*evidence(group, "key"), path),
                missing="the key store in the DescribeCustomKeyStores response",
            )
            continue
        state = str(store.get("ConnectionState", "unknown"))
        if state in _USABLE:
            usable += group
            continue
        error = f" ({store['ConnectionErrorCode']})" if store.get("ConnectionErrorCode") else ""
        yield Result(
            "fail",
            arns(group),
            f"{store.get('CustomKeyStoreType', 'custom')} key store {store_id} "
            f"({store.get('CustomKeyStoreName', '')}) is {state}{error}: {len(group)} key(s) "
            f"in it cannot be used: {names(group, lambda k: f'{k.label()} ({k.state})')}" + aside,
            (*evidence(group, "key"), path),
        )
    if usable:
        yield Result(
            "pass",
            arns(usable),
            f"{len(usable)} key(s) in connected key stores: " + names(usable) + aside,
            (*evidence(usable, "key"), path),
        )


RULES: tuple[Rule, ...] = (
    Rule(
        id="key-store-connected",
        practice=7,
        title="Custom key stores that hold keys are connected",
        severity="medium",
        fix=(
            "Connect the store once its CloudHSM cluster has an active HSM or its external key "
            "store proxy answers (aws kms connect-custom-key-store --custom-key-store-id "
            "cks-...); if it is kept disconnected on purpose, waive this check with the reason, "
            "and make sure nothing still needs its keys."
        ),
        doc=_GUIDE + "connect-keystore.html",
        judge=_connected,
        permissions=("kms:DescribeCustomKeyStores",),
    ),
)

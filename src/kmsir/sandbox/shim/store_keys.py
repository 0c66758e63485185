"""Keys in custom key stores: CreateKey in a store, and what DescribeKey reports of its keys.

Following the API reference of CreateKey and DescribeKey (``KeyMetadata``): a key is created
in a custom key store only while the store is connected, and only a single-Region symmetric
encryption key of the store's origin (``AWS_CLOUDHSM``, or ``EXTERNAL_KEY_STORE`` with an
``XksKeyId`` no other key of the store uses); DescribeKey then shows its ``CustomKeyStoreId``
and ``CloudHsmClusterId`` or ``XksKeyConfiguration``; GenerateRandom in a CloudHSM key store
needs it connected. The stores themselves, and the states
their connection gives their keys, are ``key_stores``'.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from kmsir.sandbox.shim.common import error, validation
from kmsir.sandbox.shim.key_stores import (
    CLOUDHSM,
    EXTERNAL,
    ORIGINS,
    KeyStore,
    find_store,
    invalid_state,
    keys_in,
    stores,
)


def validate_create_key(response: Any) -> KeyStore | None:
    """CreateKey in a custom key store: the store must exist and be connected, the key be what
    the store holds (a single-Region symmetric encryption key of the store's origin, with an
    external key of its own in an external key store). The store, or None for another key."""
    store_id = response._get_param("CustomKeyStoreId")
    origin = response._get_param("Origin") or "AWS_KMS"
    xks_key = response._get_param("XksKeyId")
    if xks_key is not None and origin != ORIGINS[EXTERNAL]:
        raise validation("XksKeyId is valid only with Origin EXTERNAL_KEY_STORE.")
    if store_id is None:
        if origin in ORIGINS.values():
            raise validation(f"Origin {origin} needs the CustomKeyStoreId of a key store.")
        return None
    store = find_store(response.kms_backend, store_id)
    if origin != ORIGINS[store.type]:
        raise error(
            "UnsupportedOperationException",
            f"Keys in custom key store {store.id} ({store.type}) need Origin "
            f"{ORIGINS[store.type]}, not {origin}.",
        )
    spec = response._get_param("KeySpec") or response._get_param("CustomerMasterKeySpec")
    usage = response._get_param("KeyUsage")
    if (spec or "SYMMETRIC_DEFAULT") != "SYMMETRIC_DEFAULT" or (usage or "ENCRYPT_DECRYPT") != (
        "ENCRYPT_DECRYPT"
    ):
        raise error(
            "UnsupportedOperationException",
            "A custom key store holds symmetric encryption keys only.",
        )
    if response._get_param("MultiRegion"):
        raise error(
            "UnsupportedOperationException", "A custom key store holds single-Region keys only."
        )
    if store.state != "CONNECTED":
        raise invalid_state(store, "keys are created only in a connected key store.")
    if store.type == EXTERNAL:
        if not xks_key:
            raise validation("XksKeyId is required with Origin EXTERNAL_KEY_STORE.")
        if any(
            getattr(k, "kmsir_xks_key_id", None) == xks_key
            for k in keys_in(response.kms_backend, store)
        ):
            raise error(
                "XksKeyAlreadyInUseException",
                f"External key {xks_key} is already associated with a KMS key in {store.id}.",
            )
    return store


def created(key: Any, store: KeyStore, xks_key: str | None) -> None:
    """A key just created in ``store``."""
    key.kmsir_store_id = store.id
    if xks_key is not None:
        key.kmsir_xks_key_id = xks_key


def metadata(key: Any) -> dict[str, Any]:
    """What DescribeKey adds for a key in a custom key store."""
    store_id = getattr(key, "kmsir_store_id", None)
    if store_id is None:
        return {}
    from moto.kms.models import kms_backends

    fields: dict[str, Any] = {"CustomKeyStoreId": store_id}
    store = stores(kms_backends[key.account_id][key.region]).get(store_id)
    if store is not None and store.type == CLOUDHSM:
        fields["CloudHsmClusterId"] = store.settings["CloudHsmClusterId"]
    xks_key = getattr(key, "kmsir_xks_key_id", None)
    if xks_key is not None:
        fields["XksKeyConfiguration"] = {"Id": xks_key}
    return fields


def generate_random(original: Callable[..., str]) -> Callable[..., str]:
    """GenerateRandom (moto's ``KmsResponse``, which ignores ``CustomKeyStoreId``): in a
    CloudHSM key store, which must be connected; an external key store cannot."""

    @functools.wraps(original)
    def wrapper(self: Any) -> str:
        store_id = self._get_param("CustomKeyStoreId")
        if store_id is not None:
            store = find_store(self.kms_backend, store_id)
            if store.type == EXTERNAL:
                raise error(
                    "UnsupportedOperationException",
                    f"{store.id} is an external key store: GenerateRandom needs a CloudHSM one.",
                )
            if store.state != "CONNECTED":
                raise invalid_state(store, "GenerateRandom needs a connected key store.")
        return original(self)

    return wrapper

"""KMS operations moto lacks, added to its ``KmsResponse``, and what ties them into moto's own.

GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext (``data_key_pairs``) are new
request handlers. Imported key material (``imported``) and custom key stores (``key_stores``)
need: new request handlers (GetParametersForImport, ImportKeyMaterial,
DeleteImportedKeyMaterial and the six custom key store operations), CreateKey taking
``Origin=EXTERNAL`` / a ``CustomKeyStoreId``, DescribeKey (moto's ``Key.to_dict``) reporting
what AWS reports of such keys, and a look at every KMS request, before and after moto handles
it: material whose ``ValidTo`` has passed is deleted, and each key in a custom key store
reports the state its store's connection gives it.
Added as methods of ``KmsResponse``, the handlers answer the in-process sandbox and
``sandbox serve`` (the AWS CLI included) alike.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from kmsir.sandbox.shim import data_key_pairs, imported, key_stores, store_keys
from kmsir.sandbox.shim.common import find_key

_INSTALLED = "_kmsir_operations"

#: New methods of moto's ``KmsResponse`` (moto dispatches each action to the method of its
#: snake_case name), and what answers each.
OPERATIONS: dict[str, Callable[[Any], str]] = {
    "get_parameters_for_import": imported.get_parameters_for_import,
    "import_key_material": imported.import_key_material,
    "delete_imported_key_material": imported.delete_imported_key_material,
    "create_custom_key_store": key_stores.create_custom_key_store,
    "describe_custom_key_stores": key_stores.describe_custom_key_stores,
    "connect_custom_key_store": key_stores.connect_custom_key_store,
    "disconnect_custom_key_store": key_stores.disconnect_custom_key_store,
    "update_custom_key_store": key_stores.update_custom_key_store,
    "delete_custom_key_store": key_stores.delete_custom_key_store,
    "generate_data_key_pair": data_key_pairs.generate_data_key_pair,
    "generate_data_key_pair_without_plaintext": (
        data_key_pairs.generate_data_key_pair_without_plaintext
    ),
}


def settle(response: Any) -> None:
    """What time and key store connections have done to the keys of the request's account
    and Region (none for a Region moto does not know: moto answers that request itself)."""
    try:
        backend = response.kms_backend
    except KeyError:
        return
    imported.settle_material(backend)
    key_stores.reconcile(backend)


def around_each_request(original: Callable[..., Any]) -> Callable[..., Any]:
    """moto's ``KmsResponse.call_action``: keys settled before and after each request."""

    @functools.wraps(original)
    def wrapper(self: Any) -> Any:
        settle(self)
        try:
            return original(self)
        finally:
            settle(self)

    return wrapper


def create_key(original: Callable[..., str]) -> Callable[..., str]:
    """CreateKey (moto's ``KmsResponse.create_key``): an EXTERNAL key waits for its material
    (PendingImport); a key in a custom key store only in a connected store, of its kind."""

    @functools.wraps(original)
    def wrapper(self: Any) -> str:
        store = store_keys.validate_create_key(self)
        body = json.loads(original(self))
        key = find_key(self.kms_backend, body["KeyMetadata"]["KeyId"], aliases=False)
        imported.created(key)
        if store is not None:
            store_keys.created(key, store, self._get_param("XksKeyId"))
        return json.dumps(key.to_dict())

    return wrapper


def key_metadata(original: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """moto's ``Key.to_dict`` (DescribeKey, CreateKey, ReplicateKey...): add what AWS reports
    of a key with imported material or in a custom key store."""

    @functools.wraps(original)
    def wrapper(self: Any) -> dict[str, Any]:
        result = original(self)
        result["KeyMetadata"].update(imported.metadata(self))
        result["KeyMetadata"].update(store_keys.metadata(self))
        return result

    return wrapper


def install() -> None:
    """Add the operations to moto's ``KmsResponse`` and wrap ``Key.to_dict`` (idempotent);
    fail loudly if moto moved, or now answers one of the operations itself."""
    from moto.kms.models import Key
    from moto.kms.responses import KmsResponse

    if getattr(KmsResponse, _INSTALLED, False):
        return
    taken = [name for name in OPERATIONS if name in vars(KmsResponse)]
    if taken:
        raise RuntimeError(
            f"moto's KmsResponse now defines {', '.join(taken)}: the sandbox's KMS emulator "
            "(kmsir.sandbox.shim.operations) must be reviewed for this moto version"
        )
    if not callable(vars(Key).get("to_dict")):
        raise RuntimeError(
            "moto's kms Key no longer defines to_dict: the sandbox's KMS emulator "
            "(kmsir.sandbox.shim.operations) must be reviewed for this moto version"
        )
    for name, handler in OPERATIONS.items():
        setattr(KmsResponse, name, handler)
    setattr(Key, "to_dict", key_metadata(vars(Key)["to_dict"]))  # noqa: B010
    setattr(KmsResponse, _INSTALLED, True)

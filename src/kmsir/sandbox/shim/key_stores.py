"""Custom key stores (CloudHSM and external), as AWS has them; moto has none.

Following the API reference of CreateCustomKeyStore, DescribeCustomKeyStores,
ConnectCustomKeyStore, DisconnectCustomKeyStore, UpdateCustomKeyStore, DeleteCustomKeyStore and
CreateKey, and the key-state table of the KMS developer guide: a new store is ``DISCONNECTED``
(its id ``cks-`` and 17 hex digits, from the sandbox's seeded random); connecting is immediate
here (AWS takes minutes); keys are created in a store only while it is connected
(``Origin=AWS_CLOUDHSM``, or ``EXTERNAL_KEY_STORE`` with an ``XksKeyId``); while a store is
disconnected every key in it reports ``Unavailable`` (one pending deletion stays so, so its
deletion can still be cancelled) and refuses cryptographic use, and EnableKey/DisableKey
change the state it takes back on connecting (``common.store_state_change``). A store is
deleted only when disconnected and empty. (CreateKey in a store, and what DescribeKey reports
of its keys: ``store_keys``.)

The handlers here become methods of moto's ``KmsResponse`` (``operations``); the stores live
on moto's per-account/Region ``KmsBackend``, so moto's reset clears them.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kmsir.sandbox.shim.common import PENDING_DELETION, error, set_state, validation

CLOUDHSM, EXTERNAL = "AWS_CLOUDHSM", "EXTERNAL_KEY_STORE"
#: The key Origin each type of store takes.
ORIGINS = {CLOUDHSM: "AWS_CLOUDHSM", EXTERNAL: "EXTERNAL_KEY_STORE"}
_CLOUDHSM_PARAMS = ("CloudHsmClusterId", "TrustAnchorCertificate", "KeyStorePassword")
_XKS_PARAMS = (
    "XksProxyUriEndpoint",
    "XksProxyUriPath",
    "XksProxyVpcEndpointServiceName",
    "XksProxyVpcEndpointServiceOwner",
    "XksProxyAuthenticationCredential",
    "XksProxyConnectivity",
)
#: What UpdateCustomKeyStore may change while the store is connected, by type.
_WHILE_CONNECTED = {
    CLOUDHSM: {"NewCustomKeyStoreName"},
    EXTERNAL: {"NewCustomKeyStoreName", "XksProxyAuthenticationCredential", "XksProxyUriPath"},
}


@dataclass
class KeyStore:
    """One custom key store, with what DescribeCustomKeyStores reports of it."""

    id: str
    name: str
    type: str
    created: datetime
    state: str = "DISCONNECTED"
    settings: dict[str, Any] = field(default_factory=dict)  # the Create/Update parameters

    def entry(self) -> dict[str, Any]:
        """The store as a ``CustomKeyStoresListEntry``."""
        entry: dict[str, Any] = {
            "CustomKeyStoreId": self.id,
            "CustomKeyStoreName": self.name,
            "ConnectionState": self.state,
            "CreationDate": self.created.timestamp(),
            "CustomKeyStoreType": self.type,
        }
        if self.type == CLOUDHSM:
            entry["CloudHsmClusterId"] = self.settings["CloudHsmClusterId"]
            entry["TrustAnchorCertificate"] = self.settings["TrustAnchorCertificate"]
            return entry
        proxy = {
            "Connectivity": self.settings["XksProxyConnectivity"],
            "AccessKeyId": self.settings["XksProxyAuthenticationCredential"]["AccessKeyId"],
            "UriEndpoint": self.settings["XksProxyUriEndpoint"],
            "UriPath": self.settings["XksProxyUriPath"],
        }
        for name, param in (
            ("VpcEndpointServiceName", "XksProxyVpcEndpointServiceName"),
            ("VpcEndpointServiceOwner", "XksProxyVpcEndpointServiceOwner"),
        ):
            if self.settings.get(param):
                proxy[name] = self.settings[param]
        entry["XksProxyConfiguration"] = proxy
        return entry


def stores(backend: Any) -> dict[str, KeyStore]:
    """The custom key stores of a moto backend (one account and Region), by id."""
    table: dict[str, KeyStore] | None = getattr(backend, "kmsir_key_stores", None)
    if table is None:
        table = {}
        backend.kmsir_key_stores = table
    return table


def _not_found(what: str) -> Exception:
    return error(
        "CustomKeyStoreNotFoundException",
        f"Custom key store {what} does not exist in this account and Region.",
    )


def invalid_state(store: KeyStore, why: str) -> Exception:
    return error(
        "CustomKeyStoreInvalidStateException",
        f"Custom key store {store.id} is {store.state}: {why}",
    )


def find_store(backend: Any, store_id: Any) -> KeyStore:
    """The store with this id (``CustomKeyStoreNotFoundException`` if there is none)."""
    store = stores(backend).get(str(store_id))
    if store is None:
        raise _not_found(str(store_id))
    return store


def keys_in(backend: Any, store: KeyStore) -> list[Any]:
    """Every key (whatever its state) in the store."""
    return [k for k in backend.keys.values() if getattr(k, "kmsir_store_id", None) == store.id]


def _params(response: Any, names: tuple[str, ...]) -> dict[str, Any]:
    body = json.loads(response.body)
    return {name: body[name] for name in names if body.get(name) is not None}


def _check_settings(backend: Any, store_type: str, settings: dict[str, Any], own: str) -> None:
    """The settings a store of ``store_type`` needs, unique where AWS wants them unique
    (``own``: the id of the store being updated, whose own settings do not clash)."""
    others = [s for s in stores(backend).values() if s.id != own and s.type == store_type]
    if store_type == CLOUDHSM:
        missing = [p for p in _CLOUDHSM_PARAMS if not settings.get(p)]
        if missing:
            raise validation(f"A CloudHSM key store needs {', '.join(missing)}.")
        if not 7 <= len(str(settings["KeyStorePassword"])) <= 32:
            raise validation("KeyStorePassword must be 7 to 32 characters.")
        cluster = settings["CloudHsmClusterId"]
        if any(s.settings["CloudHsmClusterId"] == cluster for s in others):
            raise error(
                "CloudHsmClusterInUseException",
                f"CloudHSM cluster {cluster} is already associated with a custom key store.",
            )
        return
    required = [
        "XksProxyUriEndpoint",
        "XksProxyUriPath",
        "XksProxyAuthenticationCredential",
        "XksProxyConnectivity",
    ]
    connectivity = settings.get("XksProxyConnectivity")
    if connectivity == "VPC_ENDPOINT_SERVICE":
        required.append("XksProxyVpcEndpointServiceName")
    missing = [p for p in required if not settings.get(p)]
    if missing:
        raise validation(f"An external key store needs {', '.join(missing)}.")
    if connectivity not in ("PUBLIC_ENDPOINT", "VPC_ENDPOINT_SERVICE"):
        raise validation(f"XksProxyConnectivity {connectivity} is not valid.")
    if connectivity == "PUBLIC_ENDPOINT" and settings.get("XksProxyVpcEndpointServiceName"):
        raise validation("XksProxyVpcEndpointServiceName is only for VPC_ENDPOINT_SERVICE.")
    endpoint, path = settings["XksProxyUriEndpoint"], settings["XksProxyUriPath"]
    if not str(endpoint).startswith("https://"):
        raise validation("XksProxyUriEndpoint must begin with https://.")
    if not (str(path).startswith("/") and str(path).endswith("/kms/xks/v1")):
        raise validation("XksProxyUriPath must start with / and end with /kms/xks/v1.")
    credential = settings["XksProxyAuthenticationCredential"]
    if not (credential.get("AccessKeyId") and credential.get("RawSecretAccessKey")):
        raise validation(
            "XksProxyAuthenticationCredential needs AccessKeyId and RawSecretAccessKey."
        )
    for other in others:
        if (other.settings["XksProxyUriEndpoint"], other.settings["XksProxyUriPath"]) == (
            endpoint,
            path,
        ):
            raise error(
                "XksProxyUriInUseException",
                f"{endpoint}{path} is already the proxy of custom key store {other.id}.",
            )
        if connectivity == "VPC_ENDPOINT_SERVICE":
            if other.settings["XksProxyUriEndpoint"] == endpoint:
                raise error(
                    "XksProxyUriEndpointInUseException",
                    f"{endpoint} is already the endpoint of custom key store {other.id}.",
                )
            service = settings["XksProxyVpcEndpointServiceName"]
            if other.settings.get("XksProxyVpcEndpointServiceName") == service:
                raise error(
                    "XksProxyVpcEndpointServiceInUseException",
                    f"{service} is already used by custom key store {other.id}.",
                )


def _name_free(backend: Any, name: str, own: str) -> None:
    if any(s.name == name and s.id != own for s in stores(backend).values()):
        raise error(
            "CustomKeyStoreNameInUseException",
            f"Custom key store name {name} is already assigned to another custom key store.",
        )


def create_custom_key_store(self: Any) -> str:
    """CreateCustomKeyStore: a CloudHSM (default) or external key store, DISCONNECTED."""
    from moto.moto_api._internal import mock_random

    backend = self.kms_backend
    name = self._get_param("CustomKeyStoreName")
    store_type = self._get_param("CustomKeyStoreType") or CLOUDHSM
    if not name:
        raise validation("CustomKeyStoreName is required.")
    if store_type not in (CLOUDHSM, EXTERNAL):
        raise validation(f"CustomKeyStoreType {store_type} is not valid.")
    _name_free(backend, name, own="")
    wrong = _XKS_PARAMS if store_type == CLOUDHSM else _CLOUDHSM_PARAMS
    stray = _params(self, wrong)
    if stray:
        raise validation(f"{', '.join(stray)} is not valid for a {store_type} custom key store.")
    settings = _params(self, _CLOUDHSM_PARAMS if store_type == CLOUDHSM else _XKS_PARAMS)
    _check_settings(backend, store_type, settings, own="")
    store_id = "cks-" + mock_random.get_random_hex(17)
    created = datetime.now(timezone.utc)
    stores(backend)[store_id] = KeyStore(store_id, name, store_type, created, settings=settings)
    return json.dumps({"CustomKeyStoreId": store_id})


def describe_custom_key_stores(self: Any) -> str:
    """DescribeCustomKeyStores: all stores, or the one with this id or name, paged."""
    backend = self.kms_backend
    store_id, name = self._get_param("CustomKeyStoreId"), self._get_param("CustomKeyStoreName")
    if store_id and name:
        raise validation("Specify CustomKeyStoreId or CustomKeyStoreName, not both.")
    found = list(stores(backend).values())
    if store_id:
        found = [find_store(backend, store_id)]
    elif name:
        found = [s for s in found if s.name == name]
        if not found:
            raise _not_found(str(name))
    limit = self._get_param("Limit")
    limit = 1000 if limit is None else limit
    if not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise validation("Limit must be between 1 and 1000.")
    marker = self._get_param("Marker")
    try:
        offset = int(base64.urlsafe_b64decode(str(marker).encode()).decode()) if marker else 0
        if offset < 0:
            raise ValueError(offset)
    except (ValueError, UnicodeDecodeError):
        raise error("InvalidMarkerException", "The marker is not valid.") from None
    page = found[offset : offset + limit]
    truncated = offset + limit < len(found)
    body: dict[str, Any] = {"CustomKeyStores": [s.entry() for s in page], "Truncated": truncated}
    if truncated:
        body["NextMarker"] = base64.urlsafe_b64encode(str(offset + limit).encode()).decode()
    return json.dumps(body)


def connect_custom_key_store(self: Any) -> str:
    """ConnectCustomKeyStore: CONNECTED at once; each key takes back its own state."""
    backend = self.kms_backend
    store = find_store(backend, self._get_param("CustomKeyStoreId"))
    if store.state in ("DISCONNECTING", "FAILED"):
        raise invalid_state(store, "disconnect it before connecting it again.")
    store.state = "CONNECTED"
    reconcile(backend)
    return "{}"


def disconnect_custom_key_store(self: Any) -> str:
    """DisconnectCustomKeyStore: DISCONNECTED; every key in it becomes Unavailable."""
    backend = self.kms_backend
    store = find_store(backend, self._get_param("CustomKeyStoreId"))
    if store.state in ("DISCONNECTED", "DISCONNECTING"):
        raise invalid_state(store, "it is not connected.")
    store.state = "DISCONNECTED"
    reconcile(backend)
    return "{}"


def update_custom_key_store(self: Any) -> str:
    """UpdateCustomKeyStore: most settings only while disconnected."""
    backend = self.kms_backend
    store = find_store(backend, self._get_param("CustomKeyStoreId"))
    own: tuple[str, ...]
    wrong: tuple[str, ...]
    if store.type == CLOUDHSM:  # (UpdateCustomKeyStore takes no new trust anchor)
        own, wrong = ("CloudHsmClusterId", "KeyStorePassword"), _XKS_PARAMS
    else:
        own, wrong = _XKS_PARAMS, _CLOUDHSM_PARAMS
    stray = _params(self, wrong)
    if stray:
        raise validation(f"{', '.join(stray)} cannot be updated on a {store.type} key store.")
    changes = _params(self, ("NewCustomKeyStoreName", *own))
    if store.state != "DISCONNECTED" and set(changes) - _WHILE_CONNECTED[store.type]:
        raise invalid_state(store, "disconnect it to change these settings.")
    new_name = changes.pop("NewCustomKeyStoreName", None)
    if new_name is not None:
        _name_free(backend, new_name, own=store.id)
    settings = {**store.settings, **changes}
    _check_settings(backend, store.type, settings, own=store.id)
    store.settings = settings
    if new_name is not None:
        store.name = new_name
    return "{}"


def delete_custom_key_store(self: Any) -> str:
    """DeleteCustomKeyStore: only a disconnected store holding no keys."""
    backend = self.kms_backend
    store = find_store(backend, self._get_param("CustomKeyStoreId"))
    if store.state != "DISCONNECTED":
        raise invalid_state(store, "disconnect it before deleting it.")
    if keys_in(backend, store):
        raise error(
            "CustomKeyStoreHasCMKsException",
            f"Custom key store {store.id} contains KMS keys: delete them before the store.",
        )
    del stores(backend)[store.id]
    return "{}"


def reconcile(backend: Any) -> None:
    """Keep each key's reported state with its store's connection: Unavailable while it is
    not connected (remembering the state it had, or was given since, to take it back on
    connecting), except a key pending deletion, which stays so."""
    table = getattr(backend, "kmsir_key_stores", None)
    if not table:
        return
    for key in list(backend.keys.values()):
        store = table.get(getattr(key, "kmsir_store_id", None))
        if store is None:
            continue
        if store.state != "CONNECTED":
            if key.key_state not in ("Unavailable", *PENDING_DELETION):
                key.kmsir_connected_state = key.key_state
                set_state(key, "Unavailable")
        elif key.key_state == "Unavailable":
            set_state(key, getattr(key, "kmsir_connected_state", "Enabled"))
            del key.kmsir_connected_state

"""Seeding a scenario's custom key stores and imported key material, with the calls AWS
documents for them (the sandbox's fidelity shim answers them as AWS would).

A key store is created (CreateCustomKeyStore: a CloudHSM cluster, or an external key store
proxy, with made-up but well-formed connection settings) and connected, so that keys can be
created in it; a store the scenario wants disconnected is disconnected once its keys and their
grants exist, which leaves every key in it Unavailable. Key material is imported as a key
owner imports it: GetParametersForImport, the 32 bytes wrapped with RSA-OAEP (SHA-256) under
the public key it returns, ImportKeyMaterial with the scenario's expiry; material the scenario
says was deleted is deleted afterwards (DeleteImportedKeyMaterial: the key is PendingImport).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta
from typing import Any

from kmsir.errors import UsageError
from kmsir.keymaterial import WRAPPING_ALGORITHM, wrap
from kmsir.playbook.values import duration_seconds
from kmsir.sandbox.key_model import KeySpec, KeyStoreSpec
from kmsir.sandbox.scenario import scenario_file
from kmsir.sandbox.scenario_model import Scenario
from kmsir.sandbox.shim import imported

#: The wrapping key the seeding asks for (the smallest AWS offers: quick to make).
WRAPPING_KEY_SPEC = "RSA_2048"
#: A stand-in for a CloudHSM cluster's trust anchor certificate: the sandbox has no cluster.
_TRUST_ANCHOR = (
    "-----BEGIN CERTIFICATE-----\n"
    "TUlJQmtTQ0NBVGVnQXdJQkFnSVVhMktNU0lSU0FOREJPWENMVVNURVJDQTAwMQ==\n"
    "-----END CERTIFICATE-----\n"
)


def _token(name: str, size: int, alphabet: str = "abcdefghijklmnopqrstuvwxyz234567") -> str:
    """A deterministic identifier made of ``alphabet`` for the store named ``name``."""
    digest = hashlib.sha256(name.encode()).digest()
    return "".join(alphabet[b % len(alphabet)] for b in digest[:size])


def store_request(name: str, spec: KeyStoreSpec) -> dict[str, Any]:
    """CreateCustomKeyStore's parameters for the scenario's store ``name``: each store its
    own cluster or proxy endpoint (AWS refuses a cluster or an endpoint two stores share)."""
    request: dict[str, Any] = {"CustomKeyStoreName": spec.name or name}
    if spec.type == "CLOUDHSM":
        request.update(
            CloudHsmClusterId="cluster-" + _token(name, 11),
            TrustAnchorCertificate=_TRUST_ANCHOR,
            KeyStorePassword="kmsuser-" + _token(name, 12),  # the sandbox's, 7-32 characters
        )
    else:
        upper = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
        request.update(
            CustomKeyStoreType="EXTERNAL_KEY_STORE",
            XksProxyUriEndpoint=f"https://{_token(name, 10)}.xks-proxy.example.com",
            XksProxyUriPath="/example/kms/xks/v1",
            XksProxyConnectivity="PUBLIC_ENDPOINT",
            XksProxyAuthenticationCredential={
                "AccessKeyId": "XKS" + _token(name + "/id", 17, upper),
                "RawSecretAccessKey": base64.b64encode(
                    hashlib.sha256(f"kmsir-sandbox-xks/{name}".encode()).digest()
                ).decode(),
            },
        )
    return request


def create_stores(kms: Any, scenario: Scenario) -> dict[str, dict[str, str]]:
    """Create and connect every key store of the scenario; name -> ``id``, ``name``, ``type``
    (what templates see as ``key_stores.NAME``)."""
    stores: dict[str, dict[str, str]] = {}
    for name, spec in scenario.key_stores.items():
        store_id = kms.create_custom_key_store(**store_request(name, spec))["CustomKeyStoreId"]
        kms.connect_custom_key_store(CustomKeyStoreId=store_id)
        stores[name] = {"id": store_id, "name": spec.name or name, "type": spec.store_type}
    return stores


def key_options(
    name: str, spec: KeySpec, scenario: Scenario, stores: dict[str, dict[str, str]]
) -> dict[str, str]:
    """CreateKey's parameters that put the scenario's key ``name`` in its key store (none for
    a key outside any)."""
    if spec.store is None:
        return {}
    store = scenario.key_stores[spec.store]
    options = {"CustomKeyStoreId": stores[spec.store]["id"], "Origin": store.origin}
    if store.type == "EXTERNAL":
        options["XksKeyId"] = f"xks-key-{name}"  # the key's id in the external key manager
    return options


def import_material(
    kms: Any, key_id: str, spec: KeySpec, scenario: Scenario, now: datetime
) -> None:
    """Import the key's material, if the scenario gives it some (wrapped for transport as
    AWS asks), valid for ``valid_to`` from ``now`` (the world's start) or without expiry;
    a world rebuilt after that has passed gets the key as AWS left it: material deleted."""
    material = spec.material
    if material is None:
        return
    path = scenario_file(scenario, material.file)
    if path is None:
        raise UsageError(f"scenario {scenario.id}: no key material file {material.file!r}")
    expiry: dict[str, Any] = {"ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE"}
    expired = False
    if material.valid_to is not None:
        ahead = timedelta(seconds=duration_seconds(material.valid_to.removeprefix("+")))
        # a world rebuilt (resume, rollback) after its material expired: AWS deleted it then
        expired = now + ahead <= imported.now()
        if not expired:
            expiry = {"ExpirationModel": "KEY_MATERIAL_EXPIRES", "ValidTo": now + ahead}
    import_bytes(kms, key_id, path.read_bytes(), expiry)
    if expired:
        kms.delete_imported_key_material(KeyId=key_id)


def import_bytes(kms: Any, key_id: str, material: bytes, expiry: dict[str, Any]) -> Any:
    """Import ``material`` into the key as an owner does: GetParametersForImport, the bytes
    wrapped under its public key, ImportKeyMaterial with ``expiry`` (``ExpirationModel`` and
    ``ValidTo``); ImportKeyMaterial's answer (its ``KeyMaterialId``)."""
    parameters = kms.get_parameters_for_import(
        KeyId=key_id, WrappingAlgorithm=WRAPPING_ALGORITHM, WrappingKeySpec=WRAPPING_KEY_SPEC
    )
    try:
        wrapped = wrap(material, parameters["PublicKey"])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return kms.import_key_material(
        KeyId=key_id, ImportToken=parameters["ImportToken"], EncryptedKeyMaterial=wrapped, **expiry
    )


def delete_material(kms: Any, key_id: str, spec: KeySpec) -> None:
    """Delete the key's imported material if the scenario says it was deleted."""
    if spec.material is not None and spec.material.deleted:
        kms.delete_imported_key_material(KeyId=key_id)


def disconnect_stores(kms: Any, scenario: Scenario, stores: dict[str, dict[str, str]]) -> None:
    """Disconnect the stores the scenario wants disconnected (once their keys exist)."""
    for name, spec in scenario.key_stores.items():
        if not spec.connected:
            kms.disconnect_custom_key_store(CustomKeyStoreId=stores[name]["id"])

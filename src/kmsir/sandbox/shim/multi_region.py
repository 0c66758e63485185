"""Multi-Region keys as AWS has them: a primary and replicas, each with what is its own.

moto copies a primary into its replica shallowly and shares one MultiRegionConfiguration dict
among them; here each key gets its own configuration, a new replica its own grants and aliases
(none), the default key policy and the Enabled state, and ReplicateKey is refused where AWS
refuses it. moto's ciphertext has room for 36 characters of key id, which cuts its
40-character ``mrk-`` ids: here a multi-Region key's ciphertext names its compact id, so it
decrypts in any of the key's Regions.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from kmsir.sandbox.shim import imported
from kmsir.sandbox.shim.common import error, find_key, not_pending


def live_replicas(key: Any) -> list[dict[str, Any]]:
    """The replicas of a multi-Region primary that still exist (none for any other key)."""
    config = getattr(key, "multi_region_configuration", None) or {}
    if not getattr(key, "multi_region", False) or config.get("MultiRegionKeyType") != "PRIMARY":
        return []
    if config.get("PrimaryKey", {}).get("Arn") != key.arn:
        return []
    from moto.kms.models import kms_backends

    # A replica pending deletion still exists: the primary waits until it is really deleted.
    return [
        replica
        for replica in config.get("ReplicaKeys", [])
        if kms_backends[key.account_id][replica.get("Region")].keys.get(key.id) is not None
    ]


def replicate_key(original: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse what AWS refuses; give the replica what is its own, and the primary and each
    replica their own MultiRegionConfiguration.

    moto copies the primary shallowly: the replica would share its grants and aliases (AWS
    keeps both per Region), keep its policy and state, and share one MultiRegionConfiguration
    dict, with which DescribeKey of a replica marks the primary a REPLICA too. (moto ignores
    ReplicateKey's Policy, Description and Tags.)
    """

    @functools.wraps(original)
    def wrapper(self: Any, key_id: str, replica_region: str) -> Any:
        from moto.kms.models import kms_backends

        primary = find_key(self, key_id, aliases=False)
        config = getattr(primary, "multi_region_configuration", None) or {}
        if not primary.multi_region or config.get("MultiRegionKeyType") != "PRIMARY":
            raise error(
                "UnsupportedOperationException", f"{primary.arn} is not a multi-Region primary key."
            )
        not_pending(primary, "ReplicateKey")
        regions = kms_backends[primary.account_id]
        if replica_region not in regions.regions:
            raise error(
                "ValidationException", f"{replica_region!r} is not a Region where KMS is offered."
            )
        if regions[replica_region].keys.get(primary.id) is not None:
            raise error(
                "AlreadyExistsException", f"Key {primary.id} already exists in {replica_region}."
            )
        replica = original(self, primary.id, replica_region)
        replica.grants = {}
        replica.aliases = {}
        replica.policy = replica.generate_default_policy()
        replica.key_state, replica.enabled = "Enabled", True
        imported.replicated(replica)  # a replica of an EXTERNAL key waits for its own import
        replica.deletion_date = None
        shared = primary.multi_region_configuration
        replicas = [dict(r) for r in shared.get("ReplicaKeys", [])]
        keys = [(primary, "PRIMARY")] + [
            (regions[r["Region"]].keys[primary.id], "REPLICA") for r in replicas
        ]
        for key, role in keys:
            key.multi_region_configuration = {
                "MultiRegionKeyType": role,
                "PrimaryKey": {"Arn": primary.arn, "Region": primary.region},
                "ReplicaKeys": [dict(r) for r in replicas],
            }
        return replica

    return wrapper


def _compact(key_id: str) -> str:
    """A multi-Region key id as AWS writes it, ``mrk-`` and 32 hex digits: it fits moto's
    36-byte ciphertext header (moto's own ``mrk-`` ids keep the UUID's dashes)."""
    return "mrk-" + key_id[4:].replace("-", "") if key_id.startswith("mrk-") else key_id


def ciphertext_encrypt(original: Callable[..., Any]) -> Callable[..., Any]:
    """moto's module-level ``encrypt``: a multi-Region key's ciphertext names its compact id."""
    signature = inspect.signature(original)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        keys, key_id = bound.arguments["master_keys"], bound.arguments["key_id"]
        if key_id.startswith("mrk-") and key_id in keys:
            bound.arguments["master_keys"] = {**keys, _compact(key_id): keys[key_id]}
            bound.arguments["key_id"] = _compact(key_id)
        return original(*bound.args, **bound.kwargs)

    return wrapper


def ciphertext_decrypt(original: Callable[..., Any]) -> Callable[..., Any]:
    """moto's module-level ``decrypt``: a compact id in the ciphertext is the key's (in any
    Region holding it: a replica decrypts what its primary encrypted)."""
    signature = inspect.signature(original)

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        keys = bound.arguments["master_keys"]
        compact = {_compact(k): k for k in keys if k.startswith("mrk-")}
        if compact:
            bound.arguments["master_keys"] = {**keys, **{c: keys[k] for c, k in compact.items()}}
        plaintext, key_id = original(*bound.args, **bound.kwargs)
        return plaintext, compact.get(key_id, key_id)

    return wrapper

"""KMS fidelity shim: make moto behave like AWS where a tabletop would otherwise lie.

moto is lenient where AWS is strict. Following the key-state table of the KMS developer guide
("Key states of AWS KMS keys") and the API reference, this shim, installed into moto's own
backend and response classes (so every client of the sandbox sees it, the AWS CLI included):

- refuses cryptographic operations on a Disabled key (``DisabledException``) and on a key
  pending deletion (``KMSInvalidStateException``);
- rejects deletion windows outside 7-30 days (``ValidationException``) instead of ignoring them;
- accepts key ARNs in DisableKey/EnableKey/ScheduleKeyDeletion/CancelKeyDeletion (moto
  crashes on them) and answers ``NotFoundException`` for unknown keys;
- refuses EnableKey/DisableKey/ScheduleKeyDeletion on a key pending deletion and
  CancelKeyDeletion on a key that is not (``KMSInvalidStateException``);
- puts a multi-Region primary that still has replicas into ``PendingReplicaDeletion``, and
  keeps primary and replicas' MultiRegionConfiguration apart (moto shares one dict);
- gives a new replica its own grants and aliases (none; moto shares the primary's), the
  default key policy and the Enabled state (moto copies the primary's), and refuses
  ReplicateKey of a key that is not a multi-Region primary, of one pending deletion, into an
  unknown Region or one where the key already is (moto crashes or overwrites);
- encrypts and decrypts under multi-Region keys, in any of their Regions (moto's ciphertext
  has room for 36 characters of key id, and cuts moto's 40-character ``mrk-`` ids);
- marks the keys behind ``alias/aws/*`` as AWS-managed (``KeyManager: AWS``);
- pages ListGrants with ``Limit``/``Marker`` (1-100, default 50) and reports each grant's
  ``CreationDate``;
- enforces explicit Deny statements of key policies on every operation naming a key, with
  principals and ``aws:PrincipalArn`` exemptions honoured (moto checks DescribeKey only, and
  ignores both, so a quarantine would lock out its own break-glass roles);
- refuses rotation changes on a disabled key or one pending deletion, whose rotation status
  AWS reports as off;
- keeps ``RotationPeriodInDays`` (90-2560, default 365) and reports it with
  ``NextRotationDate`` in GetKeyRotationStatus.

Each patch point is checked when installing: a moto upgrade that moves one fails loudly here
(and in ``tests/test_shim.py``) instead of silently making the sandbox lenient again.
"""

from __future__ import annotations

import base64
import functools
import inspect
import json
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

_INSTALLED = "_kmsir_shim"
DEFAULT_ROTATION_DAYS = 365
#: States in which a key can be used for cryptographic operations.
_USABLE = frozenset({"Enabled"})


def _error(code: str, message: str) -> Exception:
    from moto.core.exceptions import JsonRESTError

    return JsonRESTError(code, message)


def _key(backend: Any, key_id: str, *, aliases: bool) -> Any:
    """The moto key for an id or ARN (and alias, when the operation accepts one)."""
    try:
        resolved = backend.any_id_to_key_id(key_id) if aliases else backend.get_key_id(key_id)
        return backend.keys[resolved]
    except (KeyError, TypeError, AttributeError):
        raise _error("NotFoundException", f"Key '{key_id}' does not exist") from None


def _require_usable(key: Any) -> None:
    state = key.key_state
    if state == "Disabled":
        raise _error("DisabledException", f"{key.arn} is disabled.")
    if state not in _USABLE:
        raise _error("KMSInvalidStateException", f"{key.arn} is {_state_words(state)}.")


def _state_words(state: str) -> str:
    return {
        "PendingDeletion": "pending deletion",
        "PendingReplicaDeletion": "pending replica deletion",
        "PendingImport": "pending import",
    }.get(state, state)


def _not_pending(key: Any, operation: str) -> None:
    if key.key_state in ("PendingDeletion", "PendingReplicaDeletion"):
        raise _error(
            "KMSInvalidStateException",
            f"{key.arn} is {_state_words(key.key_state)}; {operation} is not allowed",
        )


# -- backend wrappers ---------------------------------------------------------------------


def _crypto_by_key_id(original: Callable[..., Any]) -> Callable[..., Any]:
    """Encrypt/GenerateDataKey/Sign/Verify/GetPublicKey/GenerateMac/VerifyMac."""

    signature = inspect.signature(original)
    if "key_id" not in signature.parameters:
        raise RuntimeError(f"moto's KmsBackend.{original.__name__} has no key_id parameter")

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        key_id = signature.bind(self, *args, **kwargs).arguments["key_id"]
        _require_usable(_key(self, str(key_id), aliases=True))
        return original(self, *args, **kwargs)

    return wrapper


def _decrypt(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        plaintext, arn = original(self, *args, **kwargs)
        _require_usable(_key(self, arn, aliases=False))
        response = getattr(_REQUEST, "response", None)
        if response is not None:  # the ciphertext named the key: now its policy can be checked
            action = "kms:Decrypt" if response._get_action() == "Decrypt" else "kms:ReEncryptFrom"
            _deny_check(response, arn, action)
        return plaintext, arn

    return wrapper


def _disable_key(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(self: Any, key_id: str) -> Any:
        key = _key(self, key_id, aliases=False)
        _not_pending(key, "DisableKey")
        return original(self, key.id)

    return wrapper


def _enable_key(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(self: Any, key_id: str) -> Any:
        key = _key(self, key_id, aliases=False)
        _not_pending(key, "EnableKey")
        return original(self, key.id)

    return wrapper


def _schedule_key_deletion(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(self: Any, key_id: str, pending_window_in_days: int) -> Any:
        if not isinstance(pending_window_in_days, int) or not 7 <= pending_window_in_days <= 30:
            raise _error(
                "ValidationException",
                f"1 validation error detected: Value '{pending_window_in_days}' at "
                "'pendingWindowInDays' failed to satisfy constraint: Member must have value "
                "greater than or equal to 7 and less than or equal to 30",
            )
        key = _key(self, key_id, aliases=False)
        _not_pending(key, "ScheduleKeyDeletion")
        result = original(self, key.id, pending_window_in_days)
        if _live_replicas(key):
            key.key_state = "PendingReplicaDeletion"
        return result

    return wrapper


def _cancel_key_deletion(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(self: Any, key_id: str) -> Any:
        key = _key(self, key_id, aliases=False)
        if key.key_state not in ("PendingDeletion", "PendingReplicaDeletion"):
            raise _error("KMSInvalidStateException", f"{key.arn} is not pending deletion.")
        return original(self, key.id)

    return wrapper


def _rotation_change(original: Callable[..., Any]) -> Callable[..., Any]:
    """Rotation cannot change while the key is disabled or pending deletion."""

    @functools.wraps(original)
    def wrapper(self: Any, key_id: str, *args: Any, **kwargs: Any) -> Any:
        _require_usable(_key(self, key_id, aliases=False))
        return original(self, key_id, *args, **kwargs)

    return wrapper


def _live_replicas(key: Any) -> list[dict[str, Any]]:
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


def _create_grant(original: Callable[..., Any]) -> Callable[..., Any]:
    """Remember when each grant was made: ListGrants reports ``CreationDate`` in AWS."""

    @functools.wraps(original)
    def wrapper(self: Any, key_id: str, *args: Any, **kwargs: Any) -> Any:
        grant_id, token = original(self, key_id, *args, **kwargs)
        key = _key(self, key_id, aliases=True)
        key.grants[grant_id].kmsir_created = datetime.now(timezone.utc).timestamp()
        return grant_id, token

    return wrapper


def _replicate_key(original: Callable[..., Any]) -> Callable[..., Any]:
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

        primary = _key(self, key_id, aliases=False)
        config = getattr(primary, "multi_region_configuration", None) or {}
        if not primary.multi_region or config.get("MultiRegionKeyType") != "PRIMARY":
            raise _error(
                "UnsupportedOperationException", f"{primary.arn} is not a multi-Region primary key."
            )
        _not_pending(primary, "ReplicateKey")
        regions = kms_backends[primary.account_id]
        if replica_region not in regions.regions:
            raise _error(
                "ValidationException", f"{replica_region!r} is not a Region where KMS is offered."
            )
        if regions[replica_region].keys.get(primary.id) is not None:
            raise _error(
                "AlreadyExistsException", f"Key {primary.id} already exists in {replica_region}."
            )
        replica = original(self, primary.id, replica_region)
        replica.grants = {}
        replica.aliases = {}
        replica.policy = replica.generate_default_policy()
        replica.key_state, replica.enabled = "Enabled", True
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


def _ciphertext_encrypt(original: Callable[..., Any]) -> Callable[..., Any]:
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


def _ciphertext_decrypt(original: Callable[..., Any]) -> Callable[..., Any]:
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


def _generate_default_keys(original: Callable[..., Any]) -> Callable[..., Any]:
    """Keys behind ``alias/aws/*`` are AWS-managed (moto says CUSTOMER)."""

    @functools.wraps(original)
    def wrapper(self: Any, alias_name: str) -> Any:
        key_id = original(self, alias_name)
        if key_id is not None:
            self.keys[key_id].key_manager = "AWS"
        return key_id

    return wrapper


# -- response wrappers --------------------------------------------------------------------


def _list_grants(original: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(original)
    def wrapper(self: Any) -> str:
        limit = self._get_param("Limit")
        if limit is None:
            limit = 50
        if not isinstance(limit, int) or not 1 <= limit <= 100:
            raise _error("ValidationException", "Limit must be between 1 and 100.")
        marker = self._get_param("Marker")
        try:
            offset = int(base64.urlsafe_b64decode(marker.encode()).decode()) if marker else 0
            if offset < 0:
                raise ValueError(offset)
        except (ValueError, UnicodeDecodeError):
            raise _error(
                "InvalidMarkerException",
                "The request was rejected because the "
                "marker that specifies where pagination should next begin is not "
                "valid.",
            ) from None
        body = json.loads(original(self))
        grants = body.get("Grants", [])
        key = _key(self.kms_backend, self._get_param("KeyId"), aliases=True)
        for grant in grants:
            created = getattr(key.grants.get(grant.get("GrantId")), "kmsir_created", None)
            if created is not None:
                grant["CreationDate"] = created
        page = grants[offset : offset + limit]
        truncated = offset + limit < len(grants)
        result: dict[str, Any] = {"Grants": page, "Truncated": truncated}
        if truncated:
            result["NextMarker"] = base64.urlsafe_b64encode(str(offset + limit).encode()).decode()
        return json.dumps(result)

    return wrapper


def _enable_key_rotation(original: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(original)
    def wrapper(self: Any) -> str:
        period = self._get_param("RotationPeriodInDays")
        if period is None:
            period = DEFAULT_ROTATION_DAYS
        if not isinstance(period, int) or not 90 <= period <= 2560:
            raise _error(
                "ValidationException",
                f"1 validation error detected: Value '{period}' at 'rotationPeriodInDays' "
                "failed to satisfy constraint: Member must have value greater than or equal "
                "to 90 and less than or equal to 2560",
            )
        result = original(self)
        key = _key(self.kms_backend, self._get_param("KeyId"), aliases=False)
        key.kmsir_rotation_period = period
        key.kmsir_rotation_enabled_at = datetime.now(timezone.utc)
        return result

    return wrapper


def _get_key_rotation_status(original: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(original)
    def wrapper(self: Any) -> str:
        body = json.loads(original(self))
        key = _key(self.kms_backend, self._get_param("KeyId"), aliases=False)
        body["KeyId"] = key.id
        if key.key_state in ("PendingDeletion", "PendingReplicaDeletion"):
            body["KeyRotationEnabled"] = False  # as AWS reports it for a key pending deletion
        if body.get("KeyRotationEnabled"):
            period = getattr(key, "kmsir_rotation_period", DEFAULT_ROTATION_DAYS)
            since = getattr(key, "kmsir_rotation_enabled_at", None) or datetime.now(timezone.utc)
            body["RotationPeriodInDays"] = period
            body["NextRotationDate"] = (since + timedelta(days=period)).timestamp()
        return json.dumps(body)

    return wrapper


_BACKEND_PATCHES: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
    "encrypt": _crypto_by_key_id,
    "generate_data_key": _crypto_by_key_id,
    "sign": _crypto_by_key_id,
    "verify": _crypto_by_key_id,
    "get_public_key": _crypto_by_key_id,
    "generate_mac": _crypto_by_key_id,
    "verify_mac": _crypto_by_key_id,
    "decrypt": _decrypt,
    "disable_key": _disable_key,
    "enable_key": _enable_key,
    "schedule_key_deletion": _schedule_key_deletion,
    "cancel_key_deletion": _cancel_key_deletion,
    "replicate_key": _replicate_key,
    "enable_key_rotation": _rotation_change,
    "disable_key_rotation": _rotation_change,
    "rotate_key_on_demand": _rotation_change,
    "create_grant": _create_grant,
    "_generate_default_keys": _generate_default_keys,
}


def _caller_arn(response: Any) -> str:
    """Who is calling, as moto's STS would answer GetCallerIdentity for these credentials."""
    from moto.sts.models import sts_backends

    backend = sts_backends[response.current_account][response.partition]
    return str(backend.get_caller_identity(response.get_access_key(), response.region)[1])


#: Operations whose access IAM alone decides (no key policy is consulted).
_IAM_ONLY = frozenset(
    {
        "CreateKey",
        "ListKeys",
        "ListAliases",
        "GenerateRandom",
        "ListRetirableGrants",
        "DescribeCustomKeyStores",
    }
)
#: The KMS request being handled on this thread, so backend wrappers can check the caller.
_REQUEST = threading.local()


def _deny_check(response: Any, key_ref: str, action: str) -> None:
    from kmsir.keypolicy import explicit_deny

    try:
        key = _key(response.kms_backend, key_ref, aliases=True)
        policy = json.loads(key.policy)
    except Exception:
        return
    if not isinstance(policy, dict):
        return
    caller = _caller_arn(response)
    sid = explicit_deny(policy, action, caller_arn=caller)
    if sid is not None:
        raise _error(
            "AccessDeniedException",
            f"User: {caller} is not authorized to perform: {action} on resource: {key.arn} "
            f"with an explicit deny in a resource-based policy ({sid})",
        )


def _enforce_explicit_deny(original: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse a key operation that an explicit Deny of the key policy applies to.

    moto checks Deny statements for DescribeKey only, and ignores their principals and
    conditions: a quarantine exempting break-glass roles would lock everyone out there, and
    leave every other operation open. Here every operation on a key is checked, with
    principals and ``aws:PrincipalArn`` exemptions honoured; Decrypt and ReEncrypt, which may
    name no key, are checked by the backend wrapper once the ciphertext names it.
    """

    @functools.wraps(original)
    def wrapper(self: Any) -> Any:
        action = self._get_action()
        if action not in _IAM_ONLY:
            for param, iam_action in (
                ("KeyId", f"kms:{action}"),
                ("DestinationKeyId", "kms:ReEncryptTo"),
            ):
                value = self._get_param(param)
                if isinstance(value, str):
                    _deny_check(self, value, iam_action)
        _REQUEST.response = self
        try:
            return original(self)
        finally:
            _REQUEST.response = None

    return wrapper


def _no_naive_policy_check(original: Callable[..., Any]) -> Callable[..., Any]:
    """moto's own Deny check ignores principals; ``_enforce_explicit_deny`` replaces it."""

    @functools.wraps(original)
    def wrapper(self: Any, key_id: str, action: str) -> None:
        return None

    return wrapper


_RESPONSE_PATCHES: dict[str, Callable[[Callable[..., Any]], Callable[..., Any]]] = {
    "_validate_key_policy": _no_naive_policy_check,
    "list_grants": _list_grants,
    "enable_key_rotation": _enable_key_rotation,
    "get_key_rotation_status": _get_key_rotation_status,
}


def install() -> None:
    """Patch moto's KMS backend and responses (idempotent); fail loudly if moto moved."""
    from moto.kms import models
    from moto.kms.models import KmsBackend
    from moto.kms.responses import KmsResponse

    if not getattr(models, _INSTALLED, False):
        # KmsBackend calls these by their names in its module
        functions = {"encrypt": _ciphertext_encrypt, "decrypt": _ciphertext_decrypt}
        missing = [name for name in functions if not callable(getattr(models, name, None))]
        if missing:
            raise RuntimeError(
                f"moto.kms.models no longer has {', '.join(missing)}: the sandbox's KMS "
                "fidelity shim (kmsir.sandbox.shim) must be reviewed for this moto version"
            )
        for name, wrap_function in functions.items():
            setattr(models, name, wrap_function(getattr(models, name)))
        setattr(models, _INSTALLED, True)

    if not getattr(KmsResponse, _INSTALLED, False):
        # call_action is inherited from moto's BaseResponse: wrap it for KMS only
        setattr(KmsResponse, "call_action", _enforce_explicit_deny(KmsResponse.call_action))  # noqa: B010
    for cls, patches in ((KmsBackend, _BACKEND_PATCHES), (KmsResponse, _RESPONSE_PATCHES)):
        if getattr(cls, _INSTALLED, False):
            continue
        missing = [name for name in patches if not callable(vars(cls).get(name))]
        if missing:
            raise RuntimeError(
                f"moto's {cls.__name__} no longer defines {', '.join(missing)}: the sandbox's "
                "KMS fidelity shim (kmsir.sandbox.shim) must be reviewed for this moto version"
            )
        for name, wrap in patches.items():
            setattr(cls, name, wrap(vars(cls)[name]))
        setattr(cls, _INSTALLED, True)

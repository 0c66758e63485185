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
- follows the rest of the key-state table (``tests/data/key_state_table.yaml``): CreateGrant
  on a key that cannot be used (an Unavailable one aside), CreateAlias, UpdateAlias to,
  TagResource, UntagResource and UpdateKeyDescription of a key pending deletion, and
  EnableKey/DisableKey of one pending import are refused; rotation of a key with imported
  material or in a custom key store is ``UnsupportedOperationException``;
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
  ``CreationDate``; gives grants AWS's 64-hex ids; lets only those RetireGrant names retire a
  grant (cross-account too), and answers ``NotFoundException`` for a grant a key lacks;
- answers GenerateDataKeyPair and GenerateDataKeyPairWithoutPlaintext (moto lacks them), but
  not for a key in a custom key store, as AWS has it;
- enforces explicit Deny statements of key policies on every operation naming a key, with
  principals and ``aws:PrincipalArn`` exemptions honoured (moto checks DescribeKey only, and
  ignores both, so a quarantine would lock out its own break-glass roles);
- refuses rotation changes on a disabled key or one pending deletion, whose rotation status
  AWS reports as off;
- keeps ``RotationPeriodInDays`` (90-2560, default 365) and reports it with
  ``NextRotationDate`` in GetKeyRotationStatus;
- answers EC2's GetEbsDefaultKmsKeyId (moto lacks it): the key ModifyEbsDefaultKmsKeyId set,
  else AWS's default, the ARN of ``alias/aws/ebs``;
- emulates imported key material (moto lacks it): an ``Origin=EXTERNAL`` key is
  ``PendingImport`` until GetParametersForImport/ImportKeyMaterial give it real, unwrapped
  material, which DeleteImportedKeyMaterial or its ``ValidTo`` take away again;
- emulates custom key stores (moto lacks them): Create/Describe/Connect/Disconnect/Update/
  DeleteCustomKeyStore, keys created in a connected store, and each key of a disconnected
  store ``Unavailable``;
- answers CloudTrail's ListPublicKeys (moto lacks it) with the key that signs the sandbox
  trail's digest files (``cloudtrail_keys``).

One module per concern: ``key_state``, ``multi_region``, ``grants``, ``policy``,
``rotation`` and ``ec2`` hold the wrappers, ``imported``, ``key_stores``, ``store_keys`` and
``data_key_pairs`` the KMS operations moto lacks (``operations`` adds them all to moto),
``common`` what they share; this module says which wrapper goes on which moto method, and
installs them.
Each patch point is checked when installing: a moto upgrade that moves one fails loudly here
(and in ``tests/test_shim.py``) instead of silently making the sandbox lenient again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kmsir.sandbox.shim import (
    cloudtrail_keys,
    ec2,
    grants,
    key_state,
    multi_region,
    operations,
    policy,
    rotation,
    store_keys,
)

_INSTALLED = "_kmsir_shim"

_Wrap = Callable[[Callable[..., Any]], Callable[..., Any]]

#: Methods of moto's ``KmsBackend``, by name, and what wraps each.
_BACKEND_PATCHES: dict[str, _Wrap] = {
    "encrypt": key_state.crypto_by_key_id,
    "generate_data_key": key_state.crypto_by_key_id,
    "sign": key_state.crypto_by_key_id,
    "verify": key_state.crypto_by_key_id,
    "get_public_key": key_state.crypto_by_key_id,
    "generate_mac": key_state.crypto_by_key_id,
    "verify_mac": key_state.crypto_by_key_id,
    "decrypt": key_state.decrypt,
    "disable_key": key_state.disable_key,
    "enable_key": key_state.enable_key,
    "schedule_key_deletion": key_state.schedule_key_deletion,
    "cancel_key_deletion": key_state.cancel_key_deletion,
    "replicate_key": multi_region.replicate_key,
    "enable_key_rotation": rotation.rotation_change,
    "disable_key_rotation": rotation.rotation_change,
    "rotate_key_on_demand": rotation.rotation_change,
    "create_grant": grants.create_grant,
    "revoke_grant": grants.revoke_grant,
    "create_alias": key_state.while_not_pending("CreateAlias"),
    "update_alias": key_state.while_not_pending("UpdateAlias"),  # to a key pending deletion
    "tag_resource": key_state.while_not_pending("TagResource"),
    "untag_resource": key_state.while_not_pending("UntagResource"),
    "update_key_description": key_state.while_not_pending("UpdateKeyDescription"),
    "_generate_default_keys": key_state.generate_default_keys,
}

#: Methods of moto's ``KmsResponse``, by name, and what wraps each.
_RESPONSE_PATCHES: dict[str, _Wrap] = {
    "_validate_key_policy": policy.no_naive_policy_check,
    "list_grants": grants.list_grants,
    "retire_grant": grants.retire_grant,
    "enable_key_rotation": rotation.enable_key_rotation,
    "get_key_rotation_status": rotation.get_key_rotation_status,
    "create_key": operations.create_key,
    "generate_random": store_keys.generate_random,
}


def install() -> None:
    """Patch moto's KMS backend and responses (idempotent); fail loudly if moto moved."""
    from moto.kms import models
    from moto.kms.models import KmsBackend
    from moto.kms.responses import KmsResponse

    if not getattr(models, _INSTALLED, False):
        # KmsBackend calls these by their names in its module
        functions = {
            "encrypt": multi_region.ciphertext_encrypt,
            "decrypt": multi_region.ciphertext_decrypt,
        }
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
        enforced = operations.around_each_request(
            policy.enforce_explicit_deny(KmsResponse.call_action)
        )
        setattr(KmsResponse, "call_action", enforced)  # noqa: B010
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
    operations.install()  # imported material, custom key stores, data key pairs (moto lacks them)
    ec2.install()  # GetEbsDefaultKmsKeyId (moto has none)
    cloudtrail_keys.install()  # ListPublicKeys (moto has none): the sandbox trail's digest key

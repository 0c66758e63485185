"""The default KMS key of EBS encryption by default, as AWS reports it: moto has no
GetEbsDefaultKmsKeyId.

Following the EC2 API reference (GetEbsDefaultKmsKeyId, ModifyEbsDefaultKmsKeyId): AWS gives
each Region an AWS managed key for EBS (``alias/aws/ebs``), the default key of encryption by
default until ModifyEbsDefaultKmsKeyId names another; GetEbsDefaultKmsKeyId answers the ARN
of the default key, ``arn:aws:kms:REGION:ACCOUNT:alias/aws/ebs`` while it was never changed.
moto keeps the key ModifyEbsDefaultKmsKeyId names but answers GetEbsDefaultKmsKeyId with
NotImplementedError, and it records the ``aws/ebs`` key as its default the first time it
encrypts a volume without a key, which AWS does not report as a change.

``modify_ebs_default_kms_key_id`` wraps moto's ``EBSBackend`` method (to remember what the
account chose); ``get_ebs_default_kms_key_id`` is added to moto's EC2 ``Settings`` responses,
beside Get/Enable/DisableEbsEncryptionByDefault, so every client of the sandbox gets it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

_INSTALLED = "_kmsir_shim"
#: Where the shim keeps the key ModifyEbsDefaultKmsKeyId set, on moto's EC2 backend.
_CHOSEN = "kmsir_ebs_default_kms_key_id"


def modify_ebs_default_kms_key_id(original: Callable[..., str]) -> Callable[..., str]:
    """ModifyEbsDefaultKmsKeyId: remember the key chosen (its ARN, as moto answers it)."""

    @functools.wraps(original)
    def wrapper(self: Any, kms_key_id: str) -> str:
        arn = original(self, kms_key_id)
        setattr(self, _CHOSEN, arn)
        return arn

    return wrapper


def get_ebs_default_kms_key_id(self: Any) -> Any:
    """GetEbsDefaultKmsKeyId: the key chosen, or the alias ARN of ``aws/ebs``."""
    from moto.core.responses import ActionResult
    from moto.utilities.utils import get_partition

    self.error_on_dryrun()
    backend = self.ec2_backend
    chosen = getattr(backend, _CHOSEN, None)
    if not chosen:
        region = backend.region_name
        chosen = f"arn:{get_partition(region)}:kms:{region}:{backend.account_id}:alias/aws/ebs"
    return ActionResult({"KmsKeyId": chosen})


def install() -> None:
    """Patch moto's EBS backend and EC2 responses (idempotent); fail loudly if moto moved."""
    from moto.ec2.models.elastic_block_store import EBSBackend
    from moto.ec2.responses.settings import Settings

    if getattr(Settings, _INSTALLED, False):
        return
    if not callable(vars(EBSBackend).get("modify_ebs_default_kms_key_id")):
        raise RuntimeError(
            "moto's EBSBackend no longer defines modify_ebs_default_kms_key_id: the sandbox's "
            "fidelity shim (kmsir.sandbox.shim.ec2) must be reviewed for this moto version"
        )
    from moto.ec2.responses import EC2Response

    if hasattr(EC2Response, "get_ebs_default_kms_key_id"):
        raise RuntimeError(
            "moto now answers GetEbsDefaultKmsKeyId itself: the sandbox's fidelity shim "
            "(kmsir.sandbox.shim.ec2) must be reviewed for this moto version"
        )
    wrapped = modify_ebs_default_kms_key_id(vars(EBSBackend)["modify_ebs_default_kms_key_id"])
    setattr(EBSBackend, "modify_ebs_default_kms_key_id", wrapped)  # noqa: B010
    setattr(Settings, "get_ebs_default_kms_key_id", get_ebs_default_kms_key_id)  # noqa: B010
    setattr(Settings, _INSTALLED, True)

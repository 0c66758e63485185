"""Which KMS key protects a resource: customer managed, AWS managed (``alias/aws/*``), AWS
owned, or none, told from the reference each API reports (key id, key ARN, alias name or
alias ARN).

``alias/aws/*`` aliases, and the keys they point at, are AWS managed: AWS reserves the prefix
for AWS managed keys (KMS developer guide, "Create aliases"). Other keys are told apart by
their ``KeyManager``: the review's own reading of the key when it has one, else DescribeKey
(once per reference, saved as evidence). A reference missing means the service's AWS managed
key (``aws/secretsmanager``, ``aws/ssm``...), as each service documents; a key that cannot be
described is ``UNKNOWN``, with the refusal, so a check can say could-not-check for it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kmsir.actions.audit.context import AuditContext, KeyFacts, Unavailable

CUSTOMER = "customer managed key"
AWS_MANAGED = "AWS managed key"
AWS_OWNED = "AWS owned key"
S3_MANAGED = "Amazon S3 managed keys (SSE-S3)"
UNENCRYPTED = "no encryption"
UNKNOWN = "a key that could not be identified"


@dataclass(frozen=True)
class Protection:
    """The key protecting a resource: its kind (``CUSTOMER``, ``AWS_MANAGED``...), the key as
    named (the alias of an AWS managed key, else its ARN), and why it is ``UNKNOWN``."""

    kind: str
    key: str = ""
    unavailable: Unavailable | None = None
    #: The DescribeKey response that told the key apart, when one was needed.
    evidence: str = ""

    @property
    def customer(self) -> bool:
        return self.kind == CUSTOMER

    def words(self) -> str:
        """The key for a detail line: "the AWS managed key alias/aws/ebs", "an AWS owned key"."""
        if self.kind == UNKNOWN and self.key:
            return f"the key {self.key}, which could not be identified"
        if self.key:
            return f"the {self.kind} {self.key}"
        return f"an {self.kind}" if self.kind == AWS_OWNED else self.kind


def partition(region: str) -> str:
    """The ARN partition of ``region``."""
    if region.startswith("cn-"):
        return "aws-cn"
    return "aws-us-gov" if region.startswith("us-gov-") else "aws"


def setting_arn(audit: AuditContext, service: str, setting: str) -> str:
    """An account-level setting of the Region, named like an ARN."""
    return f"arn:{partition(audit.region)}:{service}:{audit.region}:{audit.account}:{setting}"


@dataclass(frozen=True)
class _Names:
    targets: dict[str, str]  # alias name -> key id
    aws_keys: dict[str, str]  # key id -> its alias/aws/* name
    keys: dict[str, KeyFacts]  # the review's keys, by id


def _names(audit: AuditContext) -> _Names:
    def read() -> _Names:
        targets = {
            str(a["AliasName"]): str(a["TargetKeyId"])
            for a in audit.aliases
            if a.get("TargetKeyId")
        }
        aws_keys = {k: a for a, k in targets.items() if a.startswith("alias/aws/")}
        return _Names(targets, aws_keys, {k.key_id: k for k in audit.keys})

    return audit.shared("kms/key-names", read)


def _local(audit: AuditContext, reference: str) -> bool:
    """Whether ``reference`` names a key of this account and Region."""
    if not reference.startswith("arn:"):
        return True
    parts = reference.split(":")
    return len(parts) > 5 and parts[3] == audit.region and parts[4] == audit.account


def protection(audit: AuditContext, reference: Any, default: str) -> Protection:
    """The key ``reference`` names (key id, key ARN, alias name or alias ARN); none named is
    the service's AWS managed key ``default`` (``alias/aws/ebs``...)."""
    if not isinstance(reference, str) or not reference:
        return Protection(AWS_MANAGED, default)
    names = _names(audit)
    alias = "alias/" + reference.split("alias/", 1)[1] if "alias/" in reference else None
    if alias is not None and alias.startswith("alias/aws/"):
        return Protection(AWS_MANAGED, alias)
    key_id: str | None = None
    if _local(audit, reference):
        key_id = names.targets.get(alias) if alias else reference.rsplit("/", 1)[-1]
    if key_id in names.aws_keys:
        return Protection(AWS_MANAGED, names.aws_keys[key_id])
    facts = names.keys.get(key_id or "")
    if facts is not None:
        return Protection(CUSTOMER if facts.customer_managed else AWS_MANAGED, facts.arn)
    try:
        metadata, path = _described(audit, reference)
    except Unavailable as exc:
        return Protection(UNKNOWN, reference, exc)
    found = str(metadata.get("KeyId", ""))
    if found in names.aws_keys:
        return Protection(AWS_MANAGED, names.aws_keys[found], evidence=path)
    kind = CUSTOMER if metadata.get("KeyManager") == "CUSTOMER" else AWS_MANAGED
    return Protection(kind, str(metadata.get("Arn") or reference), evidence=path)


def _described(audit: AuditContext, reference: str) -> tuple[dict[str, Any], str]:
    """DescribeKey of a key outside the review's reading (once per reference)."""

    def read() -> tuple[dict[str, Any], str]:
        kms = audit.client("kms")
        metadata = audit.call(
            "kms",
            "DescribeKey",
            lambda: kms.describe_key(KeyId=reference)["KeyMetadata"],
            what=f"on {reference}",
        )
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", reference)[-200:]
        return metadata, audit.evidence(f"data/keys/{safe}", {"KeyMetadata": metadata})

    return audit.shared(f"kms/describe/{reference}", read)

"""What every KMS action shares: the key parameter, DescribeKey, the AWS-managed refusal,
paginated list calls.

Every mutating action resolves the key reference (id, ARN, alias name, alias ARN) to the key
id with ``DescribeKey`` first, refuses AWS-managed keys with the reason, and treats "already in
the desired state" as success with nothing sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import field_validator

from kmsir.actions.base import ActionContext, Params
from kmsir.aws import aws_errors
from kmsir.errors import ActionError
from kmsir.playbook.values import is_kms_key_reference
from kmsir.playbook.yamlsafe import shorten


def check_key_reference(value: str) -> str:
    """A key id, key ARN, alias name or alias ARN, stripped; ``ValueError`` otherwise."""
    value = value.strip()
    if not is_kms_key_reference(value):
        raise ValueError(
            f"{shorten(value)} is not a KMS key id, key ARN, alias name (alias/...) or alias ARN"
        )
    return value


class KeyParams(Params):
    """A single key: key id, key ARN, alias name or alias ARN."""

    key: str

    @field_validator("key")
    @classmethod
    def _key_reference(cls, value: str) -> str:
        return check_key_reference(value)


@dataclass(frozen=True)
class KeyInfo:
    """The facts about a key that the actions and the report use."""

    key_id: str
    arn: str
    account: str
    region: str
    state: str
    key_manager: str
    origin: str
    key_spec: str
    multi_region_role: str | None
    primary_arn: str | None
    replica_arns: tuple[str, ...]
    deletion_date: str | None
    valid_to: str | None
    metadata: dict[str, Any]

    @property
    def summary(self) -> dict[str, Any]:
        """The state the journal records before and after a change."""
        return {"key_id": self.key_id, "state": self.state, "deletion_date": self.deletion_date}

    @property
    def rotatable(self) -> bool:
        """Automatic and on-demand rotation apply to symmetric keys with AWS_KMS material."""
        return self.key_spec == "SYMMETRIC_DEFAULT" and self.origin == "AWS_KMS"

    @property
    def related_arns(self) -> list[str]:
        """The other Regions' keys of the same multi-Region key (primary and replicas)."""
        arns = [self.primary_arn, *self.replica_arns] if self.multi_region_role else []
        return [a for a in arns if a and a != self.arn]


def region_of(arn: str) -> str:
    """The Region in an ARN."""
    return arn.split(":")[3]


def describe(ctx: ActionContext, key: str, *, region: str | None = None) -> KeyInfo:
    """``DescribeKey`` for any key reference.

    A key ARN is looked up in its own Region; anything else in ``region`` (default: the run's).
    """
    if key.startswith("arn:") and region is None:
        region = region_of(key)
    kms = ctx.clients.client("kms", region)
    with aws_errors(f"DescribeKey on {key}"):
        metadata = kms.describe_key(KeyId=key)["KeyMetadata"]
    arn = str(metadata["Arn"])
    config = metadata.get("MultiRegionConfiguration") or {}
    return KeyInfo(
        key_id=str(metadata["KeyId"]),
        arn=arn,
        account=arn.split(":")[4],
        region=region_of(arn),
        state=str(metadata.get("KeyState", "Unknown")),
        key_manager=str(metadata.get("KeyManager", "CUSTOMER")),
        origin=str(metadata.get("Origin", "AWS_KMS")),
        key_spec=str(metadata.get("KeySpec", metadata.get("CustomerMasterKeySpec", ""))),
        multi_region_role=config.get("MultiRegionKeyType") if metadata.get("MultiRegion") else None,
        primary_arn=(config.get("PrimaryKey") or {}).get("Arn"),
        replica_arns=tuple(r["Arn"] for r in config.get("ReplicaKeys", []) if r.get("Arn")),
        deletion_date=iso(metadata.get("DeletionDate")),
        valid_to=iso(metadata.get("ValidTo")),
        metadata=dict(metadata),
    )


def target(ctx: ActionContext, key: str, action: str) -> KeyInfo:
    """Describe the key a mutating action is about to change, refusing AWS-managed keys."""
    info = describe(ctx, key)
    if info.key_manager == "AWS":
        raise ActionError(
            f"{action} refused on {info.key_id}: it is an AWS-managed key (KeyManager AWS), "
            "which only its AWS service may change; contain the principals instead"
        )
    return info


class ReplicasParams(KeyParams):
    """A key; ``replicas: true``: the primary and every replica of a multi-Region key."""

    replicas: bool = False

    @field_validator("replicas", mode="before")
    @classmethod
    def _old_choices(cls, value: object) -> object:
        # kms.schedule-deletion's replicas: ask|include|skip of earlier releases
        if value in ("ask", "include", "skip"):
            raise ValueError(
                f"replicas: {value} is gone: write replicas: true to act on every replica "
                "(one approval), or false for this Region's key only"
            )
        return value


def members(ctx: ActionContext, info: KeyInfo, replicas: bool) -> list[KeyInfo]:
    """The keys a step acts on: ``info``, then with ``replicas`` every other Region's key of
    the same multi-Region key (primary and replicas, whichever ``info`` is), each described in
    its own Region. AWS shares no key state between them: each is changed with its own call."""
    if not replicas:
        return [info]
    return [info, *(describe(ctx, arn) for arn in info.related_arns)]


def regions_note(keys: list[KeyInfo]) -> str:
    """The Regions a ``replicas: true`` step acts in, for its preview."""
    if len(keys) == 1:
        role = keys[0].multi_region_role
        return f"replicas: true: {keys[0].key_id} has no replica to act on" + (
            "" if role else " (it is not a multi-Region key)"
        )
    listed = ", ".join(
        f"{k.region} ({(k.multi_region_role or '').lower()}, {k.state})" for k in keys
    )
    return f"acts in {len(keys)} Regions, one call each: {listed}"


def call_key(key: KeyInfo, first: KeyInfo) -> str:
    """How a call names a key of a ``replicas: true`` step: the key id for the key the step
    was given (as every action names it), the key ARN for the others (it names their Region:
    the key id is the same in every Region of a multi-Region key)."""
    return key.key_id if key is first else key.arn


def grantee_account(principal: str) -> str | None:
    """The account of a grantee principal ARN (``None`` for service principals)."""
    parts = principal.split(":")
    return parts[4] if len(parts) > 4 and parts[0] == "arn" and parts[4] else None


#: The paginated KMS list calls kmsir makes (a typo here is a type error at the call).
ListOperation = Literal[
    "ListAliases",
    "ListGrants",
    "ListKeyPolicies",
    "ListKeyRotations",
    "ListKeys",
    "ListResourceTags",
]


def list_all(
    ctx: ActionContext,
    operation: ListOperation,
    result_key: str,
    key_id: str | None = None,
    *,
    region: str | None = None,
) -> list[Any]:
    """Every item of a paginated KMS list call (``ListGrants``, ``ListKeyPolicies``...)."""
    from botocore import xform_name  # botocore is imported when a call is made

    kms = ctx.clients.client("kms", region)
    paginator = kms.get_paginator(xform_name(operation))  # type: ignore[call-overload]
    items: list[Any] = []
    with aws_errors(f"{operation}" + (f" for {key_id}" if key_id else "")):
        for page in paginator.paginate(**({"KeyId": key_id} if key_id else {})):
            items.extend(page.get(result_key, []))
    return items


def typed_confirmation(ctx: ActionContext, info: KeyInfo) -> tuple[str, ...]:
    """What a responder may type to approve an irreversible step: the key id or an alias."""
    aliases = list_all(ctx, "ListAliases", "Aliases", info.key_id, region=info.region)
    return (info.key_id, *(str(a["AliasName"]) for a in aliases))


def list_all_grants(
    ctx: ActionContext, key_id: str, *, region: str | None = None
) -> list[dict[str, Any]]:
    """Every grant on the key, following ``NextMarker`` pages."""
    return list_all(ctx, "ListGrants", "Grants", key_id, region=region)


def strip_metadata(response: Mapping[str, Any]) -> dict[str, Any]:
    """An API response without botocore's ``ResponseMetadata``."""
    return {k: v for k, v in response.items() if k != "ResponseMetadata"}


def iso(value: Any) -> str | None:
    """A datetime (or anything) as an ISO 8601 string; ``None`` stays ``None``."""
    if value is None:
        return None
    return str(value.isoformat()) if hasattr(value, "isoformat") else str(value)

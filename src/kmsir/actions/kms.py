"""KMS actions: snapshot a key, and contain it (disable, revoke grants) or recover it (enable).

Every mutating action resolves the key reference (id, ARN, alias name, alias ARN) to the key
id with ``DescribeKey`` first, refuses AWS-managed keys, and treats "already in the desired
state" as success with nothing sent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from kmsir.actions.aws import aws_errors
from kmsir.actions.base import IRREVERSIBLE, Action, ActionContext, Outcome, Params, Preview
from kmsir.errors import ActionError
from kmsir.values import is_kms_key_reference


class KeyParams(Params):
    """A single key: key id, key ARN, alias name or alias ARN."""

    key: str

    @field_validator("key")
    @classmethod
    def _key_reference(cls, value: str) -> str:
        value = value.strip()
        if not is_kms_key_reference(value):
            raise ValueError(
                f"{value[:80]!r} is not a KMS key id, key ARN, alias name (alias/...) or alias ARN"
            )
        return value


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
    multi_region: bool
    deletion_date: str | None
    metadata: dict[str, Any]

    @property
    def summary(self) -> dict[str, Any]:
        """The state the journal records before and after a change."""
        return {"key_id": self.key_id, "state": self.state, "deletion_date": self.deletion_date}


def describe(ctx: ActionContext, key: str) -> KeyInfo:
    """``DescribeKey`` for any key reference."""
    kms = ctx.clients.client("kms")
    with aws_errors(f"DescribeKey on {key}"):
        metadata = kms.describe_key(KeyId=key)["KeyMetadata"]
    arn = str(metadata["Arn"])
    deletion = metadata.get("DeletionDate")
    return KeyInfo(
        key_id=str(metadata["KeyId"]),
        arn=arn,
        account=arn.split(":")[4],
        region=arn.split(":")[3],
        state=str(metadata.get("KeyState", "Unknown")),
        key_manager=str(metadata.get("KeyManager", "CUSTOMER")),
        origin=str(metadata.get("Origin", "AWS_KMS")),
        multi_region=bool(metadata.get("MultiRegion", False)),
        deletion_date=deletion.isoformat() if hasattr(deletion, "isoformat") else deletion,
        metadata=metadata,
    )


def refuse_aws_managed(info: KeyInfo, action: str) -> None:
    """AWS-managed keys belong to the AWS service that uses them: never change them."""
    if info.key_manager == "AWS":
        raise ActionError(
            f"{action} refused on {info.key_id}: it is an AWS-managed key (KeyManager AWS), "
            "which only its AWS service may change; contain the principals instead"
        )


def grantee_account(principal: str) -> str | None:
    """The account of a grantee principal ARN (``None`` for service principals)."""
    parts = principal.split(":")
    return parts[4] if len(parts) > 4 and parts[0] == "arn" and parts[4] else None


def list_all(
    ctx: ActionContext, operation: str, result_key: str, key_id: str
) -> list[dict[str, Any]]:
    """Every item of a paginated KMS list call for one key (``ListGrants``, ``ListAliases``...)."""
    paginator = ctx.clients.client("kms").get_paginator(_snake(operation))
    items: list[dict[str, Any]] = []
    with aws_errors(f"{operation} for {key_id}"):
        for page in paginator.paginate(KeyId=key_id):
            items.extend(page.get(result_key, []))
            ctx.reporter.progress(result_key.lower(), len(items))
    return items


def key_aliases(ctx: ActionContext, key_id: str) -> list[str]:
    """Every alias name of the key."""
    return [str(a["AliasName"]) for a in list_all(ctx, "ListAliases", "Aliases", key_id)]


def list_all_grants(ctx: ActionContext, key_id: str) -> list[dict[str, Any]]:
    """Every grant on the key, following ``NextMarker`` pages."""
    return list_all(ctx, "ListGrants", "Grants", key_id)


class Snapshot(Action[KeyParams]):
    """Preserve a key's current state: metadata, policy, grants, aliases, tags, rotation.

    ```yaml
    - id: snapshot
      action: kms.snapshot
      with: {key: "{{ inputs.key }}"}
    ```
    Outputs: ``key_id``, ``arn``, ``account``, ``region``, ``state``, ``key_manager``,
    ``origin``, ``multi_region``, ``deletion_date``, ``aliases``, ``grants``, ``grant_ids``,
    ``external_grant_ids`` (grantees outside the key's account), ``rotation_enabled``,
    ``tags``, ``policy``.
    """

    name = "kms.snapshot"
    params = KeyParams
    permissions = (
        "kms:DescribeKey",
        "kms:GetKeyPolicy",
        "kms:ListGrants",
        "kms:ListAliases",
        "kms:ListResourceTags",
        "kms:GetKeyRotationStatus",
    )

    def run(self, ctx: ActionContext, params: KeyParams) -> Outcome:
        kms = ctx.clients.client("kms")
        info = describe(ctx, params.key)
        ctx.write_json("key.json", {"KeyMetadata": info.metadata})
        key_id = info.key_id
        with aws_errors(f"GetKeyPolicy on {key_id}"):
            policy_response = kms.get_key_policy(KeyId=key_id, PolicyName="default")
        ctx.write_json("policy-default.json", _strip_metadata(policy_response))
        grants = list_all_grants(ctx, key_id)
        ctx.write_json("grants.json", {"Grants": grants})
        aliases = list_all(ctx, "ListAliases", "Aliases", key_id)
        ctx.write_json("aliases.json", {"Aliases": aliases})
        tags = list_all(ctx, "ListResourceTags", "Tags", key_id)
        ctx.write_json("tags.json", {"Tags": tags})
        rotation: dict[str, Any] = {}
        if (
            info.metadata.get("KeySpec", "SYMMETRIC_DEFAULT") == "SYMMETRIC_DEFAULT"
            and info.origin == "AWS_KMS"
        ):
            with aws_errors(f"GetKeyRotationStatus on {key_id}"):
                rotation = _strip_metadata(kms.get_key_rotation_status(KeyId=key_id))
            ctx.write_json("rotation.json", rotation)
        summary_grants = [
            {
                "id": g.get("GrantId"),
                "name": g.get("Name") or "",
                "grantee": g.get("GranteePrincipal", ""),
                "grantee_account": grantee_account(str(g.get("GranteePrincipal", ""))),
                "operations": list(g.get("Operations", [])),
                "created": _iso(g.get("CreationDate")),
                "issuer": g.get("IssuingAccount"),
            }
            for g in grants
        ]
        external = [
            g["id"]
            for g in summary_grants
            if g["grantee_account"] is not None and g["grantee_account"] != info.account
        ]
        outputs = {
            "key_id": key_id,
            "arn": info.arn,
            "account": info.account,
            "region": info.region,
            "state": info.state,
            "key_manager": info.key_manager,
            "origin": info.origin,
            "multi_region": info.multi_region,
            "deletion_date": info.deletion_date,
            "aliases": [a["AliasName"] for a in aliases],
            "grants": summary_grants,
            "grant_ids": [g["id"] for g in summary_grants],
            "external_grant_ids": external,
            "rotation_enabled": rotation.get("KeyRotationEnabled"),
            "tags": {t["TagKey"]: t["TagValue"] for t in tags},
            "policy": json.loads(policy_response["Policy"]),
        }
        names = ", ".join(outputs["aliases"]) or "no alias"
        summary = (
            f"{key_id} ({names}): {info.state}, {len(grants)} grant(s), "
            f"{len(external)} to outside accounts"
        )
        return Outcome(outputs=outputs, summary=summary, after=info.summary)


class _StateChange(Action[KeyParams]):
    """Shared shape of DisableKey/EnableKey: one call, one desired end state."""

    operation: str
    desired: str

    def api_calls(self, params: KeyParams) -> list[str]:
        return [f"kms:{self.operation} KeyId={params.key}"]

    def preview(self, ctx: ActionContext, params: KeyParams) -> Preview:
        info = describe(ctx, params.key)
        refuse_aws_managed(info, self.name)
        return Preview(
            calls=(f"kms:{self.operation} KeyId={info.key_id}",),
            target=f"{info.key_id} ({info.arn})",
            state=f"key state {info.state}",
        )

    def run(self, ctx: ActionContext, params: KeyParams) -> Outcome:
        info = describe(ctx, params.key)
        refuse_aws_managed(info, self.name)
        if info.state == self.desired:
            return Outcome(
                outputs={"key_id": info.key_id, "state": info.state},
                summary=f"{info.key_id} was already {self.desired}: nothing sent",
                status="already",
                before=info.summary,
                after=info.summary,
            )
        kms = ctx.clients.client("kms")
        method = getattr(kms, _snake(self.operation))
        with aws_errors(f"{self.operation} on {info.key_id}"):
            method(KeyId=info.key_id)
        after = describe(ctx, info.key_id)
        return Outcome(
            outputs={"key_id": after.key_id, "state": after.state},
            summary=f"{info.key_id}: {info.state} -> {after.state}",
            before=info.summary,
            after=after.summary,
        )


class DisableKey(_StateChange):
    """Disable a key: every cryptographic use fails until it is enabled again.

    ```yaml
    - id: disable
      action: kms.disable-key
      with: {key: "{{ steps.snapshot.key_id }}"}
    ```
    """

    name = "kms.disable-key"
    params = KeyParams
    permissions = ("kms:DescribeKey", "kms:DisableKey")
    mutating = True
    inverse = "kms.enable-key"
    operation = "DisableKey"
    desired = "Disabled"


class EnableKey(_StateChange):
    """Enable a disabled key (the inverse of ``kms.disable-key``).

    ```yaml
    - id: enable
      action: kms.enable-key
      with: {key: "{{ steps.snapshot.key_id }}"}
    ```
    """

    name = "kms.enable-key"
    params = KeyParams
    permissions = ("kms:DescribeKey", "kms:EnableKey")
    mutating = True
    inverse = "kms.disable-key"
    operation = "EnableKey"
    desired = "Enabled"


class RevokeGrantsParams(KeyParams):
    """The key and the ids of the grants to revoke."""

    grant_ids: list[str] = Field(max_length=10_000)

    @field_validator("grant_ids")
    @classmethod
    def _grant_ids(cls, value: list[str]) -> list[str]:
        for grant_id in value:
            if not grant_id or len(grant_id) > 128 or not grant_id.isalnum():
                raise ValueError(f"{grant_id[:80]!r} is not a grant id")
        return value


class RevokeGrants(Action[RevokeGrantsParams]):
    """Revoke grants on a key by id. Irreversible: a revoked grant cannot be restored.

    ```yaml
    - id: revoke
      action: kms.revoke-grants
      with:
        key: "{{ steps.snapshot.key_id }}"
        grant_ids: "{{ steps.snapshot.external_grant_ids }}"
    ```
    A grant that is already gone is recorded as such, not as an error.
    """

    name = "kms.revoke-grants"
    params = RevokeGrantsParams
    permissions = ("kms:DescribeKey", "kms:ListGrants", "kms:RevokeGrant")
    mutating = True
    inverse = IRREVERSIBLE

    def api_calls(self, params: RevokeGrantsParams) -> list[str]:
        return [f"kms:RevokeGrant KeyId={params.key} GrantId={g}" for g in params.grant_ids]

    def preview(self, ctx: ActionContext, params: RevokeGrantsParams) -> Preview:
        info = describe(ctx, params.key)
        refuse_aws_managed(info, self.name)
        current = {g["GrantId"]: g for g in list_all_grants(ctx, info.key_id)}
        notes = []
        for grant_id in params.grant_ids:
            grant = current.get(grant_id)
            if grant is None:
                notes.append(f"grant {grant_id}: already gone")
            else:
                ops = ",".join(grant.get("Operations", []))
                notes.append(
                    f"grant {grant_id} ({grant.get('Name') or 'unnamed'}): "
                    f"{grant.get('GranteePrincipal')} may {ops}"
                )
        return Preview(
            calls=tuple(
                f"kms:RevokeGrant KeyId={info.key_id} GrantId={g}"
                for g in params.grant_ids
                if g in current
            ),
            target=f"{info.key_id} ({info.arn})",
            state=f"key state {info.state}, {len(current)} grant(s)",
            typed=(info.key_id, *key_aliases(ctx, info.key_id)),
            notes=tuple(notes),
        )

    def run(self, ctx: ActionContext, params: RevokeGrantsParams) -> Outcome:
        info = describe(ctx, params.key)
        refuse_aws_managed(info, self.name)
        before = list_all_grants(ctx, info.key_id)
        ctx.write_json("grants-before.json", {"Grants": before})
        current = {g["GrantId"] for g in before}
        kms = ctx.clients.client("kms")
        revoked, gone = [], []
        for grant_id in params.grant_ids:
            if grant_id not in current:
                gone.append(grant_id)
                continue
            try:
                with aws_errors(f"RevokeGrant {grant_id} on {info.key_id}"):
                    kms.revoke_grant(KeyId=info.key_id, GrantId=grant_id)
            except ActionError as exc:
                if getattr(exc, "code", "") != "NotFoundException":
                    raise
                gone.append(grant_id)  # revoked by someone else in the meantime
                continue
            revoked.append(grant_id)
        remaining = [g["GrantId"] for g in list_all_grants(ctx, info.key_id)]
        left = sorted(set(revoked) & set(remaining))
        if left:
            raise ActionError(f"grants still present after RevokeGrant: {', '.join(left)}")
        parts = [
            f"revoked {len(revoked)} grant(s)" + (f": {', '.join(revoked)}" if revoked else "")
        ]
        if gone:
            parts.append(f"already gone: {', '.join(gone)}")
        return Outcome(
            outputs={
                "key_id": info.key_id,
                "revoked": revoked,
                "already_gone": gone,
                "remaining_grant_ids": remaining,
            },
            summary="; ".join(parts),
            status="succeeded" if revoked or not params.grant_ids else "already",
            before={"key_id": info.key_id, "grants": sorted(current)},
            after={"key_id": info.key_id, "grants": sorted(remaining)},
        )


def _strip_metadata(response: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in response.items() if k != "ResponseMetadata"}


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return str(value.isoformat()) if hasattr(value, "isoformat") else str(value)


def _snake(operation: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in operation).lstrip("_")

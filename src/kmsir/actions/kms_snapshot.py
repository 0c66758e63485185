"""``kms.snapshot``: preserve the state of one key, a list of keys, or every key in the Region.

For each key: DescribeKey, every key policy, all grants, aliases and tags (paginated),
rotation status with period and next date, the key's rotations, where its material comes from
(origin; for imported material its expiration model, ``ValidTo`` and key material ids), the
custom key store it lives in (DescribeCustomKeyStores: type and connection state), and for
multi-Region keys the primary and every replica, each read in its own Region (its own policy,
grants and aliases). Artifacts are the raw API
responses, one JSON file each, written as soon as they are read: memory stays bounded for
thousands of keys, which are snapshotted concurrently by a bounded thread pool.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

from kmsir.actions.base import Action, ActionContext, Outcome, Params, permitted_calls
from kmsir.actions.kmskeys import (
    KeyInfo,
    check_key_reference,
    describe,
    grantee_account,
    iso,
    list_all,
    list_all_grants,
    region_of,
    strip_metadata,
)
from kmsir.aws import aws_errors, redacted
from kmsir.errors import Aborted, ActionError, EvidenceError, KmsirError, MissingAnswer
from kmsir.evidence.calls import Call

if TYPE_CHECKING:
    from kmsir.aws.targets import Target

#: Keys snapshotted at once; each makes about eight sequential calls.
WORKERS = 16
MAX_KEYS = 100_000


class SnapshotParams(Params):
    """One key (``key``), a list (``keys``), or every key in the Region (``all: true``)."""

    key: str | None = None
    keys: list[str] | None = Field(default=None, min_length=1, max_length=MAX_KEYS)
    all: bool = False

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        return None if value is None else check_key_reference(value)

    @field_validator("keys")
    @classmethod
    def _keys(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [check_key_reference(k) for k in value]

    @model_validator(mode="after")
    def _exactly_one(self) -> SnapshotParams:
        chosen = [self.key is not None, self.keys is not None, self.all]
        if sum(chosen) != 1:
            raise ValueError("give exactly one of key, keys or all: true")
        return self


class Snapshot(Action[SnapshotParams]):
    """Preserve keys' current state: metadata, policies, grants, aliases, tags, rotation.

    ```yaml
    - id: snapshot
      action: kms.snapshot
      with: {key: "{{ inputs.key }}"}     # or keys: [...], or all: true
    ```
    Outputs for one key: ``key_id``, ``arn``, ``account``, ``region``, ``state``,
    ``key_manager`` (CUSTOMER/AWS), ``origin``, ``multi_region`` (PRIMARY/REPLICA or null),
    ``primary_arn``, ``replicas``, ``deletion_date``, ``valid_to`` and ``expiration_model``
    (imported material), ``key_material_ids``, ``key_store`` (``id``, ``name``, ``type``,
    ``connection_state``; null outside a custom key store), ``aliases``, ``grants``,
    ``grant_ids``, ``external_grant_ids`` (grantees outside the key's account),
    ``rotation_enabled``, ``rotation_period_days``, ``next_rotation_date``, ``rotations``,
    ``tags``, ``policies`` (name -> policy) and ``policy`` (the default one).
    For several keys: ``count``, ``keys`` (one summary each), ``external_grants``
    (key id -> grant ids) and ``failed`` (key -> error). With ``all: true`` in a run over
    several accounts and Regions, every one of them is snapshotted (artifacts under
    ``<account>/<region>/``), each key's summary names its ``account`` and ``region``, and
    ``targets`` says which were reached and why others were not.
    """

    name = "kms.snapshot"
    params = SnapshotParams
    # key: all but the last four; keys or all: the last four
    outputs = MappingProxyType(
        {
            "key_id": "str",
            "arn": "str",
            "account": "str",
            "region": "str",
            "state": "str",
            "key_manager": "str",
            "origin": "str",
            "key_spec": "str",
            "multi_region": "str|null",
            "primary_arn": "str|null",
            "replicas": "list[dict]",
            "deletion_date": "str|null",
            "valid_to": "str|null",
            "expiration_model": "str|null",
            "key_material_ids": "list[str]",
            "key_store": "dict|null",
            "aliases": "list[str]",
            "grants": "list[dict]",
            "grant_ids": "list[str]",
            "external_grant_ids": "list[str]",
            "rotation_enabled": "bool|null",
            "rotation_period_days": "int|null",
            "next_rotation_date": "str|null",
            "rotations": "int",
            "tags": "dict",
            "policies": "dict",
            "policy": "dict|null",
            "count": "int",
            "keys": "list[dict]",
            "external_grants": "dict",
            "failed": "dict",
            "targets": "list[dict]",
        }
    )
    permissions = (
        "kms:ListKeys",  # all: true only
        "kms:DescribeKey",
        "kms:ListKeyPolicies",
        "kms:GetKeyPolicy",
        "kms:ListGrants",
        "kms:ListAliases",
        "kms:ListResourceTags",
        "kms:GetKeyRotationStatus",
        "kms:ListKeyRotations",
        "kms:DescribeCustomKeyStores",  # keys in a custom key store only
    )

    def permissions_for(self, params: SnapshotParams) -> tuple[str, ...]:
        return tuple(p for p in self.permissions if params.all or p != "kms:ListKeys")

    def api_calls(self, params: SnapshotParams) -> list[Call]:
        return permitted_calls(self.permissions_for(params))

    def fans_out(self, params: SnapshotParams, steps: Mapping[str, Any]) -> bool:
        return params.all

    def merge(
        self,
        ctx: ActionContext,
        results: Mapping[Target, Outcome],
        failed: Mapping[Target, str],
    ) -> Outcome:
        """Every target's keys in one list (each with its ``account`` and ``region``)."""
        from kmsir.actions.merges import snapshots

        return snapshots(results)

    def run(self, ctx: ActionContext, params: SnapshotParams) -> Outcome:
        if params.key is not None:
            outputs = snapshot_key(ctx, params.key, prefix="")
            summary = (
                f"{outputs['key_id']} ({', '.join(outputs['aliases']) or 'no alias'}): "
                f"{outputs['state']}, {len(outputs['grant_ids'])} grant(s), "
                f"{len(outputs['external_grant_ids'])} to outside accounts"
            )
            after = {k: outputs[k] for k in ("key_id", "state", "deletion_date")}
            return Outcome(outputs=outputs, summary=summary, after=after)
        if params.keys is not None:
            references = list(dict.fromkeys(params.keys))
        else:
            references = [k["KeyId"] for k in list_all(ctx, "ListKeys", "Keys")]
        return self._many(ctx, references)

    @staticmethod
    def _many(ctx: ActionContext, references: list[str]) -> Outcome:
        summaries: dict[str, dict[str, Any]] = {}
        failed: dict[str, str] = {}
        total = len(references)
        ctx.reporter.progress("keys", 0, total)

        started: set[str] = set()
        lock = threading.Lock()

        def one(reference: str) -> dict[str, Any] | None:
            info = describe(ctx, reference)
            with lock:  # the same key named twice (id, alias, ARN) is snapshotted once
                if info.key_id in started:
                    return None
                started.add(info.key_id)
            return _summary(snapshot_key(ctx, reference, prefix=f"{info.key_id}/", info=info))

        pool = ThreadPoolExecutor(max_workers=min(WORKERS, max(total, 1)))
        try:
            futures = {pool.submit(one, reference): reference for reference in references}
            for future in as_completed(futures):
                reference = futures[future]
                try:
                    done = future.result()
                except (EvidenceError, Aborted, MissingAnswer):
                    raise  # the run stops, not just this key
                except KmsirError as exc:  # one key's failure does not lose the others
                    failed[reference] = str(exc)
                else:
                    if done is not None:
                        summaries[done["key_id"]] = done
                ctx.reporter.progress("keys", len(summaries) + len(failed), total)
        except BaseException:
            # Ctrl-C, or an error that stops the run: the keys not started never start
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
        ordered = [summaries[k] for k in sorted(summaries)]
        external_grants = {
            s["key_id"]: s["external_grant_ids"] for s in ordered if s["external_grant_ids"]
        }
        outputs = {
            "count": len(ordered),
            "keys": ordered,
            "external_grants": external_grants,
            "failed": failed,
        }
        external = sum(len(v) for v in external_grants.values())
        summary = f"{len(ordered)} key(s) snapshotted, {external} grant(s) to outside accounts"
        if failed:
            summary += f", {len(failed)} failed ({next(iter(failed.values()))[:120]})"
        return Outcome(outputs=outputs, summary=summary)


def _summary(outputs: dict[str, Any]) -> dict[str, Any]:
    """The few facts kept in memory per key when many are snapshotted."""
    keep = (
        "key_id",
        "arn",
        "state",
        "key_manager",
        "origin",
        "multi_region",
        "aliases",
        "external_grant_ids",
        "rotation_enabled",
        "rotation_period_days",
        "deletion_date",
        "valid_to",
        "expiration_model",
        "key_store",
    )
    return {**{k: outputs[k] for k in keep}, "grant_count": len(outputs["grant_ids"])}


def snapshot_key(
    ctx: ActionContext, reference: str, *, prefix: str, info: KeyInfo | None = None
) -> dict[str, Any]:
    """Snapshot one key into artifacts named ``<prefix><file>``; return its outputs."""
    info = info or describe(ctx, reference)
    ctx.write_json(f"{prefix}key.json", {"KeyMetadata": info.metadata})
    policies = _policies(ctx, info, prefix=prefix, label="")
    grants = list_all_grants(ctx, info.key_id, region=info.region)
    ctx.write_json(f"{prefix}grants.json", {"Grants": grants})
    aliases = list_all(ctx, "ListAliases", "Aliases", info.key_id, region=info.region)
    ctx.write_json(f"{prefix}aliases.json", {"Aliases": aliases})
    tags = list_all(ctx, "ListResourceTags", "Tags", info.key_id, region=info.region)
    ctx.write_json(f"{prefix}tags.json", {"Tags": tags})
    rotation = _rotation(ctx, info, prefix)
    materials = [info.metadata.get("CurrentKeyMaterialId"), *rotation.pop("material_ids")]
    replicas = [_related(ctx, arn, prefix) for arn in info.related_arns]
    summary_grants = [_grant_summary(g) for g in grants]
    external = [
        g["id"]
        for g in summary_grants
        if g["grantee_account"] is not None and g["grantee_account"] != info.account
    ]
    return {
        "key_id": info.key_id,
        "arn": info.arn,
        "account": info.account,
        "region": info.region,
        "state": info.state,
        "key_manager": info.key_manager,
        "origin": info.origin,
        "key_spec": info.key_spec,
        "multi_region": info.multi_region_role,
        "primary_arn": info.primary_arn if info.multi_region_role else None,
        "replicas": replicas,
        "deletion_date": info.deletion_date,
        "valid_to": info.valid_to,
        "expiration_model": info.metadata.get("ExpirationModel"),
        "key_material_ids": [str(m) for m in dict.fromkeys(materials) if m],
        "key_store": _key_store(ctx, info, prefix),
        "aliases": [a["AliasName"] for a in aliases],
        "grants": summary_grants,
        "grant_ids": [g["id"] for g in summary_grants],
        "external_grant_ids": external,
        **rotation,
        "tags": {t["TagKey"]: t["TagValue"] for t in tags},
        "policies": policies,
        "policy": policies.get("default"),
    }


def _policies(ctx: ActionContext, info: KeyInfo, *, prefix: str, label: str) -> dict[str, Any]:
    """Every key policy (today AWS has only ``default``), one artifact per policy."""
    kms = ctx.clients.client("kms", info.region)
    names = [
        str(n)
        for n in list_all(ctx, "ListKeyPolicies", "PolicyNames", info.key_id, region=info.region)
    ]
    policies: dict[str, Any] = {}
    for name in names:
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ActionError(f"key {info.key_id} has a policy name kmsir cannot store: {name!r}")
        with aws_errors(f"GetKeyPolicy {name} on {info.key_id}"):
            response = strip_metadata(kms.get_key_policy(KeyId=info.key_id, PolicyName=name))
        ctx.write_json(f"{prefix}{label}policy-{name}.json", response)
        policies[name] = json.loads(response["Policy"])
    return policies


def _rotation(ctx: ActionContext, info: KeyInfo, prefix: str) -> dict[str, Any]:
    if not info.rotatable:
        return {
            "rotation_enabled": None,
            "rotation_period_days": None,
            "next_rotation_date": None,
            "rotations": 0,
            "material_ids": [],
        }
    kms = ctx.clients.client("kms", info.region)
    with aws_errors(f"GetKeyRotationStatus on {info.key_id}"):
        status = strip_metadata(kms.get_key_rotation_status(KeyId=info.key_id))
    ctx.write_json(f"{prefix}rotation.json", status)
    rotations = list_all(ctx, "ListKeyRotations", "Rotations", info.key_id, region=info.region)
    ctx.write_json(f"{prefix}rotations.json", {"Rotations": rotations})
    return {
        "rotation_enabled": status.get("KeyRotationEnabled"),
        "rotation_period_days": status.get("RotationPeriodInDays"),
        "next_rotation_date": iso(status.get("NextRotationDate")),
        "rotations": len(rotations),
        "material_ids": [r["KeyMaterialId"] for r in rotations if r.get("KeyMaterialId")],
    }


def _related(ctx: ActionContext, arn: str, prefix: str) -> dict[str, Any]:
    """The primary or a replica of a multi-Region key, in its own Region."""
    region = region_of(arn)
    info = describe(ctx, arn, region=region)
    label = f"{info.multi_region_role or 'related'}-{region}-".lower()
    ctx.write_json(f"{prefix}{label}key.json", {"KeyMetadata": info.metadata})
    _policies(ctx, info, prefix=prefix, label=label)
    grants = list_all_grants(ctx, info.key_id, region=region)
    ctx.write_json(f"{prefix}{label}grants.json", {"Grants": grants})
    aliases = list_all(ctx, "ListAliases", "Aliases", info.key_id, region=region)
    ctx.write_json(f"{prefix}{label}aliases.json", {"Aliases": aliases})
    return {
        "arn": arn,
        "region": region,
        "role": info.multi_region_role,
        "state": info.state,
        "grant_ids": [g.get("GrantId") for g in grants],
        "aliases": [a["AliasName"] for a in aliases],
    }


def _key_store(ctx: ActionContext, info: KeyInfo, prefix: str) -> dict[str, Any] | None:
    """The custom key store the key lives in (CloudHSM or external), as
    DescribeCustomKeyStores reports it; ``None`` for a key outside any."""
    store_id = info.metadata.get("CustomKeyStoreId")
    if not store_id:
        return None
    kms = ctx.clients.client("kms", info.region)
    with aws_errors(f"DescribeCustomKeyStores {store_id} for {info.key_id}"):
        response = strip_metadata(kms.describe_custom_key_stores(CustomKeyStoreId=store_id))
    # an external store's XksProxyConfiguration.AccessKeyId is marked sensitive by botocore's
    # model: kept as the journal keeps sensitive request parameters, by its size only
    shape = kms.meta.service_model.operation_model("DescribeCustomKeyStores").output_shape
    ctx.write_json(f"{prefix}key-store.json", redacted(response, shape))
    found = response.get("CustomKeyStores") or []
    store = found[0] if found else {}
    return {
        "id": str(store_id),
        "name": store.get("CustomKeyStoreName"),
        # AWS leaves the type out for CloudHSM key stores created before external ones existed
        "type": store.get("CustomKeyStoreType", "AWS_CLOUDHSM"),
        "connection_state": store.get("ConnectionState"),
    }


def _grant_summary(grant: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": grant.get("GrantId"),
        "name": grant.get("Name") or "",
        "grantee": grant.get("GranteePrincipal", ""),
        "grantee_account": grantee_account(str(grant.get("GranteePrincipal", ""))),
        "retiring": grant.get("RetiringPrincipal"),
        "operations": list(grant.get("Operations", [])),
        "constraints": grant.get("Constraints"),
        "created": iso(grant.get("CreationDate")),
        "issuer": grant.get("IssuingAccount"),
    }

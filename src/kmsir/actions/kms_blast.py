"""``kms.blast-radius``: who and what loses access under each containment option (read-only).

Before a key is disabled, quarantined, scheduled for deletion or has grants revoked, the
responder needs to know what breaks: the grants by grantee, the key policy's principals,
the aliases, a multi-Region key's other Regions, the recent callers of a collect step's
events and the resources their encryption contexts name (``kms_blast_who``), and the
resources configured with the key that no recent call shows, found by listing them
(``kms_blast_enum``). From these, one plain line per containment option (``verdicts``) and
per grant (``grants``); ``containment_verdict`` picks the line for a containment step's
preview. Full details go to ``blast-radius.json``.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from pydantic import Field

from kmsir.actions.base import Action, ActionContext, Outcome
from kmsir.actions.kms_blast_enum import LISTINGS, KeyNames, configured
from kmsir.actions.kms_blast_verdict import dependents, grant_lines, names, summary, verdicts
from kmsir.actions.kms_blast_who import callers, grant_views, label, policy_principals
from kmsir.actions.kmskeys import KeyInfo, KeyParams, describe, list_all, list_all_grants, region_of
from kmsir.aws import aws_errors
from kmsir.errors import ActionError, AwsError
from kmsir.evidence.calls import Call
from kmsir.keypolicy import principal_arn
from kmsir.trail.events import decode_event

#: Dependents listed in the step's outputs (the artifact holds them all).
MAX_DEPENDENTS = 100


class BlastParams(KeyParams):
    """The key, and optionally the id of an earlier ``cloudtrail.collect`` step."""

    events: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]*(-[a-z0-9_]+)*$")


class BlastRadius(Action[BlastParams]):
    """Who and what loses access under each containment option (reads only).

    ```yaml
    - id: blast
      action: kms.blast-radius
      with: {key: "{{ steps.snapshot.key_id }}", events: collect}
    ```
    Outputs: ``key_id``, ``arn``, ``region``, ``state``, ``multi_region``,
    ``replica_regions``, ``aliases``, ``verdicts`` (``disable``, ``schedule-deletion``,
    ``quarantine``, ``revoke-grants``: one line each), ``grants`` (grant id -> one line),
    ``grantees``, ``callers`` (recent, from the events), ``dependents`` (``kind``, ``name``,
    ``via``, ``note``), ``unchecked`` (listings that failed: ``service``, ``operation``,
    ``error``), ``cut`` (where a listing was bounded), ``summary``, ``artifact``.
    """

    name = "kms.blast-radius"
    params = BlastParams
    outputs = MappingProxyType(
        {
            "key_id": "str",
            "arn": "str",
            "region": "str",
            "state": "str",
            "multi_region": "str|null",
            "replica_regions": "list[str]",
            "aliases": "list[str]",
            "verdicts": "dict",
            "grants": "dict",
            "grantees": "list[dict]",
            "callers": "list[dict]",
            "dependents": "list[dict]",
            "unchecked": "list[dict]",
            "cut": "list[str]",
            "summary": "str",
            "artifact": "str",
        }
    )
    permissions = (
        "kms:DescribeKey",
        "kms:ListAliases",
        "kms:ListGrants",
        "kms:GetKeyPolicy",
        *(p for _, _, permissions, _ in LISTINGS for p in permissions),
    )

    def api_calls(self, params: BlastParams) -> list[Call]:
        reads = ("DescribeKey", "ListAliases", "ListGrants", "GetKeyPolicy")
        calls = [Call(service="kms", operation=o, params={"KeyId": params.key}) for o in reads]
        calls += [Call(service=s, operation=o, note="pages, bounded") for s, o, _, _ in LISTINGS]
        return [
            *calls,
            Call(service="s3", operation="GetBucketEncryption", note="each bucket, bounded"),
            Call(service="dynamodb", operation="DescribeTable", note="each table, bounded"),
        ]

    def run(self, ctx: ActionContext, params: BlastParams) -> Outcome:
        info = describe(ctx, params.key)
        aliases = [
            str(a["AliasName"])
            for a in list_all(ctx, "ListAliases", "Aliases", info.key_id, region=info.region)
        ]
        grants = grant_views(list_all_grants(ctx, info.key_id, region=info.region), info.account)
        unchecked: list[dict[str, Any]] = []
        policy = _policy(ctx, info, unchecked)
        found_callers, context_resources = callers(_events(ctx, params.events), info.account)
        names = KeyNames(info.key_id, info.arn, tuple(aliases))
        listing = configured(ctx, info.region, names)
        unchecked += listing.unchecked
        if info.related_arns:
            listing.cut.append(
                f"resources were listed in {info.region} only, not in the key's other Regions"
            )
        facts: dict[str, Any] = {
            "key_id": info.key_id,
            "arn": info.arn,
            "account": info.account,
            "region": info.region,
            "state": info.state,
            "multi_region": info.multi_region_role,
            "primary_region": region_of(info.primary_arn) if info.primary_arn else None,
            "replica_regions": sorted({region_of(a) for a in info.replica_arns if a != info.arn}),
            "aliases": aliases,
            "grants": grants,
            "policy_principals": policy_principals(policy, info.account),
            "callers": found_callers,
            "context_resources": context_resources,
            "configured": listing.dependents,
            "unchecked": unchecked,
            "cut": listing.cut,
            "events_step": params.events,
        }
        now = ctx.now()
        facts["verdicts"] = verdicts(facts, now)
        facts["grant_verdicts"] = grant_lines(facts, now)
        facts["dependents"] = dependents(facts, now)
        path = ctx.write_json("blast-radius.json", facts)
        text = summary(facts)
        outputs = {
            "key_id": info.key_id,
            "arn": info.arn,
            "region": info.region,
            "state": info.state,
            "multi_region": info.multi_region_role,
            "replica_regions": facts["replica_regions"],
            "aliases": aliases,
            "verdicts": facts["verdicts"],
            "grants": facts["grant_verdicts"],
            "grantees": [
                {k: g[k] for k in ("id", "grantee", "who", "kind")} for g in grants[:MAX_DEPENDENTS]
            ],
            "callers": [
                {k: c[k] for k in ("principal", "who", "account", "calls", "failed", "last_seen")}
                for c in found_callers
            ],
            "dependents": facts["dependents"][:MAX_DEPENDENTS],
            "unchecked": unchecked,
            "cut": facts["cut"],
            "summary": text,
            "artifact": path,
        }
        return Outcome(outputs=outputs, summary=text)


def _policy(ctx: ActionContext, info: KeyInfo, unchecked: list[dict[str, Any]]) -> Any:
    """The key's default policy, or ``None`` (listed as unchecked) when it cannot be read."""
    kms = ctx.clients.client("kms", info.region)
    try:
        with aws_errors(f"GetKeyPolicy on {info.key_id}"):
            return json.loads(kms.get_key_policy(KeyId=info.key_id, PolicyName="default")["Policy"])
    except AwsError as exc:
        unchecked.append({"service": "kms", "operation": "GetKeyPolicy", "error": exc.code})
        return None


def _events(ctx: ActionContext, step: str | None) -> list[dict[str, Any]]:
    """The events an earlier collect step kept (none without ``events``)."""
    if step is None:
        return []
    # a collect that fanned out kept one file per account and Region: all of them, one stream
    data = b"".join(ctx.earlier_everywhere(step, "events.jsonl.gz")) or None
    if data is None:
        raise ActionError(f"step {step!r} collected no events.jsonl.gz")
    found = []
    for line in gzip.decompress(data).splitlines():
        event = decode_event(line) if line.strip() else None
        if isinstance(event, dict):  # a malformed line is the collect step's to report
            found.append(event)
    return found


# -- the verdict a containment step shows ---------------------------------------------------


def containment_verdict(
    outputs: Mapping[str, Any], action: str, params: Mapping[str, Any]
) -> str | None:
    """The blast-radius line for a containment step (``action`` run with ``params``), from
    a ``kms.blast-radius`` step's ``outputs``; ``None`` when it has nothing to say."""
    lines = outputs.get("verdicts") or {}
    every = bool(params.get("replicas"))
    option = {
        "kms.disable-key": "disable",
        "kms.schedule-deletion": "schedule-deletion",
        "kms.quarantine": "quarantine",
    }.get(action)
    if option is not None:
        found = lines.get(f"{option}-all-regions") if every else None
        return found or lines.get(option)
    if action in ("kms.revoke-grants", "kms.retire-grants"):  # both remove the grant
        ids = params.get("grant_ids")
        if isinstance(ids, list) and ids:
            grants = outputs.get("grants") or {}
            return "; ".join(
                grants.get(str(g))
                or f"revoke grant {g}: not on the key when the blast radius was read"
                for g in ids
            )
        return lines.get("revoke-grants")
    if action == "kms.deny-principals":
        return _denied(outputs, params.get("principals"))
    return None


def _denied(outputs: Mapping[str, Any], principals: Any) -> str | None:
    """Who of ``principals`` (ARNs or account ids) loses access under a targeted Deny."""
    if not isinstance(principals, list) or not principals:
        return None
    callers_seen = outputs.get("callers") or []
    grantees = outputs.get("grantees") or []
    parts = []
    for principal in map(str, principals):
        account = principal.split(":")[4] if principal.endswith(":root") else None
        account = principal if principal.isdigit() else account

        def matches(arn: str, owner: Any, p: str = principal, a: str | None = account) -> bool:
            return owner == a if a else principal_arn(arn) == principal_arn(p)

        calls = [c for c in callers_seen if matches(str(c.get("principal")), c.get("account"))]
        grants = [
            str(g.get("id"))[:8]
            for g in grantees
            if matches(str(g.get("grantee")), _account(str(g.get("grantee"))))
        ]
        seen = [f"{sum(int(c.get('calls') or 0) for c in calls)} calls"] if calls else []
        seen += [f"grant {g}" for g in grants]
        who = account or label(principal, "")
        parts.append(
            f"{who} ({', '.join(seen)})" if seen else f"{who} (no recent call or grant seen)"
        )
    verb = "loses" if len(parts) == 1 else "lose"
    return f"deny-principals: {names(parts)} {verb} access; everyone else keeps it"


def _account(arn: str) -> str | None:
    parts = arn.split(":")
    return parts[4] if len(parts) > 4 and parts[0] == "arn" and parts[4] else None

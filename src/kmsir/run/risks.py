"""Open risks: what a run leaves open, read again at its end.

A playbook can do everything that was decided and still leave the attacker a way in: the
outside grant nobody chose to revoke, a deletion the attacker scheduled after the last
snapshot, the replica in another Region, the role whose sessions still work. So the run ends
with a read-only re-read of every key it touched (``DescribeKey``, ``ListGrants``; each
call journaled like any other) and a list of what stays open, which the summary, the report
and ``kmsir status`` show. The run's status is unchanged (the playbook did what was decided):
it "succeeded with open risks".

``reread`` talks to AWS; ``assess`` is a pure function of the run's view and what was re-read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kmsir.aws import ClientFactory
from kmsir.errors import KmsirError
from kmsir.evidence.view import RunView

#: Keys re-read at the end of a run (a run touches one or a few; a list input may name more).
MAX_KEYS = 20
#: Grants read per key (a key holds at most 50,000; the risk is "any outside grant left").
MAX_GRANTS = 1000
#: Severities of findings whose actor must be contained.
SEVERE = ("critical", "high")
#: Principal types IAM in this account can contain.
CONTAINABLE = ("AssumedRole", "IAMUser", "Role")
#: States in which a key is on its way to deletion.
PENDING = ("PendingDeletion", "PendingReplicaDeletion")


@dataclass
class KeyState:
    """One key as it stood when the run ended."""

    ref: str
    key_id: str | None = None
    arn: str | None = None
    account: str | None = None
    region: str | None = None
    state: str | None = None
    deletion_date: str | None = None
    multi_region_role: str | None = None
    outside_grants: list[dict[str, Any]] = field(default_factory=list)
    #: Replicas of a multi-Region primary: ``{"arn", "region", "state"}``.
    replicas: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def record(self) -> dict[str, Any]:
        """The key as the ``open-risks`` entry records it."""
        return {k: v for k, v in vars(self).items() if v not in (None, [])}


def keys_touched(view: RunView) -> list[str]:
    """The keys the run's KMS steps named, in the order first named (a snapshot's ARN rather
    than the alias it was given, so an alias moved since still finds the key)."""
    found: list[str] = []
    for step in view.steps.values():
        if not step.action.startswith("kms.") or step.params is None:
            continue
        named = step.outputs.get("arn") if step.done_ok else None
        ref = named if isinstance(named, str) and named else step.params.get("key")
        if isinstance(ref, str) and ref and ref not in found:
            found.append(ref)
    return found[:MAX_KEYS]


def reread(clients: ClientFactory, refs: Iterable[str]) -> list[KeyState]:
    """Read each key again (state, deletion date, replicas, grants to outside accounts); a
    key that cannot be read says why instead."""
    states: dict[str, KeyState] = {}
    for ref in refs:
        state = _read_key(clients, ref)
        if state.key_id is None or state.key_id not in states:
            states[state.key_id or ref] = state
    return list(states.values())


def _read_key(clients: ClientFactory, ref: str) -> KeyState:
    from botocore.exceptions import BotoCoreError, ClientError

    state = KeyState(ref=ref)
    region = ref.split(":")[3] if ref.startswith("arn:") else None
    try:
        kms = clients.client("kms", region)
        metadata = kms.describe_key(KeyId=ref)["KeyMetadata"]
        arn = str(metadata["Arn"])
        state.key_id, state.arn = str(metadata["KeyId"]), arn
        state.account, state.region = arn.split(":")[4], arn.split(":")[3]
        state.state = str(metadata.get("KeyState", "Unknown"))
        deletion = metadata.get("DeletionDate")
        state.deletion_date = _iso(deletion) if deletion is not None else None
        config = metadata.get("MultiRegionConfiguration") or {}
        if metadata.get("MultiRegion"):
            state.multi_region_role = config.get("MultiRegionKeyType")
        for replica in (
            config.get("ReplicaKeys", []) if state.multi_region_role == "PRIMARY" else []
        ):
            state.replicas.append(_replica(clients, str(replica.get("Arn", ""))))
        kms = clients.client("kms", state.region)
        grants: list[Any] = []
        for page in kms.get_paginator("list_grants").paginate(KeyId=state.key_id):
            grants.extend(page.get("Grants", []))
            if len(grants) >= MAX_GRANTS:
                break
        for grant in grants[:MAX_GRANTS]:
            grantee = str(grant.get("GranteePrincipal", ""))
            account = _account(grantee)
            if account is not None and account != state.account:
                state.outside_grants.append(
                    {
                        "grant_id": str(grant.get("GrantId", "")),
                        "grantee": grantee,
                        "account": account,
                        "operations": [str(o) for o in grant.get("Operations", [])],
                    }
                )
    except (ClientError, BotoCoreError, KmsirError) as exc:
        state.error = _error(exc)
    return state


def _replica(clients: ClientFactory, arn: str) -> dict[str, Any]:
    from botocore.exceptions import BotoCoreError, ClientError

    region = arn.split(":")[3] if arn.count(":") >= 5 else None
    found: dict[str, Any] = {"arn": arn, "region": region}
    try:
        metadata = clients.client("kms", region).describe_key(KeyId=arn)["KeyMetadata"]
        found["state"] = str(metadata.get("KeyState", "Unknown"))
    except (ClientError, BotoCoreError, KmsirError) as exc:
        found["error"] = _error(exc)
    return found


def assess(
    view: RunView,
    keys: list[KeyState],
    phases: Mapping[str, str | None],
    mutating: Callable[[str], bool],
) -> list[dict[str, Any]]:
    """What the run leaves open. ``phases``: each playbook step's phase, by step id;
    ``mutating``: whether an action changes anything. Each risk: ``kind``, ``text`` and,
    where it has one, the ``key`` and the date ``until`` which it can still be undone."""
    risks: list[dict[str, Any]] = []
    changed = {
        s.id for s in view.steps.values() if s.done_ok and s.mutating and s.status == "succeeded"
    }
    for key in keys:
        risks.extend(_key_risks(key, view, changed))
    contained = [
        s.id
        for s in view.steps.values()
        if s.done_ok and s.mutating and phases.get(s.id) == "containment"
    ]
    containment = [
        i for i, p in phases.items() if p == "containment" and mutating(_action(view, i))
    ]
    if containment and not contained:
        risks.append(
            {
                "kind": "no-containment",
                "text": "no containment was chosen: every containment step was skipped or "
                "failed (" + ", ".join(containment) + ")",
            }
        )
    risks.extend(_actor_risks(view, keys))
    risks.extend(_evidence_gaps(view))
    return risks


def _action(view: RunView, step_id: str) -> str:
    step = view.steps.get(step_id)
    return step.action if step is not None else ""


def _key_risks(key: KeyState, view: RunView, changed: set[str]) -> list[dict[str, Any]]:
    name = key.key_id or key.ref
    if key.error is not None:
        return [
            {
                "kind": "key-unknown",
                "key": name,
                "text": f"key {name} could not be read again at the end of the run "
                f"({key.error}): its final state is unknown",
            }
        ]
    risks: list[dict[str, Any]] = []
    for grant in key.outside_grants:
        risks.append(
            {
                "kind": "outside-grant",
                "key": name,
                "text": f"grant {grant['grant_id']} on key {name} to {grant['grantee']} "
                f"(outside account {grant['account']}: "
                f"{', '.join(grant['operations']) or 'no operations'}) is still active",
            }
        )
    if key.state in PENDING:
        risks.append(
            {
                "kind": "pending-deletion",
                "key": name,
                "until": key.deletion_date,
                "text": f"key {name} is {key.state}: it will be deleted on "
                f"{key.deletion_date or 'an unknown date'} unless kms.cancel-deletion runs "
                "before then",
            }
        )
    acted = any(
        s.id in changed and s.params is not None and s.params.get("key") in _names(key)
        for s in view.steps.values()
    ) or any(s.id in changed and s.outputs.get("key_id") == key.key_id for s in view.steps.values())
    open_replicas = [r for r in key.replicas if r.get("state") not in ("Disabled", *PENDING)]
    if acted and open_replicas and key.state != "Enabled":
        regions = ", ".join(
            f"{r.get('region')} ({r.get('state', 'unknown')})" for r in open_replicas
        )
        risks.append(
            {
                "kind": "replicas",
                "key": name,
                "text": f"key {name} is a multi-Region primary: the run contained it in "
                f"{key.region} only; its replicas in {regions} still work",
            }
        )
    return risks


def _names(key: KeyState) -> set[Any]:
    return {key.ref, key.key_id, key.arn}


def _actor_risks(view: RunView, keys: list[KeyState]) -> list[dict[str, Any]]:
    findings = [s for s in view.steps.values() if s.action == "cloudtrail.findings" and s.done_ok]
    if not findings:
        return []
    actors = findings[-1].outputs.get("actors")
    accounts = {k.account for k in keys if k.account}
    operator = view.meta.operator.get("account") if view.meta is not None else None
    accounts |= {operator} if isinstance(operator, str) else set()
    targets = _containment_targets(view)
    risks = []
    for actor in actors if isinstance(actors, list) else []:
        if not isinstance(actor, dict) or actor.get("severity") not in SEVERE:
            continue
        if actor.get("type") not in CONTAINABLE or actor.get("account") not in accounts:
            continue  # an outside account: its grants and the key policy are what contain it
        names = {actor.get("principal"), actor.get("role"), actor.get("user")}
        names |= set(actor.get("access_keys") or [])
        if names & targets:
            continue
        who = actor.get("role") or actor.get("user") or actor.get("principal")
        kind = "role" if actor.get("role") else "user"
        risks.append(
            {
                "kind": "actor",
                "text": f"{kind} {who} ({actor.get('severity')} findings) was not contained: "
                "its credentials still work",
            }
        )
    return risks


def _containment_targets(view: RunView) -> set[Any]:
    """Who the run's containment steps acted on: user and role names and ARNs, access keys."""
    found: set[Any] = set()
    for step in view.steps.values():
        if not step.done_ok or step.params is None:
            continue
        if not (step.action.startswith("iam.") or step.action == "kms.deny-principals"):
            continue
        for name in ("user", "role", "access_key_id", "principals", "roles"):
            value = step.params.get(name)
            values = value if isinstance(value, list) else [value]
            for item in values:
                if isinstance(item, str) and item:
                    found.add(item)
                    found.add(item.rsplit("/", 1)[-1])  # an ARN names the user or role last
    return found


def _evidence_gaps(view: RunView) -> list[dict[str, Any]]:
    risks = []
    for step in view.steps.values():
        if step.action.startswith("cloudtrail.") and step.outcome == "failed":
            risks.append(
                {
                    "kind": "evidence",
                    "text": f"step {step.id} ({step.action}) failed: the evidence it should "
                    f"have gathered is missing ({step.summary})",
                }
            )
    for moment in view.skipped_input:
        counts = getattr(moment.record, "counts", {}) or {}
        total = sum(v for v in counts.values() if isinstance(v, int))
        if total:
            reasons = ", ".join(f"{n} {why}" for why, n in sorted(counts.items()))
            risks.append(
                {
                    "kind": "evidence",
                    "text": f"step {moment.step}: {total} CloudTrail record(s) were skipped "
                    f"({reasons}): the findings do not cover them",
                }
            )
    return risks


def _account(principal: str) -> str | None:
    parts = principal.split(":")
    if len(parts) > 4 and parts[0] == "arn" and parts[4]:
        return parts[4]
    return principal if len(principal) == 12 and principal.isdigit() else None


def _iso(value: Any) -> str:
    if hasattr(value, "astimezone"):
        from datetime import timezone

        return str(value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return str(value)


def _error(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        return f"{error.get('Code', 'Error')}: {error.get('Message', '')}".strip(": ")[:300]
    return str(exc)[:300]

"""Key policy actions: quarantine, put a policy, restore a policy from evidence.

Each says which policy it wants for the key (``new_policy``); ``policy_change.PolicyChange``
checks that policy for lockout, puts it, and keeps the policy before and after as artifacts,
so ``kms.restore-policy`` can put the "before" one back.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import Field, field_validator

from kmsir.actions.base import ActionContext, Preview
from kmsir.actions.kms_policy_regions import EveryRegion
from kmsir.actions.kmskeys import KeyInfo, KeyParams, ReplicasParams, target
from kmsir.actions.policy_change import PolicyChange, parse_policy, put_policy
from kmsir.errors import ActionError
from kmsir.keypolicy import principal_arn, statements

_STEP_ID = re.compile(r"^[a-z][a-z0-9_]*(-[a-z0-9_]+)*$")


class QuarantineParams(ReplicasParams):
    """The key, the break-glass principals that keep access, the lockout override, and
    ``replicas: true`` to quarantine every Region's key of a multi-Region key."""

    break_glass: list[str] = Field(default_factory=list, max_length=50)
    allow_lockout: bool = False

    @field_validator("break_glass")
    @classmethod
    def _arns(cls, value: list[str]) -> list[str]:
        for arn in value:
            if not re.match(r"^arn:aws[a-z-]*:(iam|sts)::\d{12}:.+", arn):
                raise ValueError(f"{arn[:80]!r} is not an IAM principal ARN")
        return value


class Quarantine(EveryRegion):
    """Deny everyone every KMS action on the key, except the break-glass principals.

    ```yaml
    - id: quarantine
      action: kms.quarantine
      with:
        key: "{{ steps.snapshot.key_id }}"
        break_glass: ["arn:aws:iam::111122223333:role/incident-response"]
    ```
    Adds one explicit Deny (Sid ``kmsir-quarantine-<incident>``, all principals, ``kms:*``,
    exempting the break-glass ARNs with an ``aws:PrincipalArn`` condition, not NotPrincipal).
    Each Region's key of a multi-Region key has its own policy: ``replicas: true`` quarantines
    the primary and every replica (one PutKeyPolicy each, the preview lists the Regions;
    output ``replicas_changed``). Undo with ``kms.restore-policy`` (``from:`` this step, and
    ``replicas: true`` for the replicas).
    """

    name = "kms.quarantine"
    high_impact = True  # a Deny for everyone but break-glass
    params = QuarantineParams
    outputs = MappingProxyType(
        {
            "key_id": "str",
            "restore_from": "str",
            "able_to_manage": "list[str]",
            "replicas_changed": "list[str]",
        }
    )

    def new_policy(
        self, ctx: ActionContext, params: QuarantineParams, current: dict[str, Any], info: KeyInfo
    ) -> dict[str, Any]:
        sid = "kmsir-quarantine-" + re.sub(r"[^A-Za-z0-9-]", "-", ctx.run.incident_id)
        deny: dict[str, Any] = {
            "Sid": sid,
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": "kms:*",
            "Resource": "*",
        }
        if params.break_glass:
            # aws:PrincipalArn of a role session is the role's ARN, not the session's
            exempt = list(dict.fromkeys(principal_arn(arn) for arn in params.break_glass))
            deny["Condition"] = {"ArnNotLike": {"aws:PrincipalArn": exempt}}
        kept = [s for s in statements(current) if s.get("Sid") != sid]
        return {**current, "Statement": [*kept, deny]}


class PutPolicyParams(KeyParams):
    """The key, the policy (a mapping, or the path of a JSON file), the lockout override."""

    policy: dict[str, Any] | str
    allow_lockout: bool = False


class PutPolicy(PolicyChange):
    """Replace the key policy with the one given (a mapping or a JSON file).

    ```yaml
    - id: policy
      action: kms.put-policy
      with: {key: "{{ steps.snapshot.key_id }}", policy: policies/payments-key.json}
    ```
    """

    name = "kms.put-policy"
    high_impact = True  # a policy that leaves out the key's admins locks everyone out
    params = PutPolicyParams
    outputs = MappingProxyType(
        {"key_id": "str", "restore_from": "str", "able_to_manage": "list[str]"}
    )

    def new_policy(
        self, ctx: ActionContext, params: PutPolicyParams, current: dict[str, Any], info: KeyInfo
    ) -> dict[str, Any]:
        if isinstance(params.policy, dict):
            return parse_policy(params.policy, "policy")
        return parse_policy(ctx.artifacts.outside(params.policy), params.policy)


class RestorePolicyParams(ReplicasParams):
    """The key, where the policy comes from (a step of this run or an artifact file), the
    lockout override, and ``replicas: true`` to restore every Region's key of a multi-Region
    key from the same step (its ``<Region>/policy-before.json``)."""

    source: str = Field(alias="from", min_length=1, max_length=4096)
    allow_lockout: bool = False


class RestorePolicy(EveryRegion):
    """Put back a policy kept as evidence: a step of this run, or an artifact of any bundle.

    ```yaml
    - id: restore
      action: kms.restore-policy
      with: {key: "{{ steps.snapshot.key_id }}", from: quarantine}
    ```
    ``from`` is a step id (its ``policy-before.json``, or a snapshot's
    ``policy-default.json``) or the path of such an artifact in another bundle; that
    artifact's hash is checked against its bundle's journal before it is used. With
    ``replicas: true`` each other Region's key gets the policy the same step kept for it
    (``<Region>/policy-before.json`` beside the one named), as ``kms.quarantine`` with
    ``replicas: true`` keeps them.
    """

    name = "kms.restore-policy"
    params = RestorePolicyParams
    outputs = MappingProxyType(
        {
            "key_id": "str",
            "restore_from": "str",
            "able_to_manage": "list[str]",
            "replicas_changed": "list[str]",
        }
    )

    def regional(self, params: Any, key: KeyInfo) -> Any:
        """Another Region's key reads its policy from the ``<Region>/`` folder beside the
        artifact named (a step id: the artifacts of that Region, see ``InRegion``)."""
        source = params.source
        if not _STEP_ID.match(source):
            source = str(Path(source).parent / key.region / Path(source).name)
        return params.model_copy(update={"key": key.arn, "replicas": False, "source": source})

    def one_preview(self, ctx: ActionContext, params: RestorePolicyParams) -> Preview:
        kept = not _STEP_ID.match(params.source) or any(
            ctx.artifacts.earlier(params.source, n) is not None
            for n in ("policy-before.json", "policy-default.json")
        )
        if kept or ctx.run.mode != "check":
            return super().one_preview(ctx, params)
        # In check mode the step that keeps the policy only said what it would do.
        info = target(ctx, params.key, self.name)
        return Preview(
            calls=(put_policy(info.key_id, Policy=f"<the policy step {params.source} keeps>"),),
            target=f"{info.key_id} ({info.arn})",
            state=f"key state {info.state}",
            notes=(f"check mode: step {params.source} did not run, so its policy is not known",),
        )

    def new_policy(
        self,
        ctx: ActionContext,
        params: RestorePolicyParams,
        current: dict[str, Any],
        info: KeyInfo,
    ) -> dict[str, Any]:
        if _STEP_ID.match(params.source):
            for name in _kept_names(info):
                data = ctx.artifacts.earlier(params.source, name)
                if data is not None:
                    # the DescribeKey kept beside it: ``key.json``, ``replica-<Region>-key.json``
                    sibling = ctx.artifacts.earlier(
                        params.source, name.rsplit("policy-", 1)[0] + "key.json"
                    )
                    _check_owner(data, sibling, info, f"step {params.source}")
                    return parse_policy(data, f"step {params.source} {name}")
            raise ActionError(f"step {params.source!r} of this run kept no key policy")
        data = ctx.artifacts.outside(params.source)
        sibling_path = Path(params.source).with_name("key.json")
        sibling = ctx.artifacts.outside(str(sibling_path)) if sibling_path.is_file() else None
        _check_owner(data, sibling, info, params.source)
        return parse_policy(data, params.source)


def _kept_names(info: KeyInfo) -> list[str]:
    """Where a step may have kept the policy of ``info``, most specific first. Every Region's
    key of a multi-Region key has the same key id but a policy of its own: what a step kept
    for this Region's key (a ``replicas: true`` step's ``<Region>/``, a snapshot's
    ``replica-<Region>-``) comes before what it kept for the key it was given. A snapshot
    that fanned out over the run's accounts and Regions kept each key under
    ``<account>/<region>/<key_id>/``: looked at first."""
    names = [f"{info.region}/policy-before.json"] if info.multi_region_role else []
    fanned = f"{info.account}/{info.region}/{info.key_id}/"
    if info.multi_region_role:
        label = f"{info.multi_region_role}-{info.region}-".lower()
        names += [
            f"{fanned}{label}policy-default.json",
            f"{info.key_id}/{label}policy-default.json",
            f"{label}policy-default.json",
        ]
    return [
        *names,
        f"{fanned}policy-default.json",
        f"{info.key_id}/policy-default.json",
        "policy-before.json",
        "policy-default.json",
    ]


def _check_owner(data: bytes, key_json: bytes | None, info: KeyInfo, source: str) -> None:
    """Refuse to restore a policy that evidence shows was another key's."""
    owner: Any = None
    try:
        owner = json.loads(data).get("KeyId")
        if owner is None and key_json is not None:
            owner = json.loads(key_json)["KeyMetadata"]["KeyId"]
    except (ValueError, KeyError, TypeError, AttributeError):
        owner = None
    if owner is None:
        raise ActionError(
            f"{source}: cannot tell which key this policy was kept for; use kms.put-policy "
            "to set a policy from a file"
        )
    if owner != info.key_id:
        raise ActionError(f"{source} kept the policy of key {owner}, not of {info.key_id}")

"""Key policy changes: quarantine, put a policy, restore a policy from evidence.

Every change is checked for lockout first (``keypolicy.who_can``): a policy under which nobody
could call ``kms:PutKeyPolicy`` any more, or under which the caller itself could not, is
refused unless ``allow_lockout: true``. AWS's own check (``BypassPolicyLockoutSafetyCheck``
false) always runs too, except when the playbook explicitly allowed the lockout. The policy before
and after is kept as artifacts, and ``kms.restore-policy`` can put the "before" one back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from kmsir.actions.base import Action, ActionContext, Outcome, Preview
from kmsir.actions.kmskeys import KeyInfo, KeyParams, strip_metadata, target
from kmsir.aws import aws_errors
from kmsir.errors import ActionError, AwsError
from kmsir.evidence.calls import Call
from kmsir.keypolicy import LockoutCheck, principal_arn, statements, who_can

#: AWS's limit for a key policy document.
MAX_POLICY_BYTES = 32 * 1024
_STEP_ID = re.compile(r"^[a-z][a-z0-9_]*(-[a-z0-9_]+)*$")


def _caller(ctx: ActionContext) -> str:
    with aws_errors("GetCallerIdentity", service="sts"):
        return str(ctx.clients.client("sts").get_caller_identity()["Arn"])


def _current_policy(ctx: ActionContext, info: KeyInfo) -> dict[str, Any]:
    with aws_errors(f"GetKeyPolicy on {info.key_id}"):
        response = strip_metadata(
            ctx.clients.client("kms", info.region).get_key_policy(
                KeyId=info.key_id, PolicyName="default"
            )
        )
    return dict(json.loads(response["Policy"]))


def parse_policy(data: bytes | str | dict[str, Any], source: str) -> dict[str, Any]:
    """A policy document from JSON text, a mapping, or a GetKeyPolicy response artifact."""
    value: Any = data
    if isinstance(value, bytes | str):
        if len(value) > 4 * MAX_POLICY_BYTES:
            raise ActionError(f"{source}: too large for a key policy")
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ActionError(f"{source}: not valid JSON ({exc})") from None
    if isinstance(value, dict) and isinstance(value.get("Policy"), str):
        value = json.loads(value["Policy"])  # a GetKeyPolicy response, as snapshots keep it
    if not isinstance(value, dict) or not statements(value):
        raise ActionError(f"{source}: not a key policy (a JSON object with Statement)")
    return value


@dataclass(frozen=True)
class _Plan:
    info: KeyInfo
    before: dict[str, Any]
    after: dict[str, Any]
    check: LockoutCheck
    bypass: bool


class _PolicyChange(Action[Any]):
    """Shared path of the policy actions: compute the new policy, check it, put it."""

    permissions = (
        "kms:DescribeKey",
        "kms:GetKeyPolicy",
        "kms:PutKeyPolicy",
        "sts:GetCallerIdentity",
    )
    mutating = True
    inverse = "kms.restore-policy"

    def new_policy(
        self, ctx: ActionContext, params: Any, current: dict[str, Any], info: KeyInfo
    ) -> dict[str, Any]:
        """The policy this action wants for the key ``info``, given its current one."""
        raise NotImplementedError

    def api_calls(self, params: Any) -> list[Call]:
        return [_put_policy(params.key)]

    def _plan(self, ctx: ActionContext, params: Any) -> _Plan:
        info = target(ctx, params.key, self.name)
        before = _current_policy(ctx, info)
        after = self.new_policy(ctx, params, before, info)
        size = len(json.dumps(after).encode())
        if size > MAX_POLICY_BYTES:
            raise ActionError(f"the new policy is {size:,} bytes; AWS allows {MAX_POLICY_BYTES:,}")
        caller = _caller(ctx)
        check = who_can(after, "kms:PutKeyPolicy", caller_arn=caller)
        # Denies with conditions we cannot evaluate: judge without them, and let AWS's own
        # lockout check (which sees the real request) decide for the caller.
        lenient = who_can(after, "kms:PutKeyPolicy", caller_arn=caller, lenient=True)
        if lenient.locked_out and not params.allow_lockout:
            raise ActionError(
                f"{self.name} refused on {info.key_id}: under the new policy nobody could call "
                "kms:PutKeyPolicy any more, so the key could never be managed again (set "
                "allow_lockout: true only if that is really intended)"
            )
        if not lenient.caller_able and not params.allow_lockout:
            raise ActionError(
                f"{self.name} refused on {info.key_id}: you ({principal_arn(caller)}) could not "
                f"change the policy afterwards, only {', '.join(lenient.able)}; add yourself "
                "(break_glass: the run.operator template value) or set allow_lockout: true"
            )
        # AWS's check is switched off only when the playbook explicitly accepts the lockout
        bypass = params.allow_lockout and (lenient.locked_out or not lenient.caller_able)
        notes = tuple(dict.fromkeys((*check.notes, *lenient.notes)))
        return _Plan(
            info, before, after, LockoutCheck(lenient.able, lenient.caller_able, notes), bypass
        )

    def _landed(self, ctx: ActionContext, exc: AwsError) -> bool:
        """An AccessDenied after an earlier attempt sent PutKeyPolicy: that policy landed and
        shuts this caller out (``allow_lockout``), so the change is done, not to be re-sent."""
        return "AccessDenied" in exc.code and bool(ctx.sent_by_earlier_attempt("PutKeyPolicy"))

    def preview(self, ctx: ActionContext, params: Any) -> Preview:
        try:
            plan = self._plan(ctx, params)
        except AwsError as exc:
            if not self._landed(ctx, exc):
                raise
            return Preview(
                calls=(),
                target=str(params.key),
                state="unreadable: the policy an earlier attempt put shuts this caller out",
            )
        same = plan.after == plan.before
        call = _put_policy(
            plan.info.key_id,
            BypassPolicyLockoutSafetyCheck=plan.bypass,
            Policy=json.dumps(plan.after),
        )
        return Preview(
            calls=() if same else (call,),
            target=f"{plan.info.key_id} ({plan.info.arn})",
            state=f"key state {plan.info.state}, policy with {len(statements(plan.before))} "
            "statement(s)",
            notes=(
                "lockout check: able to change the policy afterwards: "
                + (", ".join(plan.check.able) or "NOBODY"),
                *plan.check.notes,
            ),
        )

    def run(self, ctx: ActionContext, params: Any) -> Outcome:
        try:
            plan = self._plan(ctx, params)
        except AwsError as exc:
            if not self._landed(ctx, exc):
                raise
            return Outcome(
                outputs={"key_id": str(params.key), "restore_from": ctx.step_id},
                summary=f"{params.key}: the policy put by an earlier attempt took effect and "
                "shuts this caller out, as allow_lockout permits: nothing re-sent",
                before=ctx.changed_by_earlier_attempt(),
                after={"key_id": str(params.key), "readable": False},
            )
        # The policy before this step first ran: an earlier attempt's record is kept, so a
        # retry or a resumed re-check never records (and restores) the changed one instead.
        if ctx.artifacts.earlier(ctx.step_id, "policy-before.json") is None:
            ctx.write_json(
                "policy-before.json",
                {
                    "KeyId": plan.info.key_id,
                    "PolicyName": "default",
                    "Policy": json.dumps(plan.before),
                },
            )
        outputs = {
            "key_id": plan.info.key_id,
            "restore_from": ctx.step_id,
            "able_to_manage": list(plan.check.able),
        }
        if plan.after == plan.before:
            earlier = ctx.changed_by_earlier_attempt()
            if earlier is not None:  # the PutKeyPolicy sent before the run stopped took effect
                return self._changed(ctx, plan, outputs, earlier, plan.before, read_back=True)
            return Outcome(
                outputs=outputs,
                status="already",
                summary=f"{plan.info.key_id}: the policy is already as wanted: nothing sent",
            )
        before = {"key_id": plan.info.key_id, "statements": _sids(plan.before)}
        ctx.changing(before)
        with aws_errors(f"PutKeyPolicy on {plan.info.key_id}"):
            ctx.clients.client("kms", plan.info.region).put_key_policy(
                KeyId=plan.info.key_id,
                PolicyName="default",
                Policy=json.dumps(plan.after),
                BypassPolicyLockoutSafetyCheck=plan.bypass,
            )
        try:
            stored = _current_policy(ctx, plan.info)
            read_back = True
        except AwsError as exc:
            if "AccessDenied" not in exc.code:
                raise
            stored, read_back = plan.after, False  # the new policy shuts the caller out
        return self._changed(ctx, plan, outputs, before, stored, read_back=read_back)

    @staticmethod
    def _changed(
        ctx: ActionContext,
        plan: _Plan,
        outputs: dict[str, Any],
        before: dict[str, Any],
        stored: dict[str, Any],
        *,
        read_back: bool,
    ) -> Outcome:
        ctx.write_json(
            "policy-after.json",
            {"PolicyName": "default", "Policy": json.dumps(stored), "ReadBack": read_back},
        )
        unread = (
            ""
            if read_back
            else "; reading it back was refused (AccessDenied): the policy kept is the one sent"
        )
        return Outcome(
            outputs=outputs,
            summary=f"{plan.info.key_id}: policy changed ({len(before['statements'])} -> "
            f"{len(statements(stored))} statements); can still manage it: "
            f"{', '.join(plan.check.able)}{unread}",
            before=before,
            after={"key_id": plan.info.key_id, "statements": _sids(stored)},
        )


def _sids(policy: dict[str, Any]) -> list[str]:
    return [str(s.get("Sid", f"#{n}")) for n, s in enumerate(statements(policy), start=1)]


class QuarantineParams(KeyParams):
    """The key, the break-glass principals that keep access, and the lockout override."""

    break_glass: list[str] = Field(default_factory=list, max_length=50)
    allow_lockout: bool = False

    @field_validator("break_glass")
    @classmethod
    def _arns(cls, value: list[str]) -> list[str]:
        for arn in value:
            if not re.match(r"^arn:aws[a-z-]*:(iam|sts)::\d{12}:.+", arn):
                raise ValueError(f"{arn[:80]!r} is not an IAM principal ARN")
        return value


class Quarantine(_PolicyChange):
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
    Undo with ``kms.restore-policy`` (``from:`` this step).
    """

    name = "kms.quarantine"
    params = QuarantineParams

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


class PutPolicy(_PolicyChange):
    """Replace the key policy with the one given (a mapping or a JSON file).

    ```yaml
    - id: policy
      action: kms.put-policy
      with: {key: "{{ steps.snapshot.key_id }}", policy: policies/payments-key.json}
    ```
    """

    name = "kms.put-policy"
    params = PutPolicyParams

    def new_policy(
        self, ctx: ActionContext, params: PutPolicyParams, current: dict[str, Any], info: KeyInfo
    ) -> dict[str, Any]:
        if isinstance(params.policy, dict):
            return parse_policy(params.policy, "policy")
        return parse_policy(ctx.artifacts.outside(params.policy), params.policy)


class RestorePolicyParams(KeyParams):
    """The key, where the policy comes from (a step of this run or an artifact file)."""

    source: str = Field(alias="from", min_length=1, max_length=4096)
    allow_lockout: bool = False


class RestorePolicy(_PolicyChange):
    """Put back a policy kept as evidence: a step of this run, or an artifact of any bundle.

    ```yaml
    - id: restore
      action: kms.restore-policy
      with: {key: "{{ steps.snapshot.key_id }}", from: quarantine}
    ```
    ``from`` is a step id (its ``policy-before.json``, or a snapshot's
    ``policy-default.json``) or the path of such an artifact in another bundle; that
    artifact's hash is checked against its bundle's journal before it is used.
    """

    name = "kms.restore-policy"
    params = RestorePolicyParams

    def preview(self, ctx: ActionContext, params: RestorePolicyParams) -> Preview:
        kept = not _STEP_ID.match(params.source) or any(
            ctx.artifacts.earlier(params.source, n) is not None
            for n in ("policy-before.json", "policy-default.json")
        )
        if kept or ctx.run.mode != "check":
            return super().preview(ctx, params)
        # In check mode the step that keeps the policy only said what it would do.
        info = target(ctx, params.key, self.name)
        return Preview(
            calls=(_put_policy(info.key_id, Policy=f"<the policy step {params.source} keeps>"),),
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
            for name in (
                f"{info.key_id}/policy-default.json",
                "policy-before.json",
                "policy-default.json",
            ):
                data = ctx.artifacts.earlier(params.source, name)
                if data is not None:
                    folder = name.rpartition("/")[0]
                    sibling = ctx.artifacts.earlier(
                        params.source, f"{folder}/key.json" if folder else "key.json"
                    )
                    _check_owner(data, sibling, info, f"step {params.source}")
                    return parse_policy(data, f"step {params.source} {name}")
            raise ActionError(f"step {params.source!r} of this run kept no key policy")
        data = ctx.artifacts.outside(params.source)
        sibling_path = Path(params.source).with_name("key.json")
        sibling = ctx.artifacts.outside(str(sibling_path)) if sibling_path.is_file() else None
        _check_owner(data, sibling, info, params.source)
        return parse_policy(data, params.source)


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


def _put_policy(key: str, **more: Any) -> Call:
    """A ``PutKeyPolicy`` call on the default policy of ``key`` (``more``: its other
    parameters, by their API names)."""
    return Call(
        service="kms",
        operation="PutKeyPolicy",
        params={"KeyId": key, "PolicyName": "default", **more},
    )

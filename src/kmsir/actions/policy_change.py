"""The path every key policy change takes: check the new policy for lockout, put it, keep both.

Every change is checked for lockout first (``keypolicy.who_can``): a policy under which nobody
could call ``kms:PutKeyPolicy`` any more, or under which the caller itself could not, is
refused unless ``allow_lockout: true``. AWS's own check (``BypassPolicyLockoutSafetyCheck``
false) always runs too, except when the playbook explicitly allowed the lockout. The policy before
and after is kept as artifacts, and ``kms.restore-policy`` can put the "before" one back. The
actions themselves (which policy each wants) are in ``kms_policy``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kmsir.actions.base import Action, ActionContext, Done, Outcome, Preview, Undo
from kmsir.actions.kms_lifecycle import undo_key
from kmsir.actions.kmskeys import KeyInfo, strip_metadata, target
from kmsir.aws import aws_errors
from kmsir.errors import ActionError, AwsError
from kmsir.evidence.calls import Call
from kmsir.keypolicy import LockoutCheck, principal_arn, statements, who_can

#: AWS's limit for a key policy document.
MAX_POLICY_BYTES = 32 * 1024


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


class PolicyChange(Action[Any]):
    """Shared path of the policy actions (``kms_policy``): compute the new policy, check it,
    put it. A subclass names itself, gives its params (``key``, ``allow_lockout``) and
    ``new_policy``."""

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
        return [put_policy(params.key)]

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
        call = put_policy(
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

    def undo(self, done: Done) -> Undo | None:
        """Put back the policy the step found (its ``policy-before.json``, from the step's
        bundle: ``kms.restore-policy`` checks it against that bundle's journal first)."""
        kept = next((a for a in done.artifacts if a.endswith("/policy-before.json")), None)
        key = undo_key(done)
        if kept is None or key is None:
            return None
        count = len((done.before or {}).get("statements") or [])
        return Undo(
            "kms.restore-policy",
            {"key": key, "from": str(Path(done.bundle) / kept)},
            f"put back the policy key {key} had before step {done.step_id}"
            + (f" ({count} statement(s))" if count else "")
            + f", kept in {kept}",
        )

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


def put_policy(key: str, **more: Any) -> Call:
    """A ``PutKeyPolicy`` call on the default policy of ``key`` (``more``: its other
    parameters, by their API names)."""
    return Call(
        service="kms",
        operation="PutKeyPolicy",
        params={"KeyId": key, "PolicyName": "default", **more},
    )

"""Containing the actor: revoke a role's sessions (and put them back).

A stolen role session keeps working until it expires (up to 12 hours, 36 for chained
sessions). AWS's documented way to end it early ("Revoke IAM role temporary security
credentials") is an inline role policy named ``AWSRevokeOlderSessions`` that denies every
action to sessions whose ``aws:TokenIssueTime`` is earlier than now: sessions issued before
are stopped, new ones work. ``iam.restore-role-sessions`` removes that policy (or puts back the
cutoff an earlier revocation had), so sessions not yet expired work again.

The cutoff is the moment the step runs, not the moment it was previewed: a session the actor
opened while the responder read the preview is revoked too. Service-linked roles cannot be
revoked (AWS refuses); the caller's own role and the identity behind its session are refused
(``iam_responder``).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from pydantic import Field, field_validator

from kmsir.actions.base import Action, ActionContext, Done, Outcome, Params, Preview, Undo
from kmsir.actions.iam_containment import role_name
from kmsir.actions.iam_responder import responder
from kmsir.actions.iam_session_policy import (
    POLICY_NAME,
    RoleSessions,
    cutoff_at,
    cutoff_of,
    parse_time,
    put_call,
    role_sessions,
    sent_cutoffs,
)
from kmsir.aws import aws_errors
from kmsir.errors import ActionError
from kmsir.evidence.calls import Call


class RolesParams(Params):
    """One role or several: names, role ARNs or assumed-role session ARNs."""

    role: list[str] = Field(min_length=1, max_length=20)

    @field_validator("role", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("role")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(role_name(v) for v in value))


class RestoreSessionsParams(RolesParams):
    """The roles, and for those an earlier revocation covered, its cutoff to put back."""

    previous_cutoffs: dict[str, str] = Field(default_factory=dict, max_length=20)

    @field_validator("previous_cutoffs")
    @classmethod
    def _times(cls, value: dict[str, str]) -> dict[str, str]:
        for role, when in value.items():
            if parse_time(when) is None:
                raise ValueError(f"previous_cutoffs[{role[:64]!r}]: {when[:40]!r} is not a time")
        return {role_name(role): when for role, when in value.items()}


class _RoleSessionsAction(Action[Any]):
    """Shared reading and reporting of the two role-session actions."""

    mutating = True

    def _states(self, ctx: ActionContext, params: RolesParams) -> list[RoleSessions]:
        return [role_sessions(ctx, role) for role in params.role]

    @staticmethod
    def _target(states: list[RoleSessions]) -> str:
        roles = ", ".join(f"{s.role} ({s.arn})" for s in states)
        return f"IAM role{'s' if len(states) > 1 else ''} {roles}"

    @staticmethod
    def _roles(states: list[RoleSessions]) -> dict[str, Any]:
        return {"roles": {s.role: s.summary for s in states}}


class RevokeRoleSessions(_RoleSessionsAction):
    """Revoke every session of a role issued before now (AWS's ``AWSRevokeOlderSessions``).

    ```yaml
    - id: revoke-ci-sessions
      action: iam.revoke-role-sessions
      with: {role: "arn:aws:sts::111122223333:assumed-role/ci-deploy/build-4711"}
    ```
    ``role``: a role name, role ARN or assumed-role session ARN (the session's role), or a
    list of them. Puts the inline policy ``AWSRevokeOlderSessions`` denying everything to
    sessions whose ``aws:TokenIssueTime`` is before the moment the step runs; new sessions
    work, so also remove how the actor gets them. Refused for the caller's own role and the
    identity behind its session, and for service-linked roles. Undo with
    ``iam.restore-role-sessions``. Outputs: ``roles``, ``changed`` (roles whose policy was
    put), ``revoked_before``.
    """

    name = "iam.revoke-role-sessions"
    high_impact = True  # a Deny on every current session of the role
    params = RolesParams
    outputs = MappingProxyType(
        {"roles": "list[str]", "changed": "list[str]", "revoked_before": "str|null"}
    )
    inverse = "iam.restore-role-sessions"
    permissions = (
        "sts:GetCallerIdentity",
        "iam:GetRole",
        "iam:ListRolePolicies",
        "iam:GetRolePolicy",
        "iam:PutRolePolicy",
    )

    def api_calls(self, params: RolesParams) -> list[Call]:
        return [put_call(role, "<the time the step runs>") for role in params.role]

    def _checked(self, ctx: ActionContext, params: RolesParams) -> list[RoleSessions]:
        found = responder(ctx)
        for role in params.role:
            found.refuse_role(self.name, role)
        states = self._states(ctx, params)
        for state in states:
            if state.path.startswith("/aws-service-role/"):
                raise ActionError(
                    f"{self.name} refused on IAM role {state.role}: it is a service-linked "
                    "role, whose sessions AWS does not let anyone revoke"
                )
        return states

    def _landed(self, ctx: ActionContext, state: RoleSessions) -> bool:
        """The policy an earlier, interrupted attempt sent is the one in place."""
        sent = sent_cutoffs(ctx.sent_by_earlier_attempt("PutRolePolicy"), state.role)
        return state.cutoff is not None and state.cutoff in sent

    def _wanted(self, ctx: ActionContext, state: RoleSessions, reference: str) -> bool:
        """Whether ``state`` still needs the policy: no revocation as late as ``reference``
        (the cutoff the responder approved, or now), and not put by an earlier attempt."""
        if self._landed(ctx, state):
            return False
        have = parse_time(state.cutoff) if state.cutoff else None
        want = parse_time(reference)
        return have is None or want is None or have < want

    def preview(self, ctx: ActionContext, params: RolesParams) -> Preview:
        states = self._checked(ctx, params)
        # resumed after its approval: the cutoff shown then (the step still uses its own)
        shown = [
            cutoff_of(c.params.get("PolicyDocument"))
            for c in ctx.approved_before
            if c.operation == "PutRolePolicy"
        ]
        cutoff = next((c for c in shown if c), None) or cutoff_at(ctx.now())
        wanted = [s for s in states if self._wanted(ctx, s, cutoff)]
        notes = [
            f"every session of {', '.join(s.role for s in states)} issued before the step runs "
            f"(about {cutoff}) is denied every AWS action; sessions issued later work, so also "
            "take away how the actor gets new ones (trust policy, source credentials)",
            "iam.restore-role-sessions removes the policy: sessions not yet expired work again",
        ]
        notes += [
            f"role {s.role}: replaces its inline policy {POLICY_NAME}, which is not a session "
            "revocation (its document is kept as evidence)"
            for s in wanted
            if s.document is not None and s.cutoff is None
        ]
        return Preview(
            calls=tuple(put_call(s.role, cutoff) for s in wanted),
            target=self._target(states),
            state="; ".join(s.describe() for s in states),
            notes=tuple(notes),
        )

    @staticmethod
    def _approved_cutoff(ctx: ActionContext, role: str) -> str | None:
        """The cutoff of the ``PutRolePolicy`` the responder approved for ``role``."""
        calls = ctx.approved.calls if ctx.approved is not None else ()
        return next(
            (
                cutoff_of(c.params.get("PolicyDocument"))
                for c in calls
                if c.operation == "PutRolePolicy" and c.params.get("RoleName") == role
            ),
            None,
        )

    def run(self, ctx: ActionContext, params: RolesParams) -> Outcome:
        states = self._checked(ctx, params)
        cutoff = cutoff_at(ctx.now())
        wanted = [
            s for s in states if self._wanted(ctx, s, self._approved_cutoff(ctx, s.role) or cutoff)
        ]
        landed = [s.role for s in states if self._landed(ctx, s)]
        earlier = ctx.changed_by_earlier_attempt()
        # a role an interrupted attempt already revoked: what it was before that attempt
        had = (earlier or {}).get("roles") or {}
        before = {
            "roles": {
                s.role: had.get(s.role, s.summary) if s.role in landed else s.summary
                for s in states
            }
        }
        outputs: dict[str, Any] = {"roles": list(params.role), "revoked_before": cutoff}
        if not wanted:
            if earlier is None or not landed:
                return Outcome(
                    outputs={**outputs, "changed": [], "revoked_before": None},
                    summary=f"sessions of {', '.join(params.role)} were already revoked: "
                    "nothing sent",
                    status="already",
                    before=before,
                    after=before,
                )
            # the policy sent before the run stopped took effect: report it as made
            first = next(s.cutoff for s in states if s.role in landed)
            return Outcome(
                outputs={**outputs, "changed": landed, "revoked_before": first},
                # as if made now: the change is the same, however the run got there
                summary=f"sessions of {', '.join(landed)} issued before {first} revoked",
                before=earlier,
                after=self._roles(states),
            )
        replaced = {s.role: s.document for s in wanted if s.document is not None}
        if replaced and ctx.artifacts.earlier(ctx.step_id, "revoke-policies-before.json") is None:
            ctx.write_json("revoke-policies-before.json", replaced)
        ctx.changing(before)
        iam = ctx.clients.client("iam")
        for state in wanted:
            call = put_call(state.role, cutoff)
            with aws_errors(f"PutRolePolicy {POLICY_NAME} on {state.role}", service="iam"):
                iam.put_role_policy(
                    RoleName=state.role,
                    PolicyName=POLICY_NAME,
                    PolicyDocument=str(call.params["PolicyDocument"]),
                )
        after = self._roles(self._states(ctx, params))  # what IAM reports now
        changed = [*landed, *(s.role for s in wanted)]
        return Outcome(
            outputs={**outputs, "changed": changed},
            summary=f"sessions of {', '.join(changed)} issued before {cutoff} revoked",
            before=before,
            after=after,
        )

    def undo(self, done: Done) -> Undo | None:
        changed = [str(r) for r in done.outputs.get("changed") or []]
        if not changed:
            return None
        roles = (done.before or {}).get("roles") or {}
        previous = {
            r: str(roles[r]["revoked_before"])
            for r in changed
            if isinstance(roles.get(r), dict) and roles[r].get("revoked_before")
        }
        params: dict[str, Any] = {"role": changed}
        if previous:
            params["previous_cutoffs"] = previous
        return Undo(
            action="iam.restore-role-sessions",
            params=params,
            summary=f"let the sessions of {', '.join(changed)} work again (remove {POLICY_NAME}"
            + (", or put back the earlier cutoff)" if previous else ")"),
        )


class RestoreRoleSessions(_RoleSessionsAction):
    """Let a role's revoked sessions work again (the inverse of ``iam.revoke-role-sessions``).

    ```yaml
    - id: restore-ci-sessions
      action: iam.restore-role-sessions
      with: {role: ci-deploy}
    ```
    Deletes the inline policy ``AWSRevokeOlderSessions``; for a role listed in
    ``previous_cutoffs`` (role name -> time), puts back that earlier revocation instead.
    Outputs: ``roles``, ``changed``.
    """

    name = "iam.restore-role-sessions"
    params = RestoreSessionsParams
    outputs = MappingProxyType({"roles": "list[str]", "changed": "list[str]"})
    inverse = "iam.revoke-role-sessions"
    permissions = (
        "iam:GetRole",
        "iam:ListRolePolicies",
        "iam:GetRolePolicy",
        "iam:DeleteRolePolicy",
        "iam:PutRolePolicy",
    )

    def api_calls(self, params: RestoreSessionsParams) -> list[Call]:
        return [self._call(role, params) for role in params.role]

    @staticmethod
    def _call(role: str, params: RestoreSessionsParams) -> Call:
        earlier = params.previous_cutoffs.get(role)
        if earlier is not None:
            return put_call(role, earlier)
        return Call(
            service="iam",
            operation="DeleteRolePolicy",
            params={"RoleName": role, "PolicyName": POLICY_NAME},
        )

    @staticmethod
    def _wanted(state: RoleSessions, params: RestoreSessionsParams) -> bool:
        earlier = params.previous_cutoffs.get(state.role)
        if earlier is None:
            return state.document is not None
        return state.cutoff is None or parse_time(state.cutoff) != parse_time(earlier)

    def preview(self, ctx: ActionContext, params: RestoreSessionsParams) -> Preview:
        states = self._states(ctx, params)
        return Preview(
            calls=tuple(self._call(s.role, params) for s in states if self._wanted(s, params)),
            target=self._target(states),
            state="; ".join(s.describe() for s in states),
            notes=("sessions of these roles not yet expired work again",),
        )

    def run(self, ctx: ActionContext, params: RestoreSessionsParams) -> Outcome:
        states = self._states(ctx, params)
        wanted = [s for s in states if self._wanted(s, params)]
        before = self._roles(states)
        outputs: dict[str, Any] = {"roles": list(params.role)}
        if not wanted:
            earlier = ctx.changed_by_earlier_attempt()
            if earlier is None:
                return Outcome(
                    outputs={**outputs, "changed": []},
                    summary=f"sessions of {', '.join(params.role)} were not revoked: nothing sent",
                    status="already",
                    before=before,
                    after=before,
                )
            # the calls sent before the run stopped took effect: report them as made
            had = earlier.get("roles") or {}
            changed = [
                r for r in params.role if POLICY_NAME in had.get(r, {}).get("inline_policies", [])
            ]
            return Outcome(
                outputs={**outputs, "changed": changed},
                summary=f"sessions of {', '.join(changed) or 'no role'} work again until they "
                "expire",
                before=earlier,
                after=before,
            )
        ctx.changing(before)
        iam = ctx.clients.client("iam")
        for state in wanted:
            call = self._call(state.role, params)
            with aws_errors(f"{call.operation} {POLICY_NAME} on {state.role}", service="iam"):
                if call.operation == "DeleteRolePolicy":
                    iam.delete_role_policy(RoleName=state.role, PolicyName=POLICY_NAME)
                else:
                    iam.put_role_policy(
                        RoleName=state.role,
                        PolicyName=POLICY_NAME,
                        PolicyDocument=str(call.params["PolicyDocument"]),
                    )
        changed = [s.role for s in wanted]
        return Outcome(
            outputs={**outputs, "changed": changed},
            summary=f"sessions of {', '.join(changed)} work again until they expire",
            before=before,
            after=self._roles(self._states(ctx, params)),
        )

    def undo(self, done: Done) -> Undo | None:
        changed = [str(r) for r in done.outputs.get("changed") or []]
        if not changed:
            return None
        return Undo(
            action="iam.revoke-role-sessions",
            params={"role": changed},
            summary=f"revoke the sessions of {', '.join(changed)} again (issued before the "
            "rollback runs)",
        )

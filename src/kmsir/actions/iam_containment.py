"""Containing the actor: attach (and detach) AWS's deny-all managed policy to a user or role.

An explicit Deny beats every Allow, so ``AWSDenyAll`` stops every request of the user (all its
access keys, its console session) or of the role (every session, current and future) at
once, whatever else it is allowed; detaching it restores exactly what was there, so it is
the reversible way to freeze an identity while the incident is investigated.

The AWS managed policy is used, not a policy of our own: it exists in every account and
partition, so nothing is created that would have to be cleaned up. (moto knows it too, but
loads AWS's managed policies only when asked: the tests set ``MOTO_IAM_LOAD_MANAGED_POLICIES``.)
The caller's own user or role, and the identity behind its session, are refused
(``iam_responder``).
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from kmsir.actions.base import Action, ActionContext, Done, Outcome, Params, Preview, Undo
from kmsir.actions.iam import user_name
from kmsir.actions.iam_responder import responder
from kmsir.aws import aws_errors
from kmsir.evidence.calls import Call

DENY_ALL = "AWSDenyAll"
_ROLE_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/(?:[\w+=,.@/-]*/)?([\w+=,.@-]{1,64})$")
_SESSION_ARN = re.compile(
    r"^arn:aws[a-z-]*:sts::\d{12}:assumed-role/([\w+=,.@-]{1,64})/[\w+=,.@-]{1,64}$"
)


def role_name(value: str) -> str:
    """A role's name from its name, its ARN, or the ARN of one of its sessions (findings name
    an assumed-role session); ``ValueError`` otherwise."""
    value = value.strip()
    arn = _ROLE_ARN.fullmatch(value) or _SESSION_ARN.fullmatch(value)
    if arn:
        return arn[1]
    if not _ROLE_NAME.fullmatch(value):
        raise ValueError(f"{value[:80]!r} is not an IAM role name, role ARN or session ARN")
    return value


def deny_all_arn(partition: str = "aws") -> str:
    """The ARN of AWS's deny-all managed policy in ``partition``."""
    return f"arn:{partition}:iam::aws:policy/{DENY_ALL}"


class DenyPolicyParams(Params):
    """Exactly one of ``user`` (a name or ARN, or a list of them) or ``role`` (a name, ARN or
    session ARN, or a list of them)."""

    user: list[str] | None = Field(default=None, min_length=1, max_length=20)
    role: list[str] | None = Field(default=None, min_length=1, max_length=20)

    @field_validator("user", "role", mode="before")
    @classmethod
    def _one_or_more(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("user")
    @classmethod
    def _users(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else list(dict.fromkeys(user_name(v) for v in value))

    @field_validator("role")
    @classmethod
    def _roles(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else list(dict.fromkeys(role_name(v) for v in value))

    @model_validator(mode="after")
    def _one(self) -> DenyPolicyParams:
        if (self.user is None) == (self.role is None):
            raise ValueError("give exactly one of user or role")
        return self

    @property
    def kind(self) -> Literal["user", "role"]:
        """Whether users or roles are named."""
        return "user" if self.user is not None else "role"

    @property
    def names(self) -> list[str]:
        """The users' or roles' names."""
        return list(self.user if self.user is not None else self.role or [])

    def label(self, names: list[str] | None = None) -> str:
        """``IAM user alice`` or ``IAM roles ci, deploy``."""
        names = self.names if names is None else names
        return f"IAM {self.kind}{'s' if len(names) > 1 else ''} {', '.join(names)}"


def attached(ctx: ActionContext, kind: Literal["user", "role"], name: str) -> list[str]:
    """The ARNs of the managed policies attached to the user or role ``name``."""
    iam = ctx.clients.client("iam")
    with aws_errors(f"ListAttached{kind.title()}Policies for {name}", service="iam"):
        if kind == "user":
            pages: Any = iam.get_paginator("list_attached_user_policies").paginate(UserName=name)
        else:
            pages = iam.get_paginator("list_attached_role_policies").paginate(RoleName=name)
        return [str(p["PolicyArn"]) for page in pages for p in page.get("AttachedPolicies", [])]


class _DenyPolicy(Action[DenyPolicyParams]):
    """One Attach/Detach call of ``AWSDenyAll`` per user or role not yet as desired."""

    params = DenyPolicyParams
    # user or role: the one given
    outputs = MappingProxyType(
        {
            "user": "list[str]",
            "role": "list[str]",
            "changed": "list[str]",
            "policy_arn": "str",
        }
    )
    mutating = True
    verb: ClassVar[Literal["Attach", "Detach"]]

    @property
    def _attach(self) -> bool:
        return self.verb == "Attach"

    def permissions_for(self, params: DenyPolicyParams) -> tuple[str, ...]:
        other = ("Role" if params.kind == "user" else "User") + "Polic"  # the named kind's only
        return tuple(p for p in self.permissions if other not in p)

    def api_calls(self, params: DenyPolicyParams) -> list[Call]:
        return [self._call(params, name, deny_all_arn()) for name in params.names]

    def _call(self, params: DenyPolicyParams, name: str, policy_arn: str) -> Call:
        kind = params.kind.title()
        return Call(
            service="iam",
            operation=f"{self.verb}{kind}Policy",
            params={f"{kind}Name": name, "PolicyArn": policy_arn},
        )

    def _read(self, ctx: ActionContext, params: DenyPolicyParams) -> tuple[str, dict[str, Any]]:
        """The policy's ARN in the run's partition, and each target's attached policies
        (containment first refuses the responder)."""
        found = responder(ctx)
        if self._attach:
            refuse = found.refuse_user if params.kind == "user" else found.refuse_role
            for name in params.names:
                refuse(self.name, name)
        return deny_all_arn(found.partition), {
            name: attached(ctx, params.kind, name) for name in params.names
        }

    def _wanted(self, arn: str, policies: dict[str, Any]) -> list[str]:
        return [name for name, found in policies.items() if (arn in found) != self._attach]

    @staticmethod
    def _state(params: DenyPolicyParams, policies: dict[str, Any]) -> dict[str, Any]:
        short = {n: [p.rpartition("/")[2] for p in found] for n, found in policies.items()}
        return {f"{params.kind}s": short}

    def preview(self, ctx: ActionContext, params: DenyPolicyParams) -> Preview:
        arn, policies = self._read(ctx, params)
        state = "; ".join(
            f"{params.kind} {name}: managed policies attached: "
            + (", ".join(p.rpartition("/")[2] for p in found) or "none")
            for name, found in policies.items()
        )
        return Preview(
            calls=tuple(self._call(params, n, arn) for n in self._wanted(arn, policies)),
            target=params.label(),
            state=state,
            notes=self._notes(params),
        )

    def _notes(self, params: DenyPolicyParams) -> tuple[str, ...]:
        return ()

    def run(self, ctx: ActionContext, params: DenyPolicyParams) -> Outcome:
        arn, policies = self._read(ctx, params)
        before = self._state(params, policies)
        wanted = self._wanted(arn, policies)
        to = "to" if self._attach else "from"
        outputs: dict[str, Any] = {params.kind: params.names, "policy_arn": arn}
        if not wanted:
            earlier = ctx.changed_by_earlier_attempt()
            if earlier is None:
                return Outcome(
                    outputs={**outputs, "changed": []},
                    summary=f"{DENY_ALL} was already {self.verb.lower()}ed {to} "
                    f"{params.label()}: nothing sent",
                    status="already",
                    before=before,
                    after=before,
                )
            # the calls sent before the run stopped took effect: report them as made
            had = earlier.get(f"{params.kind}s") or {}
            changed = [n for n in params.names if (DENY_ALL in had.get(n, [])) != self._attach]
            return Outcome(
                outputs={**outputs, "changed": changed},
                summary=f"{DENY_ALL} {self.verb.lower()}ed {to} {params.label(changed)}",
                before=earlier,
                after=before,
            )
        ctx.changing(before)
        iam = ctx.clients.client("iam")
        for name in wanted:
            with aws_errors(f"{self.verb}{params.kind.title()}Policy on {name}", service="iam"):
                if self._attach and params.kind == "user":
                    iam.attach_user_policy(UserName=name, PolicyArn=arn)
                elif self._attach:
                    iam.attach_role_policy(RoleName=name, PolicyArn=arn)
                elif params.kind == "user":
                    iam.detach_user_policy(UserName=name, PolicyArn=arn)
                else:
                    iam.detach_role_policy(RoleName=name, PolicyArn=arn)
        after = {n: attached(ctx, params.kind, n) for n in params.names}  # what IAM reports now
        return Outcome(
            outputs={**outputs, "changed": wanted},
            summary=f"{DENY_ALL} {self.verb.lower()}ed {to} {params.label(wanted)}",
            before=before,
            after=self._state(params, after),
        )

    def undo(self, done: Done) -> Undo | None:
        kind = "user" if done.params.get("user") else "role"
        changed = [str(n) for n in done.outputs.get("changed") or []]
        if not changed or self.inverse is None:
            return None
        verb = "detach" if self._attach else "attach"
        label = f"IAM {kind}{'s' if len(changed) > 1 else ''} {', '.join(changed)}"
        return Undo(
            action=self.inverse,
            params={kind: changed},
            summary=f"{verb} {DENY_ALL} {'from' if self._attach else 'to'} {label}",
        )


class AttachDenyPolicy(_DenyPolicy):
    """Deny an IAM user or role everything: attach AWS's managed policy ``AWSDenyAll``.

    ```yaml
    - id: freeze-ci
      action: iam.attach-deny-policy
      with: {role: "arn:aws:iam::111122223333:role/ci-deploy"}
    ```
    ``user`` (name or ARN) or ``role`` (name, ARN, or an assumed-role session ARN as findings
    name it), or a list of either. An explicit Deny beats every Allow: all requests of the
    user (every access key) or of the role (every session) fail from now on. Refused for the
    caller's own user or role and for the identity behind its session. Undo with
    ``iam.detach-deny-policy``.
    Outputs: ``user`` or ``role`` (the names), ``changed`` (those it attached it to),
    ``policy_arn``.
    """

    name = "iam.attach-deny-policy"
    high_impact = True  # a Deny policy on the principal
    inverse = "iam.detach-deny-policy"
    verb = "Attach"
    permissions = (
        "sts:GetCallerIdentity",
        "iam:ListAttachedUserPolicies",
        "iam:ListAttachedRolePolicies",
        "iam:AttachUserPolicy",
        "iam:AttachRolePolicy",
    )

    def _notes(self, params: DenyPolicyParams) -> tuple[str, ...]:
        who = "every access key and console session"
        if params.kind == "role":
            who = "every session, current and future,"
        return (
            f"{who} of {params.label()} is denied every AWS action, whatever its other policies "
            "allow; applications using it stop working (iam.detach-deny-policy undoes this)",
        )


class DetachDenyPolicy(_DenyPolicy):
    """Detach ``AWSDenyAll`` from a user or role (the inverse of ``iam.attach-deny-policy``).

    ```yaml
    - id: unfreeze-ci
      action: iam.detach-deny-policy
      with: {role: ci-deploy}
    ```
    Outputs: ``user`` or ``role`` (the names), ``changed`` (those it detached it from),
    ``policy_arn``.
    """

    name = "iam.detach-deny-policy"
    inverse = "iam.attach-deny-policy"
    verb = "Detach"
    permissions = (
        "sts:GetCallerIdentity",
        "iam:ListAttachedUserPolicies",
        "iam:ListAttachedRolePolicies",
        "iam:DetachUserPolicy",
        "iam:DetachRolePolicy",
    )

"""Containing the actor: deactivate (and reactivate) an IAM user's access key.

A leaked long-term access key keeps working until it is deactivated; deactivating it is
reversible (``iam.reactivate-access-key``), deleting it is not, so kmsir only deactivates.
Neither the access key the run itself signs its requests with nor the one its profile
assumes a role from is ever deactivated ("contain the actor, never the caller itself", see
``iam_responder``): that would cut the responder off mid-incident.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Literal

from pydantic import field_validator

from kmsir.actions.base import Action, ActionContext, Done, Outcome, Params, Preview, Undo
from kmsir.actions.iam_responder import responder
from kmsir.actions.kmskeys import iso
from kmsir.aws import aws_errors
from kmsir.errors import ActionError
from kmsir.evidence.calls import Call

_USER_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
_USER_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:user/(?:[\w+=,.@/-]*/)?([\w+=,.@-]{1,64})$")
_ACCESS_KEY_ID = re.compile(r"^[A-Z0-9]{16,128}$")

Status = Literal["Active", "Inactive"]


def user_name(value: str) -> str:
    """An IAM user's name from its name or its ARN; ``ValueError`` otherwise."""
    value = value.strip()
    arn = _USER_ARN.fullmatch(value)
    if arn:
        return arn[1]
    if not _USER_NAME.fullmatch(value):
        raise ValueError(f"{value[:80]!r} is not an IAM user name or user ARN")
    return value


class AccessKeyParams(Params):
    """An IAM user (its name, or its ARN as findings name it) and one of its access keys."""

    user: str
    access_key_id: str

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        return user_name(value)

    @field_validator("access_key_id")
    @classmethod
    def _key_id(cls, value: str) -> str:
        value = value.strip()
        if not _ACCESS_KEY_ID.fullmatch(value):
            raise ValueError(f"{value[:40]!r} is not an access key id (AKIA...)")
        return value


@dataclass(frozen=True)
class AccessKey:
    """One access key of a user, as ``ListAccessKeys`` and ``GetAccessKeyLastUsed`` tell."""

    user: str
    access_key_id: str
    status: str
    created: str | None
    last_used: dict[str, Any]

    @property
    def summary(self) -> dict[str, Any]:
        """The state the journal records before and after a change."""
        return {"user": self.user, "access_key_id": self.access_key_id, "status": self.status}

    @property
    def outputs(self) -> dict[str, Any]:
        """The step's outputs (``status`` there would be the step's own status)."""
        return {"user": self.user, "access_key_id": self.access_key_id, "key_status": self.status}

    def describe(self) -> str:
        """One line for the confirmation prompt."""
        used = self.last_used
        when = used.get("LastUsedDate")
        last = (
            f"last used {iso(when)} ({used.get('ServiceName', '?')}, {used.get('Region', '?')})"
            if when
            else "no recorded use"
        )
        return f"access key {self.status}, created {self.created or '?'}, {last}"


def access_key(ctx: ActionContext, params: AccessKeyParams) -> AccessKey:
    """The user's access key named by ``params``; ``ActionError`` if the user has no such key."""
    iam = ctx.clients.client("iam")
    with aws_errors(f"ListAccessKeys for user {params.user}", service="iam"):
        pages = iam.get_paginator("list_access_keys").paginate(UserName=params.user)
        keys = [k for page in pages for k in page.get("AccessKeyMetadata", [])]
    found = next((k for k in keys if k.get("AccessKeyId") == params.access_key_id), None)
    if found is None:
        others = ", ".join(str(k.get("AccessKeyId")) for k in keys) or "none"
        raise ActionError(
            f"access key {params.access_key_id} is not one of IAM user {params.user}'s keys "
            f"(theirs: {others})"
        )
    with aws_errors(f"GetAccessKeyLastUsed for {params.access_key_id}", service="iam"):
        used = iam.get_access_key_last_used(AccessKeyId=params.access_key_id)
    return AccessKey(
        user=params.user,
        access_key_id=params.access_key_id,
        status=str(found.get("Status", "Unknown")),
        created=iso(found.get("CreateDate")),
        last_used=dict(used.get("AccessKeyLastUsed") or {}),
    )


class _SetStatus(Action[AccessKeyParams]):
    """One ``UpdateAccessKey`` call towards a desired status."""

    params = AccessKeyParams
    outputs = MappingProxyType({"user": "str", "access_key_id": "str", "key_status": "str"})
    permissions = ("iam:ListAccessKeys", "iam:GetAccessKeyLastUsed", "iam:UpdateAccessKey")
    mutating = True
    desired: ClassVar[Status]

    def api_calls(self, params: AccessKeyParams) -> list[Call]:
        return [self._call(params)]

    def _call(self, params: AccessKeyParams) -> Call:
        return Call(
            service="iam",
            operation="UpdateAccessKey",
            params={
                "UserName": params.user,
                "AccessKeyId": params.access_key_id,
                "Status": self.desired,
            },
        )

    def _target(self, ctx: ActionContext, params: AccessKeyParams) -> AccessKey:
        return access_key(ctx, params)

    def preview(self, ctx: ActionContext, params: AccessKeyParams) -> Preview:
        key = self._target(ctx, params)
        return Preview(
            calls=() if key.status == self.desired else (self._call(params),),
            target=f"access key {key.access_key_id} of IAM user {key.user}",
            state=key.describe(),
            notes=self._notes(key),
        )

    def _notes(self, key: AccessKey) -> tuple[str, ...]:
        return ()

    def undo(self, done: Done) -> Undo | None:
        user = done.outputs.get("user", done.params.get("user"))
        key_id = done.outputs.get("access_key_id", done.params.get("access_key_id"))
        if not user or not key_id or self.inverse is None:
            return None
        verb = "reactivate" if self.desired == "Inactive" else "deactivate"
        return Undo(
            action=self.inverse,
            params={"user": user, "access_key_id": key_id},
            summary=f"{verb} access key {key_id} of IAM user {user}",
        )

    def run(self, ctx: ActionContext, params: AccessKeyParams) -> Outcome:
        key = self._target(ctx, params)
        outputs = key.outputs
        if key.status == self.desired:
            earlier = ctx.changed_by_earlier_attempt()
            if earlier is None:
                return Outcome(
                    outputs=outputs,
                    summary=f"access key {key.access_key_id} of {key.user} was already "
                    f"{self.desired}: nothing sent",
                    status="already",
                    before=key.summary,
                    after=key.summary,
                )
            # the call sent before the run stopped took effect: report it as made
            return Outcome(
                outputs=outputs,
                summary=f"access key {key.access_key_id} of {key.user}: "
                f"{earlier.get('status')} -> {key.status}",
                before=earlier,
                after=key.summary,
            )
        ctx.changing(key.summary)
        with aws_errors(f"UpdateAccessKey on {key.access_key_id}", service="iam"):
            ctx.clients.client("iam").update_access_key(
                UserName=key.user, AccessKeyId=key.access_key_id, Status=self.desired
            )
        after = access_key(ctx, params)  # what IAM reports now, not what we asked for
        return Outcome(
            outputs=after.outputs,
            summary=f"access key {key.access_key_id} of {key.user}: {key.status} -> {after.status}",
            before=key.summary,
            after=after.summary,
        )


class DeactivateAccessKey(_SetStatus):
    """Deactivate an IAM user's access key: every request signed with it fails from now on.

    ```yaml
    - id: deactivate
      action: iam.deactivate-access-key
      with: {user: svc-reports, access_key_id: AKIAEXAMPLEKEY123456}
    ```
    ``user`` is a user name or a user ARN (as findings name principals). Refused for the
    access key this run itself signs with, and for the one its profile assumes a role from.
    Reversible with ``iam.reactivate-access-key``; the key
    is not deleted. Outputs: ``user``, ``access_key_id``, ``key_status`` (``Inactive``).
    """

    name = "iam.deactivate-access-key"
    high_impact = True  # the key's user loses programmatic access
    inverse = "iam.reactivate-access-key"
    desired = "Inactive"

    def _target(self, ctx: ActionContext, params: AccessKeyParams) -> AccessKey:
        responder(ctx).refuse_access_key(self.name, params.access_key_id)
        return access_key(ctx, params)

    def _notes(self, key: AccessKey) -> tuple[str, ...]:
        return (
            f"every application still using {key.access_key_id} fails until it gets a new "
            "key; the key is kept (iam.reactivate-access-key undoes this)",
        )


class ReactivateAccessKey(_SetStatus):
    """Reactivate an access key (the inverse of ``iam.deactivate-access-key``).

    ```yaml
    - id: reactivate
      action: iam.reactivate-access-key
      with: {user: svc-reports, access_key_id: AKIAEXAMPLEKEY123456}
    ```
    Outputs: ``user``, ``access_key_id``, ``key_status`` (``Active``).
    """

    name = "iam.reactivate-access-key"
    inverse = "iam.deactivate-access-key"
    desired = "Active"

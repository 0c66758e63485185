"""The session revocation policy AWS documents, and a role's state as it concerns it.

``AWSRevokeOlderSessions`` is the inline role policy AWS's console puts to revoke a role's
sessions: deny everything when ``aws:TokenIssueTime`` is before a moment. This module writes
that policy, reads the cutoff back from a role (tolerating the forms AWS and people write it
in), and describes the role for the actions in ``iam_sessions``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from kmsir.actions.base import ActionContext
from kmsir.aws import aws_errors
from kmsir.evidence.calls import Call

POLICY_NAME = "AWSRevokeOlderSessions"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def revoke_policy(cutoff: str) -> dict[str, Any]:
    """AWS's documented deny-all policy for sessions issued before ``cutoff``."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Action": ["*"],
                "Resource": ["*"],
                "Condition": {"DateLessThan": {"aws:TokenIssueTime": cutoff}},
            }
        ],
    }


def cutoff_of(document: Any) -> str | None:
    """The ``aws:TokenIssueTime`` a revocation policy denies sessions before, if it is one."""
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError:
            return None
    found = document.get("Statement", []) if isinstance(document, dict) else []
    for statement in found if isinstance(found, list) else [found]:
        if not isinstance(statement, dict) or statement.get("Effect") != "Deny":
            continue
        condition = (statement.get("Condition") or {}).get("DateLessThan") or {}
        value = next((v for k, v in condition.items() if k.lower() == "aws:tokenissuetime"), None)
        if isinstance(value, str) and parse_time(value) is not None:
            return value
    return None


def parse_time(value: str) -> datetime | None:
    """An ISO 8601 time as AWS takes it (``Z`` or an offset; none means UTC), else ``None``."""
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def cutoff_at(now: datetime) -> str:
    """``now`` rounded up to the second: a session issued within this second is revoked too."""
    now = now.astimezone(timezone.utc)
    if now.microsecond:
        now = now.replace(microsecond=0) + timedelta(seconds=1)
    return now.strftime(_TIME_FORMAT)


@dataclass(frozen=True)
class RoleSessions:
    """What a role looks like to the revocation: its inline policies and any cutoff."""

    role: str
    arn: str
    path: str
    inline: tuple[str, ...]
    document: Any
    cutoff: str | None

    @property
    def summary(self) -> dict[str, Any]:
        """The state the journal records before and after a change."""
        return {"inline_policies": list(self.inline), "revoked_before": self.cutoff}

    def describe(self) -> str:
        """One line for the confirmation prompt."""
        names = ", ".join(self.inline) or "none"
        revoked = (
            f"sessions issued before {self.cutoff} already revoked"
            if self.cutoff
            else "no earlier revocation"
        )
        return f"role {self.role}: inline policies {names}; {revoked}"


def role_sessions(ctx: ActionContext, role: str) -> RoleSessions:
    """Read the role, its inline policy names and its revocation policy, if any."""
    iam = ctx.clients.client("iam")
    with aws_errors(f"GetRole {role}", service="iam"):
        found = iam.get_role(RoleName=role)["Role"]
    with aws_errors(f"ListRolePolicies for {role}", service="iam"):
        pages = iam.get_paginator("list_role_policies").paginate(RoleName=role)
        inline = tuple(str(n) for page in pages for n in page.get("PolicyNames", []))
    document: Any = None
    if POLICY_NAME in inline:
        with aws_errors(f"GetRolePolicy {POLICY_NAME} of {role}", service="iam"):
            document = iam.get_role_policy(RoleName=role, PolicyName=POLICY_NAME)["PolicyDocument"]
    return RoleSessions(
        role=role,
        arn=str(found.get("Arn", "")),
        path=str(found.get("Path", "/")),
        inline=inline,
        document=document,
        cutoff=cutoff_of(document) if document is not None else None,
    )


def put_call(role: str, cutoff: str) -> Call:
    """The ``PutRolePolicy`` call that revokes ``role``'s sessions issued before ``cutoff``."""
    return Call(
        service="iam",
        operation="PutRolePolicy",
        params={
            "RoleName": role,
            "PolicyName": POLICY_NAME,
            "PolicyDocument": json.dumps(revoke_policy(cutoff), separators=(",", ":")),
        },
    )


def sent_cutoffs(calls: list[dict[str, Any]], role: str) -> set[str]:
    """The cutoffs earlier attempts sent for ``role``."""
    found: set[str] = set()
    for params in calls:
        if params.get("RoleName") == role:
            cutoff = cutoff_of(params.get("PolicyDocument"))
            if cutoff:
                found.add(cutoff)
    return found

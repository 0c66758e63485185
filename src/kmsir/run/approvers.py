"""Who may answer a step waiting for a second person (the two-person rule): by principal,
not by ARN.

An assumed-role session is its role: whoever calls ``sts:AssumeRole`` names the session, so
one person can be any number of sessions of a role (``aws.approver.principal``); a session of
an IAM Identity Center role is the person signed in. A federated user's credentials come from
an IAM user kmsir cannot see: refused outright.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import Any

from kmsir.aws.approver import Principal, principal

_ASSUMED = re.compile(r"^arn:([^:]+):sts::(\d{12}):assumed-role/([^/]+)/.+$")
_ROLE_PATH = re.compile(r"^(arn:[^:]*:iam::[^:]*:role/).*/([^/]+)$")


def allowed(arn: str, patterns: tuple[str, ...]) -> bool:
    """True when ``arn`` matches one of ``patterns`` (``fnmatchcase``); an assumed-role
    session (``arn:aws:sts::A:assumed-role/R/S``) also matches as its role
    (``arn:aws:iam::A:role/R``), and as a role pattern with a path
    (``arn:aws:iam::A:role/aws-reserved/sso.amazonaws.com/R``: a session's ARN has no path)."""
    names = [arn]
    role = _ASSUMED.match(arn)
    if role is not None:
        names.append(f"arn:{role[1]}:iam::{role[2]}:role/{role[3]}")
    wanted = [*patterns]
    if role is not None:
        wanted += [_ROLE_PATH.sub(r"\1\2", p) for p in patterns if _ROLE_PATH.match(p)]
    return any(fnmatchcase(name, pattern) for name in names for pattern in wanted)


def identity_principal(identity: Any) -> Principal:
    """The principal of a journaled identity (``{"arn", "user_id", ...}``)."""
    user_id = identity.get("user_id")
    return principal(str(identity.get("arn")), str(user_id) if user_id else None)


def refusal(
    who: Principal,
    decision: str,
    *,
    operators: Sequence[Principal],
    patterns: tuple[str, ...],
    approvers: Sequence[Principal],
) -> str | None:
    """Why ``who`` may not give ``decision`` on a step the run's ``operators`` run, which
    ``patterns`` (``from:``; empty: anyone) may approve and ``approvers`` approved already;
    ``None``: they may. An approver may withdraw: a deny after their approval counts."""
    if who.federated:
        return (
            f"{who.arn} is a federated user: its credentials come from an IAM user kmsir "
            "cannot see; sign in as yourself (an IAM user, a role or IAM Identity Center) to "
            "answer"
        )
    for operator in operators:
        if who.same(operator):
            return _self_approval(who, operator)
    if patterns and not allowed(who.arn, patterns):
        return f"{who.arn} is not allowed to approve this step (from: {', '.join(patterns)})"
    earlier = next((a for a in approvers if who.same(a)), None)
    if decision == "approve" and earlier is not None:
        return f"{who.arn} already approved this request" + (
            "" if earlier.arn == who.arn else f" (as {earlier.arn}: {_same_role(who)})"
        )
    return None


def _same_role(who: Principal) -> str:
    return f"another session of role {who.role}, whose session name its caller chose"


def _self_approval(who: Principal, operator: Principal) -> str:
    """Why ``who`` may not answer a step that ``operator`` runs."""
    if who.arn == operator.arn:
        return f"{who.arn} runs this playbook: a second person must approve"
    return (
        f"{who.arn} is {_same_role(who)}, and {operator.arn} runs this playbook: a second "
        "person must approve as themselves (their own IAM user, role or IAM Identity Center "
        "sign-in)"
    )

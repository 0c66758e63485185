"""Key policy questions: who could still call ``kms:PutKeyPolicy``? Does a Deny apply?

A deliberately small evaluator for the questions before a policy change (and for the
sandbox's enforcement of explicit denies), not a general IAM engine. Allow statements name
who may call the action (an account's root principal means "that account's IAM principals",
which IAM policies may then allow). Deny statements take principals away; a Deny whose only
condition exempts principals by ``aws:PrincipalArn`` (``ArnNotLike``/``ArnNotEquals``/
``StringNotLike``/``StringNotEquals``), as kms.quarantine writes it, leaves exactly the
exempted principals. A Deny with any other condition is assumed to apply (the safe side: we
would rather refuse than lock a key) and this is said in the notes.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Any

_EXEMPTING = ("ArnNotLike", "ArnNotEquals", "StringNotLike", "StringNotEquals")
_ACCOUNT = re.compile(r"^\d{12}$")


@dataclass(frozen=True)
class LockoutCheck:
    """Principals (or patterns) that could still call the action, and whether the caller can."""

    able: tuple[str, ...]
    caller_able: bool
    notes: tuple[str, ...] = ()

    @property
    def locked_out(self) -> bool:
        """Nobody could manage the key's policy any more."""
        return not self.able


def statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    """The policy's statements as a list."""
    found = policy.get("Statement", [])
    items = found if isinstance(found, list) else [found]
    return [s for s in items if isinstance(s, dict)]


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def _root(account: str) -> str:
    return f"arn:aws:iam::{account}:root"


def _principals(statement: dict[str, Any]) -> list[str]:
    principal = statement.get("Principal")
    if principal == "*":
        return ["*"]
    if isinstance(principal, dict):
        return [_root(p) if _ACCOUNT.match(p) else p for p in _as_list(principal.get("AWS"))]
    return []


def _matches_action(statement: dict[str, Any], action: str) -> bool:
    if "NotAction" in statement:
        return not any(
            fnmatch.fnmatch(action.lower(), p.lower()) for p in _as_list(statement["NotAction"])
        )
    return any(
        fnmatch.fnmatch(action.lower(), p.lower()) for p in _as_list(statement.get("Action"))
    )


def _account_of(arn: str) -> str | None:
    parts = arn.split(":")
    return parts[4] if len(parts) > 4 and parts[4] else None


def _is_root(arn: str) -> bool:
    return arn.endswith(":root")


def principal_arn(caller_arn: str) -> str:
    """The ``aws:PrincipalArn`` of a caller: an assumed-role session becomes its role ARN."""
    match = re.match(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/(.+)/[^/]+$", caller_arn)
    if match:
        partition, account, role = match.groups()
        return f"arn:{partition}:iam::{account}:role/{role}"
    return caller_arn


def _covers(scope: list[str], candidate: str) -> bool:
    """Whether a statement's principals include ``candidate`` (a principal or pattern)."""
    for principal in scope:
        if principal == "*" or principal == candidate:
            return True
        if _is_root(principal) and _account_of(principal) == _account_of(candidate):
            return True
    return False


@dataclass(frozen=True)
class _Exempt:
    """A principal a Deny does not apply to; ``wildcard``: ``*`` and ``?`` match (the *Like
    and Arn operators), otherwise the value is compared exactly."""

    value: str
    wildcard: bool

    def covers(self, principal: str) -> bool:
        if self.wildcard:
            return fnmatch.fnmatchcase(principal, self.value)
        return principal == self.value


_WILDCARD_OPERATORS = frozenset({"ArnNotLike", "ArnNotEquals", "StringNotLike"})


def _exemptions(
    statement: dict[str, Any], notes: list[str], *, lenient: bool
) -> list[_Exempt] | None:
    """Who a Deny spares: ``None`` when it applies to everyone in its scope, or the exempted
    principals (``NotPrincipal``, or an ``aws:PrincipalArn`` negative condition).

    With ``lenient``, a Deny whose conditions cannot be evaluated here is taken not to apply:
    it exempts everyone (``*``).
    """
    exempt: list[_Exempt] | None = None
    if "NotPrincipal" in statement:
        not_principal = statement["NotPrincipal"]
        values = _as_list(not_principal.get("AWS")) if isinstance(not_principal, dict) else []
        exempt = [_Exempt(_root(v) if _ACCOUNT.match(v) else v, False) for v in values]
    condition = statement.get("Condition")
    if not condition:
        return exempt
    if isinstance(condition, dict) and len(condition) == 1:
        operator, block = next(iter(condition.items()))
        if operator in _EXEMPTING and isinstance(block, dict) and len(block) == 1:
            key, values = next(iter(block.items()))
            if key.lower() == "aws:principalarn":
                wildcard = operator in _WILDCARD_OPERATORS
                return [*(exempt or []), *(_Exempt(v, wildcard) for v in _as_list(values))]
    sid = statement.get("Sid", "(no Sid)")
    if lenient:
        notes.append(
            f"Deny {sid!r} has conditions kmsir cannot evaluate; AWS's own lockout check decides"
        )
        return [_Exempt("*", True)]
    notes.append(f"assumed that Deny {sid!r} applies whatever its conditions (the safe side)")
    return exempt


def _survivors(candidate: str, exempt: list[_Exempt]) -> list[str]:
    """What is left of ``candidate`` when everyone but ``exempt`` is denied."""
    if any(e.wildcard and e.value == "*" for e in exempt):
        return [candidate]
    if candidate == "*":
        return [e.value for e in exempt]
    if _is_root(candidate):
        account = _account_of(candidate)
        return [e.value for e in exempt if _account_of(e.value) == account]
    return [candidate] if any(e.covers(candidate) for e in exempt) else []


def who_can(
    policy: dict[str, Any], action: str, *, caller_arn: str, lenient: bool = False
) -> LockoutCheck:
    """Who could still call ``action`` on the key under ``policy``.

    Denies with conditions this module cannot evaluate are assumed to apply, or with
    ``lenient`` assumed not to.
    """
    notes: list[str] = []
    able: list[str] = []
    for statement in statements(policy):
        if statement.get("Effect") == "Allow" and _matches_action(statement, action):
            if statement.get("Condition"):
                notes.append(
                    f"Allow {statement.get('Sid', '(no Sid)')!r} has conditions; "
                    "assumed they can be met"
                )
            able.extend(p for p in _principals(statement) if p not in able)
    for statement in statements(policy):
        if statement.get("Effect") != "Deny" or not _matches_action(statement, action):
            continue
        scope = ["*"] if "NotPrincipal" in statement else _principals(statement)
        exempt = _exemptions(statement, notes, lenient=lenient)
        remaining: list[str] = []
        for candidate in able:
            if not _covers(scope, candidate):
                remaining.append(candidate)
            elif exempt is not None:
                remaining.extend(s for s in _survivors(candidate, exempt) if s not in remaining)
        able = remaining
    caller = principal_arn(caller_arn)
    caller_able = any(
        p == "*"
        or fnmatch.fnmatchcase(caller, p)
        or (_is_root(p) and _account_of(p) == _account_of(caller))
        for p in able
    )
    return LockoutCheck(tuple(able), caller_able, tuple(notes))


def explicit_deny(policy: dict[str, Any], action: str, *, caller_arn: str) -> str | None:
    """The Sid of a Deny statement that applies to ``caller_arn`` calling ``action``, if any.

    Principal scope and ``aws:PrincipalArn`` exemptions are honoured; a Deny with any other
    condition applies (as moto has it: it cannot evaluate request context).
    """
    caller = principal_arn(caller_arn)
    for statement in statements(policy):
        if statement.get("Effect") != "Deny" or not _matches_action(statement, action):
            continue
        if statement.get("Resource", "*") not in ("*", ["*"]):
            continue
        scope = ["*"] if "NotPrincipal" in statement else _principals(statement)
        if not _covers(scope, caller):
            continue
        exempt = _exemptions(statement, [], lenient=False)
        if exempt is not None and any(e.covers(caller) for e in exempt):
            continue
        return str(statement.get("Sid", "(no Sid)"))
    return None

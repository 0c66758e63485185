"""Identity-policy Deny statements, evaluated for one request of a scenario's actor.

What ``sandbox.containment`` needs of IAM's policy logic, and no more: does a Deny statement's
``Action``/``NotAction`` and ``Resource``/``NotResource`` cover the request, and do its
conditions hold? Conditions on the keys the sandbox knows of the request (``aws:TokenIssueTime``,
``aws:CurrentTime``, ``aws:PrincipalArn``, ``aws:PrincipalAccount``) are evaluated with the
Date, String and Arn operators (``IfExists`` and the negated ones included, an absent key as
AWS treats it); any other condition does not hold, so the statement is taken not to apply.
"""

from __future__ import annotations

import fnmatch
import operator as op
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any


def _listed(value: Any) -> list[str]:
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def applies(statement: dict[str, Any], action: str, resource: str) -> bool:
    """Whether a statement's actions and resources cover the request."""

    def any_action(patterns: Any) -> bool:
        return any(fnmatch.fnmatch(action.lower(), p.lower()) for p in _listed(patterns))

    def any_resource(patterns: Any) -> bool:
        return any(p == "*" or fnmatch.fnmatchcase(resource, p) for p in _listed(patterns))

    if "NotAction" in statement:
        acts = not any_action(statement["NotAction"])
    else:
        acts = any_action(statement.get("Action", []))
    if "NotResource" in statement:
        return acts and not any_resource(statement["NotResource"])
    return acts and any_resource(statement.get("Resource", "*"))


def conditions_hold(condition: Any, context: dict[str, Any]) -> bool:
    """Whether every condition holds for the request; one this module cannot evaluate (an
    operator or key it does not know) does not."""
    if not condition:
        return True
    if not isinstance(condition, dict):
        return False
    for operator, block in condition.items():
        if not isinstance(block, dict):
            return False
        for key, values in block.items():
            if key.lower() not in context:
                return False
            if not _holds(str(operator), context[key.lower()], _listed(values)):
                return False
    return True


def _holds(operator: str, actual: Any, values: list[str]) -> bool:
    """One condition operator over one key's value (``None``: the key is absent); an
    operator not known here does not hold."""
    base = operator.removesuffix("IfExists")
    negated = base in _NEGATED
    positive = base.replace("Not", "", 1) if negated else base
    wanted: list[Any] = values
    have: Any = None if actual is None else str(actual)
    if positive.startswith("Date"):
        compare = _DATES.get(positive.removeprefix("Date"))
        wanted = [_date(v) for v in values]
        have = actual if isinstance(actual, datetime) or actual is None else _date(have)
    else:
        compare = _TEXTS.get(positive)
    if compare is None or any(w is None for w in wanted):
        return False
    if have is None:  # AWS: an absent key matches only IfExists and the negated operators
        return operator.endswith("IfExists") or negated
    hit = any(compare(have, w) for w in wanted)
    return not hit if negated else hit


_NEGATED = frozenset(
    {"DateNotEquals", "StringNotEquals", "StringNotLike", "ArnNotEquals", "ArnNotLike"}
)
_DATES: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": op.eq,
    "LessThan": op.lt,
    "LessThanEquals": op.le,
    "GreaterThan": op.gt,
    "GreaterThanEquals": op.ge,
}
_TEXTS: dict[str, Callable[[Any, Any], bool]] = {
    "StringEquals": op.eq,
    "StringLike": fnmatch.fnmatchcase,
    "ArnEquals": fnmatch.fnmatchcase,
    "ArnLike": fnmatch.fnmatchcase,
}


def _date(value: str) -> datetime | None:
    """An IAM date condition value: ISO 8601 or epoch seconds."""
    try:
        if value.isdigit():
            return datetime.fromtimestamp(int(value), timezone.utc)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def revocation(statement: dict[str, Any]) -> str | None:
    """When AWS's "revoke active sessions" statement revoked them (its ``aws:TokenIssueTime``
    bound), or ``None`` for another statement."""
    condition = statement.get("Condition")
    if not isinstance(condition, dict):
        return None
    for operator in ("DateLessThan", "DateLessThanEquals"):
        block = condition.get(operator)
        if isinstance(block, dict):
            for key, value in block.items():
                if key.lower() == "aws:tokenissuetime":
                    return ", ".join(_listed(value))
    return None

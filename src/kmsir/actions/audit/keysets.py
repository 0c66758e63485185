"""Sets of keys as the checks of practices 4, 7 and 8 judge and name them: the keys not
pending deletion, a bounded list of names for a detail line, dates, the refusals grouped by
permission, and reads of many keys or stacks at once."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from typing import Any, TypeVar

from kmsir.actions.audit.context import KeyFacts, Unavailable, concurrently
from kmsir.actions.audit.rules import Result, cannot

T = TypeVar("T")
R = TypeVar("R")

#: Key states of keys on their way out: AWS reports their rotation as off and refuses to
#: change it, and their material no longer matters. The rotation, expiry and automation
#: checks leave them aside and say how many.
LEAVING = frozenset({"PendingDeletion", "PendingReplicaDeletion"})
#: Keys (ListKeyRotations) or stacks read at once by one check.
WORKERS = 8
#: Keys named in one detail line before "and N more".
SHOWN = 10

#: Refusals by the IAM permission missing: the error, and the resources it hid.
Refused = dict[str, tuple[Unavailable, list[str]]]


def staying(keys: Iterable[KeyFacts]) -> tuple[list[KeyFacts], str]:
    """The keys not pending deletion, and the note (``"; N key(s) ..."``) of the others."""
    keys = list(keys)
    kept = [k for k in keys if k.state not in LEAVING]
    left = len(keys) - len(kept)
    return kept, (f"; {left} key(s) pending deletion not judged" if left else "")


def names(keys: list[KeyFacts], label: Callable[[KeyFacts], str] = KeyFacts.label) -> str:
    """Keys for a detail line, at most ``SHOWN`` of them."""
    shown = ", ".join(label(k) for k in keys[:SHOWN])
    return shown + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")


def arns(keys: Iterable[KeyFacts]) -> tuple[str, ...]:
    """The keys' ARNs: the resources a check names."""
    return tuple(k.arn for k in keys)


def evidence(keys: Iterable[KeyFacts], *fields: str) -> tuple[str, ...]:
    """The artifact paths of the keys' responses ``fields`` (``key``, ``rotation``, ``tags``)."""
    return tuple(k.evidence[f] for k in keys for f in fields if f in k.evidence)


def day(value: Any) -> str:
    """A date of an AWS response (datetime, epoch seconds or ISO text) as ``YYYY-MM-DD``."""
    if value is None:
        return "unknown"
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, timezone.utc).date().isoformat()
    return str(value)[:10]


def each(read: Callable[[T], R], items: list[T]) -> list[R]:
    """``read`` of every item, ``WORKERS`` at a time, in the items' order."""
    return concurrently(read, items, WORKERS)


def refuse(refused: Refused, exc: Unavailable, resource: str) -> None:
    """Record that ``exc`` kept ``resource`` from being judged."""
    refused.setdefault(exc.permission or exc.code, (exc, []))[1].append(resource)


def refusals(refused: Refused) -> Iterator[Result]:
    """One ``could-not-check`` per missing permission, naming every resource it hid."""
    for exc, resources in refused.values():
        yield cannot(exc, resources)

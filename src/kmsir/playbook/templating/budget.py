"""What one render may spend, and the sizes it is charged for.

A render runs inside ``_time_budget``: a deadline in the CPU time of its thread, less the
time that thread spent collecting garbage (what the template itself spends: neither a busy
machine that starves the process nor a collection of a large heap the render did not build
fails a render that would pass in a fresh, idle process) and a count of the characters and
items it has built (``_tick`` and ``_build`` refuse to go on past either). The sizes are
counted here too, before anything is computed from them: deep sizes through nested
containers (shared references counted each time, as joining or printing them would cost),
printed sizes, and the checks of values and arguments against a profile's limits.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence, Sized
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from jinja2.exceptions import SecurityError
from jinja2.runtime import Undefined
from jinja2.utils import Namespace

from kmsir.playbook.templating.limits import MAX_INT_ARG, MAX_INT_BITS


@dataclass
class _Budget:
    """What one render may still spend (time; characters and items built), and the sizes
    known in advance."""

    deadline: float
    seconds: float
    max_built: int
    built: int = 0
    #: Deep sizes of the context's containers by ``id``: the context stays alive (and
    #: immutable) during the render, so a filter on a big context value costs nothing to
    #: size instead of a walk per call.
    known: dict[int, int] = field(default_factory=dict)


_current = threading.local()


def _budget() -> _Budget | None:
    budget: _Budget | None = getattr(_current, "budget", None)
    return budget


def _on_collection(phase: str, info: dict[str, Any]) -> None:
    """Count, per thread, the CPU time spent collecting garbage (the collection runs in the
    thread whose allocation started it): a full collection of a process holding millions of
    objects takes seconds, none of them the template's."""
    if phase == "start":
        _current.collecting = time.thread_time()
    else:
        started = getattr(_current, "collecting", None)
        if started is not None:
            _current.collected = _collected() + time.thread_time() - started
            _current.collecting = None


def _collected() -> float:
    seconds: float = getattr(_current, "collected", 0.0)
    return seconds


def _work_time() -> float:
    """This thread's CPU time, less what it spent collecting garbage."""
    return time.thread_time() - _collected()


gc.callbacks.append(_on_collection)


def _tick() -> None:
    """Refuse to go on once the current render has used its time budget."""
    budget = _budget()
    if budget is not None and _work_time() > budget.deadline:
        raise SecurityError(f"took longer than {budget.seconds:g} s")


def _build(size: int) -> None:
    """Count ``size`` characters or items built against the current render's budget."""
    budget = _budget()
    if budget is not None:
        budget.built += size
        if budget.built > budget.max_built:
            raise SecurityError(f"built more than {budget.max_built:,} characters and items")


@contextmanager
def _time_budget(seconds: float, max_built: int, context: Any = None) -> Iterator[None]:
    """Start a render's budget (an outer one, if any, keeps going)."""
    outer = _budget()
    if outer is None:
        known = _container_sizes(context) if context is not None else {}
        _current.budget = _Budget(_work_time() + seconds, seconds, max_built, known=known)
    try:
        yield
    finally:
        _current.budget = outer


# -- sizes ------------------------------------------------------------------------------

_SEQUENCES = (list, tuple, set, frozenset)
#: What size checks walk into (``Mapping`` last: its ABC check is the slow one).
_CONTAINERS = (*_SEQUENCES, dict, Mapping)
#: Types that hold nothing to count (skipped before any ``isinstance``).
_SCALARS = frozenset({int, float, bool, type(None)})


def _children(item: Any) -> Iterable[Any]:
    if isinstance(item, _SEQUENCES):
        return item
    return itertools.chain(item.keys(), item.values())


class _Done:
    """A marker on ``_walk``'s stack: the container ``key`` is done, its size counted from
    ``start``."""

    __slots__ = ("key", "start")

    def __init__(self, key: int, start: int) -> None:
        self.key, self.start = key, start


def _deep_size(value: Any, limit: int) -> int:
    """Characters plus items, counted through nested containers, up to just past ``limit``.

    Shared references count each time they appear (``[[0] * 1000] * 1000`` is a million),
    since that is what joining, summing or serialising them would cost; each is walked
    once, and the context's containers (sized when the render started) not at all.
    """
    if isinstance(value, str | bytes):
        return len(value)
    budget = _budget()
    return _walk(value, limit, budget.known if budget is not None else {}, {})


def _walk(
    value: Any,
    limit: int,
    known: Mapping[int, int],
    sized: dict[int, int],
    objects: list[Any] | None = None,
) -> int:
    """``_deep_size``'s walk: ``sized`` collects each container's size as it is finished;
    the attributes of dataclasses met are added to ``objects`` (when given) for a walk of
    their own."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        kind = type(item)
        if kind in _SCALARS:
            continue
        if kind is _Done:
            sized[item.key] = total - item.start
        elif isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, _CONTAINERS):
            key = id(item)
            size = known.get(key, sized.get(key))
            if size is not None:
                total += size
            else:
                stack.append(_Done(key, total))
                total += len(item)
                stack.extend(_children(item))
        elif objects is not None and dataclasses.is_dataclass(item) and not isinstance(item, type):
            objects.extend(vars(item).values())
    return total


def _container_sizes(root: Any) -> dict[int, int]:
    """The deep size of every container reachable from ``root`` (through dataclasses too),
    by ``id``: one walk per render instead of one per call."""
    sized: dict[int, int] = {}
    roots = [root]
    while roots:
        _walk(roots.pop(), sys.maxsize, {}, sized, roots)
    return sized


def _printed_size(value: Any, limit: int) -> int:
    """About how long ``str(value)`` would be (repr of containers included), up to just past
    ``limit``: a list of a million large numbers is short to count but long to print."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item) + (2 if item is not value else 0)
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, float):
            total += 24
        elif isinstance(item, Undefined):
            continue
        elif isinstance(item, _CONTAINERS):
            total += 2 + 2 * len(item)
            stack.extend(_children(item))
        else:
            total += 64
            if isinstance(item, Namespace) or (
                dataclasses.is_dataclass(item) and not isinstance(item, type)
            ):
                # they print their attributes: read them without the object's own hooks
                stack.extend(object.__getattribute__(item, "__dict__").values())
    return total


def _check_value(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        if len(value) > limit:
            raise SecurityError(f"value larger than {limit:,} items or characters")
        return value
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise SecurityError(f"integer result larger than {MAX_INT_BITS} bits")
    if _deep_size(value, limit) > limit:
        raise SecurityError(f"value larger than {limit:,} items or characters")
    return value


def _result(value: Any, limit: int) -> Any:
    """``value``, just computed by the template: checked, and counted as built (unless it
    is a value of the context, which a filter such as ``first`` may hand back)."""
    _check_value(value, limit)
    budget = _budget()
    if budget is not None and id(value) not in budget.known and type(value) not in _SCALARS:
        _build(_deep_size(value, limit))
    return value


def _check_int(value: Any, what: str = "integer argument") -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT_ARG:
        raise SecurityError(f"{what} {_shown_number(value)} larger than {MAX_INT_ARG:,}")


def _shown_number(value: int | str) -> str:
    text = str(value) if isinstance(value, str) or value.bit_length() < 64 else "(huge)"
    return text if len(text) <= 20 else text[:17] + "..."


def _check_args(args: Sequence[Any], kwargs: Mapping[str, Any], limit: int) -> None:
    for arg in (*args, *kwargs.values()):
        _check_int(arg)
        _check_value(arg, limit)


def _size(value: Any) -> int:
    return len(value) if isinstance(value, Sized) and not isinstance(value, type) else 0


def _too_long(what: str, limit: int) -> SecurityError:
    return SecurityError(f"{what} would be longer than {limit:,} characters")

"""Growth of calls and filters: results whose size is a product of their inputs.

``'ab' | replace('a', big)``, ``big_list | join(big)``, ``text | indent(99999)``...: each is
refused before it is made when its result would be longer than the profile allows. Lazy
filter results (``map``, ``select``...) are bounded as their items come.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from jinja2.exceptions import SecurityError

# the package, for ``_tick``: read there at call time, so patching
# ``kmsir.playbook.templating._tick`` reaches every time check
from kmsir.playbook import templating
from kmsir.playbook.templating.budget import (
    _CONTAINERS,
    _children,
    _deep_size,
    _printed_size,
    _size,
    _too_long,
)
from kmsir.playbook.templating.formats import _check_percent


def _check_growth(
    name: str, obj: Any, args: Sequence[Any], kwargs: Mapping[str, Any], limit: int
) -> None:
    """Refuse calls whose result size is a product of their inputs, before making them.

    ``obj`` is the string a method is bound to, or the value a filter filters.
    """

    def arg(position: int, keyword: str, default: Any = None) -> Any:
        return args[position] if len(args) > position else kwargs.get(keyword, default)

    if name == "replace" and len(args) >= 2:
        if (_size(obj) + 1) * max(1, _size(args[1])) > limit:
            raise _too_long("replace() result", limit)
    elif name == "join":
        # str.join(items) and the join filter (items, separator) alike
        items, separator = (arg(0, "iterable"), obj) if isinstance(obj, str) else (obj, arg(0, "d"))
        if isinstance(separator, str) and (
            _size(separator) * _size(items) + _joined_size(items, limit) > limit
        ):
            raise _too_long("join() result", limit)
    elif name == "expandtabs" and isinstance(obj, str):
        tabsize = arg(0, "tabsize", 8)
        if isinstance(tabsize, int) and len(obj) + obj.count("\t") * tabsize > limit:
            raise _too_long("expandtabs() result", limit)
    elif name == "translate" and isinstance(obj, str):
        table = arg(0, "table")
        values = table.values() if isinstance(table, Mapping) else table
        if isinstance(values, Iterable):
            longest = max((len(v) for v in values if isinstance(v, str)), default=1)
            if len(obj) * max(1, longest) > limit:
                raise _too_long("translate() result", limit)
    elif name == "format" and isinstance(obj, str):  # the printf-style filter
        _check_percent(obj, dict(kwargs) if kwargs else tuple(args), limit)
    elif name == "indent" and isinstance(obj, str):
        width = arg(0, "width", 4)
        step = _size(width) if isinstance(width, str) else width
        if isinstance(step, int) and len(obj) + (obj.count("\n") + 1) * step > limit:
            raise _too_long("indent() result", limit)
    elif name == "wordwrap" and isinstance(obj, str):
        width, wrap = arg(0, "width", 79), arg(2, "wrapstring", "\n")
        lines = 2 * len(obj) // max(1, width if isinstance(width, int) else 1) + 2
        if len(obj) + (lines + obj.count("\n")) * max(1, _size(wrap)) > limit:
            raise _too_long("wordwrap() result", limit)
    elif name == "tojson":
        indent = arg(0, "indent")
        step = _size(indent) if isinstance(indent, str) else indent
        if isinstance(step, int) and step and _indent_cost(obj, step, limit) > limit:
            raise _too_long("tojson() result", limit)
    elif name == "string" and _printed_size(obj, limit) > limit:
        raise _too_long("string() result", limit)


def _joined_size(items: Any, limit: int) -> int:
    """How long the items of a container are once each is made a string (a generator is
    left alone: reading it would use it up; its items are bounded as they come)."""
    if not isinstance(items, _CONTAINERS):
        return 0
    total = 0
    for item in items:
        total += _printed_size(item, limit)
        if total > limit:
            break
    return total


def _bounded_items(items: Iterator[Any], limit: int) -> Iterator[Any]:
    """A filter's lazy result (``map``, ``select``, ``batch``...), refused once the items it
    has yielded add up to more than ``limit``: whatever consumes it (``join``, ``list``)
    never holds much more than that."""
    total = 0
    for item in items:
        templating._tick()
        total += 1 + _deep_size(item, limit)
        if total > limit:
            raise SecurityError(f"filter result larger than {limit:,} items or characters")
        yield item


def _indent_cost(value: Any, step: int, limit: int) -> int:
    """Characters of indentation ``json.dumps(value, indent=step)`` writes, up to ``limit``."""
    total = 0
    stack = [(value, 1)]
    while stack and total <= limit:
        item, level = stack.pop()
        if isinstance(item, _CONTAINERS):
            total += (len(item) + 1) * level * step
            stack.extend((c, level + 1) for c in _children(item))
    return total

"""Bounded, sandboxed Jinja2: ``with:``/``when:`` playbook templates and report templates.

Jinja2's sandbox already blocks attribute access to Python internals (``__class__``,
``__mro__``...). It does not bound work: ``{{ 7 ** 1000000000 }}``, ``'a' * 10**9`` or
``'{:>900000000}'.format('a')`` would hang or exhaust memory. ``BoundedEnvironment``
intercepts the arithmetic operators, every call, filter, format string field, comparison
and loop iteration, and refuses any operation whose result would exceed fixed size limits
*before* computing it. A render is stopped once it has used its time budget, or built more in
all than its budget allows (however many values it keeps alive at once). Only a curated set
of filters and globals exists (no ``lipsum``, no ``config``, nothing that reads files or the
environment), and jinja's optimizer is off: nothing is evaluated while compiling.

One class serves two kinds of template, each with its own ``Profile``: playbook templates
(small values, strict undefined, no macros, blocks or nested loops) and report templates
(megabytes of output, a missing field renders empty, macros and nested loops allowed, every
value shown through ``inert.visible`` so terminal controls in attacker text stay inert).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re
import sys
import threading
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import jinja2
from jinja2 import (
    ChainableUndefined,
    StrictUndefined,
    Template,
    TemplateSyntaxError,
    UndefinedError,
    nodes,
    pass_context,
    pass_environment,
)
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter, safe_range
from jinja2.utils import Cycler, Joiner, Namespace
from markupsafe import EscapeFormatter, Markup

from kmsir.errors import TemplateError
from kmsir.inert import visible

#: Longest string, list or mapping a playbook template may produce or pass around.
MAX_LENGTH = 1_000_000
#: Largest integer (in bits) arithmetic may produce: plenty for counts, sizes and epochs.
MAX_INT_BITS = 128
#: Largest integer argument a call or filter may receive (widths, counts, repeats), and the
#: largest width or precision in a format string.
MAX_INT_ARG = 100_000
#: Longest one playbook template may take to render or evaluate.
MAX_SECONDS = 2.0
#: Most characters and items one playbook template may build in all (values computed, text
#: captured by set blocks): bounds memory however many values are alive at once.
MAX_BUILT = 8 * MAX_LENGTH
#: Report templates: longest value, longest output (a report can be a few MB), most built
#: in all, longest source, and the time budget of one render (read at render time: tests
#: patch it down).
REPORT_MAX_LENGTH = 4 * 1024 * 1024
REPORT_MAX_OUTPUT = 32 * 1024 * 1024
REPORT_MAX_BUILT = 64 * 1024 * 1024
REPORT_MAX_SOURCE = 1024 * 1024
REPORT_MAX_SECONDS = 10.0

_SAFE_FILTERS = (
    "abs",
    "batch",
    "capitalize",
    "count",
    "d",
    "default",
    "dictsort",
    "e",
    "escape",
    "first",
    "float",
    "format",
    "groupby",
    "int",
    "items",
    "join",
    "last",
    "length",
    "list",
    "lower",
    "map",
    "max",
    "min",
    "reject",
    "rejectattr",
    "replace",
    "reverse",
    "round",
    "select",
    "selectattr",
    "slice",
    "sort",
    "string",
    "sum",
    "title",
    "tojson",
    "trim",
    "truncate",
    "unique",
    "upper",
    "urlencode",
)
#: Layout filters reports may also use (their growth is bounded like the others').
_REPORT_FILTERS = ("center", "indent", "wordwrap")
#: The globals of report templates (playbook templates have none): jinja's defaults but
#: ``lipsum``; ``range`` is jinja's bounded one.
_REPORT_GLOBALS = {
    "range": safe_range,
    "dict": dict,
    "cycler": Cycler,
    "joiner": Joiner,
    "namespace": Namespace,
}

_WHOLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)
_DIGITS = re.compile(r"\d+")
#: Statements neither kind of template may use: they reach outside the template (other
#: files) or render a block into a string no output bound sees (``self.name()``).
_OUTSIDE = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport, nodes.Block)


@dataclass(frozen=True)
class Profile:
    """The limits and rules of one kind of template."""

    #: How messages name these templates ("playbook templates").
    name: str
    #: Longest value (characters plus items) an operation may produce or receive.
    max_length: int
    #: Longest rendered output.
    max_output: int
    #: Most one render may build in all (see ``MAX_BUILT``).
    max_built: int
    #: Statements refused by the static check.
    forbidden: tuple[type[nodes.Node], ...]
    #: Whether a loop may contain another (each iteration is time-bounded either way).
    nested_loops: bool
    #: Report templates: a missing field renders empty, blocks are trimmed, layout filters
    #: and a few globals (``range``, ``namespace``...) exist, and every value output is
    #: shown through ``inert.visible``.
    report: bool


PLAYBOOK = Profile(
    name="playbook",
    max_length=MAX_LENGTH,
    max_output=MAX_LENGTH,
    max_built=MAX_BUILT,
    forbidden=(nodes.Macro, nodes.CallBlock, nodes.FilterBlock, *_OUTSIDE),
    nested_loops=False,
    report=False,
)
REPORT = Profile(
    name="report",
    max_length=REPORT_MAX_LENGTH,
    max_output=REPORT_MAX_OUTPUT,
    max_built=REPORT_MAX_BUILT,
    # a call or filter block writes its callee's result straight to the output, past the
    # finalize hook that makes values inert
    forbidden=(nodes.CallBlock, nodes.FilterBlock, *_OUTSIDE),
    nested_loops=True,
    report=True,
)


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


def _tick() -> None:
    """Refuse to go on once the current render has used its time budget."""
    budget = _budget()
    if budget is not None and time.monotonic() > budget.deadline:
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
        _current.budget = _Budget(time.monotonic() + seconds, seconds, max_built, known=known)
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


# -- format strings ---------------------------------------------------------------------


def _spec_number(spec: str) -> int:
    """The largest number in a resolved ``str.format`` spec (its width or precision)."""
    largest = 0
    for digits in _DIGITS.findall(spec):
        if len(digits) > len(str(MAX_INT_ARG)) or int(digits) > MAX_INT_ARG:
            raise SecurityError(f"format width {_shown_number(digits)} larger than {MAX_INT_ARG:,}")
        largest = max(largest, int(digits))
    return largest


class _BoundedFormatter(SandboxedFormatter):
    """``str.format`` for templates: jinja's attribute rules, bounded widths and output.

    Each field's spec is checked once resolved (``'{:>{}}'.format('a', '99999999')`` is
    caught), and the text one call writes is counted as it is written, so a format string
    of many moderate fields is refused long before its total is built.
    """

    def __init__(self, env: BoundedEnvironment, **kwargs: Any) -> None:
        super().__init__(env, **kwargs)
        self._limit = env.profile.max_length
        self._written = 0

    def vformat(self, format_string: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        self._written = 0  # one count per call, even through a stored ``x.format``
        return super().vformat(format_string, args, kwargs)

    def parse(self, format_string: str) -> Iterator[tuple[str, str | None, str | None, str | None]]:
        for literal, name, spec, conversion in super().parse(format_string):
            self._count(len(literal))
            yield literal, name, spec, conversion

    def format_field(self, value: Any, format_spec: str) -> Any:
        _tick()
        width = _spec_number(format_spec)
        self._count(max(width, len(value) if isinstance(value, str) else 0), before=True)
        text = super().format_field(value, format_spec)
        self._count(len(text))
        return text

    def _count(self, size: int, *, before: bool = False) -> None:
        if self._written + size > self._limit:
            raise _too_long("format() result", self._limit)
        if not before:
            self._written += size


class _BoundedEscapeFormatter(_BoundedFormatter, EscapeFormatter):
    """The bounded formatter for ``Markup`` format strings: fields are escaped."""


def _percent_fields(template: str) -> Iterator[tuple[str | None, str, str, str]]:
    """Each ``%`` conversion of a printf-style template as (mapping key, width, precision,
    type), parsed as CPython does (a key may hold balanced parentheses)."""
    i, end = 0, len(template)
    while (i := template.find("%", i)) >= 0:
        i += 1
        key = None
        if i < end and template[i] == "(":
            depth, start = 1, i + 1
            i += 1
            while i < end and depth:
                depth += {"(": 1, ")": -1}.get(template[i], 0)
                i += 1
            key = template[start : i - 1]
        while i < end and template[i] in "#0- +":
            i += 1
        width, i = _percent_number(template, i)
        precision = ""
        if i < end and template[i] == ".":
            precision, i = _percent_number(template, i + 1)
        while i < end and template[i] in "hlL":
            i += 1
        kind = template[i] if i < end else ""
        i += 1
        yield key, width, precision, kind


def _percent_number(template: str, i: int) -> tuple[str, int]:
    if template.startswith("*", i):
        return "*", i + 1
    match = _DIGITS.match(template, i)
    return (match.group(), match.end()) if match else ("", i)


def _check_percent(template: str, right: Any, limit: int) -> None:
    """Refuse ``template % right`` (and ``template | format(...)``) before formatting when
    a width or precision is too large or all of them together would be too long."""
    positional = right if isinstance(right, tuple) else (right,)
    total, at = len(template), 0

    def number(text: str) -> int:
        nonlocal at
        if text == "*":
            at += 1
            value = positional[at - 1]
            if not isinstance(value, int):
                raise TypeError("* wants int")
            _check_int(value, "format width")
            return abs(value)
        if not text:
            return 0
        _spec_number(text)
        return int(text)

    try:
        for key, width, precision, kind in _percent_fields(template):
            total += number(width) + number(precision)
            if kind != "%":
                if key is not None:
                    value = right[key]
                else:
                    at += 1
                    value = positional[at - 1]
                total += _printed_size(value, limit) + (320 if isinstance(value, float) else 0)
            if total > limit:
                raise _too_long("% format result", limit)
    except (LookupError, TypeError):
        return  # Python refuses the same arguments itself, before formatting that field


# -- growth of calls and filters --------------------------------------------------------


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
        _tick()
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


@pass_environment
def _linear_sum(
    environment: BoundedEnvironment, iterable: Any, attribute: Any = None, start: Any = 0
) -> Any:
    """The ``sum`` filter without Python's quadratic concatenation of lists and tuples."""
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    items = list(iterable)
    kind = type(start)
    if kind in (list, tuple) and all(type(item) is kind for item in items):
        return kind(itertools.chain(start, *items))
    return sum(items, start)  # numbers; anything else fails as it would in Python


def _bounded_filter(env: BoundedEnvironment, name: str, func: Callable[..., Any]) -> Any:
    limit = env.profile.max_length

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _tick()
        # after the environment, context or eval context jinja passes some filters, the
        # filtered value (data, any size within limits), then the filter's own arguments
        at = 1 if args and isinstance(args[0], BoundedEnvironment | Context | EvalContext) else 0
        value, rest = (args[at], args[at + 1 :]) if len(args) > at else (None, ())
        _check_value(value, limit)
        if name == "format":  # its arguments are data, bounded by the % check
            _check_value(rest, limit)
        else:
            _check_args(rest, kwargs, limit)
        _check_growth(name, value, rest, kwargs, limit)
        result = _result(func(*args, **kwargs), limit)
        return _bounded_items(result, limit) if isinstance(result, Iterator) else result

    return wrapper


@pass_context  # (not the environment: that would let jinja call it at compile time)
def _finalize(context: Context, value: Any) -> Any:
    """Every value a template outputs: refused if printing it would be too long; in reports
    shown through ``inert.visible`` (``Markup`` stays ``Markup``: no double escaping)."""
    environment = context.environment
    assert isinstance(environment, BoundedEnvironment)
    limit = environment.profile.max_output
    if not isinstance(value, str) and _printed_size(value, limit) > limit:
        raise _too_long("printed value", limit)
    if not environment.profile.report:
        return value
    if isinstance(value, Markup):
        # visible() only adds backslashes and letters: nothing HTML gives a meaning to
        return Markup(visible(str(value)))  # noqa: S704 - was Markup already
    return visible(value if isinstance(value, str) else str(value))


# -- the environment --------------------------------------------------------------------


class _BoundedCodeGenerator(CodeGenerator):
    """Routes ``~``, loop iterables, comparisons and capture buffers through the
    environment, where they are bounded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The iterables of the loops being compiled (jinja allows no custom node types).
        self._loop_iterables: set[int] = set()

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        # one time check per iteration, so loops with an empty body are time-bounded too
        self._loop_iterables.add(id(node.iter))
        super().visit_For(node, frame)

    def visit(self, node: nodes.Node, *args: Any, **kwargs: Any) -> Any:
        if id(node) not in self._loop_iterables:
            return super().visit(node, *args, **kwargs)
        self._loop_iterables.discard(id(node))
        self.write("environment.ticking(")
        super().visit(node, *args, **kwargs)
        self.write(")")
        return None

    def visit_Compare(self, node: nodes.Compare, frame: Frame) -> None:
        # ``in`` and ``==`` on big values cost time too
        self.write("(environment.tick() or ")
        super().visit_Compare(node, frame)
        self.write(")")

    def buffer(self, frame: Frame) -> None:
        # set blocks, macros and loops inside them capture text instead of yielding it
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.bounded_buffer()")


class _BoundedBuffer(list[str]):
    """A capture buffer counting what it holds against the render's budget."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self._limit = limit
        self._held = 0

    def append(self, item: str) -> None:
        self._count(len(item))
        super().append(item)

    def extend(self, items: Iterable[str]) -> None:
        items = tuple(items)
        self._count(sum(len(i) for i in items))
        super().extend(items)

    def _count(self, size: int) -> None:
        _tick()
        _build(size)
        self._held += size
        if self._held > self._limit:
            raise SecurityError(f"captured text longer than {self._limit:,} characters")


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """An immutable sandbox that also bounds arithmetic, growth, calls, loops and time.

    Templates cannot change their context (no ``.append``/``.update``), cannot call or
    compute anything whose result would be larger than the profile's limits, and are stopped
    once their render's time budget is spent.
    """

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset(["**", "*", "+", "-", "//", "/", "%"])
    intercepted_unops = frozenset(["-", "+"])

    def __init__(self, profile: Profile = PLAYBOOK, *, html: bool = False) -> None:
        report = profile.report
        super().__init__(
            undefined=ChainableUndefined if report else StrictUndefined,
            autoescape=html,
            keep_trailing_newline=True,
            trim_blocks=report,
            lstrip_blocks=report,
            finalize=_finalize,
            # jinja's optimizer evaluates constant expressions while compiling, outside any
            # render's budget
            optimized=False,
        )
        self.profile = profile
        names = _SAFE_FILTERS + _REPORT_FILTERS if report else _SAFE_FILTERS
        filters = {n: self.filters[n] for n in names} | {"sum": _linear_sum}
        self.filters = {n: _bounded_filter(self, n, f) for n, f in filters.items()}
        self.globals = dict(_REPORT_GLOBALS) if report else {}

    def bounded_concat(self, values: tuple[Any, ...]) -> str:
        """The ``~`` operator, bounded."""
        _tick()
        limit = self.profile.max_length
        if sum(_printed_size(v, limit) for v in values) > limit:
            raise _too_long("concatenation", limit)
        text = "".join(str(v) for v in values)
        _build(len(text))
        return text

    def ticking(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """A loop's iterable, with a time check before each iteration."""
        for item in iterable:
            _tick()
            yield item

    def tick(self) -> None:
        """A time check (before comparisons)."""
        _tick()

    def bounded_buffer(self) -> list[str]:
        """A capture buffer for set blocks and macros, bounded like output."""
        return _BoundedBuffer(self.profile.max_output)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # refused at once: a lenient undefined would otherwise render the refusal as ""
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format``/``format_map`` through the bounded formatter."""
        if not isinstance(value, types.MethodType | types.BuiltinMethodType) or (
            value.__name__ not in ("format", "format_map")
        ):
            return None
        template = value.__self__
        if not isinstance(template, str):
            return None
        formatter = (
            _BoundedEscapeFormatter(self, escape=template.escape)
            if isinstance(template, Markup)
            else _BoundedFormatter(self)
        )
        is_map, kind = value.__name__ == "format_map", type(template)

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one positional argument")
                return kind(formatter.vformat(template, (), args[0]))
            return kind(formatter.vformat(template, args, kwargs))

        wrapper.kmsir_format = True  # type: ignore[attr-defined]
        return functools.update_wrapper(wrapper, value)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
        limit = self.profile.max_length
        if operator == "**":
            if not isinstance(left, int | float) or not isinstance(right, int | float):
                raise SecurityError("** needs two numbers")
            if abs(right) > MAX_INT_BITS or (abs(left) > 1 and abs(right) * _bits(left) > 4096):
                raise SecurityError(f"{left!r} ** {right!r} is too large to compute")
        elif operator == "*":
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and _deep_size(seq, limit) * times > limit
                ):
                    raise _too_long("repeated sequence", limit)
        elif operator == "+" and _deep_size(left, limit) + _deep_size(right, limit) > limit:
            raise _too_long("concatenation", limit)
        elif operator == "%" and isinstance(left, str):
            _check_value(right, limit)
            _check_percent(left, right, limit)
        return _result(super().call_binop(context, operator, left, right), limit)

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        limit = self.profile.max_length
        if isinstance(__obj, types.FunctionType) and __obj.__dict__.get("kmsir_format"):
            _check_value(args, limit)  # values to format; widths are bounded by the formatter
            _check_value(kwargs, limit)
        else:
            _check_args(args, kwargs, limit)
            _check_growth(
                getattr(__obj, "__name__", ""),
                getattr(__obj, "__self__", None),
                args,
                kwargs,
                limit,
            )
        return _result(super().call(__context, __obj, *args, **kwargs), limit)


def _bits(value: int | float) -> int:
    return int(abs(value)).bit_length() or 1


# -- static checks ----------------------------------------------------------------------


def _forbidden_statement(tree: nodes.Node, profile: Profile) -> str | None:
    """The first statement a template may not use, described, or ``None``."""
    where = f"{profile.name} templates"
    for node in tree.find_all(profile.forbidden):
        return f"'{type(node).__name__.lower()}' blocks are not allowed in {where}"
    for loop in tree.find_all(nodes.For):
        if loop.recursive:
            return f"recursive loops are not allowed in {where}"
        if not profile.nested_loops and any(True for _ in loop.find_all(nodes.For)):
            return f"nested loops are not allowed in {where}"
    return None


def _private_access(tree: nodes.Node) -> str | None:
    """The first ``_name`` attribute or item a template reaches for (Python internals)."""
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node, nodes.Getattr):
            name: object = node.attr
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            name = node.arg.value
        else:
            continue
        if isinstance(name, str) and name.startswith("_"):
            return name
    return None


def _static_problem(tree: nodes.Node, profile: Profile = PLAYBOOK) -> str | None:
    private = _private_access(tree)
    if private is not None:
        return f"refers to {private!r}: Python internals are not reachable from templates"
    return _forbidden_statement(tree, profile)


# -- playbook templates -----------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def environment() -> BoundedEnvironment:
    """The one template environment every playbook uses."""
    return BoundedEnvironment(PLAYBOOK)


def _check(source: str, *, expression: bool) -> str | None:
    text = f"{{{{ {source} }}}}" if expression else source
    kind = "invalid expression" if expression else "template syntax error"
    try:
        if expression:
            environment().compile_expression(source)
        tree = environment().parse(text)
    except TemplateSyntaxError as exc:
        return f"{kind}: {exc.message}"
    return _static_problem(tree)


def check_template(source: str) -> str | None:
    """Return a problem in a ``with:`` template (syntax, internals, statements), or ``None``."""
    return _check(source, expression=False)


def check_expression(source: str) -> str | None:
    """Return a problem in a ``when:`` expression (syntax, internals), or ``None``."""
    return _check(source, expression=True)


@functools.lru_cache(maxsize=512)
def _compile(source: str) -> Template:
    """Parse, check and compile a template once; the static checks also guard run time."""
    problem = _static_problem(environment().parse(source))
    if problem is not None:
        raise SecurityError(problem)
    return environment().from_string(source)


def render_value(value: Any, context: Mapping[str, Any]) -> Any:
    """Render a ``with:`` value: strings are templates, containers are rendered recursively.

    A string that is exactly one ``{{ expression }}`` yields the expression's native value
    (a list of grant ids stays a list); any other string renders to a string.
    """
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        match = _WHOLE_EXPRESSION.match(value)
        if match and "}}" not in match.group("expr") and "{%" not in value:
            return evaluate(match.group("expr"), context)
        return _guard(lambda: _render_bounded(_compile(value), context, PLAYBOOK.max_output), value)
    if isinstance(value, Mapping):
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    return value


def _render_bounded(template: Template, context: Mapping[str, Any], limit: int) -> str:
    """Render while counting output, so loops cannot build an unbounded string."""
    parts: list[str] = []
    size = 0
    for chunk in template.generate(context):
        size += len(chunk)
        if size > limit:
            raise SecurityError(f"output longer than {limit:,} characters")
        parts.append(chunk)
    return "".join(parts)


def evaluate(expression: str, context: Mapping[str, Any]) -> Any:
    """Evaluate a Jinja2 expression (``when:``, or a whole-value template) in the sandbox."""

    def run() -> Any:
        problem = check_expression(expression)
        if problem is not None:
            raise SecurityError(problem)
        result = environment().compile_expression(expression, undefined_to_none=False)(context)
        if isinstance(result, StrictUndefined):
            str(result)  # raises UndefinedError naming what is missing
        return _check_value(result, MAX_LENGTH)

    return _guard(run, expression)


def _guard(func: Callable[[], Any], source: str) -> Any:
    shown = source if len(source) <= 80 else source[:77] + "..."
    try:
        with _time_budget(MAX_SECONDS, PLAYBOOK.max_built):
            return func()
    except UndefinedError as exc:
        raise TemplateError(f"template {shown!r}: {exc.message}") from None
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template {shown!r}: syntax error: {exc.message}") from None
    except Exception as exc:
        reason = _refusal(exc)
        if reason is None:
            raise
        separator = " " if reason.startswith("refused") else ": "
        raise TemplateError(f"template {shown!r}{separator}{reason}") from None


def _refusal(exc: BaseException) -> str | None:
    """Why a render failed, in one line, or ``None`` for what is not the template's doing."""
    if isinstance(exc, SecurityError):
        return f"refused by the sandbox: {exc}"
    if isinstance(exc, RecursionError | MemoryError):
        return f"refused: {type(exc).__name__}"
    if isinstance(exc, TypeError | ValueError | ArithmeticError | LookupError | AttributeError):
        return f"{type(exc).__name__}: {exc}"
    if isinstance(exc, jinja2.TemplateError):  # an undefined called, a bad filter argument...
        return exc.message or type(exc).__name__
    return None


# -- report templates -----------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def report_environment(
    *, html: bool, filters: tuple[tuple[str, Callable[..., Any]], ...] = ()
) -> BoundedEnvironment:
    """The environment of report templates: autoescaped for HTML (``html``), missing fields
    render empty, trimmed blocks, every value inert; ``filters`` (the Markdown ones, given by
    ``kmsir.report``) are bounded like the built-in ones."""
    env = BoundedEnvironment(REPORT, html=html)
    env.filters.update({n: _bounded_filter(env, n, f) for n, f in filters})
    return env


def render_report(
    source: str,
    context: Mapping[str, Any],
    *,
    name: str,
    html: bool,
    filters: Mapping[str, Callable[..., Any]],
) -> str:
    """Render a report template in the bounded sandbox; every refusal or failure is one
    ``TemplateError`` line naming the template (and its line, when known)."""
    label = f"report template {name}"
    if len(source) > REPORT_MAX_SOURCE:
        raise TemplateError(f"{label}: longer than {REPORT_MAX_SOURCE:,} characters")
    try:
        with _time_budget(REPORT_MAX_SECONDS, REPORT.max_built, context):
            env = report_environment(html=html, filters=tuple(filters.items()))
            return _render_bounded(_compile_report(source, env), context, REPORT.max_output)
    except TemplateSyntaxError as exc:
        line = f" (line {exc.lineno})" if exc.lineno else ""
        raise TemplateError(f"{label}{line}: {exc.message}") from None
    except Exception as exc:
        reason = _refusal(exc)
        if reason is None:
            raise
        raise TemplateError(f"{label}{_template_line(exc)}: {reason}") from None


@functools.lru_cache(maxsize=8)
def _compile_report(source: str, env: BoundedEnvironment) -> Template:
    problem = _static_problem(env.parse(source), REPORT)
    if problem is not None:
        raise SecurityError(problem)
    return env.from_string(source)


def _template_line(exc: BaseException) -> str:
    """`` (line N)``: the template line that failed, from jinja's rewritten traceback."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (line {line})" if line else ""

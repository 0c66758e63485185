"""``BoundedEnvironment``: jinja's immutable sandbox with every operation bounded.

The code generator routes ``~``, loop iterables, comparisons and capture buffers through
the environment; the environment intercepts arithmetic, calls, attribute and item access,
and wraps each of its curated filters. Each checks the time and the sizes involved (see
``budget``) before it computes anything. What a template may use is set by its ``Profile``
(see ``limits``): playbook templates get the safe filters and no globals, report templates
a few layout filters and globals more, and every value they output is shown through
``inert.visible``.
"""

from __future__ import annotations

import functools
import itertools
import types
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from jinja2 import (
    ChainableUndefined,
    StrictUndefined,
    nodes,
    pass_context,
    pass_environment,
)
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range
from jinja2.utils import Cycler, Joiner, Namespace
from markupsafe import Markup

from kmsir.inert import visible

# the package, for ``_tick``: read there at call time, so patching
# ``kmsir.playbook.templating._tick`` reaches every time check
from kmsir.playbook import templating
from kmsir.playbook.templating.budget import (
    _build,
    _check_args,
    _check_value,
    _deep_size,
    _printed_size,
    _result,
    _too_long,
)
from kmsir.playbook.templating.formats import (
    _BoundedEscapeFormatter,
    _BoundedFormatter,
    _check_percent,
)
from kmsir.playbook.templating.growth import _bounded_items, _check_growth
from kmsir.playbook.templating.limits import MAX_INT_BITS, PLAYBOOK, Profile

# -- filters and globals ---------------------------------------------------------------

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
        templating._tick()
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
        templating._tick()
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
        templating._tick()
        limit = self.profile.max_length
        if sum(_printed_size(v, limit) for v in values) > limit:
            raise _too_long("concatenation", limit)
        text = "".join(str(v) for v in values)
        _build(len(text))
        return text

    def ticking(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """A loop's iterable, with a time check before each iteration."""
        for item in iterable:
            templating._tick()
            yield item

    def tick(self) -> None:
        """A time check (before comparisons)."""
        templating._tick()

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

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # no bytes: the size checks are written for text and lists, and nothing in a
        # playbook or a report needs bytes (``'a'.encode() * 10**9`` must not be built)
        if attr == "encode" and isinstance(obj, str):
            return False
        return bool(super().is_safe_attribute(obj, attr, value))

    def getattr(self, obj: Any, attribute: str) -> Any:
        templating._tick()
        if type(obj) is dict and attribute in obj:
            # a step's outputs are dicts: steps.loop.items, steps.snap.keys and a checklist's
            # items are the outputs, not the dict's methods Jinja2 would find first
            return obj[attribute]
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        templating._tick()
        return super().getitem(obj, argument)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        templating._tick()
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
        templating._tick()
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

"""Bounded, sandboxed Jinja2 for ``with:`` templates and ``when:`` expressions.

Jinja2's sandbox already blocks attribute access to Python internals (``__class__``,
``__mro__``...). It does not bound work: ``{{ 7 ** 1000000000 }}`` or ``'a' * 10**9`` would
hang or exhaust memory. This environment intercepts the arithmetic operators, every call and
every filter, and refuses any operation whose result would exceed fixed size limits *before*
computing it. ``range`` and ``lipsum`` are not available, and only a curated set of filters is.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sized
from contextlib import contextmanager
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from kmsir.errors import TemplateError

#: Longest string, list or mapping a template may produce or pass around.
MAX_LENGTH = 1_000_000
#: Largest integer (in bits) arithmetic may produce: plenty for counts, sizes and epochs.
MAX_INT_BITS = 128
#: Largest integer argument a call or filter may receive (widths, counts, repeats).
MAX_INT_ARG = 100_000
#: Longest one template may take to render or evaluate.
MAX_SECONDS = 2.0

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

_WHOLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)
#: Widths and precisions in ``%`` formats and in ``str.format`` fields.
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")
_FORMAT_NUMBERS = re.compile(r"\{[^{}]*:[^{}]*?\}")
#: Statements a ``with:`` template may not use: they allow unbounded work (recursion,
#: nested loops) or reach outside the template.
_FORBIDDEN = (
    nodes.Macro,
    nodes.CallBlock,
    nodes.FilterBlock,
    nodes.Extends,
    nodes.Include,
    nodes.Import,
    nodes.FromImport,
)

_deadline = threading.local()


def _tick() -> None:
    """Refuse to go on once the current render has used its time budget."""
    deadline = getattr(_deadline, "at", None)
    if deadline is not None and time.monotonic() > deadline:
        raise SecurityError(f"template took longer than {MAX_SECONDS:g} s")


def _deep_size(value: Any, limit: int = MAX_LENGTH) -> int:
    """Characters plus items, counted through nested containers, up to just past ``limit``.

    Shared references count each time they appear (``[[0] * 1000] * 1000`` is a million),
    since that is what joining, summing or serialising them would cost.
    """
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, Mapping):
            total += len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += len(item)
            stack.extend(item)
    return total


def _check_value(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise SecurityError(f"integer result larger than {MAX_INT_BITS} bits")
    if _deep_size(value) > MAX_LENGTH:
        raise SecurityError(f"value larger than {MAX_LENGTH:,} items or characters")
    return value


def _check_args(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    for arg in (*args, *kwargs.values()):
        if isinstance(arg, int) and not isinstance(arg, bool) and abs(arg) > MAX_INT_ARG:
            raise SecurityError(f"integer argument {arg} larger than {MAX_INT_ARG:,}")
        _check_value(arg)


def _check_format(template: str, what: str) -> None:
    numbers: list[str] = []
    if what == "%":
        for match in _PERCENT_SPEC.finditer(template):
            numbers += [g for g in match.groups() if g and g != "*"]
    else:
        for field in _FORMAT_NUMBERS.findall(template):
            numbers += re.findall(r"\d+", field.split(":", 1)[1])
    for number in numbers:
        if len(number) > 6 or int(number) > MAX_INT_ARG:
            raise SecurityError(f"format width or precision {number[:12]} is too large")


def _check_growth(name: str, obj: Any, args: tuple[Any, ...]) -> None:
    """Refuse calls whose result size is a product of their inputs, before making them."""
    if name == "replace" and len(args) >= 2:
        if _size(obj) * max(1, _size(args[1])) > MAX_LENGTH:
            raise SecurityError("replace() result would be too long")
    elif name == "join" and args:
        # str.join(items) and the join filter (items, separator) alike
        items, separator = (args[0], obj) if isinstance(obj, str) else (obj, args[0])
        if isinstance(separator, str) and _size(separator) * _size(items) > MAX_LENGTH:
            raise SecurityError("join() result would be too long")
    elif name in ("format", "format_map") and isinstance(obj, str):
        _check_format(obj, "format")


def _size(value: Any) -> int:
    return len(value) if isinstance(value, Sized) and not isinstance(value, type) else 0


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _tick()
        # Filters receive the filtered value first (after the environment/context, if any).
        values = [a for a in args if not hasattr(a, "filters") and not hasattr(a, "environment")]
        _check_args(tuple(values), kwargs)
        if values:
            _check_growth(name, values[0], tuple(values[1:]))
        return _check_value(func(*args, **kwargs))

    return wrapper


class _BoundedCodeGenerator(CodeGenerator):
    """Routes the ``~`` operator through ``environment.bounded_concat`` so it can be bounded."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """An immutable sandbox that also bounds arithmetic, growth, calls and time.

    Templates cannot change the run's context (no ``.append``/``.update``), cannot call or
    compute anything whose result would be larger than the limits, and are stopped after
    ``MAX_SECONDS``.
    """

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset(["**", "*", "+", "-", "//", "/", "%"])
    intercepted_unops = frozenset(["-", "+"])

    def __init__(self) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
        self.globals = {}
        self.filters = {n: _bounded_filter(n, self.filters[n]) for n in _SAFE_FILTERS}

    def bounded_concat(self, values: tuple[Any, ...]) -> str:
        """The ``~`` operator, bounded."""
        _tick()
        parts = [str(_check_value(v)) for v in values]
        if sum(len(p) for p in parts) > MAX_LENGTH:
            raise SecurityError("concatenation would be too long")
        return "".join(parts)

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _tick()
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
                    and _deep_size(seq) * times > MAX_LENGTH
                ):
                    raise SecurityError("repeated sequence would be too long")
        elif operator == "+" and _deep_size(left) + _deep_size(right) > MAX_LENGTH:
            raise SecurityError("concatenation would be too long")
        elif operator == "%" and isinstance(left, str):
            _check_format(left, "%")
            _check_args(right if isinstance(right, tuple) else (right,), {})
        return _check_value(super().call_binop(context, operator, left, right))

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _tick()
        _check_args(args, kwargs)
        name = getattr(__obj, "__name__", "")
        _check_growth(name, getattr(__obj, "__self__", None), args)
        return _check_value(super().call(__context, __obj, *args, **kwargs))


def _bits(value: int | float) -> int:
    return int(abs(value)).bit_length() or 1


def _forbidden_statement(tree: nodes.Node) -> str | None:
    """The first statement a template may not use, described, or ``None``."""
    for node in tree.find_all(_FORBIDDEN):
        return f"'{type(node).__name__.lower()}' blocks are not allowed in playbook templates"
    for loop in tree.find_all(nodes.For):
        if loop.recursive:
            return "recursive loops are not allowed in playbook templates"
        if any(True for _ in loop.find_all(nodes.For)):
            return "nested loops are not allowed in playbook templates"
    return None


@functools.lru_cache(maxsize=1)
def environment() -> BoundedEnvironment:
    """The one template environment every playbook uses."""
    return BoundedEnvironment()


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


def _static_problem(tree: nodes.Node) -> str | None:
    private = _private_access(tree)
    if private is not None:
        return f"refers to {private!r}: Python internals are not reachable from templates"
    return _forbidden_statement(tree)


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
        return _guard(lambda: _render_bounded(value, context), value)
    if isinstance(value, Mapping):
        return {k: render_value(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [render_value(v, context) for v in value]
    return value


def _render_bounded(source: str, context: Mapping[str, Any]) -> str:
    """Render while counting output, so loops cannot build an unbounded string."""
    parts: list[str] = []
    size = 0
    for chunk in _compile(source).generate(context):
        size += len(chunk)
        if size > MAX_LENGTH:
            raise SecurityError(f"output longer than {MAX_LENGTH:,} characters")
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
        return _check_value(result)

    return _guard(run, expression)


@contextmanager
def _time_budget() -> Iterator[None]:
    outer = getattr(_deadline, "at", None)
    _deadline.at = time.monotonic() + MAX_SECONDS if outer is None else outer
    try:
        yield
    finally:
        _deadline.at = outer


def _guard(func: Callable[[], Any], source: str) -> Any:
    shown = source if len(source) <= 80 else source[:77] + "..."
    try:
        with _time_budget():
            return func()
    except SecurityError as exc:
        raise TemplateError(f"template {shown!r} refused by the sandbox: {exc}") from None
    except UndefinedError as exc:
        raise TemplateError(f"template {shown!r}: {exc.message}") from None
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template {shown!r}: syntax error: {exc.message}") from None
    except (RecursionError, MemoryError) as exc:
        raise TemplateError(f"template {shown!r} refused: {type(exc).__name__}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
        raise TemplateError(f"template {shown!r}: {type(exc).__name__}: {exc}") from None

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

The package: this module is the API (``render_value``, ``evaluate``, the checks a playbook's
validation runs, ``render_report``) and the time budgets, read here at render time;
``limits`` holds the size limits and the two profiles, ``budget`` what one render may spend
and how sizes are counted, ``formats`` the bounded format strings, ``growth`` the bounded
calls and filters, and ``environment`` the environment that applies them all.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

import jinja2
from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError

from kmsir.errors import TemplateError
from kmsir.playbook.templating.budget import _check_value, _time_budget
from kmsir.playbook.templating.budget import _tick as _tick
from kmsir.playbook.templating.environment import BoundedEnvironment, _bounded_filter
from kmsir.playbook.templating.limits import (
    MAX_BUILT,
    MAX_INT_ARG,
    MAX_INT_BITS,
    MAX_LENGTH,
    PLAYBOOK,
    REPORT,
    REPORT_MAX_BUILT,
    REPORT_MAX_LENGTH,
    REPORT_MAX_OUTPUT,
    REPORT_MAX_SOURCE,
    Profile,
    _static_problem,
)

__all__ = [
    "MAX_BUILT",
    "MAX_INT_ARG",
    "MAX_INT_BITS",
    "MAX_LENGTH",
    "MAX_SECONDS",
    "PLAYBOOK",
    "REPORT",
    "REPORT_MAX_BUILT",
    "REPORT_MAX_LENGTH",
    "REPORT_MAX_OUTPUT",
    "REPORT_MAX_SECONDS",
    "REPORT_MAX_SOURCE",
    "BoundedEnvironment",
    "Profile",
    "check_expression",
    "check_template",
    "environment",
    "evaluate",
    "render_report",
    "render_value",
    "report_environment",
]

# The time budgets are read at render time, from this module: tests patch them down here.
#: Longest one playbook template may take to render or evaluate.
MAX_SECONDS = 2.0
#: Longest one report template may take to render.
REPORT_MAX_SECONDS = 10.0

_WHOLE_EXPRESSION = re.compile(r"^\s*\{\{(?P<expr>.*)\}\}\s*$", re.DOTALL)


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
        return _static_problem(tree)
    except TemplateSyntaxError as exc:
        return f"{kind}: {exc.message}"
    except RecursionError:
        # Jinja2's parser (and the walk of its tree) recurses once per nesting level:
        # ((((...)))) or a|a|a|... thousands deep exhausts Python's stack
        return f"{kind}: nested too deeply"


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
    (a list of grant ids stays a list); any other string renders to a string. The whole value
    shares one budget (time, and everything built): a list of four hundred templates costs
    what one would be allowed, not four hundred times that.
    """
    with _time_budget(MAX_SECONDS, PLAYBOOK.max_built):
        return _render_value(value, context)


def _render_value(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        match = _WHOLE_EXPRESSION.match(value)
        if match and "}}" not in match.group("expr") and "{%" not in value:
            return evaluate(match.group("expr"), context)
        return _guard(lambda: _render_bounded(_compile(value), context, PLAYBOOK.max_output), value)
    if isinstance(value, Mapping):
        return {k: _render_value(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_value(v, context) for v in value]
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


@functools.lru_cache(maxsize=512)
def _compile_expression(expression: str) -> Any:
    """Check and compile an expression once (a scenario renders the same ones per event)."""
    problem = check_expression(expression)
    if problem is not None:
        raise SecurityError(problem)
    return environment().compile_expression(expression, undefined_to_none=False)


def evaluate(expression: str, context: Mapping[str, Any]) -> Any:
    """Evaluate a Jinja2 expression (``when:``, or a whole-value template) in the sandbox."""

    def run() -> Any:
        result = _compile_expression(expression)(context)
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
    tree = env.parse(source)
    problem = _static_problem(tree, REPORT)
    if problem is not None:
        raise SecurityError(problem)
    # compiled from the tree just checked (``from_string`` would parse the source again: a
    # tenth of a second for the built-in HTML report)
    return env.template_class.from_code(env, env.compile(tree), env.make_globals(None), None)


def _template_line(exc: BaseException) -> str:
    """`` (line N)``: the template line that failed, from jinja's rewritten traceback."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (line {line})" if line else ""

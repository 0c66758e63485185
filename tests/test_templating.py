"""The template sandbox: native values, strict undefined, no internals, bounded work."""

from __future__ import annotations

import time

import pytest

from kmsir import templating
from kmsir.errors import TemplateError

CONTEXT = {"inputs": {"key": "alias/payments"}, "steps": {"snap": {"ids": ["a", "b"], "n": 2}}}


def test_whole_expression_keeps_native_types() -> None:
    rendered = templating.render_value(
        {"ids": "{{ steps.snap.ids }}", "text": "key {{ inputs.key }}", "n": "{{ steps.snap.n }}"},
        CONTEXT,
    )
    assert rendered == {"ids": ["a", "b"], "text": "key alias/payments", "n": 2}


def test_when_expression() -> None:
    assert templating.evaluate("steps.snap.n == 2 and 'a' in steps.snap.ids", CONTEXT) is True


def test_undefined_names_fail_clearly() -> None:
    with pytest.raises(TemplateError, match="no attribute 'missing'"):
        templating.render_value("{{ steps.snap.missing }}", CONTEXT)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ inputs.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ range(10) }}",
    ],
)
def test_python_internals_are_unreachable(source: str) -> None:
    with pytest.raises(TemplateError):
        templating.render_value(source, CONTEXT)


@pytest.mark.parametrize(
    "source",
    [
        "{{ 7 ** 1000000000 }}",
        "{{ 'a' * 10**9 }}",
        "{{ [1] * 10**8 }}",
        "{{ 'ab'.ljust(999999999) }}",
        "{{ ('a' * 100000).replace('a', 'a' * 100000) }}",
        "{{ 'x' | truncate(999999999) }}",
        "{{ ('a' * 900000) ~ ('a' * 900000) }}",
    ],
)
def test_resource_bombs_are_refused_quickly(source: str) -> None:
    started = time.perf_counter()
    with pytest.raises(TemplateError, match=r"refused by the sandbox|too"):
        templating.render_value(source, CONTEXT)
    assert time.perf_counter() - started < 2  # refused before the work, not after


def test_static_check_names_internals_and_syntax() -> None:
    assert "Python internals" in (templating.check_template("{{ x.__class__ }}") or "")
    assert "invalid expression" in (templating.check_expression("a == = b") or "")
    assert templating.check_template("{{ steps.snap.ids | join(',') }}") is None


def test_loops_cannot_build_unbounded_output() -> None:
    started = time.perf_counter()
    with pytest.raises(TemplateError, match="output longer"):
        templating.render_value("{% for c in 'a' * 1000 %}{{ 'b' * 900000 }}{% endfor %}", CONTEXT)
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize(
    "source",
    [
        "{% for a in 'x' * 100000 %}{% for b in 'x' * 100000 %}{% endfor %}{% endfor %}",
        "{{ ([[0] * 100000] * 10000) | sum(start=[]) }}",
        "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
        "{{ (['x' * 1000000] * 1000000) | join }}",
        "{{ '%0900000000d' % 1 }}",
        "{{ '{:>900000000}'.format('a') }}",
        "{% set x = 'a' * 900000 %}{{ x ~ x ~ x }}",
        "{{ ['x' * 900000, 'y' * 900000] | join }}",
        "{{ ['a', 'b'] | join('x' * 900000) }}",
        "{{ ('x' * 900000) | tojson }}{{ ('x' * 900000) | tojson }}",
    ],
)
def test_work_bombs_are_refused(source: str) -> None:
    started = time.perf_counter()
    with pytest.raises(TemplateError):
        templating.render_value(source, CONTEXT)
    assert time.perf_counter() - started < templating.MAX_SECONDS + 1


def test_templates_cannot_change_the_run_context() -> None:
    context = {"inputs": {"key": "alias/a"}, "steps": {"s": {"ids": ["g1"]}}}
    for source in (
        "{{ steps.s.ids.append('evil') }}",
        "{{ inputs.update({'key': 'x'}) }}",
        "{{ inputs.clear() }}",
    ):
        with pytest.raises(TemplateError):
            templating.render_value(source, context)
    assert context == {"inputs": {"key": "alias/a"}, "steps": {"s": {"ids": ["g1"]}}}


def test_forbidden_statements_are_found_by_validation() -> None:
    assert "nested loops" in (
        templating.check_template("{% for a in x %}{% for b in y %}{% endfor %}{% endfor %}") or ""
    )
    assert "'macro' blocks" in (templating.check_template("{% macro f() %}{% endmacro %}") or "")
    assert templating.check_template("{% for g in steps.s.ids %}- {{ g }}\n{% endfor %}") is None

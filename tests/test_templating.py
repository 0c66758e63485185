"""The template sandbox: native values, strict undefined, no internals, bounded work.

Bounded work is asserted as memory, never as time: a refused template allocates next to
nothing (``tracemalloc``), whatever the machine's load. tests/test_template_sandbox.py holds
the injection payloads, run through playbook and report templates alike.
"""

from __future__ import annotations

import re
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from kmsir.errors import TemplateError
from kmsir.playbook import templating

CONTEXT = {"inputs": {"key": "alias/payments"}, "steps": {"snap": {"ids": ["a", "b"], "n": 2}}}
#: Peak bytes a refused template may allocate: the bombs below ask for 100 MB to 20 GB.
LITTLE = 16 * 1024 * 1024


@pytest.fixture(autouse=True)
def _unhurried(monkeypatch: pytest.MonkeyPatch) -> None:
    """No outcome here depends on the machine's load: only the tests that lower the time
    budget on purpose can reach it."""
    monkeypatch.setattr(templating, "MAX_SECONDS", 600.0)


def refusal(
    source: Any, render: Callable[[Any, Any], Any] = templating.render_value
) -> tuple[str, int]:
    """(the message ``source`` is refused with, the peak bytes allocated meanwhile)."""
    tracemalloc.start()
    try:
        with pytest.raises(TemplateError) as raised:
            render(source, CONTEXT)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return str(raised.value), peak


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
def test_resource_bombs_are_refused_before_the_work(source: str) -> None:
    message, peak = refusal(source)
    assert re.search(r"refused by the sandbox: .*(too large|larger than|longer than)", message)
    assert peak < LITTLE


def test_static_check_names_internals_and_syntax() -> None:
    assert "Python internals" in (templating.check_template("{{ x.__class__ }}") or "")
    assert "invalid expression" in (templating.check_expression("a == = b") or "")
    assert templating.check_template("{{ steps.snap.ids | join(',') }}") is None


def test_loops_cannot_build_unbounded_output() -> None:
    message, peak = refusal("{% for c in 'a' * 1000 %}{{ 'b' * 900000 }}{% endfor %}")
    assert "output longer than 1,000,000 characters" in message
    assert peak < LITTLE


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
    message, peak = refusal(source)
    assert "refused" in message
    assert peak < LITTLE


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


@pytest.mark.parametrize(
    ("source", "message"),
    [
        # the width is read once jinja has resolved the spec, whatever its form
        ("{{ '{:>900000000}'.format('a') }}", "format width 900000000 larger than 100,000"),
        ("{{ '{:>20000000000}'.format('a') }}", "format width 20000000000 larger than 100,000"),
        ("{{ '{:.900000000}'.format('a') }}", "format width 900000000 larger than 100,000"),
        ("{{ '{:>{}}'.format('a', '99999999') }}", "format width 99999999 larger than 100,000"),
        ("{{ '{:>{}}'.format('a', 99999999) }}", "format width 99999999 larger than 100,000"),
        ("{{ '{a:>999999999}'.format_map({'a': 1}) }}", "format width 999999999 larger than"),
        ("{% set f = '{:>999999999}'.format %}{{ f('a') }}", "format width 999999999 larger"),
        ("{{ ('{:>999999999}' | e).format('a') }}", "format width 999999999 larger than"),
        # many fields, each within bounds: refused once what one call wrote passes 1,000,000
        (
            "{{ ('{:>99999}' * 100000).format(*(['a'] * 100000)) }}",
            "format() result would be longer than 1,000,000 characters",
        ),
        ("{{ ('{0:>99999}' * 100000).format('a') }}", "format() result would be longer than"),
        # printf-style: each width, and all of them (with * arguments) together
        ("{{ '%0900000000d' % 1 }}", "format width 900000000 larger than 100,000"),
        ("{{ '%.900000000f' % 1.5 }}", "format width 900000000 larger than 100,000"),
        ("{{ '%*d' % (10**9, 1) }}", "format width 1000000000 larger than 100,000"),
        ("{{ ('%99999d' * 30) % ((1,) * 30) }}", "% format result would be longer than"),
        ("{{ ('%*d' * 30) % ((99999, 1) * 30) }}", "% format result would be longer than"),
        ("{{ '%(a(b))99999999s' % {'a(b)': 1} }}", "format width 99999999 larger than"),
        ("{{ '%0900000000d' | format(1) }}", "format width 900000000 larger than 100,000"),
        ("{{ ('%99999d' * 30) | format(*([1] * 30)) }}", "% format result would be longer than"),
    ],
)
def test_format_strings_are_bounded_before_formatting(source: str, message: str) -> None:
    refused, peak = refusal(source)
    assert f"refused by the sandbox: {message}" in refused
    assert peak < LITTLE  # '{:>900000000}' alone would build 900 MB


def test_format_strings_still_format() -> None:
    rendered = templating.render_value(
        "{{ '{:>6}|{:,}|{x:.2f}'.format('ab', 1234567, x=2.5) }} {{ '%d %s' % (1000000, 'x') }}"
        " {{ '%05.1f' | format(2.25) }} {{ '{0[0]}-{0[1]}'.format(steps.snap.ids) }}",
        CONTEXT,
    )
    assert rendered == "    ab|1,234,567|2.50 1000000 x 002.2 a-b"


def test_every_loop_iteration_checks_the_time(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = 0
    tick = templating._tick

    def counted() -> None:
        nonlocal ticks
        ticks += 1
        tick()

    monkeypatch.setattr(templating, "_tick", counted)
    templating.render_value("{% for c in 'x' * 5000 %}{% endfor %}", CONTEXT)
    assert ticks >= 5000  # an empty body calls nothing else that would check


def test_a_loop_past_the_time_budget_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templating, "MAX_SECONDS", 0.05)  # the loop needs far longer anywhere
    message, peak = refusal(
        "{% set big = 'y' * 900000 %}{% for a in 'x' * 100000 %}{{ 'z' in big }}{% endfor %}"
    )
    assert "refused by the sandbox: took longer than 0.05 s" in message
    assert peak < LITTLE


def test_a_slow_garbage_collection_during_a_render_is_not_the_template_s_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full collection of a big process (a report over a million events, a long test
    session) can take seconds of the thread's CPU; the template that happened to allocate
    when it started did not spend them."""
    import gc
    import time

    from kmsir.playbook.templating import budget

    slow: list[float] = []

    def slow_collection(phase: str, info: dict[str, Any]) -> None:
        rendering = budget._budget() is not None
        if phase == "start" and rendering and not slow:  # as one of millions of objects would
            until = time.thread_time() + 0.3
            while time.thread_time() < until:
                pass
            slow.append(0.3)

    monkeypatch.setattr(templating, "MAX_SECONDS", 0.1)
    thresholds = gc.get_threshold()
    gc.callbacks.append(slow_collection)  # after the budget's own: it sees the start first
    gc.set_threshold(1)  # the template's first container allocation starts a collection
    try:
        rendered = templating.render_value("{% for i in [0, 1, 2] %}{{ [i] }}{% endfor %}", {})
    finally:
        gc.set_threshold(*thresholds)
        gc.callbacks.remove(slow_collection)
    assert rendered == "[0][1][2]"
    assert slow  # the collection did happen during the render


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "{% set x %}{% for c in 'a' * 100 %}{{ 'b' * 900000 }}{% endfor %}{% endset %}",
            "captured text longer than 1,000,000 characters",
        ),
        (
            "{% if false %}{% block a %}{% for c in 'a' * 100 %}{{ 'b' * 900000 }}{% endfor %}"
            "{% endblock %}{% endif %}{{ self.a() }}",
            "'block' blocks are not allowed in playbook templates",
        ),
        ("{{ [" + ", ".join(["'x' * 900000"] * 20) + "] | length }}", "built more than 8,000,000"),
        ("{{ ('x' * 1000) | list | map('replace', 'x', 'y' * 99999) | join }}", "filter result"),
        ("{{ ('\t' * 1000).expandtabs(99999) }}", "expandtabs() result would be longer"),
        ("{{ ('a' * 1000).translate({97: 'b' * 99999}) }}", "translate() result would be longer"),
        ("{{ [2**127] * 900000 }}!", "printed value would be longer than 1,000,000"),
    ],
)
def test_what_escaped_the_per_value_limits_is_bounded_too(source: str, message: str) -> None:
    refused, peak = refusal(source)
    assert message in refused
    assert peak < LITTLE


def test_sum_still_sums() -> None:
    # lists and tuples are chained (Python's sum() copies them pairwise: quadratic)
    assert templating.render_value("{{ [[1], [2, 3]] | sum(start=[0]) }}", CONTEXT) == [0, 1, 2, 3]
    assert templating.render_value("{{ [(1,), (2,)] | sum(start=()) }}", CONTEXT) == (1, 2)
    assert templating.render_value("{{ [{'n': 2}, {'n': 3}] | sum(attribute='n') }}", CONTEXT) == 5


@pytest.mark.parametrize(
    "source",
    [
        "{{ ('a'.encode() * 200000000) | length }}",
        "{{ ('\\t' * 1000).encode().expandtabs(100000) }}",
        "{{ ('x' * 10000).encode().join([''.encode()] * 20000) }}",
    ],
)
def test_bytes_are_out_of_reach(source: str) -> None:
    """The size checks are written for text and lists: bytes, which nothing needs, are refused
    before any is built."""
    message, peak = refusal(source)
    assert "'encode' of 'str' object is unsafe" in message
    assert peak < 4 * 2**20


def test_a_with_value_shares_one_budget_across_its_templates() -> None:
    """Four hundred templates of a million characters each in one list: refused once the
    value as a whole has built past the budget, not kept four hundred times."""
    message, peak = refusal({"grant_ids": ["{{ 'a' * 1000000 }}"] * 400})
    assert "built more than" in message
    assert peak < 64 * 2**20


def test_a_filter_chain_thousands_long_is_refused_not_a_crash() -> None:
    """The static checks walk Jinja2's tree recursively: 3,000 filters deep exhausted the
    stack (``kmsir validate`` ended with an internal error)."""
    problem = templating.check_template("{{ a" + "|a" * 3000 + "|b }}")
    assert problem == "template syntax error: nested too deeply"

"""Template injection: what a hostile playbook or report template tries, and what it gets.

Each payload runs through the playbook sandbox (``templating.render_value``) and through
``kmsir report --template`` (in process). Each is refused with a clear message naming why,
allocating next to nothing (the bombs ask for gigabytes), and reads no file, environment
variable or network on the way.
"""

from __future__ import annotations

import re
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kmsir.errors import TemplateError
from kmsir.playbook import templating

from .clikit import cli

#: What a refused payload may allocate at its peak, in bytes: about twice the largest value a
#: template may hold (a million items: 8 MB of pointers). The bombs below would need from
#: hundreds of megabytes to terabytes.
LITTLE = 16 * 1024 * 1024
#: A value planted in the environment: no output or message may ever show it.
CANARY = "kmsir-canary-7f3a9c"
#: For the playbook sandbox: the names report payloads use exist here too.
CONTEXT = {
    "manifest": {"incident": "INC-1", "playbook": {"title": "T"}},
    "inputs": {"key": "alias/payments"},
    "steps": {"snap": {"ids": ["g1", "g2"]}},
}

INTERNALS = "Python internals are not reachable from templates"
UNSAFE = r"access to attribute '__\w+__' of '\w+' object is unsafe"

#: Attribute walks towards Python internals: refused before the template runs.
ATTRIBUTE_WALKS = [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ (1).__class__.__base__ }}",
    "{{ [].__class__.__base__.__subclasses__() }}",
    "{{ manifest.__class__.__init__.__globals__ }}",
    "{{ manifest['__class__'] }}",
    "{{ manifest.items.__self__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ self._TemplateReference__context.environment }}",
    "{{ self.__dict__ }}",
    "{{ self['__dict__'] }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ cycler.__init__.__globals__.os.environ }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ namespace.__call__.__globals__['sys'] }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{{ range.__self__ }}",
    "{% for x in [1] %}{{ loop.__class__ }}{% endfor %}",
    "{% for x in [1] %}{{ loop._iterator }}{% endfor %}",
    "{% for x in [1] %}{{ loop.__init__.__globals__ }}{% endfor %}",
    "{{ ''.format.__globals__ }}",
    "{{ ''.format.__wrapped__ }}",
    "{{ ''.__mod__ }}",
]
#: The same walks with the name computed, so no static check can see it: refused at run time.
DYNAMIC_WALKS = [
    "{{ manifest['__cla' ~ 'ss__'] }}",
    "{{ ''['__cla' ~ 'ss__'] }}",
    "{{ manifest[('_' * 2) ~ 'class' ~ ('_' * 2)] }}",
    "{% set n = '__in' ~ 'it__' %}{{ manifest[n] }}",
]
#: Attribute walks inside format strings, which jinja resolves itself.
FORMAT_WALKS = [
    "{{ '{0.__class__}'.format(manifest) }}",
    "{{ '{0.__init__.__globals__}'.format(manifest) }}",
    "{{ '{0.__class__.__mro__}'.format('x') }}",
    "{{ '{0[__class__]}'.format('x') }}",
    "{{ '{x.__class__}'.format(x=manifest) }}",
    "{{ '{x.__class__}'.format_map({'x': manifest}) }}",
    "{{ '{0.items.__self__}'.format(manifest) }}",
    "{% set f = '{0.__class__}'.format %}{{ f(manifest) }}",
    "{{ ('{0.__class__}' | e).format(manifest) }}",
]
#: Statements that would read other files.
FILE_READS = [
    "{% include '/etc/passwd' %}",
    "{% include 'report.md.j2' %}",
    "{% import 'report.md.j2' as r %}",
    "{% from 'report.md.j2' import x %}",
    "{% extends 'report.md.j2' %}",
]
#: Work and memory bombs, each with why it is refused (in the playbook sandbox, or in a report
#: template, whose limits are larger and which has more filters and ``range``). All are
#: refused before the work, or after a small part of it.
SIZE_BOMBS = [
    # jinja's ** is left-associative: (7 ** 10) ** 9, computed, then refused for its size
    ("{{ 7 ** 10**9 }}", r"integer result larger than 128 bits"),
    ("{{ 7 ** (10**9) }}", r"7 \*\* 1000000000 is too large to compute"),
    ("{{ 7 ** 1000000000 }}", r"too large to compute"),
    ("{{ 'a' * 10**9 }}", r"repeated sequence would be longer"),
    ("{{ [0] * 10**9 }}", r"repeated sequence would be longer"),
    ("{{ ([0] * 1000) * 10**6 }}", r"repeated sequence would be longer"),
    ("{{ range(10**9) | list }}", r"'range' is undefined|integer argument 1000000000 larger"),
    ("{{ range(10**9) }}", r"'range' is undefined|integer argument 1000000000 larger"),
    ("{{ ('a' * 100000).replace('a', 'a' * 100000) }}", r"replace\(\) result would be longer"),
    ("{{ ('a' * 100000) | replace('a', 'a' * 100000) }}", r"replace\(\) result would be longer"),
    ("{{ ('a' * 100000).replace('', 'b' * 1000) }}", r"replace\(\) result would be longer"),
    ("{{ ('x' * 3000) | list | join('y' * 3000) }}", r"join\(\) result would be longer"),
    ("{{ ('y' * 3000).join('x' * 3000) }}", r"join\(\) result would be longer"),
    ("{{ (['x' * 900000] * 5) | join }}", r"repeated sequence would be longer"),
    ("{{ 'x' | center(10**9) }}", r"No filter named 'center'|integer argument 1000000000"),
    ("{{ 'x'.center(10**9) }}", r"integer argument 1000000000 larger than 100,000"),
    ("{{ ('x\n' * 400000) | indent(99999) }}", r"No filter named 'indent'|indent\(\) result"),
    (
        "{{ ('x ' * 400000) | wordwrap(1, wrapstring='y' * 99999) }}",
        r"No filter named 'wordwrap'|wordwrap\(\) result",
    ),
    ("{{ 'x' | truncate(10**9) }}", r"integer argument 1000000000 larger"),
    ("{{ [1] | batch(10**9) | list }}", r"integer argument 1000000000 larger"),
    ("{{ [1] | slice(10**9) | list }}", r"integer argument 1000000000 larger"),
    ("{{ 'ab'.ljust(10**9) }}", r"integer argument 1000000000 larger"),
    ("{{ 'ab'.rjust(99999) * 99999 }}", r"repeated sequence would be longer"),
    ("{{ 'ab'.zfill(10**9) }}", r"integer argument 1000000000 larger"),
    ("{{ ('\t' * 10000).expandtabs(99999) }}", r"expandtabs\(\) result would be longer"),
    ("{{ ('a' * 10000).translate({97: 'b' * 99999}) }}", r"translate\(\) result would be longer"),
    ("{{ '{:>900000000}'.format('a') }}", r"format width 900000000 larger than 100,000"),
    ("{{ '{:>20000000000}'.format('a') }}", r"format width 20000000000 larger than 100,000"),
    ("{{ '{:.900000000}'.format('a') }}", r"format width 900000000 larger"),
    ("{{ '{:>{}}'.format('a', '99999999') }}", r"format width 99999999 larger"),
    ("{{ '{:>{}}'.format('a', 99999999) }}", r"format width 99999999 larger"),
    ("{{ '{:{}{}}'.format('a', '>', 99999999) }}", r"format width 99999999 larger"),
    ("{{ '{a:>999999999}'.format_map({'a': 1}) }}", r"format width 999999999 larger"),
    ("{{ ('{:>99999999}' | e).format('a') }}", r"format width 99999999 larger"),
    (
        "{{ ('{:>99999}' * 100000).format(*(['a'] * 100000)) }}",
        r"format\(\) result would be longer",
    ),
    ("{{ ('{0:>99999}' * 100000).format('a') }}", r"format\(\) result would be longer"),
    ("{{ ('%99999s' * 100000) % (('a',) * 100000) }}", r"% format result would be longer"),
    ("{{ ('%*s' * 1000) % ((99999, 'a') * 1000) }}", r"% format result would be longer"),
    ("{{ '%.900000000f' % 1.5 }}", r"format width 900000000 larger"),
    ("{{ '%0900000000d' % 1 }}", r"format width 0?900000000 larger"),
    ("{{ '%(a)0900000000d' % {'a': 1} }}", r"format width 0?900000000 larger"),
    ("{{ '%(a(b))99999999s' % {'a(b)': 1} }}", r"format width 99999999 larger"),
    ("{{ '%*d' % (10**9, 1) }}", r"format width 1000000000 larger"),
    ("{{ '%0900000000d' | format(1) }}", r"format width 0?900000000 larger"),
    ("{{ ('%99999d' * 1000) | format(*([1] * 1000)) }}", r"% format result would be longer"),
    ("{{ ([[1, [2, [3]]]] * 100) | tojson(indent=99999) }}", r"tojson\(\) result would be longer"),
    ("{{ ([[0] * 1000] * 5000) | sum(start=[]) }}", r"repeated sequence would be longer"),
    ("{{ [2**127] * 900000 }}x", r"printed value would be longer"),
    (
        "{{ ('x' * 1000) | list | map('replace', 'x', 'y' * 99999) | join }}",
        r"filter result larger than",
    ),
    ("{{ ('a' * 3000000) ~ ('a' * 3000000) }}", r"longer than"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", r"'macro' blocks are not|RecursionError"),
    (
        "{% if false %}{% block a %}x{% endblock %}{% endif %}{{ self.a() }}",
        r"'block' blocks are not allowed",
    ),
]
#: Bombs refused once the render's overall budgets are spent: bounded, but by those budgets
#: (1 MB and 8 M built for playbook templates, 32 MiB of output and 64 Mi built for reports).
BUDGET_BOMBS = [
    ("{% for c in 'a' * 1000 %}{{ 'b' * 900000 }}{% endfor %}", r"output longer than"),
    (
        "{% set x %}{% for c in 'a' * 100 %}{{ 'b' * 900000 }}{% endfor %}{% endset %}{{ x }}",
        r"captured text longer than|built more than",
    ),
    (
        "{% macro f() %}{{ 'x' * 900000 }}{{ f() }}{% endmacro %}{{ f() }}",
        r"'macro' blocks are not allowed|built more than",
    ),
    ("{{ [" + ", ".join(["'x' * 900000"] * 80) + "] | length }}", r"built more than"),
]
#: Loops that would run for hours; refused once the (lowered) time budget is spent.
TIME_BOMBS = [
    "{% for a in 'x' * 1000000 %}{% endfor %}",
    "{% set big = 'y' * 900000 %}{% for a in 'x' * 100000 %}{{ 'z' in big }}{% endfor %}",
    "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
    "{% for a in range(100000) if a in range(100000) | list %}{% endfor %}",
    "{% for a in range(99999) %}{% for b in range(99999) %}{{ b }}{% endfor %}{% endfor %}",
]
#: Names a web template engine might offer, or that lead out of the sandbox: none exists.
NO_SUCH_NAMES = [
    "lipsum",
    "url_for",
    "config",
    "request",
    "session",
    "g",
    "get_flashed_messages",
    "os",
    "environ",
    "open",
    "__builtins__",
    "__import__",
    "getattr",
    "globals",
    "eval",
    "exec",
    "sys",
    "subprocess",
    "environment",
    "context",
]
PAYLOADS = (
    ATTRIBUTE_WALKS
    + DYNAMIC_WALKS
    + FORMAT_WALKS
    + FILE_READS
    + [p for p, _ in SIZE_BOMBS + BUDGET_BOMBS]
    + TIME_BOMBS
    + [f"{{{{ {n} }}}}" for n in NO_SUCH_NAMES]
    + [f"{{{{ {n}() }}}}" for n in NO_SUCH_NAMES]
)

# -- what no payload may do: touch files, processes or the network -----------------------

_watching: list[tuple[str, tuple[Any, ...]]] | None = None
_allowed: tuple[str, ...] = ()
#: Python's own files (modules imported on first use) may be read.
_PYTHON = (sys.prefix, sys.base_prefix, str(Path(templating.__file__).parents[1]))


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if _watching is None:
        return
    if event == "open":
        if not str(args[0]).startswith(_allowed + _PYTHON):
            _watching.append((event, args))
    elif event.startswith(("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn")):
        _watching.append((event, args))


sys.addaudithook(_audit)  # cannot be removed: it only records while a test watches


@contextmanager
def watched(allowed: tuple[Path, ...]) -> Iterator[list[tuple[str, tuple[Any, ...]]]]:
    """Record files opened outside ``allowed`` (and Python's own), sockets and processes."""
    global _watching, _allowed
    _watching, _allowed = [], tuple(str(a) for a in allowed)
    try:
        yield _watching
    finally:
        _watching = None


@pytest.fixture(autouse=True)
def _canary(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KMSIR_CANARY", CANARY)


@pytest.fixture(autouse=True)
def _unhurried(monkeypatch: pytest.MonkeyPatch) -> None:
    """No outcome here depends on the machine's load: only the tests that lower the time
    budgets on purpose can reach them."""
    monkeypatch.setattr(templating, "MAX_SECONDS", 600.0)
    monkeypatch.setattr(templating, "REPORT_MAX_SECONDS", 600.0)


# -- the two ways in --------------------------------------------------------------------


@dataclass(frozen=True)
class WayIn:
    """Renders a template source: (its refusal or ``None``, what it rendered)."""

    run: Callable[[str], tuple[str | None, str]]
    #: What it may read besides Python's own files.
    reads: tuple[Path, ...]


def through_playbook(source: str) -> tuple[str | None, str]:
    """In the playbook sandbox, as a ``with:`` value."""
    try:
        return None, str(templating.render_value(source, CONTEXT))
    except TemplateError as exc:
        return str(exc), ""


def through_report(bundle: Path, workdir: Path) -> WayIn:
    """Through ``kmsir report BUNDLE --template mine.j2 --out ...`` (in process)."""

    def run(source: str) -> tuple[str | None, str]:
        template, out = workdir / "mine.j2", workdir / "out.txt"
        template.write_text(source)
        out.unlink(missing_ok=True)
        ran = cli("report", bundle, "--template", template, "--out", out)
        if ran.exit_code == 0:
            return None, out.read_text()
        assert ran.exit_code == 2 and ran.stdout == "", ran.output
        assert ran.stderr.startswith("kmsir: error: report template mine.j2"), ran.stderr
        assert ran.stderr.count("\n") == 1 and "Traceback" not in ran.stderr
        return ran.stderr, ""

    run("{{ manifest.incident }}")  # imports done and caches warm, outside any measurement
    return WayIn(run, (bundle, workdir))


@pytest.fixture(scope="module", params=["playbook", "report"])
def way_in(
    request: pytest.FixtureRequest, demo_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> WayIn:
    if request.param == "playbook":
        return WayIn(through_playbook, ())
    return through_report(demo_bundle, tmp_path_factory.mktemp("templates"))


def refused(way: WayIn, source: str) -> tuple[str, int, list[Any]]:
    """Run ``source``; (its refusal, peak bytes allocated meanwhile, what it touched)."""
    tracemalloc.start()
    try:
        with watched(way.reads) as touched:
            problem, output = way.run(source)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert problem is not None, f"not refused: {source!r} rendered {output[:200]!r}"
    assert CANARY not in problem
    return problem, peak, touched


# -- the tests --------------------------------------------------------------------------


@pytest.mark.parametrize("source", ATTRIBUTE_WALKS)
def test_attribute_walks_to_internals_are_refused(way_in: WayIn, source: str) -> None:
    problem, peak, touched = refused(way_in, source)
    assert INTERNALS in problem and "refused by the sandbox" in problem
    assert peak < LITTLE and touched == []


@pytest.mark.parametrize("source", DYNAMIC_WALKS + FORMAT_WALKS)
def test_computed_and_format_string_walks_are_refused(way_in: WayIn, source: str) -> None:
    problem, peak, touched = refused(way_in, source)
    assert re.search(UNSAFE, problem) and "refused by the sandbox" in problem
    assert peak < LITTLE and touched == []


@pytest.mark.parametrize("source", FILE_READS)
def test_nothing_reads_another_file(way_in: WayIn, source: str) -> None:
    problem, peak, touched = refused(way_in, source)
    assert re.search(r"'(include|import|fromimport|extends)' blocks are not allowed", problem)
    assert peak < LITTLE and touched == []


@pytest.mark.parametrize(("source", "why"), SIZE_BOMBS)
def test_size_bombs_are_refused_allocating_little(way_in: WayIn, source: str, why: str) -> None:
    problem, peak, touched = refused(way_in, source)
    assert re.search(why, problem), problem
    assert peak < LITTLE, f"{peak:,} bytes"
    assert touched == []


@pytest.mark.parametrize(("source", "why"), BUDGET_BOMBS)
def test_budget_bombs_are_refused_within_the_budget(way_in: WayIn, source: str, why: str) -> None:
    problem, peak, touched = refused(way_in, source)
    assert re.search(why, problem), problem
    # what was output or built reaches its budget and no more (playbooks: 1 MB of output,
    # 8 M built; reports: 32 MiB, 64 Mi); unbounded, each would take gigabytes
    budget = templating.MAX_BUILT if way_in.run is through_playbook else templating.REPORT_MAX_BUILT
    assert peak < 1.5 * budget + LITTLE
    assert touched == []


@pytest.mark.parametrize("source", TIME_BOMBS)
def test_endless_loops_are_stopped(
    way_in: WayIn,
    source: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # budgets lowered so the test is quick; every payload would run for minutes to hours
    monkeypatch.setattr(templating, "MAX_SECONDS", 0.05)
    monkeypatch.setattr(templating, "REPORT_MAX_SECONDS", 0.05)
    problem, peak, touched = refused(way_in, source)
    assert re.search(
        r"took longer than 0.05 s|nested loops are not allowed|'range' is undefined", problem
    ), problem
    assert peak < LITTLE and touched == []


@pytest.mark.parametrize("name", NO_SUCH_NAMES)
def test_no_helper_reaches_outside(way_in: WayIn, name: str) -> None:
    # a missing name fails a playbook template and renders empty in a report: either way
    # there is nothing behind it
    problem, output = way_in.run(f"{{{{ {name} }}}}")
    assert (problem is not None and f"'{name}' is undefined" in problem) or output == ""
    assert CANARY not in output
    problem, peak, touched = refused(way_in, f"{{{{ {name}() }}}}")
    assert f"'{name}' is undefined" in problem
    assert peak < LITTLE and touched == []


def test_every_payload_is_tried_once() -> None:
    assert len(PAYLOADS) == len(set(PAYLOADS))

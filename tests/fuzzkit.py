"""Playbook fuzzing kit: hypothesis strategies for broken playbooks, and the properties every
command must keep when handed one.

Four families of documents, from least to most structured:

- ``token_soup``: random sequences of YAML-significant fragments (indicators, tags, anchors,
  aliases, NUL bytes, invalid UTF-8, bidi controls, line separators, template braces);
- ``mutated_bytes``: a shipped playbook (``playbooks/*.yaml``) with bytes flipped, YAML
  fragments inserted, ranges deleted, lines duplicated or re-indented, or the end cut off;
- ``mutated_fields``: a shipped playbook parsed, one known field (``id``, ``title``,
  ``steps``, a step's ``action``/``with``/``when``/``on_error``/``retries``, an input's
  ``type``/``default``/``choices``...) replaced by a hostile value (a wrong type, a huge
  string, deep nesting, an alias bomb, a broken or escaping template, raw YAML such as an
  out-of-range date or a 5,000-digit integer), removed, or joined by an unknown key;
- ``runnable``: a shipped playbook kept valid, but with templates and parameters that fail
  only at run time (for ``kmsir run --check``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml
from hypothesis import strategies as st

from kmsir.inert import has_hidden

from .clikit import Ran
from .conftest import PLAYBOOKS

SHIPPED = {path.name: path.read_bytes() for path in sorted(PLAYBOOKS.glob("*.yaml"))}
#: Longest problem line a user may be shown: a message never echoes a huge input back.
MAX_LINE = 300
#: ``FILE:LINE:COL: message``, LINE and COL 1-based.
PROBLEM = re.compile(r"^(?P<file>.+?):(?P<line>[1-9]\d*):(?P<col>[1-9]\d*): (?P<message>\S.*)$")

#: Fragments that mean something to a YAML reader, scanner or parser, or to Jinja2.
# fmt: off
FRAGMENTS = [
    b":", b": ", b"-", b"- ", b"\n", b"\r\n", b"\r", b"\t", b" ", b"    ", b"{", b"}", b"[",
    b"]", b",", b"&a ", b"*a", b"*b ", b"&b [*a, *a, *a] ", b"!", b"!!", b"!x ", b"? ", b"|",
    b">-", b"'", b'"', b"#", b"%YAML 1.1\n", b"%TAG !e! tag:e,2000:\n", b"---\n", b"...\n",
    b"<<: ", b"~", b"null", b"true", b"0x1F", b".nan", b"-.inf", b"1e999", b"1:20:30",
    b"2001-13-45", b"!!python/object/apply:os.system [id] ", b"!!python/name:os.system ",
    b"!!binary aGk= ", b"!!set {a} ", b"!!omap [a: 1] ", b"!!timestamp x ", b"!!int x ",
    b"!!bool maybe ", b"!!float x ", b"!<tag:evil> x ", b"\x00", b"\x07", b"\x1b[2J", b"\x7f",
    b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xef\xbf\xbe", b"\xef\xbb\xbf", b"\xc2\x85",
    b"\xe2\x80\xa8", b"\xe2\x80\xae", b"\xe2\x81\xa6", b"{{", b"}}", b"{%", b"%}", b"\\",
    b"@", b"`", b"id: ", b"title: ", b"steps:", b"action: ", b"with: ", b"when: ", b"inputs:",
]
# fmt: on

#: Templates that are broken, reach for Python internals or would do unbounded work.
BAD_TEMPLATES = [
    "{{",
    "}}",
    "{{ a b }}",
    "{{ steps. }}",
    "{% for %}",
    "{% if x %}",
    "{% endfor %}",
    "{{ x.__class__.__mro__ }}",
    "{{ ''.__class__.__base__.__subclasses__() }}",
    "{{ inputs['__class__'] }}",
    "{{ steps._private }}",
    "{{ 7 ** 1000000000 }}",
    "{{ 'a' * 10**9 }}",
    "{{ range(10**9) | list }}",
    "{{ lipsum(10**6) }}",
    "{{ cycler.__init__.__globals__ }}",
    "{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}",
    "{% for a in b %}{% for c in d %}{% endfor %}{% endfor %}",
    "{% for a in b recursive %}{{ loop(a) }}{% endfor %}",
    "{% include 'x' %}",
    "{% import 'x' as y %}",
    "{% set x = 1 %}{{ x }}",
    "{{ steps.nope.key_id }}",
    "{{ steps['a\nb'].x }}",
    "{{ x\n\n\n }}",
    "{{ '\x1b[2J\u202e' }}",
    "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}",
    "{{ " + "[" * 3000 + "]" * 3000 + " }}",
    "{{ " + "a|" * 3000 + "b }}",
    "{{ " + "not " * 3000 + "x }}",
    "{{ 'unterminated }}",
    "{{ " + "z" * 20_000 + " z }}",
    "{{ 1 +",
    "{{ {} }}{{ [] }}",
    "{# comment",
]

#: Templates and expressions that parse, but fail (or go too far) when rendered.
RUNTIME_TEMPLATES = [
    "{{ 1 / 0 }}",
    "{{ 1 // 0 }}",
    "{{ 7 ** 1000 }}",
    "{{ 'a' * 2000000 }}",
    "{{ [1] * 2000000 }}",
    "{{ inputs.key ~ 'x' * 999999 }}",
    "{{ inputs.nope }}",
    "{{ steps.snapshot.nope }}",
    "{{ steps.snapshot.key_id | int }}",
    "{{ steps.snapshot.key_id * 1000000 }}",
    "{{ '%999999999d' % 1 }}",
    "{{ '{:999999999}'.format(1) }}",
    "{{ now }}",
    "{{ incident }}",
    "{{ run }}",
    "{{ none }}",
    "{{ {'a': 1} }}",
    "{{ [none, 1, 'x'] }}",
    "{{ inputs }}",
    "{{ steps }}",
    "{{ 'x' | truncate(10**9) }}",
    "{{ 'x' | replace('x', 'y' * 999999) }}",
    "{{ ('a' * 1000) | batch(10**6) | list }}",
    "{{ '\x00\x1b[2J\u202e' }}",
    "{{ 1.5 }}",
    "{{ -1 }}",
    "{{ true }}",
    "{{ 10 ** 30 }}",
    "{% for i in steps.snapshot.grants %}{{ i }}{% endfor %}",
    "alias/{{ inputs.key }}",
]

#: Raw YAML put where a value goes, for what ``yaml.safe_dump`` would never write.
RAW_VALUES = [
    "1" * 5000,
    "0x" + "f" * 5000,
    "-1:" + "59:" * 3000 + "1",
    "2001-13-45",
    "2001-02-30 25:61:00",
    "!!int x",
    "!!float x",
    "!!bool maybe",
    "!!timestamp x",
    "!!binary '%%%'",
    "!!binary aGVsbG8=",
    "!!str [1]",
    "!!map x",
    "!!seq x",
    "!!null x",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!!pairs [a: 1]",
    "!!python/object/apply:os.system [id]",
    "!!python/name:os.system",
    "!!python/tuple [1, 2]",
    "!<tag:" + "t" * 3000 + "> x",
    "*" + "a" * 3000,
    "*undefined",
    "&x [*x]",
    "{a: 1, a: 2}",
    "{? [a]: 1}",
    "{<<: {a: 1}}",
    "{*x : 1}",
    "[" * 300 + "]" * 300,
    "{a: " * 300 + "1" + "}" * 300,
    "'unterminated",
    '"bad escape \\q"',
    '"\\ud800"',
    "{1: a, true: b, 1.0: c, null: d}",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    ".nan",
    "-.inf",
    "0o17",
    "0b101",
    "1_000",
    "190:20:30",
    "|\n  block\n  text",
]


@dataclass(frozen=True)
class _Raw:
    """A placeholder for raw YAML text, substituted after dumping."""

    text: str


def _bomb(width: int, levels: int) -> list[Any]:
    """An alias bomb once dumped: each level repeats the one below ``width`` times, shared."""
    level: list[Any] = ["lol"] * width
    for _ in range(levels):
        level = [level] * width
    return level


def _deep(depth: int, *, mapping: bool) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"k": value} if mapping else [value]
    return value


_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
#: Characters that break lines, terminals or quoting when echoed back.
# fmt: off
_NASTY_CHARS = [
    "a", "\n", "\r", "\t", "\x00", "\x1b[2J", "\x85", "\u2028", "\u202e", "\u2066", "\ufeff",
    "'", '"', "\\", ":", "#", "{{", "}}", " ",
]
# fmt: on
_HOSTILE_TEXT = st.one_of(_TEXT, st.lists(st.sampled_from(_NASTY_CHARS), max_size=30).map("".join))
_HUGE_TEXT = st.builds(
    lambda unit, n: unit * n,
    st.sampled_from(["x", "é", "a\n", "\u202e", "{{ x }}", "- "]),
    st.integers(1_000, 200_000),
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    _HOSTILE_TEXT,
    _HUGE_TEXT,
    st.sampled_from(BAD_TEMPLATES),
    st.sampled_from(RUNTIME_TEMPLATES),
    st.sampled_from(RAW_VALUES).map(_Raw),
)
_KEYS = st.one_of(
    st.sampled_from(["id", "key", "text", "question", "choices", "type", "default", "with"]),
    _HOSTILE_TEXT,
    st.integers(-5, 5),
    st.none(),
    st.booleans(),
    st.builds(lambda n: "k" * n, st.integers(1_000, 50_000)),
)


def hostile_values() -> st.SearchStrategy[Any]:
    """Any value a YAML field could be given, weighted toward the ones that break things."""
    nested = st.recursive(
        _SCALARS,
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(_KEYS, children, max_size=4),
        ),
        max_leaves=8,
    )
    return st.one_of(
        _SCALARS,
        nested,
        st.builds(_deep, st.integers(10, 200), mapping=st.booleans()),
        st.builds(_bomb, st.integers(2, 12), st.integers(2, 6)),
    )


def _dump(data: Any, draw: st.DrawFn) -> bytes:
    """``data`` as YAML in a drawn style, with ``_Raw`` placeholders replaced by their text."""
    raws: list[str] = []

    def swap(value: Any) -> Any:
        if isinstance(value, _Raw):
            raws.append(value.text)
            return f"RAWVALUE{len(raws) - 1}X"
        if isinstance(value, dict):
            return {key: swap(item) for key, item in value.items()}
        if isinstance(value, list):
            # keep shared lists shared, so that the dump has anchors and aliases
            return (
                value
                if not any(isinstance(v, _Raw | dict | list) for v in value)
                else [swap(item) for item in value]
            )
        return value

    text = yaml.safe_dump(
        swap(data),
        sort_keys=False,
        allow_unicode=draw(st.booleans()),
        default_flow_style=draw(st.sampled_from([False, None, True])),
        width=draw(st.sampled_from([80, 4096])),
    )
    for index, raw in enumerate(raws):
        text = text.replace(f"RAWVALUE{index}X", raw)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def token_soup(draw: st.DrawFn) -> bytes:
    """A document of YAML-significant fragments and random bytes."""
    parts = draw(
        st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=8)), max_size=60)
    )
    return b"".join(parts)


@st.composite
def mutated_bytes(draw: st.DrawFn) -> bytes:
    """A shipped playbook with a few byte-level mutations."""
    data = bytearray(SHIPPED[draw(st.sampled_from(sorted(SHIPPED)))])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "line", "indent"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[at:at] = draw(st.sampled_from(FRAGMENTS))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 40))]
        elif op == "truncate":
            del data[at:]
        elif op in ("line", "indent"):
            lines = bytes(data).split(b"\n")
            index = draw(st.integers(0, len(lines) - 1))
            if op == "line":  # a duplicated line: duplicate keys, a repeated step id...
                lines.insert(index, lines[index])
            else:
                lines[index] = draw(st.sampled_from([b" ", b"\t", b"   ", b""])) + lines[index]
            data = bytearray(b"\n".join(lines))
    return bytes(data)


def _field_paths(data: dict[str, Any]) -> list[tuple[str | int, ...]]:
    """Every known playbook field in ``data``, plus the optional ones it lacks."""
    top = ("id", "title", "version", "severity", "description", "references", "mitre")
    paths: list[tuple[str | int, ...]] = [(name,) for name in (*top, "inputs", "steps")]
    inputs = data.get("inputs")
    for name, spec in inputs.items() if isinstance(inputs, dict) else ():
        paths.append(("inputs", name))
        paths += [
            ("inputs", name, field)
            for field in ("type", "default", "choices", "required", "description")
        ]
        if isinstance(spec, dict):
            paths += [("inputs", name, field) for field in spec]
    steps = data.get("steps")
    for index, step in enumerate(steps if isinstance(steps, list) else ()):
        paths.append(("steps", index))
        if not isinstance(step, dict):
            continue
        paths += [
            ("steps", index, field)
            for field in ("id", "action", "with", "when", "on_error", "retries", "name", "phase")
        ]
        params = step.get("with")
        if isinstance(params, dict):
            paths += [("steps", index, "with", key) for key in params]
    return paths


def _set(data: Any, path: tuple[str | int, ...], op: str, value: Any, key: Any) -> None:
    *parents, last = path
    target = data
    for part in parents:
        target = target[part]
    if op == "remove":
        if isinstance(target, dict):
            target.pop(last, None)
        elif isinstance(target, list) and isinstance(last, int) and len(target) > 1:
            del target[last]
    elif op == "add" and isinstance(target, dict):
        target[key] = value
    else:
        target[last] = value


@st.composite
def mutated_fields(draw: st.DrawFn) -> bytes:
    """A shipped playbook with known fields replaced by hostile values, removed, or joined
    by unknown keys; dumped in a drawn YAML style."""
    data = yaml.safe_load(SHIPPED[draw(st.sampled_from(sorted(SHIPPED)))])
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            path = draw(st.sampled_from(_field_paths(data)))
            op = draw(st.sampled_from(["replace", "replace", "replace", "remove", "add"]))
            value = draw(hostile_values())
        else:  # where templates go: most fields are strings, this is where they are parsed
            path = draw(st.sampled_from(_template_paths(data)))
            op = "replace"
            value = draw(_TEMPLATED)
        try:
            _set(data, path, op, value, draw(_KEYS))
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced what this path went through
    return _dump(data, draw)


_TEMPLATED = st.one_of(
    st.sampled_from(BAD_TEMPLATES + RUNTIME_TEMPLATES),
    st.builds(
        lambda before, template, after: before + template + after,
        _HOSTILE_TEXT,
        st.sampled_from(BAD_TEMPLATES),
        _HOSTILE_TEXT,
    ),
    st.lists(st.sampled_from(BAD_TEMPLATES), min_size=1, max_size=3),
    st.dictionaries(_KEYS, st.sampled_from(BAD_TEMPLATES), min_size=1, max_size=2),
)


def _template_paths(data: dict[str, Any]) -> list[tuple[str | int, ...]]:
    """Where ``data``'s templates and expressions are: each step's ``when`` and parameters."""
    paths: list[tuple[str | int, ...]] = [("title",)]
    steps = data.get("steps")
    for index, step in enumerate(steps if isinstance(steps, list) else ()):
        if isinstance(step, dict):
            paths += [("steps", index, "when"), ("steps", index, "with", "text")]
            params = step.get("with")
            if isinstance(params, dict):
                paths += [("steps", index, "with", key) for key in params]
    return paths


@st.composite
def runnable(draw: st.DrawFn) -> bytes:
    """A shipped playbook that still validates, mostly, but whose steps fail at run time:
    templates that go too far, parameters of the wrong type, conditions that raise."""
    # the rogue-grant scenario's own playbook a third of the time: its inputs and answers fit, so
    # its runs get furthest
    name = draw(st.sampled_from(["kms-key-compromise.yaml", *sorted(SHIPPED)]))
    data = yaml.safe_load(SHIPPED[name])
    steps = data["steps"]
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(steps) - 1))
        step = steps[index]
        field = draw(st.sampled_from(["with", "when", "retries", "on_error", "drop"]))
        if field == "with":
            params = step.setdefault("with", {})
            name = draw(st.sampled_from(sorted(params) or ["key"]))
            params[name] = draw(
                st.one_of(
                    st.sampled_from(RUNTIME_TEMPLATES),
                    st.none(),
                    st.integers(-(2**40), 2**40),
                    st.booleans(),
                    st.lists(st.sampled_from(RUNTIME_TEMPLATES), max_size=3),
                    _HOSTILE_TEXT,
                )
            )
        elif field == "when":
            template = draw(st.sampled_from(RUNTIME_TEMPLATES))
            step["when"] = template.removeprefix("{{ ").removesuffix(" }}")
        elif field == "retries":
            step["retries"] = draw(st.integers(0, 10))
        elif field == "on_error":
            step["on_error"] = draw(st.sampled_from(["stop", "continue", "ask"]))
        elif len(steps) > 1:
            del steps[index]
    return _dump(data, draw)


def playbook_documents() -> st.SearchStrategy[bytes]:
    """Every family of broken document, for ``validate`` and ``plan``."""
    return st.one_of(token_soup(), mutated_bytes(), mutated_fields())


# --- the properties -----------------------------------------------------------------------


def assert_no_crash(ran: Ran) -> None:
    """Never a traceback, never exit 3 ("internal error")."""
    assert "Traceback" not in ran.output, ran.output[-3000:]
    assert "internal error" not in ran.stderr, ran.stderr[-3000:]
    assert ran.exit_code != 3, ran.stderr[-3000:]


def assert_problem_lines(stderr: str, source: str, raw: bytes) -> list[str]:
    """Every stderr line is ``SOURCE:LINE:COL: message``, one line, short, inert, inside the
    file; return the lines."""
    text = raw.decode("utf-8", "replace")
    most_lines = max(len(text.splitlines()), raw.count(b"\n")) + 1
    lines = stderr.split("\n")
    assert lines[-1] == "", repr(stderr[-300:])  # each problem ends with its newline
    lines = lines[:-1]
    assert lines, "an invalid playbook must say what is wrong"
    for line in lines:
        assert len(line) < MAX_LINE, line[:MAX_LINE] + "..."
        assert not has_hidden(line), repr(line)  # no control, bidi or line-separator character
        assert "\r" not in line, repr(line)
        match = PROBLEM.match(line)
        assert match is not None, repr(line)
        assert match["file"] == source, repr(line)
        assert int(match["line"]) <= most_lines, repr(line)
    return lines

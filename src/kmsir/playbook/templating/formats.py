"""Format strings, bounded: ``str.format``/``format_map``, ``%`` and the ``format`` filter.

A width or precision in a format string builds text of that length whatever the value:
``'{:>900000000}'.format('a')``. ``str.format`` goes through ``_BoundedFormatter``, which
checks each field's spec once resolved and counts what it writes; printf-style ``%`` (the
operator and the filter) is parsed as CPython does and refused before formatting when a
width is too large or the fields together would be too long.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedFormatter
from markupsafe import EscapeFormatter

# the package, for ``_tick``: read there at call time, so patching
# ``kmsir.playbook.templating._tick`` reaches every time check
from kmsir.playbook import templating
from kmsir.playbook.templating.budget import _check_int, _printed_size, _shown_number, _too_long
from kmsir.playbook.templating.limits import MAX_INT_ARG

if TYPE_CHECKING:
    from kmsir.playbook.templating.environment import BoundedEnvironment

_DIGITS = re.compile(r"\d+")


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
        templating._tick()
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

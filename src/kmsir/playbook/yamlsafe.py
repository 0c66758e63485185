"""Safe YAML loading with source positions, for playbooks, scenarios and answers files.

Stricter than ``yaml.safe_load``: duplicate keys are errors, only core-schema tags are
accepted (plus timestamps, which ``since:``-style parameters rely on), merge keys are refused,
integers are bounded, and alias expansion is bounded (a "billion laughs" document is refused
after ``MAX_NODES`` nodes, in milliseconds). Every value's position is kept so that
validation errors can name ``file:line:col``; every problem is one line of that form, however
broken the input (invalid UTF-8, control characters, a value the YAML library cannot
construct), and never quotes more than a few dozen characters of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kmsir import inert
from kmsir.errors import PlaybookError

#: Most nodes (after alias expansion) one document may hold.
MAX_NODES = 100_000
#: Largest file accepted, in bytes.
MAX_BYTES = 2 * 1024 * 1024
#: Most scalar text one document may expand to through aliases, in characters.
MAX_EXPANDED_CHARS = 8 * 1024 * 1024
#: Deepest nesting accepted.
MAX_DEPTH = 64
#: Largest integer accepted, in bits: more than any count, size or epoch a playbook needs,
#: and far below Python's limit on converting an integer to text (4,300 digits), which
#: ``repr`` in an error message or JSON in the journal would otherwise hit.
MAX_INT_BITS = 64

Path_ = tuple[str | int, ...]
_COLLECTIONS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})
_CORE = "tag:yaml.org,2002:"
_INT = _CORE + "int"
#: Scalar tags beyond the core schema that are still refused: nothing a playbook, scenario or
#: answers file holds is raw bytes.
_REFUSED_SCALARS = frozenset({_CORE + "binary"})


@dataclass(frozen=True)
class Mark:
    """A 1-based line and column in a source file."""

    line: int
    column: int


@dataclass
class Document:
    """A loaded YAML document: plain Python data plus the position of every value."""

    source: str
    data: Any
    raw: bytes
    marks: dict[Path_, Mark] = field(default_factory=dict)

    def mark_for(self, path: Path_) -> Mark:
        """The position of the deepest known value on ``path`` (the file start at worst)."""
        for end in range(len(path), -1, -1):
            found = self.marks.get(tuple(path[:end]))
            if found is not None:
                return found
        return Mark(1, 1)

    def where(self, path: Path_) -> str:
        """``file:line:col`` for ``path``."""
        mark = self.mark_for(path)
        return f"{self.source}:{mark.line}:{mark.column}"


def shorten(value: object, limit: int = 60) -> str:
    """``repr`` of ``value`` cut to ``limit`` characters, so messages never echo huge inputs.

    ``repr`` writes newlines, control and bidi characters as escapes, so the result is always
    one inert line. Huge values are cut before ``repr`` (which would copy them whole, and
    which refuses integers of more than 4,300 digits).
    """
    if isinstance(value, str | bytes) and len(value) > limit:
        value = value[:limit]
    elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<integer of {value.bit_length():,} bits>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(text: str, limit: int = 160) -> str:
    """``text`` (a library's message) as one inert line of at most ``limit`` characters."""
    return inert.one_line(text, limit)


def _position(text: str, index: int) -> Mark:
    """The 1-based line and column of ``text[index]``, counting line breaks as PyYAML does
    (so they agree with every other position reported)."""
    head = text[:index]
    line = 1
    start = 0
    for found in re.finditer("\r\n|[\r\n\x85\u2028\u2029]", head):
        line += 1
        start = found.end()
    return Mark(line, index - start + 1)


def load_file(path: Path, *, source: str | None = None) -> Document:
    """Read and parse ``path``; every problem is a ``PlaybookError`` naming file:line:col."""
    name = source or str(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise PlaybookError([f"{name}:1:1: file is {size:,} bytes, more than {MAX_BYTES:,}"])
        raw = path.read_bytes()
    except OSError as exc:
        raise PlaybookError([f"{name}: cannot read: {exc.strerror or exc}"]) from None
    return load_bytes(raw, name)


def load_bytes(raw: bytes, source: str) -> Document:
    """Parse YAML bytes (one document) into a ``Document``."""
    if len(raw) > MAX_BYTES:
        raise PlaybookError([f"{source}:1:1: document larger than {MAX_BYTES:,} bytes"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # the text before the bad byte is valid UTF-8 by definition: count lines in it
        bad = _position(raw[: exc.start].decode("utf-8"), exc.start)
        at = f"{source}:{bad.line}:{bad.column}"
        raise PlaybookError(
            [f"{at}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"]
        ) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise PlaybookError(
            [f"{source}:1:1: nesting too deep (more than {MAX_DEPTH} levels)"]
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else f"{source}:1:1"
        problem = one_line(exc.problem or exc.context or "invalid YAML")
        raise PlaybookError([f"{where}: YAML syntax error: {problem}"]) from None
    except yaml.reader.ReaderError as exc:
        # not a MarkedYAMLError: a character YAML does not allow anywhere (NUL, other
        # controls, U+FFFE...), found before parsing starts; its position is an index
        found = _position(text, exc.position)
        code = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise PlaybookError(
            [
                f"{source}:{found.line}:{found.column}: character U+{code:04X} is not allowed "
                'in YAML (write it as an escape in a "double-quoted" string)'
            ]
        ) from None
    except yaml.YAMLError as exc:
        raise PlaybookError([f"{source}:1:1: YAML error: {one_line(str(exc))}"]) from None
    document = Document(source=source, data=None, raw=raw)
    if node is None:
        document.data = None
        return document
    builder = _Builder(document)
    document.data = builder.build(node, ())
    return document


class _Builder:
    """Turns a composed node tree into Python data, checking what ``safe_load`` does not."""

    def __init__(self, document: Document) -> None:
        self.document = document
        self.nodes = 0
        self.chars = 0
        self.constructor = yaml.SafeLoader("")

    def fail(self, node: yaml.Node, message: str) -> PlaybookError:
        mark = node.start_mark
        return PlaybookError(
            [f"{self.document.source}:{mark.line + 1}:{mark.column + 1}: {message}"]
        )

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(
                node, f"document expands to more than {MAX_NODES:,} values (alias bomb?)"
            )
        if len(path) > MAX_DEPTH:
            raise self.fail(node, f"nesting too deep (more than {MAX_DEPTH} levels)")
        self.document.marks.setdefault(
            path, Mark(node.start_mark.line + 1, node.start_mark.column + 1)
        )
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.tag not in _COLLECTIONS:
            raise self.fail(node, f"unsupported YAML tag {shorten(node.tag)}")
        if isinstance(node, yaml.MappingNode):
            return dict(self._mapping(node, path))
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        raise self.fail(node, "unsupported YAML node")

    def _scalar(self, node: yaml.Node) -> Any:
        self.chars += len(str(node.value))
        if self.chars > MAX_EXPANDED_CHARS:
            raise self.fail(
                node,
                f"document expands to more than {MAX_EXPANDED_CHARS:,} characters (alias bomb?)",
            )
        if node.tag in _REFUSED_SCALARS:
            raise self.fail(node, f"unsupported YAML tag {shorten(node.tag)}")
        if node.tag == _INT and len(node.value) > 3 * MAX_INT_BITS:
            # before constructing: int() refuses more than 4,300 digits with a ValueError
            raise self.fail(node, f"integer too large (more than {MAX_INT_BITS} bits)")
        try:
            value = self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            problem = one_line(exc.problem or "cannot construct it")
            raise self.fail(node, f"unsupported YAML value: {problem}") from None
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
            # PyYAML's constructors only expect text their own resolver matched: an explicit
            # tag on other text (``!!int x``, ``!!timestamp x``) or an impossible date
            # (2001-13-45) fails inside them
            kind = one_line(node.tag.removeprefix(_CORE), 40)
            raise self.fail(node, f"{shorten(node.value)} is not a valid YAML {kind}") from None
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise self.fail(node, f"integer too large (more than {MAX_INT_BITS} bits)")
        return value

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> Iterator[tuple[Any, Any]]:
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise self.fail(key_node, "merge keys ('<<') are not supported; write keys out")
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, "mapping keys must be plain scalars")
            key = self._scalar(key_node)
            if not isinstance(key, str | int | bool | float) and key is not None:
                raise self.fail(key_node, f"unsupported mapping key {shorten(key)}")
            if key in seen:
                raise self.fail(key_node, f"duplicate key {shorten(key)}")
            seen.add(key)
            yield (
                key,
                self.build(value_node, (*path, key if isinstance(key, str | int) else str(key))),
            )

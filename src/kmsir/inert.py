"""Text for people, made inert: control characters and bidi overrides shown, never obeyed.

CloudTrail fields, playbook texts and AWS messages are attacker-controlled. Printed raw, an
``ESC[2J`` clears the reader's screen, an OSC sequence retitles the terminal or plants a
hyperlink, and U+202E makes what follows read backwards. ``visible`` writes each such
character as a Python-style escape (``\\x1b``, ``\\u202e``), so the reader sees that it was
there and what it was. Artifacts keep the raw bytes; this is only for what people read
(terminal output, error messages, reports, summaries). Stdlib only.
"""

from __future__ import annotations

#: C0 controls but tab and newline, DEL and the C1 controls (``\x9b`` is a one-byte CSI).
_CONTROLS = [c for c in (*range(0x20), *range(0x7F, 0xA0)) if chr(c) not in "\t\n"]
#: Bidirectional formatting characters: marks, embeddings, overrides, isolates.
_BIDI = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
#: Line and paragraph separators: a new line to some terminals and viewers, not to others.
_SEPARATORS = [0x2028, 0x2029]

_ESCAPES = {
    c: (f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}") for c in (*_CONTROLS, *_BIDI, *_SEPARATORS)
}


def visible(text: str) -> str:
    """``text`` with every terminal control and bidi formatting character written as an
    escape (``\\x1b``, ``\\u202e``); tabs and newlines are kept."""
    return text.translate(_ESCAPES)


def has_hidden(text: str) -> bool:
    """True when ``visible`` would change ``text``."""
    return any(ord(c) in _ESCAPES for c in text)


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` as one inert line, for a message that may quote input: every character that is
    not printable (controls, bidi and other format characters, line and paragraph breaks,
    tabs) written as its escape; at most ``limit`` characters when given (the cut marked with
    ``...``)."""
    head = text if limit is None else text[: limit + 1]
    flat = "".join(c if c.isprintable() else repr(c)[1:-1] for c in head)
    return flat if limit is None or len(flat) <= limit else flat[: limit - 3] + "..."

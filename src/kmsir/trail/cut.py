"""The scanner's shortcut: the records of a compact trail file that hold a needle, cut out
without splitting the file.

Most of a scan is spent looking for a few needles (the key's names, the trail events' names)
in files that hold none of them. ``bytes.find`` searches a long text with the two-way
algorithm, about half as fast as the C library's ``memmem``; where ``memmem`` is at hand
(Linux, macOS) it is called through ``ctypes`` on the file's own bytes (no copy), elsewhere
``bytes.find`` does the same search. Either way the needles, and so the records found, are
exactly the same.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

#: How every record of a compact trail file starts.
RECORD_START = b'{"eventVersion"'
_NEXT_RECORD = b"," + RECORD_START

Finder = Callable[[bytes, int], int]


def _memmem() -> Callable[..., int | None] | None:
    """The C library's ``memmem``, or ``None`` where there is none to call."""
    if not sys.platform.startswith(("linux", "darwin")):
        return None
    try:
        import ctypes

        found = ctypes.CDLL(None).memmem
    except (ImportError, OSError, AttributeError):
        return None
    found.restype = ctypes.c_void_p
    found.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t)
    return found


_MEMMEM = _memmem()


def finder(data: bytes, needle: bytes) -> Finder:
    """``find(data, start)``: where ``needle`` next occurs in ``data`` from ``start``, or -1
    (``data.find(needle, start)``, by ``memmem`` when it can)."""
    if _MEMMEM is None or type(data) is not bytes or not needle:
        return lambda data, start: data.find(needle, start)
    import ctypes

    memmem, length, size = _MEMMEM, len(data), len(needle)
    # the address of the bytes' own buffer: valid while ``data`` lives (the caller holds it)
    base: int = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0

    def find(_: bytes, start: int) -> int:
        if start >= length:
            return -1
        hit = memmem(base + start, length - start, needle, size)
        return -1 if hit is None else hit - base

    return find


def fast_matches(data: bytes, needles: tuple[bytes, ...]) -> list[bytes] | None:
    """Records containing a needle, cut straight out of a compact trail file.

    CloudTrail writes each record as compact JSON starting with ``eventVersion``, so a record
    holding a needle is found by searching backwards from the needle for that start and
    forwards for the next one. Anything that does not look exactly like that returns ``None``
    and the caller splits the file properly.
    """
    spans: dict[int, int] = {}
    for needle in needles:
        find = finder(data, needle)
        position = find(data, 0)
        while position != -1:
            start = data.rfind(RECORD_START, 0, position)
            if start == -1:
                return None
            end = data.find(_NEXT_RECORD, position)
            end = data.rfind(b"]", start, len(data)) if end == -1 else end
            if end == -1:
                return None
            spans[start] = end
            # the rest of this record is found already: search on after it, so a record
            # repeating the needle a million times costs one pass, not a million
            position = find(data, max(end, position + len(needle)))
    return [data[start : spans[start]] for start in sorted(spans)]

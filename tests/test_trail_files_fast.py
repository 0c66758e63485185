"""The scanner's fast paths give exactly what the plain ones give: gzip decompressed in one
call (falling back to isal's ``igzip`` for anything else), needles found by ``memmem``."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest
from isal import igzip

from kmsir.trail import cut
from kmsir.trail.files import _decompress, scan
from kmsir.trail.match import KeyMatcher

KEY = "1234abcd-12ab-34cd-56ef-1234567890ab"
ARN = f"arn:aws:kms:eu-west-1:111122223333:key/{KEY}"


def _event(n: int) -> dict[str, object]:
    return {
        "eventVersion": "1.10",
        "eventID": f"id-{n}",
        "eventTime": f"2026-11-10T00:00:{n % 60:02d}Z",
        "eventSource": "kms.amazonaws.com",
        "eventName": "Decrypt",
        "resources": [{"ARN": ARN, "type": "AWS::KMS::Key"}],
    }


def _doc(*numbers: int) -> bytes:
    records = ",".join(json.dumps(_event(n), separators=(",", ":")) for n in numbers)
    return ('{"Records":[' + records + "]}").encode()


def _size_field(blob: bytes, size: int) -> bytes:
    """The gzip file with its trailer's size field (ISIZE) set to ``size``."""
    return blob[:-4] + (size % 2**32).to_bytes(4, "little")


ONE = gzip.compress(_doc(1, 2, 3), mtime=0)
CASES = {
    "one member": ONE,
    "two members": ONE + gzip.compress(b"", mtime=0),
    "two members, equal sizes": ONE + ONE,
    "trailing bytes": ONE + b"xx",
    "trailing zeros (gzip's padding)": ONE + b"\0" * 8,
    "size field too small": _size_field(ONE, len(_doc(1, 2, 3)) - 1),
    "size field too large": _size_field(ONE, len(_doc(1, 2, 3)) + 1),
    "size field past 4 GiB": _size_field(ONE, 2**32 - 1),
    "size field zero": _size_field(ONE, 0),
    "damaged checksum": ONE[:-8] + bytes([ONE[-8] ^ 1]) + ONE[-7:],
    "damaged data": ONE[:20] + bytes([ONE[20] ^ 0xFF]) + ONE[21:],
    "cut short": ONE[: len(ONE) // 2],
    "header only": ONE[:10],
    "magic only": b"\x1f\x8b",
}


@pytest.mark.parametrize("blob", CASES.values(), ids=CASES.keys())
def test_decompress_gives_what_igzip_gives(blob: bytes) -> None:
    """The same bytes, or the same fault in the same words (each a ``ValueError``, ``OSError``
    or ``EOFError``: the scan counts it, never stops)."""
    try:
        expected = bytes(igzip.decompress(blob))  # type: ignore[no-untyped-call]
    except Exception as exc:
        expected = str(exc).encode()
    try:
        got = _decompress(blob)
    except (OSError, EOFError, ValueError) as exc:
        got = str(exc).encode()
    assert got == expected


def test_a_damaged_deflate_stream_is_counted_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "a.json.gz").write_bytes(CASES["damaged data"])
    (tmp_path / "b.json.gz").write_bytes(ONE)
    matched, stats = scan([tmp_path], KeyMatcher.for_key(ARN), workers=1)
    assert len(matched) == 3
    assert list(stats.skipped) == [
        "not a complete gzip file (Error -1 Invalid deflate block found)"
    ]


def test_gzip_members_appended_are_all_read(tmp_path: Path) -> None:
    """``cat a.json.gz b.json.gz`` (gzip allows it): the records of both members count."""
    lines = [json.dumps(_event(n)).encode() for n in range(4)]
    blob = gzip.compress(b"\n".join(lines[:2]) + b"\n") + gzip.compress(b"\n".join(lines[2:]))
    (tmp_path / "export.jsonl.gz").write_bytes(blob)
    matched, stats = scan([tmp_path], KeyMatcher.for_key(ARN), workers=1)
    assert sorted(json.loads(m)["eventID"] for m in matched) == [f"id-{n}" for n in range(4)]
    assert not stats.skipped


def test_a_wrong_size_field_is_reported_not_read(tmp_path: Path) -> None:
    """A trailer whose size does not match the data is a damaged file, as before."""
    (tmp_path / "a.json.gz").write_bytes(CASES["size field too small"])
    (tmp_path / "b.json.gz").write_bytes(ONE)
    matched, stats = scan([tmp_path], KeyMatcher.for_key(ARN), workers=1)
    assert sorted(json.loads(m)["eventID"] for m in matched) == ["id-1", "id-2", "id-3"]
    assert list(stats.skipped) == ["not a complete gzip file (Incorrect length of data produced)"]


def test_finder_finds_what_bytes_find_finds() -> None:
    rng = random.Random(22)  # noqa: S311 - test data
    for _ in range(300):
        data = bytes(rng.choice(b'ab"{}') for _ in range(rng.randint(0, 300)))
        needle = bytes(rng.choice(b'ab"') for _ in range(rng.randint(1, 4)))
        for kind in (bytes, bytearray):
            haystack = kind(data)
            find = cut.finder(haystack, needle)  # type: ignore[arg-type]
            for start in (0, 1, len(data) // 2, len(data) - 1, len(data), len(data) + 5):
                assert find(haystack, start) == haystack.find(needle, start)  # type: ignore[arg-type]


def test_fast_matches_the_same_with_or_without_memmem(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _doc(1, 2, 3)
    other = json.dumps({**_event(4), "resources": []}, separators=(",", ":")).encode()
    data = data[:-2] + b"," + other + b"]}"
    needles = KeyMatcher.for_key(ARN).needles
    with_memmem = cut.fast_matches(data, needles)
    monkeypatch.setattr(cut, "_MEMMEM", None)
    assert cut.fast_matches(data, needles) == with_memmem
    assert with_memmem is not None and len(with_memmem) == 3

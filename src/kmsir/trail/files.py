"""Read CloudTrail log files fast: gzip by isal, records split by msgspec, key pre-check.

Trail log files are ``{"Records": [...]}`` documents, gzipped (``*.json.gz``) or not; exports
are often one event per line (JSON Lines); digest files (``CloudTrail-Digest``) hold no
events and are never read. Every file is decompressed whole (a trail file is a few MB; memory
stays flat in the total input), split into raw records without decoding them, and only
records that contain one of the key's names as bytes are decoded and matched. Files are
spread over one process per core. Malformed input (a truncated .gz, a line that is not
JSON, a record without ``eventTime`` or with one that is no ISO time, a record that is not an
object, is not UTF-8 or nests deeper than any parser can follow) is counted and reported,
never fatal, never silent, and costs only itself: a document that cannot be decoded whole is
split record by record.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import msgspec

from kmsir.trail.cut import RECORD_START
from kmsir.trail.cut import fast_matches as _fast_matches
from kmsir.trail.digest_format import log_hash
from kmsir.trail.events import decode_event
from kmsir.trail.fields import event_time
from kmsir.trail.match import KeyMatcher

#: File name endings read when a folder is given.
SUFFIXES = (".json.gz", ".json", ".jsonl", ".jsonl.gz", ".ndjson")
#: What a folder is searched for, in words (for a folder that holds none).
LOOKED_FOR = (
    "files named "
    + ", ".join(f"*{s}" for s in SUFFIXES)
    + " at any depth, CloudTrail-Digest files aside"
)
#: Beside a local copy's digest files (which lose their S3 metadata): name -> signature.
DIGEST_SIDECAR = "signatures.json"
#: Problems reported by name (the rest are counted).
MAX_PROBLEMS = 20


class _Records(msgspec.Struct):
    Records: list[msgspec.Raw] = []


_records_decoder = msgspec.json.Decoder(_Records)


@dataclass
class ScanStats:
    """What a scan read, matched and skipped."""

    files: int = 0
    compressed_bytes: int = 0
    json_bytes: int = 0
    records: int = 0
    matched: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    #: Kept, but worth a look (a different record under an event id already seen).
    noted: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    #: With ``hashes``: each file read (its location) and the SHA-256 of its uncompressed
    #: content, as a digest lists it (``None``: unreadable), from the bytes the scan read.
    hashes: dict[str, str | None] = field(default_factory=dict)
    #: With ``hashes``: the files holding at least one matched record, in the scan's order.
    held: list[str] = field(default_factory=list)
    #: The exact bytes of held files, when the reader keeps them (``trail_s3``, bounded).
    kept: dict[str, bytes] = field(default_factory=dict)
    #: With ``hashes``: files that could not be read at all (denied, gone), and why: their
    #: content is unknown, not damaged.
    unread: dict[str, str] = field(default_factory=dict)

    def add(self, other: ScanStats) -> None:
        """Fold another file's figures into these."""
        self.files += other.files
        self.compressed_bytes += other.compressed_bytes
        self.json_bytes += other.json_bytes
        self.records += other.records
        self.matched += other.matched
        self.skipped.update(other.skipped)
        self.noted.update(other.noted)
        self.hashes.update(other.hashes)
        self.held.extend(other.held)
        self.kept.update(other.kept)
        self.unread.update(other.unread)
        room = MAX_PROBLEMS - len(self.problems)
        self.problems.extend(other.problems[: max(room, 0)])

    def skip(self, reason: str, where: str) -> None:
        """Count one skipped input, naming it while there is room."""
        self.skipped[reason] += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"{where}: {reason}")


def is_digest(path: Path) -> bool:
    """Whether ``path`` is a CloudTrail digest file (``.../CloudTrail-Digest/...``, named
    ``..._CloudTrail-Digest_...json.gz``), or the ``DIGEST_SIDECAR`` of a local copy's
    digests: hashes that prove the log files whole, no events."""
    return (
        "CloudTrail-Digest" in path.parts
        or "_CloudTrail-Digest_" in path.name
        or path.name == DIGEST_SIDECAR
    )


def trail_files(paths: Iterable[Path]) -> Iterator[Path]:
    """Files to read: given files as they are, folders searched recursively by suffix; digest
    files are never read, wherever they are."""
    for path in paths:
        if path.is_dir():
            yield from sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.name.endswith(SUFFIXES) and not is_digest(p)
            )
        elif not is_digest(path):
            yield path


def looked_for(path: Path) -> str:
    """What was looked for in a path that gave no file to read, in words."""
    return LOOKED_FOR if path.exists() else f"{LOOKED_FOR}; there is no such file or folder"


def none_found(empty: list[tuple[str, str]]) -> str:
    """One line: the paths that hold no trail file, and what was looked for in each."""
    from kmsir.inert import one_line

    return (
        "no trail file found: "
        + "; ".join(f"{one_line(where, 200)} (looked for {what})" for where, what in empty[:5])
        + (f"; and {len(empty) - 5} more" if len(empty) > 5 else "")
    )


#: Deflate's largest expansion: no gzip member holds more than this many bytes per byte.
_MAX_RATIO = 1032


def _decompress(data: bytes) -> bytes:
    """A gzip file's bytes. Most trail files are one gzip member whose trailer gives the size:
    decompressed in one call of isal's zlib decompressor, capped at that size (measured three
    times faster than ``igzip.decompress``, with a tenth of its page faults). Anything else
    (several members, trailing bytes, a size that does not fit, a damaged file) goes through
    ``igzip.decompress``, whose errors say what is wrong; a damaged deflate stream (isal's own
    error) is a ``ValueError`` like the others."""
    from isal import isal_zlib

    isal_error = cast("type[Exception]", isal_zlib.error)
    size = min(int.from_bytes(data[-4:], "little"), len(data) * _MAX_RATIO)
    try:
        # wbits 31: a gzip header and trailer (CRC and size checked), a 32 KiB window
        inflater = isal_zlib.decompressobj(wbits=31)
        out = inflater.decompress(data, size + 1)
        if inflater.eof and not inflater.unused_data and len(out) == size:
            return out
    except isal_error:
        pass  # igzip below says what is wrong
    from isal import igzip

    try:
        return bytes(igzip.decompress(data))  # type: ignore[no-untyped-call]
    except isal_error as exc:
        raise ValueError(str(exc)) from None


def raw_records(data: bytes, where: str, stats: ScanStats) -> Iterator[bytes]:
    """The records of one file's JSON, still encoded. A line of JSON Lines that is not a whole
    object comes back as ``b"\\x00"`` and its line number (the caller counts it)."""
    head = data.lstrip()[:20]
    if head.startswith(b"{") and b'"Records"' in data[:4096]:
        try:
            yield from (bytes(r) for r in _records_decoder.decode(data).Records)
            return
        except (msgspec.DecodeError, RecursionError) as exc:
            # one bad record (invalid escapes, nesting past the parser's limit, a cut) must
            # not cost the others: cut the array apart without decoding it
            records, whole = split_records(data)
            if records is not None:
                yield from records
                if not whole:
                    stats.skip("file ends inside a record (cut short)", where)
                return
            if data.count(b"\n") <= 1:  # one document that is not valid JSON
                stats.skip(f"not valid JSON ({str(exc)[:80]})", where)
                return
    for number, line in enumerate(data.splitlines(), start=1):
        line = line.strip()
        if line:
            whole = line.startswith(b"{") and line.endswith(b"}")
            yield line if whole else b"\x00" + str(number).encode()


#: JSON's structure without decoding it: whole strings (escapes included), then brackets,
#: colons and commas; numbers, literals and white space fall between the matches. A string
#: left open runs to the end of the input: matching it cannot fail part-way, so hostile input
#: (an unterminated string full of escaped quotes) never makes the scan quadratic.
_TOKENS = re.compile(rb'(?s)"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)|[\[\]{}:,]')


def split_records(data: bytes) -> tuple[list[bytes] | None, bool]:
    """The elements of the ``Records`` array of a ``{"Records": [...]}`` document, cut apart
    by its structure alone (no depth limit, no UTF-8 check), and whether the document was
    complete. ``None`` when it is no such document (JSON Lines that happen to start alike)."""
    records: list[bytes] = []
    level, key, after_key, inside, start, ended = 0, b"", False, False, 0, None
    found = False
    for match in _TOKENS.finditer(data):
        token = match.group()
        if token[:1] == b'"':
            key, after_key = (token, False) if level == 1 else (key, after_key)
        elif token in (b"[", b"{"):
            level += 1
            if level == 2 and after_key and token == b"[" and key == b'"Records"':
                inside, found, start = True, True, match.end()
            after_key = False
        elif token in (b"]", b"}"):
            if inside and level == 2:
                if data[start : match.start()].strip():
                    records.append(data[start : match.start()].strip())
                inside = False
            level -= 1
            if level == 0:
                ended = match.end()
                break
        elif token == b",":
            after_key = False
            if inside and level == 2:
                records.append(data[start : match.start()].strip())
                start = match.end()
        else:  # ":"
            after_key = level == 1
    if not found or (ended is not None and data[ended:].strip()):
        return None, False
    return records, ended is not None  # cut short: the records read so far, not the one cut


def scan_bytes(
    data: bytes,
    where: str,
    matcher: KeyMatcher,
    since: datetime | None,
    until: datetime | None,
    stats: ScanStats,
) -> list[bytes]:
    """The matching records of one file's JSON, as single-line JSON (unchanged events)."""
    needles = matcher.needles
    if data[:12] == b'{"Records":[' and data.rstrip().endswith(b"]}"):
        cut = _fast_matches(data, needles)
        decoded = _decode_all(cut) if cut is not None else None
        if decoded is not None:
            stats.records += data.count(RECORD_START)
            return _keep(decoded, where, matcher, since, until, stats)
    candidates: list[tuple[bytes, dict[str, Any]]] = []
    for raw in raw_records(data, where, stats):
        if raw.startswith(b"\x00"):
            stats.skip("line is not a whole JSON object", f"{where} line {raw[1:].decode()}")
            continue
        stats.records += 1
        if not raw.startswith(b"{"):  # a string, number, list or null where a record belongs
            stats.skip("record is not a JSON object", where)
            continue
        if not any(needle in raw for needle in needles):
            continue
        event = decode_event(raw)
        if isinstance(event, str):
            stats.skip(event, where)
        else:
            candidates.append((raw, event))
    return _keep(candidates, where, matcher, since, until, stats)


def _decode_all(records: list[bytes]) -> list[tuple[bytes, dict[str, Any]]] | None:
    """Decode records cut by the shortcut; ``None`` if any was cut wrongly or is odd (the
    caller then splits the file properly, and counts what is odd)."""
    decoded = []
    for raw in records:
        event = decode_event(raw)
        if isinstance(event, str):
            return None
        decoded.append((raw, event))
    return decoded


def _keep(
    candidates: list[tuple[bytes, dict[str, Any]]],
    where: str,
    matcher: KeyMatcher,
    since: datetime | None,
    until: datetime | None,
    stats: ScanStats,
) -> list[bytes]:
    matched = []
    for raw, event in candidates:
        moment = event_time(event)
        if moment is None:
            # no time at all, or one that is no ISO time: different faults, told apart
            stats.skip(
                "record without eventTime"
                if event.get("eventTime") is None
                else "record with a malformed eventTime",
                where,
            )
            continue
        if (since and moment < since) or (until and moment > until):
            continue
        if matcher.matches(event):
            stats.matched += 1
            matched.append(raw if b"\n" not in raw else msgspec.json.encode(event))
    return matched


def scan_file(
    path: Path,
    matcher: KeyMatcher,
    since: datetime | None,
    until: datetime | None,
    hashes: bool = False,
) -> tuple[list[bytes], ScanStats]:
    """One local file: read it, then ``scan_blob``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        stats = ScanStats(files=1)
        stats.skip(f"cannot read ({exc.strerror or exc})", str(path))
        if hashes:
            stats.hashes[str(path)] = None
            stats.unread[str(path)] = exc.strerror or str(exc)
        return [], stats
    return scan_blob(data, str(path), matcher, since, until, hashes)


def scan_blob(
    data: bytes,
    where: str,
    matcher: KeyMatcher,
    since: datetime | None,
    until: datetime | None,
    hashes: bool = False,
) -> tuple[list[bytes], ScanStats]:
    """One trail file's bytes (gzipped or not, from disk or S3): decompress, match. With
    ``hashes``, the SHA-256 of the decompressed bytes (those the scan reads: one read, one
    decompression) goes to ``stats.hashes`` and, if a record matched, ``where`` to
    ``stats.held``."""
    stats = ScanStats(files=1, compressed_bytes=len(data))
    if data[:2] == b"\x1f\x8b":
        try:
            data = _decompress(data)
        except (OSError, EOFError, ValueError) as exc:
            stats.skip(f"not a complete gzip file ({str(exc)[:80]})", where)
            if hashes:
                stats.hashes[where] = None
            return [], stats
    stats.json_bytes = len(data)
    if hashes:
        stats.hashes[where] = log_hash(data)
    matched = scan_bytes(data, where, matcher, since, until, stats)
    if hashes and matched:
        stats.held.append(where)
    return matched, stats


def _scan_one(args: tuple[Path, KeyMatcher, datetime | None, datetime | None, bool]) -> Any:
    return scan_file(*args)


def scan(
    paths: Iterable[Path],
    matcher: KeyMatcher,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    workers: int | None = None,
    hashes: bool = False,
) -> tuple[list[bytes], ScanStats]:
    """Scan every trail file under ``paths``; matching records and the figures."""
    return scan_files(
        list(trail_files(paths)), matcher, since=since, until=until, workers=workers, hashes=hashes
    )


def scan_paths(
    paths: Iterable[Path],
    matcher: KeyMatcher,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    each: Callable[[list[bytes]], None] | None = None,
    hashes: bool = False,
) -> tuple[list[bytes], ScanStats, list[tuple[str, str]]]:
    """``scan`` of the trail files under ``paths``, and the paths that hold none (each with
    what was looked for in it, for ``none_found``); the caller decides whether that is an
    error, and counts them with ``count_empty``. ``each`` and ``hashes``: as in
    ``scan_files``."""
    listed = [(path, list(trail_files([path])) if path.exists() else []) for path in paths]
    empty = [(str(path), looked_for(path)) for path, found in listed if not found]
    found = [f for _, in_path in listed for f in in_path]
    raw, stats = scan_files(found, matcher, since=since, until=until, each=each, hashes=hashes)
    return raw, stats, empty


def count_empty(stats: ScanStats, empty: list[tuple[str, str]]) -> None:
    """Count each path that held no trail file as skipped (others did hold some)."""
    for where, _ in empty:
        stats.skip("no trail file found here", where)


def scan_files(
    files: list[Path],
    matcher: KeyMatcher,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    workers: int | None = None,
    each: Callable[[list[bytes]], None] | None = None,
    hashes: bool = False,
) -> tuple[list[bytes], ScanStats]:
    """Scan ``files`` (listed already, by ``trail_files``); matching records and the figures.
    With ``each``, each file's matching records go to it as they come, in the files' order
    (the caller's work on them overlaps the scan of the next files), and none is returned.
    With ``hashes``, each file's SHA-256 (``ScanStats.hashes``) and the files holding a
    matched record (``ScanStats.held``), from the same read."""
    total = ScanStats()
    matched: list[bytes] = []
    take = each or matched.extend
    workers = workers or min(os.cpu_count() or 1, max(len(files), 1))
    jobs = ((path, matcher, since, until, hashes) for path in files)
    if workers <= 1 or len(files) <= 1:
        results: Iterable[Any] = map(_scan_one, jobs)
        for records, stats in results:
            take(records)
            total.add(stats)
        return matched, total
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for records, stats in pool.map(_scan_one, jobs, chunksize=4):
            take(records)
            total.add(stats)
    return matched, total

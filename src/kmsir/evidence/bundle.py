"""The evidence bundle's format: names, canonical JSON and hashes, atomic writes, and reading
a bundle back (the journal with its checks, the manifest it implies). ``writer`` writes one.

Layout (``<evidence-dir>/<incident-id>/<run-id>/``)::

    journal.jsonl     one canonical-JSON entry a line, each chained to the previous by hash
    playbook.yaml     the exact bytes that ran
    artifacts/NN-<step-id>/<name>
    manifest.json     derived from the journal: rewritten at finish; ``verify`` recomputes it
    report.md/.html   derived, re-renderable

Everything the manifest says (run metadata, each artifact's sha256/size/step/time, journal
head) is recorded in the journal first, so ``integrity.verify`` can recompute the manifest and
catch a change to either. Evidence files are created with ``O_EXCL``/``os.link`` (never
overwritten), fsync'd with their directory, directories 0700 and files 0600.

Crash safety: an artifact's intent (path, sha256, size) is journaled before its bytes are
written, so a file a crash left behind unjournaled is told apart from a planted one. A torn
last journal line is moved to ``quarantine/`` and recorded by a ``repair`` entry when the run
is resumed (``BundleWriter.reopen``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kmsir.errors import EvidenceError, UsageError
from kmsir.evidence import entries as entries_
from kmsir.evidence.view import RunView, fold

FORMAT = "kmsir-bundle/1"
JOURNAL = "journal.jsonl"
MANIFEST = "manifest.json"
PLAYBOOK_COPY = "playbook.yaml"
ARTIFACTS = "artifacts"
QUARANTINE = "quarantine"
ANCHOR = "anchor.json"
#: The reports a bundle may hold; each one written is recorded in the journal (its sha256).
REPORTS = ("report.md", "report.html")
#: Files that are derived from the journal and may be rewritten or re-rendered: the manifest,
#: the reports, and the latest signature over the chain head (``run --anchor-key``).
DERIVED = frozenset({MANIFEST, ANCHOR, *REPORTS})

_INCIDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
NAME_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time in UTC."""
    return datetime.now(timezone.utc)


def timestamp(moment: datetime) -> str:
    """ISO 8601 UTC with a ``Z``, microseconds kept (journal order is also ``seq``)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(entry: Any) -> bytes:
    """The one byte form of a JSON value: sorted keys, no spaces, UTF-8."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def jsonable(value: Any) -> Any:
    """``value`` with datetimes as ISO 8601 strings and bytes as a size note (never content)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return timestamp(value) if value.tzinfo else value.isoformat()
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def entry_hash(entry: dict[str, Any]) -> str:
    """The hash of a journal entry: sha256 over its canonical JSON without ``hash``."""
    return sha256_hex(canonical({k: v for k, v in entry.items() if k != "hash"}))


def check_incident_id(incident_id: str) -> str:
    """Refuse incident ids that could escape the evidence directory or confuse a shell."""
    if not _INCIDENT_ID.fullmatch(incident_id) or ".." in incident_id:
        raise UsageError(
            f"incident id {incident_id[:70]!r} is not allowed: use 1-64 letters, digits, "
            "'.', '_' or '-', starting with a letter or digit (no '/' or '..')"
        )
    return incident_id


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_private_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents with mode 0700, fsyncing each new entry."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
        fsync_dir(directory.parent)


def write_new(path: Path, data: bytes) -> None:
    """Atomically create ``path`` with ``data``; never overwrite (``FileExistsError``).

    The bytes go to a private temporary file, are fsync'd, then hard-linked into place
    (``link`` fails if the name exists) and the directory is fsync'd: a crash leaves either
    nothing or the whole file under the final name.
    """
    temp = path.parent / f".tmp-{path.name}-{secrets.token_hex(4)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        os.link(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    fsync_dir(path.parent)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` and fsync it (a short write is continued; a full disk
    raises ``OSError``)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def derived_temporary(path: Path, data: bytes) -> Path:
    """A derived file's new content in a private temporary beside it, fsync'd; ``os.replace``
    puts it in place. A crash in between leaves a temporary that ``verify`` explains."""
    if path.name not in DERIVED:
        raise EvidenceError(f"{path.name} is evidence, not a derived file; it is never rewritten")
    temp = path.parent / f".tmp-{path.name}-{secrets.token_hex(4)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        write_all(fd, data)
    except BaseException:
        temp.unlink(missing_ok=True)  # a full disk must not leave half a file behind
        raise
    finally:
        os.close(fd)
    return temp


def replace_derived(path: Path, data: bytes) -> None:
    """Atomically (re)write a derived file (manifest, report): temp + fsync + rename."""
    os.replace(derived_temporary(path, data), path)
    fsync_dir(path.parent)


# --- reading ----------------------------------------------------------------------------

#: Largest outside file an action may read (policies, artifacts of other bundles).
MAX_OUTSIDE_BYTES = 1024 * 1024


class UnvouchedFile(EvidenceError):
    """A file inside another bundle that its journal does not vouch for: not one of its
    artifacts, or altered since. A caller that only keeps the bytes may fail softer."""


def read_outside(path: Path) -> tuple[bytes, dict[str, Any]]:
    """Read a file from outside the running bundle, with its provenance for the journal.

    Only a regular file, and at most ``MAX_OUTSIDE_BYTES`` of it (a FIFO would hang the run,
    ``/dev/zero`` or a ``/proc`` file that says 0 bytes would fill the memory). When the
    file is an artifact of another bundle, its sha256 must match that bundle's journal:
    evidence that was altered is never used to change a key (``UnvouchedFile``).
    """
    try:
        resolved = path.resolve(strict=True)
        data = _read_bounded(resolved, path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    provenance: dict[str, Any] = {
        "path": str(resolved),
        "sha256": sha256_hex(data),
        "bytes": len(data),
    }
    root = next((p for p in resolved.parents if (p / JOURNAL).is_file()), None)
    if root is not None:
        relative = resolved.relative_to(root).as_posix()
        recorded = [
            a.record
            for a in read_journal(root / JOURNAL).view().artifacts
            if a.record.path == relative
        ]
        if not recorded:
            raise UnvouchedFile(f"{path}: not an artifact recorded in the journal of {root}")
        if recorded[-1].sha256 != provenance["sha256"]:
            raise UnvouchedFile(f"{path}: altered since bundle {root.name} recorded it")
        provenance["bundle"] = str(root)
    return data, provenance


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _read_bounded(resolved: Path, path: Path) -> bytes:
    """A regular file's bytes, read no further than one byte past the limit; ``UsageError``
    for anything else, checked before opening (opening a device may act on it) and again on
    the file opened (``O_NONBLOCK``: a FIFO put in its place is not waited on)."""

    def regular(mode: int) -> None:
        if not stat.S_ISREG(mode):
            kind = next((k for test, k in _KINDS if test(mode)), "a special file")
            raise UsageError(f"{path}: {kind}, not a regular file")

    regular(resolved.stat().st_mode)
    fd = os.open(resolved, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        info = os.fstat(fd)
        regular(info.st_mode)
        if info.st_size > MAX_OUTSIDE_BYTES:
            raise UsageError(f"{path}: {info.st_size:,} bytes, more than {MAX_OUTSIDE_BYTES:,}")
        chunks, left = [], MAX_OUTSIDE_BYTES + 1
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 16))):
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    if left <= 0:
        raise UsageError(f"{path}: more than {MAX_OUTSIDE_BYTES:,} bytes")
    return b"".join(chunks)


class NotRegular(OSError):
    """A path in a bundle that is not a plain file (a FIFO, a device, a link): never read."""


def read_regular(path: Path) -> bytes:
    """A bundle file's bytes; ``NotRegular`` for anything but a plain file (reading a FIFO
    planted in a bundle would hang ``verify``), ``FileNotFoundError`` when it is missing."""
    if not stat.S_ISREG(path.lstat().st_mode):
        raise NotRegular(f"{path.name}: not a regular file")
    return path.read_bytes()


@dataclass
class JournalRead:
    """A journal as found on disk: its typed entries and every problem met reading it."""

    entries: list[entries_.Entry]
    problems: list[str]
    torn_tail: str | None = None  # the problem naming the torn last line

    def view(self, *, upto: int | None = None) -> RunView:
        """The run these entries tell of (``view.fold``), or as it stood after the first
        ``upto`` of them."""
        return fold(self.entries if upto is None else self.entries[:upto])


_ENTRY_FIELDS: dict[str, tuple[type, ...]] = {
    "seq": (int,),
    "ts": (str,),
    "type": (str,),
    "step": (str, type(None)),
    "data": (dict,),
    "prev": (str, type(None)),
    "hash": (str,),
}


def _well_formed(entry: Any) -> bool:
    return (
        isinstance(entry, dict)
        and set(entry) == set(_ENTRY_FIELDS)
        and all(isinstance(entry[k], types) for k, types in _ENTRY_FIELDS.items())
    )


def read_journal(path: Path) -> JournalRead:
    """Parse and check a journal: canonical form, hash, chain, sequence, torn tail."""
    result = JournalRead([], [])
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        result.problems.append(f"{JOURNAL}: missing")
        return result
    lines = raw.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    prev: str | None = None
    last_seq = 0
    for number, line in enumerate(lines, start=1):
        where = f"{JOURNAL} line {number}"
        try:
            entry = json.loads(line)
        except ValueError:
            result.problems.append(f"{where}: not valid JSON (line altered)")
            prev = None
            continue
        if not _well_formed(entry):
            result.problems.append(
                f"{where}: not a journal entry (fields missing or of the wrong type)"
            )
            prev = entry.get("hash") if isinstance(entry, dict) else None
            if isinstance(entry, dict) and isinstance(entry.get("seq"), int):
                last_seq = entry["seq"]
            continue
        if canonical(entry) != line:
            result.problems.append(f"{where}: not in canonical form (line altered)")
        if entry["hash"] != entry_hash(entry):
            result.problems.append(f"{where}: hash does not match its content (line altered)")
        chained = entry["prev"] == prev or (number > 1 and prev is None)
        order = _order_problem(entry["seq"], last_seq)
        if order is not None or not chained:
            # one problem per break, not one per line after it: later lines are compared with
            # the entry before them, not with their line number
            result.problems.append(
                f"{where}: chain broken: {order or 'prev does not match the line before'}; "
                "a line was deleted, inserted or reordered"
            )
        prev, last_seq = entry["hash"], entry["seq"]
        try:
            result.entries.append(entries_.read(entry))
        except entries_.Malformed as exc:
            result.problems.append(f"{where}: {exc}")
    if tail:
        result.torn_tail = (
            f"{JOURNAL} line {len(lines) + 1}: torn tail (incomplete last line, "
            "the run was interrupted while writing it)"
        )
        result.problems.append(result.torn_tail)
    return result


def _order_problem(seq: int, last_seq: int) -> str | None:
    """What is wrong with an entry's ``seq`` after one numbered ``last_seq``, if anything."""
    if seq == last_seq + 1:
        return None
    if seq > last_seq + 1:
        missing = seq - last_seq - 1
        return f"seq {seq} follows seq {last_seq} ({missing} missing)"
    return f"seq {seq} follows seq {last_seq}"

"""The evidence bundle: a hash-chained journal, immutable artifacts, a derived manifest.

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
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kmsir.errors import EvidenceError, UsageError

FORMAT = "kmsir-bundle/1"
JOURNAL = "journal.jsonl"
MANIFEST = "manifest.json"
PLAYBOOK_COPY = "playbook.yaml"
ARTIFACTS = "artifacts"
QUARANTINE = "quarantine"
#: Files that are derived from the journal and may be rewritten or re-rendered.
DERIVED = frozenset({MANIFEST, "report.md", "report.html"})

_INCIDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_NAME_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mkdir(path: Path) -> None:
    """Create ``path`` and its missing parents with mode 0700, fsyncing each new entry."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
        _fsync_dir(directory.parent)


def write_new(path: Path, data: bytes) -> None:
    """Atomically create ``path`` with ``data``; never overwrite (``FileExistsError``).

    The bytes go to a private temporary file, are fsync'd, then hard-linked into place
    (``link`` fails if the name exists) and the directory is fsync'd: a crash leaves either
    nothing or the whole file under the final name.
    """
    temp = path.parent / f".tmp-{path.name}-{secrets.token_hex(4)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    _fsync_dir(path.parent)


def replace_derived(path: Path, data: bytes) -> None:
    """Atomically (re)write a derived file (manifest, report): temp + fsync + rename."""
    if path.name not in DERIVED:
        raise EvidenceError(f"{path.name} is evidence, not a derived file; it is never rewritten")
    temp = path.parent / f".tmp-{path.name}-{secrets.token_hex(4)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    _fsync_dir(path.parent)


@dataclass(frozen=True)
class Artifact:
    """An artifact as recorded in the journal and the manifest."""

    path: str
    sha256: str
    bytes: int
    step: str
    created: str


def write_manifest(root: Path) -> Path:
    """(Re)write ``manifest.json`` from the journal: at finish, or when a crash prevented it."""
    manifest = build_manifest(read_journal(root / JOURNAL).entries)
    replace_derived(
        root / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n"
    )
    return root / MANIFEST


class BundleWriter:
    """Writes one run's bundle. Thread-safe: concurrent actions may journal and write."""

    def __init__(self, root: Path, *, clock: Clock = utc_now) -> None:
        self.root = root
        self._clock = clock
        self._lock = threading.Lock()
        self._seq = 0
        self._head: str | None = None
        self._fd: int | None = None
        self._artifacts: list[Artifact] = []

    @classmethod
    def create(
        cls,
        evidence_dir: Path,
        incident_id: str,
        *,
        playbook_raw: bytes,
        clock: Clock = utc_now,
    ) -> BundleWriter:
        """Make ``<evidence_dir>/<incident>/<run-id>/`` with the playbook copy and a journal."""
        check_incident_id(incident_id)
        now = clock()
        run_id = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(2)}"
        root = evidence_dir / incident_id / run_id
        try:
            _mkdir(root.parent)
            root.mkdir(mode=0o700)
            _fsync_dir(root.parent)
            (root / ARTIFACTS).mkdir(mode=0o700)
            write_new(root / PLAYBOOK_COPY, playbook_raw)
        except OSError as exc:
            raise EvidenceError(f"cannot create the evidence bundle in {root}: {exc}") from None
        writer = cls(root, clock=clock)
        writer._open_journal()
        return writer

    @property
    def run_id(self) -> str:
        """The run id (the bundle directory's name)."""
        return self.root.name

    @property
    def head(self) -> str | None:
        """Hash of the last journal entry."""
        return self._head

    @property
    def entries(self) -> int:
        """Number of journal entries written."""
        return self._seq

    @property
    def artifacts(self) -> tuple[Artifact, ...]:
        """Artifacts written so far."""
        return tuple(self._artifacts)

    def _open_journal(self) -> None:
        self._fd = os.open(
            self.root / JOURNAL, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o600
        )
        _fsync_dir(self.root)

    def append(
        self, type_: str, data: dict[str, Any] | None = None, *, step: str | None = None
    ) -> dict[str, Any]:
        """Append one entry, flushed and fsync'd before returning it."""
        with self._lock:
            if self._fd is None:
                raise EvidenceError("the journal is closed")
            entry: dict[str, Any] = {
                "seq": self._seq + 1,
                "ts": timestamp(self._clock()),
                "type": type_,
                "step": step,
                "data": jsonable(data or {}),
                "prev": self._head,
            }
            entry["hash"] = entry_hash(entry)
            line = canonical(entry) + b"\n"
            try:
                view = memoryview(line)
                while view:  # a short write (full disk, signal) must not leave half a line
                    view = view[os.write(self._fd, view) :]
                os.fsync(self._fd)
            except OSError as exc:
                raise EvidenceError(f"cannot write the journal: {exc}") from None
            self._seq += 1
            self._head = entry["hash"]
            return entry

    def artifact_dir(self, step_index: int, step_id: str, attempt: int = 1) -> str:
        """A step's artifact folder: ``artifacts/NN-<step-id>``, ``...-<step-id>.N`` on retry N."""
        if not _NAME_PART.fullmatch(step_id) or "." in step_id:
            raise EvidenceError(f"step id {step_id[:60]!r} cannot name an artifact directory")
        suffix = f".{attempt}" if attempt > 1 else ""
        return f"{ARTIFACTS}/{step_index:02d}-{step_id}{suffix}"

    def write_artifact(
        self, step_index: int, step_id: str, name: str, data: bytes, *, attempt: int = 1
    ) -> Artifact:
        """Write an artifact for a step and journal it. ``name`` is from the action's vocabulary.

        ``name`` may have one sub-folder (``<key-id>/policy.json``); each part is checked so
        that no name taken from AWS or input can leave the bundle. Each attempt of a retried
        step writes to its own folder, so a retry never collides with what the first wrote.
        """
        parts = name.split("/")
        if len(parts) > 2 or not all(_NAME_PART.fullmatch(p) and ".." not in p for p in parts):
            raise EvidenceError(f"artifact name {name[:80]!r} is not allowed")
        relative = f"{self.artifact_dir(step_index, step_id, attempt)}/{name}"
        target = self.root / relative
        digest = sha256_hex(data)
        # Journaled before the bytes land: a file a crash leaves behind unjournaled is then
        # recognisably this one (same path and hash), not something planted later.
        self.append(
            "artifact-intent",
            {"path": relative, "sha256": digest, "bytes": len(data)},
            step=step_id,
        )
        try:
            _mkdir(target.parent)
            write_new(target, data)
        except FileExistsError:
            raise EvidenceError(
                f"artifact {relative} already exists; evidence is never overwritten"
            ) from None
        except OSError as exc:
            raise EvidenceError(f"cannot write artifact {relative}: {exc}") from None
        artifact = Artifact(relative, digest, len(data), step_id, timestamp(self._clock()))
        self.append("artifact", artifact.__dict__.copy(), step=step_id)
        with self._lock:
            self._artifacts.append(artifact)
        return artifact

    def read_step_artifact(self, step_id: str, name: str) -> bytes | None:
        """Artifact ``name`` (as the action named it) of step ``step_id``, latest attempt."""
        with self._lock:
            # paths are artifacts/NN-<step>[.attempt]/<name>
            found = [
                a for a in self._artifacts if a.step == step_id and a.path.split("/", 2)[2] == name
            ]
        if not found:
            return None
        data = (self.root / found[-1].path).read_bytes()
        if sha256_hex(data) != found[-1].sha256:
            raise EvidenceError(f"{found[-1].path} changed since it was written")
        return data

    def finish(self, status: str, summary: dict[str, Any] | None = None) -> Path:
        """Journal the end of the run and write the manifest derived from the journal."""
        self.append("run-finished", {"status": status, **(summary or {})})
        self.close()
        return write_manifest(self.root)

    def close(self) -> None:
        """Close the journal file."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def resync(self) -> bool:
        """Re-read the journal's last entry after an interruption (Ctrl-C) inside ``append``.

        A KeyboardInterrupt can land after a line reached the file but before ``append``
        recorded it; the next entry must still chain to it. False when the file ends in a
        torn line: nothing may then be appended until ``reopen`` repairs it.
        """
        with self._lock:
            raw = (self.root / JOURNAL).read_bytes()
            if raw and not raw.endswith(b"\n"):
                return False
            lines = raw.splitlines()
            if lines:
                last = json.loads(lines[-1])
                self._seq, self._head = int(last["seq"]), str(last["hash"])
            return True

    @classmethod
    def reopen(cls, root: Path, *, clock: Clock = utc_now) -> tuple[BundleWriter, dict[str, Any]]:
        """Open an unfinished (or failed) run's bundle for appending, for ``resume``.

        A torn last line (the run died while writing it) is first saved under
        ``quarantine/``, then cut from the journal. Returns the writer and what was repaired,
        which the caller journals as a ``repair`` entry (with the crash leftovers it found).
        """
        path = root / JOURNAL
        raw = path.read_bytes()
        cut = raw.rfind(b"\n") + 1
        torn = raw[cut:]
        repaired: dict[str, Any] = {}
        if torn:
            journal = read_journal(path)
            seq = len(journal.entries) + 1
            saved = f"{QUARANTINE}/journal-line-{seq}.torn"
            _mkdir(root / QUARANTINE)
            try:
                write_new(root / saved, torn)
            except FileExistsError:  # an earlier resume died after saving it
                if (root / saved).read_bytes() != torn:
                    raise EvidenceError(f"{saved} exists with other bytes; not repairing") from None
            repaired["torn_tail"] = {
                "line": seq,
                "saved_as": saved,
                "sha256": sha256_hex(torn),
                "bytes": len(torn),
            }
        writer = cls(root, clock=clock)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        if torn:
            os.ftruncate(fd, cut)
            os.fsync(fd)
        writer._fd = fd
        entries = read_journal(path).entries
        if entries:
            writer._seq, writer._head = int(entries[-1]["seq"]), str(entries[-1]["hash"])
        writer._artifacts = [
            Artifact(**{k: e["data"][k] for k in Artifact.__dataclass_fields__})
            for e in entries
            if e["type"] == "artifact"
        ]
        return writer, repaired


# --- reading ----------------------------------------------------------------------------

#: Largest outside file an action may read (policies, artifacts of other bundles).
MAX_OUTSIDE_BYTES = 1024 * 1024


def read_outside(path: Path) -> tuple[bytes, dict[str, Any]]:
    """Read a file from outside the running bundle, with its provenance for the journal.

    When the file is an artifact of another bundle, its sha256 must match that bundle's
    journal: evidence that was altered is never used to change a key.
    """
    try:
        resolved = path.resolve(strict=True)
        size = resolved.stat().st_size
        if size > MAX_OUTSIDE_BYTES:
            raise UsageError(f"{path}: {size:,} bytes, more than {MAX_OUTSIDE_BYTES:,}")
        data = resolved.read_bytes()
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
            e["data"]
            for e in read_journal(root / JOURNAL).entries
            if e["type"] == "artifact" and e["data"].get("path") == relative
        ]
        if not recorded:
            raise EvidenceError(f"{path}: not an artifact recorded in the journal of {root}")
        if recorded[-1].get("sha256") != provenance["sha256"]:
            raise EvidenceError(f"{path}: altered since bundle {root.name} recorded it")
        provenance["bundle"] = str(root)
    return data, provenance


@dataclass
class JournalRead:
    """A journal as found on disk: parsed entries and every problem met reading it."""

    entries: list[dict[str, Any]]
    problems: list[str]
    torn_tail: bool = False


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
            continue
        if canonical(entry) != line:
            result.problems.append(f"{where}: not in canonical form (line altered)")
        if entry.get("hash") != entry_hash(entry):
            result.problems.append(f"{where}: hash does not match its content (line altered)")
        if entry.get("prev") != prev and not (number > 1 and prev is None):
            result.problems.append(
                f"{where}: chain broken (prev does not match line {number - 1}: "
                "a line was deleted, inserted or reordered)"
            )
        if entry.get("seq") != number:
            result.problems.append(f"{where}: seq {entry.get('seq')!r}, expected {number}")
        prev = entry.get("hash")
        result.entries.append(entry)
    if tail:
        result.torn_tail = True
        result.problems.append(
            f"{JOURNAL} line {len(lines) + 1}: torn tail (incomplete last line, "
            "the run was interrupted while writing it)"
        )
    return result


#: Run metadata copied from the run-started entry into the manifest.
_MANIFEST_FIELDS = (
    "tool",
    "versions",
    "playbook",
    "incident",
    "run_id",
    "inputs",
    "operator",
    "host",
    "mode",
    "simulated",
    "scenario",
    "region",
)


def finished_entry(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The run-finished entry that ends the run, or None while it is unfinished.

    A run that was resumed is unfinished again until a run-finished follows the resume.
    """
    for entry in entries[::-1]:
        kind = entry.get("type")
        if kind == "run-resumed":
            break
        if kind == "run-finished":
            return entry
    return None


def build_manifest(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest a journal implies: run metadata, custody, artifacts, outcome, chain head."""
    started = next((e for e in entries if e["type"] == "run-started"), None)
    if started is None:
        raise EvidenceError(f"{JOURNAL}: no run-started entry")
    finished = finished_entry(entries)
    meta = started["data"]
    return {
        "format": FORMAT,
        **{k: meta.get(k) for k in _MANIFEST_FIELDS},
        "started": started["ts"],
        "finished": finished["ts"] if finished else None,
        "status": finished["data"].get("status") if finished else "incomplete",
        # who handled the evidence, when and where (NIST SP 800-61's evidence log)
        "custody": [
            {
                "event": e["type"].removeprefix("run-"),
                "ts": e["ts"],
                "operator": e["data"].get("operator"),
                "host": e["data"].get("host"),
                "location": e["data"].get("location"),
                "tool": e["data"].get("tool"),
            }
            for e in entries
            if e["type"] in ("run-started", "run-resumed")
        ],
        "artifacts": [e["data"] for e in entries if e["type"] == "artifact"],
        "journal": {"entries": len(entries), "head": entries[-1]["hash"] if entries else None},
    }


@dataclass
class Bundle:
    """A bundle opened for reading (report, verify)."""

    root: Path
    entries: list[dict[str, Any]]
    manifest: dict[str, Any]

    @classmethod
    def open(cls, root: Path) -> Bundle:
        """Open a bundle directory; the manifest is recomputed when it was never written."""
        if not (root / JOURNAL).is_file():
            raise UsageError(f"{root}: not an evidence bundle (no {JOURNAL})")
        journal = read_journal(root / JOURNAL)
        try:
            manifest = json.loads((root / MANIFEST).read_bytes())
        except (OSError, ValueError):
            manifest = build_manifest(journal.entries)
        return cls(root, journal.entries, manifest)

    def artifact_bytes(self, relative: str) -> bytes:
        """Bytes of an artifact recorded in this bundle."""
        known = {a["path"] for a in self.manifest.get("artifacts", [])}
        if relative not in known:
            raise EvidenceError(f"{relative} is not an artifact of {self.root}")
        return (self.root / relative).read_bytes()

    def artifact_json(self, relative: str) -> Any:
        """An artifact parsed as JSON."""
        return json.loads(self.artifact_bytes(relative))

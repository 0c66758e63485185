"""Writing one run's evidence bundle: the journal (append, fsync, hash chain), artifacts with
their journaled intent, the manifest at finish, and reopening an interrupted run for resume.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kmsir.errors import EvidenceError
from kmsir.evidence import entries as records
from kmsir.evidence.bundle import (
    ANCHOR,
    ARTIFACTS,
    JOURNAL,
    NAME_PART,
    PLAYBOOK_COPY,
    QUARANTINE,
    Clock,
    canonical,
    check_incident_id,
    entry_hash,
    fsync_dir,
    jsonable,
    make_private_dirs,
    read_journal,
    replace_derived,
    sha256_hex,
    timestamp,
    utc_now,
    write_all,
    write_new,
)
from kmsir.evidence.entries import Artifact
from kmsir.evidence.manifest import write_manifest

#: The id iteration ``n`` of a ``for_each`` step is journaled under (``run.loops``): the
#: step's id, then ``[n]``; ``fullmatch`` it (``match``: what follows is the caller's).
ITERATION = re.compile(r"([^\[]+)\[([1-9][0-9]*)\]")
#: The folder of one account and Region of a fanned-out step (``run.fanout``).
FANNED = re.compile(r"\d{12}/[a-z]{2}(?:-[a-z]+)+-\d")


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
            make_private_dirs(root.parent)
            root.mkdir(mode=0o700)
            fsync_dir(root.parent)
            (root / ARTIFACTS).mkdir(mode=0o700)
            write_new(root / PLAYBOOK_COPY, playbook_raw)
            writer = cls(root, clock=clock)
            writer._open_journal()
        except OSError as exc:
            raise EvidenceError(
                f"cannot create the evidence bundle in {root}: {exc.strerror or exc}"
            ) from None
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
        _lock(self._fd, self.root)
        fsync_dir(self.root)

    def append(self, record: records.Journaled, *, step: str | None = None) -> records.Entry:
        """Append one entry holding ``record``, flushed and fsync'd before returning it."""
        type_, data = records.data_of(record)
        with self._lock:
            if self._fd is None:
                raise EvidenceError("the journal is closed")
            entry: dict[str, Any] = {
                "seq": self._seq + 1,
                "ts": timestamp(self._clock()),
                "type": type_,
                "step": step,
                "data": jsonable(data),
                "prev": self._head,
            }
            entry["hash"] = entry_hash(entry)
            line = canonical(entry) + b"\n"
            end = os.lseek(self._fd, 0, os.SEEK_END)
            try:
                write_all(self._fd, line)
            except OSError as exc:
                # cut what reached the file: the journal ends at its last complete entry
                # (truncating needs no free space) and the run can be resumed from there
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, end)
                raise EvidenceError(
                    f"cannot write the journal ({exc.strerror or exc}); it ends at entry "
                    f"{self._seq}, complete"
                ) from None
            self._seq += 1
            self._head = entry["hash"]
            return records.Entry(
                seq=entry["seq"],
                ts=entry["ts"],
                step=step,
                data=record,
                prev=entry["prev"],
                hash=entry["hash"],
            )

    def artifact_dir(self, step_index: int, step_id: str, attempt: int = 1) -> str:
        """A step's artifact folder: ``artifacts/NN-<step-id>``, ``...-<step-id>.N`` on retry N;
        iteration ``n`` of a ``for_each`` step (``<step-id>[n]``) writes to ``NN-<step-id>-n``
        (``NN``, the step's position, keeps it apart from any other step's)."""
        iteration = ITERATION.fullmatch(step_id)
        if iteration is not None:
            step_id = f"{iteration.group(1)}-{iteration.group(2)}"
        if not NAME_PART.fullmatch(step_id) or "." in step_id:
            raise EvidenceError(f"step id {step_id[:60]!r} cannot name an artifact directory")
        suffix = f".{attempt}" if attempt > 1 else ""
        return f"{ARTIFACTS}/{step_index:02d}-{step_id}{suffix}"

    def write_artifact(
        self, step_index: int, step_id: str, name: str, data: bytes, *, attempt: int = 1
    ) -> Artifact:
        """Write an artifact for a step and journal it. ``name`` is from the action's vocabulary.

        ``name`` may have one sub-folder (``<key-id>/policy.json``), under one account and
        Region of a fanned-out step (``<account>/<region>/<key-id>/policy.json``); each part
        is checked so that no name taken from AWS or input can leave the bundle. Each attempt
        of a retried step writes to its own folder, so a retry never collides with what the
        first wrote.
        """
        parts = name.split("/")
        fanned = len(parts) > 2 and FANNED.fullmatch("/".join(parts[:2])) is not None
        checked = all(NAME_PART.fullmatch(p) and ".." not in p for p in parts)
        if len(parts) > (4 if fanned else 2) or not checked:
            raise EvidenceError(f"artifact name {name[:80]!r} is not allowed")
        relative = f"{self.artifact_dir(step_index, step_id, attempt)}/{name}"
        target = self.root / relative
        digest = sha256_hex(data)
        # Journaled before the bytes land: a file a crash leaves behind unjournaled is then
        # recognisably this one (same path and hash), not something planted later.
        self.append(
            records.ArtifactIntent(path=relative, sha256=digest, bytes=len(data)), step=step_id
        )
        try:
            make_private_dirs(target.parent)
            write_new(target, data)
        except FileExistsError:
            raise EvidenceError(
                f"artifact {relative} already exists; evidence is never overwritten"
            ) from None
        except OSError as exc:
            raise EvidenceError(f"cannot write artifact {relative}: {exc}") from None
        artifact = Artifact(
            path=relative,
            sha256=digest,
            bytes=len(data),
            step=step_id,
            created=timestamp(self._clock()),
        )
        self.append(artifact, step=step_id)
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

    def finish(
        self,
        status: str,
        error: str | None = None,
        *,
        seal: Callable[[], None] | None = None,
    ) -> Path:
        """Journal the end of the run (``error``: why it failed) and write the manifest derived
        from the journal (``seal``: what to journal last, after the end: the anchor's
        signature)."""
        self.append(records.RunFinished(status=status, error=error))
        if seal is not None:
            seal()
        self.close()
        return write_manifest(self.root)

    def write_anchor(self, record: dict[str, Any]) -> None:
        """Keep the latest signature over the chain head (``anchor.json``, derived)."""
        data = json.dumps(record, indent=2, sort_keys=True).encode() + b"\n"
        try:
            replace_derived(self.root / ANCHOR, data)
        except OSError as exc:
            raise EvidenceError(f"cannot write {ANCHOR}: {exc.strerror or exc}") from None

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

    @staticmethod
    def _repair_tail(root: Path, fd: int) -> dict[str, Any]:
        """Save a torn last line under ``quarantine/``, then cut it from the journal."""
        path = root / JOURNAL
        raw = path.read_bytes()
        cut = raw.rfind(b"\n") + 1
        torn = raw[cut:]
        if not torn:
            return {}
        seq = len(read_journal(path).entries) + 1
        saved = f"{QUARANTINE}/journal-line-{seq}.torn"
        make_private_dirs(root / QUARANTINE)
        try:
            write_new(root / saved, torn)
        except FileExistsError:  # an earlier resume died after saving it
            if (root / saved).read_bytes() != torn:
                raise EvidenceError(f"{saved} exists with other bytes; not repairing") from None
        os.ftruncate(fd, cut)
        os.fsync(fd)
        return {
            "torn_tail": {
                "line": seq,
                "saved_as": saved,
                "sha256": sha256_hex(torn),
                "bytes": len(torn),
            }
        }

    @classmethod
    def _open_existing(
        cls, root: Path, clock: Clock, *, repair: bool
    ) -> tuple[BundleWriter, dict[str, Any]]:
        path = root / JOURNAL
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise EvidenceError(f"{root}: cannot open the journal: {exc.strerror or exc}") from None
        try:
            _lock(fd, root)  # before reading: a live writer's half-written line is not torn
            if repair:
                try:
                    repaired = cls._repair_tail(root, fd)
                except OSError as exc:
                    raise EvidenceError(
                        f"{root}: cannot repair the journal's torn last line: {exc.strerror or exc}"
                    ) from None
            elif read_journal(path).torn_tail:
                raise EvidenceError(
                    f"{root}: the journal's last line is torn (the run stopped while writing "
                    "it); kmsir resume repairs it first"
                )
            else:
                repaired = {}
        except BaseException:
            os.close(fd)
            raise
        writer = cls(root, clock=clock)
        writer._fd = fd
        view = read_journal(path).view()
        if view.lines:
            writer._seq, writer._head = view.lines, view.head
        writer._artifacts = [a.record for a in view.artifacts]
        return writer, repaired

    @classmethod
    def reopen(cls, root: Path, *, clock: Clock = utc_now) -> tuple[BundleWriter, dict[str, Any]]:
        """Open an unfinished (or failed) run's bundle for appending, for ``resume``.

        A torn last line (the run died while writing it) is first saved under
        ``quarantine/``, then cut from the journal. Returns the writer and what was repaired,
        which the caller journals as a ``repair`` entry (with the crash leftovers it found).
        """
        return cls._open_existing(root, clock, repair=True)

    @classmethod
    def attach(cls, root: Path, *, clock: Clock = utc_now) -> BundleWriter:
        """Open a bundle's journal to add a record to it (a report written), not to continue
        its run: refused while another process writes the bundle or when its last line is
        torn."""
        return cls._open_existing(root, clock, repair=False)[0]


def _lock(fd: int, root: Path) -> None:
    """Hold an exclusive lock on the journal while writing: one writer per bundle, ever."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise EvidenceError(
            f"{root}: another kmsir process is still writing this bundle (run in progress); "
            "stop it first, or wait for it to finish"
        ) from None


def ensure_idle(root: Path) -> None:
    """Refuse (``EvidenceError``) when another process holds the bundle's journal lock."""
    fd = os.open(root / JOURNAL, os.O_RDONLY)
    try:
        _lock(fd, root)
    finally:
        os.close(fd)  # closing releases the probe's lock

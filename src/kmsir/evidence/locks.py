"""Who is acting on an incident, and on a key, right now: advisory locks in the evidence dir.

Two responders running the same playbook on the same incident would both revoke the same
grants and disable the same key, each recording a different story. A run holds a lock on its
incident for as long as it runs, and on each key it changes from the moment it changes it;
a second run is refused with the holder's run id, pid and host (unless forced, which the
journal records).

The locks are ``flock``s on small files under the evidence directory: the kernel releases
them when the process dies, so a crash never leaves a stale lock, and the file's content (who
holds it) is only ever read to explain a refusal. Key locks live in a namespace per world (AWS
itself, or one sandbox server): scenario key ids are the same in every sandbox world.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kmsir.errors import EvidenceError, KmsirError
from kmsir.evidence.bundle import check_incident_id, make_private_dirs

#: Incident locks: ``<evidence-dir>/<incident>/INCIDENT_LOCK``.
INCIDENT_LOCK = ".lock"
#: Key locks: ``<evidence-dir>/KEY_LOCKS/<world>/<sha256 of the key ARN>.lock``.
KEY_LOCKS = ".locks"


class LockedError(KmsirError):
    """Another live process holds the lock; carries what it says about itself."""

    def __init__(self, message: str, holder: dict[str, Any]) -> None:
        self.holder = holder
        super().__init__(message)


@dataclass
class Lock:
    """A held lock; ``release`` (or the process ending) lets it go."""

    path: Path
    fd: int | None
    #: What this lock is about, beyond its holder (the key).
    about: dict[str, Any] = field(default_factory=dict)

    def describe(self, holder: dict[str, Any]) -> None:
        """Say who holds it (read by whoever is refused)."""
        if self.fd is None:
            return
        data = json.dumps(holder, sort_keys=True).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def release(self) -> None:
        """Let the lock go."""
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def _take(
    path: Path, holder: dict[str, Any], about: dict[str, Any] | None = None
) -> Lock | dict[str, Any]:
    """The lock at ``path``, or what its holder wrote about itself when it is taken."""
    try:
        make_private_dirs(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise EvidenceError(f"cannot take the lock {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            raw = os.pread(fd, 4096, 0)
        finally:
            os.close(fd)
        try:
            found = json.loads(raw) if raw else {}
        except ValueError:
            found = {}
        return found if isinstance(found, dict) else {}
    except BaseException:
        os.close(fd)
        raise
    lock = Lock(path, fd, about or {})
    # on a full disk the lock holds all the same: it just cannot say who holds it
    with contextlib.suppress(OSError):
        lock.describe({**holder, **lock.about})
    return lock


def _who(holder: dict[str, Any]) -> str:
    if not holder:
        return "another kmsir process (it has not said which yet)"
    return (
        f"run {holder.get('run_id') or '(starting)'} (pid {holder.get('pid')} on host "
        f"{holder.get('host')}, since {holder.get('since')})"
    )


@dataclass
class RunLocks:
    """The locks one run holds: its incident's, and each key's it changes."""

    evidence_dir: Path
    holder: dict[str, Any]
    #: The key-lock namespace (AWS, or one sandbox server); None: keys are not locked (an
    #: in-process sandbox is a world of its own).
    world: str | None
    force: bool = False
    held: dict[str, Lock] = field(default_factory=dict)
    #: Locks another process held that this run went past with ``force``.
    overridden: list[dict[str, Any]] = field(default_factory=list)

    def incident(self, incident_id: str) -> None:
        """Take the incident's lock; ``LockedError`` while another run holds it."""
        check_incident_id(incident_id)
        path = self.evidence_dir / incident_id / INCIDENT_LOCK
        taken = _take(path, self.holder)
        if isinstance(taken, Lock):
            self.held[str(path)] = taken
            return
        if self.force:
            self.overridden.append({"lock": f"incident {incident_id}", "holder": taken})
            return
        raise LockedError(
            f"incident {incident_id} is being worked on by {_who(taken)}: two runs would "
            "both act and record different stories; wait for it (or resume it when it "
            "stops), or pass --force to run anyway",
            taken,
        )

    def key(self, key_arn: str) -> dict[str, Any] | None:
        """Take the lock of a key this run is about to change (kept until the run ends).

        ``LockedError`` while another run holds it; with ``force``, returns the holder that was
        gone past (for the journal), else ``None``."""
        if self.world is None or str(self._key_path(key_arn)) in self.held:
            return None
        path = self._key_path(key_arn)
        taken = _take(path, self.holder, {"key": key_arn})
        if isinstance(taken, Lock):
            self.held[str(path)] = taken
            return None
        if self.force:
            overridden = {"lock": f"key {key_arn}", "holder": taken}
            self.overridden.append(overridden)
            return overridden
        raise LockedError(
            f"key {key_arn} is being changed by {_who(taken)} (incident "
            f"{taken.get('incident')}); wait for it to finish, or pass --force to change it "
            "anyway",
            taken,
        )

    def _key_path(self, key_arn: str) -> Path:
        name = hashlib.sha256(key_arn.encode()).hexdigest()[:32]
        world = hashlib.sha256(str(self.world).encode()).hexdigest()[:16]
        return self.evidence_dir / KEY_LOCKS / world / f"{name}.lock"

    def describe(self, **more: Any) -> None:
        """Add to what the held locks say about their holder (the run id, once known)."""
        self.holder.update(more)
        for lock in self.held.values():
            with contextlib.suppress(OSError):
                lock.describe({**self.holder, **lock.about})

    def release(self) -> None:
        """Let every lock go."""
        for lock in self.held.values():
            lock.release()
        self.held.clear()

    def __enter__(self) -> RunLocks:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

"""The runs an evidence directory holds and where each one stands (``kmsir status``).

Each bundle is read through the one projection (``read_journal(...).view()``), never by
looking at its entries. A run with no recorded end is *running* when a live process holds its
locks (the bundle's journal, or its incident's lock naming it), else *unfinished*: the
difference between "wait for it" and "resume it". Whether a lock is held is found without
taking it (``/proc/locks``, or the holder's pid on this host where there is no such file):
even a brief probe could make a run starting at that moment refuse to start.

Bounded: at most ``limit`` bundles are read (the newest, by run id, which begins with the
UTC time); the rest are counted. A directory that is not a bundle, a journal that cannot be
read or is too large to read here: one ``RunStatus`` saying so, never an exception.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kmsir.evidence.bundle import JOURNAL, NAME_PART, read_journal
from kmsir.evidence.locks import INCIDENT_LOCK, KEY_LOCKS

#: What ``status`` reads at most: bundles, and bytes of one journal.
MAX_RUNS = 200
MAX_JOURNAL_BYTES = 256 * 1024 * 1024
#: Where Linux lists the file locks held on the machine (``flock`` ones among them).
PROC_LOCKS = Path("/proc/locks")

_RUN_TIME = re.compile(r"^(\d{4})(\d\d)(\d\d)T(\d\d)(\d\d)(\d\d)Z")


@dataclass(frozen=True)
class RunStatus:
    """One bundle and where its run stands.

    ``state``: running, unfinished, succeeded, open risks (succeeded, something left open),
    failed, aborted, or unreadable (``problem`` says why). ``next``: what continues it:
    "resume", "report" (succeeded with open risks: the report tells them), "verify" (its
    journal does not read cleanly: resume would refuse it), or None (succeeded; running: wait
    for it)."""

    incident: str
    run: str
    path: Path
    state: str
    next: str | None = None
    problem: str | None = None
    mode: str | None = None
    playbook: str | None = None
    started: str | None = None
    ended: str | None = None
    error: str | None = None
    last_step: str | None = None
    last_status: str | None = None
    open_risks: list[str] = field(default_factory=list)
    journal_problems: list[str] = field(default_factory=list)
    #: Who holds the run's lock, as the lock file says (running runs).
    holder: dict[str, Any] | None = None
    #: A tabletop facilitator's bundle: the players' run it follows (never resumed).
    facilitates: dict[str, Any] | None = None

    @property
    def sort_key(self) -> str:
        """When the run started (its run id's time when the journal does not say)."""
        return self.started or _run_time(self.run) or ""


@dataclass
class Listing:
    """Every run found, newest last, grouped by incident; what was not read or not a run."""

    root: Path
    incidents: dict[str, list[RunStatus]]
    #: Bundles not read (older than the ``limit`` newest).
    not_shown: int = 0
    #: Directories of the evidence dir that hold no bundle.
    strays: list[str] = field(default_factory=list)


def list_runs(evidence_dir: Path, *, limit: int = MAX_RUNS) -> Listing:
    """The runs under ``evidence_dir`` (an evidence dir, or one incident's dir, or one
    bundle), each with its state; at most ``limit`` bundles read, the newest ones."""
    candidates: list[tuple[str, Path]] = []  # (incident, run dir)
    listing = Listing(evidence_dir, {})
    if (evidence_dir / JOURNAL).exists():
        candidates.append((evidence_dir.parent.name, evidence_dir))
    elif _is_incident(evidence_dir):
        candidates += [(evidence_dir.name, run) for run in _subdirs(evidence_dir)]
    else:
        for folder in _subdirs(evidence_dir):
            runs = _subdirs(folder)
            if not runs:
                listing.strays.append(f"{folder.name}: not an incident (no run bundle in it)")
            candidates += [(folder.name, run) for run in runs]
    candidates.sort(key=lambda c: (c[1].name, c[0]))
    listing.not_shown = max(0, len(candidates) - limit)
    locks = held_locks()
    holders: dict[Path, dict[str, Any] | None] = {}
    read = []
    for incident, path in candidates[listing.not_shown :]:
        lock = path.parent / INCIDENT_LOCK
        if lock not in holders:
            holders[lock] = _live_holder(lock, locks)
        read.append(_status(incident, path, holders[lock], locks))
    for run in sorted(read, key=lambda r: (r.sort_key, r.run)):
        listing.incidents.setdefault(run.incident, []).append(run)
    # incidents in the order of their newest run: the one being worked on comes last
    order = sorted(listing.incidents.items(), key=lambda item: item[1][-1].sort_key)
    listing.incidents = dict(order)
    return listing


def _subdirs(path: Path) -> list[Path]:
    """The directories in ``path`` that may be incidents or runs (not the lock files and
    folders, not hidden names)."""
    found = []
    with contextlib.suppress(OSError):
        for child in path.iterdir():
            if child.name.startswith(".") or child.name == KEY_LOCKS:
                continue
            with contextlib.suppress(OSError):
                if child.is_dir():
                    found.append(child)
    return sorted(found)


def _is_incident(path: Path) -> bool:
    """True when ``path`` is an incident's dir (a bundle in it), not a whole evidence dir."""
    return (path / INCIDENT_LOCK).exists() or any(
        (run / JOURNAL).exists() for run in _subdirs(path)
    )


def _status(
    incident: str,
    path: Path,
    holder: dict[str, Any] | None,
    locks: HeldLocks | None,
) -> RunStatus:
    """Where the run in the bundle at ``path`` stands."""
    base = RunStatus(incident, path.name, path, "unreadable", started=_run_time(path.name))
    journal = path / JOURNAL
    problem = _unreadable(path, journal)
    if problem is not None:
        return replace(base, problem=problem)
    try:
        read = read_journal(journal)
    except OSError as exc:
        return replace(base, problem=f"{JOURNAL}: cannot be read: {exc.strerror or exc}")
    view = read.view()
    meta = view.meta
    if meta is None:
        problem = (
            "; ".join(read.problems[:3])
            if read.problems and read.problems != [read.torn_tail]
            else "no run recorded (it stopped while writing its first journal line)"
        )
        return replace(base, problem=problem, next="verify" if read.problems else None)
    last = list(view.steps.values())[-1] if view.steps else None
    tampered = [p for p in read.problems if p != read.torn_tail]
    status = RunStatus(
        incident=meta.incident or incident,
        run=path.name,
        path=path,
        state=view.status,
        mode=meta.mode,
        playbook=str(meta.playbook.get("id") or "") or None,
        started=view.started,
        last_step=last.id if last is not None else None,
        last_status=last.status if last is not None else None,
        journal_problems=tampered,
        facilitates=meta.facilitates,
    )
    if view.finished is not None:
        risks = [str(risk.get("text", risk)) for risk in view.open_risks]
        ok = view.finished.status == "succeeded"
        state = "open risks" if ok and risks else view.finished.status
        # a plain success needs nothing more; its open risks are told in its report
        then = ("report" if risks else None) if ok else "resume"
        if meta.facilitates is not None:  # a tabletop facilitator's actions: never resumed
            then = None
        return replace(
            status,
            state=state,
            next="verify" if tampered else then,
            ended=view.finished.ts,
            error=view.finished.error,
            open_risks=risks,
        )
    named = holder is not None and holder.get("run_id") == status.run
    if named or (locks is not None and locks.holds(journal)):
        return replace(status, state="running", holder=holder if named else None)
    # a facilitator's bundle is never resumed: its facilitator has gone
    then = "verify" if tampered else None if meta.facilitates is not None else "resume"
    return replace(status, state="unfinished", next=then)


def _unreadable(path: Path, journal: Path) -> str | None:
    """Why the bundle at ``path`` cannot be read here, if it cannot."""
    if not NAME_PART.fullmatch(path.name):
        return "not a run bundle (a name kmsir never gives one)"
    try:
        info = journal.lstat()
    except FileNotFoundError:
        return f"not a run bundle (no {JOURNAL})"
    except OSError as exc:
        return f"{JOURNAL}: cannot be read: {exc.strerror or exc}"
    if not stat.S_ISREG(info.st_mode):
        return f"{JOURNAL} is not a regular file (never read)"
    if info.st_size > MAX_JOURNAL_BYTES:
        return f"{JOURNAL} of {info.st_size:,} bytes: too large to list (kmsir verify reads it)"
    return None


def _run_time(run_id: str) -> str | None:
    """The UTC time a run id begins with, as ``YYYY-MM-DDTHH:MM:SSZ``."""
    found = _RUN_TIME.match(run_id)
    if found is None:
        return None
    y, mo, d, h, mi, s = found.groups()
    return f"{y}-{mo}-{d}T{h}:{mi}:{s}Z"


# -- locks, without taking them --------------------------------------------------------------


@dataclass(frozen=True)
class HeldLocks:
    """The ``flock``s held on the machine now, as ``/proc/locks`` lists them."""

    #: (device major, minor, inode) of each locked file.
    files: frozenset[tuple[int, int, int]]
    #: The pids holding a lock on each inode number (for a file system whose ``stat``
    #: device is not the one the kernel lists, as on overlayfs).
    pids: dict[int, frozenset[int]]

    def holds(self, path: Path, pid: object = None) -> bool:
        """True when a lock is held on ``path`` (by ``pid``, when its device is not listed)."""
        try:
            info = path.stat()
        except OSError:
            return False
        if (os.major(info.st_dev), os.minor(info.st_dev), info.st_ino) in self.files:
            return True
        return isinstance(pid, int) and pid in self.pids.get(info.st_ino, frozenset())


def held_locks() -> HeldLocks | None:
    """The ``flock``s held now; None where the system does not list them (then a holder's
    pid is checked instead)."""
    try:
        with PROC_LOCKS.open() as listed:
            lines = listed.readlines(16 * 1024 * 1024)
    except OSError:
        return None
    files = set()
    pids: dict[int, set[int]] = {}
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 7804 fe:00:2416656 0 EOF" ("->" marks a waiting lock)
        if len(fields) < 6 or fields[1] != "FLOCK" or fields[2] == "->":
            continue
        parts = fields[5].split(":")
        with contextlib.suppress(ValueError):
            if len(parts) == 3:
                inode = int(parts[2])
                files.add((int(parts[0], 16), int(parts[1], 16), inode))
                pids.setdefault(inode, set()).add(int(fields[4]))
    return HeldLocks(frozenset(files), {k: frozenset(v) for k, v in pids.items()})


def _live_holder(lock: Path, held: HeldLocks | None) -> dict[str, Any] | None:
    """What the holder of the incident lock at ``lock`` says about itself, when a live
    process holds it; None when no one does (the file keeps its last holder's words)."""
    try:
        info = lock.lstat()
        if not stat.S_ISREG(info.st_mode):
            return None
        with lock.open("rb") as file:
            said = json.loads(file.read(4096) or b"{}")
    except (OSError, ValueError):
        return None
    if not isinstance(said, dict):
        return None
    pid, host = said.get("pid"), said.get("host")
    if held is not None:
        return said if held.holds(lock, pid) else None
    if host != socket.gethostname() or not isinstance(pid, int) or pid <= 0:
        return None  # another machine's process cannot be checked from here
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, someone else's
    except OSError:
        return None
    return said

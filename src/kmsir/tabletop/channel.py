"""The command channel between a tabletop's facilitator and the players' process: files.

The players' bundle keeps its single writer (the players' process); the facilitator steers the
exercise by dropping numbered command files the players' process polls at each step boundary,
and reads back what each did from the acknowledgements it writes. Everything lives under
``<evidence-dir>/.tabletop/``::

    sessions/<sid>/session.json          scenario id and source, team, endpoint, pid, started,
                                         runs [{run_id, bundle, team, incident}], world ids
    sessions/<sid>/commands/NNNNNN.json  {"seq", "action", "inject", "run", "by", "at"}
                                         (facilitator; "run": the run it is meant for)
    sessions/<sid>/acks/NNNNNN.json      {"seq", "action", "ok", "what", "at", ...} (players)
    runs/<run-id>.json                   {"session": sid}

Commands and acknowledgements are created atomically and never overwritten (two facilitators
sending at once get different numbers); ``session.json`` is replaced atomically as runs are
added. Directories are private (0700), files 0600, and every name is derived, never taken raw.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from kmsir.errors import KmsirError, UsageError
from kmsir.evidence.bundle import (
    JOURNAL,
    NAME_PART,
    fsync_dir,
    make_private_dirs,
    read_journal,
    timestamp,
    utc_now,
    write_all,
    write_new,
)

ROOT = ".tabletop"
SESSION = "session.json"
#: What a facilitator may ask of the players' process.
Action = Literal["fire", "hold", "release", "end", "reset"]
ACTIONS: tuple[Action, ...] = ("fire", "hold", "release", "end", "reset")
_NUMBERED = re.compile(r"^(\d{6})\.json$")
#: Largest channel file read (a session holding many runs stays far below it).
_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Session:
    """One players' session (a served world, one team's run after another)."""

    id: str
    root: Path  # <evidence-dir>/.tabletop/sessions/<sid>
    evidence_dir: Path

    def record(self) -> dict[str, Any]:
        """What ``session.json`` says now."""
        found = _read(self.root / SESSION)
        if not isinstance(found, dict):
            raise UsageError(f"{self.root / SESSION}: not a tabletop session record")
        return found


def create(
    evidence_dir: Path, record: Mapping[str, Any], *, now: datetime | None = None
) -> Session:
    """A new session under ``evidence_dir`` holding ``record`` (``runs`` starts empty)."""
    moment = now or utc_now()
    sid = f"{moment.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"
    root = evidence_dir / ROOT / "sessions" / sid
    make_private_dirs(root / "commands")
    make_private_dirs(root / "acks")
    make_private_dirs(evidence_dir / ROOT / "runs")
    session = Session(sid, root, evidence_dir)
    _replace(root / SESSION, {"id": sid, "started": timestamp(moment), "runs": [], **record})
    return session


def update(session: Session, **fields: Any) -> None:
    """Change fields of ``session.json`` (only the players' process writes it)."""
    _replace(session.root / SESSION, {**session.record(), **fields})


def link(session: Session, *, run_id: str, bundle: Path, team: str, incident: str) -> None:
    """A run of this session: listed in ``session.json`` (its bundle's absolute path: the
    facilitator may work from another directory) and findable by its id (``find``)."""
    name = _name(run_id, "run id")
    runs = [*session.record().get("runs", [])]
    if all(r.get("run_id") != run_id for r in runs):  # a resumed run is listed already
        runs.append(
            {"run_id": run_id, "bundle": str(bundle.resolve()), "team": team, "incident": incident}
        )
        update(session, runs=runs)
    path = session.evidence_dir / ROOT / "runs" / f"{name}.json"
    with contextlib.suppress(FileExistsError):  # a resumed run links again
        write_new(path, _dump({"session": session.id}))


def find(evidence_dir: Path, run: str | Path) -> Session:
    """The session a run belongs to, by its run id or its bundle's path (the bundle's own
    directory name is its run id; its evidence directory is two levels up)."""
    candidate = Path(run)
    if candidate.is_dir():
        evidence_dir, run = candidate.resolve().parent.parent, candidate.resolve().name
    name = _name(str(run), "run id")
    path = evidence_dir / ROOT / "runs" / f"{name}.json"
    try:
        linked = _read(path)
    except FileNotFoundError:
        raise UsageError(
            f"run {run}: no tabletop session in {evidence_dir} (started with "
            "`kmsir tabletop start`? pass the same --evidence-dir)"
        ) from None
    sid = _name(str(linked.get("session") if isinstance(linked, dict) else ""), "session id")
    session = Session(sid, evidence_dir / ROOT / "sessions" / sid, evidence_dir)
    session.record()  # it must be there
    return session


def send(
    session: Session,
    action: str,
    inject: int | None = None,
    *,
    by: str,
    run: str | None = None,
    now: datetime | None = None,
) -> int:
    """Drop a command for the players' process; its sequence number (1, 2, ...). ``run``:
    the run it is meant for (the players' process refuses it during another run, or between
    runs when the session's last run is another: a facilitator left on a finished team's run
    never steers the next team's); without one (older files), it goes to whichever run."""
    if action not in ACTIONS:
        raise UsageError(f"unknown tabletop command {action!r} (one of {', '.join(ACTIONS)})")
    if (action == "fire") != (inject is not None):
        raise UsageError("fire takes an inject number; no other command does")
    directory = session.root / "commands"
    while True:
        seq = max((n for n, _ in _numbered(directory)), default=0) + 1
        command = {
            "seq": seq,
            "action": action,
            "inject": inject,
            "by": by,
            "at": timestamp(now or utc_now()),
            **({} if run is None else {"run": run}),
        }
        try:
            write_new(directory / f"{seq:06d}.json", _dump(command))
        except FileExistsError:  # another facilitator took this number: take the next
            continue
        return seq


def commands(session: Session, after: int = 0) -> list[dict[str, Any]]:
    """The commands numbered above ``after``, in order. Each one's ``seq`` is its file name's
    number; a file that is no command (not JSON, not a plain file, too large, a ``seq``
    other than its name's number, an unknown action, a ``fire`` without an inject number...) is
    ``{"seq": n, "invalid": why}``: the players' process skips it, saying why."""
    found = []
    for n, path in _numbered(session.root / "commands"):
        if n <= after:
            continue
        try:
            record = _read(path)
        except FileNotFoundError:
            continue  # removed meanwhile
        except (UsageError, OSError) as exc:
            found.append({"seq": n, "invalid": _why(exc)})
            continue
        why = _invalid(record, n)
        found.append({"seq": n, "invalid": why} if why else {**record, "seq": n})
    return found


def _invalid(record: Any, number: int) -> str | None:
    """Why command file ``number``'s JSON is no command (``None``: it is one)."""
    if not isinstance(record, dict):
        return "not a JSON object"
    seq, action, inject = record.get("seq"), record.get("action"), record.get("inject")
    if isinstance(seq, bool) or seq != number:
        return f"its seq {str(seq)[:20]!r} is not its file's number {number}"
    if action not in ACTIONS:
        return f"unknown action {str(action)[:40]!r}"
    if inject is not None and (isinstance(inject, bool) or not isinstance(inject, int)):
        return f"inject {str(inject)[:20]!r} is not a number"
    if (action == "fire") != (inject is not None):
        return "fire takes an inject number; no other command does"
    if "run" in record and not isinstance(record["run"], str):
        return f"run {str(record['run'])[:40]!r} is not a run id"
    return None


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return f"unreadable: {exc.strerror or type(exc).__name__}"
    return "not a tabletop command (a plain JSON file under 1 MB)"


def ack(session: Session, seq: int, action: str, *, ok: bool, what: str, **more: Any) -> None:
    """The players' process says what command ``seq`` did (``ok``: it took effect)."""
    record = {"seq": seq, "action": action, "ok": ok, "what": what, "at": timestamp(utc_now())}
    with contextlib.suppress(FileExistsError):  # acknowledged once
        write_new(session.root / "acks" / f"{seq:06d}.json", _dump({**record, **more}))


def acks(session: Session) -> list[dict[str, Any]]:
    """Every acknowledgement, in command order (an unreadable file is left out)."""
    found = []
    for _, path in _numbered(session.root / "acks"):
        with contextlib.suppress(FileNotFoundError, UsageError, OSError):
            record = _read(path)
            if isinstance(record, dict):
                found.append(record)
    return found


def acked(session: Session, seq: int) -> dict[str, Any] | None:
    """The acknowledgement of command ``seq``, once the players' process wrote it."""
    try:
        found = _read(session.root / "acks" / f"{seq:06d}.json")
    except FileNotFoundError:
        return None
    return found if isinstance(found, dict) else None


def holding(answers: list[dict[str, Any]]) -> bool:
    """Whether the timed injects are held, from the players' process's acknowledgements in
    command order: as the last ``hold`` or ``release`` that took effect says, a world
    ``reset`` since starting unheld. What was asked and not applied holds nothing."""
    held = False
    for answer in answers:
        if not answer.get("ok"):
            continue
        action = answer.get("action")
        if action in ("hold", "release"):
            held = action == "hold"
        elif action == "reset":
            held = False
    return held


def last_run(session: Session) -> dict[str, Any] | None:
    """The session's latest run as ``session.json`` lists it (``run_id``, ``bundle``...)."""
    runs = [r for r in session.record().get("runs") or [] if isinstance(r, dict)]
    return runs[-1] if runs else None


def reset(
    evidence_dir: Path,
    run: str | Path,
    *,
    by: str,
    timeout: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Ask the players' process of ``run``'s session to reset its world; its acknowledgement.
    Refused at once (``UsageError``) when that process is gone, or while the session's last
    run has not finished (a team's run is going on: the process would refuse it at the next
    step); ``UsageError`` too when no answer comes within ``timeout`` seconds. The command is
    meant for that last run: should another team's run start meanwhile, it is refused."""
    session = find(evidence_dir, run)
    pid = session.record().get("pid")
    if isinstance(pid, int) and not alive(pid):
        raise UsageError(
            f"the players' process of session {session.id} (pid {pid}) is gone: nothing "
            "serves the world to reset (start it again with `kmsir tabletop start`)"
        )
    last = last_run(session)
    if last is not None and not _finished(Path(str(last.get("bundle") or ""))):
        raise UsageError(
            f"team {last.get('team')}'s run {last.get('run_id')} is going on: reset the world "
            "after it ends"
        )
    meant = last.get("run_id") if last is not None else None
    seq = send(session, "reset", by=by, run=meant if isinstance(meant, str) else None)
    waited = 0.0
    while waited < timeout:
        answer = acked(session, seq)
        if answer is not None:
            return answer
        sleep(0.2)
        waited += 0.2
    raise UsageError(
        f"the players' process of session {session.id} did not answer the reset in "
        f"{timeout:.0f} s (pid {pid}); the command stays queued"
    )


def _finished(bundle: Path) -> bool:
    """Whether the run in ``bundle`` has finished (its journal's ``run-finished``); a
    journal that cannot be read: taken as finished (the players' process judges then)."""
    try:
        return read_journal(bundle / JOURNAL).view().finished is not None
    except (KmsirError, OSError, ValueError):
        return True


def alive(pid: int) -> bool:
    """Whether process ``pid`` is there (a session's players' process)."""
    if pid <= 0:  # never a process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: there
        return True
    return True


# -- files ----------------------------------------------------------------------------------


def _name(value: str, what: str) -> str:
    """A name used in a path: checked, never taken raw (no ``/``, no ``..``)."""
    if not NAME_PART.match(value) or ".." in value:
        raise UsageError(f"{what} {value[:70]!r} is not one kmsir makes")
    return value


def _numbered(directory: Path) -> list[tuple[int, Path]]:
    """The numbered files of ``directory`` (by name only: none is opened), in order."""
    found = []
    with contextlib.suppress(FileNotFoundError):
        for path in directory.iterdir():
            match = _NUMBERED.match(path.name)
            if match is not None:  # else a temporary being written, or anything else
                found.append((int(match[1]), path))
    return sorted(found, key=lambda item: item[0])


def _read(path: Path) -> Any:
    """A channel file's JSON (``FileNotFoundError`` when missing); not a plain file (never
    opened: a FIFO would hang the reader), too large, or not JSON: ``UsageError``."""
    info = path.lstat()
    if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_BYTES:
        raise UsageError(f"{path}: not a tabletop channel file")
    try:
        return json.loads(path.read_bytes())
    except ValueError:
        raise UsageError(f"{path}: not a tabletop channel file") from None


def _dump(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, indent=1).encode() + b"\n"


def _replace(path: Path, record: Mapping[str, Any]) -> None:
    temp = path.parent / f".tmp-{path.name}-{secrets.token_hex(4)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        write_all(fd, _dump(record))
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(temp, path)
    fsync_dir(path.parent)

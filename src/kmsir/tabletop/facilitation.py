"""The facilitator's side of a tabletop: their own bundle, linked to the players' run, and the
players' journal followed read-only.

The players' bundle has one writer, the players' process; the facilitator never locks or
writes it. What the facilitator does (fire an inject, hold or release the timed injects, an
observation, end the exercise, stop following) is journaled in the facilitator's own bundle,
``<evidence-dir>/<players-incident>-facilitator/<run-id>/`` (its ``playbook.yaml`` a copy of
the scenario file, its ``run-started`` naming the run it ``facilitates``), and what must reach
the players' process goes through the command channel (``channel``), which it polls at each
step boundary.
"""

from __future__ import annotations

import getpass
import glob
import platform
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kmsir import __version__
from kmsir.errors import KmsirError, UsageError
from kmsir.evidence.bundle import JOURNAL, NAME_PART, read_journal, sha256_hex
from kmsir.evidence.entries import FacilitatorAction, RunStarted
from kmsir.evidence.journal import BundleWriter
from kmsir.evidence.view import RunView
from kmsir.tabletop import channel

if TYPE_CHECKING:
    from kmsir.sandbox.scenario_model import Scenario

Json = dict[str, Any]

#: The actions a facilitator takes, as ``FacilitatorAction`` names them.
FIRE, HOLD, RELEASE, NOTE, END, QUIT = FacilitatorAction.ACTIONS
#: The actions that reach the players' process through the command channel.
SENT = (FIRE, HOLD, RELEASE, END)
#: The mode a facilitator's run-started records.
MODE = "facilitation"


@dataclass(frozen=True)
class Players:
    """The players' run a facilitator follows: its bundle, and its tabletop session when it
    has one (a run started with ``kmsir tabletop start``; without one, only notes)."""

    bundle: Path
    session: channel.Session | None

    @property
    def journal(self) -> Path:
        return self.bundle / JOURNAL


def locate(evidence_dir: Path, run: str) -> Players:
    """The players' run ``run`` (a run id, or its bundle's path) and its session."""
    try:
        session: channel.Session | None = channel.find(evidence_dir, run)
    except UsageError:
        session = None
    bundle = _bundle_of(evidence_dir, run, session)
    if not (bundle / JOURNAL).is_file():
        raise UsageError(f"{bundle}: not an evidence bundle (no {JOURNAL})")
    return Players(bundle, session)


def _bundle_of(evidence_dir: Path, run: str, session: channel.Session | None) -> Path:
    as_path = Path(run)
    if (as_path / JOURNAL).is_file():
        return as_path
    if session is not None:
        # the session records each run's bundle by its absolute path (``channel.link``): a
        # bundle moved since is looked for under evidence_dir
        runs = [r for r in session.record().get("runs") or [] if isinstance(r, dict)]
        for played in runs:
            recorded = Path(str(played.get("bundle") or ""))
            mine = run in (played.get("run_id"), played.get("bundle"))
            if mine and played.get("bundle") and (recorded / JOURNAL).is_file():
                return recorded
    if not NAME_PART.fullmatch(run) or ".." in run:
        raise UsageError(f"{run[:70]!r}: neither a run id nor a bundle directory")
    found = sorted(evidence_dir.glob(f"*/{glob.escape(run)}/{JOURNAL}"))
    if len(found) == 1:
        return found[0].parent
    if not found:
        raise UsageError(f"no run {run!r} under {evidence_dir} (give its run id or bundle path)")
    raise UsageError(f"run id {run!r} names several bundles: give the bundle path")


def players_run(players: Players) -> RunView:
    """The players' run as their journal tells it now (read-only; a line being written is
    left for the next read)."""
    return read_journal(players.journal).view()


class Follower:
    """The players' journal, followed: ``changed`` says whether it grew since last asked."""

    def __init__(self, players: Players) -> None:
        self.players = players
        self._size = -1

    def changed(self) -> bool:
        """True when the journal's size changed since the last call (the first call: True)."""
        try:
            size = self.players.journal.stat().st_size
        except OSError:
            return False
        grown, self._size = size != self._size, size
        return grown


@dataclass
class Facilitation:
    """One facilitator following one players' run, writing their own bundle."""

    players: Players
    writer: BundleWriter
    by: str
    #: How many injects the scenario has (``fire N`` takes 0 to injects - 1).
    injects: int = 0
    actions: list[FacilitatorAction] = field(default_factory=list)
    closed: bool = False
    _acked: set[Any] = field(default_factory=set)

    @property
    def bundle(self) -> Path:
        return self.writer.root

    @property
    def run_id(self) -> str:
        """The players' run followed (its bundle's directory name): what each command sent
        is meant for."""
        return self.players.bundle.resolve().name

    @property
    def can_send(self) -> bool:
        """True when the players' process has a command channel (a tabletop session)."""
        return self.players.session is not None

    def act(self, action: str, *, inject: int | None = None, text: str | None = None) -> int | None:
        """Take ``action``: sent through the channel when it is one the players' process
        applies, then journaled here with the players' journal length. Returns the channel's
        sequence number (None for what is not sent)."""
        if action not in FacilitatorAction.ACTIONS:
            raise UsageError(f"unknown action {action!r}")
        if self.closed:
            raise UsageError("the facilitation has ended")
        command = None
        if action in SENT:
            if self.players.session is None:
                raise UsageError(
                    "this run has no tabletop session (it was not started with kmsir tabletop "
                    "start): nothing can reach the players; notes only"
                )
            command = channel.send(
                self.players.session, action, inject=inject, by=self.by, run=self.run_id
            )
        record = FacilitatorAction(
            action=action,
            players_entries=players_run(self.players).lines,
            inject=inject,
            text=text,
            command=command,
            by=self.by,
        )
        self.writer.append(record)
        self.actions.append(record)
        return command

    def refusal(self, action: str, view: Json, inject: int | None = None) -> str | None:
        """Why ``action`` cannot be taken now (None: it can), from the players' journal and
        the exercise as ``view`` (its facilitator view) tells it: an inject the scenario does
        not have, or one fired or sent already; anything but ``end`` once the players' run
        has finished, and ``end`` too when its process is gone or the session has gone on to
        another team's run (the players' process would refuse it). A refused action is
        neither sent nor journaled."""
        session = self.players.session
        if action not in SENT or session is None:
            return None  # ``act`` refuses what cannot be sent without a session
        finished = self.finished()
        if finished is not None:
            said = f"the players' run has finished ({finished})"
            last = channel.last_run(session)
            later = last.get("run_id") if last is not None else None
            if later and later != self.run_id:
                return f"{said}; the session now plays run {later}: attach to it"
            if action == END:
                return None if self.serving() else f"{said} and its process is gone"
            if self.serving():
                return f"{said}; its process only serves the world on now (end stops it)"
            return f"{said}: nothing reaches the players any more"
        if action != FIRE:
            return None
        if inject is None or not 0 <= inject < self.injects:
            numbered = f"0 to {self.injects - 1}" if self.injects else "none"
            return f"no inject {inject}: the scenario's injects are numbered {numbered}"
        upcoming = {i.get("index") for i in view.get("next_injects") or [] if isinstance(i, dict)}
        if inject not in upcoming:
            return f"inject {inject} has fired already (status lists those still to come)"
        for sent in self.actions:
            if sent.action == FIRE and sent.inject == inject and sent.command is not None:
                answer = channel.acked(session, sent.command)
                if answer is None or answer.get("ok"):
                    return f"inject {inject} was sent already (command {sent.command})"
        return None

    def finished(self) -> str | None:
        """How the players' run finished (its status), or None while it goes on."""
        done = players_run(self.players).finished
        return None if done is None else done.status

    def serving(self) -> bool:
        """True while the session's players' process is alive (after the run it may serve
        the world on, until an ``end``)."""
        pid = self.players.session.record().get("pid") if self.players.session else None
        return isinstance(pid, int) and not isinstance(pid, bool) and channel.alive(pid)

    def answers(self) -> list[Json]:
        """What the players' process did with this facilitator's commands since the last
        call (its acknowledgements, each once)."""
        if self.players.session is None:
            return []
        mine = {a.command for a in self.actions if a.command is not None}
        fresh = [
            a for a in channel.acks(self.players.session) if a.get("seq") in mine - self._acked
        ]
        self._acked |= {a.get("seq") for a in fresh if isinstance(a.get("seq"), int)}
        return fresh

    def close(self, why: str | None = None) -> Path:
        """Stop following: journal ``quit`` (``why``: what stopped it, when not the
        facilitator) and finish the bundle (its manifest written)."""
        if self.closed:
            return self.bundle
        self.act(QUIT, text=why)
        self.closed = True
        self.writer.finish("succeeded")
        return self.bundle


def check(players: Players) -> tuple[RunStarted, Path, Scenario]:
    """The players' run-started, its scenario file and that scenario: what a facilitator or
    the room follows. Refuses in one line (``UsageError``) what cannot be followed: a journal
    with no run yet, a facilitator's bundle, a run not played in a scenario, or whose
    scenario file is gone or no longer loads."""
    meta = players_run(players).meta
    if meta is None:
        raise UsageError(f"{players.bundle}: the players' journal has no run-started entry yet")
    if meta.facilitates is not None:
        theirs = meta.facilitates.get("run_id") if isinstance(meta.facilitates, dict) else None
        raise UsageError(
            f"{players.bundle} is a facilitator's bundle, not the players' run"
            + (f" (it follows run {theirs}: give that one)" if theirs else "")
        )
    from kmsir.sandbox import scenario as scenarios

    source = _scenario_file(meta)
    try:
        return meta, source, scenarios.load(str(source))
    except KmsirError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(
            f"run {meta.run_id}: its scenario {source} does not load: {first}"
        ) from None


def start(
    evidence_dir: Path,
    players: Players,
    *,
    by: str | None = None,
    clock: Callable[[], Any] | None = None,
) -> Facilitation:
    """Open the facilitator's bundle for ``players``' run (nothing of theirs is written)."""
    meta, source, scenario = check(players)
    raw = source.read_bytes()
    who = by or _local_user()
    kwargs = {} if clock is None else {"clock": clock}
    writer = BundleWriter.create(
        evidence_dir, f"{meta.incident}-facilitator", playbook_raw=raw, **kwargs
    )
    try:
        writer.append(
            RunStarted(
                tool={"name": "kmsir", "version": __version__},
                versions={"python": platform.python_version(), "platform": sys.platform},
                operator={"local_user": who},
                host=socket.gethostname(),
                location=str(evidence_dir.resolve()),
                playbook={
                    "id": scenario.id,
                    "title": scenario.title,
                    "sha256": sha256_hex(raw),
                    "path": source.name,
                },
                incident=f"{meta.incident}-facilitator",
                run_id=writer.run_id,
                inputs={},
                mode=MODE,
                simulated=True,
                scenario=scenario.id,
                region=meta.region,
                facilitates={
                    "run_id": meta.run_id,
                    "bundle": str(players.bundle.resolve()),
                    "incident": meta.incident,
                },
            )
        )
    except BaseException:
        writer.close()
        raise
    return Facilitation(players, writer, who, injects=len(scenario.injects))


def _scenario_file(meta: RunStarted) -> Path:
    """The scenario file the players' run was played in (its journal's sandbox source)."""
    from kmsir.sandbox import scenario as scenarios

    recorded = meta.sandbox or {}
    source = str(recorded.get("source") or meta.scenario or "")
    if not source:
        raise UsageError(f"run {meta.run_id} was not played in a sandbox scenario")
    path = Path(source)
    if not path.suffix:
        known = scenarios.available()
        if source not in known:
            raise UsageError(f"run {meta.run_id}: no scenario {source!r} any more")
        path = known[source]
    if not path.is_file():
        raise UsageError(f"run {meta.run_id}: its scenario file {path} is gone")
    return path


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "facilitator"

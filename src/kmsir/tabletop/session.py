"""The players' process of a tabletop: the scenario's world served on loopback, the team's run
of its playbook against it, and the facilitator's commands applied at each step boundary.

``kmsir tabletop start`` builds a ``PlayersSession``: it seeds the scenario's sandbox, serves
it on 127.0.0.1 (as ``sandbox serve``: the players may use the AWS CLI on the same world),
opens a session on the command channel (``channel``) and runs the playbook with the team's
answers (a person at a terminal, or an answers file). At each step boundary (the engine's
``before_step``) it applies the facilitator's commands in order (fire an inject now, hold or
release the timed injects, end the exercise: mid-run the run stops, aborted; after the last
step it finishes as it is), then fires the timed injects that came due; what fired is
journaled in the players' bundle by the run itself, which stays the bundle's one writer, and
only then are the commands acknowledged (``inbox``); a command meant for another run than the
one going on (after the run: than the last) is refused, never applied. After the run it may
keep serving: a ``reset`` re-seeds the served world to the scenario's start on the same
endpoint, and the next team's run re-seeds it once more as it starts (its timers count from
its own start); ``end`` stops. ``kmsir tabletop resume`` goes on with a stopped run
(``PlayersSession.resume``).

For tests (``tests/test_tabletop_debrief.py``'s scripted ransom-deletion team drives
``tabletop start --answers`` through ``tests/clikit.cli``): every moment of this process (the
world's start, its timers, the journal's times) is read from the module-level ``clock`` at
each reading; replace it before the command runs, e.g. a clock a minute further at each
reading, so the 10-minute timer comes due during the run (``tests/test_tabletop_session.py``,
the ``start`` test)::

    ticks = itertools.count()
    monkeypatch.setattr(kmsir.tabletop.session, "clock",
                        lambda: T0 + timedelta(minutes=next(ticks)))

A test that must place the timer at a given step plays a ``PlayersSession`` in process with a
reporter that moves a fake clock after the step it names (``Screen`` and ``Team`` there).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kmsir.errors import KmsirError, UsageError
from kmsir.evidence.bundle import check_incident_id, utc_now
from kmsir.run.engine import EndAtBoundary
from kmsir.tabletop import channel
from kmsir.tabletop.inbox import Inbox, where

if TYPE_CHECKING:
    from kmsir.actions.base import Reporter
    from kmsir.evidence.view import RunView
    from kmsir.playbook.model import LoadedPlaybook
    from kmsir.prompts import Prompter
    from kmsir.run.engine import RunResult
    from kmsir.run.resume import RunState
    from kmsir.sandbox import Sandbox
    from kmsir.sandbox.scenario_model import Scenario

#: The players' process's clock (see the module's docstring): tests replace it.
clock: Callable[[], datetime] = utc_now
#: How often the process looks for commands while it only serves, in seconds.
POLL_SECONDS = 0.5
ENDED = "the facilitator ended the exercise"
#: An incident id's length, leaving room for a replay's ``-replay`` (ids stop at 64).
_MAX_INCIDENT = 64 - len("-replay")
#: A team slug's longest; the hex digits of the team name's hash a cut slug ends with.
_SLUG, _HASHED = 24, 6


def now() -> datetime:
    """The time by ``clock`` as it is when asked (a test may have replaced it since)."""
    return clock()


def incident_id(scenario_id: str, team: str) -> str:
    """``tabletop-<scenario>-<team-slug>``: each team's runs of a scenario in one incident.

    The id leaves room for a replay's ``-replay``; a slug that had to be cut, or a name with
    no ASCII letter or digit ("日本"), ends with a short hash of the name, so two long names
    sharing their beginning stay two incidents."""
    if not team.strip():
        raise UsageError("--team: give the team a name")
    full = re.sub(r"[^a-z0-9]+", "-", team.lower()).strip("-")
    base = f"tabletop-{scenario_id}-"
    room = max(_HASHED + 1, min(_SLUG, _MAX_INCIDENT - len(base)))
    slug = full[:room].strip("-")
    if slug != full or not slug:
        digest = hashlib.sha256(team.strip().encode()).hexdigest()[:_HASHED]
        slug = f"{full[: room - _HASHED - 1].strip('-')}-{digest}".strip("-")
    base = base[: _MAX_INCIDENT - len(slug)]
    return check_incident_id(f"{base}{slug}")


@dataclass(frozen=True)
class Setup:
    """What one players' session plays: the scenario, its playbook, the first team."""

    scenario: Scenario
    #: How resume and replay find the scenario again (a built-in name or an absolute path).
    source: str
    loaded: LoadedPlaybook
    team: str
    evidence_dir: Path
    port: int = 0
    #: The answers file's answers (recorded with each run), if the team is scripted.
    answers: Mapping[str, Any] = field(default_factory=dict)
    #: Serve on after the run (a terminal's default: the next team, the AWS CLI).
    keep_serving: bool = False


@dataclass(frozen=True)
class Players:
    """What the CLI hands in: how to ask and show (this module neither prompts nor prints)."""

    prompter: Prompter
    reporter: Reporter
    #: One line for the players' terminal (a command's effect, a reset).
    say: Callable[[str], None]
    #: The world is served: its endpoint and the variables that point an AWS client at it.
    served: Callable[[str, Mapping[str, str]], None]
    #: A run's bundle exists: its run id and path (say them, and the facilitator's command).
    run_started: Callable[[str, Path], None]
    #: A run ended: render its report, say how it went.
    run_finished: Callable[[RunResult], None]
    warn: Callable[[str], None]
    #: After a reset: the next team's name, or ``None`` (serve on without a run).
    next_team: Callable[[], str | None] | None = None


class PlayersSession:
    """One served world and the teams' runs in it, steered through the command channel."""

    def __init__(
        self, setup: Setup, players: Players, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.setup = setup
        self.players = players
        self.sleep = sleep
        self.sandbox: Sandbox | None = None
        self.channel: channel.Session | None = None
        self.endpoint = ""
        self.results: list[RunResult] = []
        self.inbox: Inbox | None = None
        self._ended = False
        #: The run going on (its id), while one is.
        self.run_id: str | None = None
        #: A team's run is going on (Ctrl-C then interrupts it, rather than the serving).
        self.running = False

    def play(self) -> list[RunResult]:
        """Serve the world, run the team's playbook in it, then serve on (``keep_serving``)
        until the facilitator ends the session, until Ctrl-C, or after a reset without a next
        team... The result of each run, in order."""
        with contextlib.ExitStack() as stack:
            stack.callback(self._close_world)
            self._seed()
            self._listen(stack)
            self.channel = channel.create(
                self.setup.evidence_dir,
                {
                    "scenario": self.setup.scenario.id,
                    "source": self.setup.source,
                    "team": self.setup.team,
                    "endpoint": self.endpoint,
                    "pid": os.getpid(),
                    "world": self._world_ids(),
                },
                now=now(),
            )
            self.inbox = Inbox(self.channel, self.players.warn)
            self._serve_teams(self.setup.team, None)
        return self.results

    def resume(self, state: RunState) -> list[RunResult]:
        """Go on with a team's interrupted run (``kmsir tabletop resume``): its world rebuilt
        from the journal and served again, its session's channel re-opened (a new endpoint
        and pid in ``session.json``; held timers held again, as the acknowledgements say),
        the run resumed, then served on as after ``play``'s run."""
        from kmsir.run import launch, rollback_run

        self.channel = channel.find(self.setup.evidence_dir, state.root)
        pid = self.channel.record().get("pid")
        if isinstance(pid, int) and pid != os.getpid() and channel.alive(pid):
            raise UsageError(
                f"the players' process of session {self.channel.id} (pid {pid}) still "
                "serves it: stop it (Ctrl-C) before resuming the run"
            )
        with contextlib.ExitStack() as stack:
            stack.callback(self._close_world)
            sandbox = launch.rebuild_sandbox(state.meta.sandbox or {}, self.setup.scenario.id)
            sandbox.clock = now
            self.sandbox = sandbox.__enter__()
            replayed = rollback_run.replay_world(sandbox, state.view)
            self._listen(stack)
            channel.update(self.channel, endpoint=self.endpoint, pid=os.getpid())
            self.inbox = Inbox(self.channel, self.players.warn)
            if self.inbox.reopen(state.view):
                sandbox.hold()
            self._serve_teams(self.setup.team, (state, replayed))
        return self.results

    def _serve_teams(self, team: str | None, resumed: tuple[RunState, Any] | None) -> None:
        self.players.served(self.endpoint, self._world().client_environment(self.endpoint))
        while team is not None:
            self.results.append(self._run(team, resumed))
            resumed = None
            if self._ended:  # mid-run, the run says so; after its last step, this does
                if self.results[-1].status == "succeeded":
                    self.players.say(f"kmsir tabletop: {ENDED}")
                break
            if not self.setup.keep_serving:
                break
            self.players.say(
                f"kmsir tabletop: the world stays served at {self.endpoint}: `kmsir tabletop "
                f"reset {shlex.quote(str(self.results[-1].bundle.resolve()))}` restores it "
                "for the next team; Ctrl-C stops"
            )
            team = self._serve()

    def _listen(self, stack: contextlib.ExitStack) -> None:
        try:
            server, self.endpoint = self._world().serve(self.setup.port)
        except OSError as exc:
            raise UsageError(
                f"--port {self.setup.port}: cannot listen on 127.0.0.1: {exc.strerror or exc}"
            ) from None
        stack.callback(server.stop)

    # -- one team's run -------------------------------------------------------------------

    def _run(self, team: str, resumed: tuple[RunState, Any] | None = None) -> RunResult:
        from kmsir.run import launch
        from kmsir.run.engine import RunOptions

        if self.results and resumed is None:
            self.reset()  # the next team's world, its timers counted from its run's start
        self.run_id = resumed[0].root.resolve().name if resumed else None
        sandbox, session, setup = self._world(), self._session(), self.setup
        incident = resumed[0].meta.incident if resumed else incident_id(setup.scenario.id, team)
        answers = dict(setup.answers)
        options = RunOptions(
            incident_id=incident,
            evidence_dir=setup.evidence_dir,
            mode="sandbox",
            scenario=setup.scenario.id,
            extra={"answers": {"source": "answers file", "values": answers}}
            if answers and not resumed
            else {},
        )
        recorded = (
            {"sandbox_replay": resumed[1]}
            if resumed
            else {
                "sandbox": {
                    **sandbox.record(),
                    "source": setup.source,
                    "tabletop": {"session": session.id, "team": team},
                }
            }
        )
        venue = launch.sandboxed(sandbox, options, recorded)
        venue = dataclasses.replace(
            venue, before_step=self._boundary, after_boundary=self._inbox().acknowledge
        )

        def bundle_made(root: Path) -> None:
            self.run_id = root.name
            channel.link(session, run_id=root.name, bundle=root, team=team, incident=incident)
            self.players.run_started(root.name, root)

        engine = launch.engine(
            venue,
            prompter=self.players.prompter,
            reporter=self.players.reporter,
            anchor_key=None,
            on_bundle=bundle_made,
            warn=self.players.warn,
            clock=now,
        )
        self.running = True
        try:
            if resumed:
                result = engine.resume(setup.loaded, resumed[0], venue.options)
            else:
                inputs = launch.run_inputs(setup.loaded, {}, self.players.prompter, setup.scenario)
                result = engine.run(setup.loaded, inputs, venue.options)
        finally:
            self.running = False
        self.players.run_finished(result)
        return result

    def _boundary(self, step_id: str | None) -> list[dict[str, Any]]:
        """The engine's ``before_step``: the facilitator's commands, then the due timers.
        A command file that is none is skipped (acknowledged as refused, the players warned),
        one meant for another run is refused; a channel that cannot be read is warned about,
        and the run goes on."""
        sandbox = self._world()
        records: list[dict[str, Any]] = []
        inbox = self._inbox()
        for command in inbox.commands():
            if inbox.elsewhere(command, self.run_id, "the run going on"):
                continue
            if command.get("action") == "end":
                self._ended = True
                inbox.later(command, ok=True, what=f"exercise ended {where(step_id)}")
                if step_id is not None:  # mid-run; at the end the run finishes as it is
                    raise EndAtBoundary(ENDED, records)  # what fired before it is journaled
                return records
            fired = self._apply(command, step_id)
            if fired is not None:
                records.append(fired)
        return records + sandbox.before_step(step_id)

    def _apply(self, command: Mapping[str, Any], step_id: str | None) -> dict[str, Any] | None:
        """Apply one command during a run (acknowledged later); the inject it fired, if any."""
        sandbox, inbox = self._world(), self._inbox()
        seq, action = int(command["seq"]), str(command.get("action"))
        if action == "fire":
            index = command.get("inject")
            try:
                if not isinstance(index, int):
                    raise UsageError("fire: no inject number")
                record = sandbox.fire_now(index, before=step_id, command=seq)
            except KmsirError as exc:
                inbox.later(command, ok=False, what=str(exc), inject=index)
                return None
            what = f"inject {index} fired {where(step_id)}"
            inbox.later(command, ok=True, what=what, inject=index)
            return record
        if action in ("hold", "release"):
            (sandbox.hold if action == "hold" else sandbox.release)()
            what = "timed injects held" if action == "hold" else "timed injects released"
            inbox.later(command, ok=True, what=f"{what} {where(step_id)}")
            return None
        inbox.later(command, ok=False, what="a team's run is going on (end it first)")
        return None

    # -- between teams --------------------------------------------------------------------

    def _serve(self) -> str | None:
        """Serve the world after a run until a command decides: ``end`` (``None``: stop), or
        ``reset`` (the world re-seeded; the next team's name, or serve on without one)."""
        inbox = self._inbox()
        last = self.results[-1].bundle.name if self.results else None
        while True:
            for command in inbox.commands():
                if inbox.elsewhere(command, last, "the session's last run"):
                    inbox.acknowledge()
                    continue
                action = str(command.get("action"))
                if action == "end":
                    inbox.later(command, ok=True, what="session ended")
                    inbox.acknowledge()
                    self.players.say("kmsir tabletop: the facilitator ended the session")
                    return None
                if action != "reset":
                    inbox.later(command, ok=False, what="no run is going on")
                    inbox.acknowledge()
                    continue
                self.reset()
                inbox.later(command, ok=True, what="world reset to its start")
                inbox.acknowledge()
                self.players.say("kmsir tabletop: the world was reset to the scenario's start")
                team = self.players.next_team() if self.players.next_team else None
                if team:
                    return team
            inbox.acknowledge()  # the bad files' refusals
            self.sleep(POLL_SECONDS)

    def reset(self) -> None:
        """Re-seed the served world to the scenario's start (same endpoint: the server serves
        moto's backends, which the new world seeds afresh); its clock starts again now."""
        self._close_world()
        self._seed()
        channel.update(self._session(), world=self._world_ids())

    # -- the world ------------------------------------------------------------------------

    def _seed(self) -> Sandbox:
        from kmsir.sandbox import Sandbox

        sandbox = Sandbox(self.setup.scenario, now=now(), clock=now)
        self.sandbox = sandbox.__enter__()
        return sandbox

    def _close_world(self) -> None:
        if self.sandbox is not None:
            sandbox, self.sandbox = self.sandbox, None
            sandbox.__exit__(None, None, None)

    def _world(self) -> Sandbox:
        if self.sandbox is None:
            raise UsageError("the tabletop world is not up")
        return self.sandbox

    def _inbox(self) -> Inbox:
        if self.inbox is None:
            raise UsageError("the tabletop session is not open")
        return self.inbox

    def _session(self) -> channel.Session:
        if self.channel is None:
            raise UsageError("the tabletop session is not open")
        return self.channel

    def _world_ids(self) -> dict[str, Any]:
        """The seeded world's key ids and aliases (the same for every seeding of a scenario;
        nothing named as the scenario names it: the players may read this file)."""
        return {"keys": {k["id"]: k["alias"] for k in self._world().keys.values()}}


def refuse_resume(view: RunView) -> None:
    """``kmsir resume`` of a tabletop's run, refused in one line: one the facilitator ended
    stays ended; any other goes on with ``kmsir tabletop resume`` (its world served again,
    its channel re-opened)."""
    if view.finished is not None and view.finished.error == ENDED:
        raise UsageError(f"{ENDED} (run {view.run_id}): it is not resumed")
    sandbox = view.meta.sandbox if view.meta is not None else None
    if isinstance(sandbox, dict) and sandbox.get("tabletop"):
        raise UsageError(
            f"run {view.run_id} is a tabletop's: go on with `kmsir tabletop resume BUNDLE`"
        )

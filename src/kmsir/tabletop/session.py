"""The players' process of a tabletop: the scenario's world served on loopback, the team's run
of its playbook against it, and the facilitator's commands applied at each step boundary.

``kmsir tabletop start`` builds a ``PlayersSession``: it seeds the scenario's sandbox, serves
it on 127.0.0.1 (as ``sandbox serve``: the players may use the AWS CLI on the same world),
opens a session on the command channel (``channel``) and runs the playbook with the team's
answers (a person at a terminal, or an answers file). At each step boundary (the engine's
``before_step``) it applies the facilitator's commands in order (fire an inject now, hold or
release the timed injects, end the exercise) and acknowledges each, then fires the timed
injects that came due; what fired is journaled in the players' bundle by the run itself, which
stays the bundle's one writer. After the run it may keep serving: a ``reset`` re-seeds the
served world to the scenario's start on the same endpoint for the next team, ``end`` stops.

For tests (H3: the scripted ransom-deletion team drives ``tabletop start --answers`` through
``tests/clikit.cli``): every moment of this process (the world's start, its timers, the
journal's times) is read from the module-level ``clock`` at each reading; replace it before
the command runs, e.g. a clock a minute further at each reading, so the 10-minute timer comes
due during the run (``tests/test_tabletop_session.py``, the ``start`` test)::

    ticks = itertools.count()
    monkeypatch.setattr(kmsir.tabletop.session, "clock",
                        lambda: T0 + timedelta(minutes=next(ticks)))

A test that must place the timer at a given step plays a ``PlayersSession`` in process with a
reporter that moves a fake clock after the step it names (``Screen`` and ``Team`` there).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kmsir.errors import KmsirError, UsageError
from kmsir.evidence.bundle import check_incident_id, timestamp, utc_now
from kmsir.run.engine import EndAtBoundary
from kmsir.tabletop import channel

if TYPE_CHECKING:
    from kmsir.actions.base import Reporter
    from kmsir.playbook.model import LoadedPlaybook
    from kmsir.prompts import Prompter
    from kmsir.run.engine import RunResult
    from kmsir.sandbox import Sandbox
    from kmsir.sandbox.scenario_model import Scenario

#: The players' process's clock (see the module's docstring): tests replace it.
clock: Callable[[], datetime] = utc_now
#: How often the process looks for commands while it only serves, in seconds.
POLL_SECONDS = 0.5
ENDED = "the facilitator ended the exercise"


def now() -> datetime:
    """The time by ``clock`` as it is when asked (a test may have replaced it since)."""
    return clock()


def incident_id(scenario_id: str, team: str) -> str:
    """``tabletop-<scenario>-<team-slug>``: each team's runs of a scenario in one incident."""
    slug = re.sub(r"[^a-z0-9]+", "-", team.lower()).strip("-")[:24].strip("-")
    if not slug:
        raise UsageError(f"--team {team[:40]!r}: give a name with letters or digits")
    return check_incident_id(f"tabletop-{scenario_id}-{slug}"[:64].rstrip("-."))


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
        self.results: list[RunResult] = []
        self._seen = 0  # the last command applied
        self._ended = False
        #: A team's run is going on (Ctrl-C then interrupts it, rather than the serving).
        self.running = False

    def play(self) -> list[RunResult]:
        """Serve the world, run the team's playbook in it, then serve on (``keep_serving``)
        until the facilitator ends the session, until Ctrl-C, or after a reset without a next
        team... The result of each run, in order."""
        with contextlib.ExitStack() as stack:
            stack.callback(self._close_world)
            sandbox = self._seed()
            try:
                server, endpoint = sandbox.serve(self.setup.port)
            except OSError as exc:
                raise UsageError(
                    f"--port {self.setup.port}: cannot listen on 127.0.0.1: {exc.strerror}"
                ) from None
            stack.callback(server.stop)
            self.channel = channel.create(
                self.setup.evidence_dir,
                {
                    "scenario": self.setup.scenario.id,
                    "source": self.setup.source,
                    "team": self.setup.team,
                    "endpoint": endpoint,
                    "pid": os.getpid(),
                    "world": self._world_ids(),
                },
                now=now(),
            )
            self.players.served(endpoint, sandbox.client_environment(endpoint))
            team: str | None = self.setup.team
            while team is not None:
                self.results.append(self._run(team))
                team = self._serve() if self.setup.keep_serving and not self._ended else None
        return self.results

    # -- one team's run -------------------------------------------------------------------

    def _run(self, team: str) -> RunResult:
        from kmsir.run import launch
        from kmsir.run.engine import RunOptions

        sandbox, session, setup = self._world(), self._session(), self.setup
        incident = incident_id(setup.scenario.id, team)
        answers = dict(setup.answers)
        options = RunOptions(
            incident_id=incident,
            evidence_dir=setup.evidence_dir,
            mode="sandbox",
            scenario=setup.scenario.id,
            extra={"answers": {"source": "answers file", "values": answers}} if answers else {},
        )
        recorded = {
            "sandbox": {
                **sandbox.record(),
                "source": setup.source,
                "tabletop": {"session": session.id, "team": team},
            }
        }
        venue = launch.sandboxed(sandbox, options, recorded)
        venue = dataclasses.replace(venue, before_step=self._boundary)

        def bundle_made(root: Path) -> None:
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
        inputs = launch.run_inputs(setup.loaded, {}, self.players.prompter, setup.scenario)
        self.running = True
        try:
            result = engine.run(setup.loaded, inputs, venue.options)
        finally:
            self.running = False
        self.players.run_finished(result)
        return result

    def _boundary(self, step_id: str | None) -> list[dict[str, Any]]:
        """The engine's ``before_step``: the facilitator's commands, then the due timers."""
        sandbox, session = self._world(), self._session()
        records: list[dict[str, Any]] = []
        for command in channel.commands(session, after=self._seen):
            self._seen = int(command["seq"])
            if command.get("action") == "end":
                self._ended = True
                where = f"before step {step_id}" if step_id else "at the end of the run"
                what = f"exercise ended {where}"
                channel.ack(session, self._seen, "end", ok=True, what=what)
                raise EndAtBoundary(ENDED, records)  # what fired before it is journaled
            fired = self._apply(command, step_id)
            if fired is not None:
                records.append(fired)
        return records + sandbox.before_step(step_id)

    def _apply(self, command: Mapping[str, Any], step_id: str | None) -> dict[str, Any] | None:
        """Apply one command during a run and acknowledge it; the inject it fired, if any."""
        sandbox, session = self._world(), self._session()
        seq, action = int(command["seq"]), str(command.get("action"))
        where = f"before step {step_id}" if step_id else "at the end of the run"
        if action == "fire":
            index = command.get("inject")
            try:
                if not isinstance(index, int):
                    raise UsageError("fire: no inject number")
                record = sandbox.fire_now(index, before=step_id, command=seq)
            except KmsirError as exc:
                channel.ack(session, seq, action, ok=False, what=str(exc), inject=index)
                return None
            channel.ack(
                session, seq, action, ok=True, what=f"inject {index} fired {where}", inject=index
            )
            return record
        if action in ("hold", "release"):
            (sandbox.hold if action == "hold" else sandbox.release)()
            what = "timed injects held" if action == "hold" else "timed injects released"
            channel.ack(session, seq, action, ok=True, what=f"{what} {where}")
            return None
        channel.ack(
            session,
            seq,
            action,
            ok=False,
            what=f"{action} refused: a team's run is going on (end it first)",
        )
        return None

    # -- between teams --------------------------------------------------------------------

    def _serve(self) -> str | None:
        """Serve the world after a run until a command decides: ``end`` (``None``: stop), or
        ``reset`` (the world re-seeded; the next team's name, or serve on without one)."""
        session = self._session()
        while True:
            for command in channel.commands(session, after=self._seen):
                seq, action = int(command["seq"]), str(command.get("action"))
                self._seen = seq
                if action == "end":
                    channel.ack(session, seq, action, ok=True, what="session ended")
                    self.players.say("kmsir tabletop: the facilitator ended the session")
                    return None
                if action != "reset":
                    channel.ack(session, seq, action, ok=False, what="no run is going on")
                    continue
                self.reset()
                channel.ack(session, seq, action, ok=True, what="world reset to its start")
                self.players.say("kmsir tabletop: the world was reset to the scenario's start")
                team = self.players.next_team() if self.players.next_team else None
                if team:
                    return team
            self.sleep(POLL_SECONDS)

    def reset(self) -> None:
        """Re-seed the served world to the scenario's start (same endpoint: the server serves
        moto's backends, which the new world seeds afresh); its clock starts again now."""
        self._close_world()
        self._seed()
        channel.update(self._session(), world=self._world_ids(), reset=timestamp(now()))

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

    def _session(self) -> channel.Session:
        if self.channel is None:
            raise UsageError("the tabletop session is not open")
        return self.channel

    def _world_ids(self) -> dict[str, Any]:
        """The seeded world's ids (the same for every seeding of a scenario)."""
        sandbox = self._world()
        return {
            "keys": {n: {"id": k["id"], "alias": k["alias"]} for n, k in sandbox.keys.items()},
            "grants": {n: g["id"] for n, g in sandbox.grants.items()},
            "users": {n: u["access_key_ids"] for n, u in sandbox.users.items()},
        }


def reset(
    evidence_dir: Path,
    run: str | Path,
    *,
    by: str,
    timeout: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Ask the players' process of ``run``'s session to reset its world; its acknowledgement
    (``UsageError`` when none comes within ``timeout`` seconds: the process is gone, or
    busy with a team's run)."""
    session = channel.find(evidence_dir, run)
    seq = channel.send(session, "reset", by=by)
    waited = 0.0
    while waited < timeout:
        answer = channel.acked(session, seq)
        if answer is not None:
            return answer
        sleep(0.2)
        waited += 0.2
    raise UsageError(
        f"the players' process of session {session.id} did not answer the reset in "
        f"{timeout:.0f} s (is `kmsir tabletop start` still serving? pid "
        f"{session.record().get('pid')}); the command stays queued"
    )

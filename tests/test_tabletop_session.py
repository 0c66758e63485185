"""The players' process of a tabletop: timed injects at step boundaries, the facilitator's
commands through the channel (fire, hold, release, end), reset between teams, and what
``kmsir tabletop start`` prints.

The runs play ransom-deletion (a timed inject, "Ransom email", 10 minutes in) with its scripted
answers, on a fake clock; a test reporter stands for the players' screen and acts (moves the
clock, sends the facilitator's commands) after the steps it names, as the people would while
the team works.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from kmsir import actions
from kmsir.actions.base import NullReporter
from kmsir.evidence import integrity
from kmsir.playbook import model as playbook
from kmsir.prompts import ScriptedPrompter
from kmsir.run.engine import RunResult
from kmsir.sandbox import scenario as scenarios
from kmsir.tabletop import channel, session

from .clikit import cli
from .conftest import PLAYBOOKS

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
SCENARIO = "ransom-deletion"


class FakeClock:
    """The players' process's clock (``session.clock``), moved by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def at(self, minutes: float) -> None:
        self.now = T0 + timedelta(minutes=minutes)


@dataclass
class Screen(NullReporter):
    """The players' screen: what was shown, in order; ``after`` runs a test's action once
    the step it names was shown (as the facilitator or the clock would act meanwhile)."""

    after: dict[str, Callable[[], None]] = field(default_factory=dict)
    shown: list[tuple[str, str]] = field(default_factory=list)

    def step(self, step_id: str, title: str, status: str, summary: str) -> None:
        self.shown.append(("step", step_id))
        action = self.after.pop(step_id, None)
        if action is not None:
            action()

    def notice(self, text: str) -> None:
        self.shown.append(("notice", text))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(session, "clock", fake)
    return fake


@pytest.fixture(scope="module")
def world() -> Any:
    return scenarios.load(SCENARIO)


@pytest.fixture(scope="module")
def loaded(world: Any) -> playbook.LoadedPlaybook:
    return playbook.load(PLAYBOOKS / f"{world.playbook}.yaml", actions.catalog())


class Team:
    """One team's players' session, played in this thread (or in another one)."""

    def __init__(
        self,
        world: Any,
        loaded: playbook.LoadedPlaybook,
        evidence: Path,
        screen: Screen,
        source: str = SCENARIO,
    ) -> None:
        self.screen = screen
        self.sent: list[int] = []
        self.runs: list[tuple[str, Path]] = []
        self.served: list[str] = []
        self.said: list[str] = []
        #: After a reset: the next team's name (``None``: none, serve on).
        self.next_team: Callable[[], str | None] | None = None
        self.setup = session.Setup(
            scenario=world,
            source=source,
            loaded=loaded,
            team="Blue",
            evidence_dir=evidence,
            answers=world.answers,
        )

    def players(self) -> session.Players:
        return session.Players(
            prompter=ScriptedPrompter(self.setup.answers, source="answers file"),
            reporter=self.screen,
            say=self.said.append,
            served=lambda endpoint, _: self.served.append(endpoint),
            run_started=lambda run_id, bundle: self.runs.append((run_id, bundle)),
            run_finished=lambda _: None,
            warn=self.said.append,
            next_team=self.next_team,
        )

    def play(self, *, keep_serving: bool = False) -> list[RunResult]:
        setup = self.setup
        if keep_serving:
            from dataclasses import replace

            setup = replace(setup, keep_serving=True)
        self.process = session.PlayersSession(
            setup, self.players(), sleep=lambda _: time.sleep(0.05)
        )
        return self.process.play()

    def send(self, action: str, inject: int | None = None) -> Callable[[], None]:
        """The facilitator's command, as an action for ``Screen.after``."""

        def send() -> None:
            self.sent.append(channel.send(self.channel(), action, inject, by="facilitator"))

        return send

    def channel(self) -> channel.Session:
        (run_id, _), *_ = self.runs
        return channel.find(self.setup.evidence_dir, run_id)


def journal(bundle: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (bundle / "journal.jsonl").read_text().splitlines()]


def injects(bundle: Path) -> list[dict[str, Any]]:
    return [e for e in journal(bundle) if e["type"] == "inject"]


def next_step(entries: list[dict[str, Any]], entry: dict[str, Any]) -> str | None:
    """The step the journal starts next after ``entry``."""
    later = entries[entries.index(entry) + 1 :]
    return next((e["step"] for e in later if e["type"] == "step-started"), None)


def test_a_timed_inject_fires_at_the_first_step_boundary_after_its_time(
    world: Any, loaded: playbook.LoadedPlaybook, tmp_path: Path, clock: FakeClock
) -> None:
    screen = Screen()
    team = Team(world, loaded, tmp_path, screen)
    screen.after = {
        "snapshot": lambda: clock.at(9.9),  # not yet due at the boundary before collect
        "collect": lambda: clock.at(10.5),  # due by the boundary before findings
        "triage": team.send("end"),  # enough: the rest is the same as without a timer
    }
    (result,) = team.play()
    entries = journal(result.bundle)
    (fired,) = injects(result.bundle)
    record = fired["data"]
    assert (record["trigger"], record["before"], record["inject"]) == ("timer", "findings", 0)
    assert fired["step"] is None and next_step(entries, fired) == "findings"
    assert record["at"].startswith("2026-12-01T09:10:30") and fired["ts"] == record["at"]
    ransom = ("notice", record["say"])
    assert screen.shown.index(ransom) == screen.shown.index(("step", "collect")) + 1
    assert record["say"].startswith("The support inbox received an email demanding 40 BTC")
    assert record["events"] == ["DescribeKey"]


def test_hold_keeps_a_due_timer_until_release(
    world: Any, loaded: playbook.LoadedPlaybook, tmp_path: Path, clock: FakeClock
) -> None:
    screen = Screen()
    team = Team(world, loaded, tmp_path, screen)

    def hold() -> None:
        team.send("hold")()
        clock.at(30)

    screen.after = {"snapshot": hold, "findings": team.send("release"), "cancel": team.send("end")}
    (result,) = team.play()
    (fired,) = injects(result.bundle)
    assert (fired["data"]["trigger"], fired["data"]["before"]) == (
        "timer",
        "triage",
    )
    acks = channel.acks(team.channel())
    assert [(a["action"], a["ok"]) for a in acks] == [
        ("hold", True),
        ("release", True),
        ("end", True),
    ]
    assert acks[0]["what"] == "timed injects held before step collect"


def test_the_facilitator_fires_an_inject_and_ends_the_exercise(
    world: Any,
    loaded: playbook.LoadedPlaybook,
    tmp_path: Path,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    screen = Screen()
    team = Team(world, loaded, tmp_path, screen)

    def fire_twice() -> None:
        team.send("fire", 1)()
        team.send("fire", 1)()
        team.send("fire", 7)()

    journaled_when_acked: list[bool] = []
    real_ack = channel.ack

    def ack(channel_session: channel.Session, seq: int, action: str, **more: Any) -> None:
        if action == "fire" and more["ok"]:  # its inject is in the journal by then
            (_, bundle), *_ = team.runs
            journaled_when_acked.append(any(r["data"].get("command") == seq
                                            for r in injects(bundle)))  # fmt: skip
        real_ack(channel_session, seq, action, **more)

    monkeypatch.setattr(session.channel, "ack", ack)
    screen.after = {"collect": fire_twice, "triage": team.send("end")}
    (result,) = team.play()
    assert journaled_when_acked == [True]
    assert (result.status, result.error) == ("aborted", "the facilitator ended the exercise")
    entries = journal(result.bundle)
    (fired,) = injects(result.bundle)
    record = fired["data"]
    assert (record["trigger"], record["before"], record["command"]) == (
        "facilitator",
        "findings",
        team.sent[0],
    )
    assert record["after"] == "enable"  # a step's inject, fired before its step by the facilitator
    # the players see it at their next prompt: right after the step they were on
    assert screen.shown.index(("notice", record["say"])) == (
        screen.shown.index(("step", "collect")) + 1
    )
    acks = channel.acks(team.channel())
    assert [(a["seq"], a["ok"]) for a in acks] == [
        (team.sent[0], True),
        (team.sent[1], False),
        (team.sent[2], False),
        (team.sent[3], True),
    ]
    assert acks[1]["what"] == "inject 1 fired already"
    assert "has no inject 7" in acks[2]["what"]
    assert acks[3]["what"] == "exercise ended before step cancel"
    started_steps = [e["step"] for e in entries if e["type"] == "step-started"]
    assert "cancel" not in started_steps
    assert entries[-1]["type"] == "run-finished"
    assert entries[-1]["data"]["error"] == "the facilitator ended the exercise"
    assert integrity.check(result.bundle).intact


def test_reset_restores_the_served_world_for_the_next_team(
    world: Any, loaded: playbook.LoadedPlaybook, tmp_path: Path, clock: FakeClock
) -> None:
    """A reset re-seeds the served world on the same endpoint; the next team's world (and
    so its timers) starts when its run does, not at the reset."""
    import boto3

    screen = Screen()
    team = Team(world, loaded, tmp_path, screen)
    done = threading.Event()
    results: list[list[RunResult]] = []
    names = iter(["Green"])
    at_reset: list[str] = []

    def next_team() -> str | None:
        at_reset.append(state())
        clock.at(45)  # the facilitator takes a while to type it
        return next(names, None)

    team.next_team = next_team

    def serve() -> None:
        try:
            results.append(team.play(keep_serving=True))
        finally:
            done.set()

    def wait_for(runs: int) -> None:
        deadline = time.monotonic() + 60
        while not (len(team.runs) == runs and screen.after == {} and not team.process.running):
            assert time.monotonic() < deadline and not done.is_set(), team.said
            time.sleep(0.05)

    screen.after = {"lessons": lambda: None}
    player = threading.Thread(target=serve, daemon=True)
    player.start()
    wait_for(1)
    (endpoint,) = team.served
    (run_id, _bundle) = team.runs[0]
    assert any(f"the world stays served at {endpoint}" in line for line in team.said), team.said
    key_id = team.process.sandbox.keys["orders"]["id"]  # type: ignore[union-attr]
    kms = boto3.client(
        "kms",
        endpoint_url=endpoint,
        region_name=world.region,
        aws_access_key_id="AKIAIOSFODNN7SANDBOX",
        aws_secret_access_key="x",
    )

    def state() -> str:
        return str(kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"])

    try:
        assert state() == "Disabled"  # the team cancelled the deletion, kept it disabled
        clock.at(30)
        screen.after = {"lessons": lambda: None}
        ran = cli("tabletop", "reset", run_id, "--evidence-dir", tmp_path)
        assert ran.exit_code == 0, ran.output
        assert "world reset to its start" in ran.stdout
        wait_for(2)
        assert at_reset == ["PendingDeletion"]  # the scenario's start, at the same endpoint
        assert state() == "Disabled"  # as team Green left it
        record = channel.find(tmp_path, run_id).record()
        assert record["endpoint"] == endpoint and key_id in record["world"]["keys"]
        # the players may read session.json: no name the scenario gives its parts
        assert set(record["world"]) == {"keys"} and '"orders"' not in json.dumps(record["world"])
        green = journal(team.runs[1][1])[0]["data"]["sandbox"]
        assert green["tabletop"]["team"] == "Green"
        assert green["now"].startswith("2026-12-01T09:45:00")  # its run's start
    finally:
        channel.send(channel.find(tmp_path, run_id), "end", by="facilitator")
        assert done.wait(30)
    ((blue, green_result),) = results
    assert blue.status == green_result.status == "succeeded"


def test_a_command_meant_for_another_run_is_refused_not_applied(
    world: Any, loaded: playbook.LoadedPlaybook, tmp_path: Path, clock: FakeClock
) -> None:
    """A facilitator left on an earlier team's run sends ``end``: during this team's run,
    and between runs, it is acknowledged as refused and nothing ends; the session ends at
    an ``end`` meant for its last run (or one naming no run, as older files do)."""
    from dataclasses import replace

    screen = Screen()
    team = Team(world, loaded, tmp_path, screen)
    earlier = "20261201T080000Z-0001"

    def end(run: str | None) -> Callable[[], None]:
        return lambda: team.sent.append(
            channel.send(team.channel(), "end", by="facilitator", run=run)
        )

    screen.after = {"collect": end(earlier)}
    between = [end(earlier), lambda: end(team.runs[0][0])()]

    def sleep(_: float) -> None:  # the process only serves: the facilitator acts meanwhile
        assert between, team.said
        between.pop(0)()

    process = session.PlayersSession(
        replace(team.setup, keep_serving=True), team.players(), sleep=sleep
    )
    (result,) = process.play()
    assert result.status == "succeeded"
    (run_id, _), *_ = team.runs
    assert [(a["seq"], a["ok"], a["what"]) for a in channel.acks(team.channel())] == [
        (team.sent[0], False, f"meant for run {earlier}, not the run going on ({run_id}): "
         "not applied"),
        (team.sent[1], False, f"meant for run {earlier}, not the session's last run "
         f"({run_id}): not applied"),
        (team.sent[2], True, "session ended"),
    ]  # fmt: skip


def test_a_resumed_run_holds_the_timers_as_the_acknowledgements_say(tmp_path: Path) -> None:
    """A ``reset`` since the last ``hold`` starts unheld, for a resumed players' process as
    for the facilitator's screen (one reading: ``channel.holding``)."""
    from types import SimpleNamespace

    from kmsir.tabletop import hidden
    from kmsir.tabletop.inbox import Inbox

    players = channel.create(tmp_path, {"pid": 1})
    no_injects: Any = SimpleNamespace(injects=[])

    def acked(action: str) -> bool:
        seq = channel.send(players, action, by="facilitator")
        channel.ack(players, seq, action, ok=True, what="done")
        held = Inbox(players, warn=lambda _: None).reopen(no_injects)
        assert held == hidden.held(channel.acks(players))
        return held

    assert [acked(a) for a in ("hold", "reset", "hold", "release")] == [
        True, False, True, False
    ]  # fmt: skip


def test_start_prints_the_run_id_the_facilitators_command_and_the_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, world: Any
) -> None:
    """The whole command, scripted: a clock a minute further at each reading, so the
    ransom email's timer (10 minutes) comes due during the run."""
    ticks = iter(range(10_000))
    monkeypatch.setattr(session, "clock", lambda: T0 + timedelta(minutes=next(ticks)))
    answers = tmp_path / "answers.yaml"
    answers.write_text("cancel: approve\ndecide: keep-disabled\n")
    evidence = tmp_path / "ev"
    ran = cli(
        "tabletop", "start", SCENARIO, "--team", "Red Team!", "--evidence-dir", evidence,
        "--answers", answers,
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    lines = ran.stdout.splitlines()
    assert any(line.startswith("export AWS_ENDPOINT_URL=http://127.0.0.1:") for line in lines)
    assert "export AWS_ACCESS_KEY_ID=AKIAIOSFODNN7SANDBOX" in lines
    (run_line,) = [line for line in lines if line.startswith("run id: ")]
    run_id = run_line.removeprefix("run id: ")
    assert f"facilitator: kmsir tabletop facilitator {run_id} --evidence-dir {evidence}" in lines
    assert lines.index(run_line) > max(i for i, x in enumerate(lines) if x.startswith("export"))
    assert "SIMULATED" in ran.stderr and world.briefing.split()[0] in ran.stderr
    bundle = evidence / "tabletop-ransom-deletion-red-team" / run_id
    (fired,) = injects(bundle)
    assert fired["data"]["trigger"] == "timer"
    started = journal(bundle)[0]["data"]
    assert started["sandbox"]["tabletop"]["team"] == "Red Team!"
    assert channel.find(evidence, bundle).record()["runs"][0]["run_id"] == run_id


def test_bad_command_files_are_skipped_acknowledged_and_the_run_goes_on(
    world: Any,
    loaded: playbook.LoadedPlaybook,
    tmp_path: Path,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever lands in the commands directory, the players' run goes on: each file that is
    no command is acknowledged once as refused (by its file name's number) with a warning
    line; a channel that cannot be read is warned about."""
    import os

    screen = Screen()
    team = Team(world, loaded, tmp_path, screen)

    def drop_bad_files() -> None:
        commands = team.channel().root / "commands"
        bad: list[Any] = [
            b'{"seq": 1, "action": "ho',  # half-written
            {"action": "hold"},  # no seq
            {"seq": "x3", "action": "hold"},
            "directory",
            "fifo",
            b" " * (1024 * 1024 + 1),
            {"seq": 7, "action": "fire", "inject": "1"},
            {"seq": 8, "action": ["end"]},
        ]
        for n, content in enumerate(bad, start=1):
            path = commands / f"{n:06d}.json"
            if content == "directory":
                path.mkdir()
            elif content == "fifo":
                os.mkfifo(path)
            else:
                data = content if isinstance(content, bytes) else json.dumps(content).encode()
                path.write_bytes(data)
        team.send("reset")()  # refused during a run, in one "reset refused"
        team.send("hold")()

    real = session.channel.commands
    failing = iter([OSError(5, "Input/output error")])

    def commands(channel_session: channel.Session, after: int = 0) -> list[dict[str, Any]]:
        problem = next(failing, None) if team.sent else None
        if problem is not None:
            raise problem
        return real(channel_session, after)

    monkeypatch.setattr(session.channel, "commands", commands)
    screen.after = {"snapshot": drop_bad_files}
    (result,) = team.play()
    assert result.status == "succeeded"
    acks = channel.acks(team.channel())
    assert [(a["seq"], a["ok"]) for a in acks] == [(n, False) for n in range(1, 10)] + [(10, True)]
    assert all(a["what"].startswith("skipped: ") for a in acks[:8])
    assert acks[8]["what"] == "a team's run is going on (end it first)"
    warned = [line for line in team.said if "skipped" in line]
    assert len(warned) == 8 and warned[0].startswith("kmsir tabletop: command 1 skipped: ")
    assert [line for line in team.said if "cannot be read" in line] == [
        "kmsir tabletop: the command channel cannot be read: [Errno 5] Input/output error"
    ]


def test_an_end_after_the_last_step_finishes_the_run_normally(
    world: Any, loaded: playbook.LoadedPlaybook, tmp_path: Path, clock: FakeClock
) -> None:
    screen = Screen()
    team = Team(world, loaded, tmp_path, screen)
    screen.after = {"lessons": team.send("end")}
    (result,) = team.play(keep_serving=True)  # ended: it serves no more
    assert (result.status, result.error) == ("succeeded", None)
    assert any(e["type"] == "open-risks" for e in journal(result.bundle))
    (ended,) = channel.acks(team.channel())
    assert (ended["ok"], ended["what"]) == (True, "exercise ended at the end of the run")
    assert team.said[-1] == "kmsir tabletop: the facilitator ended the exercise"


def test_a_stopped_team_run_goes_on_with_tabletop_resume(
    world: Any, loaded: playbook.LoadedPlaybook, tmp_path: Path, clock: FakeClock
) -> None:
    """Ctrl-C during a team's run: `kmsir resume` and `tabletop replay` refuse it in one line;
    `kmsir tabletop resume` serves the rebuilt world again on the same channel, with the
    timers held as the facilitator left them, and finishes the run."""
    import os

    def interrupt() -> None:
        raise KeyboardInterrupt

    screen = Screen()
    team = Team(world, loaded, tmp_path, screen)
    screen.after = {"snapshot": team.send("hold"), "collect": interrupt}
    with pytest.raises(KeyboardInterrupt):
        team.play()
    ((run_id, bundle),) = team.runs
    ran = cli("resume", bundle)
    assert ran.exit_code == 2 and ran.stderr.count("\n") == 1, ran.output
    assert "`kmsir tabletop resume BUNDLE`" in ran.stderr
    ran = cli("tabletop", "replay", bundle)
    assert ran.exit_code == 2 and "the run has not finished" in ran.stderr, ran.output
    serving = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        channel.update(team.channel(), pid=serving.pid)
        ran = cli("tabletop", "resume", bundle)
        assert ran.exit_code == 2 and f"(pid {serving.pid}) still serves it" in ran.stderr
    finally:
        serving.kill()
        serving.wait()
    channel.update(team.channel(), pid=serving.pid, endpoint="gone")
    clock.at(60)  # the ransom email is due, but held
    ran = cli("tabletop", "resume", bundle)
    assert ran.exit_code == 0, ran.output
    assert f"kmsir tabletop resume {bundle}" not in ran.stderr
    record = team.channel().record()
    assert record["pid"] == os.getpid() and record["endpoint"].startswith("http://127.0.0.1:")
    assert [r["run_id"] for r in record["runs"]] == [run_id]
    entries = journal(bundle)
    assert [e["type"] for e in entries].count("run-resumed") == 1
    finished = [e["data"]["status"] for e in entries if e["type"] == "run-finished"]
    assert finished == ["succeeded"]
    assert injects(bundle) == []  # held
    assert integrity.check(bundle).intact

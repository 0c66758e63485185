"""``kmsir tabletop start``, ``reset`` and ``resume`` at the command line: team names made
into incident ids, a busy port, a players' process that is gone, the facilitator's end of the
exercise, what the players' terminal asks between teams."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import pytest

from kmsir.cli import tabletop as tabletop_cli
from kmsir.run.engine import RunResult
from kmsir.tabletop import channel, session

from .clikit import cli
from .test_tabletop_session import SCENARIO, T0


def test_team_names_become_distinct_incident_ids_with_room_for_a_replay() -> None:
    assert (
        session.incident_id("ransom-deletion", "Red Team!") == "tabletop-ransom-deletion-red-team"
    )
    long_a = "The incident response team of the payments platform, Europe"
    long_b = "The incident response team of the payments platform, Asia"
    one, two = (session.incident_id("ransom-deletion", t) for t in (long_a, long_b))
    assert one != two and len(one) <= 57 and len(f"{one}-replay") <= 64
    assert one.startswith("tabletop-ransom-deletion-the-incident")
    japan = session.incident_id("ransom-deletion", "日本")
    assert japan.startswith("tabletop-ransom-deletion-") and japan != session.incident_id(
        "ransom-deletion", "中国"
    )
    with pytest.raises(session.UsageError):
        session.incident_id("ransom-deletion", "  ")


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


@pytest.mark.parametrize(
    "command",
    [
        ("tabletop", "start", SCENARIO, "--team", "Blue", "--answers", "answers.yaml"),
        ("sandbox", "serve", "--scenario", SCENARIO),
    ],
    ids=["tabletop-start", "sandbox-serve"],
)
def test_a_busy_port_is_refused_in_one_line_at_once(
    tmp_path: Path, busy_port: int, command: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto.server import ThreadedMotoServer

    def made(self: Any, *args: Any, **kwargs: Any) -> None:
        # moto's server would wait forever for its failed bind: the probe refuses first
        raise AssertionError("moto's server was made for a port the probe should refuse")

    monkeypatch.setattr(ThreadedMotoServer, "__init__", made)
    (tmp_path / "answers.yaml").write_text("cancel: approve\n")
    ran = cli(*command, "--port", str(busy_port), cwd=tmp_path)
    assert ran.exit_code == 2, ran.output
    (line,) = [x for x in ran.stderr.splitlines() if "--port" in x]
    assert f"--port {busy_port}: cannot listen on 127.0.0.1" in line


def never_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused at once: reset never looks for the players' answer (a wait of up to 30 s)."""

    def waited(*_: Any) -> None:
        pytest.fail("reset waited for an answer that cannot come")

    monkeypatch.setattr(channel, "acked", waited)


def test_a_reset_of_a_gone_players_process_says_so_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    record = {"scenario": SCENARIO, "pid": gone.pid, "endpoint": "http://127.0.0.1:1"}
    players = channel.create(tmp_path, record)
    channel.link(players, run_id="20261201T090000Z-0001", bundle=tmp_path, team="b", incident="x")
    never_waits(monkeypatch)
    ran = cli("tabletop", "reset", "20261201T090000Z-0001", "--evidence-dir", tmp_path)
    assert ran.exit_code == 2, ran.output
    assert f"(pid {gone.pid}) is gone" in ran.stderr
    assert channel.commands(players) == []  # nothing queued for nobody


def test_a_reset_while_a_teams_run_goes_on_is_refused_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from .test_tabletop_facilitator import players_bundle

    evidence = tmp_path / "evidence"
    going_on = players_bundle(evidence)  # its run-started, no run-finished yet
    players = channel.create(evidence, {"scenario": SCENARIO, "pid": os.getpid()})
    channel.link(players, run_id=going_on.name, bundle=going_on, team="red", incident="x")
    never_waits(monkeypatch)
    ran = cli("tabletop", "reset", going_on.name, "--evidence-dir", evidence)
    assert ran.exit_code == 2, ran.output
    (line,) = ran.stderr.strip().splitlines()
    assert f"team red's run {going_on.name} is going on: reset the world after it ends" in line
    assert channel.commands(players) == []  # nothing queued to be refused later


def test_the_facilitators_command_works_from_any_directory() -> None:
    command = tabletop_cli.facilitator_command("20261201T090000Z-0001", Path("evidence"))
    assert command == (
        f"kmsir tabletop facilitator 20261201T090000Z-0001 --evidence-dir "
        f"{Path('evidence').resolve()}"
    )


def test_the_facilitators_end_mid_run_is_the_exercises_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ended before a step: exit 0, no resume hint; neither resume goes on with it. The
    bundle and the facilitator's command name absolute paths (run from another directory)."""
    ticks = itertools.count()
    monkeypatch.setattr(session, "clock", lambda: T0 + timedelta(seconds=next(ticks)))
    real = session.channel.commands

    def commands(players: channel.Session, after: int = 0) -> list[dict[str, Any]]:
        if not real(players):  # the facilitator ends it at the first boundary
            channel.send(players, "end", by="facilitator")
        return real(players, after)

    monkeypatch.setattr(session.channel, "commands", commands)
    (tmp_path / "answers.yaml").write_text("cancel: approve\n")
    ran = cli(
        "tabletop", "start", SCENARIO, "--team", "Blue", "--evidence-dir", "ev",
        "--answers", "answers.yaml", cwd=tmp_path,
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    assert "the facilitator ended the exercise" in ran.stderr
    assert "resume" not in ran.stderr
    (run_line,) = [x for x in ran.stdout.splitlines() if x.startswith("run id: ")]
    run_id = run_line.removeprefix("run id: ")
    evidence = (tmp_path / "ev").resolve()
    assert (
        f"facilitator: kmsir tabletop facilitator {run_id} --evidence-dir {evidence}" in ran.stdout
    )
    (run,) = channel.find(evidence, run_id).record()["runs"]
    bundle = Path(run["bundle"])
    assert bundle == evidence / "tabletop-ransom-deletion-blue" / run_id
    for command in (("resume", bundle), ("tabletop", "resume", bundle)):
        ran = cli(*command)
        assert ran.exit_code == 2, ran.output
        (line,) = [x for x in ran.stderr.splitlines() if not x.startswith("kmsir tabletop resume")]
        assert line.endswith(
            f"the facilitator ended the exercise (run {run_id}): it is not resumed"
        )


def test_between_teams_a_stray_enter_or_ctrl_c_never_breaks_the_serving(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kmsir.sandbox import scenario as scenarios

    setup = session.Setup(
        scenario=scenarios.load(SCENARIO),
        source=SCENARIO,
        loaded=None,  # type: ignore[arg-type]
        team="Blue",
        evidence_dir=Path("evidence"),
    )
    players = tabletop_cli._players(setup, {}, "answers file", interactive=True)
    assert players.next_team is not None
    flushed: list[bool] = []
    monkeypatch.setattr(tabletop_cli, "_flush_input", lambda: flushed.append(True))
    answers: list[Any] = ["", click.exceptions.Abort(), EOFError()]

    def prompt(*_: Any, **__: Any) -> str:
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return str(answer)

    monkeypatch.setattr(tabletop_cli.typer, "prompt", prompt)
    assert players.next_team() is None
    assert "the world is still served at" in capsys.readouterr().err
    for _ in range(2):
        with pytest.raises(KeyboardInterrupt):
            players.next_team()
    assert flushed == [True, True, True]

    class Served:  # a team's run done; Ctrl-C while the world is only served
        def __init__(self) -> None:
            self.results = [RunResult(Path("b"), "succeeded")]
            self.running = False

    def stopped() -> list[RunResult]:
        raise KeyboardInterrupt

    tabletop_cli._play(Served(), stopped)  # type: ignore[arg-type]
    assert "kmsir tabletop: stopped serving" in capsys.readouterr().err

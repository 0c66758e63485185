"""A tabletop under tmux: the players in one terminal, the facilitator in another. The
facilitator fires an inject, the players see it at their next prompt, and the facilitator's
screen shows each decision the team makes against the expected one, as it is made."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kmsir.evidence import integrity
from kmsir.evidence.bundle import JOURNAL, read_journal, sha256_hex
from kmsir.evidence.journal import BundleWriter
from kmsir.sandbox import scenario as scenarios
from kmsir.tabletop import channel, exercise, facilitation
from tests.clikit import cli
from tests.journalkit import journal_lines, run_started

from .conftest import bundles
from .termkit import TMUX, Terminal
from .test_terminal import _environment

needs_tmux = pytest.mark.skipif(
    TMUX is None and not os.environ.get("CI"),
    reason="needs tmux (apt-get install tmux); .ci/run installs it",
)


def players_bundle(evidence: Path, *, finished: bool = False, source: str | None = None) -> Path:
    """The start of team red's ransom-deletion run (its run-started alone): enough for a
    facilitator to follow, without playing it (``finished``: its run-finished too;
    ``source``: another scenario source, None: played in no scenario)."""
    raw = (scenarios.scenario_dir().parent / "kms-key-deletion-response.yaml").read_bytes()
    writer = BundleWriter.create(evidence, "tabletop-ransom-deletion-red", playbook_raw=raw)
    played = source != ""
    writer.append(
        run_started(
            incident="tabletop-ransom-deletion-red",
            run_id=writer.run_id,
            scenario="ransom-deletion" if played else None,
            playbook={"id": "kms-key-deletion-response", "sha256": sha256_hex(raw)},
            sandbox={"source": source or "ransom-deletion"} if played else None,
            mode="sandbox" if played else "live",
        )
    )
    if finished:
        writer.finish("succeeded")
    writer.close()
    return writer.root


def session_of(players: Path, evidence: Path, *, bundle: str, pid: int) -> channel.Session:
    """The tabletop session ``kmsir tabletop start`` would have opened for ``players``, its
    process ``pid``, the bundle recorded as ``bundle`` (as the players' process named it)."""
    session = channel.create(evidence, {"scenario": "ransom-deletion", "team": "red", "pid": pid})
    incident = players.parent.name
    channel.link(session, run_id=players.name, bundle=Path(bundle), team="red", incident=incident)
    return session


def facilitator_journal(evidence: Path) -> list[dict[str, Any]]:
    (mine,) = bundles(evidence / "tabletop-ransom-deletion-red-facilitator")
    return journal_lines(mine / JOURNAL)


def test_the_facilitator_finds_the_run_from_any_directory(tmp_path: Path) -> None:
    """The players' process ran in ``tmp_path`` and recorded its bundle relative to it; the
    facilitator attaches from another directory with the right --evidence-dir, and from
    inside the evidence directory with ``--evidence-dir .``. On attaching it shows where the
    team is and the injects to come before any event."""
    evidence = tmp_path / "evidence"
    players = players_bundle(evidence)
    session_of(players, evidence, bundle=f"evidence/{players.parent.name}/{players.name}", pid=1)
    (tmp_path / "elsewhere").mkdir()
    world = scenarios.load("ransom-deletion")
    first_inject = world.injects[0]
    for cwd, where in ((tmp_path / "elsewhere", evidence), (evidence, Path("."))):
        ran = cli("tabletop", "facilitator", players.name, "--evidence-dir", where, cwd=cwd,
                  stdin="quit\n")  # fmt: skip
        assert ran.exit_code == 0, ran.output
        assert f"following {where / players.parent.name / players.name}" in ran.stdout
        shown = ran.stdout[ran.stdout.index("type help") :].splitlines()[1:4]
        assert shown[0].startswith(f"{world.title} · team red · run {players.name}"), shown
        assert shown[1].startswith("now at: ") and shown[2] == "next injects:", shown
        assert f"#0 {first_inject.title or first_inject.say}"[:60] in ran.stdout
    # by the bundle's path, with no --evidence-dir: the facilitator's bundle still goes
    # beside the players' run (where the exercise and the room look for it)
    ran = cli("tabletop", "facilitator", players, cwd=tmp_path / "elsewhere", stdin="quit\n")
    assert ran.exit_code == 0, ran.output
    assert not (tmp_path / "elsewhere" / "evidence").exists()
    assert len(bundles(evidence / "tabletop-ransom-deletion-red-facilitator")) == 3
    assert len(exercise.facilitators(players, players.name)) == 3


def test_fire_takes_only_an_inject_still_to_come(tmp_path: Path) -> None:
    """``fire 99`` (no such inject) and a second ``fire 0`` (sent already, not yet taken)
    are refused at the prompt: nothing sent, nothing journaled."""
    evidence = tmp_path / "evidence"
    players = players_bundle(evidence)
    session = session_of(players, evidence, bundle=str(players), pid=os.getpid())
    count = len(scenarios.load("ransom-deletion").injects)
    typed = "fire ²\nfire 99\nfire 0\nfire 0\nhold\nquit\n"
    ran = cli("tabletop", "facilitator", players.name, "--evidence-dir", evidence, stdin=typed)
    assert ran.exit_code == 0, ran.output
    assert "fire which inject? (fire N; status lists them)" in ran.stdout  # "²" is no number
    assert f"cannot: no inject 99: the scenario's injects are numbered 0 to {count - 1}" in (
        ran.stdout
    )
    assert "sent (command 1): inject 0 fires at the players' next step" in ran.stdout
    assert "cannot: inject 0 was sent already (command 1)" in ran.stdout
    assert "sent (command 2): timed injects are held" in ran.stdout
    assert [(c["action"], c["inject"]) for c in channel.commands(session)] == [
        ("fire", 0),
        ("hold", None),
    ]
    acted = [e["data"] for e in facilitator_journal(evidence) if e["type"] == "facilitator-action"]
    assert [(a["action"], a.get("inject")) for a in acted] == [
        ("fire", 0),
        ("hold", None),
        ("quit", None),
    ]


@pytest.mark.parametrize("serving", [True, False])
def test_once_the_players_run_is_over_only_end_reaches_a_session_serving_on(
    tmp_path: Path, serving: bool
) -> None:
    evidence = tmp_path / "evidence"
    players = players_bundle(evidence, finished=True)
    if serving:
        pid = os.getpid()
    else:
        gone = subprocess.Popen(["true"])
        gone.wait()
        pid = gone.pid
    session = session_of(players, evidence, bundle=str(players), pid=pid)
    typed = "fire 0\nhold\nrelease\nend\nquit\n"
    ran = cli("tabletop", "facilitator", players.name, "--evidence-dir", evidence, stdin=typed)
    assert ran.exit_code == 0, ran.output
    over = "cannot: the players' run has finished (succeeded)"
    refused = [line for line in ran.stdout.splitlines() if line.startswith(over)]
    if serving:
        assert len(refused) == 3 and all("only serves the world on" in r for r in refused)
        assert "sent (command 1): the players' process stops serving the world" in ran.stdout
        assert [(c["action"], c["run"]) for c in channel.commands(session)] == [
            ("end", players.name)  # meant for this run only
        ]
    else:
        assert len(refused) == 4 and refused[-1].endswith("and its process is gone")
        assert channel.commands(session) == []
    acted = [
        e["data"]["action"]
        for e in facilitator_journal(evidence)
        if e["type"] == "facilitator-action"
    ]
    assert acted == (["end", "quit"] if serving else ["quit"])


def test_a_facilitator_left_on_a_finished_run_never_steers_the_next_team(
    tmp_path: Path,
) -> None:
    """After a reset the session plays another team's run: the facilitator of the finished
    one is told to attach to it, and nothing is sent."""
    evidence = tmp_path / "evidence"
    players = players_bundle(evidence, finished=True)
    session = session_of(players, evidence, bundle=str(players), pid=os.getpid())
    later = "20261201T100000Z-0002"
    channel.link(session, run_id=later, bundle=players.parent / later, team="blue", incident="b")
    ran = cli("tabletop", "facilitator", players.name, "--evidence-dir", evidence,
              stdin="end\nhold\nquit\n")  # fmt: skip
    assert ran.exit_code == 0, ran.output
    attach = f"the session now plays run {later}: attach to it"
    assert sum(line.endswith(attach) for line in ran.stdout.splitlines()) == 2, ran.stdout
    assert channel.commands(session) == []


def test_the_poll_thread_shows_any_failure_in_one_line_and_goes_on() -> None:
    from kmsir.cli import tabletop_watch

    shown: list[str] = []

    class Broken:
        def changed(self) -> bool:
            raise RuntimeError("the disk went away\nfor a while")

    class Followed:
        def answers(self) -> list[dict[str, Any]]:
            return []

    class Lines:
        def show(self, line: str) -> None:
            shown.append(line)

    for _ in range(2):  # it goes on
        tabletop_watch._poll_once(Lines(), Broken(), Followed())  # type: ignore[arg-type]
    assert len(shown) == 2 and shown[0].startswith("cannot follow the exercise now: the disk")
    assert "\n" not in shown[0]


def test_the_facilitators_actions_go_into_their_own_linked_bundle(tmp_path: Path) -> None:
    """Without a tabletop session nothing can reach the players: fire is refused, a note is
    kept. The facilitator's bundle verifies, links the run it follows, and the exercise reads
    the observation from it; the players' journal is untouched; a report on the
    facilitator's bundle is refused in one line."""
    evidence = tmp_path / "evidence"
    players = players_bundle(evidence)
    before = (players / JOURNAL).read_bytes()
    typed = "help\nfire 0\nnote the team never looked at \x1b[2Jthe grants\nwhat\nquit\n"
    ran = cli("tabletop", "facilitator", players.name, "--evidence-dir", evidence, stdin=typed)
    assert ran.exit_code == 0, ran.output
    assert "fire N       fire inject N now" in ran.stdout
    assert "cannot: this run has no tabletop session" in ran.stdout
    assert "noted." in ran.stdout and "unknown command 'what'; type help" in ran.stdout
    (mine,) = bundles(evidence / "tabletop-ransom-deletion-red-facilitator")
    assert integrity.verify(mine) == []
    view = read_journal(mine / JOURNAL).view()
    assert view.meta is not None and view.meta.mode == "facilitation"
    assert view.meta.facilitates == {
        "run_id": players.name,
        "bundle": str(players.resolve()),
        "incident": "tabletop-ransom-deletion-red",
    }
    assert (mine / "playbook.yaml").read_bytes() == (
        scenarios.scenario_dir() / "ransom-deletion.yaml"
    ).read_bytes()
    assert [(s.record.action, s.record.text) for s in view.facilitation] == [
        ("note", "the team never looked at \x1b[2Jthe grants"),
        ("quit", None),
    ]
    assert view.facilitation[0].record.players_entries == 1
    assert view.status == "succeeded"
    assert (players / JOURNAL).read_bytes() == before
    observed = exercise.facilitator_view(exercise.load(players))["observations"]
    assert [o["text"] for o in observed] == ["the team never looked at \x1b[2Jthe grants"]
    refused = cli("report", mine)
    assert refused.exit_code == 2 and refused.stdout == ""
    assert len(refused.stderr.splitlines()) == 1
    assert "is a tabletop facilitator's bundle" in refused.stderr


@needs_tmux
def test_the_facilitator_fires_an_inject_the_players_see_at_their_next_prompt(
    tmp_path: Path,
) -> None:
    """ransom-deletion for team red. While the players look at the snapshot's preview, the
    facilitator fires the ransom-email inject: the players' process takes it at the next step
    boundary and shows it before their next prompt; the facilitator's screen says it took
    effect. When the team approves the cancellation, the facilitator's screen shows the
    decision, the expected one and the verdict. The facilitator's own bundle verifies and
    holds the action; the players' bundle journals the inject, fired by the facilitator."""
    evidence = tmp_path / "evidence"
    ransom = scenarios.load("ransom-deletion").injects[0].say
    env = _environment(tmp_path)
    (tmp_path / "players").mkdir()
    (tmp_path / "facilitator").mkdir()
    players = Terminal(
        tmp_path / "players",
        [
            sys.executable, "-m", "kmsir", "tabletop", "start", "ransom-deletion",
            "--team", "red", "--evidence-dir", str(evidence),
        ],
        env,
    )  # fmt: skip
    facilitator: Terminal | None = None
    try:
        shown = players.wait_for("? Step snapshot:")
        run_id = re.search(r"kmsir tabletop facilitator (\S+)", shown)
        assert run_id, shown
        facilitator = Terminal(
            tmp_path / "facilitator",
            [
                sys.executable, "-m", "kmsir", "tabletop", "facilitator", run_id[1],
                "--evidence-dir", str(evidence),
            ],
            env,
        )  # fmt: skip
        facilitator.wait_for("facilitator>")
        facilitator.type("fire 0")
        facilitator.keys("Enter")
        facilitator.wait_for("sent (command 1): inject 0 fires at the players' next step")
        players.keys("Enter")  # run the snapshot: the inject fires before the next step
        at_next_prompt = players.wait_for("? Step collect:")
        facilitator.wait_for("command 1 (done): inject 0 fired before step collect")
        players.run_steps("collect", "findings", "cancel")
        players.wait_for("succeeded cancel:")
        decided = facilitator.wait_for("decision cancel: approved")
        facilitator.type("quit")
        facilitator.keys("Enter")
        status = facilitator.exit_status()
        screen = facilitator.screen()
    finally:
        players.close()
        if facilitator is not None:
            facilitator.close()

    # the inject's line came before the players' next prompt
    before_prompt = at_next_prompt[: at_next_prompt.rindex("? Step collect:")]
    assert ransom[:60] in " ".join(before_prompt.split())
    assert status == 0, screen
    line = next(x for x in decided.splitlines() if "decision cancel: approved" in x)
    assert "expected approved -> RIGHT" in line
    # the facilitator's bundle: verified, linked to the players' run, the action in it
    (mine,) = bundles(evidence / "tabletop-ransom-deletion-red-facilitator")
    assert integrity.verify(mine) == []
    entries = journal_lines(mine / JOURNAL)
    assert entries[0]["data"]["facilitates"]["run_id"] == run_id[1]
    assert entries[0]["data"]["mode"] == "facilitation"
    acted = [e["data"] for e in entries if e["type"] == "facilitator-action"]
    assert [(a["action"], a.get("inject"), a.get("command")) for a in acted] == [
        ("fire", 0, 1),
        ("quit", None, None),
    ]
    assert entries[-1]["type"] == "run-finished"
    # the players' bundle: its one writer journaled the inject, fired by the facilitator
    (theirs,) = bundles(evidence / "tabletop-ransom-deletion-red")
    fired = [e for e in journal_lines(theirs / JOURNAL) if e["type"] == "inject"]
    assert [(e["data"]["trigger"], e["data"]["before"], e["data"]["command"]) for e in fired] == [
        ("facilitator", "collect", 1)
    ]


def wait_for_file(path: Path, text: str, *, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        shown = path.read_text(errors="replace") if path.exists() else ""
        if text in shown:
            return shown
        assert time.monotonic() < deadline, f"never showed {text!r}:\n{shown}"
        time.sleep(0.1)


def quits(evidence: Path) -> tuple[list[dict[str, Any]], Path]:
    """The facilitator's actions and its bundle, once it is finished (verified)."""
    (mine,) = bundles(evidence / "tabletop-ransom-deletion-red-facilitator")
    entries = journal_lines(mine / JOURNAL)
    assert entries[-1]["type"] == "run-finished" and integrity.verify(mine) == []
    return [e["data"] for e in entries if e["type"] == "facilitator-action"], mine


def test_a_killed_facilitator_finishes_its_bundle(tmp_path: Path) -> None:
    """SIGTERM while the facilitator waits for a command ends it as quit does: its bundle
    is finished (the quit says why) and verifies; the exit status says the signal."""
    evidence = tmp_path / "evidence"
    players = players_bundle(evidence)
    out = tmp_path / "facilitator.out"
    command = [sys.executable, "-m", "kmsir", "tabletop", "facilitator", players.name,
               "--evidence-dir", str(evidence)]  # fmt: skip
    with out.open("wb") as sink:
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=sink, stderr=subprocess.STDOUT,
            env=_environment(tmp_path), cwd=tmp_path,
        )  # fmt: skip
        try:
            wait_for_file(out, "next injects:")
            process.send_signal(signal.SIGTERM)
            status = process.wait(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert status == 128 + signal.SIGTERM, out.read_text()
    acted, mine = quits(evidence)
    assert [(a["action"], a.get("text")) for a in acted] == [("quit", "stopped by SIGTERM")]
    assert f"facilitation finished; your bundle: {mine}" in out.read_text()


@needs_tmux
def test_closing_the_facilitators_terminal_finishes_its_bundle(tmp_path: Path) -> None:
    """The facilitator's terminal is closed (SIGHUP) at its prompt: the bundle is finished."""
    evidence = tmp_path / "evidence"
    players = players_bundle(evidence)
    facilitator = Terminal(
        tmp_path,
        [
            sys.executable, "-m", "kmsir", "tabletop", "facilitator", players.name,
            "--evidence-dir", str(evidence),
        ],
        _environment(tmp_path),
    )  # fmt: skip
    try:
        facilitator.wait_for("facilitator>")
    finally:
        facilitator.close()
    deadline = time.monotonic() + 30
    incident = evidence / "tabletop-ransom-deletion-red-facilitator"
    while time.monotonic() < deadline:
        (mine,) = bundles(incident)
        if journal_lines(mine / JOURNAL)[-1]["type"] == "run-finished":
            break
        time.sleep(0.1)
    acted, _ = quits(evidence)
    assert [(a["action"], a.get("text")) for a in acted] == [
        ("quit", "stopped by SIGHUP (its terminal closed)")
    ]


def test_a_facilitators_bundle_is_never_resumed_or_rolled_back(tmp_path: Path) -> None:
    """A facilitator killed without a chance to finish (SIGKILL) leaves its bundle
    unfinished: kmsir status lists it as a facilitator's bundle, with the debrief that reads
    it, never as a run to resume; resume and rollback refuse it in one line."""
    evidence = tmp_path / "evidence"
    players = players_bundle(evidence)
    followed = facilitation.start(evidence, facilitation.locate(evidence, players.name))
    followed.writer.close()  # no run-finished
    mine = followed.bundle
    listed = cli("status", "--evidence-dir", evidence)
    assert listed.exit_code == 0, listed.output
    read = f"kmsir tabletop debrief {players.resolve()} --facilitator {mine}"
    said = f"{mine.name} is a tabletop facilitator's bundle (unfinished), read with: {read}"
    assert said in listed.stdout
    assert f"kmsir resume {mine}" not in listed.stdout
    assert f"kmsir resume {players}" in listed.stdout  # the players' run is unfinished too
    for command in ("resume", "rollback"):
        refused = cli(command, mine)
        assert refused.exit_code == 2 and refused.stdout == "", refused.output
        assert len(refused.stderr.splitlines()) == 1, refused.stderr
        assert f"{mine} is a tabletop facilitator's bundle" in refused.stderr
        assert read in refused.stderr

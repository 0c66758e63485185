"""``kmsir tabletop replay``: a recorded team's decisions against a fresh world reproduce its
outcome (same decisions, same injects where they fired, same final AWS state); a replay that
differs says what differs (exit 1); a tampered bundle or an edited scenario is refused.

One team is recorded for the module: ransom-deletion with its scripted answers on a fake
clock; the ransom email's timer comes due before ``collect``, and the facilitator fires the
"used again" inject (a step's, whose step the team never runs) before ``findings``.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kmsir import actions
from kmsir.evidence import integrity
from kmsir.evidence.bundle import JOURNAL, read_journal
from kmsir.playbook import model as playbook
from kmsir.prompts import Answer
from kmsir.sandbox import scenario as scenarios
from kmsir.tabletop import replay as replaying
from kmsir.tabletop import session
from kmsir.tabletop.recorded import RecordedPrompter

from .clikit import cli
from .conftest import PLAYBOOKS
from .test_tabletop_session import SCENARIO, FakeClock, Screen, Team, injects, journal


def play(
    evidence: Path, source: str, script: dict[str, Any], answers: dict[str, Any] | None = None
) -> Path:
    """One team's recorded run of ``source``; ``script``: step id -> an action taking the
    fake clock and the team, run once the step was shown; ``answers`` over the scenario's."""
    world = scenarios.load(source)
    loaded = playbook.load(PLAYBOOKS / f"{world.playbook}.yaml", actions.catalog())
    fake = FakeClock()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(session, "clock", fake)
        screen = Screen()
        team = Team(world, loaded, evidence, screen, source=source)
        if answers:
            team.setup = replace(team.setup, answers={**world.answers, **answers})
        screen.after = {step: (lambda act=act: act(fake, team)) for step, act in script.items()}
        (result,) = team.play()
    return result.bundle


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = play(
        tmp_path_factory.mktemp("ev"),
        SCENARIO,
        {
            "snapshot": lambda clock, _: clock.at(10.5),
            "collect": lambda _, team: team.send("fire", 1)(),
        },
    )
    assert finished(bundle)["status"] == "succeeded"
    return bundle


def fired(bundle: Path) -> list[tuple[Any, ...]]:
    return [
        (r["data"]["inject"], r["data"]["trigger"], r["data"].get("before"))
        for r in injects(bundle)
    ]


def decisions(bundle: Path) -> list[tuple[Any, ...]]:
    return [
        (e["step"], e["data"]["question"], e["data"]["answer"])
        for e in journal(bundle)
        if e["type"] == "decision"
    ]


def finished(bundle: Path) -> dict[str, Any]:
    (entry,) = [e for e in journal(bundle) if e["type"] == "run-finished"]
    return dict(entry["data"])


def replay_bundle(output: str) -> Path:
    (line,) = [x for x in output.splitlines() if x.startswith("replay bundle: ")]
    return Path(line.removeprefix("replay bundle: "))


def test_a_replay_reproduces_the_recorded_team(recorded: Path, tmp_path: Path) -> None:
    assert fired(recorded) == [(0, "timer", "collect"), (1, "facilitator", "findings")]
    ran = cli("tabletop", "replay", recorded, "--evidence-dir", tmp_path)
    assert ran.exit_code == 0, ran.output
    assert "the replay reproduces the recorded run (same decisions, same final AWS state)" in (
        ran.stdout
    )
    again = replay_bundle(ran.stderr)
    assert again.parent.name == "tabletop-ransom-deletion-blue-replay"
    assert fired(again) == fired(recorded)  # where they fired, set off as they were then
    assert decisions(again) == decisions(recorded) and len(decisions(again)) >= 2
    assert integrity.check(again).intact
    started = journal(again)[0]["data"]
    assert started["sandbox"]["replay_of"]["run_id"] == recorded.name


def test_a_replay_that_decides_otherwise_lists_what_differs(
    recorded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were the recorded answers read otherwise (the key enabled again), the replay says
    so: exit 1, each difference on its own line."""
    ask = RecordedPrompter.ask

    def enable(self: RecordedPrompter, key: str, question: str, choices: Any) -> Answer:
        answer = ask(self, key, question, choices)
        return Answer("enable", answer.source) if key == "decide" else answer

    monkeypatch.setattr(RecordedPrompter, "ask", enable)
    ran = cli("tabletop", "replay", recorded, "--evidence-dir", tmp_path)
    assert ran.exit_code == 1, ran.output
    assert "the replay differs from the recorded run" in ran.stdout
    lines = ran.stdout.splitlines()
    assert any(
        line.startswith("  - decision ") and "-> 'keep-disabled' recorded" in line
        and "-> 'enable' in the replay" in line
        for line in lines
    ), ran.stdout  # fmt: skip
    # the enable step was never approved in the recorded run: the replay stops there
    assert "  - status: succeeded recorded, aborted in the replay" in lines


def test_the_state_comparison_names_each_difference(recorded: Path) -> None:
    view = read_journal(recorded / JOURNAL).view()
    before = {"keys": {"orders": {"state": "Disabled", "grants": []}}, "aliases": {}}
    after = {"keys": {"orders": {"state": "Enabled", "grants": []}}, "aliases": {"alias/x": "o"}}
    assert replaying.compare(view, view, before, after) == [
        'AWS state: aliases.alias/x: absent recorded, "o" in the replay',
        'AWS state: keys.orders.state: "Disabled" recorded, "Enabled" in the replay',
    ]


def test_a_tampered_decision_is_refused(recorded: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ev" / recorded.parent.name / recorded.name
    shutil.copytree(recorded, copy)
    lines = (copy / JOURNAL).read_text().splitlines(keepends=True)
    (n,) = [n for n, line in enumerate(lines) if '"answer":"keep-disabled"' in line and
            '"type":"decision"' in line]  # fmt: skip
    lines[n] = lines[n].replace('"answer":"keep-disabled"', '"answer":"enable"')
    (copy / JOURNAL).write_text("".join(lines))
    ran = cli("tabletop", "replay", copy, "--evidence-dir", tmp_path / "replays")
    assert ran.exit_code == 1, ran.output
    assert "TAMPERED: " in ran.stderr and "was altered: it is not replayed" in ran.stderr
    assert not (tmp_path / "replays").exists()


def test_an_ended_exercise_replays_and_an_edited_scenario_is_refused(tmp_path: Path) -> None:
    scenario = tmp_path / "ransom.yaml"
    scenario.write_text((scenarios.scenario_dir() / f"{SCENARIO}.yaml").read_text())
    bundle = play(
        tmp_path / "ev",
        str(scenario),
        {"snapshot": lambda _, team: team.send("end")()},
    )
    assert finished(bundle)["error"] == "the facilitator ended the exercise"
    ran = cli("tabletop", "replay", bundle)
    assert ran.exit_code == 0, ran.output  # it ends where the facilitator ended it
    again = replay_bundle(ran.stderr)
    assert finished(again)["error"] == "the facilitator ended the exercise"
    text = scenario.read_text()
    assert text.count("Orders database envelope key") == 1
    scenario.write_text(text.replace("Orders database envelope key", "Orders key"))
    ran = cli("tabletop", "replay", bundle)
    assert ran.exit_code == 2, ran.output
    assert f"scenario {SCENARIO} ({scenario}) changed since this run was played" in ran.stderr


@pytest.mark.parametrize(
    ("source", "answers"),
    [("policy-tampering", None), (SCENARIO, {"cancel": "skip"})],
    ids=["quarantine-sid-names-the-incident", "skipped-step-question-holds-a-time"],
)
def test_what_names_the_incident_or_a_time_is_no_difference(
    tmp_path: Path, source: str, answers: dict[str, Any] | None
) -> None:
    """The quarantine policy's Sid names the incident (the replay's ends in ``-replay``);
    a skipped step's question holds the time it was asked: neither is a difference."""
    bundle = play(tmp_path / "ev", source, {}, answers)
    ran = cli("tabletop", "replay", bundle, "--evidence-dir", tmp_path / "replays")
    assert ran.exit_code == 0, ran.stdout
    again = replay_bundle(ran.stderr)
    assert [d[::2] for d in decisions(again)] == [d[::2] for d in decisions(bundle)]


def test_an_ended_run_ends_its_replay_at_the_first_iteration_it_never_began() -> None:
    """Ended inside a loop (``contain[1]`` ran, ``contain[2]`` never began): the replay
    ends before ``contain[2]``, not at the next step the run never reached."""
    from types import SimpleNamespace

    from kmsir.run.engine import EndAtBoundary

    view: Any = SimpleNamespace(
        injects=[],
        finished=SimpleNamespace(error=session.ENDED),
        steps={"triage": None, "contain[1]": None},
    )
    boundary = replaying._boundaries(None, view)  # type: ignore[arg-type]
    assert boundary("triage") == [] and boundary("contain[1]") == []
    with pytest.raises(EndAtBoundary):
        boundary("contain[2]")

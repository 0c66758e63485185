"""Scenarios as tabletop exercises: what the players are told (``briefing``) apart from what
only the facilitator knows (``ground_truth``, ``expected``, ``evidence_to_see``,
``prevented_by``, ``targets``); what loading refuses in the hidden parts, naming file:line;
the scenario JSON Schema and ``kmsir validate`` on scenario files; ``kmsir scenarios``
showing no hidden string; and a run with a playbook the scenario was not written for."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from kmsir.cli import runs
from kmsir.errors import PlaybookError
from kmsir.playbook import yamlsafe
from kmsir.prompts import Answer
from kmsir.sandbox import Sandbox, scenario_schema
from kmsir.sandbox import scenario as scenarios
from kmsir.sandbox.scenario_model import Scenario

from .clikit import cli
from .conftest import PLAYBOOKS, refused_scenario

ROOT = Path(__file__).resolve().parent.parent
#: The review scenario: a posture review, not an incident (a briefing, nothing hidden).
REVIEW = "posture-drift"
INCIDENTS = sorted(set(scenarios.available()) - {REVIEW})


def hidden_strings(world: Scenario) -> list[str]:
    """Every text of the scenario's hidden parts (the facilitator's only)."""
    found: list[str] = []
    if world.ground_truth is not None:
        found.append(world.ground_truth.summary)
        found += [t.what for t in world.ground_truth.timeline]
    for expected in world.expected.values():
        found.append(expected.why)
    found += [e.what for e in world.evidence_to_see]
    found += [p.how for p in world.prevented_by]
    return found


def asked_steps(playbook: str) -> list[str]:
    """The steps of a built-in playbook that ask a question of their own (``ask``)."""
    data = yaml.safe_load((PLAYBOOKS / f"{playbook}.yaml").read_text())
    return [s["id"] for s in data["steps"] if s["action"] == "ask"]


# -- the shipped scenarios ------------------------------------------------------------------


@pytest.mark.parametrize("name", INCIDENTS)
def test_every_incident_scenario_is_a_tabletop(name: str) -> None:
    world = scenarios.load(name)
    assert world.briefing.strip() and world.ground_truth is not None
    assert world.ground_truth.key in world.keys and world.ground_truth.timeline
    assert world.injects and world.evidence_to_see and world.prevented_by and world.targets
    # every question of the playbook has its expected answer, each with its why
    assert set(asked_steps(world.playbook)) <= set(world.expected)
    assert all(e.why.strip() for e in world.expected.values())
    # what the players are told is not what is true
    summary = " ".join(world.ground_truth.summary.split())
    assert " ".join(world.briefing.split()) not in summary
    assert not difflib.get_close_matches(world.briefing, [world.ground_truth.summary], cutoff=0.6)


def test_the_review_scenario_has_a_briefing_and_nothing_hidden() -> None:
    world = scenarios.load(REVIEW)
    assert world.briefing.strip() and hidden_strings(world) == []


def test_ransom_deletion_expects_the_key_kept_disabled_and_has_a_timed_inject() -> None:
    world = scenarios.load("ransom-deletion")
    assert world.expected["decide"].answer == "keep-disabled"
    assert "enable" not in world.expected["decide"].alternatives
    (timed,) = [i for i in world.injects if i.after_minutes is not None]
    assert timed.after_minutes == 10 and timed.history and timed.title


def test_the_fingerprint_leaves_out_what_players_are_told_and_the_rubric() -> None:
    world = scenarios.load("ransom-deletion")
    before = Sandbox(world).fingerprint
    assert world.expected and world.ground_truth is not None
    edited = world.model_copy(
        update={
            "title": "another title",
            "briefing": "another page",
            "expected": {},
            "ground_truth": world.ground_truth.model_copy(update={"summary": "other"}),
            "evidence_to_see": [],
            "prevented_by": [],
            "targets": None,
        }
    )
    assert Sandbox(edited).fingerprint == before
    reseeded = world.model_copy(update={"seed": world.seed + 1})
    assert Sandbox(reseeded).fingerprint != before


def test_a_scenario_written_with_story_still_loads_as_its_briefing(tmp_path: Path) -> None:
    text = (scenarios.scenario_dir() / "ransom-deletion.yaml").read_text()
    path = tmp_path / "old.yaml"
    path.write_text(text.replace("\nbriefing: >-\n", "\nstory: >-\n"))
    old = scenarios.load(str(path))
    assert old.briefing == scenarios.load("ransom-deletion").briefing
    assert "story" in old.world_dump() and "briefing" not in old.world_dump()


# -- what loading refuses in the hidden parts ----------------------------------------------


def line_of(path: Path, text: str) -> int:
    """The line of ``path`` where ``text`` first appears (a line ending in a newline: the
    first line that is that text)."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line == text.removesuffix("\n") if text.endswith("\n") else text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


@pytest.mark.parametrize(
    ("good", "bad", "marker", "says"),
    [
        # an expected decision at a step the playbook lacks (the line of what it expects)
        (
            "\n  cancel:\n    answer: approved\n    why: The",
            "\n  cancle:\n    answer: approved\n    why: The",
            "    answer: approved\n",
            "has no step 'cancle' (did you mean 'cancel'?)",
        ),
        # an expected answer that is none of the ask step's choices
        (
            "    answer: keep-disabled",
            "    answer: keep-disabld",
            "keep-disabld",
            "'keep-disabld' is not one of its choices (keep-disabled, enable)",
        ),
        # an approval's answer is approved or skipped
        (
            "    answer: approved\n    why: The pending",
            "    answer: approve\n    why: The pending",
            "    answer: approve\n",
            "'approve' is not what its approval records",
        ),
        # a template in a hidden text
        (
            "  summary: >-\n    With a leaked",
            "  summary: >-\n    With {{ keys.orders.arn }} a leaked",
            "  summary: >-\n",
            "ground_truth.summary: a hidden part is plain text",
        ),
        # the ground truth names a key the scenario lacks
        (
            "  key: orders\n  principal: attacker",
            "  key: order\n  principal: attacker",
            "  key: order\n",
            "unknown key 'order' (did you mean 'orders'?)",
        ),
        (
            "  principal: attacker\n",
            "  principal: atacker\n",
            "principal: atacker",
            "unknown identity 'atacker'",
        ),
        # evidence at a step the playbook lacks
        ("step: findings}", "step: finding}", "step: finding}", "has no step 'finding'"),
    ],
)
def test_a_bad_hidden_part_is_refused_naming_its_line(
    tmp_path: Path, good: str, bad: str, marker: str, says: str
) -> None:
    path, problem = refused_scenario(tmp_path, "ransom-deletion", good, bad)
    line = line_of(path, marker)
    assert problem.startswith(f"{path}:{line}:"), problem
    assert says in problem


def test_every_problem_of_the_hidden_parts_is_named_at_once(tmp_path: Path) -> None:
    text = (scenarios.scenario_dir() / "ransom-deletion.yaml").read_text()
    path = tmp_path / "bad.yaml"
    path.write_text(
        text.replace("answer: keep-disabled", "answer: maybe").replace(
            "  key: orders\n  principal: attacker", "  key: nope\n  principal: attacker"
        )
    )
    with pytest.raises(PlaybookError) as raised:
        scenarios.load(str(path))
    assert len(raised.value.problems) == 2
    assert all(p.startswith(f"{path}:") for p in raised.value.problems)


def test_an_unknown_hidden_field_is_refused_naming_its_line(tmp_path: Path) -> None:
    path, problem = refused_scenario(
        tmp_path, "ransom-deletion", "  timeline:\n    - {at: -2d3h", "  when:\n    - {at: -2d3h"
    )
    assert problem.startswith(f"{path}:{line_of(path, '    - {at: -2d3h')}:")  # its value
    assert "ground_truth.when" in problem


# -- the JSON Schema and kmsir validate ----------------------------------------------------


def test_committed_scenario_schema_is_what_the_model_gives() -> None:
    committed = (ROOT / scenario_schema.COMMITTED).read_text()
    if committed != scenario_schema.schema_text():
        pytest.fail(
            f"{scenario_schema.COMMITTED} is not what the model gives: regenerate it with "
            f"`{scenario_schema.REGENERATE}`"
        )


def test_the_shipped_scenarios_follow_the_schema_their_first_line_names() -> None:
    schema = json.loads((ROOT / scenario_schema.COMMITTED).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted(scenarios.scenario_dir().glob("*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first == "# yaml-language-server: $schema=../../schema/scenario.schema.json"
        data: Any = yamlsafe.load_file(path).data
        assert [e.message for e in validator.iter_errors(data)] == [], path


def test_validate_checks_scenarios_and_playbooks_together() -> None:
    shipped = sorted(scenarios.scenario_dir().glob("*.yaml"))
    ran = cli("validate", PLAYBOOKS / "kms-key-deletion-response.yaml", *shipped)
    assert ran.exit_code == 0, ran.output
    assert f"{shipped[0]}: valid scenario (playbook " in ran.stdout
    assert "kms-key-deletion-response.yaml: valid (" in ran.stdout


def test_validate_names_each_problem_of_a_scenario_by_file_and_line(tmp_path: Path) -> None:
    """Outside a scenarios/ directory, a file with keys: and no steps: is a scenario."""
    text = (scenarios.scenario_dir() / "ransom-deletion.yaml").read_text()
    path = tmp_path / "exercise.yaml"
    path.write_text(text.replace("answer: keep-disabled", "answer: maybe"))
    ran = cli("validate", path)
    assert ran.exit_code == 2
    (line,) = ran.stderr.strip().splitlines()
    assert line.startswith(f"{path}:{line_of(path, 'answer: maybe')}:")
    assert "'maybe' is not one of its choices" in line


def test_validate_takes_a_file_under_scenarios_as_a_scenario(tmp_path: Path) -> None:
    folder = tmp_path / "scenarios"
    folder.mkdir()
    path = folder / "empty.yaml"
    path.write_text("id: empty\ntitle: t\nplaybook: kms-key-outage\n")
    ran = cli("validate", path)
    assert ran.exit_code == 2
    assert f"{path}:1:1: briefing: Field required" in ran.stderr
    assert "steps" not in ran.stderr  # not checked as a playbook
    # a playbook beside its scenarios is checked as a playbook
    beside = folder / "mini.yaml"
    beside.write_text(MINI)
    ran = cli("validate", beside)
    assert ran.exit_code == 0, ran.output
    assert f"{beside}: valid (1 steps)" in ran.stdout


# -- what the players see ------------------------------------------------------------------


def test_scenarios_lists_ids_titles_playbooks_and_briefings_and_nothing_hidden() -> None:
    ran = cli("scenarios")
    assert ran.exit_code == 0, ran.output
    flat = " ".join(ran.stdout.split())
    for name in scenarios.available():
        world = scenarios.load(name)
        assert f"{name}: {world.title}" in ran.stdout
        assert f"playbook: {world.playbook}" in ran.stdout
        assert " ".join(world.briefing.split()) in flat
        for hidden in hidden_strings(world):
            assert " ".join(hidden.split()) not in flat, (name, hidden)


# -- a playbook the scenario was not written for -------------------------------------------

MINI = """id: mini
title: One note
steps:
  - {id: hello, name: Say hello, action: note, with: {text: hello}}
"""


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    path = tmp_path / "mini.yaml"
    path.write_text(MINI)
    return path


def run_mini(tmp_path: Path, mini: Path, *extra: str) -> Any:
    return cli(
        "run", mini, "--sandbox", "ransom-deletion", "--incident", "INC-MINI",
        "--evidence-dir", tmp_path / "ev", *extra,
    )  # fmt: skip


@pytest.mark.parametrize("extra", [(), ("--yes",)])
def test_a_scenario_run_with_another_playbook_warns_and_goes_on(
    tmp_path: Path, mini: Path, extra: tuple[str, ...]
) -> None:
    """Without a terminal (or with --yes): one warning line, and the run goes on."""
    ran = run_mini(tmp_path, mini, *extra)
    assert ran.exit_code == 0, ran.output
    (line,) = [x for x in ran.stderr.splitlines() if "was written for" in x]
    assert line == (
        "kmsir: warning: scenario ransom-deletion was written for playbook "
        "kms-key-deletion-response, not mini: its injects and expected decisions follow the "
        "other playbook's steps; going on"
    )
    # the SIMULATED banner, then what the players are told
    world = scenarios.load("ransom-deletion")
    stderr = " ".join(ran.stderr.split())
    assert "SIMULATED · sandbox scenario ransom-deletion" in stderr
    assert " ".join(world.briefing.split()) in stderr
    assert list((tmp_path / "ev" / "INC-MINI").glob("*/journal.jsonl"))


class Terminal:
    """A terminal's prompter that answers the one question with ``answer``."""

    interactive = True

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.asked: list[str] = []

    def confirm(self, key: str, message: str) -> Answer:
        self.asked.append(message)
        return Answer(self.answer, "interactive")


@pytest.mark.parametrize("answer", [False, True])
def test_at_a_terminal_a_mismatched_playbook_is_asked_about(
    tmp_path: Path, mini: Path, monkeypatch: pytest.MonkeyPatch, answer: bool
) -> None:
    terminal = Terminal(answer)
    real = runs.prompter_for

    def prompter_for(scripted: dict[str, Any], source: str, *, yes: bool) -> Any:
        return terminal if source == "scenario" else real(scripted, source, yes=yes)

    monkeypatch.setattr(runs, "prompter_for", prompter_for)
    ran = run_mini(tmp_path, mini)
    assert terminal.asked == ["Run mini in scenario ransom-deletion?"]
    assert "kmsir: scenario ransom-deletion was written for playbook" in ran.stderr
    assert "warning" not in ran.stderr
    ran_at_all = list((tmp_path / "ev").glob("INC-MINI/*/journal.jsonl"))
    if answer:
        assert ran.exit_code == 0, ran.output
        assert ran_at_all
    else:
        assert ran.exit_code == 1
        assert "kmsir run: not confirmed; nothing was run" in ran.stderr
        assert not ran_at_all


def test_the_scenarios_own_playbook_is_not_questioned(capsys: pytest.CaptureFixture[str]) -> None:
    from kmsir.cli.common import load_playbook

    world = scenarios.load("ransom-deletion")
    runs._written_for(world, load_playbook(world.playbook), yes=False)
    assert capsys.readouterr().err == ""

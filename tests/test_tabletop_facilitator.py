"""A tabletop under tmux: the players in one terminal, the facilitator in another. The
facilitator fires an inject, the players see it at their next prompt, and the facilitator's
screen shows each decision the team makes against the expected one, as it is made."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from kmsir.evidence import integrity
from kmsir.evidence.bundle import JOURNAL, read_journal, sha256_hex
from kmsir.evidence.journal import BundleWriter
from kmsir.sandbox import scenario as scenarios
from kmsir.tabletop import exercise
from tests.clikit import cli
from tests.journalkit import journal_lines, run_started

from .conftest import bundles
from .termkit import TMUX, Terminal
from .test_terminal import _environment

needs_tmux = pytest.mark.skipif(
    TMUX is None and not os.environ.get("CI"),
    reason="needs tmux (apt-get install tmux); .ci/run installs it",
)


def players_bundle(evidence: Path) -> Path:
    """The start of team red's ransom-deletion run (its run-started alone): enough for a
    facilitator to follow, without playing it."""
    raw = (scenarios.scenario_dir().parent / "kms-key-deletion-response.yaml").read_bytes()
    writer = BundleWriter.create(evidence, "tabletop-ransom-deletion-red", playbook_raw=raw)
    writer.append(
        run_started(
            incident="tabletop-ransom-deletion-red",
            run_id=writer.run_id,
            scenario="ransom-deletion",
            playbook={"id": "kms-key-deletion-response", "sha256": sha256_hex(raw)},
            sandbox={"source": "ransom-deletion"},
        )
    )
    writer.close()
    return writer.root


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

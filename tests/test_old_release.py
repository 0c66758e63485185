"""Bundles written by release 0.2.0 (tests/data/old-release, see its README) still verify,
resume where unfinished and render, and ``fold`` reads each exactly as the committed dump of
its RunView says: the typed journal reads the on-disk format releases already wrote.

Regenerate a dump (only when the RunView's shape changes on purpose, and say so in the commit):
``python -m tests.test_old_release``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import msgspec
import pytest

from kmsir import report
from kmsir.evidence import integrity
from kmsir.evidence.bundle import read_journal
from kmsir.sandbox import scenario as scenarios
from tests.clikit import cli

OLD = Path(__file__).resolve().parent / "data" / "old-release"
MODES = ("live", "check", "sandbox")


def dump(mode: str) -> bytes:
    """The RunView ``fold`` makes of the old bundle, as stable, indented JSON."""
    view = read_journal(OLD / mode / "journal.jsonl").view()
    return msgspec.json.format(msgspec.json.encode(view), indent=1) + b"\n"


@pytest.mark.parametrize("mode", MODES)
def test_fold_reads_an_old_bundle_as_its_committed_dump(mode: str) -> None:
    journal = read_journal(OLD / mode / "journal.jsonl")
    assert journal.problems == []  # every line is a valid typed entry
    assert json.loads(dump(mode)) == json.loads((OLD / f"{mode}.view.json").read_bytes())


@pytest.mark.parametrize("mode", ["live", "check"])
def test_an_old_finished_bundle_verifies_intact(mode: str) -> None:
    checked = integrity.check(OLD / mode)
    assert checked.problems == []
    assert checked.intact
    assert checked.view.status == "succeeded"


def test_the_old_anchored_bundle_verifies_against_its_key() -> None:
    ran = cli("verify", OLD / "live", "--key", OLD / "live-anchor-public.pem")
    assert ran.exit_code == 0, ran.output
    assert "signed:" in ran.output and "intact:" in ran.output


def test_the_old_unfinished_bundle_is_consistent_and_unproven() -> None:
    checked = integrity.check(OLD / "sandbox")
    assert checked.problems == []
    assert not checked.intact and not checked.finished
    assert cli("verify", OLD / "sandbox").exit_code == 4


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", ["md", "html"])
def test_an_old_bundle_renders_again(mode: str, fmt: str) -> None:
    text = report.render(OLD / mode, fmt=fmt)
    started = read_journal(OLD / mode / "journal.jsonl").view().meta
    assert started is not None
    assert started.incident in text  # the report names the incident
    for step in ("snapshot", "collect", "findings"):
        assert step in text


def test_the_old_unfinished_sandbox_run_resumes_to_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the run was played in rogue-grant as it was then (the scenario has grown since):
    # resumed with that scenario, its world is rebuilt the same
    monkeypatch.setattr(scenarios, "scenario_dir", lambda: OLD / "scenarios")
    incident = tmp_path / "evidence" / "INC-FIXTURE-SANDBOX"
    bundle = incident / "run"
    shutil.copytree(OLD / "sandbox", bundle)
    ran = cli("resume", bundle, "--yes")
    assert ran.exit_code == 0, ran.output
    checked = integrity.check(bundle)
    assert checked.problems == [] and checked.intact
    view = checked.view
    assert view.status == "succeeded"
    assert len(view.resumes) == 2  # the old release's resume, and this one
    assert all(s.outcome is not None for s in view.steps.values())


def test_a_sandbox_run_whose_scenario_changed_since_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    bundle = tmp_path / "evidence" / "INC-FIXTURE-SANDBOX" / "run"
    shutil.copytree(OLD / "sandbox", bundle)
    before = (bundle / "journal.jsonl").read_bytes()
    ran = cli("resume", bundle, "--yes")
    assert ran.exit_code == 2, ran.output
    last = ran.stderr.strip().splitlines()[-1]  # after the line naming the bundle
    assert last.startswith("kmsir: ") and "scenario rogue-grant changed since this run" in last
    assert (bundle / "journal.jsonl").read_bytes() == before  # nothing lost, nothing added


if __name__ == "__main__":
    for name in MODES:
        (OLD / f"{name}.view.json").write_bytes(dump(name))

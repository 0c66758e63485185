"""The exercise projection, the score and the debrief of a tabletop (``kmsir.tabletop``).

The score is pure: judged on hand-made ``Exercise`` values. The projection and the debrief
read real bundles of ``ransom-deletion``: a team with one wrong decision, and one with the
right answers. The Done-when test plays a scripted team through ``kmsir tabletop start`` with
a timed inject and searches everything the players saw or received for the scenario's hidden
strings.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kmsir.evidence.bundle import read_journal, sha256_hex
from kmsir.sandbox import scenario as scenarios
from kmsir.sandbox.hidden_model import HIDDEN_FIELDS
from kmsir.tabletop import debrief, exercise, progress, score
from kmsir.tabletop.exercise import Evidence, Exercise, Judged, Targets
from kmsir.tabletop.progress import Timing
from tests.clikit import cli
from tests.conftest import PLAYBOOKS, bundles

SCENARIO = "ransom-deletion"
RIGHT = "cancel: approve\ndecide: keep-disabled\n"
WRONG = "cancel: approve\ndecide: enable\nenable: approve\n"


# -- the score: pure, on hand-made exercises ---------------------------------------------


def _judged(
    step: str, verdict: str, *, seconds: float = 30.0, within: float | None = None
) -> Judged:
    answer = {"right": "a", "acceptable": "b", "wrong": "c"}.get(verdict)
    return Judged(
        step=step,
        answer=answer,
        by="test",
        at=None,
        seconds=seconds if answer else None,
        expected="a",
        alternatives=("b",),
        why="because",
        verdict=verdict,
        within_minutes=within,
    )


def _exercise(**fields: Any) -> Exercise:
    base: dict[str, Any] = {
        "scenario_id": "s",
        "title": "t",
        "briefing": "b",
        "decisions": (_judged("one", "right"), _judged("two", "right")),
        "evidence": (Evidence("e1", "collect", None, True), Evidence("e2", "collect", None, True)),
        "timing": Timing(identify_seconds=60, contain_seconds=120, recover_seconds=200),
        "targets": Targets(identify_minutes=10, contain_minutes=20),
    }
    return Exercise(**{**base, **fields})


def test_a_perfect_exercise_scores_100_and_shows_its_rubric() -> None:
    judged = score.score(_exercise())
    assert judged.total == 100
    assert [(p.name, p.points, p.out_of) for p in judged.parts] == [
        ("decisions", 60, 60),
        ("evidence", 15, 15),
        ("timing", 25, 25),
    ]
    assert judged.rubric == score.RUBRIC and len(judged.rubric) == 4


@pytest.mark.parametrize(
    ("verdicts", "decision_points"),
    [
        (("right", "wrong"), 30.0),
        (("right", "acceptable"), 48.0),
        (("wrong", "not-reached"), 0.0),
        (("acceptable", "pending"), 18.0),
    ],
)
def test_decisions_share_60_points(verdicts: tuple[str, str], decision_points: float) -> None:
    ex = _exercise(decisions=tuple(_judged(f"s{n}", v) for n, v in enumerate(verdicts)))
    judged = score.score(ex)
    assert judged.parts[0].points == decision_points
    assert judged.total == round(decision_points + 40)


def test_an_unscored_decision_counts_for_nothing_and_a_late_one_for_half() -> None:
    unscored = Judged("x", "y", "t", None, 1.0, None, (), None, "unscored")
    late = _judged("two", "right", seconds=700, within=10)
    judged = score.score(_exercise(decisions=(_judged("one", "right"), late, unscored)))
    assert late.late
    assert judged.parts[0].points == 45.0 and "1 late" in judged.parts[0].detail


def test_timing_credit_falls_linearly_to_zero_at_three_times_the_target() -> None:
    assert score.timing_credit(600, 10) == 1.0
    assert score.timing_credit(1200, 10) == 0.5
    assert score.timing_credit(1800, 10) == 0.0
    assert score.timing_credit(5000, 10) == 0.0
    assert score.timing_credit(None, 10) == 0.0
    slow = _exercise(timing=Timing(identify_seconds=1200, contain_seconds=None))
    assert score.score(slow).parts[2].points == 5.0  # half of identify's 10, no containment


def test_evidence_not_seen_and_parts_with_nothing_to_judge() -> None:
    missed = (Evidence("e1", "collect", None, True), Evidence("e2", "collect", "X", False))
    assert score.score(_exercise(evidence=missed)).parts[1].points == 7.5
    # no targets, no evidence listed: the decisions alone, scaled to 100
    bare = _exercise(
        targets=None,
        evidence=(),
        decisions=(_judged("one", "right"), _judged("two", "wrong")),
    )
    judged = score.score(bare)
    assert [p.name for p in judged.parts] == ["decisions"] and judged.total == 50
    assert score.score(_exercise(decisions=(), evidence=(), targets=None)).total == 0


class _Clock:
    """The players' process's clock, made to move ``step`` seconds each time it is read: the
    exercise's minutes pass in milliseconds, and the timed inject comes due mid-run."""

    def __init__(self, step: float) -> None:
        from datetime import timedelta

        from kmsir.evidence.bundle import utc_now

        self.start, self.step, self.reads = utc_now(), timedelta(seconds=step), 0

    def __call__(self) -> Any:
        self.reads += 1
        return self.start + self.step * self.reads


def _start(
    workdir: Path, team: str, answers: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[Any, Path]:
    from kmsir.tabletop import session

    monkeypatch.setattr(session, "clock", _Clock(20.0))
    file = workdir / f"{team}.yaml"
    file.write_text(answers)
    ran = cli(
        "tabletop", "start", SCENARIO, "--team", team, "--answers", file,
        "--evidence-dir", workdir / "ev",
        cwd=workdir,
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output[-3000:]
    (bundle,) = bundles(workdir / "ev" / f"tabletop-{SCENARIO}-{team}")
    return ran, bundle


def _received(bundle: Path, evidence_dir: Path) -> dict[str, str]:
    """Every file of the players' bundle (compressed ones opened) and of their session."""
    import gzip

    files = [*bundle.rglob("*"), *(evidence_dir / ".tabletop").rglob("*")]
    found = {}
    for path in files:
        if path.is_file():
            data = path.read_bytes()
            if path.suffix == ".gz":
                data = gzip.decompress(data)
            found[str(path)] = data.decode("utf-8", "replace")
    return found


# -- real bundles ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def teams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Any, Path]]]:
    """Two scripted teams through ``kmsir tabletop start`` (once for the module), each with
    its screen output and bundle: blue makes one wrong decision, green none."""
    from kmsir.aws.pacing import QUOTAS, Pacing

    workdir = tmp_path_factory.mktemp("tabletop")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("kmsir.aws.pacing.PACING", Pacing(QUOTAS, sleep=lambda _: None))
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_CONFIG_FILE", str(workdir / "no-aws-config"))
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(workdir / "no-aws-credentials"))
        yield {
            "blue": _start(workdir, "blue", WRONG, patch),
            "green": _start(workdir, "green", RIGHT, patch),
        }


def test_the_facilitator_sees_each_decision_against_the_expected_one(
    teams: dict[str, tuple[Any, Path]],
) -> None:
    ex = exercise.load(teams["blue"][1])
    view = exercise.facilitator_view(ex)
    assert view["team"] == "blue" and view["status"] == "succeeded"
    decided = {d["step"]: d for d in view["decisions"]}
    assert decided["decide"]["answer"] == "enable"
    assert decided["decide"]["expected"] == "keep-disabled"
    assert decided["decide"]["verdict"] == "wrong"
    assert "attacker" in decided["decide"]["why"]
    assert decided["cancel"]["verdict"] == "right"
    assert decided["enable"]["verdict"] == "unscored"  # its approval, expected nowhere
    assert all(d["seconds"] > 0 for d in view["decisions"])  # one tick of the fake clock
    # the timed inject fired before a step, the step inject after `enable`
    assert [i["trigger"] for i in view["injects"]] == ["timer", "step"]
    injected = [t["step"] for t in view["timeline"] if t["kind"] == "inject"]
    assert injected[1] == "enable" and injected[0] in decided.keys() | {"collect", "findings"}
    assert {t["kind"] for t in view["timeline"]} == {
        "step",
        "decision",
        "finding",
        "note",
        "inject",
    }
    assert view["keys"] == [
        {"key_id": view["keys"][0]["key_id"], "alias": "alias/orders-db", "state": "Enabled"}
    ]
    assert view["findings"][0]["severity"] == "critical"
    timing = view["timing"]
    assert 0 < timing["identify_seconds"] < timing["contain_seconds"] < timing["recover_seconds"]
    assert view["ground_truth"]["principal"] == "AssumedRole ops-automation (session maint-2291)"
    assert view["ground_truth"]["key"] == "alias/orders-db (Orders database envelope key)"
    assert view["next_injects"] == []  # both fired
    assert view["score"]["total"] < 100 and view["score"]["rubric"] == list(score.RUBRIC)
    assert json.loads(json.dumps(view)) == view  # JSON-able, as the room serves it


def test_the_players_view_holds_nothing_hidden(teams: dict[str, tuple[Any, Path]]) -> None:
    view = exercise.players_view(exercise.load(teams["blue"][1]))
    assert set(view) == {
        "scenario", "team", "run_id", "started", "clock_seconds", "status", "current_step",
        "timeline", "keys", "findings", "injects",
    }  # fmt: skip
    assert view["scenario"]["briefing"].startswith("PAGE")


def test_the_debrief_flags_the_wrong_decision_and_is_written_outside_the_bundle(
    teams: dict[str, tuple[Any, Path]], tmp_path: Path
) -> None:
    players = teams["blue"][1]
    before = sorted(p.name for p in players.rglob("*"))
    ran = cli("tabletop", "debrief", players, cwd=tmp_path)
    assert ran.exit_code == 0, ran.output
    md = (tmp_path / f"debrief-{players.name}.md").read_text()
    page = (tmp_path / f"debrief-{players.name}.html").read_text()
    for written in tmp_path.glob("debrief-*"):  # every hidden part is in them
        assert written.stat().st_mode & 0o777 == 0o600
    assert re.search(r"\*\*\d+ / 100\*\*", md) and "Rubric:" in md
    assert "Practice 3, Audit and monitor key use" in md  # the posture review's name
    assert "| Principal | AssumedRole ops-automation (session maint-2291) |" in md
    assert "default-src 'none'" in page and "<script" not in page
    assert "Least-privilege access to keys" in page and "v-wrong" in page
    assert sorted(p.name for p in players.rglob("*")) == before  # nothing written there
    refused = cli("tabletop", "debrief", players, "--out", players / "debrief", cwd=tmp_path)
    assert refused.exit_code == 2 and "inside the bundle" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in players.rglob("*")) == before


def test_the_debrief_escapes_journal_text_and_lists_observations(
    teams: dict[str, tuple[Any, Path]], tmp_path: Path
) -> None:
    """A facilitator's observation (untrusted text) reaches the debrief escaped."""
    from kmsir.tabletop import facilitation

    players = teams["green"][1]
    evidence_dir = players.parent.parent
    followed = facilitation.start(
        evidence_dir, facilitation.locate(evidence_dir, str(players)), by="fac"
    )
    followed.act("note", text="<script>alert(1)</script> team argued | about [it](x)")
    mine = followed.close()
    ex = exercise.load(players)
    assert ex.facilitator_bundles == (mine,)
    (observation,) = ex.observations
    assert observation.text.startswith("<script>") and observation.by == "fac"
    page = debrief.render(ex, "html")
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    md = debrief.render(ex, "md")
    assert "<script>" not in md and "\\<script\\>" in md and "\\[it\\]" in md
    refused = cli("tabletop", "debrief", players, "--out", mine / "x.md", cwd=tmp_path)
    assert refused.exit_code == 2 and "inside the bundle" in refused.stderr
    given = cli("tabletop", "debrief", mine, cwd=tmp_path)
    assert given.exit_code == 2 and "a facilitator's bundle" in given.stderr
    # named on the command line; a bundle that follows another run is left out, with a warning
    other = teams["blue"][1]
    out = tmp_path / "named"
    ran = cli("tabletop", "debrief", players, "--facilitator", mine, "--facilitator", other,
              "--out", out)  # fmt: skip
    assert ran.exit_code == 0, ran.output
    assert f"warning: {other} does not follow this run" in ran.stderr
    assert "team argued \\| about" in out.with_suffix(".md").read_text()
    assert cli("verify", mine).exit_code == 0


def test_a_run_that_goes_on_is_read_as_far_as_its_journal_goes(
    teams: dict[str, tuple[Any, Path]], tmp_path: Path
) -> None:
    """The room and the facilitator read the players' journal while it grows: a prefix of it
    (the team at its ``decide`` question) is where the team stands."""
    import shutil
    from datetime import datetime, timedelta, timezone

    players = teams["blue"][1]
    copy = tmp_path / "ev" / players.parent.name / players.name
    shutil.copytree(players, copy)
    lines = (players / "journal.jsonl").read_text().splitlines(keepends=True)
    asked = next(n for n, line in enumerate(lines) if '"step":"decide"' in line)
    (copy / "journal.jsonl").write_text("".join(lines[: asked + 1]) + lines[asked + 1][:30])
    later = datetime.now(timezone.utc) + timedelta(days=1)  # the fake clock ran ahead
    view = exercise.facilitator_view(exercise.load(copy, now=later))
    assert (view["status"], view["current_step"]) == ("in progress", "decide")
    verdicts = {d["step"]: d["verdict"] for d in view["decisions"]}
    assert verdicts == {"cancel": "right", "decide": "pending"}
    assert [i["trigger"] for i in view["injects"]] == ["timer"]
    assert [(n["index"], n["after"], n["due_in_seconds"]) for n in view["next_injects"]] == [
        (1, "enable", None)
    ]
    assert view["timing"]["recover_seconds"] is None and view["clock_seconds"] > 0


def _unfinished(players: Path, dest: Path, cut: Callable[[str], bool]) -> Path:
    """A copy of the players' bundle (under ``dest``/ev, as an evidence directory) as it
    stood before the first journal line ``cut`` picks: the run not finished, its manifest,
    reports and the artifacts of later lines not written yet (it verifies: unproven)."""
    import shutil

    from kmsir.evidence import integrity

    copy = dest / "ev" / players.parent.name / players.name
    shutil.copytree(players, copy)
    lines = (players / "journal.jsonl").read_text().splitlines(keepends=True)
    at = next(n for n, line in enumerate(lines) if cut(line))
    (copy / "journal.jsonl").write_text("".join(lines[:at]))
    for name in ("manifest.json", "report.md", "report.html"):
        (copy / name).unlink(missing_ok=True)
    for problem in integrity.check(copy).problems:
        assert problem.endswith("extra file, not recorded in the journal"), problem
        (copy / problem.split(":", 1)[0]).unlink()
    return copy


def test_at_a_prompt_the_team_is_at_the_step_asked(
    teams: dict[str, tuple[Any, Path]], tmp_path: Path
) -> None:
    """Cut as the team is asked to approve ``cancel`` (no step in flight, the run not over):
    the room's "Now:" is the step whose prompt is up, and its clock stops at the journal's
    last line once the players' process is gone (the session's pid)."""
    import os
    import shutil
    import subprocess
    import sys

    from kmsir.tabletop import channel

    players = teams["blue"][1]
    copy = _unfinished(players, tmp_path, lambda line: '"answer":"approved"' in line)
    shutil.copytree(players.parent.parent / ".tabletop", tmp_path / "ev" / ".tabletop")
    view = exercise.players_view(exercise.load(copy))
    assert (view["status"], view["current_step"]) == ("in progress", "cancel")
    last = read_journal(copy / "journal.jsonl").view().times[-1]
    stopped = progress.seconds_between(view["started"], last)
    assert view["clock_seconds"] != stopped  # the process runs (this one): the clock goes on
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    session = channel.find(tmp_path / "ev", copy)
    assert session.record()["pid"] == os.getpid()
    channel.update(session, pid=int(done.stdout))
    assert exercise.players_view(exercise.load(copy))["clock_seconds"] == stopped


def test_a_debrief_verifies_the_players_bundle_first(
    teams: dict[str, tuple[Any, Path]], tmp_path: Path
) -> None:
    """Altered: refused as ``kmsir verify`` refuses it (TAMPERED lines, exit 1), no score;
    unfinished (its end unproven): debriefed, saying so at the top, its clock stopped at its
    last journal line."""
    import shutil

    players = teams["blue"][1]
    altered = tmp_path / "altered" / players.parent.name / players.name
    shutil.copytree(players, altered)
    artifact = next(p for p in sorted((altered / "artifacts").rglob("*.json")))
    artifact.write_text(artifact.read_text() + " ")
    out = tmp_path / "out"
    refused = cli("tabletop", "debrief", altered, "--out", out, cwd=tmp_path)
    assert refused.exit_code == 1 and "TAMPERED: " in refused.stderr
    assert not list(tmp_path.glob("out.*")) and "/ 100" not in refused.output
    compared = cli("tabletop", "compare", players, altered, cwd=tmp_path)
    assert compared.exit_code == 1 and "TAMPERED: " in compared.stderr
    assert "Score" not in compared.stdout

    cut = _unfinished(players, tmp_path, lambda line: '"step":"decide"' in line)
    ran = cli("tabletop", "debrief", cut, "--out", out, cwd=tmp_path)
    assert ran.exit_code == 0, ran.output
    md = out.with_suffix(".md").read_text()
    assert md.split("\n")[2] == "**unfinished run: its end cannot be proven**"
    assert "unfinished run: its end cannot be proven" in out.with_suffix(".html").read_text()
    assert "| Status | in progress |" in md
    ex = exercise.load(cut, debrief=True)
    last = read_journal(cut / "journal.jsonl").view().times[-1]
    assert ex.clock_seconds == progress.seconds_between(ex.started, last)


def test_what_is_no_tabletop_run_is_refused_in_one_line(
    teams: dict[str, tuple[Any, Path]], tmp_path: Path
) -> None:
    """A run played in no sandbox scenario (a live run), and a `--facilitator` that is a
    file: one line each, never a traceback nor a "scenario None" debrief."""
    import platform
    import sys

    from kmsir.evidence.entries import RunStarted
    from kmsir.evidence.journal import BundleWriter

    raw = b"id: x\n"
    writer = BundleWriter.create(tmp_path / "ev", "INC-live", playbook_raw=raw)
    writer.append(
        RunStarted(
            tool={"name": "kmsir", "version": "0"},
            versions={"python": platform.python_version(), "platform": sys.platform},
            operator={"local_user": "test"},
            host="test",
            location=str(tmp_path),
            playbook={"id": "x", "title": "x", "sha256": sha256_hex(raw), "path": "x.yaml"},
            incident="INC-live",
            run_id=writer.run_id,
            inputs={},
            mode="live",
            simulated=False,
            scenario=None,
            region="eu-west-1",
        )
    )
    writer.close()
    (live,) = bundles(tmp_path / "ev" / "INC-live")
    ran = cli("tabletop", "debrief", live, cwd=tmp_path)
    assert ran.exit_code == 2 and ran.stderr.count("\n") == 1, ran.output
    assert "not a tabletop run (played in no sandbox scenario)" in ran.stderr
    assert not list(tmp_path.glob("debrief-*"))

    players, stray = teams["green"][1], tmp_path / "notes.txt"
    stray.write_text("not a bundle")
    ran = cli("tabletop", "debrief", players, "--facilitator", stray, "--out",
              tmp_path / "d")  # fmt: skip
    assert ran.exit_code == 0, ran.output
    assert f"warning: {stray} does not follow this run" in ran.stderr


def test_a_scenario_no_longer_found_is_read_from_the_facilitator_s_copy(
    teams: dict[str, tuple[Any, Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scenario file is gone: the facilitator's bundle's exact copy of it judges the run
    (its world fingerprint is the run's); without such a copy, one line naming the source
    (exit 2), never a 0/100 score."""
    from kmsir.tabletop import facilitation

    players = teams["blue"][1]
    copy = _unfinished(players, tmp_path, lambda line: '"type":"run-finished"' in line)
    followed = facilitation.start(
        tmp_path / "ev", facilitation.locate(tmp_path / "ev", str(copy)), by="fac"
    )
    mine = followed.close()
    monkeypatch.setattr(scenarios, "available", dict)  # no built-in scenario any more
    ex = exercise.load(copy)
    assert ex.scenario_id == SCENARIO and any(str(mine) in w for w in ex.warnings)
    assert {d.step: d.verdict for d in ex.decisions}["decide"] == "wrong"
    (mine / "playbook.yaml").write_text(
        (mine / "playbook.yaml").read_text().replace("seed: 7007", "seed: 7008")
    )  # another world: no longer the run's scenario
    ran = cli("tabletop", "debrief", copy, cwd=tmp_path)
    assert ran.exit_code == 2 and ran.stderr.count("\n") == 1, ran.output
    assert f"scenario {SCENARIO}: cannot load it" in ran.stderr
    assert not list(tmp_path.glob("debrief-*"))


def test_a_step_its_condition_skipped_is_not_applicable_and_left_out_of_the_shares(
    teams: dict[str, tuple[Any, Path]],
) -> None:
    """Green kept the key disabled: ``enable`` was skipped by its ``when:`` (no one's
    choice). Expected there, it is not applicable, not "not reached", and scores nothing
    either way; the same inputs always give the same score, and a changed one changes it."""
    from kmsir.sandbox.scenario_model import ExpectedSpec

    players = teams["green"][1]
    loaded = scenarios.load(SCENARIO)
    spec = ExpectedSpec(answer="approved", why="recovery")
    widened = loaded.model_copy(update={"expected": {**loaded.expected, "enable": spec}})
    ex = exercise.load(players, scenario=widened)
    assert {d.step: d.verdict for d in ex.decisions}["enable"] == "not-applicable"
    plain = exercise.load(players, scenario=loaded)
    assert score.score(ex) == score.score(plain)
    assert score.score(plain) == score.score(exercise.load(players))  # built again: the same
    assert debrief.context(ex)["decisions"][-1]["verdict_text"] == "not applicable"
    stricter = {**loaded.expected, "decide": loaded.expected["decide"].model_copy(
        update={"answer": "enable", "alternatives": []})}  # fmt: skip
    changed = exercise.load(players, scenario=loaded.model_copy(update={"expected": stricter}))
    assert score.score(changed).total < score.score(plain).total


def test_recovery_is_never_without_containment() -> None:
    """The run's successful end counts as recovery only once something was contained."""
    from kmsir.evidence.view import Finished, RunView

    ended = Finished(seq=3, ts="2026-12-02T09:30:00.000000Z", status="succeeded")
    view = RunView(started="2026-12-02T09:00:00.000000Z", finished=ended)
    assert progress.timing(view).recover_seconds is None


def test_a_decision_is_timed_from_when_its_question_was_put() -> None:
    """A note taken at the prompt (or an earlier answer of the same step) does not restart
    the clock; the step's own prompt, put after what came before, does."""
    from kmsir.evidence import entries as e
    from kmsir.evidence.stepview import Moment
    from kmsir.evidence.view import RunView

    times = [f"2026-12-02T09:0{n}:00.000000Z" for n in range(5)]
    note = e.Note(text="we argue", by="t")
    answer = e.Decision(question="Enable it?", answer="enable", by="t", reason=None)
    view = RunView(
        times=times,
        timeline=[
            Moment(seq=2, ts=times[1], step="before", record=note),
            Moment(seq=4, ts=times[3], step="decide", record=note),
            Moment(seq=5, ts=times[4], step="decide", record=answer),
        ],
    )
    (made,) = progress.decisions(view)
    assert made.seconds == 120.0  # from line 3 (the question put), not from the note


def test_iterations_of_a_step_expected_as_a_whole_are_judged_together() -> None:
    from kmsir.evidence.view import RunView
    from kmsir.sandbox.scenario_model import ExpectedSpec
    from kmsir.tabletop import hidden
    from kmsir.tabletop.progress import Made

    spec = ExpectedSpec(answer="approved", alternatives=["skipped"], why="each one")
    loaded = scenarios.load(SCENARIO).model_copy(update={"expected": {"revoke": spec}})

    def made(*answers: str) -> list[Made]:
        return [Made(f"revoke[{n}]", a, "t", "", float(n), "run") for n, a in
                enumerate(answers, 1)]  # fmt: skip

    (right,) = hidden.judge(RunView(), made("approved", "approved"), loaded)
    assert (right.step, right.verdict, right.seconds) == ("revoke", "right", 2.0)
    assert "2 iterations" in (right.why or "")
    (one_skipped,) = hidden.judge(RunView(), made("approved", "skipped"), loaded)
    assert one_skipped.verdict == "acceptable"
    (wrong,) = hidden.judge(RunView(), made("approved", "aborted"), loaded)
    assert (wrong.verdict, wrong.answer) == ("wrong", "approved, aborted")


def test_a_timed_inject_is_due_from_the_world_s_start_and_held_as_the_players_acknowledged() -> (
    None
):
    """Held: as the players' process acknowledged a hold or release that took effect (a
    refused one, or a reset of the world, leaves it unheld), not as the facilitator asked;
    once the run is over, what is left is "not fired (the run ended)", with no countdown."""
    from datetime import datetime, timedelta, timezone

    from kmsir.evidence.view import Finished, RunView
    from kmsir.tabletop import hidden

    loaded = scenarios.load(SCENARIO)
    start = datetime(2026, 12, 2, 9, 0, tzinfo=timezone.utc)
    view = RunView(started="2026-12-02T09:00:00.000000Z")

    def acked(*actions: str, ok: bool = True) -> list[dict[str, Any]]:
        return [{"seq": n, "action": a, "ok": ok} for n, a in enumerate(actions, 1)]

    now = start + timedelta(minutes=4)
    (timed, after) = hidden.next_injects(view, loaded, [], hidden.held(acked("hold")), now)
    assert (timed.after_minutes, timed.due_in_seconds, timed.held) == (10, 360.0, True)
    assert not after.held and after.due_in_seconds is None  # a hold holds the timers only
    assert not hidden.held(acked("hold", "release"))
    assert not hidden.held(acked("hold", "reset"))
    assert not hidden.held(acked("hold", ok=False))  # refused: nothing was held
    assert not hidden.held([])  # asked, not applied yet
    ended = RunView(
        started=view.started, finished=Finished(seq=9, ts=view.started, status="succeeded")
    )
    left = hidden.next_injects(ended, loaded, [], True, now)
    assert [(n.due_in_seconds, n.held, n.note) for n in left] == [
        (None, False, "not fired (the run ended)")
    ] * 2


# -- hidden strings --------------------------------------------------------------------------

#: The words of the approval prompt's answers: the tool's, not the scenario's.
_TOOL_WORDS = ("approved", "skipped", "aborted")
_WORD = re.compile(r"\w+")
_IDENTIFIER = re.compile(r"[\w./:@-]*(?:\d|[a-z][A-Z]|[_/:@-])[\w./:@-]*")


def _words(text: str) -> str:
    return " " + " ".join(_WORD.findall(text.lower())) + " "


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _texts(v)]
    if isinstance(value, list | tuple):
        return [t for v in value for t in _texts(v)]
    return []


def _hidden_strings(loaded: Any) -> set[str]:
    """The strings found only in the scenario's ``ground_truth`` or ``expected``: each hidden
    text whole, and each run of 3+ words and each identifier of them that appears nowhere in
    the scenario's other parts nor in its playbook (both are the players'), nor is one of the
    words the approval prompt records (``approved``...); and the texts of the other hidden
    parts (evidence to see, practices) whole."""
    dumped = loaded.model_dump(mode="json")
    hidden = _texts([dumped["ground_truth"], dumped["expected"]])
    # and, stricter than asked, the other hidden parts' texts whole
    others = [t for k in HIDDEN_FIELDS if k not in ("ground_truth", "expected") for t in
              _texts(dumped[k]) if " " in t]  # fmt: skip
    shown = [t for k, v in dumped.items() if k not in HIDDEN_FIELDS for t in _texts(v)]
    shown += [(PLAYBOOKS / f"{loaded.playbook}.yaml").read_text(), *_TOOL_WORDS]
    shown_words, shown_raw = _words(" ".join(shown)), " ".join(shown).lower()
    found: set[str] = set()
    for text in hidden:
        found.add(text)
        words = _WORD.findall(text.lower())
        for n in range(len(words) - 2):
            run = " ".join(words[n : n + 3])
            if f" {run} " not in shown_words:
                found.add(run)
        for token in re.findall(r"\S+", text):
            token = token.strip(".,;:()'\"")
            if _IDENTIFIER.fullmatch(token) and token.lower() not in shown_raw:
                found.add(token)
        if text.lower() in shown_raw or _words(text) in shown_words:
            found.discard(text)  # a value that is also shown (a key's name)
    return found | {t for t in others if t.lower() not in shown_raw}


def hidden_strings_in(text: str, hidden: set[str]) -> list[str]:
    """The hidden strings ``text`` holds: whole texts and identifiers as written (case
    aside), word runs word for word whatever the markup or escaping between them."""
    plain = html.unescape(text)
    words, lowered = _words(plain), plain.lower()
    return sorted(
        h
        for h in hidden
        if (f" {h} " in words if " " in h and h == h.lower() else h.lower() in lowered)
    )


def test_the_hidden_strings_are_computed_from_the_scenario() -> None:
    hidden = _hidden_strings(scenarios.load(SCENARIO))
    assert "hands it back" in hidden  # a run of the expected decision's why
    assert "keep-disabled" not in hidden  # a choice the playbook offers
    assert "approved" not in hidden and "orders" not in hidden  # the tool's word, a key name
    assert hidden_strings_in("... enabling the key HANDS it\n back ...", hidden)
    assert not hidden_strings_in("the key was disabled", hidden)


def test_done_when_a_scripted_team_is_debriefed_and_saw_nothing_hidden(
    teams: dict[str, tuple[Any, Path]], tmp_path: Path
) -> None:
    """Issue 19's Done-when: a scripted team plays ``ransom-deletion`` with one wrong decision
    while the timed inject fires; the debrief flags the wrong decision with the expected one
    and its why, the inject is on the timeline, the times are recorded, and nothing the
    players saw or received holds a string found only in the scenario's hidden parts."""
    loaded = scenarios.load(SCENARIO)
    assert any(i.after_minutes for i in loaded.injects)
    ran, players = teams["blue"]
    assert f"run id: {players.name}" in ran.stdout

    ex = exercise.load(players)
    facilitator = exercise.facilitator_view(ex)
    (decide,) = [d for d in facilitator["decisions"] if d["step"] == "decide"]
    assert (decide["answer"], decide["expected"], decide["verdict"]) == (
        "enable",
        "keep-disabled",
        "wrong",
    )
    assert decide["why"] == loaded.expected["decide"].why
    triggers = [i["trigger"] for i in facilitator["injects"]]
    assert "timer" in triggers and "step" in triggers
    timer = next(i for i in ex.injects if i.trigger == "timer")
    assert timer.before in {line.step for line in ex.timeline if line.kind == "step"}
    timing = facilitator["timing"]
    assert timing["identify_seconds"] > 0 and timing["contain_seconds"] > 0
    assert facilitator["score"]["total"] < 100

    out = tmp_path / "facilitator" / "blue"
    out.parent.mkdir()
    assert cli("tabletop", "debrief", players, "--out", out, cwd=tmp_path).exit_code == 0
    md = out.with_suffix(".md").read_text()
    line = next(row for row in md.splitlines() if row.startswith("| `decide`"))
    assert "`enable`" in line and "**wrong**" in line and "`keep-disabled`" in line
    assert "enabling the key hands it back to the attacker" in line
    timeline = md[md.index("## Timeline") :]
    assert "| inject |" in timeline and timer.say.split(" ", 3)[2] in timeline
    assert "Identify (first finding) | " in md and "never" not in md.split("## Times")[1][:200]

    hidden = _hidden_strings(loaded)
    seen = {"screen": ran.output, "players_view": json.dumps(exercise.players_view(ex))}
    seen |= _received(players, players.parent.parent)
    assert {"report.md", "report.html", "journal.jsonl"} <= {Path(p).name for p in seen}
    leaks = {
        name: found for name, text in seen.items() if (found := hidden_strings_in(text, hidden))
    }
    assert leaks == {}
    # the search finds them where they are: the facilitator's debrief
    assert hidden_strings_in(md, hidden) and hidden_strings_in(
        out.with_suffix(".html").read_text(), hidden
    )


def test_compare_puts_two_teams_side_by_side(
    teams: dict[str, tuple[Any, Path]], tmp_path: Path
) -> None:
    """The first team's bundle and a second scripted team's (the right answers)."""
    blue, green = teams["blue"][1], teams["green"][1]
    ran = cli("tabletop", "compare", blue, green, cwd=tmp_path)
    assert ran.exit_code == 0, ran.output
    assert "| | blue | green |" in ran.stdout.splitlines()
    rows = {r.split(" | ")[0]: r for r in ran.stdout.splitlines() if r.startswith("| ")}
    decide = rows["| Decision decide (expected keep-disabled)"]
    assert "enable (wrong" in decide and "keep-disabled (right" in decide
    red, green_score = (int(n) for n in re.findall(r"\| (\d+) ", rows["| Score (out of 100)"]))
    assert red < green_score
    out = tmp_path / "both.md"
    out.write_text("")
    out.chmod(0o644)
    assert cli("tabletop", "compare", blue, green, "--out", out).exit_code == 0
    assert out.read_text() == ran.stdout and out.stat().st_mode & 0o777 == 0o600
    refused = cli("tabletop", "compare", blue, green, "--out", blue / "x.md")
    assert refused.exit_code == 2 and not (blue / "x.md").exists()

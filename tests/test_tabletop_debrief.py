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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kmsir.sandbox import scenario as scenarios
from kmsir.sandbox.hidden_model import HIDDEN_FIELDS
from kmsir.tabletop import debrief, exercise, score
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


def test_the_score_is_deterministic() -> None:
    ex = _exercise(decisions=(_judged("a", "acceptable"), _judged("b", "wrong")))
    assert score.score(ex) == score.score(ex)
    assert score.score(ex).as_dict()["total"] == score.score(ex).total


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
    assert view["ground_truth"]["principal"] == "attacker"
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
    assert re.search(r"\*\*\d+ / 100\*\*", md) and "Rubric:" in md
    assert "Practice 3, Audit and monitor key use" in md  # the posture review's name
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
    assert (view["status"], view["current_step"]) == ("incomplete", "decide")
    verdicts = {d["step"]: d["verdict"] for d in view["decisions"]}
    assert verdicts == {"cancel": "right", "decide": "pending"}
    assert [i["trigger"] for i in view["injects"]] == ["timer"]
    assert [(n["index"], n["after"], n["due_in_seconds"]) for n in view["next_injects"]] == [
        (1, "enable", None)
    ]
    assert view["timing"]["recover_seconds"] is None and view["clock_seconds"] > 0


def test_a_timed_inject_is_due_from_the_world_s_start_and_held_until_released() -> None:
    from datetime import datetime, timedelta, timezone

    from kmsir.evidence.entries import FacilitatorAction
    from kmsir.evidence.stepview import Seen
    from kmsir.evidence.view import RunView
    from kmsir.tabletop import hidden

    loaded = scenarios.load(SCENARIO)
    start = datetime(2026, 12, 2, 9, 0, tzinfo=timezone.utc)
    view = RunView(started="2026-12-02T09:00:00.000000Z")

    def did(*actions: str) -> list[Seen]:
        return [
            Seen(seq=n, ts="", record=FacilitatorAction(action=a, players_entries=n))
            for n, a in enumerate(actions, 1)
        ]

    now = start + timedelta(minutes=4)
    (timed, after) = hidden.next_injects(view, loaded, [], did("hold"), now)
    assert (timed.after_minutes, timed.due_in_seconds, timed.held) == (10, 360.0, True)
    assert not after.held and after.due_in_seconds is None  # a hold holds the timers only
    released = hidden.next_injects(view, loaded, [], did("hold", "note", "release"), now)
    assert not any(n.held for n in released)


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
    assert cli("tabletop", "compare", blue, green, "--out", out).exit_code == 0
    assert out.read_text() == ran.stdout
    refused = cli("tabletop", "compare", blue, green, "--out", blue / "x.md")
    assert refused.exit_code == 2 and not (blue / "x.md").exists()

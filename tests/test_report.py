"""The incident report: snapshots of both formats, the chart, and attacker text kept inert."""

from __future__ import annotations

import getpass
import gzip
import itertools
import json
import os
import re
import shutil
import socket
import subprocess
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kmsir import cli, report
from kmsir.evidence.manifest import Bundle
from kmsir.report.trail import TrailView, chart
from kmsir.sandbox import Sandbox

from .conftest import REPO, load_playbook, run_playbook, scenario_bundle

SNAPSHOTS = Path(__file__).with_name("snapshots")
#: Screenshots a person can look at after the run (CI keeps the folder).
ARTIFACTS = REPO / "test-artifacts"
PAYLOAD_TITLE = "pwned"


def normalised(text: str, bundle: Path) -> str:
    """A report without what differs between two runs of the same scenario on two machines."""
    text = text.replace(str(bundle.parent.parent.resolve()), "<evidence>")
    text = text.replace(socket.gethostname(), "<host>").replace(getpass.getuser(), "<user>")
    text = re.sub(r"<svg.*?</svg>", "<svg/>", text, flags=re.S)  # geometry: see chart tests
    text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+(?:Z|\+00:00)?", "<time>", text)
    text = re.sub(r"\d{8}T\d{6}Z-[0-9a-f]{4}", "<run>", text)
    text = re.sub(r"\b[0-9a-f]{64}\b", "<sha256>", text)
    # ids moto draws for the scenario's other resources (an EBS snapshot, a secret's suffix):
    # the same in every new process, but in a test worker they depend on which moto backends
    # earlier tests made (CI drew other ones than a lone run); the report shows them, it does
    # not choose them
    text = re.sub(r"\bsnap-[0-9a-f]{17}\b", "snap-<id>", text)
    text = re.sub(r"(:secret:[\w/+=.@-]+?)-[A-Za-z0-9]{6}\b", r"\1-<suffix>", text)
    text = re.sub(r"\b[0-9a-f]{16}\b", "<sha256-prefix>", text)
    gz_size = (
        # the events and their summaries: their size depends on the hours the events fall in
        r"((?:events\.jsonl\.gz|events\.summary\.json|findings\.events\.json)\S*\s*"
        r"(?:\|\s*|</code></td><td>)\S+\s*(?:\|\s*|</td><td class=\"n\">))"
    )
    text = re.sub(gz_size + r"\d+", r"\1<bytes>", text)
    return text


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_report_matches_its_snapshot(fmt: str, demo_bundle: Path) -> None:
    text = normalised(report.render(demo_bundle, fmt=fmt), demo_bundle)
    snapshot = SNAPSHOTS / f"report.{fmt}"
    if os.environ.get("KMSIR_UPDATE_SNAPSHOTS"):
        snapshot.parent.mkdir(exist_ok=True)
        snapshot.write_text(text)
    assert text == snapshot.read_text(), f"report.{fmt} changed: KMSIR_UPDATE_SNAPSHOTS=1 to accept"


def test_report_names_the_key_the_findings_and_what_was_done(demo_bundle: Path) -> None:
    context = report.build_context(Bundle.open(demo_bundle))
    key = context["key_before"]["key_id"]
    html = report.render(demo_bundle, fmt="html")
    assert key in html and "SIMULATED" in html
    assert [f["severity"] for f in context["findings"]][:2] == ["high", "high"]
    # the attacker scheduled the key's deletion after it was disabled (the scenario's inject)
    assert {c["id"] for c in context["changes"]} == {"revoke", "disable", "cancel", "sessions"}
    disable = next(c for c in context["changes"] if c["id"] == "disable")
    assert disable["calls"] == [f"kms:DisableKey KeyId={key}"]
    assert disable["inverse"] == "kms.enable-key" and disable["inverse_available"]
    kinds = [row["source"] for row in context["timeline"]]
    assert "CloudTrail" in kinds and "kmsir" in kinds
    assert [row["ts"] for row in context["timeline"]] == sorted(
        r["ts"] for r in context["timeline"]
    )
    assert any(row["in_window"] for row in context["timeline"] if row["source"] == "CloudTrail")
    assert context["lessons"] and all(lesson["findings"] for lesson in context["lessons"])


def test_chart_stacks_categories_per_hour_and_marks_actions() -> None:
    view = TrailView(
        count=6,
        by_bucket={
            "2026-11-27T10": Counter({"data": 3, "failed": 1}),
            "2026-11-27T12": Counter({"management": 2}),
        },
    )
    drawn = chart(
        view,
        [("2026-11-27T12:30:00Z", "disable")],
        ("2026-11-27T11:00:00Z", "2026-11-27T13:00:00Z"),
    )
    assert drawn is not None and drawn.unit == "hour" and drawn.peak == 4
    first = [b for b in drawn.bars if b["title"].startswith("2026-11-27 10:00")]
    assert [b["category"] for b in first] == ["data", "failed"]
    assert sum(b["h"] for b in first) == pytest.approx(drawn.height - 40)  # the peak fills it
    assert drawn.marks[0]["label"] == "disable"
    assert drawn.window is not None and drawn.window["x"] < drawn.marks[0]["x"]
    long = TrailView(
        by_bucket={"2026-09-01T00": Counter({"data": 1}), "2026-11-27T00": Counter({"data": 1})}
    )
    assert (drawn_long := chart(long, [], None)) is not None and drawn_long.unit == "day"


#: A 10px system-ui character, a little over its average width: what a label box is taken as.
GLYPH = 6.0


def label_box(x: float, anchor: str, text: str) -> tuple[float, float]:
    width = len(text) * GLYPH
    return {
        "start": (x, x + width),
        "end": (x - width, x),
        "middle": (x - width / 2, x + width / 2),
    }[anchor]


@pytest.mark.parametrize(
    ("first", "last", "label"),
    [
        ("2026-11-27T10", "2026-11-27T11", "11-27 11:00"),
        ("2026-11-24T17", "2026-12-01T17", "12-01 17:00"),  # the demo's week, hour by hour
        ("2026-11-01T00", "2026-12-01T23", "12-01 23:00"),
        ("2026-09-01T00", "2026-11-27T05", "11-27"),  # day by day
    ],
)
def test_the_last_axis_label_is_kept_inside_the_chart(first: str, last: str, label: str) -> None:
    view = TrailView(by_bucket={first: Counter({"data": 1}), last: Counter({"data": 2})})
    drawn = chart(view, [], None)
    assert drawn is not None
    assert drawn.ticks[-1]["label"] == label
    boxes = [label_box(t["x"], t.get("anchor", "start"), t["label"]) for t in drawn.ticks]
    assert all(a >= 0 and b <= drawn.width for a, b in boxes), boxes
    assert all(b1 < a2 for (_, b1), (a2, _) in itertools.pairwise(boxes)), boxes  # none overlap
    assert len(drawn.ticks) >= (2 if first[:10] != last[:10] else 1)


def test_labels_of_actions_close_in_time_do_not_overlap() -> None:
    view = TrailView(
        by_bucket={"2026-11-24T17": Counter({"data": 1}), "2026-12-01T17": Counter({"data": 1})}
    )
    at = "2026-12-01T17:{}Z"
    marks = [
        ("2026-11-24T18:00:00Z", "snapshot-before-anything"),
        ("2026-11-24T18:20:00Z", "collect"),
        (at.format("40:01"), "revoke-outside-grants"),
        (at.format("40:02"), "disable"),
        (at.format("40:05"), "cancel-injected-deletion"),
        (at.format("59:59"), "x" * 300),  # longer than the chart is wide
    ]
    drawn = chart(view, marks, None)
    assert drawn is not None and len(drawn.marks) == len(marks)
    shown = [m for m in drawn.marks if m["text"]]
    assert {m["label"] for m in shown} == {label for _, label in marks}  # all of them labelled
    boxes = [(label_box(m["text_x"], m["anchor"], m["text"]), m["y"]) for m in shown]
    for (a, b), y in boxes:
        assert a >= 40 and b <= drawn.width, (a, b)  # clear of the axis' labels, inside
        assert y - 10 >= 0 and y <= drawn.height - 30  # a 10px line: inside, above the axis
    for n, ((a1, b1), y1) in enumerate(boxes):
        for (a2, b2), y2 in boxes[n + 1 :]:
            assert abs(y1 - y2) >= 10 or b1 <= a2 or b2 <= a1, (boxes, n)
    near_edge = [m for m in shown if m["label"] in ("disable", "revoke-outside-grants")]
    assert all(m["anchor"] == "end" and m["text_x"] < m["x"] for m in near_edge)


def test_marks_past_the_rows_that_fit_keep_their_line_without_a_label() -> None:
    view = TrailView(by_bucket={"2026-11-27T10": Counter({"data": 1})})
    marks = [(f"2026-11-27T10:30:{n:02d}Z", f"step-{n}") for n in range(40)]
    drawn = chart(view, marks, None)
    assert drawn is not None and len(drawn.marks) == 40
    rows = [m["y"] for m in drawn.marks if m["text"]]
    assert len(rows) < 40 and len(set(rows)) == len(rows)  # one label a row at one x...
    assert max(rows) <= drawn.height - 30  # ...none below the axis
    assert all(m["y"] is None for m in drawn.marks if not m["text"])


@pytest.fixture(scope="module")
def xss_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sandbox run whose CloudTrail history carries payloads aimed at the report's reader."""
    scenario = Path(__file__).with_name("data") / "xss-scenario.yaml"
    return scenario_bundle(str(scenario), tmp_path_factory.mktemp("xss"))


def test_payloads_reach_the_report_escaped(xss_bundle: Path) -> None:
    html = (xss_bundle / "report.html").read_text()
    assert "&lt;script&gt;document.title=" in html  # the user agent is shown...
    assert "&lt;img src=x onerror=" in html  # ...and the session name
    assert "&lt;svg onload=" in html  # ...and the request parameters
    for raw in ("<script", "<img", "<svg onload", 'onerror="', 'href="javascript'):
        assert raw not in html
    assert "<a " not in html  # no link at all: nothing from AWS can become one


def test_markdown_tables_hold_whatever_attackers_send(xss_bundle: Path) -> None:
    text = (xss_bundle / "report.md").read_text()
    assert "a pipe" in text and "second line" in text and "PWNED heading" in text
    html = rendered_with_whole_tables(text)
    for markup in ("<a ", "<script", "<img", "<svg", "<li><h"):
        assert markup not in html, markup
    headings = re.findall(r"<h\d>(.*?)</h\d>", html)
    assert not [h for h in headings if "PWNED" in h]


def rendered_with_whole_tables(text: str) -> str:
    """What GitHub makes of a Markdown report (cmarkgfm, raw HTML let through), once checked
    that attacker text broke no table: every row as wide as its header, and as many tables
    rendered as the report has (none swallowed by a list or a heading)."""
    import cmarkgfm
    from cmarkgfm.cmark import Options

    columns = None
    for line in text.splitlines():
        if not line.startswith("|"):
            columns = None
            continue
        cells = len(re.findall(r"(?<!\\)\|", line))
        columns = columns or cells  # the header row sets it
        assert cells == columns, f"table row broken: {line[:160]}"
    html = cmarkgfm.github_flavored_markdown_to_html(text, options=Options.CMARK_OPT_UNSAFE)
    delimiter_rows = len(re.findall(r"^\|(?:---\|)+$", text, flags=re.M))
    assert html.count("<table>") == delimiter_rows
    return str(html)


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def dump_dom(page: Path, screenshot: Path | None = None) -> str:
    browser = chromium()
    assert browser is not None
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    if screenshot is not None:
        shot = [*flags, "--window-size=1200,3000", f"--screenshot={screenshot}", page.as_uri()]
        subprocess.run(shot, capture_output=True, timeout=120, check=True)
    done = subprocess.run(
        [*flags, "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


@pytest.mark.skipif(
    chromium() is None and not os.environ.get("CI"),
    reason="needs Chromium (apt-get install chromium); .ci/run installs it",
)
def test_no_script_runs_when_the_html_report_opens_in_a_browser(
    xss_bundle: Path, tmp_path: Path
) -> None:
    # the canary: the same payload unescaped does run in this browser, so the check can fail
    canary = tmp_path / "canary.html"
    canary.write_text(
        "<html><head><title>safe</title></head><body>"
        "<img src=x onerror=\"document.title='pwned'\"></body></html>"
    )
    assert f"<title>{PAYLOAD_TITLE}</title>" in dump_dom(canary)

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report-xss.png"
    page = (xss_bundle / "report.html").read_text()
    # the page's CSP would block a payload that escaped escaping: check without it too
    bare = tmp_path / "report-without-csp.html"
    bare.write_text(re.sub(r"<meta http-equiv=\"Content-Security-Policy\"[^>]*>", "", page))
    assert "Content-Security-Policy" in page and "Content-Security-Policy" not in bare.read_text()
    for opened in (xss_bundle / "report.html", bare):
        dom = dump_dom(opened, screenshot if opened == bare else None)
        title = re.search(r"<title>(.*?)</title>", dom, re.S)
        assert title is not None and title.group(1) == "Incident report: INC-test", dom[:500]
        # payloads are text: no element of theirs, no handler or javascript: link on any tag
        assert not re.search(r"<(img|script|a)\b", dom)
        assert len(re.findall(r"<svg\b", dom)) == 1  # the chart, and no other
        assert not re.search(r"<[^>]+\s(on\w+|href)\s*=", dom)
    assert "<script" not in dom
    assert screenshot.stat().st_size > 10_000  # a real page was drawn


def test_a_scheduled_deletion_shows_how_long_it_can_be_cancelled(
    rogue_grant: Sandbox, tmp_path: Path
) -> None:
    book = tmp_path / "delete.yaml"
    book.write_text(
        "id: delete\ntitle: Delete\nsteps:\n"
        "  - {id: before, action: kms.snapshot, with: {key: alias/payments-prod}}\n"
        "  - {id: delete, action: kms.schedule-deletion,"
        " with: {key: alias/payments-prod, pending_window_days: 7}}\n"
        "  - {id: after, action: kms.snapshot, with: {key: alias/payments-prod}}\n"
    )
    result = run_playbook(
        load_playbook(book), rogue_grant.client_factory(), tmp_path, answers={"delete": "approve"}
    )
    assert result.status == "succeeded", result.error
    bundle = Bundle.open(result.bundle)
    context = report.build_context(bundle)
    (change,) = context["changes"]
    assert change["inverse"] == "kms.cancel-deletion" and change["inverse_available"]
    until = change["inverse_until"]
    assert [d["what"] for d in context["deadlines"]] == [
        "kms.cancel-deletion possible until",
        "key deletion",
    ]
    assert "until" in report.render(result.bundle, fmt="md")
    text = report.render(result.bundle, fmt="html")
    assert f"kms.cancel-deletion until {until} (still available)" in text
    # rendered again after the date: the inverse is gone and the deadline has passed
    later = report.build_context(bundle, now=datetime.now(timezone.utc) + timedelta(days=8))
    assert not later["changes"][0]["inverse_available"]
    assert all(d["passed"] for d in later["deadlines"])


def test_a_user_html_template_is_autoescaped(xss_bundle: Path, tmp_path: Path) -> None:
    template = tmp_path / "mine.html.j2"
    template.write_text(
        "<h1>{{ manifest.incident }}</h1>{% for f in findings %}{% for e in f.events %}"
        "<p>{{ e.user_agent }}</p>{% endfor %}{% endfor %}"
    )
    out = tmp_path / "mine.html"
    result = CliRunner().invoke(
        cli.app,
        [
            "report",
            str(xss_bundle),
            "--format",
            "html",
            "--template",
            str(template),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "&lt;script&gt;" in text and "<script" not in text


def _odd(bundle: Path, case: str) -> None:
    """Make ``bundle`` odd in one way a forged trail file or a broken disk could."""
    events = next(bundle.glob("artifacts/*-collect/events.jsonl.gz"))
    findings = next(bundle.glob("artifacts/*-findings/findings.json"))
    lines = gzip.decompress(events.read_bytes()).splitlines()
    first = json.loads(lines[0])
    odd_events = {
        "list-event-id": {**first, "eventID": ["x"]},
        "session-context-text": {**first, "userIdentity": {"sessionContext": "oops"}},
        "no-time": {**first, "eventTime": None},
        "garbage-time": {**first, "eventTime": "not a time"},
        "year-9999": {**first, "eventTime": "9999-12-31T23:59:59Z"},
        "offset-time": {**first, "eventTime": "2026-11-27T10:00:00+05:00"},
    }
    if case == "truncated-events":
        events.write_bytes(events.read_bytes()[: len(events.read_bytes()) // 2])
    elif case == "not-gzip":
        events.write_bytes(b"not gzip at all")
    elif case == "findings-null":
        findings.write_text("null")
    elif case == "event-ids-odd":
        found = json.loads(findings.read_text())
        found[0]["event_ids"], found[1]["event_ids"] = 7, [["x"], first["eventID"]]
        findings.write_text(json.dumps(found))
    else:
        extra = json.dumps(odd_events[case]).encode()
        findings_data = json.loads(findings.read_text())
        findings_data[0]["event_ids"] = [odd_events[case].get("eventID"), first["eventID"]]
        findings.write_text(json.dumps(findings_data, default=str))
        events.write_bytes(gzip.compress(b"\n".join([*lines, extra]) + b"\n"))


@pytest.mark.parametrize(
    "case",
    [
        "truncated-events",
        "not-gzip",
        "findings-null",
        "event-ids-odd",
        "list-event-id",
        "session-context-text",
        "no-time",
        "garbage-time",
        "year-9999",
        "offset-time",
    ],
)
def test_odd_bundles_still_render(case: str, demo_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(demo_bundle, bundle)
    _odd(bundle, case)
    for fmt in ("md", "html"):
        text = report.render(bundle, fmt=fmt)
        assert "Incident report: " in text and "INC-test" in text
    if case in ("truncated-events", "not-gzip"):
        assert "could not be read to its end" in report.render(bundle, fmt="md")
    if case == "offset-time":  # counted in its UTC hour
        context = report.build_context(Bundle.open(bundle))
        assert context["chart"] is not None and context["trail"]["untimed"] == 0


def test_an_inverse_run_later_closes_its_deadline(rogue_grant: Sandbox, tmp_path: Path) -> None:
    book = tmp_path / "undo.yaml"
    book.write_text(
        "id: undo\ntitle: Undo\nsteps:\n"
        "  - {id: before, action: kms.snapshot, with: {key: alias/payments-prod}}\n"
        "  - {id: delete, action: kms.schedule-deletion,"
        " with: {key: alias/payments-prod, pending_window_days: 7}}\n"
        "  - {id: cancel, action: kms.cancel-deletion, with: {key: alias/payments-prod}}\n"
        "  - {id: after, action: kms.snapshot, with: {key: alias/payments-prod}}\n"
    )
    result = run_playbook(
        load_playbook(book),
        rogue_grant.client_factory(),
        tmp_path,
        answers={"delete": "approve", "cancel": "approve"},
    )
    assert result.status == "succeeded", result.error
    context = report.build_context(Bundle.open(result.bundle))
    delete = next(c for c in context["changes"] if c["id"] == "delete")
    assert delete["undone_by"] == "cancel" and not delete["inverse_available"]
    assert context["deadlines"] == []
    assert "(done by step `cancel`)" in report.render(result.bundle, fmt="md")


def test_a_change_whose_step_failed_afterwards_is_still_reported(
    rogue_grant: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kmsir.actions.kms_lifecycle import DisableKey
    from kmsir.errors import AwsError

    original = DisableKey.run

    def disable_then_fail(self: DisableKey, ctx: object, params: object) -> object:
        original(self, ctx, params)  # type: ignore[arg-type]
        raise AwsError("DescribeKey: AWS ThrottlingException", code="X", operation="DescribeKey")

    monkeypatch.setattr(DisableKey, "run", disable_then_fail)
    book = tmp_path / "disable.yaml"
    book.write_text(
        "id: d\ntitle: D\nsteps:\n"
        "  - {id: disable, action: kms.disable-key, with: {key: alias/payments-prod}}\n"
    )
    result = run_playbook(
        load_playbook(book), rogue_grant.client_factory(), tmp_path, answers={"disable": "approve"}
    )
    assert result.status == "failed"
    context = report.build_context(Bundle.open(result.bundle))
    (change,) = context["changes"]
    assert change["status"] == "failed" and change["before"]["state"] == "Enabled"
    assert change["calls"][0].startswith("kms:DisableKey KeyId=")
    assert "changes may have been made" in report.render(result.bundle, fmt="md")

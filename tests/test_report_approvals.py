"""The report's "Second-person approvals": per step that asked, who answered (the identity
STS named), when and why, the answers refused and the timeouts; what an approver wrote, and a
refusal quoting a hostile answer file, are attacker-controlled: inert and bounded in both
formats. Reports of runs that never asked have no such section."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kmsir import report
from kmsir.evidence import approvals, entries
from kmsir.evidence.journal import BundleWriter
from kmsir.report.approvals import MAX_TEXT

from .approvalkit import PREVIEW
from .journalkit import run_started

ARN = "arn:aws:iam::111122223333:user/bob"
HOSTILE = "<script>alert(1)</script> | **bold** [x](http://evil.example)\n\x1b[31m\u202e"


def bundle_with(tmp_path: Path, *records: tuple[str, entries.Record]) -> Path:
    raw = b"id: x\ntitle: X\nsteps: []\n"
    writer = BundleWriter.create(tmp_path, "INC-R", playbook_raw=raw)
    writer.append(
        run_started(
            run_id=writer.run_id,
            incident="INC-R",
            playbook={"id": "x", "sha256": hashlib.sha256(raw).hexdigest()},
        )
    )
    for step, record in records:
        writer.append(record, step=step)
    writer.close()
    return writer.root


def requested(request: str = "0123456789abcdef", **fields: Any) -> entries.ApprovalRequested:
    values: dict[str, Any] = {
        "request": request,
        "count": 1,
        "timeout_s": 1800,
        "until": "2026-12-01T10:30:00Z",
        "sts_url": "https://sts.eu-west-1.amazonaws.com",
        "sts_region": "eu-west-1",
        "preview": PREVIEW,
        "preview_sha256": approvals.preview_sha256(PREVIEW),
        **fields,
    }
    return entries.ApprovalRequested(**values)


def given(
    decision: str,
    reason: str | None,
    request: str = "0123456789abcdef",
    *,
    answered: str = "2026-12-01T10:05:00Z",
    sts_request_id: str = "req-1",
) -> entries.ApprovalGiven:
    return entries.ApprovalGiven(
        answer=f"{request}-0000000{len(reason or '') % 10}",
        request=request,
        decision=decision,
        identity={"arn": ARN, "account": "111122223333", "user_id": "AIDAEXAMPLE"},
        sts_request_id=sts_request_id,
        reason=reason,
        saw=approvals.preview_sha256(PREVIEW),
        answered=answered,
    )


def test_hostile_reasons_and_refusals_are_inert_and_bounded(tmp_path: Path) -> None:
    bundle = bundle_with(
        tmp_path,
        ("delete", requested(from_=["arn:aws:iam::111122223333:user/*"])),
        ("delete", entries.ApprovalRefused(answer="a-1", why=HOSTILE * 100)),
        ("delete", given("deny", HOSTILE)),
        ("delete", requested("fedcba9876543210")),
        ("delete", given("approve", "x" * 5000, "fedcba9876543210")),
    )
    md = report.render(bundle, fmt="md")
    html = report.render(bundle, fmt="html")

    section = md[md.index("## Second-person approvals") : md.index("## Open risks")]
    assert "asked 2 time(s); **approved**" in section
    rows = [line for line in section.splitlines() if line.startswith("| `delete`")]
    assert [row.split(" | ")[1:3] for row in rows] == [
        ["#1", "refused"],
        ["#1", "denied"],
        ["#2", "approved"],
    ]
    for row in rows:  # one table row each: no pipe, newline or markup breaks out
        assert row.count(" | ") == 7 and row.endswith(" |")
        assert "<script>" not in row and "[x](http" not in row and " **bold**" not in row
        assert "\x1b" not in row and "\u202e" not in row
    assert "\\x1b" in rows[1] and "\\u202e" in rows[1]  # shown, not obeyed
    assert rows[2].count("x") <= MAX_TEXT + 20  # the 5,000 characters cut
    assert len(rows[0]) < 2 * MAX_TEXT
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "\x1b" not in html and "\u202e" not in html
    assert f"<code>{ARN}</code>" in html


def test_a_run_that_never_asked_has_no_approvals_section(tmp_path: Path) -> None:
    bundle = bundle_with(tmp_path)
    assert "Second-person approvals" not in report.render(bundle, fmt="md")
    assert "Second-person approvals" not in report.render(bundle, fmt="html")


def section_of(text: str, start: str, end: str) -> str:
    return text[text.index(start) : text.index(end)]


def test_each_request_of_a_step_shows_its_own_outcome_and_answers(tmp_path: Path) -> None:
    """Approved, the AWS call failed, the retry asked again and timed out: the reader sees
    per request who answered (with the approver's own signed time and STS request id, to find
    their call in their CloudTrail) and what came of it, not only the last request."""
    bundle = bundle_with(
        tmp_path,
        ("delete", requested(from_=["arn:aws:iam::111122223333:user/*"])),
        (
            "delete",
            given("approve", "leaked", answered="2026-12-01T10:04:59Z", sts_request_id="sts-a"),
        ),
        (
            "delete",
            entries.StepFailed(
                error="KMSInternalException",
                action="kms.schedule-deletion",
                name="Delete",
                phase=None,
            ),
        ),
        ("delete", requested("fedcba9876543210", count=2, until="2026-12-01T11:30:00Z")),
        (
            "delete",
            entries.ApprovalTimedOut(
                request="fedcba9876543210", until="2026-12-01T11:30:00Z", approved=0, count=2
            ),
        ),
    )
    md = report.render(bundle, fmt="md")
    html = report.render(bundle, fmt="html")

    section = section_of(md, "## Second-person approvals", "## Open risks")
    assert "asked 2 time(s); **timed out**." in section
    assert (
        "  - Request #1: needed 1 approval(s) from arn:aws:iam::111122223333:user/\\*, "
        "until 2026-12-01T10:30:00Z: **approved**." in section
    )
    assert "  - Request #2: needed 2 approval(s), until 2026-12-01T11:30:00Z: **timed out**." in (
        section
    )
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| `delete`")]
    assert [(r[1], r[2], r[5]) for r in rows] == [
        ("#1", "approved", "2026-12-01T10:04:59Z<br>`sts-a`"),
        ("#2", "timed out", ""),
    ]
    assert rows[0][6] != "2026-12-01T10:04:59Z"  # "Recorded": the run's own time, apart
    assert "| Signed (UTC), STS request id | Recorded (UTC) |" in section
    part = section_of(html, "<h2>Second-person approvals</h2>", "<h2>Open risks</h2>")
    assert "asked 2 time(s); <strong>timed out</strong>" in part
    assert "Request #1: needed 1 approval(s)" in part and "<strong>approved</strong>" in part
    assert "Request #2: needed 2 approval(s), until 2026-12-01T11:30:00Z: <strong>timed out" in (
        part
    )
    assert "<td>#1</td><td>approved</td>" in part and "<td>#2</td><td>timed out</td>" in part
    assert "<td>2026-12-01T10:04:59Z<br><code>sts-a</code></td>" in part


def test_a_run_that_died_while_waiting_shows_not_decided_once_the_wait_is_over(
    tmp_path: Path,
) -> None:
    """kill -9 or a reboot while a step waits leaves no run-interrupted entry: a report
    rendered after the wait's end must not say the run is still waiting."""
    bundle = bundle_with(tmp_path, ("delete", requested(until="2026-12-01T10:30:00Z")))
    during = datetime(2026, 12, 1, 10, 29, tzinfo=timezone.utc)
    months_later = datetime(2027, 3, 1, 9, 0, tzinfo=timezone.utc)

    md = report.render(bundle, fmt="md", now=during)
    assert "asked 1 time(s); **waiting**." in md
    assert "until 2026-12-01T10:30:00Z: **waiting**." in md
    for fmt in ("md", "html"):
        later = report.render(bundle, fmt=fmt, now=months_later)
        assert "not decided (the run stopped while waiting)" in later
        assert "waiting**" not in later and "<strong>waiting</strong>" not in later

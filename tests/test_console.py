"""What the CLI draws: text from AWS never drives the terminal; the summary table fits."""

from __future__ import annotations

from pathlib import Path

import pytest

from kmsir.cli.console import ConsoleReporter, console, show_preview, summary_table
from kmsir.evidence.calls import Call
from kmsir.prompts import StepPreview
from kmsir.run.engine import RunResult, StepRecord

#: An OSC title change, a bell and a clear-screen, as a hostile key description might carry.
EVIL = "backup-sync\x1b]0;owned\x07\x1b[2J[bold red]x[/]"


def test_control_characters_from_aws_never_reach_the_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    show_preview(
        StepPreview(
            step_id="revoke",
            title=EVIL,
            action="kms.revoke-grants",
            phase="containment",
            position="6/12",
            does="Revoke grants",
            mutating=True,
            calls=(Call(service="kms", operation="RevokeGrant", params={"GrantId": EVIL}),),
            target=EVIL,
            state=EVIL,
            inverse="IRREVERSIBLE",
        )
    )
    ConsoleReporter().step("revoke", "Revoke", "succeeded", EVIL)
    ConsoleReporter().notice(EVIL)
    summary_table(RunResult(Path("b"), "succeeded", [StepRecord("revoke", "t", "failed", EVIL)]))
    shown = capsys.readouterr().err
    assert "\x1b" not in shown and "\x07" not in shown
    # shown, inert (each control character as its escape), the markup literal
    assert "backup-sync\\x1b]0;owned\\x07\\x1b[2J[bold red]x[/]" in shown


def test_the_summary_table_has_one_line_a_step_within_the_width(
    capsys: pytest.CaptureFixture[str],
) -> None:
    steps = [
        StepRecord("snapshot", "t", "succeeded", "a very long summary " * 20),
        StepRecord("revoke-outside-grants", "t", "skipped", "not approved"),
    ]
    summary_table(RunResult(Path("b"), "succeeded", steps))
    lines = capsys.readouterr().err.splitlines()
    rows = [line for line in lines if "│" in line and ("snapshot" in line or "revoke" in line)]
    assert len(rows) == 2
    assert all(len(line) <= console().width for line in lines)
    assert "revoke-outside-grants" in rows[1] and "not approved" in rows[1]

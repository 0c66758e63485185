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


def test_a_note_is_shown_whole_wrapped_at_a_narrow_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The summary table keeps one line a step: the line printed as the step ends carries
    all of it, down to the last sentence (a recovery note's uncovered replica)."""
    import io

    from rich.console import Console

    from kmsir.actions.human import NoteParams
    from kmsir.cli import console as drawing

    screen = io.StringIO()
    narrow = Console(file=screen, width=60, force_terminal=True, color_system=None)
    monkeypatch.setattr(drawing, "_console", [narrow])
    note = (
        "Key 21bade02-6a6a-4768-b2ed-66ffdcc99396 is now Disabled with 1 grant(s). " * 6
        + "The replica arn:aws:kms:us-east-1:123456789012:key/mrk-1 is NOT covered: disable it."
    )
    ConsoleReporter().step("recovery", "Hand over for recovery", "succeeded", note)
    lines = screen.getvalue().splitlines()
    assert len(lines) > 6 and all(len(line) <= 60 for line in lines)
    assert lines[0].startswith(" succeeded recovery: Key")
    assert all(line.startswith(" " * 11) and line[11] != " " for line in lines[1:])
    assert " ".join(" ".join(lines).split()) == f"succeeded recovery: {note}"
    # whatever a note holds is shown whole: the terminal's bound is the note's own
    limit = next(
        m.max_length for m in NoteParams.model_fields["text"].metadata if hasattr(m, "max_length")
    )
    assert limit <= drawing.MAX_SUMMARY

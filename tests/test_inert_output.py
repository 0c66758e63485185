"""What kmsir writes for people shows control characters and bidi overrides, never obeys them.

A playbook from a shared repository, a scenario or an AWS message may carry ``ESC[2J`` (clear
the screen), an OSC sequence (retitle the terminal, plant a hyperlink) or U+202E (reverse what
follows). ``plan``, ``validate`` and every error message quoting input show them as escapes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kmsir import inert

from .clikit import cli

#: A clear-screen, an OSC 0 title, an OSC 8 hyperlink, a C1 CSI and a right-to-left override.
HOSTILE = "\x1b[2J\x1b]0;owned\x07\x1b]8;;http://evil\x07x\x1b]8;;\x07\x9b1m\u202egnp.exe"
SHOWN = "\\x1b[2J\\x1b]0;owned\\x07\\x1b]8;;http://evil\\x07x\\x1b]8;;\\x07\\x9b1m\\u202egnp.exe"


def _raw_controls(text: str) -> list[str]:
    return [c for c in text if inert.has_hidden(c)]


def test_visible_shows_each_control_as_its_escape_and_keeps_tabs_and_newlines() -> None:
    assert inert.visible(HOSTILE) == SHOWN
    assert inert.visible("a\tb\nc\rd\u2066e") == "a\tb\nc\\x0dd\\u2066e"
    assert not inert.has_hidden(SHOWN)


def _playbook(tmp_path: Path, title: str, action: str = "kms.snapshot") -> Path:
    path = tmp_path / "hostile.yaml"
    path.write_text(
        json.dumps(
            {
                "id": "hostile",
                "title": title,
                "steps": [
                    {"id": "snap", "name": title, "action": action, "with": {"key": "alias/x"}}
                ],
            }
        )
    )
    return path


def test_plan_shows_hostile_playbook_text_inert(tmp_path: Path) -> None:
    done = cli("plan", _playbook(tmp_path, f"Title {HOSTILE}"))
    assert done.exit_code == 0, done.stderr
    assert _raw_controls(done.output) == []
    assert f"Title {SHOWN}" in done.stdout


def test_validate_errors_quote_hostile_text_inert(tmp_path: Path) -> None:
    done = cli("validate", _playbook(tmp_path, "t", action=f"kms.{HOSTILE}"))
    assert done.exit_code == 2
    assert _raw_controls(done.output) == []
    (line,) = done.stderr.strip().splitlines()
    assert "unknown action" in line and "\\x1b[2J" in line


@pytest.mark.parametrize(
    "args",
    [
        ["run", "kms-key-compromise", "-i", f"key=alias/{HOSTILE}", "--sandbox", "rogue-grant"],
        ["run", "kms-key-compromise", "--incident", f"INC{HOSTILE}"],
        ["plan", "kms-key-compromise", "-i", f"nope{HOSTILE}=1"],
        ["cloudtrail", "scan", ".", "--key", HOSTILE],
    ],
    ids=["input value", "incident id", "input name", "scan key"],
)
def test_error_messages_quoting_input_show_it_inert(args: list[str], tmp_path: Path) -> None:
    done = cli(*args, "--evidence-dir", tmp_path) if args[0] == "run" else cli(*args)
    assert done.exit_code == 2
    assert _raw_controls(done.output) == []
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("kmsir: error: ") and "\\x1b" in line

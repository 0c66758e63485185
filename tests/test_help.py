"""``--help`` reads as a person would write the command: the value names, the choices, an
example per command, commands in the order a responder meets them."""

from __future__ import annotations

import re

import pytest

from .clikit import cli

COMMANDS = [
    "run", "resume", "status", "rollback", "plan", "validate", "report", "verify", "export",
    "audit", "demo", "scenarios", "actions", "schema", "permissions",
]  # fmt: skip
SUBCOMMANDS = [("sandbox", "serve"), ("cloudtrail", "scan")]


def listed(help_text: str) -> list[str]:
    section = help_text.split("Commands:", 1)[1]
    return re.findall(r"^  (\S+)", section, flags=re.M)


def test_commands_are_listed_in_the_order_a_responder_meets_them() -> None:
    shown = listed(cli("--help").stdout)
    first = ["run", "resume", "status", "rollback", "plan", "validate", "report", "verify"]
    assert shown[: len(first)] == first
    assert shown.index("export") < shown.index("audit") < shown.index("cloudtrail")
    assert shown.index("cloudtrail") < shown.index("sandbox") < shown.index("demo")
    assert set(COMMANDS) <= set(shown)


@pytest.mark.parametrize("command", [*([c] for c in COMMANDS), *map(list, SUBCOMMANDS)], ids=str)
def test_each_command_s_help_names_values_as_a_person_writes_them(command: list[str]) -> None:
    text = cli(*command, "--help", env={"COLUMNS": "120"}).stdout
    assert text.startswith(f"Usage: kmsir {' '.join(command)} ")
    # typer's defaults: {PLAYBOOK} for a required argument, <str>, <path>, <list[Path]>
    assert not re.search(r"\{[A-Z]|<(str|path|int|list\[|Path)", text), text
    assert f"Example: kmsir {' '.join(command)}" in " ".join(text.split())


def test_choices_are_shown_where_there_are_few() -> None:
    assert "--format md|html" in cli("report", "--help").stdout
    assert "--format table|json|sarif" in cli("audit", "--help").stdout
    assert "--format table|json " in cli("status", "--help").stdout


def test_paths_and_playbooks_read_as_such() -> None:
    assert "Usage: kmsir validate [OPTIONS] FILE..." in cli("validate", "--help").stdout
    run = cli("run", "--help", env={"COLUMNS": "120"}).stdout
    assert "Usage: kmsir run [OPTIONS] PLAYBOOK" in run
    assert "--evidence-dir DIR" in run and "--answers FILE" in run and "--start-at STEP" in run

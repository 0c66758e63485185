"""What the responder reads before deciding: a step's details, the top findings."""

from __future__ import annotations

from pathlib import Path

from kmsir import actions
from kmsir.playbook.model import Step
from kmsir.run.approval import step_preview

from .clikit import cli


def test_details_show_every_parameter_the_step_gives_and_only_its_path_s_permissions() -> None:
    collect = actions.registry()["cloudtrail.collect"]
    # `source: lookup` and `since` equal their defaults: the details still show them
    params = collect.params.model_validate({"key": "alias/x", "source": "lookup", "since": "7d"})
    shown = step_preview(Step(id="collect", action=collect.name), collect, params, None, "2/9")
    details = "\n".join(shown.details)
    assert '    source: "lookup"' in details
    assert '    since: "7d"' in details
    assert "workgroup" not in details  # a parameter the step does not give is not listed
    permissions = next(line for line in shown.details if "IAM permissions" in line)
    assert "cloudtrail:LookupEvents" in permissions
    assert "s3:" not in permissions and "athena:" not in permissions  # not this path's


def test_the_findings_step_shows_the_top_findings_worst_first(tmp_path: Path) -> None:
    done = cli("demo", "--evidence-dir", tmp_path / "ev", env={"COLUMNS": "160"})
    assert done.exit_code == 0, done.stderr
    lines = done.stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if "Top findings (7 of 7, worst first)" in line)
    header = lines[start + 1]
    for column in ("severity", "title", "principal", "first seen"):
        assert column in header
    rows = [line.split()[0] for line in lines[start + 3 : start + 10]]
    worst_first = ["critical", "high", "medium", "low", "info"]
    assert rows[0] == "high" and rows == sorted(rows, key=worst_first.index)
    table = "\n".join(lines[start : start + 10])
    assert "Grant created for an outside account" in table
    assert "assumed-role/ci-deploy/build-4821" in table


def test_plan_shows_every_parameter_and_only_the_permissions_of_the_path() -> None:
    shown = cli("plan", "kms-key-compromise", "-i", "key=alias/payments").stdout
    collect = shown.split(" 2. collect", 1)[1].split("\n 3. ", 1)[0]
    assert "    with source: lookup" in collect
    assert "    with since: 7d" in collect  # the input, filled in
    assert "    with aliases: {{ steps.snapshot.aliases" in collect  # decided at run time
    iam = next(line for line in collect.splitlines() if line.startswith("    IAM: "))
    assert "cloudtrail:LookupEvents" in iam and "s3:" not in iam

"""The command line as a user meets it: exit codes, one-line errors, the demo end to end.

The demo runs as a process of its own (``python -m kmsir``), as do the help's import checks;
the other commands run in process (``clikit.cli``: the same exit code, stdout and stderr,
without a second of imports for each).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kmsir.evidence import integrity

from .clikit import Ran, cli
from .conftest import PLAYBOOKS

HEAVY = ("boto3", "botocore", "moto", "jinja2", "pydantic", "questionary")


def kmsir(
    *args: str, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kmsir", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        input=stdin,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )


def assert_no_traceback(result: subprocess.CompletedProcess[str] | Ran) -> None:
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("command", [["kmsir"], [sys.executable, "-m", "kmsir"]])
def test_help_is_fast_and_imports_nothing_heavy(command: list[str]) -> None:
    import shutil

    exe = shutil.which(command[0]) if command[0] == "kmsir" else command[0]
    if exe is None:
        exe = str(Path(sys.executable).parent / "kmsir")
    result = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            *([exe] if command[0] == "kmsir" else command[1:]),
            "--help",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Usage:" in result.stdout and "demo" in result.stdout
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert not imported & set(HEAVY), imported & set(HEAVY)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "id: t\ntitle: T\nsteps:\n  - {id: a, action: kms.disabel-key, with: {key: alias/x}}\n",
            ":4:21: step 'a': unknown action 'kms.disabel-key' (did you mean 'kms.disable-key'?)",
        ),
        (
            "title: T\nsteps:\n  - {id: a, action: note, with: {text: x}}\n",
            ":1:1: missing required field 'id'",
        ),
        (
            "id: t\ntitle: T\nsteps:\n  - {id: a, action: note, when: 'a ==', with: {text: x}}\n",
            ":4:33: step 'a': when: invalid expression:",
        ),
        (
            "id: t\ntitle: T\nsteps:\n  - {id: a, action: note, with: {text: x}\n",
            ":5:1: YAML syntax error:",
        ),
        (
            "id: t\ntitle: T\nsteps:\n"
            "  - {id: a, action: note, with: {text: \"{{ ''.__class__.__mro__ }}\"}}\n",
            "Python internals are not reachable from templates",
        ),
    ],
)
def test_validate_reports_one_clear_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = cli("validate", path)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{path}:") and expected in lines[0]
    assert_no_traceback(result)


def test_validate_shipped_playbooks() -> None:
    result = cli("validate", *PLAYBOOKS.glob("*.yaml"))
    assert result.exit_code == 0, result.stderr
    assert "valid" in result.stdout


def test_demo_end_to_end(tmp_path: Path) -> None:
    result = kmsir("demo", "--evidence-dir", str(tmp_path / "ev"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report_path = Path(result.stdout.strip())
    bundle = report_path.parent
    assert report_path.is_file() and bundle.parent.name == "demo-rogue-grant"

    report = report_path.read_text()
    journal = [json.loads(line) for line in (bundle / "journal.jsonl").read_text().splitlines()]
    revoked = next(e for e in journal if e["step"] == "revoke" and e["type"] == "step-succeeded")
    rogue_id = revoked["data"]["outputs"]["revoked"][0]
    assert f"Revoked grants (step `revoke`): `{rogue_id}`" in report
    assert "**SIMULATED**" in report
    assert "| State | Enabled | Disabled |" in report
    disabled = next(e for e in journal if e["step"] == "disable" and e["type"] == "step-succeeded")
    assert disabled["data"]["after"]["state"] == "Disabled"

    verified = cli("verify", bundle)
    assert verified.exit_code == 0 and verified.stdout.startswith("intact:")

    target = bundle / "artifacts" / "07-revoke" / "grants-before.json"
    data = bytearray(target.read_bytes())
    data[10] ^= 1
    target.write_bytes(bytes(data))
    tampered = cli("verify", bundle)
    assert tampered.exit_code == 1
    assert "TAMPERED: artifacts/07-revoke/grants-before.json: content changed" in tampered.stdout

    rerendered = cli("report", bundle, "--out", tmp_path / "again.md")
    assert rerendered.exit_code == 0
    assert (tmp_path / "again.md").read_text() == report


def test_run_in_sandbox_with_answers_file(tmp_path: Path) -> None:
    answers = tmp_path / "answers.yaml"
    # revoke the grants, keep the key enabled: disable is skipped (by its `when`), so the
    # scenario's attacker, who strikes once the key is disabled, never does
    answers.write_text("decide: revoke-grants\nrevoke: approve\nactors: none\n")
    result = cli(
        "run",
        "kms-key-compromise",
        "--sandbox",
        "rogue-grant",
        "--answers",
        answers,
        "--incident",
        "INC-42",
        "--evidence-dir",
        tmp_path / "ev",
    )
    assert result.exit_code == 0, result.stderr
    bundle = Path(result.stdout.strip()).parent
    assert integrity.verify(bundle) == []
    entries = [json.loads(line) for line in (bundle / "journal.jsonl").read_text().splitlines()]
    steps = {e["step"]: e for e in entries if e["type"] in ("step-succeeded", "step-skipped")}
    assert steps["revoke"]["type"] == "step-succeeded"
    assert steps["disable"]["type"] == "step-skipped"
    assert not [e for e in entries if e["type"] == "inject"]
    assert steps["recheck"]["data"]["outputs"]["state"] == "Enabled"
    assert steps["cancel"]["type"] == "step-skipped"  # nothing was scheduled to cancel


def test_run_without_answer_or_terminal_names_the_missing_answer(tmp_path: Path) -> None:
    result = cli(
        "run",
        "kms-key-compromise",
        "--sandbox",
        "rogue-grant",
        "--evidence-dir",
        tmp_path / "ev",
        stdin="",
    )
    assert result.exit_code == 1
    assert "no answer for 'decide'" in result.stderr
    assert_no_traceback(result)
    (bundle,) = [p.parent for p in (tmp_path / "ev").glob("*/*/journal.jsonl")]
    assert integrity.verify(bundle) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", "kms-key-compromise", "--sandbox", "rogue-grant", "--incident", "../../etc"],
            "incident id '../../etc' is not allowed",
        ),
        (["run", "nope.yaml"], "playbook 'nope.yaml': no such file"),
        (
            ["run", "kms-key-compromise", "--sandbox", "rogue-grant", "-i", "key=payments"],
            "input 'key': 'payments' is not a KMS key id",
        ),
        (["demo", "--scenario", "nope"], "no scenario 'nope'"),
        (["verify", "/nonexistent/bundle"], "/nonexistent/bundle: no such file or directory"),
    ],
)
def test_bad_usage_exits_2_with_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = cli(*args, "--evidence-dir", tmp_path) if args[0] != "verify" else cli(*args)
    assert result.exit_code == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert_no_traceback(result)
    assert not list(tmp_path.rglob("journal.jsonl"))


def test_demo_leaves_the_sandbox_world_contained(rogue_grant_result: tuple) -> None:  # type: ignore[type-arg]
    sandbox_state, _ = rogue_grant_result
    assert sandbox_state["grants"] == [sandbox_state["app_grant"]]
    assert sandbox_state["state"] == "Disabled"


def test_on_error_ask_skip_still_reports(tmp_path: Path) -> None:
    playbook = tmp_path / "oe.yaml"
    playbook.write_text(
        "id: oe\ntitle: On error\nsteps:\n"
        "  - {id: a, action: kms.disable-key, on_error: ask, with: {key: alias/nope}}\n"
        "  - {id: n, action: note, with: {text: carried on}}\n"
    )
    answers = tmp_path / "answers.yaml"
    answers.write_text("a.on-error: skip\n")
    result = cli(
        "run",
        playbook,
        "--sandbox",
        "rogue-grant",
        "--answers",
        answers,
        "--evidence-dir",
        tmp_path / "ev",
    )
    assert result.exit_code == 0, result.stderr
    report = Path(result.stdout.strip()).read_text()
    assert "AWS NotFoundException" in report
    assert "on error -\\> skip (answers file)" in report


def test_check_mode_in_the_sandbox_is_simulated_and_changes_nothing(tmp_path: Path) -> None:
    answers = tmp_path / "answers.yaml"
    answers.write_text("decide: revoke-grants-and-disable\nactors: revoke-sessions\n")
    result = cli(
        "run",
        "kms-key-compromise",
        "--sandbox",
        "rogue-grant",
        "--check",
        "--answers",
        answers,
        "--evidence-dir",
        tmp_path / "ev",
    )
    assert result.exit_code == 0, result.stderr
    bundle = Path(result.stdout.strip()).parent
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert (manifest["mode"], manifest["simulated"]) == ("check", True)
    entries = [json.loads(line) for line in (bundle / "journal.jsonl").read_text().splitlines()]
    sent = {e["data"]["operation"] for e in entries if e["type"] == "api-call"}
    assert not sent & {"RevokeGrant", "DisableKey", "PutRolePolicy"}
    after = next(e for e in entries if e["step"] == "after" and e["type"] == "step-succeeded")
    assert after["data"]["outputs"]["state"] == "Enabled"
    assert len(after["data"]["outputs"]["external_grant_ids"]) == 1
    report = Path(result.stdout.strip()).read_text()
    assert "**CHECK MODE**" in report and "**SIMULATED**" in report


def test_a_reader_that_goes_away_stops_the_listing_quietly() -> None:
    """`kmsir scenarios | head -0`: no internal error when the reader has closed the pipe."""
    listing = subprocess.Popen(
        [sys.executable, "-m", "kmsir", "scenarios"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert listing.stdout is not None and listing.stderr is not None
    listing.stdout.close()  # gone before the listing's first line (Python starts slower)
    stderr = listing.stderr.read().decode()
    assert listing.wait(timeout=60) == 141
    assert stderr == ""

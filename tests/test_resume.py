"""Resume: an interrupted or failed run continues in its own bundle, never re-sending a change."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from kmsir import actions, cli
from kmsir.actions.kms_lifecycle import DisableKey
from kmsir.evidence import integrity
from kmsir.evidence.journal import BundleWriter
from kmsir.playbook.model import LoadedPlaybook
from kmsir.prompts import NoPrompter, ScriptedPrompter
from kmsir.run import resume as resuming
from kmsir.run.engine import Engine, RunOptions
from kmsir.sandbox import Sandbox

from .conftest import PLAYBOOKS, bundles, load_playbook, run_playbook
from .journalkit import run_started

CONTAIN = """\
id: contain
title: Contain a key
inputs:
  key: {type: kms-key, required: true}
steps:
  - {id: disable, action: kms.disable-key, with: {key: "{{ inputs.key }}"}}
  - {id: tag, action: kms.tag-key, with: {key: "{{ inputs.key }}"}}
  - {id: done, action: note, with: {text: "contained {{ steps.disable.key_id }}"}}
"""


def journal(bundle: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (bundle / "journal.jsonl").read_text().splitlines()]


def write_playbook(tmp_path: Path, text: str = CONTAIN) -> LoadedPlaybook:
    path = tmp_path / "contain.yaml"
    path.write_text(text)
    return load_playbook(path)


def resume(bundle: Path, clients: Any, answers: dict[str, Any]) -> Any:
    state = resuming.load(bundle)
    engine = Engine(
        actions=actions.registry(),
        clients=clients,
        prompter=ScriptedPrompter(answers, source="test answers", fallback=NoPrompter()),
    )
    loaded = load_playbook(bundle / "playbook.yaml")
    options = RunOptions(
        incident_id=state.meta.incident, evidence_dir=bundle.parent.parent, mode="sandbox"
    )
    return engine.resume(loaded, state, options)


@pytest.fixture
def interrupted(
    rogue_grant: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Sandbox]:
    """A run stopped by Ctrl-C right after AWS disabled the key, before the step's outcome."""
    original = DisableKey.run

    def disable_then_interrupt(self: DisableKey, ctx: Any, params: Any) -> Any:
        original(self, ctx, params)
        raise KeyboardInterrupt

    monkeypatch.setattr(DisableKey, "run", disable_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_playbook(
            write_playbook(tmp_path),
            rogue_grant.client_factory(),
            tmp_path / "ev",
            inputs={"key": "alias/payments-prod"},
            answers={"disable": "approve"},
        )
    monkeypatch.setattr(DisableKey, "run", original)
    (bundle,) = bundles(tmp_path / "ev" / "INC-test")
    return bundle, rogue_grant


@pytest.fixture
def failed(rogue_grant: Sandbox, tmp_path: Path) -> tuple[Path, Sandbox]:
    """A run that failed at its first step (its key's alias did not exist), cause then fixed."""
    first = run_playbook(
        write_playbook(tmp_path),
        rogue_grant.client_factory(),
        tmp_path / "ev",
        inputs={"key": "alias/not-yet"},
        answers={"disable": "approve"},
    )
    assert first.status == "failed" and "NotFound" in str(first.error)
    rogue_grant.session().client("kms").create_alias(
        AliasName="alias/not-yet", TargetKeyId=rogue_grant.keys["payments"]["id"]
    )
    return first.bundle, rogue_grant


def test_ctrl_c_leaves_a_verifiable_unfinished_bundle(interrupted: tuple[Path, Sandbox]) -> None:
    bundle, _ = interrupted
    checked = integrity.check(bundle)
    assert checked.problems == [] and not checked.finished
    assert journal(bundle)[-1]["type"] == "run-interrupted"
    state = resuming.load(bundle)
    assert state.steps["disable"].in_flight
    assert [c.operation for c in state.steps["disable"].carried.sent] == ["DisableKey"]


def test_in_flight_change_is_rechecked_and_its_decision_not_asked_again(
    interrupted: tuple[Path, Sandbox],
) -> None:
    bundle, sandbox = interrupted
    # "disable" is not answered: asking again would fail the run with MissingAnswer
    result = resume(bundle, sandbox.client_factory(), {"tag": "approve"})
    assert result.status == "succeeded", result.error
    entries = journal(bundle)
    resumed_at = next(e["seq"] for e in entries if e["type"] == "run-resumed")
    after = entries[resumed_at:]
    assert not [e for e in after if e["data"].get("operation") == "DisableKey"]
    assert not [e for e in after if e["type"] == "decision" and e["step"] == "disable"]
    outcome = next(e for e in after if e["type"] == "step-succeeded" and e["step"] == "disable")
    assert outcome["data"]["status"] == "succeeded" and outcome["data"]["rechecked"] is True
    assert outcome["data"]["before"]["state"] == "Enabled"
    assert outcome["data"]["after"]["state"] == "Disabled"
    note = next(e for e in after if e["type"] == "note")
    assert note["data"]["text"] == f"contained {outcome['data']['outputs']['key_id']}"
    assert integrity.check(bundle).problems == []
    assert json.loads((bundle / "manifest.json").read_text())["status"] == "succeeded"
    custody = json.loads((bundle / "manifest.json").read_text())["custody"]
    assert [c["event"] for c in custody] == ["started", "resumed"]


def test_resume_refuses_an_altered_bundle(interrupted: tuple[Path, Sandbox]) -> None:
    bundle, _ = interrupted
    artifact = next((bundle / "artifacts").rglob("*.json"), None)
    target = artifact or bundle / "playbook.yaml"
    target.write_bytes(target.read_bytes() + b" ")
    result = CliRunner().invoke(cli.app, ["resume", str(bundle)])
    assert result.exit_code == 1
    assert "TAMPERED: not resumed (altered evidence is never built on)" in result.output


def test_a_failed_run_resumes_at_the_failed_step(failed: tuple[Path, Sandbox]) -> None:
    bundle, rogue_grant = failed  # the responder fixed the cause (the alias) and resumes
    kms = rogue_grant.session().client("kms")
    second = resume(bundle, rogue_grant.client_factory(), {"disable": "approve", "tag": "approve"})
    assert second.status == "succeeded", second.error
    state = kms.describe_key(KeyId="alias/not-yet")["KeyMetadata"]["KeyState"]
    assert state == "Disabled"
    entries = journal(bundle)
    # the first attempt failed resolving the key for its confirmation, before it started
    steps = [e["type"] for e in entries if e["step"] == "disable" and e["type"].startswith("step-")]
    assert steps == ["step-failed", "step-started", "step-succeeded"]
    assert integrity.check(bundle).problems == []


def test_an_earlier_manifest_is_a_note_until_the_resumed_run_finishes(
    failed: tuple[Path, Sandbox], monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle, rogue_grant = failed
    # the resumed run is itself interrupted, with the first finish's manifest still there
    monkeypatch.setattr(DisableKey, "run", lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        resume(bundle, rogue_grant.client_factory(), {"disable": "approve"})
    checked = integrity.check(bundle)
    assert checked.problems == []
    assert any("from before the resume" in n for n in checked.notes)
    # cutting the resume's lines off again is still caught by the anchor of the first finish
    lines = (bundle / "journal.jsonl").read_bytes().splitlines(keepends=True)
    anchored = json.loads((bundle / "manifest.json").read_text())["journal"]["entries"]
    (bundle / "journal.jsonl").write_bytes(b"".join(lines[: anchored - 1]))
    assert any("truncated" in p for p in integrity.check(bundle).problems)


def test_resume_of_a_finished_run_says_so(demo_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(demo_bundle, copy)
    result = CliRunner().invoke(cli.app, ["resume", str(copy)])
    assert result.exit_code == 0
    assert "already finished (succeeded); nothing to resume" in result.output


def test_start_at_is_refused_while_a_run_of_the_playbook_is_unfinished(tmp_path: Path) -> None:
    loaded = write_playbook(tmp_path)
    unfinished = BundleWriter.create(tmp_path / "ev", "INC-test", playbook_raw=loaded.raw)
    unfinished.append(run_started(playbook={"id": "contain", "sha256": loaded.sha256}))
    unfinished.close()
    bundle = unfinished.root
    args = [
        "run",
        str(tmp_path / "contain.yaml"),
        "--sandbox",
        "rogue-grant",
        "--incident",
        "INC-test",
        "--evidence-dir",
        str(tmp_path / "ev"),
        "--start-at",
        "tag",
        "--yes",
    ]
    refused = CliRunner().invoke(cli.app, args)
    assert refused.exit_code == 2
    assert f"kmsir resume {bundle}" in refused.output
    forced = CliRunner().invoke(cli.app, [*args, "--force-start-at"])
    # it ran from "tag"; the last step needs the skipped step's output and says so
    assert forced.exit_code == 1, forced.output
    assert "tagged {'kmsir-incident': 'INC-test'}" in " ".join(forced.output.split())
    (started,) = [r for r in bundles(tmp_path / "ev" / "INC-test") if r != bundle]
    skipped = next(e for e in journal(started) if e["step"] == "disable")
    assert skipped["type"] == "step-skipped" and skipped["data"]["reason"] == "before --start-at"


def test_ctrl_c_exits_130_and_the_run_resumes(tmp_path: Path) -> None:
    # the pause counts from when the step starts (not from now): however slowly a busy
    # machine starts the run, the interrupt lands inside it
    (tmp_path / "pb.yaml").write_text(
        "id: pause\ntitle: Pause\nsteps:\n"
        "  - {id: first, action: note, with: {text: before the pause}}\n"
        "  - {id: pause, action: wait, with: {duration: 8s}}\n"
        "  - {id: last, action: note, with: {text: after the pause}}\n"
    )
    command = [sys.executable, "-m", "kmsir"]
    run = subprocess.Popen(
        [*command, "run", "pb.yaml", "--sandbox", "rogue-grant", "--incident", "INC-c"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    journal_path = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = list((tmp_path / "evidence" / "INC-c").glob("*/journal.jsonl"))
        if found and any(
            e["type"] == "step-started" and e["step"] == "pause" for e in journal(found[0].parent)
        ):
            journal_path = found[0]
            break
        time.sleep(0.1)
    assert journal_path is not None, "the run never reached the wait step"
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    bundle = journal_path.parent
    # how to go on, said as the run stops: where the evidence is, the exact command
    assert f"continue with: kmsir resume {bundle.resolve()}" in stderr
    assert journal(bundle)[-1]["type"] == "run-interrupted"
    verified = subprocess.run([*command, "verify", str(bundle)], capture_output=True, text=True)
    # consistent, but nothing anchors the end of an unfinished run: never called intact
    assert verified.returncode == 4, verified.stdout
    assert verified.stdout.startswith(f"unproven: consistent up to entry {len(journal(bundle))}")
    resumed = subprocess.run(
        [*command, "resume", str(bundle)], capture_output=True, text=True, cwd=tmp_path
    )
    assert resumed.returncode == 0, resumed.stderr
    notes = [e["data"]["text"] for e in journal(bundle) if e["type"] == "note"]
    assert notes == ["before the pause", "after the pause"]
    assert integrity.check(bundle).problems == []


def test_partly_revoked_grants_are_never_revoked_twice(tmp_path: Path) -> None:
    """Killed after AWS revoked the first of two outside grants, before it was journaled."""
    scenario = yaml.safe_load((PLAYBOOKS / "scenarios" / "rogue-grant.yaml").read_text())
    scenario["grants"]["rogue2"] = {**scenario["grants"]["rogue"], "name": "backup-sync-2"}
    (tmp_path / "two-rogues.yaml").write_text(yaml.safe_dump(scenario))
    (tmp_path / "answers.yaml").write_text(yaml.safe_dump(scenario["answers"]))
    crashkit = Path(__file__).with_name("crashkit.py")
    env = {**os.environ, "CRASHKIT_CALLS": str(tmp_path / "calls.jsonl")}
    args = [sys.executable, str(crashkit)]
    run = [
        *args,
        "run",
        "kms-key-compromise",
        "--sandbox",
        "two-rogues.yaml",
        "--answers",
        "answers.yaml",
        "--incident",
        "INC-2",
    ]
    killed = subprocess.run(
        run,
        cwd=tmp_path,
        env={**env, "CRASHKIT_KILL": "call:1"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert killed.returncode == -9
    (bundle,) = bundles(tmp_path / "evidence" / "INC-2")
    resumed = subprocess.run(
        [*args, "resume", str(bundle)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    sent = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    revoked = [params["GrantId"] for operation, params in sent if operation == "RevokeGrant"]
    assert len(revoked) == 2 and len(set(revoked)) == 2
    outcome = next(
        e
        for e in reversed(journal(bundle))
        if e["type"] == "step-succeeded" and e["step"] == "revoke"
    )
    assert sorted(outcome["data"]["outputs"]["revoked"]) == sorted(revoked)
    assert outcome["data"]["outputs"]["already_gone"] == []
    assert len(outcome["data"]["before"]["grants"]) == 3
    assert integrity.check(bundle).problems == []


def test_resume_refuses_while_another_process_writes_the_bundle(tmp_path: Path) -> None:
    loaded = write_playbook(tmp_path)
    running = BundleWriter.create(tmp_path / "ev", "INC-test", playbook_raw=loaded.raw)
    running.append(run_started(playbook={"id": "contain", "sha256": loaded.sha256}))
    result = CliRunner().invoke(cli.app, ["resume", str(running.root)])
    assert result.exit_code == 1
    assert "another kmsir process is still writing this bundle" in result.output
    running.close()


def test_planted_files_in_a_finished_bundle_are_tampering(
    demo_bundle: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(demo_bundle, copy)
    lines = len((copy / "journal.jsonl").read_text().splitlines())
    (copy / "quarantine").mkdir()
    (copy / "quarantine" / f"journal-line-{lines + 1}.torn").write_text("payload")
    (copy / "artifacts" / "01-snapshot" / ".tmp-key.json-deadbeef").write_text("fake")
    problems = integrity.check(copy).problems
    assert (
        f"quarantine/journal-line-{lines + 1}.torn: extra file, not recorded in the journal"
        in problems
    )
    assert (
        "artifacts/01-snapshot/.tmp-key.json-deadbeef: extra file, not recorded in the journal"
        in problems
    )
    (copy / "quarantine" / f"journal-line-{lines + 1}.torn").unlink()
    (copy / "artifacts" / "01-snapshot" / ".tmp-key.json-deadbeef").unlink()
    (copy / "artifacts" / "torn tail.txt").write_text("x")  # no way past resume's check
    refused = CliRunner().invoke(cli.app, ["resume", str(copy)])
    assert refused.exit_code == 1 and "TAMPERED" in refused.output


def test_a_resumed_run_must_keep_its_manifest(failed: tuple[Path, Sandbox]) -> None:
    bundle, rogue_grant = failed
    assert (
        resume(
            bundle, rogue_grant.client_factory(), {"disable": "approve", "tag": "approve"}
        ).status
        == "succeeded"
    )
    # cut back to the first finish and delete the manifest: the resume's trace remains
    lines = (bundle / "journal.jsonl").read_bytes().splitlines(keepends=True)
    resumed_at = next(n for n, line in enumerate(lines) if b'"type":"run-resumed"' in line)
    (bundle / "journal.jsonl").write_bytes(b"".join(lines[: resumed_at + 1]))
    (bundle / "manifest.json").unlink()
    assert (
        "manifest.json: missing (the run finished once, so it was written)"
        in integrity.check(bundle).problems
    )


def test_a_run_killed_writing_its_first_line_has_nothing_to_resume(tmp_path: Path) -> None:
    loaded = write_playbook(tmp_path)
    died = BundleWriter.create(tmp_path / "ev", "INC-test", playbook_raw=loaded.raw)
    died.close()
    (died.root / "journal.jsonl").write_bytes(b'{"data":{"host":"x"')
    checked = integrity.check(died.root)
    assert checked.problems == [checked.torn_tail]
    result = CliRunner().invoke(cli.app, ["resume", str(died.root)])
    assert result.exit_code == 2 and "nothing to resume" in result.output


ON_ERROR = """id: on-error
title: On error
inputs:
  key: {type: kms-key, required: true}
steps:
  - {id: disable, action: kms.disable-key, on_error: ASK, with: {key: "{{ inputs.key }}"}}
  - {id: done, action: note, with: {text: done}}
"""


@pytest.mark.parametrize(
    ("on_error", "cut_after"), [("ask", "decision"), ("continue", "step-failed")]
)
def test_an_on_error_outcome_survives_a_crash_right_after_it(
    on_error: str, cut_after: str, rogue_grant: Sandbox, tmp_path: Path
) -> None:
    result = run_playbook(
        write_playbook(tmp_path, ON_ERROR.replace("ASK", on_error)),
        rogue_grant.client_factory(),
        tmp_path / "ev",
        inputs={"key": "alias/missing"},
        answers={"disable.on-error": "skip"},
    )
    # the process died right after the answer (or the failure) was journaled
    lines = (result.bundle / "journal.jsonl").read_bytes().splitlines(keepends=True)
    last = max(n for n, line in enumerate(lines) if f'"type":"{cut_after}"'.encode() in line)
    (result.bundle / "journal.jsonl").write_bytes(b"".join(lines[: last + 1]))
    for derived in ("manifest.json", "report.md"):
        (result.bundle / derived).unlink(missing_ok=True)
    # nothing is answered now: asking again, or retrying the failed step, would show
    again = resume(result.bundle, rogue_grant.client_factory(), {})
    entries = journal(result.bundle)
    resumed_at = next(e["seq"] for e in entries if e["type"] == "run-resumed")
    after = [e for e in entries[resumed_at:] if e["step"] == "disable"]
    if on_error == "ask":
        assert again.status == "succeeded"
        assert [e["type"] for e in after] == ["step-skipped"]
    else:
        assert after == [] and again.status == "failed"
    assert any(e["type"] == "note" for e in entries[resumed_at:])
    assert integrity.check(result.bundle).problems == []

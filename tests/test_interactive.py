"""The choices before and after each step, answered from an answers file: run, skip with a
reason, a note, abort; after a failure, an input corrected and the step retried."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kmsir import actions, report
from kmsir.evidence import integrity
from kmsir.evidence.bundle import JOURNAL
from kmsir.prompts import Answer, NoPrompter, ScriptedPrompter, StepPreview
from kmsir.run import resume as resuming
from kmsir.run.engine import Engine, RunOptions, RunResult
from kmsir.sandbox import Sandbox
from kmsir.sandbox import scenario as scenarios
from tests.journalkit import journal_lines

from .conftest import PLAYBOOKS, bundles, load_playbook, run_playbook

DELETION = PLAYBOOKS / "kms-key-deletion-response.yaml"
ANSWERS = scenarios.load("ransom-deletion").answers


class Attended(NoPrompter):
    """A person is at the terminal but answers nothing here: only the answers file does.
    A failed step is then offered for retry, as at a real terminal."""

    interactive = True


def _entries(bundle: Path) -> list[dict[str, Any]]:
    return journal_lines(bundle / JOURNAL)


def _deletion_run(
    evidence_dir: Path, answers: dict[str, Any], *, key: str | None = None, attended: bool = False
) -> tuple[RunResult, str]:
    """ransom-deletion's playbook in its sandbox with ``answers`` (a person "at the terminal"
    when ``attended``); the result and the key's state afterwards."""
    world = scenarios.load("ransom-deletion")
    fallback = Attended() if attended else None
    with Sandbox(world) as sandbox:
        result = run_playbook(
            load_playbook(DELETION),
            sandbox.client_factory(),
            evidence_dir,
            inputs={**world.inputs, **({"key": key} if key else {})},
            prompter=ScriptedPrompter(answers, source="answers file", fallback=fallback),
            scenario=world.id,
        )
        kms = sandbox.session().client("kms")
        state = str(kms.describe_key(KeyId="alias/orders-db")["KeyMetadata"]["KeyState"])
    return result, state


def test_a_read_only_step_is_skipped_with_its_reason_and_a_note_goes_on_record(
    tmp_path: Path,
) -> None:
    answers = {
        **ANSWERS,
        "collect": {"decision": "skip", "reason": "trail already exported to the SIEM"},
        "cancel": {"decision": "approve", "note": "CAB emergency approval 7731"},
    }
    result, state = _deletion_run(tmp_path, answers)
    assert result.status == "succeeded", result.error
    assert state == "Disabled"
    statuses = {r.step_id: r.status for r in result.steps}
    assert statuses["collect"] == "skipped" and statuses["findings"] == "skipped"
    entries = _entries(result.bundle)
    skipped = next(e for e in entries if e["type"] == "step-skipped" and e["step"] == "collect")
    assert "trail already exported to the SIEM" in skipped["data"]["reason"]
    decision = next(e for e in entries if e["type"] == "decision" and e["step"] == "collect")
    assert decision["data"]["answer"] == "skipped"
    notes = [e["data"] for e in entries if e["type"] == "note" and e["step"] == "cancel"]
    assert notes == [{"text": "CAB emergency approval 7731", "by": "answers file"}]
    text = report.render(result.bundle, fmt="md")
    assert "CAB emergency approval 7731" in text
    assert "trail already exported to the SIEM" in text
    assert integrity.verify(result.bundle) == []


def test_abort_before_a_change_ends_the_run_and_changes_nothing(tmp_path: Path) -> None:
    result, state = _deletion_run(tmp_path, {"cancel": "abort"})
    assert result.status == "aborted"
    assert state == "PendingDeletion"  # nothing was sent
    entries = _entries(result.bundle)
    assert not [e for e in entries if e["type"] == "api-intent"]
    decision = next(e for e in entries if e["type"] == "decision" and e["step"] == "cancel")
    assert decision["data"]["answer"] == "aborted"
    assert integrity.verify(result.bundle) == []


def test_a_failed_step_is_retried_with_a_corrected_input(tmp_path: Path) -> None:
    answers = {
        **ANSWERS,
        "snapshot": {"decision": "run", "note": "key reference from the pager alert"},
        "snapshot.on-error": "edit-input",
        "snapshot.input": "key",
        "snapshot.key": "alias/orders-db",
    }
    result, state = _deletion_run(tmp_path, answers, key="alias/orders-bd", attended=True)
    assert result.status == "succeeded", result.error
    assert state == "Disabled"
    entries = _entries(result.bundle)
    outcomes = [e["type"] for e in entries if e["step"] == "snapshot" and "step-" in e["type"]]
    assert outcomes == ["step-started", "step-failed", "step-started", "step-succeeded"]
    notes = [e for e in entries if e["type"] == "note" and e["step"] == "snapshot"]
    assert len(notes) == 1  # the step was asked twice; the scripted note is kept once
    changed = [e["data"] for e in entries if e["type"] == "input-changed"]
    assert changed == [
        {"name": "key", "from": "alias/orders-bd", "to": "alias/orders-db", "by": "answers file"}
    ]
    shown = report.render(result.bundle, fmt="md")
    assert "input key changed from 'alias/orders-bd' to 'alias/orders-db'" in shown
    assert "| key | `alias/orders-db` |" in shown  # what the steps used
    assert "it was `alias/orders-bd`" in shown
    manifest = json.loads((result.bundle / "manifest.json").read_text())
    assert manifest["inputs"]["key"] == "alias/orders-db"
    assert manifest["input_changes"][0]["from"] == "alias/orders-bd"
    assert integrity.verify(result.bundle) == []


def test_a_scripted_retry_gives_up_instead_of_looping(tmp_path: Path) -> None:
    answers = {**ANSWERS, "snapshot.on-error": "retry"}
    result, state = _deletion_run(tmp_path, answers, key="alias/orders-bd", attended=True)
    assert result.status == "aborted"
    assert "still fails after 3 retries answered by the answers file" in str(result.error)
    failed = [e for e in _entries(result.bundle) if e["type"] == "step-failed"]
    assert len(failed) == 4 and state == "PendingDeletion"


def test_resume_after_an_abort_asks_again_and_runs_the_step(tmp_path: Path) -> None:
    world = scenarios.load("ransom-deletion")
    loaded = load_playbook(DELETION)
    with Sandbox(world) as sandbox:
        aborted = run_playbook(
            loaded,
            sandbox.client_factory(),
            tmp_path,
            inputs=world.inputs,
            answers={"cancel": "abort"},
            scenario=world.id,
        )
        assert aborted.status == "aborted"
        engine = Engine(
            actions=actions.registry(),
            clients=sandbox.client_factory(),
            prompter=ScriptedPrompter(ANSWERS, source="answers file"),
        )
        options = RunOptions(
            incident_id="INC-test", evidence_dir=tmp_path, mode="sandbox", scenario=world.id
        )
        result = engine.resume(loaded, resuming.load(aborted.bundle), options)
        kms = sandbox.session().client("kms")
        state = kms.describe_key(KeyId="alias/orders-db")["KeyMetadata"]["KeyState"]
    assert result.status == "succeeded", result.error
    assert state == "Disabled"  # the cancellation ran after all
    decisions = [
        e["data"]["answer"]
        for e in _entries(result.bundle)
        if e["type"] == "decision" and e["step"] == "cancel"
    ]
    assert decisions == ["aborted", "approved"]


def test_without_anyone_at_a_terminal_or_an_answer_a_failed_step_stops_the_run(
    tmp_path: Path,
) -> None:
    result, state = _deletion_run(tmp_path, ANSWERS, key="alias/orders-bd")
    assert result.status == "failed" and "alias/orders-bd" in str(result.error)
    assert state == "PendingDeletion"
    assert not [e for e in _entries(result.bundle) if e["type"] == "decision"]


class InterruptAt(Attended):
    """Ctrl-C at the preview of one step."""

    def __init__(self, step_id: str) -> None:
        self.step_id = step_id

    def before_step(self, preview: StepPreview, note: Any) -> Answer | None:
        if preview.step_id == self.step_id:
            raise KeyboardInterrupt
        return super().before_step(preview, note)


def test_resume_keeps_an_input_corrected_before_the_interruption(tmp_path: Path) -> None:
    book = tmp_path / "twice.yaml"
    book.write_text(
        "id: twice\ntitle: Snapshot twice\n"
        "inputs: {key: {type: kms-key, required: true}, lookback: {type: duration, default: 1d}}\n"
        "steps:\n"
        "  - {id: first, action: kms.snapshot, with: {key: '{{ inputs.key }}'}}\n"
        "  - {id: second, action: kms.snapshot, with: {key: '{{ inputs.key }}'}}\n"
    )
    loaded = load_playbook(book)
    answers = {"first.on-error": "edit-input", "first.input": "key", "first.key": "alias/orders-db"}
    world = scenarios.load("ransom-deletion")
    with Sandbox(world) as sandbox:
        with pytest.raises(KeyboardInterrupt):
            run_playbook(
                loaded,
                sandbox.client_factory(),
                tmp_path / "ev",
                inputs={"key": "alias/orders-bd"},
                prompter=ScriptedPrompter(
                    answers, source="answers file", fallback=InterruptAt("second")
                ),
                scenario=world.id,
            )
        (bundle,) = bundles(tmp_path / "ev" / "INC-test")
        engine = Engine(
            actions=actions.registry(),
            clients=sandbox.client_factory(),
            prompter=ScriptedPrompter({}, source="answers file"),
        )
        options = RunOptions(
            incident_id="INC-test", evidence_dir=tmp_path / "ev", mode="sandbox", scenario=world.id
        )
        result = engine.resume(loaded, resuming.load(bundle), options)
    assert result.status == "succeeded", result.error
    second = next(
        e["data"]
        for e in _entries(bundle)
        if e["type"] == "step-succeeded" and e["step"] == "second"
    )
    assert second["outputs"]["aliases"] == ["alias/orders-db"]
    assert integrity.verify(bundle) == []

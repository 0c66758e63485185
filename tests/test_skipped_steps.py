"""A step that refers to one that was skipped or failed: the failure menu, not a wedged run.

A responder may skip any read-only step, and a failed step may be passed over; a later
``when:`` or ``with:`` that reads that step's outputs then cannot be rendered. That must be
an ordinary step failure (retry, skip, abort, edit an input), at a terminal, from an answers
file, and again on resume; and the shipped playbooks guard every such reference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kmsir import actions
from kmsir.errors import KmsirError
from kmsir.evidence import integrity
from kmsir.evidence.bundle import JOURNAL
from kmsir.playbook import model as playbook
from kmsir.playbook import templating
from kmsir.prompts import ScriptedPrompter
from kmsir.run import resume as resuming
from kmsir.run.engine import Engine, RunOptions, RunResult
from kmsir.sandbox import Sandbox
from kmsir.sandbox import scenario as scenarios
from tests.journalkit import journal_lines

from .conftest import PLAYBOOKS, load_playbook, played, run_playbook

#: kms-key-compromise as it shipped before its references were guarded: `cancel` reads
#: `steps.recheck.state` unconditionally.
UNGUARDED = """\
id: unguarded
title: A later step reads a step that may be skipped
inputs:
  key: {type: kms-key, required: true}
steps:
  - id: recheck
    action: kms.snapshot
    with: {key: "{{ inputs.key }}"}
  - id: cancel
    action: kms.cancel-deletion
    when: "steps.recheck.state in ['PendingDeletion']"
    with: {key: "{{ inputs.key }}"}
  - id: after
    action: kms.snapshot
    with: {key: "{{ inputs.key }}"}
"""


def _entries(bundle: Path) -> list[dict[str, Any]]:
    return journal_lines(bundle / JOURNAL)


def _unguarded(tmp_path: Path) -> playbook.LoadedPlaybook:
    path = tmp_path / "unguarded.yaml"
    path.write_text(UNGUARDED)
    return load_playbook(path)


def _in_rogue_grant(
    loaded: playbook.LoadedPlaybook, evidence: Path, answers: dict[str, Any]
) -> RunResult:
    with Sandbox(scenarios.load("rogue-grant")) as sandbox:
        return run_playbook(
            loaded,
            sandbox.client_factory(),
            evidence,
            inputs={"key": "alias/payments-prod"},
            answers=answers,
        )


def test_a_when_reading_a_skipped_step_goes_through_the_failure_menu(tmp_path: Path) -> None:
    answers = {"recheck": "skip", "cancel.on-error": "skip"}
    result = _in_rogue_grant(_unguarded(tmp_path), tmp_path / "ev", answers)
    assert result.status == "succeeded", result.error
    assert [r.status for r in result.steps] == ["skipped", "skipped", "succeeded"]
    entries = _entries(result.bundle)
    failed = next(e for e in entries if e["type"] == "step-failed")
    assert failed["step"] == "cancel"
    # the message says what is missing and why, in one line
    assert "when:" in failed["data"]["error"] and "recheck" in failed["data"]["error"]
    assert "skipped" in failed["data"]["error"] and "\n" not in failed["data"]["error"]
    decision = next(e for e in entries if e["type"] == "decision" and e["step"] == "cancel")
    assert decision["data"]["answer"] == "skip"
    assert integrity.verify(result.bundle) == []


def test_resume_offers_the_same_menu_and_an_answers_file_gets_past(tmp_path: Path) -> None:
    """Without an answer the run stops there; `kmsir resume --answers` with
    `cancel.on-error: skip` finishes it (it failed the same way on every resume before)."""
    loaded = _unguarded(tmp_path)
    with Sandbox(scenarios.load("rogue-grant")) as sandbox:
        clients = sandbox.client_factory()
        first = run_playbook(
            loaded,
            clients,
            tmp_path / "ev",
            inputs={"key": "alias/payments-prod"},
            answers={"recheck": "skip"},
        )
        assert first.status == "failed" and "recheck" in str(first.error)
        state = resuming.load(first.bundle)
        engine = Engine(
            actions=actions.registry(),
            clients=clients,
            prompter=ScriptedPrompter({"cancel.on-error": "skip"}, source="answers file"),
            sleep=lambda _: None,
        )
        options = RunOptions(incident_id="INC-test", evidence_dir=tmp_path / "ev", mode="sandbox")
        resumed = engine.resume(loaded, state, options)
    assert resumed.status == "succeeded", resumed.error
    assert [(r.step_id, r.status) for r in resumed.steps][1:] == [
        ("cancel", "skipped"),
        ("after", "succeeded"),
    ]
    assert integrity.verify(first.bundle) == []


def test_a_with_reading_a_skipped_step_is_a_failure_an_answers_file_can_skip(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tag.yaml"
    path.write_text(
        UNGUARDED.replace("action: kms.cancel-deletion", "action: kms.tag-key")
        .replace("    when: \"steps.recheck.state in ['PendingDeletion']\"\n", "")
        .replace(
            'with: {key: "{{ inputs.key }}"}\n  - id: after',
            'with: {key: "{{ steps.recheck.key_id }}"}\n  - id: after',
        )
    )
    answers = {"recheck": "skip", "cancel.on-error": "skip"}
    result = _in_rogue_grant(load_playbook(path), tmp_path / "ev", answers)
    assert result.status == "succeeded", result.error
    assert [(r.step_id, r.status) for r in result.steps] == [
        ("recheck", "skipped"),
        ("cancel", "skipped"),
        ("after", "succeeded"),
    ]
    failed = next(e for e in _entries(result.bundle) if e["type"] == "step-failed")
    assert "recheck" in failed["data"]["error"] and "skipped" in failed["data"]["error"]


# -- the shipped playbooks guard every reference to an earlier step -----------------------


def _templates(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _templates(v)]
    if isinstance(value, list):
        return [t for v in value for t in _templates(v)]
    return []


@pytest.mark.parametrize("name", scenarios.available())
def test_every_shipped_reference_to_an_earlier_step_is_guarded(name: str, tmp_path: Path) -> None:
    """For each step and each earlier step it reads: with that earlier step skipped (absent
    from ``steps``), the `when:` and every `with:` value still render."""
    with played(name, tmp_path) as (_, result):
        state = resuming.load(result.bundle)
    world = scenarios.load(name)
    book = load_playbook(PLAYBOOKS / f"{world.playbook}.yaml").playbook
    full = {
        "inputs": {
            **{k: v.default for k, v in book.inputs.items()},
            **world.inputs,
        },
        "steps": state.view.context_steps(),
        "incident": {"id": "INC-test"},
        "run": {
            "id": "r",
            "mode": "sandbox",
            "simulated": True,
            "operator": "arn:aws:iam::1:role/x",
        },
        "now": "2026-12-01T00:00:00.000000Z",
    }
    unguarded = []
    for step in book.steps:
        sources = [step.when or "", *_templates(step.with_)]
        for missing in sorted({m for s in sources for m in playbook.referenced_steps(s)}):
            context = {**full, "steps": {k: v for k, v in full["steps"].items() if k != missing}}
            try:
                # with: is rendered only when the step runs
                if step.when is None or templating.evaluate(step.when, context):
                    templating.render_value(step.with_, context)
            except KmsirError as exc:
                unguarded.append(f"{step.id} without {missing}: {exc}")
    assert unguarded == []


def test_skipping_the_recheck_in_rogue_grant_still_cancels_the_attackers_deletion(
    tmp_path: Path,
) -> None:
    """The defect as found: revoke and disable approved, the inject schedules the deletion,
    the read-only recheck is skipped. The run no longer fails at `cancel`: without the
    re-read it runs, reads the key itself and cancels the deletion."""
    with played("rogue-grant", tmp_path, answers={"recheck": "skip"}) as (sandbox, result):
        kms = sandbox.session().client("kms")
        key = kms.describe_key(KeyId="alias/payments-prod")["KeyMetadata"]
    statuses = {r.step_id: r.status for r in result.steps}
    assert statuses["recheck"] == "skipped"
    assert statuses["cancel"] == "succeeded"
    assert key["KeyState"] == "Disabled" and "DeletionDate" not in key
    assert integrity.verify(result.bundle) == []

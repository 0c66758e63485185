"""``for_each:``: one step per item, each iteration journaled, confirmed and resumed alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kmsir.actions.kms_grants import RevokeGrants
from kmsir.evidence.bundle import read_journal
from kmsir.run import loops
from kmsir.sandbox import Sandbox

from .clikit import cli
from .conftest import bundles, run_playbook
from .test_resume import resume, write_playbook

PER_GRANT = """\
id: per-grant
title: Revoke each grant of a key on its own
inputs:
  key: {type: kms-key, required: true}
steps:
  - {id: snapshot, action: kms.snapshot, with: {key: "{{ inputs.key }}"}}
  - id: revoke
    action: kms.revoke-grants
    for_each: "{{ steps.snapshot.grant_ids }}"
    with: {key: "{{ steps.snapshot.key_id }}", grant_ids: ["{{ item }}"]}
  - id: tally
    action: note
    with:
      text: >-
        {{ steps.revoke.count }} grant(s):
        {% for run in steps.revoke.items -%}
        {{ run.revoked | join(',') if run else 'kept' }};{% endfor %}
"""


def play(
    sandbox: Sandbox,
    tmp_path: Path,
    text: str,
    *,
    ev: str = "ev",
    answers: dict[str, Any] | None = None,
) -> Any:
    """``text`` (a playbook) run on the payments key of the rogue-grant sandbox."""
    return run_playbook(
        write_playbook(tmp_path, text),
        sandbox.client_factory(),
        tmp_path / ev,
        inputs={"key": "alias/payments-prod"},
        answers=answers,
    )


def grants(sandbox: Sandbox) -> set[str]:
    kms = sandbox.client_factory().client("kms")
    key = kms.describe_key(KeyId="alias/payments-prod")["KeyMetadata"]["KeyId"]
    return {g["GrantId"] for g in kms.list_grants(KeyId=key)["Grants"]}


def entries(bundle: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (bundle / "journal.jsonl").read_text().splitlines()]


def interrupted_in_second_iteration(
    rogue_grant: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A PER_GRANT run stopped by Ctrl-C inside its second revoke: its bundle."""
    original = RevokeGrants.run
    calls = 0

    def second_interrupted(self: RevokeGrants, ctx: Any, params: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt
        return original(self, ctx, params)

    monkeypatch.setattr(RevokeGrants, "run", second_interrupted)
    with pytest.raises(KeyboardInterrupt):
        play(rogue_grant, tmp_path, PER_GRANT, answers={"revoke": "approve"})
    monkeypatch.setattr(RevokeGrants, "run", original)
    (bundle,) = bundles(tmp_path / "ev" / "INC-test")
    return bundle


def test_each_item_is_its_own_step_confirmed_on_its_own(
    rogue_grant: Sandbox, tmp_path: Path
) -> None:
    before = sorted(grants(rogue_grant))
    assert len(before) == 2
    # the step's answer holds for every iteration; an iteration's own answer wins
    answers = {"revoke": "approve", "revoke[2]": {"decision": "skip", "reason": "keep it"}}
    result = play(rogue_grant, tmp_path, PER_GRANT, answers=answers)
    assert result.status == "succeeded", result.error
    ids = [s.step_id for s in result.steps]
    assert ids == ["snapshot", "revoke[1]", "revoke[2]", "tally"]
    (bundle,) = bundles(tmp_path / "ev" / "INC-test")
    view = read_journal(bundle / "journal.jsonl").view()
    first, second = view.steps["revoke[1]"], view.steps["revoke[2]"]
    assert first.status == "succeeded" and second.status == "skipped"
    revoked = first.outputs["revoked"]
    assert grants(rogue_grant) == set(before) - set(revoked)  # one grant gone, one kept
    assert len(revoked) == 1
    # each iteration was approved on its own, for exactly its item
    decisions = [e for e in entries(bundle) if e["type"] == "decision" and e["step"] == "revoke[1]"]
    assert decisions and decisions[0]["data"]["answer"] == "approved"
    assert first.params is not None and first.params["grant_ids"] == revoked
    assert second.summary.startswith("not approved") and "keep it" in second.summary
    # later steps read what each iteration returned
    assert view.steps["tally"].outputs["text"] == f"2 grant(s): {revoked[0]};kept;"
    assert cli("verify", bundle).exit_code == 0
    assert cli("report", bundle).exit_code == 0
    report = (bundle / "report.md").read_text()
    assert "revoke[1]" in report and "revoke[2]" in report
    assert (bundle / "artifacts" / "02-revoke-1").is_dir()


def test_an_interrupted_loop_resumes_at_the_iteration_it_stopped_in(
    rogue_grant: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = interrupted_in_second_iteration(rogue_grant, tmp_path, monkeypatch)
    assert len(grants(rogue_grant)) == 1  # the first iteration revoked its grant
    resumed = resume(bundle, rogue_grant.client_factory(), {"revoke": "approve"})
    assert resumed.status == "succeeded", resumed.error
    assert grants(rogue_grant) == set()
    started = [e["step"] for e in entries(bundle) if e["type"] == "step-started"]
    assert started.count("revoke[1]") == 1  # done before the stop: never run again
    assert started.count("revoke[2]") == 2  # in flight at the stop: rechecked, then done
    tally = read_journal(bundle / "journal.jsonl").view().steps["tally"]
    assert tally.outputs["text"].startswith("2 grant(s):")


@pytest.mark.parametrize(
    ("for_each", "message"),
    [
        ("{{ steps.snapshot.key_id }}", "for_each: gave text, not a list"),
        ("{{ ['g'] * 101 }}", "for_each: 101 items, at most 100"),
        ("{{ steps.snapshot.grant_ids[7] }}", "for_each: "),
    ],
)
def test_a_for_each_that_is_not_a_short_list_fails_the_step_clearly(
    rogue_grant: Sandbox, tmp_path: Path, for_each: str, message: str
) -> None:
    text = PER_GRANT.replace("{{ steps.snapshot.grant_ids }}", for_each)
    result = play(rogue_grant, tmp_path, text, answers={"revoke": "approve"})
    assert result.status == "failed"
    assert result.error is not None and message in result.error
    assert result.error.startswith("step 'revoke' (kms.revoke-grants): ")
    assert len(grants(rogue_grant)) == 2  # nothing revoked


def test_an_empty_list_skips_the_step(rogue_grant: Sandbox, tmp_path: Path) -> None:
    text = PER_GRANT.replace("{{ steps.snapshot.grant_ids }}", "{{ [] }}").replace(
        "{{ steps.revoke.count }}", "{{ 'revoke' in steps }}"
    )
    result = play(rogue_grant, tmp_path, text)
    assert [(s.step_id, s.status) for s in result.steps][1] == ("revoke", "skipped")
    assert "gave no items" in result.steps[1].summary


def test_iteration_ids_cannot_be_step_ids() -> None:
    assert loops.iteration_id("contain", 2) == "contain[2]"
    assert loops.looped_step("contain[2]") == "contain"
    assert loops.looped_step("contain") is None


def test_a_loop_of_containments_all_declined_is_an_open_risk(
    rogue_grant: Sandbox, tmp_path: Path
) -> None:
    text = PER_GRANT.replace(
        "    action: kms.revoke-grants\n", "    action: kms.revoke-grants\n    phase: containment\n"
    )
    declined = play(rogue_grant, tmp_path, text, answers={"revoke": "skip"})
    kinds = [risk["kind"] for risk in declined.open_risks]
    assert "no-containment" in kinds
    done = play(rogue_grant, tmp_path, text, ev="ev2", answers={"revoke": "approve"})
    assert "no-containment" not in [risk["kind"] for risk in done.open_risks]


def test_plan_shows_what_a_step_runs_over(tmp_path: Path) -> None:
    path = tmp_path / "per-grant.yaml"
    path.write_text(PER_GRANT)
    shown = cli("plan", path, "-i", "key=alias/payments-prod").stdout
    assert "for each item of: {{ steps.snapshot.grant_ids }}" in shown
    assert "GrantId={{ item }}" in shown


GUARDED = """\
id: guarded
title: A loop behind a condition
inputs:
  key: {type: kms-key, required: true}
steps:
  - {id: snapshot, action: kms.snapshot, with: {key: "{{ inputs.key }}"}}
  - {id: nothing, action: note, when: "false", with: {text: x}}
  - id: revoke
    action: kms.revoke-grants
    WHEN
    for_each: "FOR_EACH"
    with: {key: "{{ steps.snapshot.key_id }}", grant_ids: ["{{ item }}"]}
  - {id: tally, action: note, with: {text: "ran: {{ 'revoke' in steps }}"}}
"""


def guarded(when: str, for_each: str) -> str:
    return GUARDED.replace("WHEN", f"when: {when}").replace("FOR_EACH", for_each)


def test_a_when_without_item_is_asked_once_before_the_list_it_guards(
    rogue_grant: Sandbox, tmp_path: Path
) -> None:
    # the list reads a step that did not run: the when: says so first
    text = guarded("\"'nothing' in steps\"", "{{ [steps.nothing.text] }}")
    done = play(rogue_grant, tmp_path, text, answers={"revoke": "approve"})
    assert done.status == "succeeded", done.error
    assert [(s.step_id, s.status) for s in done.steps][2] == ("revoke", "skipped")
    assert len(grants(rogue_grant)) == 2


def test_a_when_reading_item_picks_the_items_and_a_loop_nothing_ran_in_did_not_run(
    rogue_grant: Sandbox, tmp_path: Path
) -> None:
    text = guarded("\"item == 'none of them'\"", "{{ steps.snapshot.grant_ids }}")
    done = play(rogue_grant, tmp_path, text, answers={"revoke": "approve"})
    assert done.status == "succeeded", done.error
    statuses = {s.step_id: s.status for s in done.steps}
    assert statuses["revoke[1]"] == statuses["revoke[2]"] == "skipped"
    (bundle,) = bundles(tmp_path / "ev" / "INC-test")
    tally = read_journal(bundle / "journal.jsonl").view().steps["tally"]
    assert tally.outputs["text"] == "ran: False"  # no iteration ran: the loop did not run


def test_a_resume_after_a_loop_names_where_it_goes_on(
    rogue_grant: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = interrupted_in_second_iteration(rogue_grant, tmp_path, monkeypatch)
    resume(bundle, rogue_grant.client_factory(), {"revoke": "approve"})
    resumed = [e for e in entries(bundle) if e["type"] == "run-resumed"]
    assert resumed[0]["data"]["resume_at"] == "revoke[2]"


@pytest.mark.parametrize(
    ("step", "problem"),
    [
        ('{id: n, action: note, with: {text: "{{ item }}"}}', "reads 'item', but the step has no"),
        (
            '{id: n, action: note, for_each: "{{ [item] }}", with: {text: x}}',
            "for_each: reads 'item', which it defines",
        ),
    ],
)
def test_validate_says_where_item_cannot_be_read(tmp_path: Path, step: str, problem: str) -> None:
    path = tmp_path / "item.yaml"
    path.write_text(f"id: item\ntitle: t\nsteps:\n  - {step}\n")
    done = cli("validate", path)
    assert done.exit_code == 2
    assert f"{path}:4:" in done.stderr and problem in done.stderr

"""Open risks: a run ends by reading every key it touched again and saying what it leaves
open (an outside grant, a pending deletion, an actor not contained, a gap in the evidence),
in the summary, the journal and the report; a run with open risks "succeeded with open
risks" and exits 0. And the containment question: declining asks once more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kmsir import actions, report
from kmsir.actions.base import NullReporter
from kmsir.evidence import entries
from kmsir.evidence.bundle import read_journal
from kmsir.playbook import model as playbook
from kmsir.prompts import Answer, NoPrompter, StepPreview
from kmsir.run import risks
from kmsir.run.engine import Engine, RunOptions
from kmsir.sandbox import Sandbox
from kmsir.sandbox import scenario as scenarios

from .clikit import cli
from .conftest import PLAYBOOKS, load_playbook, played
from .journalkit import RUN, started, succeeded, view_of


def _view(bundle: Path) -> Any:
    return read_journal(bundle / "journal.jsonl").view()


def test_declining_every_containment_ends_with_the_outside_grant_open(tmp_path: Path) -> None:
    answers = {"decide": "none", "actors": "none"}
    with played("rogue-grant", tmp_path, answers=answers) as (sandbox, result):
        kms = sandbox.session().client("kms")
        rogue = [
            g
            for g in kms.list_grants(KeyId="alias/payments-prod")["Grants"]
            if g["GranteePrincipal"].startswith("arn:aws:iam::444455556666:")
        ]
    assert result.status == "succeeded"
    kinds = [r["kind"] for r in result.open_risks]
    assert kinds.count("outside-grant") == 1 and "no-containment" in kinds and "actor" in kinds
    outside = next(r for r in result.open_risks if r["kind"] == "outside-grant")
    assert rogue[0]["GrantId"] in outside["text"] and "444455556666" in outside["text"]
    assert any("ci-deploy" in r["text"] for r in result.open_risks if r["kind"] == "actor")
    view = _view(result.bundle)
    assert view.open_risks == result.open_risks
    # the decline was confirmed once more, and the answers file's "none" counted as that
    decline = [d for d in view.timeline if isinstance(d.record, entries.Decision)]
    confirmed = [d.record for d in decline if d.record.question.endswith("are you sure?")]
    assert confirmed and confirmed[0].answer == "confirmed" and confirmed[0].by == "test answers"
    md = report.write(result.bundle, fmt="md").read_text()
    assert "**succeeded with open risks**" in md
    risks_section = md.split("## Open risks", 1)[1].split("## Open deadlines", 1)[0]
    assert rogue[0]["GrantId"] in risks_section and "ci-deploy" in risks_section


def test_the_cli_says_succeeded_with_open_risks_and_exits_0(tmp_path: Path) -> None:
    answers = tmp_path / "answers.yaml"
    answers.write_text(yaml.safe_dump({"decide": "none", "actors": "none"}))
    ran = cli(
        "run",
        "kms-key-compromise",
        "--sandbox",
        "rogue-grant",
        "--answers",
        answers,
        "--evidence-dir",
        tmp_path / "ev",
    )
    assert ran.exit_code == 0, ran.output
    assert "Run succeeded with open risks" in ran.output
    # each risk in full, never cut at the terminal's width
    assert "is still active" in ran.output and "444455556666" in ran.output


def test_a_deletion_scheduled_after_the_last_snapshot_is_an_open_risk(tmp_path: Path) -> None:
    # the inject schedules the deletion after `disable`; nobody cancels it
    with played("rogue-grant", tmp_path, answers={"cancel": "skip"}) as (_, result):
        pass
    pending = [r for r in result.open_risks if r["kind"] == "pending-deletion"]
    assert len(pending) == 1 and pending[0]["until"]
    md = report.write(result.bundle, fmt="md").read_text()
    deadlines = md.split("## Open deadlines", 1)[1].split("## ", 1)[0]
    assert "key deletion" in deadlines and "read at the end" in deadlines
    assert pending[0]["until"] in deadlines
    # disabling cannot be undone by enabling while the key is pending deletion
    disable_row = next(
        line for line in md.splitlines() if line.startswith("| `disable` | `kms.disable-key`")
    )
    assert "not possible now: the key is PendingDeletion" in disable_row
    assert "(still available)" not in disable_row


def test_the_demo_leaves_no_open_risk_once_the_deletion_is_cancelled(tmp_path: Path) -> None:
    with played("rogue-grant", tmp_path) as (_, result):
        pass
    assert result.open_risks == []
    view = _view(result.bundle)
    assert [k["state"] for k in view.final_keys] == ["Disabled"]
    md = report.write(result.bundle, fmt="md").read_text()
    assert md.split("## Open risks", 1)[1].split("## ", 1)[0].strip().endswith("None.")


def _findings_step(actors: list[dict[str, Any]]) -> list[tuple[str | None, Any]]:
    return [
        started("findings", action="cloudtrail.findings", mutating=False),
        succeeded("findings", action="cloudtrail.findings", outputs={"actors": actors}),
    ]


def test_a_failed_collect_and_skipped_records_are_gaps_in_the_evidence() -> None:
    view = view_of(
        (None, RUN),
        (
            "collect",
            entries.StepFailed(
                error="AccessDenied: cloudtrail:LookupEvents",
                action="cloudtrail.collect",
                name="collect",
                phase="identification",
            ),
        ),
        ("scan", entries.InputSkipped(counts={"malformed": 3}, examples=[])),
    )
    found = risks.assess(view, [], {}, lambda _: False)
    texts = [r["text"] for r in found if r["kind"] == "evidence"]
    assert any("collect" in t and "AccessDenied" in t for t in texts)
    assert any("3 CloudTrail record(s) were skipped" in t for t in texts)


def test_an_actor_is_contained_by_a_step_that_names_its_role() -> None:
    actor = {
        "principal": "arn:aws:iam::123456789012:role/ci-deploy",
        "type": "AssumedRole",
        "account": "123456789012",
        "role": "ci-deploy",
        "severity": "high",
        "access_keys": [],
    }
    outsider = {**actor, "account": "444455556666", "role": "sync", "principal": "x"}
    lines = [(None, RUN), *_findings_step([actor, outsider])]
    keys = [risks.KeyState(ref="k", key_id="k", account="123456789012", state="Disabled")]
    open_ = risks.assess(view_of(*lines), keys, {}, lambda _: False)
    # the outside account's role is not this account's IAM to contain
    assert [r["kind"] for r in open_] == ["actor"] and "ci-deploy" in open_[0]["text"]
    contained = [
        *lines,
        started("sessions", action="iam.revoke-role-sessions", params={"role": ["ci-deploy"]}),
        succeeded("sessions", action="iam.revoke-role-sessions"),
    ]
    assert risks.assess(view_of(*contained), keys, {}, lambda _: False) == []


def test_a_multi_region_primary_contained_in_one_region_leaves_its_replicas_open() -> None:
    lines = [
        (None, RUN),
        started("disable", params={"key": "mrk-1"}),
        succeeded("disable", outputs={"key_id": "mrk-1"}),
    ]
    key = risks.KeyState(
        ref="mrk-1",
        key_id="mrk-1",
        account="123456789012",
        region="eu-west-1",
        state="Disabled",
        replicas=[
            {
                "arn": "arn:aws:kms:us-east-1:123456789012:key/mrk-1",
                "region": "us-east-1",
                "state": "Enabled",
            }
        ],
    )
    phases = {"disable": "containment"}
    found = risks.assess(view_of(*lines), [key], phases, lambda a: a == "kms.disable-key")
    assert [r["kind"] for r in found] == ["replicas"]
    assert "us-east-1 (Enabled)" in found[0]["text"]


class Person(NoPrompter):
    """Someone at the terminal: answers each question from a list, approves every change,
    and says no the first time a decline is to be confirmed."""

    interactive = True

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.offered: dict[str, list[list[str]]] = {}
        self.confirmations: list[str] = []

    def has_answer(self, key: str) -> bool:
        return True

    def ask(self, key: str, question: str, choices: Any) -> Answer:
        self.offered.setdefault(key, []).append(list(choices))
        return Answer(self.answers[key].pop(0), "interactive")

    def confirm(self, key: str, message: str) -> Answer:
        self.confirmations.append(message)
        return Answer(len(self.confirmations) > 1, "interactive")

    def before_step(self, preview: StepPreview, note: Any) -> Answer | None:
        return Answer("run", "interactive") if preview.mutating else None


class Shown(NullReporter):
    def __init__(self) -> None:
        self.notices: list[str] = []

    def notice(self, text: str) -> None:
        self.notices.append(text)


def test_at_a_terminal_the_choice_shows_findings_and_blast_radius_and_a_decline_is_asked_again(
    tmp_path: Path,
) -> None:
    person = Person(
        {
            "decide": ["show findings", "show blast radius", "none", "none"],
            "actors": ["revoke-sessions"],
        }
    )
    shown = Shown()
    world = scenarios.load("rogue-grant")
    with Sandbox(world) as sandbox:
        engine = Engine(
            actions=actions.registry(),
            clients=sandbox.client_factory(),
            prompter=person,
            reporter=shown,
            sleep=lambda _: None,
            after_step=sandbox.after_step,
        )
        loaded = load_playbook(PLAYBOOKS / "kms-key-compromise.yaml")
        options = RunOptions(
            incident_id="INC-ask", evidence_dir=tmp_path, mode="sandbox", scenario=world.id
        )
        result = engine.run(loaded, playbook.resolve_inputs(loaded.playbook, world.inputs), options)
    assert result.status == "succeeded", result.error
    assert "show findings" in person.offered["decide"][0]
    assert "show blast radius" in person.offered["decide"][0]
    findings_shown = next(n for n in shown.notices if n.startswith("findings: "))
    assert "Grant created for an outside account" in findings_shown
    blast_shown = next(n for n in shown.notices if n.startswith("blast radius: "))
    assert "444455556666" in blast_shown
    # "none" twice: not sure the first time (asked again), confirmed the second
    assert len(person.confirmations) == 2 and "outside accounts" in person.confirmations[0]
    view = _view(result.bundle)
    assert view.steps["decide"].outputs["answer"] == "none"
    answers = [
        (m.record.question[-13:], m.record.answer)
        for m in view.timeline
        if isinstance(m.record, entries.Decision) and m.step == "decide"
    ]
    assert answers[:2] == [("are you sure?", "declined"), ("are you sure?", "confirmed")]

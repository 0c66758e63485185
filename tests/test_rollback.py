"""``kmsir rollback``: a run's changes undone newest first, as a new run linked to it.

The demo (rogue-grant: revoke the outside grant, disable the key, cancel the deletion the
attacker schedules) is rolled back in its rebuilt sandbox world; a live run against moto is
rolled back after someone changed its key, to see the change shown and kept.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kmsir import actions
from kmsir.aws import ClientFactory
from kmsir.evidence import integrity
from kmsir.evidence.bundle import JOURNAL, read_journal, utc_now
from kmsir.evidence.view import RunView
from kmsir.prompts import ScriptedPrompter
from kmsir.run import rollback, rollback_drift, rollback_run
from kmsir.run.engine import Engine, RunOptions
from kmsir.sandbox import Sandbox

from .clikit import Ran, cli
from .conftest import bundles, load_playbook, run_playbook

GLASS = "arn:aws:iam::123456789012:role/BreakGlass"


def view_of(bundle: Path) -> RunView:
    return read_journal(bundle / JOURNAL).view()


def demo(evidence: Path) -> Path:
    ran = cli("demo", "--evidence-dir", evidence)
    assert ran.exit_code == 0, ran.stderr
    return Path(ran.stdout.strip()).parent


def rolled_back(ran: Ran) -> Path:
    assert ran.exit_code == 0, ran.stderr
    return Path(ran.stdout.strip()).parent


def one_line_error(ran: Ran) -> str:
    lines = ran.stderr.strip().splitlines()
    assert "Traceback" not in ran.output
    return lines[-1]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished demo run; each test rolls it back into its own new bundle."""
    return demo(tmp_path_factory.mktemp("ev"))


def test_the_demo_rolled_back_enables_the_key_and_says_what_could_not_be_undone(
    demo_run: Path,
) -> None:
    original = view_of(demo_run)
    rogue = original.steps["revoke"].outputs["revoked"][0]
    key = original.steps["disable"].outputs["key_id"]

    ran = cli("rollback", demo_run, "--yes")
    bundle = rolled_back(ran)

    # a new run of the same incident, in the same evidence directory
    assert bundle != demo_run and bundle.parent == demo_run.parent
    view = view_of(bundle)
    assert view.status == "succeeded"
    assert view.meta is not None and view.meta.playbook["id"] == "rollback"
    link = view.meta.rollback_of or {}
    assert (link["run_id"], link["head"]) == (original.run_id, original.head)
    assert link["bundle"] == str(demo_run.resolve())
    # the key read before and after: Disabled by the run, Enabled again
    assert view.steps["before-1"].outputs["state"] == "Disabled"
    assert view.steps["undo-disable"].action == "kms.enable-key"
    assert view.steps["undo-disable"].status == "succeeded"
    assert view.steps["after-1"].outputs["key_id"] == key
    assert view.steps["after-1"].outputs["state"] == "Enabled"
    assert "revoke" not in {s.id.removeprefix("undo-") for s in view.steps.values()}

    # the plan named what stays as it is, and why
    assert "cannot be undone:" in ran.stderr and f"grant {rogue} on key {key}" in ran.stderr
    report = (bundle / "report.md").read_text()
    assert f"## Rollback of run `{original.run_id}`" in report
    assert f"[its report](../{original.run_id}/report.md)" in report
    assert f"grant {rogue} on key {key} could not be restored: a revoked grant cannot be" in report
    assert "create a new grant" in report
    html = (bundle / "report.html").read_text()
    assert f'<a href="../{original.run_id}/report.html">its report</a>' in html
    assert (bundle.parent / original.run_id / "report.html").is_file()

    for each in (demo_run, bundle):
        assert integrity.verify(each) == []
        verified = cli("verify", each)
        assert verified.exit_code == 0 and verified.stdout.startswith("intact:")


def test_check_mode_sends_nothing(demo_run: Path) -> None:
    bundle = rolled_back(cli("rollback", demo_run, "--check"))
    view = view_of(bundle)
    assert view.mode == "check"
    assert view.steps["undo-disable"].status == "would-run"
    assert not view.world  # not one state-changing call
    assert view.steps["after-1"].outputs["state"] == "Disabled"
    assert integrity.verify(bundle) == []


def test_step_limits_the_rollback_to_one_step(demo_run: Path) -> None:
    view = view_of(rolled_back(cli("rollback", demo_run, "--step", "disable", "--yes")))
    undone = [s.id for s in view.steps.values() if s.id.startswith("undo-")]
    assert undone == ["undo-disable"]
    assert ((view.meta and view.meta.rollback_of) or {})["step"] == "disable"

    before = bundles(demo_run.parent)
    ran = cli("rollback", demo_run, "--step", "snapshot", "--yes")
    assert ran.exit_code == 2
    assert "--step snapshot: that step of run" in one_line_error(ran)
    assert "changed nothing to roll back (steps that did: " in ran.stderr
    assert bundles(demo_run.parent) == before


def test_a_tampered_bundle_is_refused(tmp_path: Path) -> None:
    original = demo(tmp_path / "ev")
    (kept,) = original.glob("artifacts/*-revoke/grants-before.json")
    data = bytearray(kept.read_bytes())
    data[10] ^= 1
    kept.write_bytes(bytes(data))

    ran = cli("rollback", original, "--yes")
    assert ran.exit_code == 1
    line = one_line_error(ran)
    assert "not rolled back, altered evidence is never acted on" in line
    assert "grants-before.json: content changed" in line
    assert bundles(original.parent) == [original]


def test_without_a_terminal_or_yes_nothing_runs(demo_run: Path) -> None:
    before = bundles(demo_run.parent)
    ran = cli("rollback", demo_run, stdin="")
    assert ran.exit_code == 2
    assert "no terminal to confirm the plan on; nothing was changed" in one_line_error(ran)
    assert bundles(demo_run.parent) == before


# -- live, against moto: someone changed the key since the run ----------------------------


@pytest.fixture
def disabled_by_a_run(moto_clients: ClientFactory, tmp_path: Path) -> tuple[str, Path]:
    """A key a live run disabled (moto): the key id and the run's bundle."""
    kms = moto_clients.client("kms")
    key = kms.create_key(Description="payments")["KeyMetadata"]["KeyId"]
    playbook = tmp_path / "disable.yaml"
    playbook.write_text(
        "id: contain\ntitle: Contain\nsteps:\n"
        f"  - {{id: disable, action: kms.disable-key, with: {{key: {key}}}}}\n"
    )
    result = run_playbook(
        load_playbook(playbook),
        moto_clients,
        tmp_path / "ev",
        answers={"disable": "approve"},
        mode="live",
    )
    assert result.status == "succeeded", result.error
    return key, result.bundle


def _state(clients: ClientFactory, key: str) -> Any:
    return clients.client("kms").describe_key(KeyId=key)["KeyMetadata"]["KeyState"]


def test_a_change_since_the_run_that_the_undo_would_wipe_asks_and_yes_keeps_it(
    moto_clients: ClientFactory, disabled_by_a_run: tuple[str, Path]
) -> None:
    key, original = disabled_by_a_run
    # someone else scheduled the key's deletion after the run
    moto_clients.client("kms").schedule_key_deletion(KeyId=key, PendingWindowInDays=7)

    ran = cli("rollback", original, "--yes", "--region", "eu-west-1")
    bundle = rolled_back(ran)
    assert (
        f"CHANGED SINCE THE RUN: key {key} is PendingDeletion now; the run left it " in ran.stderr
    )
    assert "Disabled (step disable)" in ran.stderr and "; asks again" in ran.stderr
    view = view_of(bundle)
    asked = view.steps["drift-disable"]
    assert asked.outputs == {
        "answer": "keep",
        "by": "rollback --yes (keeps changes made since the run)",
    }
    assert view.steps["undo-disable"].status == "skipped"
    assert _state(moto_clients, key) == "PendingDeletion"  # their change stands
    assert view.mode == "live" and integrity.verify(bundle) == []
    report = (bundle / "report.md").read_text()
    assert "Changed since that run:" in report and "someone changed its state" in report


def test_a_change_since_the_run_already_undone_is_shown_and_not_asked(
    moto_clients: ClientFactory, disabled_by_a_run: tuple[str, Path]
) -> None:
    key, original = disabled_by_a_run
    moto_clients.client("kms").enable_key(KeyId=key)  # someone enabled it again meanwhile

    ran = cli("rollback", original, "--yes", "--region", "eu-west-1")
    view = view_of(rolled_back(ran))
    assert "already as the undo leaves it, nothing will be sent" in ran.stderr
    assert "drift-disable" not in view.steps
    assert view.steps["undo-disable"].status == "already"
    assert _state(moto_clients, key) == "Enabled"


def test_an_unfinished_run_is_rolled_back(moto_clients: ClientFactory, tmp_path: Path) -> None:
    """A run that failed after disabling the key: what it did is undone all the same."""
    kms = moto_clients.client("kms")
    key = kms.create_key(Description="payments")["KeyMetadata"]["KeyId"]
    playbook = tmp_path / "disable.yaml"
    playbook.write_text(
        "id: contain\ntitle: Contain\nsteps:\n"
        f"  - {{id: disable, action: kms.disable-key, with: {{key: {key}}}}}\n"
        "  - {id: broken, action: kms.disable-key, with: {key: alias/nope}}\n"
    )
    result = run_playbook(
        load_playbook(playbook),
        moto_clients,
        tmp_path / "ev",
        answers={"disable": "approve", "broken": "approve"},
        mode="live",
    )
    assert result.status == "failed"
    view = view_of(rolled_back(cli("rollback", result.bundle, "--yes")))
    assert view.steps["undo-disable"].status == "succeeded"
    assert _state(moto_clients, key) == "Enabled"
    assert ((view.meta and view.meta.rollback_of) or {})["status"] == "failed"


def test_an_undo_that_fails_fails_the_rollback(
    moto_clients: ClientFactory, disabled_by_a_run: tuple[str, Path], tmp_path: Path
) -> None:
    """Asked about the change and told to undo anyway: AWS refuses to enable a key pending
    deletion, the rollback run fails (the CLI exits 1), its bundle still verifies."""
    key, original = disabled_by_a_run
    moto_clients.client("kms").schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    registry = actions.registry()
    plan = rollback_drift.drift(
        rollback.plan(original, rollback.load(original), registry, utc_now()), moto_clients
    )
    loaded, asked = rollback_run.playbook(plan, registry)
    assert asked == ["drift-disable"]
    engine = Engine(
        actions=registry,
        clients=moto_clients,
        prompter=ScriptedPrompter({"drift-disable": "undo-anyway"}, source="test"),
        sleep=lambda _: None,
    )
    options = RunOptions(
        incident_id="INC-test",
        evidence_dir=original.parent.parent,
        mode="live",
        yes=True,
        extra={"rollback_of": rollback_run.link(plan, step=None, confirmed_by="test")},
    )
    result = engine.run(loaded, {}, options)
    assert result.status == "failed"
    assert "cancel the deletion first" in str(result.error)
    assert integrity.verify(result.bundle) == []


# -- policies: in the sandbox, whose fidelity shim evaluates the quarantine's condition --------


def _policy(sandbox: Sandbox, key: str) -> Any:
    kms = sandbox.session().client("kms")
    return json.loads(kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"])


def roll_back(
    bundle: Path, clients: ClientFactory, answers: dict[str, str] | None = None
) -> RunView:
    """``kmsir rollback`` through its modules, with these answers to its questions."""
    registry = actions.registry()
    plan = rollback_drift.drift(
        rollback.plan(bundle, rollback.load(bundle), registry, utc_now()), clients
    )
    loaded, _ = rollback_run.playbook(plan, registry)
    result = Engine(
        actions=registry,
        clients=clients,
        prompter=ScriptedPrompter(answers or {}, source="test"),
        sleep=lambda _: None,
    ).run(
        loaded,
        {},
        RunOptions(
            incident_id="INC-test",
            evidence_dir=bundle.parent.parent,
            mode="sandbox",
            yes=True,
            extra={"rollback_of": rollback_run.link(plan, step=None, confirmed_by="test")},
        ),
    )
    assert result.status == "succeeded", result.error
    assert integrity.verify(result.bundle) == []
    return view_of(result.bundle)


@pytest.fixture
def quarantined_by_a_run(rogue_grant: Sandbox, tmp_path: Path) -> tuple[str, Any, Path]:
    """The payments key quarantined by a run: its id, its policy before, the run's bundle."""
    key = rogue_grant.keys["payments"]["id"]
    original = _policy(rogue_grant, key)
    playbook = tmp_path / "quarantine.yaml"
    playbook.write_text(
        "id: contain\ntitle: Contain\nsteps:\n"
        "  - id: quarantine\n    action: kms.quarantine\n"
        f'    with: {{key: {key}, break_glass: ["{{{{ run.operator }}}}"]}}\n'
    )
    result = run_playbook(
        load_playbook(playbook),
        rogue_grant.client_factory(),
        tmp_path / "ev",
        yes=True,
        scenario="rogue-grant",
    )
    assert result.status == "succeeded", result.error
    assert _policy(rogue_grant, key) != original
    return key, original, result.bundle


def test_a_quarantine_is_undone_with_the_policy_kept_in_its_bundle(
    rogue_grant: Sandbox, quarantined_by_a_run: tuple[str, Any, Path]
) -> None:
    key, original, bundle = quarantined_by_a_run
    view = roll_back(bundle, rogue_grant.client_factory(), {})
    undo = view.steps["undo-quarantine"]
    assert undo.action == "kms.restore-policy" and undo.status == "succeeded"
    assert (undo.params or {})["source"].startswith(str(bundle.resolve()) + "/artifacts/")
    assert _policy(rogue_grant, key) == original


def test_a_policy_changed_since_the_run_is_wiped_only_when_told_to(
    rogue_grant: Sandbox, quarantined_by_a_run: tuple[str, Any, Path]
) -> None:
    key, original, bundle = quarantined_by_a_run
    edited = _policy(rogue_grant, key)
    edited["Statement"].append(
        {"Sid": "someone", "Effect": "Allow", "Principal": {"AWS": GLASS}, "Action": "kms:*"}
    )
    rogue_grant.session().client("kms").put_key_policy(
        KeyId=key, PolicyName="default", Policy=json.dumps(edited)
    )
    kept = roll_back(bundle, rogue_grant.client_factory(), {"drift-quarantine": "keep"})
    assert "someone changed its policy since the run" in str(kept.steps["drift-quarantine"].params)
    assert kept.steps["undo-quarantine"].status == "skipped"
    assert _policy(rogue_grant, key) == edited
    roll_back(bundle, rogue_grant.client_factory(), {"drift-quarantine": "undo-anyway"})
    assert _policy(rogue_grant, key) == original


# -- the plan: what each kind of change comes to ---------------------------------------------


def test_the_plan_pairs_changes_undone_within_the_run_and_says_when_it_is_too_late(
    rogue_grant: Sandbox, tmp_path: Path
) -> None:
    from datetime import timedelta

    key = rogue_grant.keys["payments"]["id"]
    playbook = tmp_path / "p.yaml"
    playbook.write_text(
        "id: p\ntitle: P\nsteps:\n"
        f"  - {{id: disable, action: kms.disable-key, with: {{key: {key}}}}}\n"
        f"  - {{id: enable, action: kms.enable-key, with: {{key: {key}}}}}\n"
        f"  - {{id: tag, action: kms.tag-key, with: {{key: {key}}}}}\n"
        f"  - {{id: delete, action: kms.schedule-deletion, with: {{key: {key}}}}}\n"
    )
    result = run_playbook(
        load_playbook(playbook), rogue_grant.client_factory(), tmp_path / "ev", yes=True
    )
    assert result.status == "succeeded", result.error
    registry = actions.registry()
    view = rollback.load(result.bundle)
    now = utc_now()
    plan = rollback.plan(result.bundle, view, registry, now)
    kinds = {i.step_id: i.kind for i in plan.items}
    assert kinds == {"delete": "undo", "tag": "unneeded", "enable": "undone", "disable": "undone"}
    assert [i.step_id for i in plan.items] == ["delete", "tag", "enable", "disable"]  # newest first
    (undo,) = plan.undos
    assert undo.undo is not None and undo.undo.action == "kms.cancel-deletion"
    assert "it was Enabled before the step: enable it again" in undo.text
    assert plan.keys == [key]

    late = rollback.plan(result.bundle, view, registry, now + timedelta(days=31))
    (expired,) = late.not_undone
    assert expired.kind == "expired" and expired.text.startswith("too late: kms.cancel-deletion")
    assert not late.undos


def test_rotations_and_revoked_grants_say_why_they_cannot_be_undone() -> None:
    from kmsir.actions.base import IRREVERSIBLE, Done
    from kmsir.actions.kms_grants import RevokeGrants
    from kmsir.actions.kms_rotation import EnableRotation, RotateNow

    key = "1234abcd-12ab-34cd-56ef-1234567890ab"

    def done(**kw: Any) -> Done:
        base: dict[str, Any] = dict(
            step_id="s",
            params={"key": "alias/x"},
            outputs={},
            before=None,
            after=None,
            bundle="/b",
        )
        return Done(**{**base, **kw})

    rotated = RotateNow().undo(done(outputs={"key_id": key, "rotations": 2}))
    assert rotated is not None and rotated.action == IRREVERSIBLE
    assert "a rotation cannot be undone" in rotated.summary
    period = EnableRotation().undo(
        done(outputs={"key_id": key}, before={"enabled": True, "period_days": 365})
    )
    assert period is not None and period.action == "kms.enable-rotation"
    assert period.params == {"key": key, "period_days": 365}
    off = EnableRotation().undo(done(outputs={"key_id": key}, before={"enabled": False}))
    assert off is not None and off.action == IRREVERSIBLE
    assert f"aws kms disable-key-rotation --key-id {key}" in off.summary
    revoked = RevokeGrants().undo(
        done(
            outputs={"key_id": key, "revoked": ["g1", "g2"]},
            artifacts=("artifacts/03-revoke/grants-before.json",),
        )
    )
    assert revoked is not None and revoked.action == IRREVERSIBLE
    assert revoked.summary.count("a revoked grant cannot be restored") == 2
    assert "kept in artifacts/03-revoke/grants-before.json" in revoked.summary
    # an ARN names the key's Region: the undo keeps it; an alias may name another key by now
    arn = f"arn:aws:kms:eu-west-2:123456789012:key/{key}"
    regional = RotateNow().undo(done(params={"key": arn}))
    assert regional is not None and regional.params["key"] == arn

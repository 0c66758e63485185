"""``kmsir approve`` and ``kmsir deny`` (issue 21): the approver sees the waiting step's
preview, signs with their own credentials, and hears what the run made of the answer; a
tampered bundle, a step not waiting, and no terminal without ``--yes`` are refused before
anything is signed. The run's side is played by hand (``approvalkit.WaitingRun``); the whole
exchange with a real run is in the sandbox's end-to-end test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kmsir.aws import ClientFactory
from kmsir.cli import approve as approve_cli
from kmsir.evidence import approvals, entries, integrity
from kmsir.evidence.bundle import read_journal

from .approvalkit import STEP, WaitingRun
from .approvalkit import two_users as make_users
from .clikit import cli


@pytest.fixture
def two_users(moto_clients: ClientFactory) -> dict[str, Any]:
    return make_users(moto_clients)


def _patience(monkeypatch: pytest.MonkeyPatch, run_side: Any = None) -> list[float]:
    """The commands wait on a clock of the test's: each sleep advances it, and lets the run's
    side (``run_side``) take its turn. Returns the sleeps made."""
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if run_side is not None:
            run_side()

    monkeypatch.setattr(
        approve_cli, "PATIENCE", approve_cli.Patience(clock=lambda: sum(slept), sleep=sleep)
    )
    return slept


@pytest.fixture
def approver_env(two_users: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The approver's shell: alice's credentials in the environment."""
    session, _, secret = two_users["alice"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", session.get_credentials().access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    return two_users


def test_approve_signs_with_the_approvers_own_credentials_and_says_the_outcome(
    approver_env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = WaitingRun(tmp_path, approver_env["clients"])
    _patience(monkeypatch, run.answer_inbox)
    ran = cli("approve", run.bundle, STEP, "--reason", "leaked key, confirmed", "--yes")
    assert ran.exit_code == 0, ran.output
    alice = approver_env["alice"][1]
    assert ran.stdout.strip().startswith(f"approved: step {STEP}, as {alice} (STS request ")
    # what the approver saw: the responder's preview, from the journal
    shown = " ".join(ran.stderr.split())
    for seen in ("kms:ScheduleKeyDeletion", "PendingWindowInDays=30", "alias/payments"):
        assert seen in shown
    assert "role/payments-app loses Decrypt" in shown and "kms.cancel-deletion" in shown
    assert "requested by arn:aws:sts::123456789012:user/moto" in shown
    # and the details the responder could ask for: parameters, permissions, on_error, when
    for detail in (
        'key: "alias/payments"',
        "IAM permissions: kms:ScheduleKeyDeletion",
        "on error: stop",
        "when: steps.scope.confirmed",
    ):
        assert detail in shown
    given = read_journal(run.bundle / "journal.jsonl").view().steps[STEP].approvals
    assert given is not None and [g.reason for g in given.given] == ["leaked key, confirmed"]
    assert integrity.check(run.bundle).problems == []


def test_deny_with_a_profile_is_said_as_denied(
    two_users: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    session, bob, secret = two_users["bob"]
    credentials = Path(os.environ["AWS_SHARED_CREDENTIALS_FILE"])
    credentials.write_text(
        f"[approver]\naws_access_key_id = {session.get_credentials().access_key}\n"
        f"aws_secret_access_key = {secret}\n"
    )
    run = WaitingRun(tmp_path, two_users["clients"])
    _patience(monkeypatch, run.answer_inbox)
    ran = cli("deny", run.bundle, STEP, "--profile", "approver", "--yes")
    assert ran.exit_code == 0, ran.output
    assert ran.stdout.startswith(f"denied: step {STEP}, as {bob}; the step fails")
    state = read_journal(run.bundle / "journal.jsonl").view().steps[STEP].approvals
    assert state is not None and state.denied is not None and state.denied.reason is None
    assert cli("deny", run.bundle, STEP, "--profile", "nope", "--yes").exit_code == 2


def test_an_answer_the_run_refuses_says_why_in_one_line(
    approver_env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = WaitingRun(tmp_path, approver_env["clients"])
    why = "arn:aws:iam::123456789012:user/alice runs this playbook: a second person must approve"
    _patience(monkeypatch, lambda: run.answer_inbox(refuse=why))
    ran = cli("approve", run.bundle, STEP, "--yes")
    assert ran.exit_code == 1
    assert ran.stderr.splitlines()[-1] == f"kmsir: error: the run refused your approve: {why}"
    assert "Traceback" not in ran.output


def test_no_acknowledgement_in_time_leaves_the_answer_in_the_inbox(
    approver_env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = WaitingRun(tmp_path, approver_env["clients"])
    slept = _patience(monkeypatch)  # the run never looks
    ran = cli("approve", run.bundle, STEP, "--yes")
    assert ran.exit_code == 1
    last = ran.stderr.splitlines()[-1]
    assert last.startswith("kmsir: error: no acknowledgement from the run within 60 s")
    (answer,) = run.inbox()
    assert answer[:-5] in last and str(approvals.inbox(run.bundle)) in last
    assert len(slept) == 120  # polled every 0.5 s of the run's clock, then gave up


# -- refusals --------------------------------------------------------------------------------


def test_a_tampered_bundle_is_refused_before_anything_is_signed(
    approver_env: dict[str, Any], tmp_path: Path
) -> None:
    run = WaitingRun(tmp_path, approver_env["clients"])
    journal = run.bundle / "journal.jsonl"
    journal.write_bytes(journal.read_bytes().replace(b"Enabled, 2 grants", b"Disabled, 0 grant"))
    ran = cli("approve", run.bundle, STEP, "--yes")
    assert ran.exit_code == 1
    assert len(ran.stderr.splitlines()) == 1
    assert f"{run.bundle}: does not verify: journal.jsonl line 2: hash does not match" in ran.stderr
    assert "nothing was signed" in ran.stderr
    assert run.inbox() == []


def test_a_step_that_is_not_waiting_is_refused(
    approver_env: dict[str, Any], tmp_path: Path
) -> None:
    run = WaitingRun(tmp_path, approver_env["clients"])
    unknown = cli("approve", run.bundle, "nope", "--yes")
    assert unknown.exit_code == 2
    assert "step 'nope': no such step in run" in unknown.stderr
    run.writer.append(
        entries.ApprovalTimedOut(
            request="0123456789abcdef", until="2026-12-01T10:30:00Z", approved=0, count=1
        ),
        step=STEP,
    )
    late = cli("deny", run.bundle, STEP, "--yes")
    assert late.exit_code == 2
    assert late.stderr.strip() == (
        f"kmsir: error: step '{STEP}' of run {run.writer.run_id} is not waiting for an "
        "approval: its approval timed out"
    )
    assert run.inbox() == []


def test_without_a_terminal_the_preview_is_shown_and_yes_is_asked_for(
    approver_env: dict[str, Any], tmp_path: Path
) -> None:
    run = WaitingRun(tmp_path, approver_env["clients"])
    ran = cli("approve", run.bundle, STEP, stdin="y\n")
    assert ran.exit_code == 2
    assert "kms:ScheduleKeyDeletion" in ran.stderr
    assert ran.stderr.splitlines()[-1] == (
        "kmsir: error: approve: no terminal to confirm at; nothing was signed (read the "
        "preview above, then pass --yes)"
    )
    assert run.inbox() == []


def test_a_preview_that_does_not_match_its_digest_is_refused(
    approver_env: dict[str, Any], tmp_path: Path
) -> None:
    run = WaitingRun(tmp_path, approver_env["clients"], preview_sha256="0" * 64)
    ran = cli("approve", run.bundle, STEP, "--yes")
    assert ran.exit_code == 1
    assert "the journaled preview does not match its sha256" in ran.stderr
    assert run.inbox() == []


# -- with a run that waits -------------------------------------------------------------------

PLAYBOOK = """\
id: two-person
title: Delete a compromised key, with a second person's approval
steps:
  - id: delete
    action: kms.schedule-deletion
    with: {{key: {key}, pending_window_days: 7}}
    approvals: {{count: 1}}
"""


def test_approve_lets_a_waiting_run_go_on(
    two_users: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run (in a thread, signed in as alice) waits at ``delete``; bob approves with
    ``kmsir approve``; the run takes bob's identity from STS and deletes the key."""
    import threading
    import time
    from datetime import timedelta

    import boto3

    from kmsir import actions
    from kmsir.aws import ClientFactory
    from kmsir.evidence.bundle import utc_now
    from kmsir.prompts import NoPrompter
    from kmsir.run.engine import Engine, RunOptions, RunResult

    from .conftest import load_playbook

    alice, alice_arn, alice_secret = two_users["alice"]
    bob, bob_arn, bob_secret = two_users["bob"]
    responder = ClientFactory(
        session_factory=lambda: boto3.Session(
            aws_access_key_id=alice.get_credentials().access_key,
            aws_secret_access_key=alice_secret,
            region_name="eu-west-1",
        ),
        region="eu-west-1",
        guard_send=True,
    )
    key = responder.client("kms").create_key()["KeyMetadata"]["KeyId"]
    book = tmp_path / "two-person.yaml"
    book.write_text(PLAYBOOK.format(key=key))
    # the run's clock moves half a second a look at its inbox; it sleeps a hundredth
    moments = [utc_now()]
    found: list[Path] = []
    ended: list[RunResult] = []

    def sleep(seconds: float) -> None:
        moments.append(moments[-1] + timedelta(seconds=seconds))
        time.sleep(0.01)

    engine = Engine(
        actions=actions.registry(),
        clients=responder,
        prompter=NoPrompter(),
        clock=lambda: moments[-1],
        sleep=sleep,
        on_bundle=found.append,
    )
    options = RunOptions(incident_id="INC-2P", evidence_dir=tmp_path / "ev", mode="live", yes=True)
    runner = threading.Thread(
        target=lambda: ended.append(engine.run(load_playbook(book), {}, options)), daemon=True
    )
    runner.start()
    for _ in range(2000):  # until the step waits (or the run ended without waiting)
        if found and read_journal(found[0] / "journal.jsonl").view().waiting_step(STEP):
            break
        if not runner.is_alive():
            break
        time.sleep(0.01)
    assert found and runner.is_alive(), ended
    monkeypatch.setattr(approve_cli, "PATIENCE", approve_cli.Patience(every_s=0.01))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", bob.get_credentials().access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", bob_secret)
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    ran = cli("approve", found[0], STEP, "--reason", "confirmed with the key's owner", "--yes")
    runner.join(timeout=60)
    assert ran.exit_code == 0, ran.output
    assert ran.stdout.startswith(f"approved: step {STEP}, as {bob_arn}")
    assert ended and ended[0].status == "succeeded", ended
    kms = responder.client("kms")
    assert kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    state = read_journal(found[0] / "journal.jsonl").view().steps[STEP].approvals
    assert state is not None
    assert [g.identity["arn"] for g in state.given] == [bob_arn] != [alice_arn]


def test_a_long_session_token_is_read_back_and_one_too_long_is_refused_unwritten(
    approver_env: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session token of some thousands of characters (a role chain's, with session tags)
    fits the one limit both the answer file and the run's check use; one longer than that is
    refused before anything is written, in one line (the run could not read it back)."""
    run = WaitingRun(tmp_path, approver_env["clients"])
    _patience(monkeypatch, run.answer_inbox)
    monkeypatch.setenv("AWS_SESSION_TOKEN", "T" * 3000)
    ran = cli("approve", run.bundle, STEP, "--yes")
    assert ran.exit_code == 0, ran.output
    assert len(run.inbox()) == 1
    kept = approvals.read_answers(run.bundle)[0].answer
    assert kept is not None and kept.signed.headers["X-Amz-Security-Token"] == "T" * 3000

    again = WaitingRun(tmp_path / "other", approver_env["clients"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", "T" * (approvals.MAX_HEADER + 1))
    ran = cli("approve", again.bundle, STEP, "--yes")
    assert ran.exit_code == 1
    last = ran.stderr.splitlines()[-1]
    assert last.startswith("kmsir: error: the signed answer is not one the run can read")
    assert "nothing was written" in last and "Traceback" not in ran.output
    assert again.inbox() == []

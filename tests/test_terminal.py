"""A responder at a real terminal: interactive runs driven under tmux (send-keys, then read
the screen), checked against what the screen showed and the AWS state they leave."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from kmsir.evidence import integrity
from kmsir.evidence.bundle import JOURNAL
from tests.journalkit import journal_lines

from .conftest import bundles, served, served_client
from .termkit import TMUX, Terminal

pytestmark = pytest.mark.skipif(
    TMUX is None and not os.environ.get("CI"),
    reason="needs tmux (apt-get install tmux); .ci/run installs it",
)


def _environment(workdir: Path, **extra: str) -> dict[str, str]:
    """All the program sees: no AWS profile, config or credentials of the machine."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "TERM": "xterm-256color",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        **extra,
    }


def _bundle(screen: str) -> Path:
    found = re.search(r"^bundle: (\S+)$", screen, re.MULTILINE)
    assert found, screen
    return Path(found[1])


def _entries(bundle: Path) -> list[dict]:  # type: ignore[type-arg]
    return journal_lines(bundle / JOURNAL)


def test_a_responder_cancels_a_ransom_deletion_at_the_terminal(tmp_path: Path) -> None:
    """ransom-deletion served on 127.0.0.1; the responder runs the deletion-response playbook
    against it, gives the key when asked (a wrong form first), reads the preview, asks for
    details, approves the cancellation, keeps the key disabled. Afterwards the key, asked
    independently, is Disabled and no longer pending."""

    with served("ransom-deletion", tmp_path) as exported:
        term = Terminal(
            tmp_path,
            [
                sys.executable, "-m", "kmsir", "run", "kms-key-deletion-response",
                "--incident", "INC-TMUX-1",
                "--evidence-dir", str(tmp_path / "evidence"),
            ],
            _environment(tmp_path, **exported),
        )  # fmt: skip
        try:
            # the required input not given on the command line is asked, and checked
            term.wait_for("? key (kms-key)")
            term.type("orders-db")
            term.keys("Enter")
            term.wait_for("is not a KMS key id")
            term.keys(*["BSpace"] * len("orders-db"))
            term.type("alias/orders-db")
            term.keys("Enter")
            term.run_steps("snapshot", "collect", "findings")
            preview = term.wait_for("? Step cancel:")
            term.keys("Down", "Down", "Down", "Enter")  # Show details
            details = term.wait_for("IAM permissions: kms:DescribeKey, kms:CancelKeyDeletion")
            term.keys("Enter")  # the menu again; Run it
            term.wait_for("succeeded cancel:")
            term.wait_for("Applications using it")  # the decision after the cancellation
            term.keys("Enter")  # keep-disabled
            term.run_steps("after")
            status = term.exit_status()
            screen = term.screen()
        finally:
            term.close()
        kms = served_client(exported, "kms")
        key = kms.describe_key(KeyId="alias/orders-db")["KeyMetadata"]

    assert status == 0, screen
    assert key["KeyState"] == "Disabled" and "DeletionDate" not in key
    # what the responder was shown before approving: the exact call, the live state, the undo
    cancel_panel = preview[preview.index("Step 5/10 cancel") :]
    assert "CHANGES AWS STATE" in cancel_panel
    assert f"will call kms:CancelKeyDeletion KeyId={key['KeyId']}" in cancel_panel
    assert "current  key state PendingDeletion, deletion on" in cancel_panel
    assert "undo     none needed" in cancel_panel
    assert "when: 'snapshot' not in steps or steps.snapshot.deletion_date" in details
    # the end: the summary table and where the evidence is
    assert re.search(r"│\s+5 │ cancel\s+│ succeeded │ .*PendingDeletion -> Disabled", screen)
    assert re.search(r"│\s+7 │ enable\s+│ skipped", screen)
    bundle = _bundle(screen)
    assert integrity.verify(bundle) == []
    decisions = [e for e in _entries(bundle) if e["type"] == "decision"]
    cancel = next(e["data"] for e in decisions if e["step"] == "cancel")
    assert (cancel["answer"], cancel["by"]) == ("approved", "interactive")
    assert cancel["state"].startswith("key state PendingDeletion")
    decide = next(e["data"] for e in decisions if e["step"] == "decide")
    assert (decide["answer"], decide["by"]) == ("keep-disabled", "interactive")


def test_an_irreversible_step_wants_the_key_typed_and_a_skip_wants_a_reason(
    tmp_path: Path,
) -> None:
    """rogue-grant in the sandbox, the containment choice scripted: revoking the grants asks
    for the key's alias and asks again after a wrong one. A note typed at a preview goes on
    the record. The scenario's inject (the attacker schedules deletion once the key is
    disabled) shows on screen, and the responder cancels it; skipping the last snapshot asks
    why, and the note that needed it fails and is skipped from the failure menu."""
    answers = tmp_path / "answers.yaml"
    answers.write_text("decide: revoke-grants-and-disable\nactors: none\n")
    term = Terminal(
        tmp_path,
        [
            sys.executable, "-m", "kmsir", "run", "kms-key-compromise",
            "--sandbox", "rogue-grant", "--answers", str(answers), "--incident", "INC-TMUX-2",
            "--evidence-dir", str(tmp_path / "evidence"),
        ],
        _environment(tmp_path),
    )  # fmt: skip
    try:
        term.wait_for("SIMULATED · sandbox scenario rogue-grant")
        term.run_steps("snapshot", "collect", "findings", "blast")
        revoke = term.wait_for("? Step revoke:")
        term.keys("Down", "Down", "Enter")  # Add a note to the record
        term.wait_for("? Note:")
        term.type("Grant backup-sync was never approved (CHG-1881)")
        term.keys("Enter")
        term.wait_for("noted.")
        term.keys("Enter")  # Run it: the key must be typed
        term.wait_for("This cannot be undone. Type")
        term.type("alias/payments-staging")
        term.keys("Enter")
        term.wait_for("is not")
        term.type("alias/payments-prod")
        term.keys("Enter")
        term.wait_for("succeeded revoke:")
        disable = term.wait_for("? Step disable:")
        term.keys("Enter")
        # the scenario's inject: the attacker schedules deletion once the key is disabled
        term.wait_for("INJECT The attacker's Decrypt calls fail now")
        term.run_steps("recheck", "cancel")
        term.wait_for("? Step after:")
        term.keys("Down", "Enter")  # Skip it
        term.wait_for("Why skip it?")
        term.keys("Enter")  # an empty reason is not taken
        term.wait_for("a reason, please")
        term.type("forensics image of the payments hosts first")
        term.keys("Enter")
        # the recovery note reads the skipped snapshot: guarded, it says so instead of failing
        term.wait_for("succeeded recovery: The key's state after containment was not recorded")
        status = term.exit_status()
        screen = term.screen()
    finally:
        term.close()

    assert status == 0, screen
    panel = revoke[revoke.index("Step 7/16 revoke") :]
    assert "undo     IRREVERSIBLE" in panel
    assert "arn:aws:iam::444455556666:role/backup-sync" in panel
    # what revoking and disabling break, from the blast radius, before each is approved
    rogue = "24fe5aa3b4a26f35fe4de2bf0523647bd333d139ac3d764739c76bd0cfe632d9"  # 64 hex, as AWS
    assert f"impact   revoke grant {rogue} (backup-sync): only 444455556666 loses access" in panel
    panel = disable[disable.index("Step 8/16 disable") :]
    assert "impact   disable: " in panel and "payments-app (24 calls" in panel
    assert "payments-db quarterly DR copy" in panel
    # the actor was left alone (answers file: none): said at the end, in full
    assert "Run succeeded with open risks" in screen
    assert "role ci-deploy (high findings) was not contained" in screen
    assert "'alias/payments-staging' is not" in screen
    bundle = _bundle(screen)
    entries = _entries(bundle)
    done = {e["step"]: e["data"] for e in entries if e["type"] == "step-succeeded"}
    assert done["recheck"]["outputs"]["external_grant_ids"] == []  # the rogue grant is gone
    assert done["cancel"]["after"]["state"] == "Disabled"  # the injected deletion, cancelled
    assert [e["step"] for e in entries if e["type"] == "inject"] == ["disable"]
    skipped = next(
        e["data"] for e in entries if e["type"] == "step-skipped" and e["step"] == "after"
    )
    assert "forensics image of the payments hosts first" in skipped["reason"]
    assert not [e for e in entries if e["type"] == "step-failed"]
    notes = [e["data"] for e in entries if e["type"] == "note" and e["step"] == "revoke"]
    assert notes == [
        {"text": "Grant backup-sync was never approved (CHG-1881)", "by": "interactive"}
    ]
    report = (bundle / "report.md").read_text()
    assert "CHG-1881" in report and "forensics image of the payments hosts first" in report
    assert json.loads((bundle / "manifest.json").read_text())["simulated"] is True


def test_ctrl_c_at_a_prompt_leaves_a_bundle_that_resumes(tmp_path: Path) -> None:
    """A mistyped key fails the snapshot: the failure menu corrects the input and retries.
    Then Ctrl-C at the cancellation's preview: exit 130, nothing sent, the exact resume
    command said, and `kmsir resume` (scripted this time) finishes the run from that step
    with the corrected key."""
    import subprocess

    evidence = tmp_path / "evidence"
    term = Terminal(
        tmp_path,
        [
            sys.executable, "-m", "kmsir", "run", "kms-key-deletion-response",
            "--sandbox", "ransom-deletion", "--incident", "INC-TMUX-3",
            "--evidence-dir", str(evidence), "-i", "key=alias/orders-bd",
        ],
        _environment(tmp_path),
    )  # fmt: skip
    try:
        term.run_steps("snapshot")
        term.wait_for("What now?")  # the failure menu: retry, skip, abort, edit an input
        term.keys("Down", "Down", "Down", "Enter")  # edit-input
        term.wait_for("Which input?")
        term.keys("Enter")  # key
        term.wait_for("New value for key")
        term.type("alias/orders-db")
        term.keys("Enter")
        term.wait_for("? Step snapshot:", count=2)  # the retry is previewed afresh
        term.keys("Enter")
        term.wait_for("succeeded snapshot:")
        term.run_steps("collect", "findings")
        term.wait_for("? Step cancel:")
        term.keys("C-c")
        status = term.exit_status()
        screen = term.screen()
    finally:
        term.close()
    assert status == 130, screen
    (bundle,) = bundles(evidence / "INC-TMUX-3")
    flat = " ".join(screen.split())
    assert f"kmsir: interrupted; the evidence is kept in {bundle}" in flat
    assert f"continue with: kmsir resume {bundle.resolve()}" in flat
    assert integrity.verify(bundle) == []
    entries = _entries(bundle)
    assert entries[-1]["type"] == "run-interrupted"
    assert not [e for e in entries if e["type"] == "api-intent"]  # nothing was sent

    answers = tmp_path / "answers.yaml"
    answers.write_text("cancel: approve\ndecide: keep-disabled\n")
    resumed = subprocess.run(
        [sys.executable, "-m", "kmsir", "resume", str(bundle), "--answers", str(answers)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=_environment(tmp_path),
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    entries = _entries(bundle)
    after = next(
        e["data"] for e in entries if e["type"] == "step-succeeded" and e["step"] == "after"
    )
    assert after["outputs"]["state"] == "Disabled"
    ran = [e["step"] for e in entries if e["type"] == "step-started"]
    assert ran.count("snapshot") == 2 and ran.count("collect") == 1  # the retry; not again
    changed = next(e["data"] for e in entries if e["type"] == "input-changed")
    assert (changed["from"], changed["to"]) == ("alias/orders-bd", "alias/orders-db")
    assert integrity.verify(bundle) == []

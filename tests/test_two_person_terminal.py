"""The two-person rule at two real terminals (tmux): the responder's run waits in one, the
second person approves in the other, with the command copied from the first one's screen.

Pane 1 runs ``kmsir run ... --sandbox rogue-grant --require-approval``; pane 2 is the
approver's own shell (with a session token and a profile of their own, which the command
shown must not let sign in the second identity's place). Waits are bounded (``wait_for``);
nothing asserts on wall time.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

import pytest

import kmsir
from kmsir.evidence import integrity
from kmsir.evidence.bundle import JOURNAL, read_journal

from .termkit import TMUX, Terminal

pytestmark = pytest.mark.skipif(
    TMUX is None and not os.environ.get("CI"),
    reason="needs tmux (apt-get install tmux); .ci/run installs it",
)

SECOND = "arn:aws:iam::123456789012:user/second-responder"
REASON = "leaked key, confirmed with the payments team"
PLAYBOOK = """\
id: two-person-deletion
title: Schedule a compromised key's deletion, with a second person's approval
steps:
  - id: snapshot
    action: kms.snapshot
    with: {key: alias/payments-prod}
  - id: schedule-deletion
    name: Schedule the key's deletion
    action: kms.schedule-deletion
    with: {key: "{{ steps.snapshot.key_id }}", pending_window_days: 7}
"""


def _kmsir_path() -> str:
    """Where this interpreter finds kmsir (whether installed or not), and PYTHONPATH if set:
    panes start with ``env -i``."""
    source = str(Path(kmsir.__file__).resolve().parents[1])
    return os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)


def _shim(where: Path) -> Path:
    """``where`` with a ``kmsir`` that runs this interpreter's kmsir (the command on the
    screen names ``kmsir``): the test works whichever interpreter runs it."""
    where.mkdir(parents=True, exist_ok=True)
    shim = where / "kmsir"
    shim.write_text(
        f"#!/bin/sh\nPYTHONPATH={shlex.quote(_kmsir_path())}\nexport PYTHONPATH\n"
        f'exec {shlex.quote(sys.executable)} -m kmsir "$@"\n'
    )
    shim.chmod(0o755)
    return where


def _environment(home: Path, **extra: str) -> dict[str, str]:
    """All a pane's program sees: no AWS profile, config or credentials of the machine;
    ``kmsir`` on the PATH first (the command on the screen names it so)."""
    path = f"{_shim(home.parent / 'bin')}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    return {
        "PATH": path,
        "PYTHONPATH": _kmsir_path(),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TERM": "xterm-256color",
        "PS1": "approver$ ",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        **extra,
    }


def test_the_responder_waits_the_approver_approves_from_another_terminal(
    tmp_path: Path,
) -> None:
    (tmp_path / "responder").mkdir()
    (tmp_path / "approver").mkdir()
    book = tmp_path / "delete.yaml"
    book.write_text(PLAYBOOK)
    evidence = tmp_path / "evidence"
    responder = Terminal(
        tmp_path / "responder",
        [
            sys.executable, "-m", "kmsir", "run", str(book), "--sandbox", "rogue-grant",
            "--require-approval", "--yes", "--incident", "INC-2P-TMUX",
            "--evidence-dir", str(evidence),
        ],
        _environment(tmp_path / "responder"),
    )  # fmt: skip
    approver = Terminal(
        tmp_path / "approver",
        ["sh"],
        _environment(
            tmp_path / "approver",
            AWS_SESSION_TOKEN="the-approver-s-own-session-token",
            AWS_PROFILE="approver-own-profile",
        ),
    )
    try:
        waiting = responder.wait_for("  SIMULATED: the credentials are", timeout=120)
        shown = re.search(r"^\s+(env -u .* kmsir approve .*--reason '\.\.\.')$", waiting, re.M)
        assert shown is not None, waiting
        command = shown[1].replace("'...'", f"'{REASON}'")
        # the approver reads the preview, and first answers no
        approver.wait_for("approver$ ")
        approver.type(command)
        approver.keys("Enter")
        asked = approver.wait_for("? Approve step schedule-deletion as shown above?")
        approver.type("n")
        declined = approver.wait_for("not approved: nothing was signed or written")
        approver.type('echo "[approve exit $?]"')
        approver.keys("Enter")
        approver.wait_for("[approve exit 1]")
        # then again, and yes
        approver.type(command)
        approver.keys("Enter")
        approver.wait_for("? Approve step schedule-deletion as shown above?", count=2)
        approver.type("y")
        # above the 60 s the command itself waits for the run to acknowledge the answer
        approved = approver.wait_for(f"approved: step schedule-deletion, as {SECOND}", timeout=120)
        approver.type('echo "[approve exit $?]"')
        approver.keys("Enter")
        approver.wait_for("[approve exit 0]")
        status = responder.exit_status(timeout=120)
        screen = responder.screen()
    finally:
        responder.close()
        approver.close()

    # the responder's screen: the wait, who to hand the command to, then the approval
    assert "WAITING for 1 more approval(s) of step 'schedule-deletion'" in waiting
    assert "kmsir deny " in waiting
    assert status == 0, screen
    assert f"approved by {SECOND} (1/1 approvals)" in screen
    assert re.search(r"succeeded schedule-deletion: .*Enabled ->\s+PendingDeletion", screen)
    # the approver's screen: what they decided on, and what came of it
    assert "kms:ScheduleKeyDeletion" in asked and "SIMULATED" in asked
    assert "to refuse it, run kmsir deny " in declined
    assert "written; waiting for the run to check it" in approved
    bundle = Path(re.findall(r"^bundle: (\S+)$", screen, re.M)[-1])
    bundle = bundle if bundle.is_absolute() else tmp_path / "responder" / bundle
    view = read_journal(bundle / JOURNAL).view()
    state = view.steps["schedule-deletion"].approvals
    assert state is not None
    assert [(g.identity["arn"], g.reason) for g in state.given] == [(SECOND, REASON)]
    assert len(state.history) == 1  # the "no" wrote nothing
    assert integrity.verify(bundle) == []
    assert SECOND in (bundle / "report.md").read_text()

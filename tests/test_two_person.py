"""The two-person rule end to end (issue 21's "done when"), in the sandbox with two identities.

The responder's run (in process, on the test's clock: its looks at the inbox never wait) stops
at ``schedule-deletion``; the second person runs ``kmsir approve`` or ``kmsir deny`` as a
separate program, with the credentials the waiting screen gives (the world's second identity,
IAM user ``second-responder``), exactly as a person would at another terminal. Each command
starts when the run next looks at its inbox, and the run looks again until it ends (bounded:
a look every 0.5 s of the run's clock, at most 0.05 s of real time each while a command runs).

moto checks no SigV4 signature: the sandbox names the approver by the access key id alone;
real STS also refuses a signature changed after signing or older than 15 minutes
(https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv.html).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

import kmsir as kmsir_package
from kmsir import actions, report
from kmsir.actions.base import ApprovalWait, NullReporter
from kmsir.evidence import approvals
from kmsir.evidence.bundle import JOURNAL, read_journal
from kmsir.evidence.entries import ApprovalGiven, ApprovalRefused
from kmsir.evidence.view import RunView
from kmsir.prompts import NoPrompter, ScriptedPrompter
from kmsir.run import launch
from kmsir.run.engine import Engine, RunOptions, RunResult
from kmsir.sandbox import DUMMY_CREDENTIALS, Sandbox
from kmsir.sandbox import scenario as scenarios

from .clikit import cli

ACCOUNT = "123456789012"
SECOND = f"arn:aws:iam::{ACCOUNT}:user/second-responder"
#: Who the responder is in the sandbox (moto's name for its dummy credentials).
RESPONDER = f"arn:aws:sts::{ACCOUNT}:user/moto"
START = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
REASON = "key leaked in a public repo; confirmed with the payments team"

PLAYBOOK = """\
id: two-person-deletion
title: Schedule a compromised key's deletion, with a second person's approval
steps:
  - id: snapshot
    phase: identification
    action: kms.snapshot
    with: {{key: alias/payments-prod}}
  - id: schedule-deletion
    name: Schedule the key's deletion
    phase: eradication
    action: kms.schedule-deletion
    with: {{key: "{{{{ steps.snapshot.key_id }}}}", pending_window_days: 7}}
{extra}"""
#: Only a second responder may approve, within 30 minutes; a deny fails the run.
RESTRICTED = """\
    approvals: {count: 1, from: ["arn:aws:iam::123456789012:user/second-*"]}
    approval_timeout: 30m
"""


def kmsir_path() -> str:
    """Where this interpreter finds kmsir (whether installed or not), and PYTHONPATH if set."""
    source = str(Path(kmsir_package.__file__).resolve().parents[1])
    return os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)


def kmsir_shim(where: Path) -> Path:
    """``where`` with a ``kmsir`` in it (the command the waiting screen names) that runs this
    interpreter's kmsir: the tests work whichever interpreter runs them."""
    shim = where / "kmsir"
    shim.write_text(
        f"#!/bin/sh\nPYTHONPATH={shlex.quote(kmsir_path())}\nexport PYTHONPATH\n"
        f'exec {shlex.quote(sys.executable)} -m kmsir "$@"\n'
    )
    shim.chmod(0o755)
    return where


#: The directory of the ``kmsir`` shim, first on every approver's PATH (``shim``).
BIN = Path()


@pytest.fixture(autouse=True, scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> None:
    global BIN
    BIN = kmsir_shim(tmp_path_factory.mktemp("bin"))


def shell_env(home: Path, **extra: str) -> dict[str, str]:
    """A shell of the approver's own: no AWS settings of this machine; ``extra`` on top."""
    return {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PYTHONPATH": kmsir_path(),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        **extra,
    }


#: The approver's own shell holds a session token and a profile of their own: the command the
#: waiting screen gives must not let either sign in the second identity's place.
OWN = {"AWS_SESSION_TOKEN": "the-approver-s-own-session-token", "AWS_PROFILE": "approver"}


class Screen(NullReporter):
    """What the responder's terminal is shown while a step waits."""

    def __init__(self) -> None:
        self.waits: list[ApprovalWait] = []

    def waiting(self, wait: ApprovalWait) -> None:
        self.waits.append(wait)


@dataclass
class Command:
    """One program the second person runs: a shell command line, its environment, and what
    happens just before and after it (a tampered file, put back)."""

    line: str
    env: dict[str, str]
    before: Callable[[], None] = lambda: None
    after: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class Ran:
    line: str
    code: int
    stdout: str
    stderr: str


@dataclass
class Approvers:
    """The people at other terminals: each time the run looks at its inbox, the next command
    starts once the last one ended. The run's clock is the test's."""

    script: list[Callable[[Path, Screen], Command]] = field(default_factory=list)
    screen: Screen = field(default_factory=Screen)
    now: datetime = START
    bundle: Path | None = None
    ran: list[Ran] = field(default_factory=list)
    running: tuple[Command, subprocess.Popen[str]] | None = None

    def clock(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        if self.running is not None and self.running[1].poll() is None:
            time.sleep(0.05)  # the other person's program is still at work
            return
        self.finish()
        if self.script and self.bundle is not None:
            command = self.script.pop(0)(self.bundle, self.screen)
            command.before()
            started = subprocess.Popen(
                ["sh", "-c", command.line],
                env=command.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            self.running = (command, started)

    def finish(self) -> None:
        """Wait for the command running (bounded), and keep what it said."""
        if self.running is None:
            return
        command, process = self.running
        out, err = process.communicate(timeout=90)
        command.after()
        self.ran.append(Ran(command.line, process.returncode, out, err))
        self.running = None


def run_in_sandbox(
    tmp_path: Path,
    approvers: Approvers,
    *,
    scenario: str = "rogue-grant",
    require_approval: bool = True,
    extra: str = "",
    users: tuple[str, ...] = (),
    keys: dict[str, dict[str, str]] | None = None,
) -> tuple[RunResult, str, Sandbox]:
    """The playbook run in ``scenario``'s sandbox by a responder who approves each step; the
    result, the key's state afterwards, the sandbox. ``keys`` is filled, before the run, with
    the credentials of the second identity and of IAM ``users`` made for the test."""
    keys = {} if keys is None else keys
    book = tmp_path / "delete.yaml"
    book.write_text(PLAYBOOK.format(extra=extra))
    world = scenarios.load(scenario)
    with Sandbox(world, second_person=require_approval) as sandbox:
        iam = sandbox.session().client("iam")
        for name in users:
            iam.create_user(UserName=name)
            made = iam.create_access_key(UserName=name)["AccessKey"]
            keys[name] = credentials(made["AccessKeyId"], made["SecretAccessKey"])
        if sandbox.second is not None:
            second = sandbox.second
            keys[second.name] = credentials(second.access_key_id, second.secret_access_key)
        options = RunOptions(
            incident_id="INC-2P",
            evidence_dir=tmp_path / "ev",
            mode="sandbox",
            yes=True,  # the responder approves; the second person is still asked
            scenario=world.id,
            require_approval=require_approval,
        )
        venue = launch.sandboxed(sandbox, options, {"sandbox": {**sandbox.record()}})

        def started(root: Path) -> None:
            approvers.bundle = root

        engine = Engine(
            actions=actions.registry(),
            clients=venue.clients,
            prompter=ScriptedPrompter({}, source="test answers", fallback=NoPrompter()),
            reporter=approvers.screen,
            clock=approvers.clock,
            sleep=approvers.sleep,
            on_bundle=started,
        )
        from .conftest import load_playbook

        result = engine.run(load_playbook(book), {}, venue.options)
        approvers.finish()
        kms = sandbox.session().client("kms")
        state = kms.describe_key(KeyId=sandbox.keys["payments"]["id"])["KeyMetadata"]["KeyState"]
    return result, str(state), sandbox


def credentials(key: str, secret: str) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def view_of(bundle: Path) -> RunView:
    return read_journal(bundle / JOURNAL).view()


def reports(bundle: Path) -> tuple[str, str]:
    report.write(bundle, fmt="md")
    report.write(bundle, fmt="html")
    return (bundle / "report.md").read_text(), (bundle / "report.html").read_text()


def table(section: str) -> list[tuple[str, ...]]:
    """The approvals table's rows of step ``schedule-deletion``, without the step: request,
    answer, approver, account, signed (and STS request id), recorded, reason."""
    return [
        tuple(line[:-2].split(" | ")[1:])
        for line in section.splitlines()
        if line.startswith("| `schedule-deletion` | ")
    ]


def as_shown(bundle: Path, screen: Screen) -> Command:
    """The approve command the waiting screen showed, copied as a person would, their reason
    put in; run (with --yes: no terminal here) in the approver's own shell."""
    line = screen.waits[0].approve.replace("--reason '...'", f"--reason {shlex.quote(REASON)}")
    return Command(f"{line} --yes", shell_env(bundle.parent, **OWN))


def kmsir(bundle: Path, *args: str, env: dict[str, str]) -> Command:
    words = [sys.executable, "-m", "kmsir", *args[:1], str(bundle), *args[1:]]
    return Command(shlex.join(words), shell_env(bundle.parent, **env))


# -- approved --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["--require-approval", "scenario approvals: required"])
def test_the_second_identity_approves_and_the_key_is_scheduled_for_deletion(
    how: str, tmp_path: Path
) -> None:
    scenario, extra = "rogue-grant", ""
    if how.startswith("scenario"):  # the playbook's own approvals: apply, as in a live run
        extra = "    approvals: {count: 1}\n"
        data = yaml.safe_load((scenarios.scenario_dir() / "rogue-grant.yaml").read_text())
        data["approvals"] = "required"  # a tabletop rehearsing the rule
        scenario = str(tmp_path / "rogue-grant.yaml")
        Path(scenario).write_text(yaml.safe_dump(data, sort_keys=False))
    approvers = Approvers(script=[as_shown])
    result, state, sandbox = run_in_sandbox(
        tmp_path,
        approvers,
        scenario=scenario,
        require_approval=how == "--require-approval",
        extra=extra,
    )

    assert result.status == "succeeded", result.error
    assert state == "PendingDeletion"
    assert sandbox.second is not None and sandbox.second.arn == SECOND
    # the waiting screen: the exact command, with the second identity's credentials, SIMULATED
    wait = approvers.screen.waits[0]
    bundle = result.bundle
    key, secret = sandbox.second.access_key_id, sandbox.second.secret_access_key
    assert wait.approve == (
        "env -u AWS_SESSION_TOKEN -u AWS_SECURITY_TOKEN -u AWS_PROFILE -u AWS_DEFAULT_PROFILE "
        f"AWS_ACCESS_KEY_ID={key} AWS_SECRET_ACCESS_KEY={secret} kmsir approve "
        f"{bundle.resolve()} schedule-deletion --reason '...'"
    )
    assert wait.note is not None and wait.note.startswith("SIMULATED: ")
    assert wait.step_id == "schedule-deletion" and wait.deadline == "2026-03-02T09:30:00.000000Z"
    assert approvers.screen.waits[-1].news == f"approved by {SECOND}"
    # what the second person saw and was told
    (approved,) = approvers.ran
    assert approved.code == 0, approved.stderr
    assert "kms:ScheduleKeyDeletion" in approved.stderr  # the preview, as the responder saw it
    assert approved.stdout.startswith(f"approved: step schedule-deletion, as {SECOND}")
    # the journal: the identity STS named, what was seen, why
    step = view_of(bundle).steps["schedule-deletion"]
    assert step.approvals is not None and step.approvals.request is not None
    (given,) = step.approvals.given
    assert given.identity["arn"] == SECOND and given.identity["account"] == ACCOUNT
    assert given.reason == REASON and given.saw == step.approvals.request.preview_sha256
    assert given.file is not None and (bundle / given.file).is_file()
    # the reports name them
    md, html = reports(bundle)
    section = md[md.index("## Second-person approvals") : md.index("## Open risks")]
    assert "`schedule-deletion` (`kms.schedule-deletion`, Schedule the key's deletion)" in section
    assert "**approved**" in section and "(SIMULATED: " in section
    ((request, answer, who, account, signed, _, why),) = table(section)
    assert (request, answer, who, account, why) == (
        "#1",
        "approved",
        f"`{SECOND}`",
        f"`{ACCOUNT}`",
        REASON,
    )
    # the approver's own signed time, and the STS request id to find it in their CloudTrail
    assert signed == f"{given.answered}<br>`{given.sts_request_id}`" and given.sts_request_id
    assert f"<code>{SECOND}</code>" in html and REASON in html
    checked = cli("verify", bundle)
    assert checked.exit_code == 0, checked.output
    assert checked.stdout.startswith("intact:")


# -- refused ---------------------------------------------------------------------------------


def test_refused_answers_end_to_end_then_a_deny_stops_the_deletion(tmp_path: Path) -> None:
    """Against a run that really waits: a tampered bundle, a step that does not wait, the
    responder approving their own step, someone outside ``from:``; then a deny."""
    keys: dict[str, dict[str, str]] = {}  # filled once the world is up

    def tampered(bundle: Path, _: Screen) -> Command:
        artifact = sorted((bundle / "artifacts").glob("01-snapshot/*"))[0]
        kept = artifact.read_bytes()
        env = keys["second-responder"]
        command = kmsir(bundle, "approve", "schedule-deletion", "--yes", env=env)
        command.before = lambda: _write(artifact, kept + b" ")  # changed after the run wrote it
        command.after = lambda: _write(artifact, kept)
        return command

    def not_waiting(bundle: Path, _: Screen) -> Command:
        return kmsir(bundle, "approve", "snapshot", "--yes", env=keys["second-responder"])

    def responder(bundle: Path, _: Screen) -> Command:
        return kmsir(bundle, "approve", "schedule-deletion", "--yes", env=DUMMY_CREDENTIALS)

    def outsider(bundle: Path, _: Screen) -> Command:
        return kmsir(bundle, "approve", "schedule-deletion", "--yes", env=keys["outsider"])

    def deny(bundle: Path, screen: Screen) -> Command:
        line = screen.waits[0].deny.replace("'...'", "'the payments team still needs the key'")
        return Command(f"{line} --yes", shell_env(bundle.parent, **OWN))

    approvers = Approvers(script=[tampered, not_waiting, responder, outsider, deny])
    result, state, _ = run_in_sandbox(
        tmp_path, approvers, extra=RESTRICTED, users=("outsider",), keys=keys
    )

    assert result.status == "failed"
    assert result.error == (
        f"step 'schedule-deletion' (kms.schedule-deletion): denied by {SECOND}: "
        "the payments team still needs the key"
    )
    assert state == "Enabled"  # nothing was sent
    bundle = result.bundle
    codes = [(r.code, (r.stderr.strip().splitlines() or [""])[-1]) for r in approvers.ran]
    assert codes[0][0] == 1 and "does not verify" in codes[0][1]
    assert "nothing was signed" in codes[0][1]
    assert codes[1] == (
        2,
        f"kmsir: error: step 'snapshot' of run {bundle.name} is not waiting for an approval: "
        "it never asked for a second person's approval",
    )
    assert codes[2] == (
        1,
        f"kmsir: error: the run refused your approve: {RESPONDER} runs this playbook: a "
        "second person must approve",
    )
    assert codes[3] == (
        1,
        f"kmsir: error: the run refused your approve: arn:aws:iam::{ACCOUNT}:user/outsider is "
        f"not allowed to approve this step (from: arn:aws:iam::{ACCOUNT}:user/second-*)",
    )
    assert codes[4][0] == 0
    assert approvers.ran[4].stdout.startswith(f"denied: step schedule-deletion, as {SECOND}")
    view = view_of(bundle)
    refused = [m.record for m in view.timeline if isinstance(m.record, ApprovalRefused)]
    assert [(r.identity or {}).get("arn") for r in refused] == [
        RESPONDER,
        f"arn:aws:iam::{ACCOUNT}:user/outsider",
    ]
    given = [m.record for m in view.timeline if isinstance(m.record, ApprovalGiven)]
    assert [(g.decision, g.identity["arn"]) for g in given] == [("deny", SECOND)]
    # no more approvals once denied
    again = kmsir(bundle, "approve", "schedule-deletion", "--yes", env=keys["second-responder"])
    late = subprocess.run(
        ["sh", "-c", again.line], env=again.env, capture_output=True, text=True, timeout=90
    )
    assert late.returncode == 2
    assert f"is not waiting for an approval: it was denied by {SECOND}" in late.stderr
    # the report tells all of it
    md, html = reports(bundle)
    section = md[md.index("## Second-person approvals") : md.index("## Open risks")]
    assert "**denied**" in section
    rows = table(section)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("#1", "refused", f"`{RESPONDER}`"),
        ("#1", "refused", f"`arn:aws:iam::{ACCOUNT}:user/outsider`"),
        ("#1", "denied", f"`{SECOND}`"),
    ]
    assert rows[0][-1].startswith(f"{RESPONDER} runs this playbook")
    assert rows[2][3] == f"`{ACCOUNT}`" and "<br>`" in rows[2][4]  # signed, STS request id
    assert rows[2][6] == "the payments team still needs the key"
    assert "<strong>denied</strong>" in html
    assert cli("verify", bundle).exit_code == 0


def test_no_approval_in_time_fails_the_step_and_a_late_approval_is_refused(
    tmp_path: Path,
) -> None:
    approvers = Approvers()  # nobody answers
    result, state, sandbox = run_in_sandbox(tmp_path, approvers, extra="    approval_timeout: 1m\n")

    assert result.status == "failed"
    assert result.error is not None
    assert "no second-person approval by 2026-03-02T09:01:00.000000Z" in result.error
    assert state == "Enabled"
    assert approvers.now <= START + timedelta(minutes=1, seconds=1)  # the run's clock only
    bundle = result.bundle
    assert sandbox.second is not None
    second = credentials(sandbox.second.access_key_id, sandbox.second.secret_access_key)
    env = shell_env(tmp_path, **second)
    late = subprocess.run(
        [sys.executable, "-m", "kmsir", "approve", str(bundle), "schedule-deletion", "--yes"],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert late.returncode == 2
    assert late.stderr.strip().splitlines()[-1] == (
        f"kmsir: error: step 'schedule-deletion' of run {bundle.name} is not waiting for an "
        "approval: its approval timed out"
    )
    assert approvals.read_answers(bundle) == []  # nothing was written
    md, _ = reports(bundle)
    section = md[md.index("## Second-person approvals") : md.index("## Open risks")]
    assert "**timed out**" in section
    ((request, answer, who, account, signed, _, why),) = table(section)
    assert (request, answer, who, account, signed) == ("#1", "timed out", "unknown", "", "")
    assert why == "no approval by 2026-03-02T09:01:00.000000Z (0 of 1)"
    assert cli("verify", bundle).exit_code == 0


# -- the sandbox's second identity ---------------------------------------------------------


def test_the_second_identity_is_the_same_in_every_world_and_moves_no_other_id() -> None:
    """Resume rebuilds the world: the credentials on the waiting screen must still work; and
    a world with the second identity gives every other resource the ids it gets without."""
    world = scenarios.load("rogue-grant")
    seen = []
    for second_person in (True, True, False):
        with Sandbox(world, second_person=second_person) as sandbox:
            made_after = sandbox.session().client("kms").create_key()["KeyMetadata"]["KeyId"]
            seen.append((sandbox.second, sandbox.keys, sandbox.grants, made_after))
    (first, keys, grants, after), again, without = seen
    assert first is not None and first.arn == SECOND
    assert first.access_key_id.startswith("AKIA") and again[0] == first
    assert without[0] is None
    assert (keys, grants, after) == again[1:] == without[1:]

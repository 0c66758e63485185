"""The two-person rule, run side: a step the responder approved waits for a second person.

The run journals the request and shows the approver's command; an answer file signed with
another identity's credentials is read from the run's inbox, sent to STS (moto) by the run,
and journaled with the ARN STS answers with; then the step runs. Refused: the operator's own
approval, one outside ``from:``, an answer changed after signing, the same approver twice, a
file too big; a deny or no answer in time fails the step through its ``on_error``. Resume
keeps approvals already given. Nothing here waits in real time: the run's clock and sleep are
the test's.

moto checks no SigV4 signature: it names the caller by the access key id alone, so the
"changed after signing" case is caught by the binding check here; real STS also refuses a
header changed after signing (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv.html).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import msgspec
import pytest

from kmsir import actions
from kmsir.actions.base import ApprovalWait, NullReporter
from kmsir.aws import ClientFactory
from kmsir.aws.approver import sign
from kmsir.evidence import approvals, integrity
from kmsir.evidence.bundle import JOURNAL, read_journal
from kmsir.evidence.entries import ApprovalGiven, ApprovalRefused, ApprovalTimedOut, Recheck
from kmsir.evidence.view import RunView
from kmsir.prompts import NoPrompter, ScriptedPrompter
from kmsir.run import resume as resuming
from kmsir.run.engine import Engine, RunOptions, RunResult
from kmsir.run.second_person import Needed, allowed, needed

from .conftest import load_playbook

ACCOUNT = "123456789012"
OPERATOR = f"arn:aws:iam::{ACCOUNT}:user/responder"  # who runs the playbook
SECOND = f"arn:aws:iam::{ACCOUNT}:user/second-responder"
START = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)

PLAYBOOK = """\
id: two-person
title: Delete a compromised key, with a second person's approval
steps:
  - id: delete
    action: kms.schedule-deletion
    with: {{key: {key}, pending_window_days: 7}}
    approvals: {{count: {count}, from: {from_}}}
    approval_timeout: {timeout}
    on_error: {on_error}
"""


@dataclass
class World:
    """A moto account with a key and IAM users or role sessions (name -> access key id,
    secret and session token, if any)."""

    clients: ClientFactory
    key_id: str
    users: dict[str, tuple[str, ...]]

    def session(self, who: str) -> boto3.Session:
        key, secret, *token = self.users[who]
        return boto3.Session(
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            aws_session_token=token[0] if token else None,
            region_name="eu-west-1",
        )

    def role_session(self, role: str, name: str, path: str = "/") -> str:
        """Sign in as a session ``name`` of ``role`` (made when new): its user name here."""
        iam = self.clients.client("iam")
        try:
            arn = iam.get_role(RoleName=role)["Role"]["Arn"]
        except iam.exceptions.NoSuchEntityException:
            trust = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow",' + (
                '"Principal":{"AWS":"*"},"Action":"sts:AssumeRole"}]}'
            )
            made = iam.create_role(RoleName=role, Path=path, AssumeRolePolicyDocument=trust)
            arn = made["Role"]["Arn"]
        sts = self.session("responder").client("sts")
        given = sts.assume_role(RoleArn=arn, RoleSessionName=name)["Credentials"]
        who = f"{role}/{name}"
        self.users[who] = (given["AccessKeyId"], given["SecretAccessKey"], given["SessionToken"])
        return who

    def run_as(self, who: str) -> None:
        """The responder runs the playbook as ``who`` from now on."""
        self.clients = ClientFactory(
            session_factory=lambda: self.session(who), region="eu-west-1", guard_send=True
        )

    def key_state(self) -> str:
        kms = self.clients.client("kms")
        return str(kms.describe_key(KeyId=self.key_id)["KeyMetadata"]["KeyState"])


@pytest.fixture
def world(moto_clients: ClientFactory) -> World:
    """The responder runs with the credentials of IAM user ``responder`` (the operator)."""
    iam = moto_clients.client("iam")
    users: dict[str, tuple[str, ...]] = {}
    for name in ("responder", "second-responder", "third-responder", "outsider"):
        iam.create_user(UserName=name)
        made = iam.create_access_key(UserName=name)["AccessKey"]
        users[name] = (made["AccessKeyId"], made["SecretAccessKey"])
    key, secret = users["responder"]
    clients = ClientFactory(
        session_factory=lambda: boto3.Session(
            aws_access_key_id=key, aws_secret_access_key=secret, region_name="eu-west-1"
        ),
        region="eu-west-1",
        guard_send=True,
    )
    key_id = clients.client("kms").create_key()["KeyMetadata"]["KeyId"]
    return World(clients, key_id, users)


class Screen(NullReporter):
    """What the responder's terminal is shown while a step waits."""

    def __init__(self) -> None:
        self.waits: list[ApprovalWait] = []
        self.on_news: Callable[[ApprovalWait], None] = lambda _: None

    def waiting(self, wait: ApprovalWait) -> None:
        self.waits.append(wait)
        if wait.news is not None:
            self.on_news(wait)


@dataclass
class Approvers:
    """The people answering: each time the run sleeps, the next answer is written into the
    run's inbox, as ``kmsir approve`` would (signed with that person's credentials)."""

    world: World
    script: list[Callable[[Path], None]] = field(default_factory=list)
    now: datetime = START
    sleeps: int = 0
    bundle: Path | None = None

    def clock(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += timedelta(seconds=seconds)
        if self.script and self.bundle is not None:
            self.script.pop(0)(self.bundle)


def answer(
    world: World,
    who: str,
    *,
    decision: str = "approve",
    reason: str | None = "checked the key's use",
    step: str = "delete",
    tamper: Callable[[dict[str, Any]], None] | None = None,
) -> Callable[[Path], None]:
    """An answer by ``who`` (an IAM user of ``world``) to the request ``step`` waits with;
    ``tamper`` changes the answer's fields after signing."""

    def write(bundle: Path) -> None:
        view = read_journal(bundle / JOURNAL).view()
        waiting = view.waiting_step(step)
        assert waiting is not None and waiting.approvals is not None
        request = waiting.approvals.request
        assert request is not None
        fields: dict[str, Any] = {
            "run": view.run_id,
            "step": step,
            "request": request.request,
            "decision": decision,
            "reason": reason,
            "saw": request.preview_sha256,
        }
        session = world.session(who)
        signed = sign(
            session, request.sts_url, request.sts_region or "", approvals.binding(**fields)
        )
        if tamper is not None:
            tamper(fields)
        made = approvals.Answer(
            **fields,
            answered="2026-03-02T09:00:01Z",
            signed=msgspec.convert(signed, approvals.Signed),
        )
        approvals.write_answer(bundle, made)

    return write


def run(
    world: World,
    tmp_path: Path,
    approvers: Approvers,
    *,
    count: int = 1,
    timeout: str = "10m",
    on_error: str = "stop",
    answers: dict[str, Any] | None = None,
    screen: Screen | None = None,
    require_approval: bool = False,
    approver_env: dict[str, str] | None = None,
    from_: tuple[str, ...] = (f"arn:aws:iam::{ACCOUNT}:user/*-responder",),
) -> RunResult:
    book = tmp_path / "two-person.yaml"
    book.write_text(
        PLAYBOOK.format(
            key=world.key_id,
            count=count,
            from_=json.dumps(list(from_)),
            timeout=timeout,
            on_error=on_error,
        )
    )

    def started(root: Path) -> None:
        approvers.bundle = root

    engine = Engine(
        actions=actions.registry(),
        clients=world.clients,
        prompter=ScriptedPrompter(answers or {}, source="test answers", fallback=NoPrompter()),
        reporter=screen or Screen(),
        clock=approvers.clock,
        sleep=approvers.sleep,
        on_bundle=started,
    )
    options = RunOptions(
        incident_id="INC-2P",
        evidence_dir=tmp_path / "ev",
        mode="live",
        yes=True,  # the responder approves; the second person is still asked
        require_approval=require_approval,
        approver_env=approver_env or {},
    )
    return engine.run(load_playbook(book), {}, options)


def view_of(result: RunResult) -> RunView:
    return read_journal(result.bundle / JOURNAL).view()


def records(view: RunView, kind: type[Any]) -> list[Any]:
    return [m.record for m in view.timeline if isinstance(m.record, kind)]


# -- approved --------------------------------------------------------------------------------


def test_the_step_waits_then_runs_once_a_second_person_approves(
    world: World, tmp_path: Path
) -> None:
    approvers = Approvers(world)
    approvers.script = [answer(world, "second-responder")]
    screen = Screen()
    result = run(world, tmp_path, approvers, screen=screen)

    assert result.status == "succeeded", result.error
    assert world.key_state() == "PendingDeletion"
    first = screen.waits[0]
    bundle = str(result.bundle.resolve())
    assert first.approve == f"kmsir approve {bundle} delete --reason '...'"
    assert first.deny == f"kmsir deny {bundle} delete --reason '...'"
    assert first.deadline == "2026-03-02T09:10:00.000000Z"
    shown = "\n".join(first.lines())
    assert first.approve in shown and first.deny in shown and first.deadline in shown
    assert screen.waits[-1].news == f"approved by {SECOND}"

    view = view_of(result)
    step = view.steps["delete"]
    assert step.approvals is not None and not step.approvals.waiting
    (given,) = step.approvals.given
    user_id = world.clients.client("iam").get_user(UserName="second-responder")["User"]["UserId"]
    assert given.identity == {"arn": SECOND, "account": ACCOUNT, "user_id": user_id}  # STS's
    assert given.sts_request_id and given.reason == "checked the key's use"
    request = step.approvals.request
    assert request is not None and given.saw == request.preview_sha256
    assert request.preview["calls"][0]["operation"] == "ScheduleKeyDeletion"  # what was shown
    # and what the responder could ask for: the approver sees it, its digest covers it
    assert request.preview["details"] == [
        "  parameters (rendered):",
        f'    key: "{world.key_id}"',
        "    pending_window_days: 7",
        "  IAM permissions: kms:DescribeKey, kms:ListAliases, kms:ScheduleKeyDeletion",
        "  on error: stop",
    ]
    assert request.preview_sha256 == approvals.preview_sha256(request.preview)
    # the answer file is kept in the bundle, the inbox stays outside it
    assert given.file is not None and (result.bundle / given.file).is_file()
    assert approvals.inbox(result.bundle).parent.parent == result.bundle.parent
    checked = integrity.check(result.bundle)
    assert checked.problems == [] and checked.intact
    assert view.waiting_step("delete") is None
    assert view.answered(given.answer) == given


# -- refused ---------------------------------------------------------------------------------


def _too_big(bundle: Path) -> None:
    view = read_journal(bundle / JOURNAL).view()
    waiting = view.waiting_step("delete")
    assert waiting is not None and waiting.approvals is not None
    request = waiting.approvals.request
    assert request is not None
    (approvals.inbox(bundle) / f"{request.request}-0badf11e.json").write_bytes(b" " * 70_000)


def test_answers_that_do_not_count_are_refused_and_journaled_once(
    world: World, tmp_path: Path
) -> None:
    def changed_reason(fields: dict[str, Any]) -> None:
        fields["reason"] = "the approver never wrote this"

    approvers = Approvers(world)
    approvers.script = [
        answer(world, "responder"),  # the operator approving their own step
        answer(world, "outsider"),  # not among from:
        answer(world, "third-responder", tamper=changed_reason),
        _too_big,
        answer(world, "second-responder"),
        answer(world, "second-responder"),  # the same person again
        answer(world, "third-responder"),
    ]
    result = run(world, tmp_path, approvers, count=2)

    assert result.status == "succeeded", result.error
    assert world.key_state() == "PendingDeletion"
    view = view_of(result)
    whys = [r.why for r in records(view, ApprovalRefused)]
    assert len(whys) == 5  # each once, though the inbox is read again and again
    assert whys[0] == f"{OPERATOR} runs this playbook: a second person must approve"
    assert whys[1].startswith(f"arn:aws:iam::{ACCOUNT}:user/outsider is not allowed")
    assert "X-Kmsir-Approval header does not match" in whys[2]
    assert whys[3] == "the answer file has 70,000 bytes, more than 65,536"
    assert whys[4] == f"{SECOND} already approved this request"
    refused = records(view, ApprovalRefused)
    assert refused[0].identity["arn"] == OPERATOR  # who tried, from STS
    assert refused[2].identity is None  # refused before anything was sent
    given = [g.identity["arn"] for g in records(view, ApprovalGiven)]
    assert given == [SECOND, f"arn:aws:iam::{ACCOUNT}:user/third-responder"]
    assert integrity.check(result.bundle).intact


def test_no_answer_in_time_fails_the_step_on_the_runs_clock(world: World, tmp_path: Path) -> None:
    approvers = Approvers(world)
    result = run(world, tmp_path, approvers, timeout="1m")

    assert result.status == "failed"
    assert result.error is not None
    assert "no second-person approval by 2026-03-02T09:01:00.000000Z" in result.error
    assert world.key_state() == "Enabled"
    assert approvers.sleeps <= 121  # bounded: one look at the inbox every 0.5 s of its clock
    view = view_of(result)
    (timed_out,) = records(view, ApprovalTimedOut)
    assert (timed_out.approved, timed_out.count) == (0, 1)
    assert view.steps["delete"].status == "failed"
    assert view.waiting_step("delete") is None


def test_a_deny_fails_the_step_and_a_retry_asks_everyone_again(
    world: World, tmp_path: Path
) -> None:
    approvers = Approvers(world)
    approvers.script = [
        answer(world, "second-responder", decision="deny", reason="that key is in use"),
        answer(world, "third-responder"),
    ]
    result = run(
        world,
        tmp_path,
        approvers,
        on_error="ask",
        answers={"delete.on-error": "retry"},
    )

    assert result.status == "succeeded", result.error
    view = view_of(result)
    failed = [m.record.error for m in view.timeline if type(m.record).__name__ == "StepFailed"]
    assert failed == [
        f"step 'delete' (kms.schedule-deletion): denied by {SECOND}: that key is in use"
    ]
    decisions = [g.decision for g in records(view, ApprovalGiven)]
    assert decisions == ["deny", "approve"]
    requests = {
        m.record.request for m in view.timeline if type(m.record).__name__ == "ApprovalRequested"
    }
    assert len(requests) == 2  # the retry waited under a new request
    assert world.key_state() == "PendingDeletion"


def test_a_deny_with_on_error_stop_leaves_the_key_alone(world: World, tmp_path: Path) -> None:
    approvers = Approvers(world)
    approvers.script = [answer(world, "second-responder", decision="deny", reason=None)]
    screen = Screen()
    key, secret = world.users["second-responder"]
    env = {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret}
    result = run(world, tmp_path, approvers, screen=screen, approver_env=env)

    assert result.status == "failed"
    assert result.error == f"step 'delete' (kms.schedule-deletion): denied by {SECOND}"
    assert world.key_state() == "Enabled"
    # a sandbox's second identity: the command to give is shown with its credentials
    # (the approver's own session token or profile unset: they would sign as someone else)
    assert screen.waits[0].deny.startswith(
        "env -u AWS_SESSION_TOKEN -u AWS_SECURITY_TOKEN -u AWS_PROFILE -u AWS_DEFAULT_PROFILE "
        f"AWS_ACCESS_KEY_ID={key} AWS_SECRET_ACCESS_KEY={secret} kmsir deny "
    )
    assert screen.waits[-1].news == f"DENIED by {SECOND}"


# -- resume ----------------------------------------------------------------------------------


def _resume(world: World, bundle: Path, approvers: Approvers) -> RunResult:
    state = resuming.load(bundle)
    engine = Engine(
        actions=actions.registry(),
        clients=world.clients,
        prompter=NoPrompter(),
        reporter=Screen(),
        clock=approvers.clock,
        sleep=approvers.sleep,
    )
    options = RunOptions(
        incident_id=state.meta.incident,
        evidence_dir=bundle.parent.parent,
        mode="live",
        yes=True,
        require_approval=state.meta.require_approval,
    )
    approvers.bundle = bundle
    return engine.resume(load_playbook(bundle / "playbook.yaml"), state, options)


def _interrupt_on(news: str) -> Screen:
    screen = Screen()

    def stop(wait: ApprovalWait) -> None:
        if wait.news == news:
            raise KeyboardInterrupt

    screen.on_news = stop
    return screen


def test_resume_keeps_an_approval_given_before_the_run_stopped(
    world: World, tmp_path: Path
) -> None:
    approvers = Approvers(world)
    approvers.script = [answer(world, "second-responder")]
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C after the first of two approvals
        run(world, tmp_path, approvers, count=2, screen=_interrupt_on(f"approved by {SECOND}"))
    bundle = approvers.bundle
    assert bundle is not None
    meta = read_journal(bundle / JOURNAL).view().meta
    assert meta is not None and meta.require_approval is False

    approvers.script = [answer(world, "second-responder"), answer(world, "third-responder")]
    result = _resume(world, bundle, approvers)

    assert result.status == "succeeded", result.error
    view = view_of(result)
    state = view.steps["delete"].approvals
    assert state is not None and state.request is not None
    assert [k["identity"]["arn"] for k in state.request.kept] == [SECOND]
    assert state.approved == 2
    whys = [r.why for r in records(view, ApprovalRefused)]
    assert whys == [f"{SECOND} already approved this request"]  # kept counts as given
    assert world.key_state() == "PendingDeletion"
    assert integrity.check(bundle).intact


def test_resume_does_not_wait_again_when_the_approvals_were_complete(
    world: World, tmp_path: Path
) -> None:
    approvers = Approvers(world)
    approvers.script = [answer(world, "second-responder")]
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C right after the one approval needed
        run(
            world,
            tmp_path,
            approvers,
            screen=_interrupt_on(f"approved by {SECOND}"),
            require_approval=True,
        )
    bundle = approvers.bundle
    assert bundle is not None
    sleeps = approvers.sleeps

    result = _resume(world, bundle, approvers)

    assert result.status == "succeeded", result.error
    view = view_of(result)
    assert view.meta is not None and view.meta.require_approval is True
    assert len([m for m in view.timeline if type(m.record).__name__ == "ApprovalRequested"]) == 1
    assert approvers.sleeps == sleeps  # no wait at all
    assert world.key_state() == "PendingDeletion"


# -- when approvals apply --------------------------------------------------------------------


def _step(text: str, tmp_path: Path) -> Any:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return load_playbook(path).playbook


@pytest.mark.parametrize(
    ("mode", "require", "scenario", "waits"),
    [
        ("live", False, False, True),
        ("check", True, True, False),  # nothing is sent: nobody to ask
        ("sandbox", False, False, False),  # a tabletop skips it unless asked
        ("sandbox", True, False, True),
        ("sandbox", False, True, True),
    ],
)
def test_where_a_step_waits(
    tmp_path: Path, mode: str, require: bool, scenario: bool, waits: bool
) -> None:
    book = _step(
        "id: p\ntitle: P\nsteps:\n"
        "  - {id: d, action: kms.disable-key, with: {key: alias/x}, approvals: {count: 2}}\n",
        tmp_path,
    )
    options = RunOptions(
        incident_id="I",
        evidence_dir=tmp_path,
        mode=mode,  # type: ignore[arg-type]
        require_approval=require,
        scenario_approvals=scenario,
    )
    action = actions.registry()["kms.disable-key"]
    found = needed(book.steps[0], book, action, options)
    assert (found is not None) == waits
    if found is not None:
        assert (found.count, found.timeout_s) == (2, 1800)


def test_require_approval_and_the_top_level_cover_only_irreversible_or_high_impact_steps(
    tmp_path: Path,
) -> None:
    book = _step(
        "id: p\ntitle: P\n"
        'approvals: {count: 2, from: ["arn:aws:iam::111122223333:role/Approver"]}\n'
        "steps:\n"
        "  - {id: tag, action: kms.tag-key, with: {key: alias/x}}\n"
        "  - {id: revoke, action: kms.revoke-grants, with: {key: alias/x, grant_ids: [g]}}\n"
        "  - {id: retire, action: kms.retire-grants, with: {key: alias/x, grant_ids: [g]}}\n",
        tmp_path,
    )
    registry = actions.registry()
    live = RunOptions(incident_id="I", evidence_dir=tmp_path, mode="live")
    flagged = RunOptions(incident_id="I", evidence_dir=tmp_path, mode="live", require_approval=True)
    tag, revoke, retire = book.steps
    assert needed(tag, book, registry["kms.tag-key"], flagged) is None
    top = needed(revoke, book, registry["kms.revoke-grants"], live)
    assert top is not None and top.count == 2
    assert top.allowed == ("arn:aws:iam::111122223333:role/Approver",)
    assert needed(retire, book, registry["kms.retire-grants"], live) is not None  # irreversible
    assert needed(revoke, book, registry["kms.revoke-grants"], flagged) == top  # the playbook's
    bare = book.model_copy(update={"approvals": None})
    assert needed(revoke, bare, registry["kms.revoke-grants"], live) is None
    assert needed(revoke, bare, registry["kms.revoke-grants"], flagged) == Needed(1, (), 1800)


def test_an_assumed_role_session_matches_its_role() -> None:
    session = "arn:aws:sts::111122223333:assumed-role/IR-Approver/alice"
    assert allowed(session, ("arn:aws:iam::111122223333:role/IR-*",))
    assert allowed(session, ("arn:aws:sts::111122223333:assumed-role/*/alice",))
    assert not allowed(session, ("arn:aws:iam::111122223333:role/Admin",))
    assert not allowed("arn:aws:iam::111122223333:user/bob", ("arn:aws:iam::*:role/*",))


def test_an_answer_file_is_never_written_over(tmp_path: Path) -> None:
    bundle = tmp_path / "INC" / "20260302T090000Z-ab12"
    bundle.mkdir(parents=True)
    made = approvals.Answer(
        run=bundle.name,
        step="delete",
        request="0123456789abcdef",
        decision="approve",
        saw="0" * 64,
        answered="2026-03-02T09:00:01Z",
        signed=approvals.Signed(method="POST", url="https://sts", headers={}, body=""),
    )
    ids = {approvals.write_answer(bundle, made) for _ in range(3)}
    assert len(ids) == 3
    found = approvals.read_answers(bundle)
    assert {r.id for r in found} == ids and all(r.answer == made for r in found)
    assert approvals.read_answers(bundle, skip=ids) == []
    assert oct(approvals.inbox(bundle).stat().st_mode & 0o777) == "0o700"


# -- the command line ------------------------------------------------------------------------


def test_the_terminal_shows_the_commands_whole_however_narrow(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from kmsir.cli.console import ConsoleReporter

    reporter = ConsoleReporter()
    reporter.console = Console(file=io.StringIO(), width=40)
    command = f"kmsir approve {tmp_path}/evidence/INC-1/20260302T090000Z-ab12 delete --reason '...'"
    reporter.waiting(
        ApprovalWait(
            step_id="delete",
            title="Schedule the key's deletion",
            count=1,
            approved=0,
            deadline="2026-03-02T09:30:00.000000Z",
            approve=command,
            deny=command.replace("approve", "deny"),
        )
    )
    shown = reporter.console.file.getvalue()  # type: ignore[attr-defined]
    assert command in shown.splitlines()[2]  # one line, to copy and paste
    assert "until 2026-03-02T09:30:00.000000Z" in shown


def test_require_approval_is_recorded_and_check_mode_never_waits(tmp_path: Path) -> None:
    from .clikit import cli

    book = tmp_path / "delete.yaml"
    book.write_text(
        "id: delete\ntitle: Delete\nsteps:\n"
        "  - {id: delete, action: kms.schedule-deletion, with: {key: alias/payments-prod},"
        " approvals: {count: 2}}\n"
    )
    ran = cli(
        "run",
        book,
        "--sandbox",
        "rogue-grant",
        "--check",
        "--require-approval",
        "--yes",
        "--evidence-dir",
        tmp_path / "ev",
    )
    assert ran.exit_code == 0, ran.output
    (bundle,) = (tmp_path / "ev").glob("*/2*")
    view = read_journal(bundle / JOURNAL).view()
    assert view.meta is not None and view.meta.require_approval is True
    assert view.steps["delete"].status == "would-run" and view.steps["delete"].approvals is None


# -- who is a second person (principals, not ARNs) -------------------------------------------

IR_ROLE = f"arn:aws:iam::{ACCOUNT}:role/IR-Responder"
SSO_PATH = "/aws-reserved/sso.amazonaws.com/"
SSO_ROLE = "AWSReservedSSO_IR_0123abcd"


def test_another_session_of_the_operators_role_is_not_a_second_person(
    world: World, tmp_path: Path
) -> None:
    """Whoever assumes a role names the session: ``IR-Responder/bob`` may be the operator of
    ``IR-Responder/alice`` again. A second session of an approver's role is not a second
    approver either; an approver's session token is not kept in the bundle."""
    world.run_as(world.role_session("IR-Responder", "alice"))
    again = world.role_session("IR-Responder", "bob")
    approver = world.role_session("IR-Approver", "carol")
    other_session = world.role_session("IR-Approver", "dave")
    approvers = Approvers(world)
    approvers.script = [
        answer(world, again),
        answer(world, approver),
        answer(world, other_session),
        answer(world, "second-responder"),
    ]
    result = run(
        world,
        tmp_path,
        approvers,
        count=2,
        from_=(f"arn:aws:iam::{ACCOUNT}:role/*", f"arn:aws:iam::{ACCOUNT}:user/*-responder"),
    )

    assert result.status == "succeeded", result.error
    view = view_of(result)
    bob = f"arn:aws:sts::{ACCOUNT}:assumed-role/IR-Responder/bob"
    carol = f"arn:aws:sts::{ACCOUNT}:assumed-role/IR-Approver/carol"
    dave = f"arn:aws:sts::{ACCOUNT}:assumed-role/IR-Approver/dave"
    whys = [r.why for r in records(view, ApprovalRefused)]
    assert whys[0].startswith(f"{bob} is another session of role {IR_ROLE}, whose session name")
    assert "a second person must approve as themselves" in whys[0]
    assert whys[1].startswith(f"{dave} already approved this request (as {carol}: another")
    assert len(whys) == 2
    assert [g.identity["arn"] for g in records(view, ApprovalGiven)] == [carol, SECOND]
    # the answer kept in the bundle has no live session token; the journal has the sha256
    # of the file as it came
    (kept, _) = records(view, ApprovalGiven)
    token = world.users[approver][2]
    stored = (result.bundle / kept.file).read_bytes()
    assert token.encode() not in stored and approvals.REDACTED.encode() in stored
    inbox = approvals.inbox(result.bundle) / f"{kept.answer}.json"
    assert kept.answer_sha256 == hashlib.sha256(inbox.read_bytes()).hexdigest()
    assert token.encode() in inbox.read_bytes()
    assert integrity.check(result.bundle).intact


def test_identity_center_sign_ins_are_people_and_a_role_path_pattern_matches(
    world: World, tmp_path: Path
) -> None:
    """IAM Identity Center names each session after the person signed in: another sign-in
    to the same permission set's role is a second person, the same sign-in is not; a role
    ARN in ``from:`` with the role's path matches its sessions (their ARNs have no path)."""
    world.run_as(world.role_session(SSO_ROLE, "alice@example.com", path=SSO_PATH))
    alice_again = world.role_session(SSO_ROLE, "alice@example.com", path=SSO_PATH)
    bob = world.role_session(SSO_ROLE, "bob@example.com", path=SSO_PATH)
    approvers = Approvers(world)
    approvers.script = [answer(world, alice_again), answer(world, bob)]
    result = run(
        world,
        tmp_path,
        approvers,
        from_=(f"arn:aws:iam::{ACCOUNT}:role{SSO_PATH}AWSReservedSSO_IR_*",),
    )

    assert result.status == "succeeded", result.error
    view = view_of(result)
    sessions = f"arn:aws:sts::{ACCOUNT}:assumed-role/{SSO_ROLE}"
    whys = [r.why for r in records(view, ApprovalRefused)]
    assert whys == [
        f"{sessions}/alice@example.com runs this playbook: a second person must approve"
    ]
    (given,) = records(view, ApprovalGiven)
    assert given.identity["arn"] == f"{sessions}/bob@example.com"


def test_principals() -> None:
    from kmsir.aws.approver import principal

    role = principal(f"arn:aws:sts::{ACCOUNT}:assumed-role/IR/alice", "AROAEXAMPLEROLEID0001:alice")
    assert role.same(principal(f"arn:aws:sts::{ACCOUNT}:assumed-role/IR/bob"))
    assert role.same(principal(f"arn:aws:iam::{ACCOUNT}:role/IR"))  # as a role ARN names it
    # the role's id (UserId before ':'): the same role, though its name was reused elsewhere
    assert role.same(
        principal("arn:aws:sts::999999999999:assumed-role/X/y", "AROAEXAMPLEROLEID0001:y")
    )
    assert not role.same(principal(f"arn:aws:sts::{ACCOUNT}:assumed-role/IR2/alice"))
    sso = f"arn:aws:sts::{ACCOUNT}:assumed-role/AWSReservedSSO_Admin_0123/alice@example.com"
    assert principal(sso).same(principal(sso))
    assert not principal(sso).same(principal(sso.replace("alice", "bob"), "AROASSO:bob"))
    assert principal(f"arn:aws:sts::{ACCOUNT}:federated-user/carol").federated
    assert not principal(OPERATOR).federated and principal(OPERATOR).same(principal(OPERATOR))


def test_a_federated_user_is_told_to_sign_in_as_themselves(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A federation token's user has the credentials of an IAM user kmsir cannot see (moto
    answers GetCallerIdentity for one as its default user: STS's answer is given here)."""
    from kmsir.aws import approver

    def federated(factory: Any, signed: Any, url: str) -> approver.Identity:
        return approver.Identity(
            arn=f"arn:aws:sts::{ACCOUNT}:federated-user/carol",
            account=ACCOUNT,
            user_id=f"{ACCOUNT}:carol",
            request_id="r-1",
        )

    monkeypatch.setattr(approver, "identify", federated)
    approvers = Approvers(world)
    approvers.script = [answer(world, "second-responder")]
    result = run(world, tmp_path, approvers, timeout="1m", from_=())

    assert result.status == "failed"
    (refused,) = records(view_of(result), ApprovalRefused)
    assert refused.why.startswith(f"arn:aws:sts::{ACCOUNT}:federated-user/carol is a federated")
    assert "sign in as yourself" in refused.why
    assert world.key_state() == "Enabled"


# -- what the approval records -----------------------------------------------------------------


def test_answered_is_the_signed_time_not_the_files_word(world: World, tmp_path: Path) -> None:
    approvers = Approvers(world)
    approvers.script = [answer(world, "second-responder")]
    result = run(world, tmp_path, approvers)

    (given,) = records(view_of(result), ApprovalGiven)
    stored = json.loads((result.bundle / given.file).read_bytes())
    signed = stored["signed"]["headers"]["X-Amz-Date"]  # e.g. 20260302T090001Z
    assert stored["answered"] == "2026-03-02T09:00:01Z"  # what the file says
    assert given.answered == (
        f"{signed[:4]}-{signed[4:6]}-{signed[6:8]}T{signed[9:11]}:{signed[11:13]}:"
        f"{signed[13:15]}.000000Z"
    )


def test_the_sts_region_is_the_one_the_run_signs_for(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the legacy global endpoint, STS requests are signed for us-east-1 whatever the
    client's Region (https://docs.aws.amazon.com/sdkref/latest/guide/feature-sts-regionalized-endpoints.html):
    the approver must sign for that Region."""
    monkeypatch.setenv("AWS_STS_REGIONAL_ENDPOINTS", "legacy")
    approvers = Approvers(world)
    approvers.script = [answer(world, "second-responder")]
    result = run(world, tmp_path, approvers)

    assert result.status == "succeeded", result.error
    request = view_of(result).steps["delete"].approvals.request  # type: ignore[union-attr]
    assert request is not None
    assert request.sts_url == "https://sts.amazonaws.com"
    assert request.sts_region == "us-east-1"
    (given,) = records(view_of(result), ApprovalGiven)
    stored = json.loads((result.bundle / given.file).read_bytes())
    assert "/us-east-1/sts/aws4_request" in stored["signed"]["headers"]["Authorization"]


def test_put_policy_is_high_impact() -> None:
    """A key policy that leaves out its administrators locks everyone out of the key."""
    assert actions.registry()["kms.put-policy"].needs_second_person


# -- withdrawing, an unreadable inbox ----------------------------------------------------------


def test_an_approver_may_withdraw_with_a_deny(world: World, tmp_path: Path) -> None:
    approvers = Approvers(world)
    approvers.script = [
        answer(world, "second-responder"),
        answer(world, "second-responder", decision="deny", reason="wrong key, sorry"),
    ]
    result = run(world, tmp_path, approvers, count=2)

    assert result.status == "failed"
    assert result.error == (
        f"step 'delete' (kms.schedule-deletion): denied by {SECOND}: wrong key, sorry"
    )
    assert [g.decision for g in records(view_of(result), ApprovalGiven)] == ["approve", "deny"]
    assert world.key_state() == "Enabled"


def test_an_unreadable_inbox_is_noted_once_and_the_step_keeps_waiting(
    world: World, tmp_path: Path
) -> None:
    from kmsir.evidence.entries import Note

    def loop(bundle: Path) -> None:  # ELOOP when listed
        folder = approvals.inbox(bundle)
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.symlink_to(folder.name)

    def fixed(bundle: Path) -> None:
        approvals.inbox(bundle).unlink()
        answer(world, "second-responder")(bundle)

    approvers = Approvers(world)
    approvers.script = [loop, lambda _: None, lambda _: None, fixed]
    result = run(world, tmp_path, approvers)

    assert result.status == "succeeded", result.error
    view = view_of(result)
    notes = [n.text for n in records(view, Note)]
    assert len(notes) == 1 and notes[0].startswith("the approvals inbox cannot be read")
    assert [g.identity["arn"] for g in records(view, ApprovalGiven)] == [SECOND]


# -- the inbox -------------------------------------------------------------------------------


def _answer_for(bundle: Path) -> approvals.Answer:
    return approvals.Answer(
        run=bundle.name,
        step="delete",
        request="0123456789abcdef",
        decision="approve",
        saw="0" * 64,
        answered="2026-03-02T09:00:01Z",
        signed=approvals.Signed(method="POST", url="https://sts", headers={}, body=""),
    )


def test_the_inbox_is_outside_the_bundle_however_it_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kmsir.errors import EvidenceError

    bundle = tmp_path / "INC" / "20260302T090000Z-ab12"
    (bundle / "artifacts").mkdir(parents=True)
    outside = tmp_path / "INC" / ".approvals" / bundle.name
    monkeypatch.chdir(bundle)
    assert approvals.inbox(Path(".")) == outside
    assert approvals.inbox(Path("artifacts/..")) == outside
    approvals.write_answer(Path("."), _answer_for(bundle))
    assert not (bundle / ".approvals").exists() and len(list(outside.iterdir())) == 1
    with pytest.raises(EvidenceError, match="no name"):
        approvals.inbox(Path("/"))


def test_a_new_answer_is_found_among_more_handled_ones_than_are_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    bundle = tmp_path / "INC" / "20260302T090000Z-ab12"
    bundle.mkdir(parents=True)
    made = _answer_for(bundle)
    handled = {approvals.write_answer(bundle, made) for _ in range(6)}
    new = approvals.write_answer(bundle, made)
    listed = os.scandir

    class Sorted:  # the directory listed handled answers first, as it may
        def __init__(self, path: Any) -> None:
            with listed(path) as found:
                self.items = sorted(found, key=lambda e: (e.name[:-5] not in handled, e.name))

        def __enter__(self) -> list[Any]:
            return self.items

        def __exit__(self, *_: Any) -> None:
            pass

    monkeypatch.setattr("kmsir.evidence.approvals.os.scandir", Sorted)
    monkeypatch.setattr(approvals, "MAX_LISTED", 3)
    assert [r.id for r in approvals.read_answers(bundle, skip=handled)] == [new]


def test_an_approval_timeout_under_a_minute_is_refused(tmp_path: Path) -> None:
    from kmsir.errors import KmsirError

    book = tmp_path / "p.yaml"
    book.write_text(
        "id: p\ntitle: P\nsteps:\n"
        "  - id: d\n    action: kms.disable-key\n    with: {key: alias/x}\n"
        "    approvals: {count: 1}\n    approval_timeout: 30s\n"
    )
    with pytest.raises(KmsirError) as caught:
        load_playbook(book)
    message = str(caught.value)
    assert "\n" not in message and "p.yaml:" in message
    assert "shorter than a minute" in message


# -- a replay ----------------------------------------------------------------------------------


def test_a_replay_never_waits_for_a_second_person(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A team played a scenario whose playbook's ``cancel`` waits for approvals, without
    waiting (a scenario that does not say ``approvals: required``); it says so now (whether a
    run waits is not part of the world: the same world). Its replay answers every question
    from the journal and nobody would answer an approval: it does not wait, and that is no
    difference."""
    from kmsir.playbook import model as playbook
    from kmsir.run.second_person import SecondPerson
    from kmsir.sandbox import scenario as scenarios
    from kmsir.tabletop import replay as replaying
    from kmsir.tabletop import session

    from .conftest import PLAYBOOKS
    from .test_tabletop_session import FakeClock, Team
    from .test_tabletop_session import Screen as Players

    scenario = tmp_path / "ransom-deletion.yaml"
    text = (PLAYBOOKS / "scenarios" / "ransom-deletion.yaml").read_text()
    scenario.write_text(text)
    book = tmp_path / "kms-key-deletion-response.yaml"
    steps = (PLAYBOOKS / "kms-key-deletion-response.yaml").read_text()
    cancel = "    action: kms.cancel-deletion\n"
    book.write_text(steps.replace(cancel, cancel + "    approvals: {count: 1}\n", 1))
    loaded = playbook.load(book, actions.catalog())
    assert any(s.approvals is not None for s in loaded.playbook.steps)
    world = scenarios.load(str(scenario))
    monkeypatch.setattr(session, "clock", FakeClock())
    (played,) = Team(world, loaded, tmp_path / "ev", Players(), source=str(scenario)).play()
    recorded = played.bundle
    assert read_journal(recorded / JOURNAL).view().steps["cancel"].status == "succeeded"
    scenario.write_text(text.replace("\nregion: ", "\napprovals: required\nregion: ", 1))

    def waits(*_: Any) -> None:
        raise AssertionError("the replay waits for a second person")

    monkeypatch.setattr(SecondPerson, "_poll", waits)
    done = replaying.replay(
        recorded,
        evidence_dir=tmp_path / "again",
        reporter=NullReporter(),
        on_bundle=lambda _: None,
        warn=lambda _: None,
    )
    assert done.differences == []
    assert done.result.status == "succeeded"
    view = view_of(done.result)
    assert all(s.approvals is None for s in view.steps.values())


# -- the key changed while the step waited ---------------------------------------------------

DENY_PLAYBOOK = """\
id: two-person-deny
title: Deny a principal the key, with a second person's approval
steps:
  - id: deny
    action: kms.deny-principals
    with: {{key: {key}, principals: ["arn:aws:iam::{account}:user/outsider"]}}
    approvals: {{count: 1}}
    on_error: stop
"""


def test_a_key_changed_while_waiting_fails_the_step_and_nothing_is_sent(
    world: World, tmp_path: Path
) -> None:
    """kms.deny-principals plans its PutKeyPolicy from the live policy: someone changed the
    policy while the step waited, so the calls both people approved are not the ones it would
    send now. The step fails (its on_error applies; a retry asks both afresh), nothing sent."""
    kms = world.clients.client("kms")
    changed = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Root",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "AddedWhileWaiting",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/third-responder"},
                "Action": "kms:Decrypt",
                "Resource": "*",
            },
        ],
    }
    approve = answer(world, "second-responder", step="deny")

    def change_then_approve(bundle: Path) -> None:
        kms.put_key_policy(KeyId=world.key_id, PolicyName="default", Policy=json.dumps(changed))
        approve(bundle)

    approvers = Approvers(world, script=[change_then_approve])
    book = tmp_path / "deny.yaml"
    book.write_text(DENY_PLAYBOOK.format(key=world.key_id, account=ACCOUNT))

    def started(root: Path) -> None:
        approvers.bundle = root

    engine = Engine(
        actions=actions.registry(),
        clients=world.clients,
        prompter=NoPrompter(),
        reporter=Screen(),
        clock=approvers.clock,
        sleep=approvers.sleep,
        on_bundle=started,
    )
    options = RunOptions(incident_id="INC-2P", evidence_dir=tmp_path / "ev", mode="live", yes=True)
    result = engine.run(load_playbook(book), {}, options)

    assert result.status != "succeeded"
    expected = "the key changed while the step waited for approval; retry to approve the new calls"
    assert result.error is not None and expected in result.error and "\n" not in result.error
    policy = json.loads(kms.get_key_policy(KeyId=world.key_id, PolicyName="default")["Policy"])
    assert policy == changed  # nothing was sent: no Deny statement
    step = view_of(result).steps["deny"]
    assert step.status == "failed" and step.approvals is not None
    assert len(step.approvals.given) == 1  # approved, but for the calls planned before
    rechecks = [r for r in records(view_of(result), Recheck) if "while the step waited" in r.reason]
    (recheck,) = rechecks
    assert recheck.would_call and recheck.would_call[0].operation == "PutKeyPolicy"


def test_a_replay_reproduces_a_recorded_deny_without_asking_anyone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The team played with ``approvals: required`` and the second person denied ``cancel``
    (on_error: continue). The replay asks nobody, yet the step fails the same way ("denied
    by ..."): the same outcome, and the key still pending deletion in both worlds."""
    import shlex

    from kmsir.playbook import model as playbook
    from kmsir.run.second_person import SecondPerson
    from kmsir.sandbox import scenario as scenarios
    from kmsir.tabletop import replay as replaying
    from kmsir.tabletop import session

    from .conftest import PLAYBOOKS
    from .test_tabletop_session import FakeClock, Team
    from .test_tabletop_session import Screen as Players

    scenario = tmp_path / "ransom-deletion.yaml"
    text = (PLAYBOOKS / "scenarios" / "ransom-deletion.yaml").read_text()
    scenario.write_text(text.replace("\nregion: ", "\napprovals: required\nregion: ", 1))
    book = tmp_path / "kms-key-deletion-response.yaml"
    steps = (PLAYBOOKS / "kms-key-deletion-response.yaml").read_text()
    cancel = "    action: kms.cancel-deletion\n"
    book.write_text(
        steps.replace(cancel, cancel + "    approvals: {count: 1}\n    on_error: continue\n", 1)
    )
    loaded = playbook.load(book, actions.catalog())

    class Denying(Players):
        """The players' screen; the second person denies the first step that waits, with
        the sandbox's second identity's credentials the waiting screen shows."""

        denied = False

        def waiting(self, wait: ApprovalWait) -> None:
            if self.denied:
                return
            self.denied = True
            words = shlex.split(wait.deny)
            env = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
            bundle = Path(words[words.index("deny") + 1])
            view = read_journal(bundle / JOURNAL).view()
            state = view.steps[wait.step_id].approvals
            assert state is not None and state.request is not None
            request = state.request
            fields: dict[str, Any] = {
                "run": view.run_id,
                "step": wait.step_id,
                "request": request.request,
                "decision": "deny",
                "reason": "not before the owner confirms",
                "saw": request.preview_sha256,
            }
            who = boto3.Session(
                aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                region_name="eu-west-1",
            )
            signed = sign(
                who, request.sts_url, request.sts_region or "", approvals.binding(**fields)
            )
            approvals.write_answer(
                bundle,
                approvals.Answer(
                    **fields,
                    answered="2026-03-02T09:00:01Z",
                    signed=msgspec.convert(signed, approvals.Signed),
                ),
            )

    world = scenarios.load(str(scenario))
    monkeypatch.setattr(session, "clock", FakeClock())
    (played,) = Team(world, loaded, tmp_path / "ev", Denying(), source=str(scenario)).play()
    recorded = read_journal(played.bundle / JOURNAL).view().steps["cancel"]
    assert recorded.status == "failed"
    assert recorded.approvals is not None and recorded.approvals.denied is not None

    def waits(*_: Any) -> None:
        raise AssertionError("the replay waits for a second person")

    monkeypatch.setattr(SecondPerson, "_poll", waits)
    done = replaying.replay(
        played.bundle,
        evidence_dir=tmp_path / "again",
        reporter=NullReporter(),
        on_bundle=lambda _: None,
        warn=lambda _: None,
    )
    assert done.differences == []
    again = view_of(done.result).steps["cancel"]
    assert again.status == "failed" and again.approvals is None  # nobody was asked
    assert again.summary == recorded.summary
    assert "denied by arn:aws:iam::" in again.summary
    assert again.summary.endswith("second-responder: not before the owner confirms")

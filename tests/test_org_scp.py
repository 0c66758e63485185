"""``org.attach-scp`` / ``org.detach-scp`` against moto's Organizations: the SCP denying key
destruction to all but break-glass roles is created and attached through a playbook run,
rolled back (detached, and deleted since the run created it), refused in check mode, from a
member account, without SCPs, and idempotent on a re-run or a resumed attempt.

SCPs never restrict the management account (AWS Organizations user guide, "Service control
policies (SCPs)":
https://docs.aws.amazon.com/organizations/latest/userguide/orgs_manage_policies_scps.html):
the preview says so, and says it again when a target is the management account itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from kmsir import actions
from kmsir.actions.base import Done, EarlierAttempt
from kmsir.actions.org_detach import DetachScp, DetachScpParams
from kmsir.actions.org_scp import DEFAULT_ACTIONS, AttachScp, AttachScpParams, default_name
from kmsir.aws import ClientFactory
from kmsir.errors import ActionError, CheckModeRefusal
from kmsir.evidence.bundle import JOURNAL, read_journal
from kmsir.evidence.calls import Call, describe
from kmsir.run import permissions

from .clikit import cli
from .conftest import load_playbook, run_playbook
from .fakes import context

GLASS = "arn:aws:iam::*:role/BreakGlass"
SCP = "SERVICE_CONTROL_POLICY"
DOCS = "https://docs.aws.amazon.com/organizations/latest/userguide/orgs_manage_policies_scps.html"
NAME = default_name("INC-test")


@dataclass
class Org:
    """A moto organisation: its management account's clients, root, an OU, a member account."""

    clients: ClientFactory
    management: str
    root: str
    ou: str
    account: str

    @property
    def api(self) -> Any:
        return self.clients.client("organizations")

    def policy_named(self, name: str) -> dict[str, Any] | None:
        found = self.api.list_policies(Filter=SCP)["Policies"]
        summary = next((p for p in found if p["Name"] == name), None)
        if summary is None:
            return None
        return dict(self.api.describe_policy(PolicyId=summary["Id"])["Policy"])

    def targets(self, policy_id: str) -> set[str]:
        return {
            t["TargetId"] for t in self.api.list_targets_for_policy(PolicyId=policy_id)["Targets"]
        }

    def scps_on(self, target: str) -> list[str]:
        found = self.api.list_policies_for_target(TargetId=target, Filter=SCP)["Policies"]
        return sorted(p["Name"] for p in found)


@pytest.fixture
def org() -> Iterator[Org]:
    """An organisation with all features and SCPs enabled, an OU and a member account; the
    caller is its management account (moto's default account)."""
    from moto import mock_aws

    with mock_aws():
        api = boto3.client("organizations", region_name="eu-west-1")
        management = api.create_organization(FeatureSet="ALL")["Organization"]["MasterAccountId"]
        root = api.list_roots()["Roots"][0]["Id"]
        api.enable_policy_type(RootId=root, PolicyType=SCP)
        ou = api.create_organizational_unit(ParentId=root, Name="workloads")
        api.create_account(AccountName="payments", Email="payments@example.com")
        account = next(a["Id"] for a in api.list_accounts()["Accounts"] if a["Name"] == "payments")
        clients = ClientFactory(
            session_factory=lambda: boto3.Session(region_name="eu-west-1"),
            region="eu-west-1",
            guard_send=True,
        )
        yield Org(clients, management, root, ou["OrganizationalUnit"]["Id"], account)


def playbook(tmp_path: Path, org: Org, **extra: Any) -> Path:
    path = tmp_path / "scp.yaml"
    step = {
        "id": "scp",
        "action": "org.attach-scp",
        "with": {"targets": [org.account, org.ou], "break_glass": [GLASS], **extra},
    }
    path.write_text(json.dumps({"id": "org-freeze", "title": "Freeze", "steps": [step]}))
    return path


def changes(calls: list[Call]) -> list[str]:
    return [c.operation for c in calls if not c.read_only]


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    return text


# -- attach through a run, then roll it back ------------------------------------------------


def test_a_run_attaches_the_scp_and_rollback_detaches_and_deletes_it(
    org: Org, tmp_path: Path
) -> None:
    result = run_playbook(
        load_playbook(playbook(tmp_path, org)),
        org.clients,
        tmp_path / "ev",
        answers={"scp": "approve"},
        mode="live",
    )
    assert result.status == "succeeded", result.error
    found = org.policy_named(NAME)
    assert found is not None
    (statement,) = json.loads(found["Content"])["Statement"]
    assert statement["Effect"] == "Deny"
    assert statement["Action"] == list(DEFAULT_ACTIONS)
    assert statement["Resource"] == "*"
    assert statement["Condition"] == {"ArnNotLike": {"aws:PrincipalArn": [GLASS]}}
    policy_id = found["PolicySummary"]["Id"]
    assert org.targets(policy_id) == {org.account, org.ou}
    step = read_journal(result.bundle / JOURNAL).view().steps["scp"]
    assert step.outputs["created"] is True
    assert step.outputs["changed"] == [org.account, org.ou]
    assert step.outputs["policy_id"] == policy_id

    ran = cli("rollback", result.bundle, "--yes", env={"AWS_DEFAULT_REGION": "eu-west-1"})
    assert ran.exit_code == 0, ran.stderr
    rolled = read_journal(Path(ran.stdout.strip()).parent / JOURNAL).view()
    undo = rolled.steps["undo-scp"]
    assert (undo.action, undo.status) == ("org.detach-scp", "succeeded")
    assert org.policy_named(NAME) is None  # detached from both, and deleted: the run made it
    assert org.scps_on(org.account) == org.scps_on(org.ou) == ["FullAWSAccess"]


def test_check_mode_sends_nothing(org: Org, tmp_path: Path) -> None:
    result = run_playbook(
        load_playbook(playbook(tmp_path, org)), org.clients, tmp_path / "ev", mode="check"
    )
    assert result.status == "succeeded", result.error
    assert org.policy_named(NAME) is None
    assert org.scps_on(org.account) == ["FullAWSAccess"]
    # the client factory itself refuses both calls in check mode (neither reads)
    org.clients.check_mode = True
    with pytest.raises(CheckModeRefusal, match="organizations:CreatePolicy"):
        org.api.create_policy(Name="x", Type=SCP, Description="", Content="{}")
    with pytest.raises(CheckModeRefusal, match="organizations:AttachPolicy"):
        org.api.attach_policy(PolicyId="p-FullAWSAccess", TargetId=org.account)


# -- preview, idempotence, resume ------------------------------------------------------------


def test_the_preview_shows_the_calls_the_attachments_and_the_management_account(
    org: Org,
) -> None:
    ctx, calls = context(org.clients)
    params = AttachScpParams(targets=[org.account, org.ou, org.management], break_glass=GLASS)
    preview = AttachScp().preview(ctx, params)
    content = json.dumps(params.document(), separators=(",", ":"))
    shown = [describe(c) for c in preview.calls]
    assert shown[0].startswith(f"organizations:CreatePolicy Name={NAME} Type={SCP} ")
    assert shown[0].endswith(f" Content={content}")
    assert shown[1:] == [
        f"organizations:AttachPolicy PolicyId=<the new policy's id> TargetId={t}"
        for t in (org.account, org.ou, org.management)
    ]
    assert f"OU {org.ou}: SCPs attached: FullAWSAccess (p-FullAWSAccess)" in preview.state
    assert f"no SCP named {NAME} yet" in preview.state
    assert any(DOCS in note and "management account" in note for note in preview.notes)
    assert any(f"{org.management} is the management account" in n for n in preview.notes)
    assert changes(calls) == []


def test_a_rerun_is_already_and_sends_nothing(org: Org) -> None:
    ctx, calls = context(org.clients)
    params = AttachScpParams(targets=[org.account], break_glass=[GLASS])
    first = AttachScp().run(ctx, params)
    assert first.status == "succeeded" and first.outputs["created"] is True
    calls.clear()
    assert AttachScp().preview(ctx, params).calls == ()
    again = AttachScp().run(ctx, params)
    assert again.status == "already" and changes(calls) == []
    assert again.outputs["changed"] == [] and again.outputs["created"] is False
    # the same policy, attached to one more target: reused, not created twice
    wider = AttachScpParams(targets=[org.account, org.ou], break_glass=[GLASS])
    more = AttachScp().run(ctx, wider)
    assert changes(calls) == ["AttachPolicy"]
    assert more.outputs["changed"] == [org.ou] and more.outputs["created"] is False
    undo = AttachScp().undo(Done("s", {}, more.outputs, more.before, more.after, "/b"))
    assert undo is not None and undo.params["delete"] is False  # it was there before


def test_a_resumed_attempt_reuses_the_policy_it_created_and_attaches_the_rest(
    org: Org,
) -> None:
    """The run stopped after CreatePolicy: the resumed attempt finds the policy (same name,
    same content), creates no second one, attaches it, and reports it created by the step."""
    params = AttachScpParams(targets=[org.account, org.ou], break_glass=[GLASS])
    made = org.api.create_policy(
        Name=NAME,
        Type=SCP,
        Description="kmsir",
        Content=json.dumps(params.document(), separators=(",", ":")),
    )["Policy"]["PolicySummary"]["Id"]
    ctx, calls = context(org.clients)
    before = {"policy_name": NAME, "policy": None, "targets": {org.account: [], org.ou: []}}
    sent = Call(service="organizations", operation="CreatePolicy", params={"Name": NAME})
    ctx.earlier_attempt = EarlierAttempt(before=before, sent=(sent,))
    outcome = AttachScp().run(ctx, params)
    assert changes(calls) == ["AttachPolicy", "AttachPolicy"]
    assert outcome.outputs["policy_id"] == made and outcome.outputs["created"] is True
    assert outcome.before == before
    assert org.targets(made) == {org.account, org.ou}


def test_a_policy_of_that_name_with_other_content_is_refused(org: Org) -> None:
    org.api.create_policy(Name=NAME, Type=SCP, Description="", Content='{"Version":"2012-10-17"}')
    ctx, calls = context(org.clients)
    with pytest.raises(ActionError) as raised:
        AttachScp().run(ctx, AttachScpParams(targets=[org.account], break_glass=[GLASS]))
    assert "already exists with other content" in one_line(raised)
    assert changes(calls) == []


# -- refusals -------------------------------------------------------------------------------


def test_a_member_account_is_refused_in_one_line(org: Org) -> None:
    sts = boto3.client("sts", region_name="eu-west-1")
    role = f"arn:aws:iam::{org.account}:role/OrganizationAccountAccessRole"
    creds = sts.assume_role(RoleArn=role, RoleSessionName="kmsir")["Credentials"]
    member = ClientFactory(
        session_factory=lambda: boto3.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            region_name="eu-west-1",
        ),
        region="eu-west-1",
        guard_send=True,
    )
    ctx, calls = context(member)
    params = AttachScpParams(targets=[org.ou], break_glass=[GLASS])
    with pytest.raises(ActionError) as raised:
        AttachScp().preview(ctx, params)
    assert one_line(raised) == (
        f"org.attach-scp: run it from the management account {org.management} of organisation "
        f"{org.api.describe_organization()['Organization']['Id']}: the caller is account "
        f"{org.account}, which cannot create or attach SCPs"
    )
    with pytest.raises(ActionError, match="run it from the management account"):
        DetachScp().run(ctx, DetachScpParams(policy=NAME, delete=True))
    assert changes(calls) == []


def test_an_organisation_without_scps_enabled_is_refused_in_one_line(org: Org) -> None:
    org.api.disable_policy_type(RootId=org.root, PolicyType=SCP)
    ctx, calls = context(org.clients)
    with pytest.raises(ActionError) as raised:
        AttachScp().run(ctx, AttachScpParams(targets=[org.ou], break_glass=[GLASS]))
    assert "SCPs are not enabled in organisation" in one_line(raised)
    assert f"--root-id {org.root}" in str(raised.value)
    assert changes(calls) == []


@pytest.mark.parametrize(
    ("given", "error"),
    [
        ({"targets": ["111122223333"]}, "break_glass is empty: the SCP would lock every"),
        ({"targets": ["acct-1"], "break_glass": [GLASS]}, "'acct-1' is not an account id"),
        ({"targets": [], "break_glass": [GLASS]}, "at least 1 item"),
        ({"targets": "r-ab12", "break_glass": ["BreakGlass"]}, "is not an IAM role ARN"),
        ({"targets": "r-ab12", "break_glass": [GLASS], "name": "a/b"}, "not a valid SCP name"),
        ({"targets": "r-ab12", "break_glass": [GLASS], "actions": ["kms"]}, "not an IAM action"),
    ],
)
def test_bad_parameters_are_refused(given: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        AttachScpParams.model_validate(given)


def test_allow_lockout_renders_a_deny_for_everyone() -> None:
    params = AttachScpParams(targets="r-ab12", allow_lockout=True)
    (statement,) = params.document()["Statement"]
    assert "Condition" not in statement and statement["Effect"] == "Deny"


# -- detach ---------------------------------------------------------------------------------


def test_detach_keeps_a_policy_attached_elsewhere_and_undo_attaches_it_again(
    org: Org,
) -> None:
    ctx, calls = context(org.clients)
    attach = AttachScpParams(targets=[org.account, org.ou], break_glass=[GLASS])
    policy_id = AttachScp().run(ctx, attach).outputs["policy_id"]
    params = DetachScpParams(policy=NAME, targets=[org.account], delete=True)
    preview = DetachScp().preview(ctx, params)
    assert [describe(c) for c in preview.calls] == [
        f"organizations:DetachPolicy PolicyId={policy_id} TargetId={org.account}"
    ]
    assert preview.notes == (f"kept (not deleted): still attached to {org.ou}",)
    calls.clear()
    outcome = DetachScp().run(ctx, params)
    assert changes(calls) == ["DetachPolicy"]
    assert outcome.outputs["still_attached"] == [org.ou] and outcome.outputs["deleted"] is False
    assert org.targets(policy_id) == {org.ou}
    assert DetachScp().run(ctx, params).status == "already"

    undo = DetachScp().undo(Done("d", {}, outcome.outputs, outcome.before, outcome.after, "/b"))
    assert undo is not None and undo.action == "org.attach-scp"
    assert undo.params["targets"] == [org.account]
    AttachScp().run(ctx, AttachScpParams.model_validate(undo.params))
    assert org.targets(policy_id) == {org.account, org.ou}


def test_detach_and_delete_then_undo_recreates_it(org: Org) -> None:
    ctx, _ = context(org.clients)
    AttachScp().run(ctx, AttachScpParams(targets=[org.ou], break_glass=[GLASS]))
    outcome = DetachScp().run(ctx, DetachScpParams(policy=NAME, targets=[org.ou], delete=True))
    assert outcome.outputs["deleted"] is True and org.policy_named(NAME) is None
    undo = DetachScp().undo(Done("d", {}, outcome.outputs, outcome.before, outcome.after, "/b"))
    assert undo is not None
    again = AttachScp().run(ctx, AttachScpParams.model_validate(undo.params))
    assert again.outputs["created"] is True
    assert org.targets(again.outputs["policy_id"]) == {org.ou}


def test_detach_refuses_aws_s_full_access_policy(org: Org) -> None:
    ctx, calls = context(org.clients)
    with pytest.raises(ActionError) as raised:
        DetachScp().run(ctx, DetachScpParams(policy="p-FullAWSAccess", targets=[org.ou]))
    assert "is managed by AWS" in one_line(raised)
    # refused by its id, before any call (DescribePolicy on it is outside kmsir's permissions)
    assert calls == []


def test_detach_undo_uses_the_targets_it_detached_and_says_when_it_deleted_an_unattached_one(
    org: Org,
) -> None:
    params = AttachScpParams(targets=[org.ou], break_glass=[GLASS])
    had = {"id": "p-12345678", "name": NAME, "arn": "arn", "content": params.document()}
    before = {"policy": had, "attached": [org.ou]}
    asked = {"policy": NAME, "targets": [org.account]}
    outputs = {"policy_id": had["id"], "policy_name": NAME, "changed": [], "still_attached": []}
    # finished, detached from no target it named: nothing to attach again
    kept = Done("d", asked, {**outputs, "deleted": False}, before, {}, "/b")
    assert DetachScp().undo(kept) is None
    # deleted, though it detached it from no target: said, not attached where it never was
    gone = Done("d", {**asked, "delete": True}, {**outputs, "deleted": True}, before, {}, "/b")
    undo = DetachScp().undo(gone)
    assert undo is not None and undo.action == "irreversible"
    assert f"SCP {NAME} (p-12345678) was deleted while attached to no target" in undo.summary
    # stopped inside the step (no outputs): wherever it may have detached it
    stopped = DetachScp().undo(Done("d", asked, {}, before, None, "/b"))
    assert stopped is not None and stopped.params["targets"] == [org.account]


def test_attach_undo_after_a_stopped_run_detaches_only_where_it_was_not_before(org: Org) -> None:
    params = AttachScpParams(targets=[org.account, org.ou], break_glass=[GLASS])
    had = {"id": "p-12345678", "name": NAME, "arn": "arn", "content": params.document()}
    before = {
        "policy_name": NAME,
        "policy": had,
        "targets": {org.account: [{"id": "p-12345678", "name": NAME}], org.ou: []},
    }
    asked = {"targets": [org.account, org.ou], "break_glass": [GLASS]}
    undo = AttachScp().undo(Done("scp", asked, {}, before, None, "/b"))
    assert undo is not None
    assert undo.params == {"policy": NAME, "targets": [org.ou], "delete": False}


# -- kmsir's own containment and AWS's limits -----------------------------------------------


def test_a_break_glass_may_be_an_account_root() -> None:
    root = "arn:aws:iam::111122223333:root"
    params = AttachScpParams(targets="r-ab12", break_glass=[root])
    (statement,) = params.document()["Statement"]
    assert statement["Condition"] == {"ArnNotLike": {"aws:PrincipalArn": [root]}}


def test_the_preview_says_when_the_scp_would_deny_kmsir_s_own_containment() -> None:
    from kmsir.actions.org_reads import lockout_notes

    actions_ = list(DEFAULT_ACTIONS)
    operator = "arn:aws:sts::123456789012:assumed-role/IncidentResponder/alice"
    targets = ["111122223333", "ou-ab12-cdefgh34"]
    (note,) = lockout_notes(operator, [GLASS], actions_, targets)
    assert "role IncidentResponder (the run's operator) in account 111122223333, any account" in (
        note
    )
    assert "add arn:aws:iam::*:role/IncidentResponder to break_glass" in note
    covered = [GLASS, "arn:aws:iam::*:role/Incident*"]
    assert lockout_notes(operator, covered, actions_, targets) == []
    # a pattern naming one account covers the role there, not in an OU's other accounts
    one = ["arn:aws:iam::111122223333:role/IncidentResponder"]
    assert lockout_notes(operator, one, actions_, targets[:1]) == []
    (only_ou,) = lockout_notes(operator, one, actions_, targets)
    assert "in any account matches no break_glass" in only_ou


def test_the_preview_notes_a_target_already_at_aws_s_five_scps(org: Org) -> None:
    for n in range(4):  # with FullAWSAccess: 5
        made = org.api.create_policy(
            Name=f"other-{n}", Type=SCP, Description="", Content='{"Version":"2012-10-17"}'
        )["Policy"]["PolicySummary"]["Id"]
        org.api.attach_policy(PolicyId=made, TargetId=org.account)
    ctx, _ = context(org.clients)
    preview = AttachScp().preview(
        ctx, AttachScpParams(targets=[org.account, org.ou], break_glass=[GLASS])
    )
    full = [n for n in preview.notes if "AWS's maximum" in n]
    assert full == [
        f"account {org.account} already has 5 SCPs attached, AWS's maximum of 5: AttachPolicy "
        "will be refused there; detach one first"
    ]
    # moto's caller is an IAM user: the note says kmsir acts as its role in member accounts
    assert any("is not a role" in n and "--role-name" in n for n in preview.notes)


# -- permissions ----------------------------------------------------------------------------


def test_the_permissions_are_for_scps_only_and_name_the_targets(tmp_path: Path) -> None:
    import parliament  # type: ignore[import-untyped]

    from kmsir.playbook.model import resolve_inputs

    path = tmp_path / "p.yaml"
    path.write_text(
        "id: p\ntitle: P\nsteps:\n"
        "  - {id: scp, action: org.attach-scp,"
        f" with: {{targets: ['111122223333', ou-ab12-cdefgh34], break_glass: ['{GLASS}']}}}}\n"
        "  - {id: detach, action: org.detach-scp, with: {policy: p-12345678, targets: r-ab12}}\n"
    )
    book = load_playbook(path).playbook
    document = permissions.policy(book, actions.registry(), resolve_inputs(book, {}))
    assert parliament.analyze_policy_string(json.dumps(document)).findings == []
    attach = [s for s in document["Statement"] if "organizations:AttachPolicy" in s["Action"]]
    (statement,) = attach
    assert statement["Condition"] == {
        "StringEquals": {"organizations:PolicyType": "SERVICE_CONTROL_POLICY"}
    }
    assert set(statement["Resource"]) == {
        "arn:aws:organizations::*:account/o-*/111122223333",
        "arn:aws:organizations::*:ou/o-*/ou-ab12-cdefgh34",
        "arn:aws:organizations::*:policy/o-*/*/p-*",
    }
    granted = permissions.actions_of(document)
    assert "organizations:DeletePolicy" not in granted  # detach without delete: true
    assert {"organizations:CreatePolicy", "organizations:DetachPolicy"} <= granted


@pytest.mark.parametrize("name", ["org.attach-scp", "org.detach-scp"])
def test_each_is_registered_with_a_valid_example_and_its_inverse(name: str, tmp_path: Path) -> None:
    import re

    registry = actions.registry()
    action = registry[name]
    assert action.mutating and action.inverse in registry
    assert registry[action.inverse or ""].inverse == name
    example = re.search(r"```yaml\n(.*?)```", action.__doc__ or "", re.S)
    assert example is not None, name
    path = tmp_path / "example.yaml"
    path.write_text("id: example\ntitle: Example\nsteps:\n" + example[1])
    assert [s.action for s in load_playbook(path).playbook.steps] == [name]

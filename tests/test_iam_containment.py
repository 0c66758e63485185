"""Containing the actor against moto: revoke role sessions, deny-all policy, key policy Deny,
their inverses and undo, and never the responder (directly or through an assumed role)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from kmsir import actions
from kmsir.actions.base import Done, EarlierAttempt
from kmsir.actions.iam import AccessKeyParams, DeactivateAccessKey, ReactivateAccessKey
from kmsir.actions.iam_containment import AttachDenyPolicy, DenyPolicyParams, DetachDenyPolicy
from kmsir.actions.iam_responder import Principal
from kmsir.actions.iam_session_policy import POLICY_NAME, revoke_policy
from kmsir.actions.iam_sessions import (
    RestoreRoleSessions,
    RestoreSessionsParams,
    RevokeRoleSessions,
    RolesParams,
)
from kmsir.actions.kms_deny import SID, DenyPrincipals, DenyPrincipalsParams
from kmsir.actions.kms_policy import RestorePolicy, RestorePolicyParams
from kmsir.aws import ClientFactory
from kmsir.errors import ActionError
from kmsir.evidence import integrity
from kmsir.evidence.calls import Call, describe
from kmsir.playbook import model as playbook
from kmsir.sandbox import Sandbox

from .conftest import load_playbook, run_playbook
from .fakes import context

ACCOUNT = "123456789012"
DENY_ALL = "arn:aws:iam::aws:policy/AWSDenyAll"
TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": ACCOUNT}, "Action": "sts:AssumeRole"}
        ],
    }
)
NEW = (
    "iam.revoke-role-sessions",
    "iam.restore-role-sessions",
    "iam.attach-deny-policy",
    "iam.detach-deny-policy",
    "kms.deny-principals",
)


def only_deny_all() -> str:
    """moto's data of AWS's managed policies cut to the one kmsir attaches (AWSDenyAll)."""
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    return json.dumps({"AWSDenyAll": json.loads(aws_managed_policies_data)["AWSDenyAll"]})


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[ClientFactory]:
    """moto with AWS's managed policy AWSDenyAll loaded, roles, users and a key (alias/key)
    in it; the run's caller is moto's default user. moto loads AWS's managed policies into
    each IAM backend it makes (one per partition, a dozen a test, and again when it resets):
    all 1,582 of them were over half of this module's time, and kmsir uses only AWSDenyAll
    (no action lists AWS's policies)."""
    import boto3
    import moto.iam.models
    from moto import mock_aws

    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
    monkeypatch.setattr(moto.iam.models, "aws_managed_policies_data", only_deny_all())
    with mock_aws():
        iam = boto3.client("iam", region_name="eu-west-1")
        iam.create_role(RoleName="ci-deploy", AssumeRolePolicyDocument=TRUST, Path="/ci/")
        iam.put_role_policy(
            RoleName="ci-deploy",
            PolicyName="deploy",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
                }
            ),
        )
        iam.create_role(RoleName="incident-response", AssumeRolePolicyDocument=TRUST)
        iam.create_user(UserName="svc-reports")
        iam.create_user(UserName="alice")
        kms = boto3.client("kms", region_name="eu-west-1")
        kms.create_alias(
            AliasName="alias/key", TargetKeyId=kms.create_key()["KeyMetadata"]["KeyId"]
        )
        yield ClientFactory(
            session_factory=lambda: boto3.Session(region_name="eu-west-1"),
            region="eu-west-1",
            guard_send=True,
        )


def access_key(clients: ClientFactory, user: str) -> dict[str, str]:
    created = clients.client("iam").create_access_key(UserName=user)["AccessKey"]
    return {"id": created["AccessKeyId"], "secret": created["SecretAccessKey"]}


def key_status(clients: ClientFactory, user: str, key_id: str) -> str:
    keys = clients.client("iam").list_access_keys(UserName=user)["AccessKeyMetadata"]
    return str(next(k["Status"] for k in keys if k["AccessKeyId"] == key_id))


def inline(clients: ClientFactory, role: str) -> dict[str, Any]:
    iam = clients.client("iam")
    names = iam.list_role_policies(RoleName=role)["PolicyNames"]
    return {n: iam.get_role_policy(RoleName=role, PolicyName=n)["PolicyDocument"] for n in names}


def attached(clients: ClientFactory, **who: str) -> list[str]:
    iam = clients.client("iam")
    if "user" in who:
        found = iam.list_attached_user_policies(UserName=who["user"])["AttachedPolicies"]
    else:
        found = iam.list_attached_role_policies(RoleName=who["role"])["AttachedPolicies"]
    return [p["PolicyArn"] for p in found]


def done(step: str, params: dict[str, Any], outcome: Any, bundle: str = "/b") -> Done:
    return Done(step, params, outcome.outputs, outcome.before, outcome.after, bundle)


def changes(calls: list[Any]) -> list[str]:
    return [c.operation for c in calls if not c.read_only]


def fixed(when: datetime) -> Callable[[], datetime]:
    return lambda: when


# -- iam.revoke-role-sessions / iam.restore-role-sessions -----------------------------------


def test_revoke_role_sessions_puts_awss_policy_and_restore_removes_it(
    clients: ClientFactory,
) -> None:
    ctx, calls = context(clients)
    now = datetime(2026, 12, 1, 17, 30, 12, 500000, tzinfo=timezone.utc)
    ctx.now = fixed(now)
    # findings name a session: the role is what is revoked
    params = RolesParams(role=f"arn:aws:sts::{ACCOUNT}:assumed-role/ci-deploy/build-4711")
    assert params.role == ["ci-deploy"]
    preview = RevokeRoleSessions().preview(ctx, params)
    document = json.dumps(revoke_policy("2026-12-01T17:30:13Z"), separators=(",", ":"))
    assert [describe(c) for c in preview.calls] == [
        f"iam:PutRolePolicy RoleName=ci-deploy PolicyName={POLICY_NAME} PolicyDocument={document}"
    ]
    assert preview.target == f"IAM role ci-deploy (arn:aws:iam::{ACCOUNT}:role/ci/ci-deploy)"
    assert preview.state == "role ci-deploy: inline policies deploy; no earlier revocation"

    calls.clear()
    outcome = RevokeRoleSessions().run(ctx, params)
    policies = inline(clients, "ci-deploy")
    assert set(policies) == {"deploy", POLICY_NAME}
    (statement,) = policies[POLICY_NAME]["Statement"]
    assert statement["Effect"] == "Deny" and statement["Action"] == ["*"]
    # rounded up: a session issued in the same second as the step is revoked too
    assert statement["Condition"] == {
        "DateLessThan": {"aws:TokenIssueTime": "2026-12-01T17:30:13Z"}
    }
    assert [c.identity for c in calls if not c.read_only] == [c.identity for c in preview.calls]
    assert outcome.status == "succeeded"
    assert outcome.before == {
        "roles": {"ci-deploy": {"inline_policies": ["deploy"], "revoked_before": None}}
    }
    assert outcome.after == {
        "roles": {
            "ci-deploy": {
                "inline_policies": ["deploy", POLICY_NAME],
                "revoked_before": "2026-12-01T17:30:13Z",
            }
        }
    }
    assert outcome.outputs == {
        "roles": ["ci-deploy"],
        "changed": ["ci-deploy"],
        "revoked_before": "2026-12-01T17:30:13Z",
    }

    # already revoked as late as asked: nothing sent
    calls.clear()
    assert RevokeRoleSessions().preview(ctx, params).calls == ()
    again = RevokeRoleSessions().run(ctx, params)
    assert again.status == "already" and changes(calls) == []

    undo = RevokeRoleSessions().undo(done("revoke", {"role": "ci-deploy"}, outcome))
    assert undo is not None and undo.action == "iam.restore-role-sessions"
    assert undo.params == {"role": ["ci-deploy"]}
    restore = RestoreSessionsParams.model_validate(undo.params)
    back = RestoreRoleSessions().run(ctx, restore)
    assert set(inline(clients, "ci-deploy")) == {"deploy"}
    assert back.status == "succeeded" and back.after == outcome.before
    assert RestoreRoleSessions().run(ctx, restore).status == "already"
    redo = RestoreRoleSessions().undo(done("restore", undo.params, back))
    assert redo is not None and redo.action == "iam.revoke-role-sessions"
    assert redo.params == {"role": ["ci-deploy"]}


def test_a_later_moment_revokes_again_and_undo_puts_back_the_earlier_cutoff(
    clients: ClientFactory,
) -> None:
    """A role already revoked (say from the console) gets the later cutoff; undoing keeps
    the earlier revocation rather than removing it."""
    earlier = "2026-11-30T08:00:00Z"
    clients.client("iam").put_role_policy(
        RoleName="ci-deploy",
        PolicyName=POLICY_NAME,
        PolicyDocument=json.dumps(revoke_policy(earlier)),
    )
    ctx, _ = context(clients)
    ctx.now = fixed(datetime(2026, 12, 1, 9, 0, 0, tzinfo=timezone.utc))
    params = RolesParams(role=["ci-deploy", "arn:aws:iam::123456789012:role/ci/ci-deploy"])
    assert params.role == ["ci-deploy"]
    assert "already revoked" in RevokeRoleSessions().preview(ctx, params).state
    outcome = RevokeRoleSessions().run(ctx, params)
    assert outcome.status == "succeeded"
    condition = inline(clients, "ci-deploy")[POLICY_NAME]["Statement"][0]["Condition"]
    assert condition["DateLessThan"]["aws:TokenIssueTime"] == "2026-12-01T09:00:00Z"

    undo = RevokeRoleSessions().undo(done("revoke", {"role": "ci-deploy"}, outcome))
    assert undo is not None
    assert undo.params == {"role": ["ci-deploy"], "previous_cutoffs": {"ci-deploy": earlier}}
    RestoreRoleSessions().run(ctx, RestoreSessionsParams.model_validate(undo.params))
    assert inline(clients, "ci-deploy")[POLICY_NAME] == revoke_policy(earlier)


def test_a_resumed_revocation_reports_the_change_its_interrupted_attempt_made(
    clients: ClientFactory,
) -> None:
    ctx, calls = context(clients)
    cutoff = "2026-12-01T10:00:00Z"
    clients.client("iam").put_role_policy(
        RoleName="ci-deploy",
        PolicyName=POLICY_NAME,
        PolicyDocument=json.dumps(revoke_policy(cutoff)),
    )
    calls.clear()
    before = {"roles": {"ci-deploy": {"inline_policies": ["deploy"], "revoked_before": None}}}
    sent = Call(
        service="iam",
        operation="PutRolePolicy",
        params={"RoleName": "ci-deploy", "PolicyDocument": json.dumps(revoke_policy(cutoff))},
    )
    ctx.earlier_attempt = EarlierAttempt(before=before, sent=(sent,))
    ctx.now = fixed(datetime(2026, 12, 1, 10, 5, tzinfo=timezone.utc))  # resumed later
    params = RolesParams(role="ci-deploy")
    assert RevokeRoleSessions().preview(ctx, params).calls == ()
    outcome = RevokeRoleSessions().run(ctx, params)
    assert outcome.status == "succeeded" and outcome.before == before
    assert outcome.outputs["changed"] == ["ci-deploy"]
    assert outcome.outputs["revoked_before"] == cutoff
    assert changes(calls) == []


def test_a_resumed_revocation_of_two_roles_sends_only_the_missing_one(
    clients: ClientFactory,
) -> None:
    """The interrupted attempt revoked ci-deploy, not incident-response: the resumed one
    revokes incident-response only, and undoing it restores both as they were at first."""
    ctx, calls = context(clients)
    cutoff = "2026-12-01T10:00:00Z"
    document = json.dumps(revoke_policy(cutoff))
    clients.client("iam").put_role_policy(
        RoleName="ci-deploy", PolicyName=POLICY_NAME, PolicyDocument=document
    )
    calls.clear()
    first = {"inline_policies": ["deploy"], "revoked_before": None}
    fresh = {"inline_policies": [], "revoked_before": None}
    sent = Call(
        service="iam",
        operation="PutRolePolicy",
        params={"RoleName": "ci-deploy", "PolicyDocument": document},
    )
    ctx.earlier_attempt = EarlierAttempt(
        before={"roles": {"ci-deploy": first, "incident-response": fresh}}, sent=(sent,)
    )
    ctx.now = fixed(datetime(2026, 12, 1, 10, 5, tzinfo=timezone.utc))
    params = RolesParams(role=["ci-deploy", "incident-response"])
    outcome = RevokeRoleSessions().run(ctx, params)
    assert [c.params["RoleName"] for c in calls if not c.read_only] == ["incident-response"]
    assert outcome.before == {"roles": {"ci-deploy": first, "incident-response": fresh}}
    assert outcome.outputs["changed"] == ["ci-deploy", "incident-response"]
    undo = RevokeRoleSessions().undo(done("revoke", {"role": params.role}, outcome))
    assert undo is not None and undo.params == {"role": ["ci-deploy", "incident-response"]}
    ctx.earlier_attempt = None
    RestoreRoleSessions().run(ctx, RestoreSessionsParams.model_validate(undo.params))
    assert set(inline(clients, "ci-deploy")) == {"deploy"}
    assert inline(clients, "incident-response") == {}


def test_service_linked_roles_and_unknown_roles_are_refused(clients: ClientFactory) -> None:
    clients.client("iam").create_role(
        RoleName="AWSServiceRoleForSupport",
        AssumeRolePolicyDocument=TRUST,
        Path="/aws-service-role/support.amazonaws.com/",
    )
    ctx, calls = context(clients)
    with pytest.raises(ActionError, match="service-linked role"):
        RevokeRoleSessions().run(ctx, RolesParams(role="AWSServiceRoleForSupport"))
    with pytest.raises(ActionError, match="GetRole nope: AWS NoSuchEntity"):
        RevokeRoleSessions().preview(ctx, RolesParams(role="nope"))
    assert changes(calls) == []


@pytest.mark.parametrize(
    "role", ["bad role", "arn:aws:iam::123456789012:user/alice", "arn:aws:sts::1:assumed-role/x"]
)
def test_bad_role_parameters_are_refused(role: str) -> None:
    with pytest.raises(ValueError, match="is not an IAM role"):
        RolesParams(role=role)


# -- iam.attach-deny-policy / iam.detach-deny-policy ----------------------------------------


@pytest.mark.parametrize(
    ("given", "who"),
    [
        ({"user": f"arn:aws:iam::{ACCOUNT}:user/svc-reports"}, {"user": "svc-reports"}),
        ({"role": f"arn:aws:sts::{ACCOUNT}:assumed-role/ci-deploy/s"}, {"role": "ci-deploy"}),
    ],
)
def test_attach_deny_all_then_already_then_detach(
    clients: ClientFactory, given: dict[str, str], who: dict[str, str]
) -> None:
    ctx, calls = context(clients)
    params = DenyPolicyParams.model_validate(given)
    kind, name = next(iter(who.items()))
    preview = AttachDenyPolicy().preview(ctx, params)
    Kind = kind.title()
    assert [describe(c) for c in preview.calls] == [
        f"iam:Attach{Kind}Policy {Kind}Name={name} PolicyArn={DENY_ALL}"
    ]
    assert preview.target == f"IAM {kind} {name}"
    assert preview.state == f"{kind} {name}: managed policies attached: none"

    outcome = AttachDenyPolicy().run(ctx, params)
    assert attached(clients, **who) == [DENY_ALL]
    assert outcome.before == {f"{kind}s": {name: []}}
    assert outcome.after == {f"{kind}s": {name: ["AWSDenyAll"]}}
    assert outcome.outputs == {kind: [name], "changed": [name], "policy_arn": DENY_ALL}
    assert [c.identity for c in calls if not c.read_only] == [c.identity for c in preview.calls]

    calls.clear()
    assert AttachDenyPolicy().preview(ctx, params).calls == ()
    again = AttachDenyPolicy().run(ctx, params)
    assert again.status == "already" and changes(calls) == []

    undo = AttachDenyPolicy().undo(done("freeze", given, outcome))
    assert undo is not None and undo.action == "iam.detach-deny-policy"
    assert undo.params == {kind: [name]}
    back = DetachDenyPolicy().run(ctx, DenyPolicyParams.model_validate(undo.params))
    assert attached(clients, **who) == [] and back.after == outcome.before
    assert DetachDenyPolicy().run(ctx, params).status == "already"
    redo = DetachDenyPolicy().undo(done("unfreeze", undo.params, back))
    assert redo is not None and redo.action == "iam.attach-deny-policy"
    assert redo.params == {kind: [name]}


def test_attach_deny_all_to_several_roles_sends_only_what_is_missing(
    clients: ClientFactory,
) -> None:
    """As the playbooks pass the findings' roles: a list, one of them already denied."""
    clients.client("iam").attach_role_policy(RoleName="incident-response", PolicyArn=DENY_ALL)
    ctx, calls = context(clients)
    params = DenyPolicyParams(role=["ci-deploy", "incident-response", "ci-deploy"])
    assert params.role == ["ci-deploy", "incident-response"]
    preview = AttachDenyPolicy().preview(ctx, params)
    assert preview.target == "IAM roles ci-deploy, incident-response"
    assert [c.params["RoleName"] for c in preview.calls] == ["ci-deploy"]
    outcome = AttachDenyPolicy().run(ctx, params)
    assert outcome.outputs["changed"] == ["ci-deploy"]
    assert attached(clients, role="ci-deploy") == [DENY_ALL]
    undo = AttachDenyPolicy().undo(done("deny", {"role": params.role}, outcome))
    assert undo is not None and undo.params == {"role": ["ci-deploy"]}  # not the one it found
    DetachDenyPolicy().run(ctx, DenyPolicyParams.model_validate(undo.params))
    assert attached(clients, role="incident-response") == [DENY_ALL]
    assert attached(clients, role="ci-deploy") == []
    assert [c.operation for c in calls if not c.read_only] == [
        "AttachRolePolicy",
        "DetachRolePolicy",
    ]


def test_deny_policy_needs_exactly_one_of_user_or_role() -> None:
    for given in ({}, {"user": "a", "role": "b"}):
        with pytest.raises(ValueError, match="exactly one of user or role"):
            DenyPolicyParams.model_validate(given)


# -- undo of the access key actions ------------------------------------------------------------


def test_deactivate_and_reactivate_undo_each_other(clients: ClientFactory) -> None:
    key = access_key(clients, "svc-reports")
    ctx, _ = context(clients)
    given = {"user": f"arn:aws:iam::{ACCOUNT}:user/svc-reports", "access_key_id": key["id"]}
    outcome = DeactivateAccessKey().run(ctx, AccessKeyParams.model_validate(given))
    undo = DeactivateAccessKey().undo(done("deactivate", given, outcome))
    assert undo is not None and undo.action == "iam.reactivate-access-key"
    assert undo.params == {"user": "svc-reports", "access_key_id": key["id"]}
    back = ReactivateAccessKey().run(ctx, AccessKeyParams.model_validate(undo.params))
    assert key_status(clients, "svc-reports", key["id"]) == "Active"
    redo = ReactivateAccessKey().undo(done("reactivate", undo.params, back))
    assert redo is not None and redo.action == "iam.deactivate-access-key"


# -- never the responder ---------------------------------------------------------------------


def as_user(key: dict[str, str]) -> ClientFactory:
    import boto3

    return ClientFactory(
        session_factory=lambda: boto3.Session(
            aws_access_key_id=key["id"],
            aws_secret_access_key=key["secret"],
            region_name="eu-west-1",
        ),
        region="eu-west-1",
        guard_send=True,
    )


def test_the_callers_own_user_and_key_are_refused(clients: ClientFactory) -> None:
    own = access_key(clients, "alice")
    ctx, calls = context(as_user(own))
    with pytest.raises(
        ActionError,
        match=r"^iam.attach-deny-policy refused on IAM user alice: "
        r"it is the identity this run's credentials belong to",
    ):
        AttachDenyPolicy().preview(ctx, DenyPolicyParams(user=f"arn:aws:iam::{ACCOUNT}:user/alice"))
    with pytest.raises(ActionError, match="the access key this run itself signs"):
        DeactivateAccessKey().run(ctx, AccessKeyParams(user="alice", access_key_id=own["id"]))
    with pytest.raises(ActionError, match=r"kms\.deny-principals refused on"):
        DenyPrincipals().preview(
            ctx,
            DenyPrincipalsParams(
                key="alias/key", principals=[f"arn:aws:iam::{ACCOUNT}:user/alice"]
            ),
        )
    assert changes(calls) == []
    assert attached(clients, user="alice") == []
    assert key_status(clients, "alice", own["id"]) == "Active"
    # somebody else is fair game
    AttachDenyPolicy().run(ctx, DenyPolicyParams(user="svc-reports"))
    assert attached(clients, user="svc-reports") == [DENY_ALL]


def aws_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    path = tmp_path / "aws-config"
    path.write_text(text)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(path))


def as_profile(profile: str) -> ClientFactory:
    import boto3

    return ClientFactory(
        session_factory=lambda: boto3.Session(profile_name=profile, region_name="eu-west-1"),
        region="eu-west-1",
        guard_send=True,
    )


def assert_responder_refused(
    clients: ClientFactory, ctx: Any, source_key: str, via: str = "profile responder assumes"
) -> None:
    """Through the assumed role: its source key and user, and the role itself, are refused
    (``via``: the profile that assumes a role from them)."""
    role_arn = f"arn:aws:iam::{ACCOUNT}:role/incident-response"
    session = f"arn:aws:sts::{ACCOUNT}:assumed-role/incident-response/kmsir"
    refused: list[tuple[Callable[..., Any], Any, str]] = [
        (
            DeactivateAccessKey().run,
            AccessKeyParams(user="alice", access_key_id=source_key),
            rf"refused on {source_key}: it is the access key from which {via}",
        ),
        (
            AttachDenyPolicy().run,
            DenyPolicyParams(user="alice"),
            rf"refused on IAM user alice: it is the identity from which {via}",
        ),
        (
            RevokeRoleSessions().run,
            RolesParams(role=session),
            "refused on IAM role incident-response: it is the identity this run's "
            "credentials belong to",
        ),
        (
            AttachDenyPolicy().run,
            DenyPolicyParams(role=role_arn),
            "refused on IAM role incident-response",
        ),
    ]
    for attempt, params, message in refused:
        with pytest.raises(ActionError, match=message):
            attempt(ctx, params)
    for principal in (session, f"arn:aws:iam::{ACCOUNT}:user/alice", ACCOUNT):
        params = DenyPrincipalsParams(key="alias/key", principals=[principal])
        with pytest.raises(ActionError, match=re.escape(f"refused on {principal}")):
            DenyPrincipals().run(ctx, params)
    assert key_status(clients, "alice", source_key) == "Active"
    assert attached(clients, user="alice") == attached(clients, role="incident-response") == []
    assert POLICY_NAME not in inline(clients, "incident-response")


def test_the_user_behind_an_assumed_role_profile_is_refused(
    clients: ClientFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = access_key(clients, "alice")
    other = access_key(clients, "alice")
    aws_config(
        tmp_path,
        monkeypatch,
        f"""\
[profile responder]
role_arn = arn:aws:iam::{ACCOUNT}:role/incident-response
role_session_name = kmsir
source_profile = base

[profile base]
aws_access_key_id = {source["id"]}
aws_secret_access_key = {source["secret"]}
""",
    )
    responder = as_profile("responder")
    ctx, calls = context(responder)
    assert (
        responder.client("sts")
        .get_caller_identity()["Arn"]
        .endswith("assumed-role/incident-response/kmsir")
    )
    assert_responder_refused(clients, ctx, source["id"])
    assert changes(calls) == []
    # the actor is still contained, and alice's other key is not the one the session uses
    RevokeRoleSessions().run(ctx, RolesParams(role="ci-deploy"))
    DeactivateAccessKey().run(ctx, AccessKeyParams(user="alice", access_key_id=other["id"]))
    assert POLICY_NAME in inline(clients, "ci-deploy")
    assert key_status(clients, "alice", other["id"]) == "Inactive"


def test_a_chain_of_profiles_and_a_credential_source_are_followed(
    clients: ClientFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = access_key(clients, "alice")
    aws_config(
        tmp_path,
        monkeypatch,
        f"""\
[profile responder]
role_arn = arn:aws:iam::{ACCOUNT}:role/incident-response
role_session_name = kmsir
source_profile = middle

[profile middle]
role_arn = arn:aws:iam::{ACCOUNT}:role/ci-deploy
source_profile = base

[profile base]
aws_access_key_id = {source["id"]}
aws_secret_access_key = {source["secret"]}

[profile from-env]
role_arn = arn:aws:iam::{ACCOUNT}:role/incident-response
role_session_name = kmsir
credential_source = Environment
""",
    )
    ctx, calls = context(as_profile("responder"))
    assert_responder_refused(clients, ctx, source["id"], "profile middle assumes")
    with pytest.raises(ActionError, match="IAM role ci-deploy: it is the role from which profile"):
        RevokeRoleSessions().preview(ctx, RolesParams(role="ci-deploy"))

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", source["id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", source["secret"])
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    ctx, calls = context(as_profile("from-env"))
    assert_responder_refused(clients, ctx, source["id"], "profile from-env assumes")
    assert changes(calls) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (ACCOUNT, Principal(ACCOUNT, "root", "")),
        (f"arn:aws:iam::{ACCOUNT}:root", Principal(ACCOUNT, "root", "")),
        (f"arn:aws:iam::{ACCOUNT}:user/team/alice", Principal(ACCOUNT, "user", "alice")),
        (f"arn:aws:iam::{ACCOUNT}:role/ci/ci-deploy", Principal(ACCOUNT, "role", "ci-deploy")),
        (
            f"arn:aws:sts::{ACCOUNT}:assumed-role/ci-deploy/s",
            Principal(ACCOUNT, "role", "ci-deploy"),
        ),
        ("arn:aws:s3:::bucket", None),
    ],
)
def test_principals_are_compared_as_account_kind_and_name(
    value: str, expected: Principal | None
) -> None:
    assert Principal.parse(value) == expected


# -- kms.deny-principals ---------------------------------------------------------------------


def key_policy(sandbox: Sandbox, key_id: str) -> dict[str, Any]:
    from moto.kms.models import kms_backends

    return dict(json.loads(kms_backends[sandbox.account][sandbox.region].keys[key_id].policy))


def test_deny_principals_denies_exactly_them_and_restore_puts_the_policy_back(
    rogue_grant: Sandbox, tmp_path: Path
) -> None:
    key_id = rogue_grant.keys["payments"]["id"]
    original = key_policy(rogue_grant, key_id)
    role = f"arn:aws:iam::{ACCOUNT}:role/ci-deploy"
    book = tmp_path / "deny.yaml"
    book.write_text(f"""\
id: deny
title: Deny an outside account and a role
steps:
  - id: deny
    action: kms.deny-principals
    with: {{key: {key_id}, principals: ["444455556666", "{role}", "444455556666"]}}
  - id: again
    action: kms.deny-principals
    with: {{key: {key_id}, principals: ["{role}"]}}
""")
    result = run_playbook(
        load_playbook(book),
        rogue_grant.client_factory(),
        tmp_path / "ev",
        yes=True,
        scenario="rogue-grant",
    )
    assert result.status == "succeeded", result.error
    denied = key_policy(rogue_grant, key_id)
    assert denied["Statement"][:-1] == original["Statement"]
    assert denied["Statement"][-1] == {
        "Sid": SID,
        "Effect": "Deny",
        "Principal": {"AWS": ["arn:aws:iam::444455556666:root", role]},
        "Action": "kms:*",
        "Resource": "*",
    }
    steps = [
        json.loads(line) for line in (result.bundle / "journal.jsonl").read_text().splitlines()
    ]
    statuses = {e["step"]: e["data"]["status"] for e in steps if e["type"] == "step-succeeded"}
    assert statuses == {"deny": "succeeded", "again": "already"}
    assert integrity.verify(result.bundle) == []

    # rollback's undo names the first bundle's policy-before.json; it restores the policy
    (kept,) = [
        str(p.relative_to(result.bundle))
        for p in result.bundle.glob("artifacts/*-deny/policy-before.json")
    ]
    params = {"key": key_id, "principals": ["444455556666", role]}
    outcome = DenyPrincipals().run(
        context(rogue_grant.client_factory())[0], DenyPrincipalsParams.model_validate(params)
    )
    assert outcome.status == "already"
    undo = DenyPrincipals().undo(
        Done("deny", params, {"key_id": key_id}, None, None, str(result.bundle), (kept,))
    )
    assert undo is not None and undo.action == "kms.restore-policy"
    assert Path(undo.params["from"]).is_absolute() and undo.params["from"].endswith(kept)
    ctx, _ = context(rogue_grant.client_factory())
    RestorePolicy().run(ctx, RestorePolicyParams.model_validate(undo.params))
    assert key_policy(rogue_grant, key_id) == original


def test_deny_principals_adds_to_an_earlier_deny_and_shows_session_notes(
    rogue_grant: Sandbox,
) -> None:
    key_id = rogue_grant.keys["payments"]["id"]
    first = f"arn:aws:iam::{ACCOUNT}:user/svc-reports"
    session = "arn:aws:sts::444455556666:assumed-role/app/i-0abc"
    DenyPrincipals().run(
        context(rogue_grant.client_factory())[0],
        DenyPrincipalsParams(key=key_id, principals=[first]),
    )
    ctx, calls = context(rogue_grant.client_factory())
    params = DenyPrincipalsParams(key=key_id, principals=[session])
    preview = DenyPrincipals().preview(ctx, params)
    assert any("denies only the session" in n and session in n for n in preview.notes)
    DenyPrincipals().run(ctx, params)
    statement = key_policy(rogue_grant, key_id)["Statement"][-1]
    assert statement["Sid"] == SID and statement["Principal"] == {"AWS": [first, session]}
    assert [c.identity for c in calls if not c.read_only] == [c.identity for c in preview.calls]


def test_denying_the_callers_account_is_refused_before_any_change(rogue_grant: Sandbox) -> None:
    key_id = rogue_grant.keys["payments"]["id"]
    before = key_policy(rogue_grant, key_id)
    ctx, calls = context(rogue_grant.client_factory())
    with pytest.raises(ActionError, match=f"refused on {ACCOUNT}: account {ACCOUNT} holds"):
        DenyPrincipals().run(ctx, DenyPrincipalsParams(key=key_id, principals=[ACCOUNT]))
    assert changes(calls) == [] and key_policy(rogue_grant, key_id) == before


@pytest.mark.parametrize("principal", ["*", "arn:aws:s3:::bucket", "12345"])
def test_deny_principals_takes_only_principal_arns_and_accounts(principal: str) -> None:
    with pytest.raises(ValueError, match="not an IAM principal ARN or a 12-digit account id"):
        DenyPrincipalsParams(key="alias/x", principals=[principal])


# -- the new actions' contract ---------------------------------------------------------------


@pytest.mark.parametrize("name", NEW)
def test_each_new_action_is_registered_with_a_valid_example_and_its_inverse(
    name: str, tmp_path: Path
) -> None:
    registry = actions.registry()
    action = registry[name]
    assert action.mutating and action.inverse in registry
    example = re.search(r"```yaml\n(.*?)```", action.__doc__ or "", re.S)
    assert example is not None, name
    snapshot = {"id": "snapshot", "action": "kms.snapshot", "with": {"key": "alias/x"}}
    book = {"id": "example", "title": "Example", "steps": [snapshot, *yaml.safe_load(example[1])]}
    path = tmp_path / "example.yaml"
    path.write_text(yaml.safe_dump(book, sort_keys=False))
    loaded = playbook.load(path, actions.catalog())
    assert [s.action for s in loaded.playbook.steps] == ["kms.snapshot", name]


def test_the_preview_time_is_not_reused_at_run(clients: ClientFactory) -> None:
    """Approved at one moment, run later: the cutoff is the later moment."""
    ctx, _ = context(clients)
    shown = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
    ctx.now = fixed(shown)
    ctx.approved = RevokeRoleSessions().preview(ctx, RolesParams(role="ci-deploy"))
    ctx.now = fixed(shown + timedelta(minutes=3))
    outcome = RevokeRoleSessions().run(ctx, RolesParams(role="ci-deploy"))
    assert outcome.outputs["revoked_before"] == "2026-12-01T09:03:00Z"
    # a revocation at least as late as the approved one already in place: nothing more
    ctx.now = fixed(shown + timedelta(minutes=6))
    assert RevokeRoleSessions().run(ctx, RolesParams(role="ci-deploy")).status == "already"

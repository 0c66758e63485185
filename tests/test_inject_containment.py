"""The sandbox honours containment: an inject whose actor was contained fails as AWS would.

rogue-grant's attacker schedules the key's deletion as the CI role (identity ``ci``, role
``ci-deploy``). Each kind of containment is put in place here directly with boto3, as the
``iam.*`` and ``kms.deny-principals`` actions leave it: sessions revoked (AWS's inline
``AWSRevokeOlderSessions`` policy), ``AWSDenyAll`` attached, the key policy denying the
principal, and, for an attacker signing with an IAM user's access key, that key made Inactive.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from kmsir import report
from kmsir.errors import PlaybookError
from kmsir.evidence import entries
from kmsir.sandbox import Sandbox, identity_policy
from kmsir.sandbox import scenario as scenarios

from .conftest import PLAYBOOKS, load_playbook, run_playbook
from .journalkit import RUN, succeeded, view_of

CI_ROLE = "ci-deploy"
CI_SESSION = "arn:aws:sts::123456789012:assumed-role/ci-deploy/build-4821"


def key_state(sandbox: Sandbox) -> str:
    kms = sandbox.session().client("kms")
    return str(kms.describe_key(KeyId=sandbox.keys["payments"]["id"])["KeyMetadata"]["KeyState"])


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def revoke_sessions(sandbox: Sandbox, role: str = CI_ROLE, at: datetime | None = None) -> None:
    """AWS's "revoke active sessions": deny everything to sessions issued before ``at``."""
    when = at or datetime.now(timezone.utc)
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Action": ["*"],
                "Resource": ["*"],
                "Condition": {"DateLessThan": {"aws:TokenIssueTime": iso(when)}},
            }
        ],
    }
    sandbox.session().client("iam").put_role_policy(
        RoleName=role, PolicyName="AWSRevokeOlderSessions", PolicyDocument=json.dumps(policy)
    )


def attach_deny_all(sandbox: Sandbox) -> None:
    sandbox.session().client("iam").attach_role_policy(
        RoleName=CI_ROLE, PolicyArn="arn:aws:iam::aws:policy/AWSDenyAll"
    )


def deny_in_key_policy(sandbox: Sandbox, principal: str = f"role/{CI_ROLE}") -> None:
    """A key policy Deny for one principal (``account`` alone: the whole account)."""
    kms = sandbox.session().client("kms")
    key = sandbox.keys["payments"]["id"]
    policy = json.loads(kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"])
    named = principal if principal.isdigit() else f"arn:aws:iam::{sandbox.account}:{principal}"
    policy["Statement"].append(
        {
            "Sid": "DenyContainedPrincipals",
            "Effect": "Deny",
            "Principal": {"AWS": named},
            "Action": "kms:*",
            "Resource": "*",
        }
    )
    kms.put_key_policy(KeyId=key, PolicyName="default", Policy=json.dumps(policy))


def failed_deletion_events(sandbox: Sandbox) -> list[dict[str, Any]]:
    """The ScheduleKeyDeletion events LookupEvents returns, and those in the trail bucket."""
    session = sandbox.session()
    found = session.client("cloudtrail").lookup_events(
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "ScheduleKeyDeletion"}]
    )["Events"]
    looked_up = [json.loads(e["CloudTrailEvent"]) for e in found]
    s3 = session.client("s3")
    (name,) = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=sandbox.trail_bucket)["Contents"]
        if o["Key"].endswith("_inject00.json.gz")
    ]
    body = s3.get_object(Bucket=sandbox.trail_bucket, Key=name)["Body"].read()
    (delivered,) = json.loads(gzip.decompress(body))["Records"]
    assert looked_up == [delivered]
    return looked_up


@pytest.mark.parametrize(
    ("contain", "reason"),
    [
        (revoke_sessions, "role ci-deploy's sessions were revoked at 20"),
        (attach_deny_all, "role ci-deploy is denied kms:ScheduleKeyDeletion by policy "),
        (deny_in_key_policy, "the key policy denies arn:aws:iam::123456789012:role/ci-deploy"),
    ],
    ids=["sessions-revoked", "deny-all-attached", "key-policy-deny"],
)
def test_a_contained_roles_inject_is_blocked(
    rogue_grant: Sandbox, contain: Callable[[Sandbox], None], reason: str
) -> None:
    contain(rogue_grant)
    (record,) = rogue_grant.after_step("disable")
    assert key_state(rogue_grant) == "Enabled"  # the deletion was never scheduled
    assert record["blocked"].startswith(reason), record["blocked"]
    assert record["actor"] == {"arn": CI_SESSION}  # no scenario name: the players see it
    # what the scenario has the players told when the attempt fails (its say_blocked)
    assert record["say"].startswith("The attacker's Decrypt calls fail now; they tried to")
    assert "AWS refused it (AccessDenied)" in record["say"]
    (call,) = record["calls"]
    assert (call["operation"], call["error_code"], call["blocked"]) == (
        "ScheduleKeyDeletion",
        "AccessDeniedException",
        True,
    )
    assert call["error_message"].startswith(
        f"User: {CI_SESSION} is not authorized to perform: kms:ScheduleKeyDeletion on resource: "
        f"{rogue_grant.keys['payments']['arn']} with an explicit deny in a"
    )
    (event,) = failed_deletion_events(rogue_grant)
    assert event["userIdentity"]["arn"] == CI_SESSION
    assert (event["errorCode"], event["errorMessage"]) == (
        "AccessDeniedException",
        call["error_message"],
    )
    assert event["responseElements"] is None
    assert record["failed_events"] == [
        {"event": 0, "error_code": "AccessDeniedException", "error_message": call["error_message"]}
    ]
    assert rogue_grant.after_step("disable") == []  # still at most once


def test_a_deleted_roles_sessions_can_do_nothing(rogue_grant: Sandbox) -> None:
    rogue_grant.session().client("iam").delete_role(RoleName=CI_ROLE)
    (record,) = rogue_grant.after_step("disable")
    assert record["blocked"] == "role ci-deploy was deleted"
    assert record["calls"][0]["error_message"].endswith(
        "because no identity-based policy allows the kms:ScheduleKeyDeletion action"
    )
    assert key_state(rogue_grant) == "Enabled"


def test_a_revocation_names_its_moment_and_policy(rogue_grant: Sandbox) -> None:
    at = datetime.now(timezone.utc).replace(microsecond=0)
    revoke_sessions(rogue_grant, at=at)
    (record,) = rogue_grant.after_step("disable")
    assert record["blocked"] == (
        f"role ci-deploy's sessions were revoked at {iso(at)} (inline policy "
        "AWSRevokeOlderSessions)"
    )


def test_sessions_issued_after_the_revocation_go_on(rogue_grant: Sandbox) -> None:
    """The CI session was issued at its first event in the story (4 days ago): a revocation of
    sessions older than a week does not touch it."""
    revoke_sessions(rogue_grant, at=datetime.now(timezone.utc) - timedelta(days=7))
    (record,) = rogue_grant.after_step("disable")
    assert "blocked" not in record and record["calls"][0]["error_code"] is None
    assert key_state(rogue_grant) == "PendingDeletion"


@pytest.mark.parametrize(
    "contain",
    [
        lambda s: revoke_sessions(s, role="payments-app"),
        lambda s: deny_in_key_policy(s, principal="role/payments-app"),
        lambda s: deny_in_key_policy(s, principal="444455556666"),
    ],
    ids=["other-role-revoked", "other-role-denied", "outside-account-denied"],
)
def test_containing_someone_else_does_not_stop_the_actor(
    rogue_grant: Sandbox, contain: Callable[[Sandbox], None]
) -> None:
    contain(rogue_grant)
    (record,) = rogue_grant.after_step("disable")
    assert "blocked" not in record and "failed_events" not in record
    assert record["say"].startswith("The attacker's Decrypt calls fail now")
    assert key_state(rogue_grant) == "PendingDeletion"
    (event,) = failed_deletion_events(rogue_grant)
    assert "errorCode" not in event and event["responseElements"]["keyState"] == "PendingDeletion"


def test_the_sandbox_seeds_a_role_for_each_role_identity_of_its_account(
    rogue_grant: Sandbox,
) -> None:
    """ci-deploy and payments-app are roles of the sandbox's account; the outsider's
    backup-sync role is another account's: this account's IAM has nothing of it. Seeding
    them leaves every seeded id as it was (the grant ids the journals of older runs hold)."""
    iam = rogue_grant.session().client("iam")
    roles = {r["RoleName"]: r for r in iam.list_roles()["Roles"]}
    assert sorted(roles) == ["ci-deploy", "payments-app"]
    trust = roles["ci-deploy"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"AWS": "arn:aws:iam::123456789012:root"}
    # 64 hex characters as AWS writes them (since issue 17), from moto's draw "ec4f3378"
    assert rogue_grant.grants["rogue"]["id"] == (
        "24fe5aa3b4a26f35fe4de2bf0523647bd333d139ac3d764739c76bd0cfe632d9"
    )
    assert rogue_grant.keys["payments"]["id"] == "21bade02-6a6a-4768-b2ed-66ffdcc99396"


# -- an attacker signing with an IAM user's access key ----------------------------------------


@pytest.fixture
def stolen_key(tmp_path: Path) -> Iterator[Sandbox]:
    """rogue-grant, except that the attacker signs with the access key of the IAM user
    ``ci-deployer`` (identity ``thief``) and names it as the inject's ``identity``."""
    text = (scenarios.scenario_dir() / "rogue-grant.yaml").read_text()
    story, injects = text.split("\ninjects:\n")
    story = story.replace(
        "\nidentities:\n",
        "\nusers:\n  deployer: {name: ci-deployer, access_keys: 2}\n\nidentities:\n"
        "  thief: {type: IAMUser, user: deployer}\n",
    )
    injects = injects.replace("identity: ci", "identity: thief")
    injects = injects.replace("  - after: disable\n", "  - after: disable\n    identity: thief\n")
    path = tmp_path / "stolen-key.yaml"
    path.write_text(f"{story}\ninjects:\n{injects}")
    with Sandbox(scenarios.load(str(path))) as sandbox:
        yield sandbox


def test_an_inactive_access_key_is_refused_before_any_policy(stolen_key: Sandbox) -> None:
    user = stolen_key.users["deployer"]
    stolen_key.session().client("iam").update_access_key(
        UserName="ci-deployer", AccessKeyId=user["access_key_id"], Status="Inactive"
    )
    (record,) = stolen_key.after_step("disable")
    assert key_state(stolen_key) == "Enabled"
    assert record["blocked"] == f"user ci-deployer's access key {user['access_key_id']} is Inactive"
    assert record["actor"] == {"arn": user["arn"]}
    (call,) = record["calls"]
    assert (call["error_code"], call["blocked"]) == ("UnrecognizedClientException", True)
    (event,) = failed_deletion_events(stolen_key)
    assert event["userIdentity"]["accessKeyId"] == user["access_key_id"]
    assert event["errorCode"] == "UnrecognizedClientException"
    assert event["errorMessage"] == "The security token included in the request is invalid."


def test_the_users_other_key_made_inactive_does_not_stop_it(stolen_key: Sandbox) -> None:
    user = stolen_key.users["deployer"]
    other = user["access_key_ids"][1]
    stolen_key.session().client("iam").update_access_key(
        UserName="ci-deployer", AccessKeyId=other, Status="Inactive"
    )
    (record,) = stolen_key.after_step("disable")
    assert "blocked" not in record and key_state(stolen_key) == "PendingDeletion"


def test_a_users_long_term_key_has_no_session_to_revoke(stolen_key: Sandbox) -> None:
    """``aws:TokenIssueTime`` is absent for an IAM user's own access key: AWS's revocation
    policy, put on the user, does not apply; AWSDenyAll attached to it does."""
    iam = stolen_key.session().client("iam")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Action": "*",
                "Resource": "*",
                "Condition": {
                    "DateLessThan": {"aws:TokenIssueTime": iso(datetime.now(timezone.utc))}
                },
            }
        ],
    }
    iam.put_user_policy(UserName="ci-deployer", PolicyName="Old", PolicyDocument=json.dumps(policy))
    (record,) = stolen_key.injects.after("disable", datetime.now(timezone.utc))
    assert "blocked" not in record
    stolen_key.injects.fired.clear()
    iam.attach_user_policy(UserName="ci-deployer", PolicyArn="arn:aws:iam::aws:policy/AWSDenyAll")
    (record,) = stolen_key.injects.after("disable", datetime.now(timezone.utc))
    assert record["blocked"] == (
        "user ci-deployer is denied kms:ScheduleKeyDeletion by policy "
        "arn:aws:iam::aws:policy/AWSDenyAll"
    )


# -- replay, the run, the report, the scenario's fields ------------------------------------


def test_replay_keeps_a_journaled_block_whatever_the_rebuilt_world_says() -> None:
    """A resumed run rebuilds the world in journal order: the inject's record, not the world,
    says whether it was blocked (here the containment itself is not in the journal)."""
    world = scenarios.load("rogue-grant")
    with Sandbox(world) as first:
        revoke_sessions(first)
        (blocked,) = first.after_step("disable")
        now = first.now
    with Sandbox(world, now=now) as again:
        result = again.replay(
            view_of((None, RUN), succeeded("disable"), ("disable", entries.Inject(record=blocked)))
        )
        assert result == {"replayed": 0, "refused": [], "injects_replayed": 1}
        assert key_state(again) == "Enabled"
        (event,) = failed_deletion_events(again)
        assert event["errorCode"] == "AccessDeniedException" and event["responseElements"] is None
        assert again.after_step("disable") == []
    with Sandbox(world) as first:
        (went_through,) = first.after_step("disable")
    with Sandbox(world, now=now) as again:  # contained now, but not when it first fired
        revoke_sessions(again)
        again.replay(
            view_of(
                (None, RUN), succeeded("disable"), ("disable", entries.Inject(record=went_through))
            )
        )
        assert key_state(again) == "PendingDeletion"


def test_a_run_whose_attacker_was_contained_cancels_nothing(
    rogue_grant: Sandbox, tmp_path: Path
) -> None:
    """The CI role's sessions revoked before ``disable``: the attacker's deletion fails, the
    recheck finds the key Disabled, nothing needs cancelling; the journal's inject entry and
    the report's timeline say the attempt was blocked."""
    revoke_sessions(rogue_grant)
    world = rogue_grant.scenario
    result = run_playbook(
        load_playbook(PLAYBOOKS / f"{world.playbook}.yaml"),
        rogue_grant.client_factory(),
        tmp_path,
        inputs=world.inputs,
        answers=world.answers,
        scenario=world.id,
        after_step=rogue_grant.after_step,
    )
    assert key_state(rogue_grant) == "Disabled"
    lines = [json.loads(x) for x in (result.bundle / "journal.jsonl").read_text().splitlines()]
    (inject,) = [e for e in lines if e["type"] == "inject"]
    assert inject["data"]["blocked"].startswith("role ci-deploy's sessions were revoked")
    steps = {e["step"]: e for e in lines if e["type"] in ("step-succeeded", "step-skipped")}
    assert steps["recheck"]["data"]["outputs"]["state"] == "Disabled"
    assert steps["cancel"]["type"] == "step-skipped"
    report.write(result.bundle, fmt="md")
    (row,) = [
        r for r in (result.bundle / "report.md").read_text().splitlines() if "| inject |" in r
    ]
    assert "(sandbox: attempt blocked: role ci-deploy's sessions were revoked at " in row
    assert "ScheduleKeyDeletion refused: AccessDeniedException" in row
    assert "CloudTrail +1 (1 failed): ScheduleKeyDeletion)" in row


def _variant(tmp_path: Path, inject_lines: str) -> Path:
    """rogue-grant without its own ``say_blocked``, the inject given ``inject_lines``."""
    text = (scenarios.scenario_dir() / "rogue-grant.yaml").read_text()
    own = re.search(r"    say_blocked: >-\n(?:      .*\n)+", text)
    assert own is not None
    text = text.replace(own[0], "")
    path = tmp_path / "variant.yaml"
    path.write_text(text.replace("  - after: disable\n", f"  - after: disable\n{inject_lines}"))
    return path


def test_a_scenario_may_say_what_players_see_when_the_attempt_is_blocked(
    tmp_path: Path,
) -> None:
    path = _variant(
        tmp_path, "    say_blocked: The CI role is dead; {{ keys.payments.alias }} is safe.\n"
    )
    with Sandbox(scenarios.load(str(path))) as sandbox:
        attach_deny_all(sandbox)
        (record,) = sandbox.after_step("disable")
    assert record["say"] == "The CI role is dead; alias/payments-prod is safe."
    assert record["blocked"].startswith("role ci-deploy is denied")


def test_without_say_blocked_the_players_are_told_the_attempt_was_blocked(
    tmp_path: Path,
) -> None:
    with Sandbox(scenarios.load(str(_variant(tmp_path, "")))) as sandbox:
        revoke_sessions(sandbox)
        (record,) = sandbox.after_step("disable")
    assert record["say"].startswith(f"Attempt blocked: {record['blocked']}. The attempt: ")


def test_an_inject_names_its_actor_among_the_identities(tmp_path: Path) -> None:
    with pytest.raises(PlaybookError) as raised:
        scenarios.load(str(_variant(tmp_path, "    identity: cii\n")))
    (problem,) = raised.value.problems
    assert "unknown identity 'cii'" in problem and "did you mean 'ci'?" in problem


def test_an_inject_as_the_outsider_is_stopped_by_a_deny_of_its_account(tmp_path: Path) -> None:
    """An outside account has no IAM in the sandbox: only the key policy can stop it."""
    with Sandbox(scenarios.load(str(_variant(tmp_path, "    identity: outsider\n")))) as sandbox:
        revoke_sessions(sandbox)  # the CI role: not this inject's actor
        deny_in_key_policy(sandbox, principal="444455556666")
        (record,) = sandbox.after_step("disable")
        assert record["actor"] == {"arn": "arn:aws:sts::444455556666:assumed-role/backup-sync/sync"}
        assert record["blocked"].startswith(
            "the key policy denies arn:aws:iam::444455556666:role/backup-sync"
        )
        assert key_state(sandbox) == "Enabled"
        # its event is the CI role's: the outsider's refusal is not written on it
        assert "failed_events" not in record


def test_a_scenario_without_the_new_fields_keeps_its_fingerprint() -> None:
    """``identity`` and ``say_blocked`` unset are left out of the scenario as dumped, so a
    recorded sandbox run of a built-in scenario still resumes."""
    for name, path in scenarios.available().items():
        written = yaml.safe_load(path.read_text()).get("injects") or []
        dumped = scenarios.load(name).model_dump(mode="json")["injects"]
        for inject, source in zip(dumped, written, strict=True):
            assert ("identity" in inject) == ("identity" in source)
            assert ("say_blocked" in inject) == ("say_blocked" in source)


# -- identity policy statements, without a sandbox -----------------------------------------

ISSUED = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
CONTEXT = {
    "aws:tokenissuetime": ISSUED,
    "aws:currenttime": ISSUED + timedelta(days=4),
    "aws:principalarn": "arn:aws:iam::123456789012:role/ci-deploy",
    "aws:principalaccount": "123456789012",
}


@pytest.mark.parametrize(
    ("condition", "context", "holds"),
    [
        ({"DateLessThan": {"aws:TokenIssueTime": "2026-11-28T00:00:00Z"}}, CONTEXT, True),
        ({"DateLessThan": {"aws:TokenIssueTime": "2026-11-27T12:00:00Z"}}, CONTEXT, False),
        ({"DateLessThan": {"aws:TokenIssueTime": "1795824000"}}, CONTEXT, True),  # epoch
        ({"DateLessThan": {"aws:TokenIssueTime": "soon"}}, CONTEXT, False),
        (
            {"DateLessThan": {"aws:TokenIssueTime": "2026-11-28T00:00:00Z"}},
            {**CONTEXT, "aws:tokenissuetime": None},  # a user's long-term key
            False,
        ),
        (
            {"DateLessThanIfExists": {"aws:TokenIssueTime": "2026-11-28T00:00:00Z"}},
            {**CONTEXT, "aws:tokenissuetime": None},
            True,
        ),
        ({"DateGreaterThan": {"aws:CurrentTime": "2026-12-01T00:00:00Z"}}, CONTEXT, True),
        ({"ArnNotLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/break-glass"}}, CONTEXT, True),
        ({"ArnNotLike": {"aws:PrincipalArn": ["arn:aws:iam::*:role/ci-*"]}}, CONTEXT, False),
        ({"StringEquals": {"aws:PrincipalAccount": "123456789012"}}, CONTEXT, True),
        ({"StringEquals": {"aws:SourceIp": "203.0.113.45"}}, CONTEXT, False),  # not known here
        ({"IpAddress": {"aws:PrincipalArn": "x"}}, CONTEXT, False),  # nor this operator
        (
            {
                "DateLessThan": {"aws:TokenIssueTime": "2026-11-28T00:00:00Z"},
                "StringNotEquals": {"aws:PrincipalAccount": "123456789012"},
            },
            CONTEXT,
            False,  # every condition must hold
        ),
    ],
)
def test_identity_policy_conditions(
    condition: dict[str, Any], context: dict[str, Any], holds: bool
) -> None:
    assert identity_policy.conditions_hold(condition, context) is holds


@pytest.mark.parametrize(
    ("statement", "applies"),
    [
        ({"Action": ["*"], "Resource": ["*"]}, True),
        ({"Action": "kms:*", "Resource": "arn:aws:kms:eu-west-1:123456789012:key/*"}, True),
        ({"Action": "KMS:schedule*"}, True),  # actions are case-insensitive
        ({"Action": "kms:Decrypt", "Resource": "*"}, False),
        ({"NotAction": "kms:Decrypt", "Resource": "*"}, True),
        ({"Action": "*", "NotResource": "arn:aws:kms:*:*:key/k1"}, False),
        ({"Action": "*", "Resource": "arn:aws:kms:us-east-1:123456789012:key/*"}, False),
    ],
)
def test_identity_policy_statements_cover_actions_and_resources(
    statement: dict[str, Any], applies: bool
) -> None:
    key = "arn:aws:kms:eu-west-1:123456789012:key/k1"
    assert identity_policy.applies(statement, "kms:ScheduleKeyDeletion", key) is applies

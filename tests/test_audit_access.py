"""Practice 2 of the posture review (least privilege): key policies open to everyone, kms:*
beyond the key administrators, principals of other accounts, kms:CreateGrant without
kms:GrantIsForAWSResource; IAM policies allowing kms:Decrypt on every key; grants to other
accounts, old grants and broad ones. Each check against moto, a configuration that passes
and one that fails."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import boto3
import pytest

from kmsir.actions.audit import Audit, AuditParams
from kmsir.actions.audit.context import AuditContext, gather
from kmsir.actions.audit.practice_access import RULES
from kmsir.actions.audit.rules import evaluate
from kmsir.aws import ClientFactory
from kmsir.posture import Check, Review

from .fakes import context

ACCOUNT = "123456789012"  # moto's account
OTHER = "444455556666"
ROOT = {
    "Sid": "Enable IAM User Permissions",
    "Effect": "Allow",
    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
    "Action": "kms:*",
    "Resource": "*",
}
APP = f"arn:aws:iam::{ACCOUNT}:role/app"
ADMIN = f"arn:aws:iam::{ACCOUNT}:role/KeyAdmins"
KEY_POLICY_CHECKS = (
    "key-policy-public",
    "key-policy-admin-wildcard",
    "key-policy-cross-account",
    "key-policy-grant-unrestricted",
)


def kms() -> Any:
    return boto3.client("kms", region_name="eu-west-1")


def iam() -> Any:
    return boto3.client("iam", region_name="eu-west-1")


def key_with(*statements: dict[str, Any]) -> dict[str, Any]:
    """A key whose policy is AWS's default statement plus ``statements``."""
    policy = {"Version": "2012-10-17", "Statement": [ROOT, *statements]}
    return dict(kms().create_key(Policy=json.dumps(policy))["KeyMetadata"])


def review(clients: ClientFactory, **settings: Any) -> list[Check]:
    """Practice 2's checks over every key of the Region."""
    ctx, _ = context(clients)
    params = AuditParams(all=True, **settings)
    audit = AuditContext(ctx=ctx, region="eu-west-1", account=ACCOUNT, settings=params)
    gather(audit, None)
    checks = evaluate(audit, RULES)
    assert checks and {c.practice for c in checks} == {2}
    return checks


def status(checks: list[Check], check_id: str, resource: str) -> str:
    """The status of the entry of ``check_id`` that names ``resource`` (exactly one)."""
    return entry(checks, check_id, resource).status


def entry(checks: list[Check], check_id: str, resource: str) -> Check:
    (found,) = [c for c in checks if c.id == check_id and resource in c.resources]
    return found


def failing(checks: list[Check], check_id: str) -> list[str]:
    """The resources ``check_id`` fails, one entry each."""
    fails = [c for c in checks if c.id == check_id and c.status == "fail"]
    assert all(len(c.resources) == 1 for c in fails)
    return sorted(r for c in fails for r in c.resources)


def test_aws_default_key_policy_passes_every_key_policy_check(
    moto_clients: ClientFactory,
) -> None:
    key = kms().create_key()["KeyMetadata"]  # AWS's default: the account root, kms:*
    checks = review(moto_clients)
    for check_id in KEY_POLICY_CHECKS:
        (only,) = [c for c in checks if c.id == check_id]
        assert only.status == "pass", (check_id, only.detail)
        assert only.resources == (key["Arn"],)
        assert only.practice == 2 and only.doc.startswith("https://docs.aws.amazon.com/")
        assert only.evidence, "the policy judged is named"


def test_no_customer_managed_key_is_not_applicable(moto_clients: ClientFactory) -> None:
    checks = review(moto_clients)
    for check_id in (*KEY_POLICY_CHECKS, "grant-cross-account", "grant-age", "grant-broad"):
        (only,) = [c for c in checks if c.id == check_id]
        assert only.status == "not-applicable" and "no customer-managed keys" in only.detail


def test_principal_star_fails_unless_a_condition_restricts_the_caller(
    moto_clients: ClientFactory,
) -> None:
    public = key_with(
        {
            "Sid": "Anyone",
            "Effect": "Allow",
            "Principal": "*",
            "Action": "kms:Decrypt",
            "Resource": "*",
        }
    )
    also_public = key_with(  # {"AWS": "*"} is the same; a negated operator restricts nothing
        {
            "Sid": "NotOrg",
            "Effect": "Allow",
            "Principal": {"AWS": "*"},
            "Action": "kms:Encrypt",
            "Resource": "*",
            "Condition": {"StringNotEquals": {"aws:PrincipalOrgID": "o-abc123"}},
        }
    )
    org = key_with(
        {
            "Sid": "Org",
            "Effect": "Allow",
            "Principal": "*",
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-abc123"}},
        }
    )
    checks = review(moto_clients)
    assert failing(checks, "key-policy-public") == sorted([public["Arn"], also_public["Arn"]])
    bad = entry(checks, "key-policy-public", public["Arn"])
    assert bad.severity == "critical" and "'Anyone'" in bad.detail
    assert status(checks, "key-policy-public", org["Arn"]) == "pass"


def test_kms_star_passes_for_the_admins_given_and_fails_for_anyone_else(
    moto_clients: ClientFactory,
) -> None:
    admin = key_with(
        {
            "Sid": "Admins",
            "Effect": "Allow",
            "Principal": {"AWS": ADMIN},
            "Action": "kms:*",
            "Resource": "*",
        }
    )
    # AWS's console default for key administrators: management actions, not kms:*
    console = key_with(
        {
            "Sid": "Allow access for Key Administrators",
            "Effect": "Allow",
            "Principal": {"AWS": APP},
            "Action": [
                "kms:Create*",
                "kms:Describe*",
                "kms:Enable*",
                "kms:List*",
                "kms:Put*",
                "kms:Update*",
                "kms:Revoke*",
                "kms:Disable*",
                "kms:Get*",
                "kms:Delete*",
                "kms:TagResource",
                "kms:UntagResource",
                "kms:ScheduleKeyDeletion",
                "kms:CancelKeyDeletion",
            ],
            "Resource": "*",
        }
    )
    without = review(moto_clients)
    assert failing(without, "key-policy-admin-wildcard") == [admin["Arn"]]
    assert ADMIN in entry(without, "key-policy-admin-wildcard", admin["Arn"]).detail
    assert status(without, "key-policy-admin-wildcard", console["Arn"]) == "pass"
    given = review(moto_clients, admins=[f"arn:aws:iam::{ACCOUNT}:role/Key*"])
    assert failing(given, "key-policy-admin-wildcard") == []
    assert status(given, "key-policy-admin-wildcard", admin["Arn"]) == "pass"


def test_a_principal_of_another_account_fails_cross_account(moto_clients: ClientFactory) -> None:
    outside = key_with(
        {
            "Sid": "Partner",
            "Effect": "Allow",
            "Principal": {"AWS": [f"arn:aws:iam::{OTHER}:role/reader", APP]},
            "Action": "kms:Decrypt",
            "Resource": "*",
        }
    )
    bare = key_with(  # a bare account id is that account's root
        {
            "Sid": "Partner root",
            "Effect": "Allow",
            "Principal": {"AWS": OTHER},
            "Action": "kms:Decrypt",
            "Resource": "*",
        }
    )
    inside = key_with(
        {
            "Sid": "App",
            "Effect": "Allow",
            "Principal": {"AWS": APP},
            "Action": "kms:Decrypt",
            "Resource": "*",
        }
    )
    # Principal * is key-policy-public's, but a condition letting another account in is ours
    partner = key_with(
        {
            "Sid": "Partner by condition",
            "Effect": "Allow",
            "Principal": "*",
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {"StringEquals": {"kms:CallerAccount": [ACCOUNT, OTHER]}},
        }
    )
    own = key_with(  # as AWS's managed keys' policies have it: only the key's account
        {
            "Sid": "Own account",
            "Effect": "Allow",
            "Principal": {"AWS": "*"},
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {"StringEquals": {"kms:CallerAccount": ACCOUNT}},
        }
    )
    checks = review(moto_clients)
    assert failing(checks, "key-policy-cross-account") == sorted(
        [outside["Arn"], bare["Arn"], partner["Arn"]]
    )
    assert f"account {OTHER}" in entry(checks, "key-policy-cross-account", partner["Arn"]).detail
    assert status(checks, "key-policy-cross-account", own["Arn"]) == "pass"
    assert status(checks, "key-policy-public", own["Arn"]) == "pass"
    detail = entry(checks, "key-policy-cross-account", outside["Arn"]).detail
    assert f"arn:aws:iam::{OTHER}:role/reader" in detail and APP not in detail
    assert (
        f"arn:aws:iam::{OTHER}:root"
        in entry(checks, "key-policy-cross-account", bare["Arn"]).detail
    )
    assert status(checks, "key-policy-cross-account", inside["Arn"]) == "pass"


def test_create_grant_without_grant_is_for_aws_resource_fails(
    moto_clients: ClientFactory,
) -> None:
    open_grant = key_with(
        {
            "Sid": "App grants",
            "Effect": "Allow",
            "Principal": {"AWS": APP},
            "Action": ["kms:CreateGrant", "kms:ListGrants"],
            "Resource": "*",
        }
    )
    wildcard = key_with(  # kms:Create* includes CreateGrant
        {
            "Sid": "App creates",
            "Effect": "Allow",
            "Principal": {"AWS": APP},
            "Action": "kms:Create*",
            "Resource": "*",
        }
    )
    attachment = key_with(  # AWS's console default "Allow attachment of persistent resources"
        {
            "Sid": "Allow attachment of persistent resources",
            "Effect": "Allow",
            "Principal": {"AWS": APP},
            "Action": ["kms:CreateGrant", "kms:ListGrants", "kms:RevokeGrant"],
            "Resource": "*",
            "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}},
        }
    )
    checks = review(moto_clients)
    assert failing(checks, "key-policy-grant-unrestricted") == sorted(
        [open_grant["Arn"], wildcard["Arn"]]
    )
    assert (
        "'App grants'" in entry(checks, "key-policy-grant-unrestricted", open_grant["Arn"]).detail
    )
    assert status(checks, "key-policy-grant-unrestricted", attachment["Arn"]) == "pass"


def test_an_unreadable_key_policy_is_could_not_check_and_the_others_are_judged(
    moto_clients: ClientFactory,
) -> None:
    from botocore.exceptions import ClientError

    hidden = key_with()["KeyId"]
    public = key_with(
        {"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}
    )

    def denied(params: dict[str, Any], model: Any, **_: Any) -> None:
        if params.get("KeyId") == hidden:
            error = {"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}}
            raise ClientError(error, model.name)  # type: ignore[arg-type]

    client: Any = moto_clients.client("kms", "eu-west-1")
    client.meta.events.register("before-parameter-build.kms.GetKeyPolicy", denied)
    checks = review(moto_clients)
    hidden_arn = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/{hidden}"
    unreadable = entry(checks, "key-policy-public", hidden_arn)
    assert unreadable.status == "could-not-check" and unreadable.missing == "kms:GetKeyPolicy"
    assert status(checks, "key-policy-public", public["Arn"]) == "fail"


def test_iam_policies_allowing_decrypt_on_every_key_fail(moto_clients: ClientFactory) -> None:
    key = kms().create_key()["KeyMetadata"]
    client = iam()

    def managed(name: str, statement: dict[str, Any]) -> str:
        document = {"Version": "2012-10-17", "Statement": [statement]}
        return str(
            client.create_policy(PolicyName=name, PolicyDocument=json.dumps(document))["Policy"][
                "Arn"
            ]
        )

    everything = managed("kms-everything", {"Effect": "Allow", "Action": "kms:*", "Resource": "*"})
    every_key = managed(
        "decrypt-any-key",
        {"Effect": "Allow", "Action": "kms:De*", "Resource": "arn:aws:kms:*:*:key/*"},
    )
    one_key = managed(
        "decrypt-one-key", {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": key["Arn"]}
    )
    managed("s3-only", {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"})
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    role = client.create_role(RoleName="app", AssumeRolePolicyDocument=json.dumps(trust))["Role"]

    def inline(name: str, statement: dict[str, Any]) -> str:
        document = {"Version": "2012-10-17", "Statement": [statement]}
        client.put_role_policy(RoleName="app", PolicyName=name, PolicyDocument=json.dumps(document))
        return f"{role['Arn']}#policy/{name}"

    wide = inline(
        "decrypt", {"Sid": "Wide", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}
    )
    via = inline(  # only through Secrets Manager: no direct Decrypt of any key
        "decrypt-via-secrets",
        {
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": "*",
            "Condition": {
                "StringEquals": {"kms:ViaService": "secretsmanager.eu-west-1.amazonaws.com"}
            },
        },
    )
    checks = review(moto_clients)
    assert failing(checks, "iam-kms-wildcard-resource") == sorted([everything, every_key, wide])
    assert "'Wide'" in entry(checks, "iam-kms-wildcard-resource", wide).detail
    (passed,) = [c for c in checks if c.id == "iam-kms-wildcard-resource" and c.status == "pass"]
    assert sorted(passed.resources) == sorted([one_key, via])
    assert passed.evidence and passed.severity == "high"


def test_iam_policies_unreadable_is_could_not_check(moto_clients: ClientFactory) -> None:
    from botocore.exceptions import ClientError

    def denied(model: Any, **_: Any) -> None:
        error = {"Error": {"Code": "AccessDenied", "Message": "not allowed"}}
        raise ClientError(error, model.name)  # type: ignore[arg-type]

    client: Any = moto_clients.client("iam", "eu-west-1")
    client.meta.events.register("before-call.iam.GetAccountAuthorizationDetails", denied)
    checks = review(moto_clients)
    (only,) = [c for c in checks if c.id == "iam-kms-wildcard-resource"]
    assert only.status == "could-not-check"
    assert only.missing == "iam:GetAccountAuthorizationDetails"


def grant(key: dict[str, Any], grantee: str, operations: list[str], **more: Any) -> str:
    created = kms().create_grant(
        KeyId=key["KeyId"], GranteePrincipal=grantee, Operations=operations, **more
    )
    return f"{key['Arn']}#grant/{created['GrantId']}"


def test_a_grant_to_another_account_fails(moto_clients: ClientFactory) -> None:
    key = kms().create_key()["KeyMetadata"]
    outside = grant(key, f"arn:aws:iam::{OTHER}:role/reader", ["Decrypt"])
    retiring = grant(key, APP, ["Decrypt"], RetiringPrincipal=f"arn:aws:iam::{OTHER}:root")
    service = grant(  # as EBS makes them: judged the same, and said
        key,
        f"arn:aws:iam::{OTHER}:root",
        ["Decrypt"],
        Constraints={"EncryptionContextSubset": {"aws:ebs:id": "vol-0123"}},
    )
    inside = grant(key, APP, ["Decrypt"])
    checks = review(moto_clients)
    assert failing(checks, "grant-cross-account") == sorted([outside, retiring, service])
    assert f"account {OTHER}" in entry(checks, "grant-cross-account", retiring).detail
    assert "made by an AWS service" in entry(checks, "grant-cross-account", service).detail
    assert "AWS service" not in entry(checks, "grant-cross-account", outside).detail
    assert status(checks, "grant-cross-account", inside) == "pass"


def test_a_grant_older_than_the_limit_fails_grant_age(moto_clients: ClientFactory) -> None:
    """moto's ListGrants gives no CreationDate; AWS's does (KMS API reference, GrantListEntry:
    https://docs.aws.amazon.com/kms/latest/APIReference/API_GrantListEntry.html): the
    sandbox's shim adds it, and a seeded grant is backdated as the sandbox does it."""
    from moto.kms.models import kms_backends

    from kmsir.sandbox import shim

    shim.install()
    key = kms().create_key()["KeyMetadata"]
    old = grant(key, APP, ["Decrypt"])
    new = grant(key, APP, ["Encrypt"])
    old_id = old.rsplit("/", 1)[1]
    moto_grant = kms_backends[ACCOUNT]["eu-west-1"].keys[key["KeyId"]].grants[old_id]
    moto_grant.kmsir_created = (datetime.now(timezone.utc) - timedelta(days=400)).timestamp()
    checks = review(moto_clients)
    assert failing(checks, "grant-age") == [old]
    assert "400 days ago (more than 365)" in entry(checks, "grant-age", old).detail
    assert entry(checks, "grant-age", old).severity == "low"
    assert status(checks, "grant-age", new) == "pass"
    assert failing(review(moto_clients, grant_max_age_days=500), "grant-age") == []


def test_a_grant_without_a_creation_date_is_could_not_check_for_its_age(
    moto_clients: ClientFactory,
) -> None:
    """Without the shim moto omits CreationDate: the age is unknown, never a pass."""
    key = kms().create_key()["KeyMetadata"]
    undated = grant(key, APP, ["Decrypt"])
    client: Any = moto_clients.client("kms", "eu-west-1")

    def no_date(parsed: dict[str, Any], **_: Any) -> None:
        for item in parsed.get("Grants", []):
            item.pop("CreationDate", None)

    client.meta.events.register("after-call.kms.ListGrants", no_date)
    checks = review(moto_clients)
    unknown = entry(checks, "grant-age", undated)
    assert unknown.status == "could-not-check"
    assert unknown.missing == "CreationDate in the ListGrants response"
    assert "CreationDate" in unknown.detail


def test_a_broad_grant_fails_unless_constrained(moto_clients: ClientFactory) -> None:
    key = kms().create_key()["KeyMetadata"]
    delegating = grant(key, APP, ["Decrypt", "CreateGrant"])
    both_ways = grant(key, APP, ["Decrypt", "GenerateDataKey"])
    constrained = grant(
        key,
        APP,
        ["Decrypt", "Encrypt", "CreateGrant"],
        Constraints={"EncryptionContextEquals": {"tenant": "acme"}},
    )
    decrypt_only = grant(key, APP, ["Decrypt", "DescribeKey"])
    ec2 = grant(  # an AWS service's grant for its resource is judged the same, and said
        key,
        f"arn:aws:sts::{ACCOUNT}:assumed-role/aws:ec2-infrastructure/i-0abc",
        ["Decrypt", "ReEncryptFrom"],
    )
    checks = review(moto_clients)
    assert failing(checks, "grant-broad") == sorted([delegating, both_ways])
    # an AWS service's own grant is as broad as the service makes it: recorded, not failed
    assert entry(checks, "grant-broad", ec2).status == "info"
    assert "made by an AWS service" in entry(checks, "grant-broad", ec2).detail
    assert entry(checks, "grant-broad", delegating).severity == "medium"
    assert "CreateGrant" in entry(checks, "grant-broad", delegating).detail
    assert "Decrypt with GenerateDataKey" in entry(checks, "grant-broad", both_ways).detail
    assert status(checks, "grant-broad", constrained) == "pass"
    assert status(checks, "grant-broad", decrypt_only) == "pass"


def test_the_review_writes_practice_2_into_posture_json(moto_clients: ClientFactory) -> None:
    from kmsir.sandbox import shim

    shim.install()  # the whole review reads GetEbsDefaultKmsKeyId, which only the shim has
    public = key_with(
        {"Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*"}
    )
    ctx, _ = context(moto_clients)
    Audit().run(ctx, AuditParams(all=True))
    review_ = Review.loads(ctx.artifacts.files["posture.json"])
    ours = {c.id for c in review_.checks if c.practice == 2}
    assert {r.id for r in RULES} <= ours
    (bad,) = [c for c in review_.checks if c.id == "key-policy-public" and c.status == "fail"]
    assert bad.resources == (public["Arn"],)
    assert "iam:GetAccountAuthorizationDetails" in Audit.permissions


@pytest.mark.parametrize(
    ("statement", "fails"),
    [
        ({"Action": "*", "Resource": "*"}, True),
        ({"NotAction": "s3:*", "Resource": "*"}, True),
        ({"Action": "kms:Decrypt", "NotResource": "arn:aws:s3:::bucket/*"}, True),
        ({"Action": "kms:ReEncryptFrom", "Resource": "*"}, True),
        ({"Action": "kms:Encrypt", "Resource": "*"}, False),
        ({"Action": "kms:Decrypt", "Resource": f"arn:aws:kms:*:{ACCOUNT}:key/*"}, False),
        # every account's keys in one Region: keys of untrusted accounts too
        ({"Action": "kms:Decrypt", "Resource": "arn:aws:kms:eu-west-1:*:key/*"}, True),
        (
            {
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {"ForAnyValue:StringLike": {"kms:ResourceAliases": "alias/app-*"}},
            },
            False,
        ),
        # ForAllValues is true for a key without aliases; IfExists for a request without the key
        (
            {
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {"ForAllValues:StringLike": {"kms:ResourceAliases": "alias/app-*"}},
            },
            True,
        ),
        (
            {
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {
                    "StringEqualsIfExists": {"kms:ViaService": "s3.eu-west-1.amazonaws.com"}
                },
            },
            True,
        ),
        (
            {
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {"StringLike": {"kms:ResourceAliases": "*"}},
            },
            True,
        ),
    ],
)
def test_what_counts_as_decrypt_on_every_key(
    moto_clients: ClientFactory, statement: dict[str, Any], fails: bool
) -> None:
    document = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", **statement}]}
    arn = iam().create_policy(PolicyName="p", PolicyDocument=json.dumps(document))["Policy"]["Arn"]
    checks = review(moto_clients)
    assert failing(checks, "iam-kms-wildcard-resource") == ([arn] if fails else [])

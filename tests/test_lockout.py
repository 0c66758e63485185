"""The lockout check: who could still call kms:PutKeyPolicy under a policy."""

from __future__ import annotations

from typing import Any

from kmsir.keypolicy import principal_arn, who_can

ROOT = {
    "Sid": "Enable IAM User Permissions",
    "Effect": "Allow",
    "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
    "Action": "kms:*",
    "Resource": "*",
}
ADMIN = {
    "Sid": "Admins",
    "Effect": "Allow",
    "Principal": {"AWS": "arn:aws:iam::111122223333:role/KeyAdmin"},
    "Action": ["kms:Put*", "kms:Describe*"],
    "Resource": "*",
}
CALLER = "arn:aws:sts::111122223333:assumed-role/Responder/jane"


def quarantine(*exempt: str) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Sid": "kmsir-quarantine-INC-1",
        "Effect": "Deny",
        "Principal": {"AWS": "*"},
        "Action": "kms:*",
        "Resource": "*",
    }
    if exempt:
        statement["Condition"] = {"ArnNotLike": {"aws:PrincipalArn": list(exempt)}}
    return statement


def policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def test_default_policy_delegates_to_the_account() -> None:
    check = who_can(policy(ROOT), "kms:PutKeyPolicy", caller_arn=CALLER)
    assert check.able == ("arn:aws:iam::111122223333:root",)
    assert check.caller_able and not check.locked_out


def test_quarantine_leaves_only_break_glass() -> None:
    glass = "arn:aws:iam::111122223333:role/BreakGlass"
    check = who_can(policy(ROOT, ADMIN, quarantine(glass)), "kms:PutKeyPolicy", caller_arn=CALLER)
    assert check.able == (glass,)
    assert not check.caller_able  # the responder's own role is quarantined too
    responder = who_can(
        policy(ROOT, quarantine(glass, "arn:aws:iam::111122223333:role/Responder")),
        "kms:PutKeyPolicy",
        caller_arn=CALLER,
    )
    assert responder.caller_able


def test_quarantine_without_break_glass_locks_out() -> None:
    check = who_can(policy(ROOT, ADMIN, quarantine()), "kms:PutKeyPolicy", caller_arn=CALLER)
    assert check.locked_out and check.able == ()


def test_break_glass_outside_every_allow_is_no_help() -> None:
    check = who_can(
        policy(ADMIN, quarantine("arn:aws:iam::999999999999:role/Other")),
        "kms:PutKeyPolicy",
        caller_arn=CALLER,
    )
    assert check.locked_out


def test_policy_without_put_key_policy_locks_out() -> None:
    read_only = {
        "Effect": "Allow",
        "Principal": {"AWS": "111122223333"},
        "Action": ["kms:Decrypt", "kms:Describe*"],
        "Resource": "*",
    }
    assert who_can(policy(read_only), "kms:PutKeyPolicy", caller_arn=CALLER).locked_out
    not_action = {**read_only, "Action": None, "NotAction": "kms:Decrypt"}
    del not_action["Action"]
    assert not who_can(policy(not_action), "kms:PutKeyPolicy", caller_arn=CALLER).locked_out


def test_deny_with_unknown_condition_is_assumed_to_apply() -> None:
    deny = {
        "Sid": "NoVpc",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "kms:*",
        "Resource": "*",
        "Condition": {"StringNotEquals": {"aws:SourceVpc": "vpc-1"}},
    }
    check = who_can(policy(ROOT, deny), "kms:PutKeyPolicy", caller_arn=CALLER)
    assert check.locked_out
    assert any("NoVpc" in note for note in check.notes)


def test_principal_arn_of_an_assumed_role() -> None:
    assert principal_arn(CALLER) == "arn:aws:iam::111122223333:role/Responder"
    assert (
        principal_arn("arn:aws:iam::111122223333:user/bob") == "arn:aws:iam::111122223333:user/bob"
    )


def test_not_principal_deny_leaves_only_the_named() -> None:
    deny = {
        "Effect": "Deny",
        "NotPrincipal": {"AWS": "arn:aws:iam::111122223333:role/Ghost"},
        "Action": "kms:*",
        "Resource": "*",
    }
    check = who_can(policy(ROOT, ADMIN, deny), "kms:PutKeyPolicy", caller_arn=CALLER)
    assert check.able == ("arn:aws:iam::111122223333:role/Ghost",)
    assert not check.caller_able


def test_string_not_equals_does_not_expand_wildcards() -> None:
    deny = {
        **quarantine(),
        "Condition": {
            "StringNotEquals": {"aws:PrincipalArn": "arn:aws:iam::111122223333:role/IR-*"}
        },
    }
    check = who_can(policy(ADMIN, deny), "kms:PutKeyPolicy", caller_arn=CALLER)
    assert check.locked_out  # role/KeyAdmin is not literally "role/IR-*"
    like = {
        **quarantine(),
        "Condition": {"StringNotLike": {"aws:PrincipalArn": "arn:aws:iam::111122223333:role/Key*"}},
    }
    assert who_can(policy(ADMIN, like), "kms:PutKeyPolicy", caller_arn=CALLER).able == (
        "arn:aws:iam::111122223333:role/KeyAdmin",
    )


def test_lenient_reading_ignores_conditions_it_cannot_evaluate() -> None:
    mfa = {
        "Sid": "NeedMfa",
        "Effect": "Deny",
        "Principal": "*",
        "Action": "kms:PutKeyPolicy",
        "Resource": "*",
        "Condition": {"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}},
    }
    strict = who_can(policy(ROOT, mfa), "kms:PutKeyPolicy", caller_arn=CALLER)
    lenient = who_can(policy(ROOT, mfa), "kms:PutKeyPolicy", caller_arn=CALLER, lenient=True)
    assert strict.locked_out and not lenient.locked_out and lenient.caller_able

"""Practice 2 (least privilege): who the key policies let in, what the account's IAM policies
allow on every key (``iam_policies``), and the keys' grants (``practice_grants``).

The key-policy checks read each customer-managed key's policy once (``context.gather``) and
give one result per key: a failing key names the statements (Sid, or position) and the
principals at fault. The key's own account root principal, as AWS's default key policy names
it, passes every check: it hands the decision to the account's IAM policies, which
``iam-kms-wildcard-resource`` judges. The ``admins`` parameter names further trusted
principals (ARNs, ``*`` wildcards). Only Allow statements are weighed (see
``iam_policies``): a Deny elsewhere in the policy may take back what an Allow gives, which
is said with a waiver.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from kmsir.actions.audit import practice_grants
from kmsir.actions.audit.context import AuditContext, KeyFacts, Unavailable
from kmsir.actions.audit.iam_policies import (
    WILDCARD_RESOURCE,
    account_of,
    allows,
    as_list,
    conditions,
    glob,
    is_root,
    principals,
    sid,
)
from kmsir.actions.audit.rules import Result, Rule, cannot
from kmsir.keypolicy import statements

_GUIDE = "https://docs.aws.amazon.com/kms/latest/developerguide/"

#: Condition keys that restrict who may call: the caller's account, organization, ARN or
#: id, or the resource or network the request comes from. ``kms:ViaService`` alone is not
#: among them: any account's principals can call through the service.
CALLER_RESTRICTING = frozenset(
    {
        "aws:principalaccount",
        "aws:principalorgid",
        "aws:principalorgpaths",
        "aws:principalarn",
        "aws:principalservicename",
        "aws:sourceaccount",
        "aws:sourcearn",
        "aws:sourceowner",
        "aws:sourceorgid",
        "aws:sourceorgpaths",
        "aws:sourcevpce",
        "aws:sourcevpc",
        "aws:userid",
        "kms:calleraccount",
    }
)

#: Every KMS action that applies to a key: a statement allowing all of them gives full
#: control (``kms:*``, ``*``, or a list of wildcards adding up to it). AWS's console default
#: for key administrators (``kms:Create*``, ``kms:Put*``...) does not: it leaves out the
#: cryptographic operations.
KEY_ACTIONS = tuple(
    f"kms:{name}"
    for line in (
        "CancelKeyDeletion CreateAlias CreateGrant Decrypt DeleteAlias DeleteImportedKeyMaterial",
        "DeriveSharedSecret DescribeKey DisableKey DisableKeyRotation EnableKey",
        "EnableKeyRotation Encrypt GenerateDataKey GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext GenerateDataKeyWithoutPlaintext GenerateMac",
        "GetKeyPolicy GetKeyRotationStatus GetParametersForImport GetPublicKey",
        "ImportKeyMaterial ListGrants ListKeyPolicies ListKeyRotations ListResourceTags",
        "PutKeyPolicy ReEncryptFrom ReEncryptTo ReplicateKey RetireGrant RevokeGrant",
        "RotateKeyOnDemand ScheduleKeyDeletion Sign SynchronizeMultiRegionKey TagResource",
        "UntagResource UpdateAlias UpdateKeyDescription UpdatePrimaryRegion Verify VerifyMac",
    )
    for name in line.split()
)

#: What a key-policy check finds in one key's policy: one line per problem.
Finder = Callable[[AuditContext, KeyFacts, dict[str, Any]], list[str]]


def _admins(audit: AuditContext) -> list[str]:
    return [str(a) for a in getattr(audit.settings, "admins", None) or []]


def _trusted(audit: AuditContext, key: KeyFacts, principal: str) -> bool:
    """The key's own account root principal, or one of the ``admins``."""
    return is_root(principal, key.account) or any(
        glob(pattern, case=True).fullmatch(principal) for pattern in _admins(audit)
    )


def _actions(statement: dict[str, Any]) -> str:
    if "NotAction" in statement:
        return "every action but " + ", ".join(as_list(statement["NotAction"]))
    return ", ".join(as_list(statement.get("Action")))


def _allowing(policy: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    for index, statement in enumerate(statements(policy)):
        if statement.get("Effect") == "Allow":
            yield index, statement


def _judge_keys(finder: Finder) -> Callable[[AuditContext], Iterator[Result]]:
    """A rule's judge: ``finder`` over the policy of every customer-managed key."""

    def judge(audit: AuditContext) -> Iterator[Result]:
        keys = list(audit.customer_keys())
        if not keys:
            yield Result("not-applicable", detail="no customer-managed keys in scope")
            return
        passed: list[str] = []
        evidence: dict[str, None] = {}
        for key in keys:
            try:
                policy = key.need("policy")
            except Unavailable as exc:
                yield cannot(exc, [key.arn])
                continue
            read = (key.evidence["policy"],) if "policy" in key.evidence else ()
            found = finder(audit, key, policy or {})
            if found:
                yield Result("fail", (key.arn,), f"{key.label()}: {'; '.join(found)}", read)
            else:
                passed.append(key.arn)
                evidence.update(dict.fromkeys(read))
        if passed:
            detail = f"{len(passed)} of {len(keys)} key policies pass"
            yield Result("pass", tuple(passed), detail, tuple(evidence))

    return judge


def _public(audit: AuditContext, key: KeyFacts, policy: dict[str, Any]) -> list[str]:
    """An Allow to everyone (``Principal: *``, ``{"AWS": "*"}``, ``NotPrincipal``) without a
    condition restricting the caller (``CALLER_RESTRICTING``, positive operators only)."""
    return [
        f"statement {sid(statement, index)} allows {_actions(statement)} to Principal '*' "
        "with no condition on the caller's account, organization or identity"
        for index, statement in _allowing(policy)
        if "*" in principals(statement) and not _caller_restricted(statement)
    ]


#: Condition keys whose value is an account id, and an organization id.
_ACCOUNT_KEYS = frozenset(
    {"aws:principalaccount", "aws:sourceaccount", "aws:sourceowner", "kms:calleraccount"}
)
_ORG_KEYS = frozenset({"aws:principalorgid", "aws:sourceorgid"})
_ARN_KEYS = frozenset({"aws:principalarn", "aws:sourcearn"})


def _pins(name: str, value: str) -> bool:
    """Whether condition key ``name`` with ``value`` names particular callers: an account or
    organization written out (no wildcard), an ARN whose account is written out (or a
    global resource's ARN, an S3 bucket's, written out), a user id, VPC or service that is
    more than a wildcard. ``arn:aws:iam::*:*`` or ``o-*`` pin nobody."""
    if name in _ACCOUNT_KEYS:
        return value.isdigit() and len(value) == 12
    if name in _ORG_KEYS:
        return value.startswith("o-") and not set(value) & {"*", "?"}
    if name in _ARN_KEYS:
        fields = value.split(":")
        if len(fields) < 6:
            return False
        account = fields[4]
        if account == "":  # a global resource: the rest names it
            return not set(":".join(fields[5:])) & {"*", "?"} and bool(fields[5])
        return account.isdigit() and len(account) == 12
    if name.endswith("orgpaths"):
        return value.startswith("o-") and not set(value.split("/", 1)[0]) & {"*", "?"}
    return value.strip("*?") != "" and not value.startswith(("*", "?"))


def _caller_restricted(statement: dict[str, Any]) -> bool:
    """Whether a positive condition on a ``CALLER_RESTRICTING`` key pins the callers: every
    value it allows names particular accounts, organizations or principals."""
    return any(
        name in CALLER_RESTRICTING and values and all(_pins(name, v) for v in values)
        for name, values in conditions(statement)
    )


def _admin_wildcard(audit: AuditContext, key: KeyFacts, policy: dict[str, Any]) -> list[str]:
    """``kms:*`` (every action in ``KEY_ACTIONS``) allowed to a principal other than the
    key's account root and the ``admins``, whatever the statement's conditions."""
    found: list[str] = []
    for index, statement in _allowing(policy):
        if not all(allows(statement, action) for action in KEY_ACTIONS):
            continue
        others = [p for p in principals(statement) if not _trusted(audit, key, p)]
        if others:
            found.append(
                f"statement {sid(statement, index)} allows kms:* ({_actions(statement)}) "
                f"to {', '.join(others)}"
            )
    return found


#: Condition keys naming the caller's account, and the caller's or source's ARN.
_ACCOUNT_KEYS = frozenset({"aws:principalaccount", "kms:calleraccount", "aws:sourceaccount"})
_ARN_KEYS = frozenset({"aws:principalarn", "aws:sourcearn"})


def _condition_accounts(statement: dict[str, Any]) -> list[str]:
    """The accounts a ``Principal: *`` statement's conditions let in (by account id, or by
    the account of an ARN without wildcards there)."""
    found: list[str] = []
    for name, values in conditions(statement):
        for value in values:
            account = value if name in _ACCOUNT_KEYS else None
            if name in _ARN_KEYS:
                account = account_of(value)
            if account is not None and account_of(account) == account and account not in found:
                found.append(account)
    return found


def _cross_account(audit: AuditContext, key: KeyFacts, policy: dict[str, Any]) -> list[str]:
    """Principals of another account than the key's (its root, roles, users), unless they
    are among the ``admins``, and other accounts a ``Principal: *`` statement lets in by
    its conditions (``aws:PrincipalAccount``, ``kms:CallerAccount``, ``aws:PrincipalArn``...;
    ``*`` without them is ``key-policy-public``'s)."""
    found: list[str] = []
    for index, statement in _allowing(policy):
        named = principals(statement)
        outside = [
            p
            for p in named
            if (account := account_of(p)) is not None
            and account != key.account
            and not _trusted(audit, key, p)
        ]
        if "*" in named:
            outside.extend(
                f"account {a} (Principal '*' with a condition naming it)"
                for a in _condition_accounts(statement)
                if a != key.account
            )
        if outside:
            found.append(
                f"statement {sid(statement, index)} allows {_actions(statement)} to "
                f"{', '.join(outside)}"
            )
    return found


def _for_aws_resource(statement: dict[str, Any]) -> bool:
    """Whether a ``Bool`` (or ``StringEquals``) condition requires
    ``kms:GrantIsForAWSResource`` to be true, or a ``kms:ViaService`` condition lets only
    named AWS services make the grant (AWS's own pattern, "through the service": the
    service creates grants for its resources)."""
    if any(
        name == "kms:viaservice" and values and all(v.strip("*?") for v in values)
        for name, values in conditions(statement)
    ):
        return True
    found = statement.get("Condition")
    if not isinstance(found, dict):
        return False
    for operator, block in found.items():
        if str(operator).lower() not in ("bool", "stringequals", "stringequalsignorecase"):
            continue
        for name, values in (block or {}).items() if isinstance(block, dict) else ():
            if str(name).lower() == "kms:grantisforawsresource":
                wanted = [str(v).lower() for v in as_list(values)]
                if wanted and all(v == "true" for v in wanted):
                    return True
    return False


def _grant_unrestricted(audit: AuditContext, key: KeyFacts, policy: dict[str, Any]) -> list[str]:
    """``kms:CreateGrant`` (by name or wildcard) allowed to a principal other than the
    key's account root and the ``admins`` without ``kms:GrantIsForAWSResource: true``."""
    found: list[str] = []
    for index, statement in _allowing(policy):
        if not allows(statement, "kms:CreateGrant") or _for_aws_resource(statement):
            continue
        others = [p for p in principals(statement) if not _trusted(audit, key, p)]
        if others:
            found.append(
                f"statement {sid(statement, index)} allows kms:CreateGrant to "
                f"{', '.join(others)} without kms:GrantIsForAWSResource"
            )
    return found


PUBLIC = Rule(
    id="key-policy-public",
    practice=2,
    title="No key policy allows Principal * without a condition restricting the caller",
    severity="critical",
    fix=(
        'Replace Principal "*" with the account or role ARNs that use the key, or add a '
        "condition such as aws:PrincipalOrgID or kms:CallerAccount "
        "(aws kms put-key-policy --key-id KEY --policy-name default --policy file://p.json)."
    ),
    doc=_GUIDE + "determining-access-key-policy.html",
    judge=_judge_keys(_public),
)

ADMIN_WILDCARD = Rule(
    id="key-policy-admin-wildcard",
    practice=2,
    title="Only the account root and the key administrators hold kms:*",
    severity="high",
    fix=(
        "Give key administrators the actions of AWS's default key administrators statement "
        "(kms:Create*, kms:Describe*, kms:Put*... without the cryptographic operations) "
        "instead of kms:*, or add them to the review's admins; aws kms put-key-policy."
    ),
    doc=_GUIDE + "key-policy-default.html",
    judge=_judge_keys(_admin_wildcard),
)

CROSS_ACCOUNT = Rule(
    id="key-policy-cross-account",
    practice=2,
    title="No key policy names principals of other accounts",
    severity="high",
    fix=(
        "Remove principals of other accounts that no longer need the key, or give them only "
        "the cryptographic operations they use (aws kms put-key-policy)."
    ),
    doc=_GUIDE + "key-policy-modifying-external-accounts.html",
    judge=_judge_keys(_cross_account),
)

GRANT_UNRESTRICTED = Rule(
    id="key-policy-grant-unrestricted",
    practice=2,
    title="kms:CreateGrant is allowed only for AWS resources (kms:GrantIsForAWSResource)",
    severity="medium",
    fix=(
        'Add "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}} to the statement '
        "allowing kms:CreateGrant, as AWS's default 'Allow attachment of persistent "
        "resources' statement does (aws kms put-key-policy)."
    ),
    doc=_GUIDE + "grant-authorization.html",
    judge=_judge_keys(_grant_unrestricted),
)

RULES: tuple[Rule, ...] = (
    PUBLIC,
    ADMIN_WILDCARD,
    CROSS_ACCOUNT,
    GRANT_UNRESTRICTED,
    WILDCARD_RESOURCE,
    *practice_grants.RULES,
)
"""Practice 2's checks, in the order the review lists them."""

"""The IAM policy language as the least-privilege checks read it, and the check of the
account's own IAM policies (``iam-kms-wildcard-resource``).

A statement is read the way IAM evaluates it: ``Action`` and ``NotAction`` are wildcard
patterns matched without regard to case; ``Resource`` and ``NotResource`` with regard to it;
a principal given as a bare account id is that account's root principal; an Allow with
``NotPrincipal`` (or ``Principal: *``, or ``{"AWS": "*"}``) allows everyone. A condition
narrows a statement only when IAM would refuse a request that lacks the key or carries
another value: a positive ``String*``/``Arn*`` operator (``ForAnyValue:`` allowed, not
``ForAllValues:``), no ``IfExists``, and values that are more than wildcards. Deny
statements are not weighed: the checks report what an Allow gives, which a Deny elsewhere
may take back.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import Any

from kmsir.actions.audit.context import AuditContext
from kmsir.actions.audit.rules import Result, Rule
from kmsir.keypolicy import statements

_ACCOUNT_ID = re.compile(r"^\d{12}$")
_ROOT = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):root$")
#: Operators that allow a request only when the key is present with one of the values.
_POSITIVE = re.compile(r"^(forallvalues:|foranyvalue:)?(string|arn)(equals|like)(ignorecase)?$")

#: The actions that reveal plaintext: ``kms:ReEncryptFrom`` decrypts as ``kms:Decrypt`` does
#: (AWS's best-practices page names both).
DECRYPTING = ("kms:Decrypt", "kms:ReEncryptFrom")
#: Condition keys that narrow an IAM statement on ``Resource: "*"`` to some keys, or to
#: requests an AWS service makes on the principal's behalf (see ``_judge``).
KEY_NARROWING = frozenset(
    {
        "kms:resourcealiases",
        "kms:requestalias",
        "kms:viaservice",
        "aws:resourceaccount",
        "aws:resourceorgid",
        "aws:resourceorgpaths",
        "aws:resourcetag/",
    }
)
#: Two accounts and key id forms: a pattern matching a key ARN of each, in a Region, matches
#: the keys of every account there (AWS's "all KMS keys in all AWS accounts").
_SAMPLE_KEYS = (
    ("000000000000", "00000000-0000-0000-0000-000000000000"),
    ("999999999999", "mrk-ffffffffffffffffffffffffffffffff"),
)
#: Pages of ``GetAccountAuthorizationDetails`` read (at most 1000 entries each).
IAM_MAX_PAGES = 5
_PAGE_SIZE = 1000
_LISTS = ("UserDetailList", "GroupDetailList", "RoleDetailList", "Policies")


def as_list(value: Any) -> list[str]:
    """A policy element (one string or a list) as a list of strings."""
    if value is None:
        return []
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def glob(pattern: str, *, case: bool) -> re.Pattern[str]:
    """An IAM wildcard pattern (``*`` any run, ``?`` one character) as a regex."""
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, 0 if case else re.IGNORECASE)


def allows(statement: dict[str, Any], action: str) -> bool:
    """Whether ``statement`` is an Allow whose actions include ``action``."""
    if statement.get("Effect") != "Allow":
        return False
    if "NotAction" in statement:
        return not any(
            glob(p, case=False).fullmatch(action) for p in as_list(statement["NotAction"])
        )
    return any(glob(p, case=False).fullmatch(action) for p in as_list(statement.get("Action")))


def account_of(principal: str) -> str | None:
    """The account of a principal ARN or bare account id (``None`` for ``*``, services and
    unique ids)."""
    if _ACCOUNT_ID.match(principal):
        return principal
    parts = principal.split(":")
    if principal.startswith("arn:") and len(parts) > 4 and _ACCOUNT_ID.match(parts[4]):
        return parts[4]
    return None


def is_root(principal: str, account: str) -> bool:
    """Whether ``principal`` is ``account``'s root principal (its IAM policies decide)."""
    match = _ROOT.match(principal)
    return bool(match and match.group(1) == account)


def principals(statement: dict[str, Any]) -> list[str]:
    """Who a statement names: ``*`` for everyone (``Principal: *``, ``{"AWS": "*"}``, or an
    Allow's ``NotPrincipal``), AWS principals as ARNs (a bare account id as its root), and
    service principals by name."""
    if "NotPrincipal" in statement:
        return ["*"]
    principal = statement.get("Principal")
    if principal == "*":
        return ["*"]
    if not isinstance(principal, dict):
        return []
    found: list[str] = []
    for value in as_list(principal.get("AWS")):
        found.append(f"arn:aws:iam::{value}:root" if _ACCOUNT_ID.match(value) else value)
    found.extend(as_list(principal.get("Service")))
    return found


def conditions(statement: dict[str, Any]) -> Iterator[tuple[str, list[str]]]:
    """(condition key in lower case, values) of each condition that holds only when the
    request carries the key with one of the values: a positive ``String*``/``Arn*``
    operator, ``ForAnyValue:`` allowed; ``IfExists`` and ``ForAllValues:`` (both true when
    the request lacks the key) and negated operators never restrict."""
    found = statement.get("Condition")
    if not isinstance(found, dict):
        return
    for operator, block in found.items():
        name = str(operator).lower()
        if not isinstance(block, dict) or not _POSITIVE.match(name):
            continue
        if name.startswith("forallvalues:"):
            continue
        for key, values in block.items():
            yield str(key).lower(), as_list(values)


def narrowing(statement: dict[str, Any], keys: Iterable[str]) -> list[str]:
    """The condition keys among ``keys`` (lower case; one ending in ``/`` is a prefix) by
    which the statement's conditions narrow whom or what it applies to: values that are
    more than wildcards (``*``, ``alias/*``)."""
    wanted = tuple(keys)
    found: list[str] = []
    for name, values in conditions(statement):
        if not any(name == k or (k.endswith("/") and name.startswith(k)) for k in wanted):
            continue
        if values and all(v.strip("*?") not in ("", "alias/") for v in values):
            found.append(name)
    return found


def sid(statement: dict[str, Any], index: int) -> str:
    """How a detail line names a statement: its Sid, or its position."""
    return repr(statement["Sid"]) if statement.get("Sid") else f"#{index + 1}"


def document(value: Any) -> dict[str, Any]:
    """A policy document as IAM returns it (a dict, or URL-encoded JSON) as a dict."""
    if isinstance(value, str):
        value = json.loads(urllib.parse.unquote(value))
    return value if isinstance(value, dict) else {}


def _samples(pattern: str) -> list[str]:
    """Key ARNs of two accounts in the partition and Region ``pattern`` names (or the
    commercial partition and us-east-1 where it names none)."""
    fields = pattern.split(":")
    named = len(fields) >= 6

    def fixed(index: int, default: str) -> str:
        value = fields[index] if named else ""
        return value if value and not set(value) & {"*", "?"} else default

    partition, region = fixed(1, "aws"), fixed(3, "us-east-1")
    return [f"arn:{partition}:kms:{region}:{a}:key/{k}" for a, k in _SAMPLE_KEYS]


def _every_key(statement: dict[str, Any]) -> bool:
    """Whether the statement's resources cover the keys of every account (in a Region, or
    in all of them): ``*``, ``arn:aws:kms:*:*:key/*``, ``arn:aws:kms:eu-west-1:*:*``..."""
    if "NotResource" in statement:
        patterns = [glob(p, case=True) for p in as_list(statement["NotResource"])]
        return not any(p.fullmatch(arn) for p in patterns for arn in _samples(""))
    return any(
        all(glob(p, case=True).fullmatch(arn) for arn in _samples(p))
        for p in as_list(statement.get("Resource"))
    )


def _policies(details: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(resource, document) of each customer-managed policy's default version and each
    inline policy of a user, group or role (``PRINCIPAL_ARN#policy/NAME``)."""
    for policy in details.get("Policies", []):
        for version in policy.get("PolicyVersionList") or []:
            if version.get("IsDefaultVersion"):
                yield str(policy["Arn"]), document(version.get("Document"))
    for kind, inline in (
        ("UserDetailList", "UserPolicyList"),
        ("GroupDetailList", "GroupPolicyList"),
        ("RoleDetailList", "RolePolicyList"),
    ):
        for principal in details.get(kind, []):
            for policy in principal.get(inline) or []:
                resource = f"{principal['Arn']}#policy/{policy['PolicyName']}"
                yield resource, document(policy.get("PolicyDocument"))


def _details(audit: AuditContext) -> tuple[dict[str, Any], str]:
    """The account's users, groups and roles with their inline policies, and its
    customer-managed policies with their versions (``GetAccountAuthorizationDetails``: one
    paged listing instead of a call per principal and policy), and its artifact path."""
    iam = audit.client("iam")

    def read() -> dict[str, Any]:
        found: dict[str, Any] = {name: [] for name in _LISTS}
        paginator = iam.get_paginator("get_account_authorization_details")
        pages = paginator.paginate(
            Filter=["User", "Role", "Group", "LocalManagedPolicy"],
            PaginationConfig={"PageSize": _PAGE_SIZE},
        )
        for number, page in enumerate(pages, 1):
            for name in _LISTS:
                found[name].extend(page.get(name) or [])
            if number >= IAM_MAX_PAGES and page.get("IsTruncated"):
                audit.cut.append(
                    f"iam GetAccountAuthorizationDetails: only {IAM_MAX_PAGES} pages "
                    f"({IAM_MAX_PAGES * _PAGE_SIZE} users, groups, roles and policies) were read"
                )
                break
        return found

    def shared() -> tuple[dict[str, Any], str]:
        found = audit.call("iam", "GetAccountAuthorizationDetails", read)
        return found, audit.evidence("iam/authorization-details", found)

    return audit.shared("iam/authorization-details", shared)


def _finding(doc: dict[str, Any]) -> str | None:
    """Why a policy fails the check (``None``: it passes)."""
    found: list[str] = []
    for index, statement in enumerate(statements(doc)):
        actions = [a for a in DECRYPTING if allows(statement, a)]
        if not actions or not _every_key(statement):
            continue
        if narrowing(statement, KEY_NARROWING):
            continue
        found.append(f"statement {sid(statement, index)} allows {', '.join(actions)} on every key")
    return "; ".join(found) or None


def _decrypts(doc: dict[str, Any]) -> bool:
    return any(allows(s, a) for s in statements(doc) for a in DECRYPTING)


def _judge(audit: AuditContext) -> Iterator[Result]:
    """``iam-kms-wildcard-resource``. Fails an Allow of ``kms:Decrypt`` or
    ``kms:ReEncryptFrom`` (by name, ``kms:*``, ``*`` or any wildcard matching them) whose
    resources cover the keys of every account, in one Region or all (``*``,
    ``arn:aws:kms:*:*:key/*``, ``arn:aws:kms:eu-west-1:*:*``...), unless a condition
    narrows it: ``kms:ResourceAliases``/``kms:RequestAlias`` and
    ``aws:ResourceTag/*`` (ABAC: only keys with those aliases or tags),
    ``aws:ResourceAccount``/``aws:ResourceOrgID``/``aws:ResourceOrgPaths`` (only keys of
    those accounts, the risk AWS's page names), or ``kms:ViaService`` (only requests an AWS
    service makes for the principal, never a direct Decrypt). Patterns scoped to one
    account's keys (``arn:aws:kms:*:111122223333:key/*``) pass: AWS's page "Specifying KMS
    keys in IAM policy statements" shows them as the way to name many keys."""
    details, path = _details(audit)
    policies = list(_policies(details))
    if not policies:
        yield Result("not-applicable", detail="no customer-managed or inline IAM policies")
        return
    passed: list[str] = []
    failed = 0
    for resource, doc in policies:
        why = _finding(doc)
        if why is not None:
            failed += 1
            yield Result("fail", (resource,), why, (path,))
        elif _decrypts(doc):
            passed.append(resource)
    if passed or not failed:
        yield Result(
            "pass",
            tuple(passed),
            f"{len(policies)} customer-managed and inline policies read; {len(passed)} "
            "allow KMS decryption, each on named keys or narrowed by a condition",
            (path,),
        )


WILDCARD_RESOURCE = Rule(
    id="iam-kms-wildcard-resource",
    practice=2,
    title='No IAM policy allows kms:Decrypt on every key ("Resource": "*")',
    severity="high",
    fix=(
        "Name the key ARNs the principal needs in the statement's Resource "
        "(arn:aws:kms:REGION:ACCOUNT:key/KEY_ID), or narrow it with a kms:ResourceAliases or "
        "kms:ViaService condition; then aws iam create-policy-version --set-as-default "
        "(managed) or aws iam put-role-policy / put-user-policy / put-group-policy (inline)."
    ),
    doc="https://docs.aws.amazon.com/kms/latest/developerguide/iam-policies-best-practices.html",
    judge=_judge,
    permissions=("iam:GetAccountAuthorizationDetails",),
)

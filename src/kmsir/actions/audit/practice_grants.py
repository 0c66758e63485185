"""Practice 2 (least privilege), the grants: to other accounts, old, or broad.

Every grant of every customer-managed key in scope is judged on its own (``ListGrants``, read
once by ``context.gather``); a failing grant is named ``KEY_ARN#grant/GRANT_ID`` so a waiver
can name one grant. Grants an AWS service made for one of its resources (an EBS volume, an
RDS instance...) are judged like any other, and the detail says so: the service retires
them when the resource goes, and revoking one cuts the resource off from its key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

from kmsir.actions.audit.context import AuditContext, KeyFacts, Unavailable
from kmsir.actions.audit.iam_policies import account_of
from kmsir.actions.audit.rules import Result, Rule, cannot

_GUIDE = "https://docs.aws.amazon.com/kms/latest/developerguide/"

#: A grant's verdict: ``None`` (passes), or why it fails.
Verdict = Callable[[AuditContext, KeyFacts, dict[str, Any]], str | None]


def resource(key: KeyFacts, grant: dict[str, Any]) -> str:
    """How the review names one grant: the key ARN and the grant id."""
    return f"{key.arn}#grant/{grant.get('GrantId', '')}"


def by_service(grant: dict[str, Any]) -> bool:
    """Whether an AWS service made the grant for one of its resources: its grantee or
    retiring principal is a service principal or a session of AWS's own roles
    (``assumed-role/aws:ec2-infrastructure``), or its encryption context constraint has the
    ``aws:`` keys services use (``aws:ebs:id``, ``aws:rds:db-id``...)."""
    for name in ("GranteePrincipal", "RetiringPrincipal"):
        principal = str(grant.get(name) or "")
        if principal and not principal.startswith("arn:") and ".amazonaws.com" in principal:
            return True
        if ":assumed-role/aws:" in principal:  # roles named aws:* are AWS's own
            return True
    constraints = grant.get("Constraints") or {}
    return any(
        str(key).startswith("aws:")
        for context in constraints.values()
        if isinstance(context, dict)
        for key in context
    )


def _label(key: KeyFacts, grant: dict[str, Any]) -> str:
    name = f" ({grant['Name']})" if grant.get("Name") else ""
    made = "; made by an AWS service for its resource" if by_service(grant) else ""
    return f"grant {grant.get('GrantId')}{name} on {key.label()}{made}"


def _judge_grants(
    verdict: Verdict, *, services_info: bool = False
) -> Callable[[AuditContext], Iterator[Result]]:
    """A rule's judge: ``verdict`` over every grant of every customer-managed key (a verdict
    that raises ``Unavailable`` makes that grant could-not-check). ``services_info``: what
    the verdict finds in a grant an AWS service made for its resource (an EBS volume's, an
    RDS instance's: broad, unconstrained and as old as the resource, as AWS documents) is
    recorded as info, not failed: the service, not the account, decides it."""

    def judge(audit: AuditContext) -> Iterator[Result]:
        keys = list(audit.customer_keys())
        if not keys:
            yield Result("not-applicable", detail="no customer-managed keys in scope")
            return
        passed: list[str] = []
        evidence: dict[str, None] = {}
        seen = refused = 0
        for key in keys:
            try:
                grants = key.need("grants") or []
            except Unavailable as exc:
                refused += 1
                yield cannot(exc, [key.arn])
                continue
            read = (key.evidence["grants"],) if "grants" in key.evidence else ()
            for grant in grants:
                seen += 1
                named = resource(key, grant)
                try:
                    why = verdict(audit, key, grant)
                except Unavailable as exc:
                    detail = f"{_label(key, grant)}: {exc.detail}"
                    yield Result("could-not-check", (named,), detail, read, exc.permission)
                    continue
                if why is None:
                    passed.append(named)
                    evidence.update(dict.fromkeys(read))
                elif services_info and by_service(grant):
                    yield Result("info", (named,), f"{_label(key, grant)}: {why}", read)
                else:
                    yield Result("fail", (named,), f"{_label(key, grant)}: {why}", read)
        if not seen and not refused:
            count = len(keys)
            yield Result(
                "not-applicable", detail=f"no grants on the {count} customer-managed key(s)"
            )
        elif passed:
            yield Result("pass", tuple(passed), f"{len(passed)} grant(s) pass", tuple(evidence))

    return judge


def _cross_account(audit: AuditContext, key: KeyFacts, grant: dict[str, Any]) -> str | None:
    """Fails a grant whose grantee or retiring principal is in another account than the
    key's (an account id or an ARN naming one; service principals have none)."""
    outside: list[str] = []
    for field, role in (("GranteePrincipal", "grantee"), ("RetiringPrincipal", "retiring")):
        principal = str(grant.get(field) or "")
        account = account_of(principal)
        if account is not None and account != key.account:
            outside.append(f"{role} principal {principal} is in account {account}")
    return "; ".join(outside) or None


def _created(value: Any) -> datetime | None:
    """A grant's ``CreationDate`` (a datetime from botocore, or epoch seconds) as UTC."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, timezone.utc)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return None


def _age(audit: AuditContext, key: KeyFacts, grant: dict[str, Any]) -> str | None:
    """Fails a grant created more than ``grant_max_age_days`` days before the review; a
    grant ListGrants gave no ``CreationDate`` cannot be judged."""
    created = _created(grant.get("CreationDate"))
    if created is None:
        raise Unavailable(
            "CreationDate in the ListGrants response",
            "NoCreationDate",
            "ListGrants gave no CreationDate for this grant",
        )
    limit = int(getattr(audit.settings, "grant_max_age_days", 365))
    days = (audit.now - created).days
    if days <= limit:
        return None
    return f"created {created.date().isoformat()}, {days} days ago (more than {limit})"


#: Operations that encrypt or re-encrypt: with Decrypt, a grant can both read and write data.
_WRITING = ("Encrypt", "ReEncryptFrom", "ReEncryptTo", "GenerateDataKey")


def _broad(audit: AuditContext, key: KeyFacts, grant: dict[str, Any]) -> str | None:
    """Fails a grant without constraints that allows ``CreateGrant`` (its grantee may hand
    the key on), or ``Decrypt`` together with an operation that encrypts
    (``Encrypt``, ``ReEncrypt*``, ``GenerateDataKey*``). Any constraint (an encryption
    context, EncryptionContextEquals or EncryptionContextSubset) passes."""
    if any((grant.get("Constraints") or {}).values()):
        return None
    operations = [str(o) for o in grant.get("Operations") or []]
    why: list[str] = []
    if "CreateGrant" in operations:
        why.append("CreateGrant (the grantee can grant the key on)")
    writing = [o for o in operations if o.startswith(_WRITING)]
    if "Decrypt" in operations and writing:
        why.append(f"Decrypt with {', '.join(writing)}")
    if not why:
        return None
    return f"allows {' and '.join(why)} with no encryption context constraint"


CROSS_ACCOUNT = Rule(
    id="grant-cross-account",
    practice=2,
    title="No grant gives a key to a principal of another account",
    severity="high",
    fix=(
        "Revoke grants to other accounts that are not expected: "
        "aws kms revoke-grant --key-id KEY_ARN --grant-id GRANT_ID."
    ),
    doc=_GUIDE + "determining-access-grants.html",
    judge=_judge_grants(_cross_account),
)

AGE = Rule(
    id="grant-age",
    practice=2,
    title="No grant is older than grant_max_age_days (365 by default)",
    severity="low",
    fix=(
        "Grants never expire: retire or revoke those no longer needed "
        "(aws kms revoke-grant --key-id KEY_ARN --grant-id GRANT_ID), or waive the ones kept."
    ),
    doc=_GUIDE + "grant-best-practices.html",
    judge=_judge_grants(_age, services_info=True),
)

BROAD = Rule(
    id="grant-broad",
    practice=2,
    title="Grants that delegate or both decrypt and encrypt carry a constraint",
    severity="medium",
    fix=(
        "Replace the grant with one limited to the operations the grantee uses and an "
        "encryption context constraint (aws kms create-grant ... --constraints "
        "EncryptionContextEquals={...}), then revoke the old one."
    ),
    doc=_GUIDE + "grant-best-practices.html",
    judge=_judge_grants(_broad, services_info=True),
)

RULES: tuple[Rule, ...] = (CROSS_ACCOUNT, AGE, BROAD)

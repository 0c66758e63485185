"""The checks, as rules: a rule is one check (``id``), its practice, severity, fix and the
AWS page it follows, and a function from the review's reading (``AuditContext``) to results.

``evaluate`` runs every rule concurrently (their calls overlap; a listing two rules need is
read once) and turns each ``Result`` into a ``posture.Check``. A rule that raises
``Unavailable`` (a call it needed was refused) becomes one ``could-not-check`` entry naming
the permission it lacked: never a pass, never a fail. A rule that breaks on a response it did
not expect becomes a ``could-not-check`` saying so: the other checks still judge.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from kmsir.actions.audit.context import AuditContext, Unavailable
from kmsir.posture import PRACTICES, Check

#: Rules run at once (each may itself make many calls one after another).
WORKERS = 8


@dataclass(frozen=True)
class Result:
    """A rule's verdict on some resources (``status`` as in ``posture.STATUSES``)."""

    status: str
    resources: tuple[str, ...] = ()
    detail: str = ""
    evidence: tuple[str, ...] = ()
    #: For ``could-not-check``: the IAM permission or API missing.
    missing: str | None = None
    #: When this result weighs other than the rule's severity (a grant to another account).
    severity: str | None = None


@dataclass(frozen=True)
class Rule:
    """One check: what it is, and ``judge`` (the review's reading -> results)."""

    id: str
    practice: int
    title: str
    severity: str
    fix: str
    doc: str
    judge: Callable[[AuditContext], Iterable[Result]]
    #: The IAM permissions its calls need (``kmsir audit`` lists them; keys' own reads are
    #: the action's).
    permissions: tuple[str, ...] = ()

    def check(self, result: Result) -> Check:
        """A result as a ``posture.json`` entry."""
        return Check(
            practice=self.practice,
            id=self.id,
            title=self.title,
            status=result.status,
            severity=result.severity or self.severity,
            resources=tuple(dict.fromkeys(result.resources)),
            fix=self.fix,
            doc=self.doc or PRACTICES[self.practice].doc,
            detail=result.detail,
            evidence=tuple(dict.fromkeys(result.evidence)),
            missing=result.missing,
        )


def cannot(exc: Unavailable, resources: Iterable[str] = ()) -> Result:
    """The result of a check a refused call kept from judging."""
    return Result(
        status="could-not-check",
        resources=tuple(resources),
        detail=exc.detail,
        missing=exc.permission,
    )


def evaluate(audit: AuditContext, rules: Iterable[Rule]) -> list[Check]:
    """Every rule's results as checks, in the rules' order."""

    def one(rule: Rule) -> list[Check]:
        try:
            return [rule.check(r) for r in rule.judge(audit)]
        except Unavailable as exc:
            return [rule.check(cannot(exc))]
        except Exception as exc:  # one check's bug must not lose the review
            # a response shaped as kmsir did not expect: the other checks still judge, and
            # this one says it could not, and why
            detail = f"kmsir could not judge this check ({type(exc).__name__}: {exc})"[:500]
            return [rule.check(Result("could-not-check", detail=detail + "; please report it"))]

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return [check for checks in pool.map(one, list(rules)) for check in checks]

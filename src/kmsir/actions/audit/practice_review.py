"""Practices 9 and 10, judged on the review itself: its rules cite AWS's pages and are
recent (9), and the account improves from one review to the next (10)."""

from __future__ import annotations

from datetime import date
from typing import Any

from kmsir import __version__
from kmsir.posture import PRACTICES, RULESET_DATE, RULESET_VERSION, Check

#: A rule set older than this is reported as possibly out of date (AWS's pages change).
RULESET_MAX_AGE_DAYS = 365
_DOCS = "https://docs.aws.amazon.com/"


def checks(found: list[Check], comparison: dict[str, Any] | None, today: date) -> list[Check]:
    """The entries of practices 9 and 10 for a review whose other checks are ``found``."""
    return [_cited(found), _recent(today), _trend(comparison)]


def _cited(found: list[Check]) -> Check:
    uncited = sorted({c.id for c in found if not c.doc.startswith(_DOCS)})
    return Check(
        practice=9,
        id="rules-cite-aws",
        title="Every check cites the AWS documentation page it follows",
        status="fail" if uncited else "pass",
        severity="low",
        resources=tuple(uncited),
        fix="Report the check to kmsir's maintainers: each check must name its AWS page.",
        doc=PRACTICES[9].doc,
        detail=(
            f"{len(uncited)} check(s) cite no AWS page: {', '.join(uncited)[:300]}"
            if uncited
            else f"{len({c.id for c in found})} check(s), each citing its AWS page"
        ),
    )


def _recent(today: date) -> Check:
    age = (today - date.fromisoformat(RULESET_DATE)).days
    old = age > RULESET_MAX_AGE_DAYS
    return Check(
        practice=9,
        id="ruleset-current",
        title="The rule set is recent",
        status="fail" if old else "pass",
        severity="low",
        fix="Upgrade kmsir (pip install -U kmsir): its checks follow AWS's current pages.",
        doc=PRACTICES[9].doc,
        detail=(
            f"rule set {RULESET_VERSION} of {RULESET_DATE}, kmsir {__version__}: "
            f"{age} day(s) old" + (f", older than {RULESET_MAX_AGE_DAYS}" if old else "")
        ),
    )


def _trend(comparison: dict[str, Any] | None) -> Check:
    base = Check(
        practice=10,
        id="compared-with-previous",
        title="The review is compared with the previous one",
        status="info",
        severity="medium",
        fix=(
            "Review after every incident and at least quarterly with "
            "`kmsir audit --compare PREVIOUS_BUNDLE`; fix new failures first."
        ),
        doc=PRACTICES[10].doc,
        detail="no earlier review given: next time run kmsir audit --compare BUNDLE",
    )
    if comparison is None:
        return base
    new = comparison.get("new") or []
    fixed = comparison.get("fixed") or []
    unchanged = comparison.get("unchanged") or []
    detail = f"{len(new)} new failure(s), {len(fixed)} fixed, {len(unchanged)} unchanged"
    return base.only(
        (str(n.get("resource") or n.get("id")) for n in new),
        status="fail" if new else "pass",
        detail=detail + (f" since {comparison['since']}" if comparison.get("since") else ""),
    )

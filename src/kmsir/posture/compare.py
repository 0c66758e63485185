"""A review against an earlier one (practice 10): new failures, fixed ones, unchanged ones.

Failures are compared per (check id, resource): a check failing on a new key is a new
failure even if the check failed before on another. Only checks this review ran are
compared: an earlier failure of a check that did not run now (a rule since retired, or the
review's own practices 9 and 10, judged after the comparison) is not "fixed", it is listed
as ``not_rechecked``; so is one whose resource this review did not judge (could not check
it, or it is out of scope or gone). Fixed means judged again and passing. A failure waived
now is not fixed either: it is listed as ``waived`` (and a failure waived before that fails
again now is ``unchanged``, not new).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kmsir.posture import PRACTICES, Check, Review, severity_rank

Pair = tuple[str, str]


def _with_status(checks: Iterable[Check], *statuses: str) -> dict[Pair, Check]:
    return {pair: c for c in checks if c.status in statuses for pair in c.pairs()}


def compare(before: Review, after: Iterable[Check]) -> dict[str, Any]:
    """The comparison of the checks ``after`` with the review ``before``: ``new``,
    ``fixed`` and ``unchanged`` failures, ``waived`` (earlier failures waived now) and
    ``not_rechecked`` (earlier failures of checks that did not run now), each a list of
    ``{id, resource, practice, severity, title}`` the most severe first; ``since`` (when the
    earlier review ran), ``before_ruleset`` (its rule set version) and ``trend``: per
    practice ("1".."10") the count of failures ``before`` and ``now``, of the checks run now.
    """
    now_checks = list(after)
    ran = {c.id for c in now_checks}
    earlier = _with_status(before.checks, "fail", "waived")
    known = {p: c for p, c in earlier.items() if p[0] in ran}
    failed_before = {p: c for p, c in known.items() if c.status == "fail"}
    failing = _with_status(now_checks, "fail")
    waived_now = _with_status(now_checks, "waived")
    judged = _with_status(now_checks, "pass", "info", "not-applicable")
    judged_ids = {p[0] for p in judged}

    def passes(pair: Pair) -> bool:
        """Judged again now and not failing (a check naming no resource: judged at all)."""
        return pair in judged or (pair[1] == "" and pair[0] in judged_ids)

    fixed = [p for p in known if p not in failing and p not in waived_now and passes(p)]
    unseen = [p for p in known if p not in failing and p not in waived_now and not passes(p)]

    def listed(pairs: Iterable[Pair], source: dict[Pair, Check]) -> list[dict[str, Any]]:
        chosen = sorted(pairs, key=lambda p: (severity_rank(source[p].severity), p))
        return [
            {
                "id": p[0],
                "resource": p[1],
                "practice": source[p].practice,
                "severity": source[p].severity,
                "title": source[p].title,
            }
            for p in chosen
        ]

    def per_practice(found: dict[Pair, Check], number: int) -> int:
        return sum(1 for c in found.values() if c.practice == number)

    return {
        "since": before.scope.get("started"),
        "before_ruleset": before.ruleset.get("version"),
        "new": listed((p for p in failing if p not in known), failing),
        "fixed": listed(fixed, known),
        "unchanged": listed((p for p in failing if p in known), failing),
        "waived": listed((p for p in waived_now if p in known), waived_now),
        "not_rechecked": listed([*(p for p in earlier if p[0] not in ran), *unseen], earlier),
        "trend": {
            str(n): {"before": per_practice(failed_before, n), "now": per_practice(failing, n)}
            for n in PRACTICES
        },
    }

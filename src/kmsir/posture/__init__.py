"""A posture review's results: the checks of the ten KMS best practices, as ``posture.json``.

``kms.audit`` judges an account and writes a ``Review``; the report, ``kmsir audit``'s table,
JSON and SARIF, waivers and the comparison with an earlier review all read it back from the
bundle. Stdlib only (the report reads it too): a review is plain data.

A check entry is one check's verdict on some resources: ``id`` (stable, the waiver and the
comparison key on it), ``status`` (``STATUSES``), ``severity`` (what a failure of it weighs,
``SEVERITIES``), ``resources`` (ARNs, or names where a resource has none), ``fix``, ``doc``
(the AWS documentation page the check follows), ``detail`` (why this status, one line),
``evidence`` (the bundle artifacts holding the API responses it judged), ``missing`` (for
``could-not-check``: the IAM permission or API it lacked) and ``waiver`` (for ``waived``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

#: Every status, the most pressing first.
STATUSES = ("fail", "could-not-check", "waived", "info", "pass", "not-applicable")
#: Severities, the highest first.
SEVERITIES = ("critical", "high", "medium", "low", "info")

#: The rule set: its version and the date its checks were last compared with AWS's pages.
RULESET_VERSION = "2026.12"
RULESET_DATE = "2026-12-01"


@dataclass(frozen=True)
class Practice:
    """One of the ten KMS security best practices kmsir grew from."""

    number: int
    title: str
    doc: str


_GUIDE = "https://docs.aws.amazon.com/kms/latest/developerguide/"

PRACTICES: dict[int, Practice] = {
    p.number: p
    for p in (
        Practice(1, "Customer-managed keys for sensitive data", _GUIDE + "concepts.html#key-mgmt"),
        Practice(2, "Least-privilege access to keys", _GUIDE + "iam-policies-best-practices.html"),
        Practice(3, "Audit and monitor key use", _GUIDE + "monitoring-overview.html"),
        Practice(4, "Rotate key material", _GUIDE + "rotate-keys.html"),
        Practice(5, "Encrypt data everywhere", _GUIDE + "service-integration.html"),
        Practice(6, "Manage secrets with KMS", _GUIDE + "services-secrets-manager.html"),
        Practice(7, "Know key stores and key origin", _GUIDE + "key-store-overview.html"),
        Practice(8, "Manage keys as code", _GUIDE + "creating-resources-with-cloudformation.html"),
        Practice(9, "Keep the rules up to date", _GUIDE + "overview.html"),
        Practice(10, "Improve continuously", _GUIDE + "security-best-practices.html"),
    )
}


@dataclass(frozen=True)
class Check:
    """One check's verdict on some resources (see the module's docstring)."""

    practice: int
    id: str
    title: str
    status: str
    severity: str
    resources: tuple[str, ...] = ()
    fix: str = ""
    doc: str = ""
    detail: str = ""
    evidence: tuple[str, ...] = ()
    missing: str | None = None
    waiver: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        """The entry as ``posture.json`` holds it."""
        data = asdict(self)
        data["resources"] = list(self.resources)
        data["evidence"] = list(self.evidence)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Check:
        """An entry read back from ``posture.json`` (unknown fields ignored)."""
        return cls(
            practice=int(data["practice"]),
            id=str(data["id"]),
            title=str(data.get("title") or data["id"]),
            status=str(data["status"]),
            severity=str(data.get("severity") or "info"),
            resources=tuple(str(r) for r in data.get("resources") or ()),
            fix=str(data.get("fix") or ""),
            doc=str(data.get("doc") or ""),
            detail=str(data.get("detail") or ""),
            evidence=tuple(str(r) for r in data.get("evidence") or ()),
            missing=None if data.get("missing") is None else str(data["missing"]),
            waiver=data.get("waiver") if isinstance(data.get("waiver"), dict) else None,
        )

    def pairs(self) -> Iterator[tuple[str, str]]:
        """(check id, resource) for each resource it names, or once with ``""`` if none."""
        for resource in self.resources or ("",):
            yield self.id, resource

    def only(self, resources: Iterable[str], **changes: Any) -> Check:
        """The same verdict on fewer resources (and other changes)."""
        return replace(self, resources=tuple(resources), **changes)


@dataclass
class Review:
    """A whole review: its checks, scope and rule set, and what it was compared with."""

    checks: list[Check]
    #: account, region, keys examined, when it ran.
    scope: dict[str, Any] = field(default_factory=dict)
    ruleset: dict[str, str] = field(
        default_factory=lambda: {"version": RULESET_VERSION, "date": RULESET_DATE}
    )
    #: ``posture.compare``'s result against an earlier review, if one was given.
    comparison: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        """``posture.json``: checks in a stable order (practice, status, id)."""
        return {
            "ruleset": dict(self.ruleset),
            "scope": dict(self.scope),
            "checks": [c.as_json() for c in ordered(self.checks)],
            "comparison": self.comparison,
        }

    def dumps(self) -> bytes:
        """The review as the bytes of ``posture.json``."""
        return json.dumps(self.as_json(), indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def loads(cls, data: bytes | str) -> Review:
        """A review read back from ``posture.json``; ``ValueError`` when it is not one."""
        try:
            raw = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("checks"), list):
            raise ValueError('not a posture review (no "checks" list)')
        try:
            checks = [Check.from_json(c) for c in raw["checks"]]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"a check is malformed: {exc!r}") from None
        ruleset = raw.get("ruleset")
        scope = raw.get("scope")
        comparison = raw.get("comparison")
        return cls(
            checks=checks,
            scope=scope if isinstance(scope, dict) else {},
            ruleset=ruleset if isinstance(ruleset, dict) else {},
            comparison=comparison if isinstance(comparison, dict) else None,
        )

    def counts(self) -> dict[int, dict[str, int]]:
        """Per practice (1-10): how many check entries have each status."""
        table = {n: dict.fromkeys(STATUSES, 0) for n in PRACTICES}
        for check in self.checks:
            table.setdefault(check.practice, dict.fromkeys(STATUSES, 0))[check.status] += 1
        return table

    def failures(self, at_least: str = "info") -> list[Check]:
        """Failed checks at or above severity ``at_least``, the most severe first (then by
        practice and id)."""
        limit = SEVERITIES.index(at_least)
        failed = [
            c for c in self.checks if c.status == "fail" and severity_rank(c.severity) <= limit
        ]
        return sorted(failed, key=lambda c: (severity_rank(c.severity), c.practice, c.id))


def severity_rank(severity: str) -> int:
    """0 for critical ... 4 for info; an unknown severity ranks as info."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES) - 1


def status_rank(status: str) -> int:
    """0 for fail ... an unknown status last."""
    return STATUSES.index(status) if status in STATUSES else len(STATUSES)


def ordered(checks: Iterable[Check]) -> list[Check]:
    """Checks by practice, then the most pressing status, severity and id first."""
    return sorted(
        checks,
        key=lambda c: (c.practice, status_rank(c.status), severity_rank(c.severity), c.id),
    )

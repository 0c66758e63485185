"""A review as SARIF 2.1.0 (``kmsir audit --format sarif``), for code-scanning dashboards.

The mapping:
- one rule (``reportingDescriptor``) per check id: its title as ``shortDescription``, the
  practice it serves as ``fullDescription``, the AWS page it follows as ``helpUri``, the
  fix as ``help``; its severity as ``defaultConfiguration.level`` and as
  ``properties.security-severity`` (GitHub's scale: over 9.0 critical, 7.0-8.9 high,
  4.0-6.9 medium, below 4.0 low);
- one result per entry that failed, could not be checked or was waived. A failure is kind
  ``fail`` at its severity's level; a check that could not run is kind ``open`` (SARIF's
  "not enough information to decide") at level ``none``, with the missing permission; a
  waived failure is a failure with a ``suppressions`` entry (kind ``external``: the waivers
  file; status ``accepted``; the waiver's reason as ``justification``, its expiry and
  ``file:line`` as properties), so dashboards show it as dismissed, not as gone. Passes,
  infos and not-applicable entries are not results (SARIF lists problems);
- each resource (an ARN) is a ``logicalLocation`` of kind ``resource``: a review has no
  source files, so no ``physicalLocation``;
- the tool's ``driver`` carries kmsir's version and, as properties and in its
  ``fullName``, the rule set's version and date; the review's scope (account, Region,
  keys, start) is the invocation's.

Every text from the review (resource names, details quoting tags) shows control and bidi
characters as escapes (``inert.visible``): dashboards show these texts to people. Only
plain ``text`` messages are written, never ``markdown``, so nothing in a resource name
becomes a link or markup.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from typing import Any

from kmsir.inert import visible
from kmsir.posture import PRACTICES, SEVERITIES, Check, Review, ordered, severity_rank

SCHEMA = (
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
)
#: SARIF result level per severity.
LEVELS = {"critical": "error", "high": "error", "medium": "warning", "low": "note", "info": "note"}
#: GitHub code scanning's ``security-severity`` (a number as text, 0.0-10.0) per severity.
SECURITY_SEVERITY = {"critical": "9.5", "high": "8.0", "medium": "5.5", "low": "3.0", "info": "0.0"}
#: Entries that become results.
REPORTED = ("fail", "could-not-check", "waived")
#: Resources a result's message names (its locations name them all).
MESSAGE_RESOURCES = 10
#: A page cited by a check, as a URI a SARIF consumer may link (anything else is left out).
_URI = re.compile(r"https://[A-Za-z0-9.-]+(/[A-Za-z0-9._~!$&'()*+,;=:@%/?#-]*)?")


def to_sarif(review: Review, *, version: str) -> dict[str, Any]:
    """The SARIF 2.1.0 log of ``review`` (one run; ``version``: kmsir's)."""
    checks = ordered(review.checks)
    ids = list(dict.fromkeys(c.id for c in checks))
    index = {check_id: n for n, check_id in enumerate(ids)}
    rules = [_rule([c for c in checks if c.id == check_id]) for check_id in ids]
    results = [_result(c, index[c.id]) for c in checks if c.status in REPORTED]
    scope = review.scope
    ruleset = {k: _text(v) for k, v in review.ruleset.items() if k in ("version", "date")}
    account, region = _text(scope.get("account") or "unknown"), _text(scope.get("region") or "")
    invocation: dict[str, Any] = {
        "executionSuccessful": True,
        "properties": {
            k: _text(scope[k]) if isinstance(scope[k], str) else scope[k]
            for k in ("account", "region", "keys", "customer_managed_keys", "simulated")
            if isinstance(scope.get(k), str | int | bool)
        },
    }
    started = _utc(scope.get("started"))
    if started:
        invocation["startTimeUtc"] = started
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "kmsir",
                        "fullName": (
                            f"kmsir {version}: KMS best practices rule set "
                            f"{ruleset.get('version', '?')} of {ruleset.get('date', '?')}"
                        ),
                        "version": version,
                        "rules": rules,
                        "properties": {"ruleset": ruleset},
                    }
                },
                # GitHub keeps one analysis per category: one per account and Region
                "automationDetails": {"id": f"kmsir-posture/{account}/{region}/"},
                "invocations": [invocation],
                "results": results,
            }
        ],
    }


def _rule(entries: list[Check]) -> dict[str, Any]:
    """The rule of one check id, from its entries (the most severe gives its level)."""
    first = entries[0]
    worst = min((c.severity for c in entries), key=severity_rank)
    severity = worst if worst in SEVERITIES else "info"
    practice = PRACTICES.get(first.practice)
    about = f"Practice {first.practice}"
    if practice is not None:
        about += f" ({practice.title})"
    help_text = _text(first.fix or "No fix recorded.", 2_000)
    rule: dict[str, Any] = {
        "id": _text(first.id, 200),
        "name": _text("".join(part.capitalize() for part in first.id.split("-")), 200),
        "shortDescription": {"text": _text(first.title, 500)},
        "fullDescription": {"text": f"{about}: {_text(first.title, 500)}"},
        "help": {"text": help_text + (f" See {first.doc}" if _uri(first.doc) else "")},
        "defaultConfiguration": {"level": LEVELS[severity]},
        "properties": {
            "security-severity": SECURITY_SEVERITY[severity],
            "tags": ["security", "aws-kms", f"kms-practice-{first.practice}"],
            "practice": first.practice,
            "severity": severity,
        },
    }
    if _uri(first.doc):
        rule["helpUri"] = first.doc
    return rule


def _result(check: Check, rule_index: int) -> dict[str, Any]:
    severity = check.severity if check.severity in SEVERITIES else "info"
    unchecked = check.status == "could-not-check"
    result: dict[str, Any] = {
        "ruleId": _text(check.id, 200),
        "ruleIndex": rule_index,
        "kind": "open" if unchecked else "fail",
        "level": "none" if unchecked else LEVELS[severity],
        "message": {"text": _message(check)},
        "partialFingerprints": {"kmsirCheckResources/v1": _fingerprint(check)},
        "properties": {
            "practice": check.practice,
            "status": check.status,
            "severity": severity,
            **({"missing": _text(check.missing)} if check.missing else {}),
            **({"evidence": [_text(e) for e in check.evidence]} if check.evidence else {}),
        },
    }
    if check.resources:
        result["locations"] = [_location(r) for r in check.resources]
    if check.status == "waived":
        result["suppressions"] = [_suppression(check.waiver or {})]
    return result


def _message(check: Check) -> str:
    named = ", ".join(check.resources[:MESSAGE_RESOURCES])
    if len(check.resources) > MESSAGE_RESOURCES:
        named += f" and {len(check.resources) - MESSAGE_RESOURCES} more"
    where = f" on {named}" if named else ""
    if check.status == "could-not-check":
        text = f"Could not check{where}: {check.title} (missing {check.missing or 'access'})"
    else:
        text = f"Not met{where}: {check.title}"
    if check.detail:
        text += f". {check.detail}"
    return _text(text, 4_000)


def _location(resource: str) -> dict[str, Any]:
    """A resource (an ARN, or a name where AWS gives none) as a logical location."""
    shown = _text(resource, 2_000)
    name = re.split(r"[:/]", shown.rstrip("/"))[-1] or shown
    return {"logicalLocations": [{"name": name, "fullyQualifiedName": shown, "kind": "resource"}]}


def _suppression(waiver: dict[str, Any]) -> dict[str, Any]:
    """A waiver as SARIF's suppression: accepted, outside the analysed files."""
    extra = {
        k: _text(waiver[k]) for k in ("expires", "where", "check", "resource") if waiver.get(k)
    }
    return {
        "kind": "external",
        "status": "accepted",
        "justification": _text(waiver.get("reason") or "waived", 1_000),
        "properties": extra,
    }


def _fingerprint(check: Check) -> str:
    """Stable across reviews for the same check on the same resources (dashboards match
    results between uploads with it)."""
    key = "\n".join((check.id, *sorted(check.resources)))
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _uri(doc: str) -> bool:
    return bool(_URI.fullmatch(doc))


def _utc(value: Any) -> str | None:
    """A review's start as SARIF's UTC date-time, or ``None`` when it is not a time."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _text(value: Any, limit: int = 1_000) -> str:
    """Review text as SARIF carries it: inert, at most ``limit`` characters."""
    text = visible("" if value is None else str(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."

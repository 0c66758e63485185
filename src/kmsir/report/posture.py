"""The report's "Posture review" section, from the run's last ``kms.audit`` step.

The step's outputs name its ``posture.json`` artifact (``posture``); the section is read from
that file alone (the bundle, never AWS): per practice the count of each status and the
failures with their resources, fix and the AWS page they cite; the waived failures with
reason and expiry; the checks that could not run with the permission they lacked; the rule
set and scope; and, when the review was compared with an earlier one, the trend (failures
per practice before and now, the new, fixed and unchanged failures) with the geometry of a
small bar chart.

Everything in ``posture.json`` is attacker-influenced (resource names, tag values quoted in
details): each text is cut to a bounded length with its controls made visible here
(``findings.shown``), every value a class name or link is made of is checked against what
it may be, lists are capped with the rest counted, and the templates escape the rest.
"""

from __future__ import annotations

import re
from typing import Any

from kmsir.errors import EvidenceError
from kmsir.evidence.manifest import Bundle
from kmsir.posture import PRACTICES, SEVERITIES, STATUSES, Check, Review, ordered
from kmsir.posture.table import practices
from kmsir.report.findings import shown

ACTION = "kms.audit"
#: A ``posture.json`` larger than this is not read (a review of thousands of keys is far less).
MAX_BYTES = 32 * 1024 * 1024
#: Failures listed per practice, resources per check, entries per other list.
MAX_FAILING = 100
MAX_RESOURCES = 50
MAX_ROWS = 200
#: A cited page the HTML report may link: AWS's documentation, in plain URL characters.
_AWS_DOC = re.compile(r"https://docs\.aws\.amazon\.com/[A-Za-z0-9._~/#%+=-]*")


def review_step(bundle: Bundle) -> tuple[str, str | None] | None:
    """The bundle's last succeeded ``kms.audit`` step: its id and the bundle-relative path
    of its ``posture.json`` (``None`` if it recorded none); ``None`` when there is no such
    step."""
    done = [s for s in bundle.view.steps.values() if s.action == ACTION and s.done_ok]
    if not done:
        return None
    step = done[-1]
    path = step.outputs.get("posture") if isinstance(step.outputs, dict) else None
    return step.id, path if isinstance(path, str) else None


def posture(bundle: Bundle) -> dict[str, Any] | None:
    """The section's data, or ``None`` when no ``kms.audit`` step succeeded; when its
    ``posture.json`` cannot be read, only ``step`` and ``unreadable`` (why)."""
    found = review_step(bundle)
    if found is None:
        return None
    step_id, path = found
    base: dict[str, Any] = {"step": shown(step_id, 200)}
    if path is None:
        return {**base, "unreadable": "the step recorded no posture.json"}
    try:
        file = bundle.artifact_path(path)
        if file.stat().st_size > MAX_BYTES:
            return {**base, "unreadable": f"{path} is larger than {MAX_BYTES:,} bytes"}
        review = Review.loads(file.read_bytes())
    except (EvidenceError, OSError, ValueError) as exc:
        return {**base, "unreadable": shown(exc, 300)}
    return {**base, **section(review)}


def section(review: Review) -> dict[str, Any]:
    """The section's data for ``review`` (see the module's docstring and README)."""
    checks = ordered(review.checks)
    summaries = practices(review)
    waived = [c for c in checks if c.status == "waived"]
    unchecked = [c for c in checks if c.status == "could-not-check"]
    return {
        "ruleset": {k: shown(review.ruleset.get(k) or "unknown", 64) for k in ("version", "date")},
        "scope": _scope(review.scope),
        "totals": {s: sum(1 for c in checks if c.status == s) for s in STATUSES},
        "practices": [
            {
                "number": p.number,
                "title": shown(p.title, 200),
                "doc": p.doc if p.number in PRACTICES else "",
                "counts": p.counts,
                "failing": [_check(c) for c in p.failing[:MAX_FAILING]],
                "more_failing": max(len(p.failing) - MAX_FAILING, 0),
            }
            for p in summaries
            if p.number in PRACTICES  # a forged file's other numbers are only counted
        ],
        "failing_total": sum(len(p.failing) for p in summaries),
        "waived": [{**_check(c), **_waiver(c.waiver or {})} for c in waived[:MAX_ROWS]],
        "more_waived": max(len(waived) - MAX_ROWS, 0),
        "unchecked": [_check(c) for c in unchecked[:MAX_ROWS]],
        "more_unchecked": max(len(unchecked) - MAX_ROWS, 0),
        "comparison": _comparison(review.comparison) if review.comparison else None,
    }


def _scope(scope: dict[str, Any]) -> dict[str, Any]:
    requested = scope.get("requested")
    if isinstance(requested, list):
        requested = ", ".join(str(r) for r in requested[:20]) + (
            f" and {len(requested) - 20} more" if len(requested) > 20 else ""
        )
    return {
        # a review that fanned out names every account and Region it covered
        "account": shown(scope.get("account") or "unknown", 2_000),
        "region": shown(scope.get("region") or "unknown", 1_000),
        "key_count": _count(scope.get("keys")),
        "customer_managed_keys": _count(scope.get("customer_managed_keys")),
        "requested": shown(requested or "all", 500),
        "started": shown(scope.get("started") or "", 64),
        "kmsir": shown(scope.get("kmsir") or "", 64),
        "simulated": scope.get("simulated") is True,
        # listings stopped at their bound: what was not all read
        "cut": [shown(c, 300) for c in (scope.get("cut") or [])[:MAX_ROWS]],
    }


def _check(check: Check) -> dict[str, Any]:
    """One entry as the templates show it."""
    return {
        "id": shown(check.id, 100),
        "title": shown(check.title, 300),
        "practice": check.practice,
        "status": check.status if check.status in STATUSES else "info",
        "severity": _severity(check.severity),
        "resources": [shown(r, 500) for r in check.resources[:MAX_RESOURCES]],
        "more_resources": max(len(check.resources) - MAX_RESOURCES, 0),
        "fix": shown(check.fix, 1_000),
        "doc": shown(check.doc, 300),
        "doc_link": check.doc if _AWS_DOC.fullmatch(check.doc) else "",
        "detail": shown(check.detail, 1_000),
        "missing": shown(check.missing or "", 200),
        "evidence": [shown(e, 300) for e in check.evidence[:20]],
    }


def _waiver(waiver: dict[str, Any]) -> dict[str, Any]:
    return {
        "reason": shown(waiver.get("reason") or "", 500),
        "expires": shown(waiver.get("expires") or "", 32),
        "where": shown(waiver.get("where") or "", 300),
        "pattern": shown(waiver.get("resource") or "", 300),
    }


def _comparison(comparison: dict[str, Any]) -> dict[str, Any]:
    """The trend: per practice before and now, the lists, and the chart's geometry."""
    raw_trend = comparison.get("trend")
    raw_trend = raw_trend if isinstance(raw_trend, dict) else {}
    trend = []
    for number, practice in PRACTICES.items():
        row = raw_trend.get(str(number))
        row = row if isinstance(row, dict) else {}
        before, now = _count(row.get("before")), _count(row.get("now"))
        trend.append(
            {
                "number": number,
                "title": practice.title,
                "before": before,
                "now": now,
                "change": now - before,
            }
        )
    lists = {
        name: _items(comparison.get(name))
        for name in ("new", "fixed", "unchanged", "waived", "not_rechecked")
    }
    return {
        "since": shown(comparison.get("since") or "", 64),
        "before_ruleset": shown(comparison.get("before_ruleset") or "", 64),
        "trend": trend,
        **{name: items[:MAX_ROWS] for name, items in lists.items()},
        "counts": {name: len(items) for name, items in lists.items()},
        "chart": trend_chart(trend),
    }


def _items(value: Any) -> list[dict[str, Any]]:
    rows = [r for r in value if isinstance(r, dict)] if isinstance(value, list) else []
    return [
        {
            "id": shown(r.get("id") or "", 100),
            "resource": shown(r.get("resource") or "", 500),
            "practice": _count(r.get("practice")),
            "severity": _severity(r.get("severity")),
            "title": shown(r.get("title") or "", 300),
        }
        for r in rows
    ]


def trend_chart(
    trend: list[dict[str, Any]], *, width: int = 640, height: int = 190
) -> dict[str, Any] | None:
    """Bars of failures per practice, before and now, as SVG geometry (numbers only); none
    when there were no failures either time."""
    peak = max((max(r["before"], r["now"]) for r in trend), default=0)
    if peak == 0:
        return None
    left, top, bottom = 36, 10, 34
    plot_w, plot_h = width - left - 10, height - top - bottom
    group = plot_w / len(trend)
    bar = round(group * 0.32, 2)
    axis = top + plot_h
    bars, labels = [], []
    for n, row in enumerate(trend):
        x0 = left + n * group + group * 0.14
        for offset, when in ((0.0, "before"), (bar + 2, "now")):
            value = row[when]
            h = round(value / peak * plot_h, 2)
            bars.append(
                {
                    "x": round(x0 + offset, 2),
                    "y": round(axis - h, 2),
                    "w": bar,
                    "h": h,
                    "when": when,
                    "title": f"practice {row['number']}: {value} failure(s) {when}",
                }
            )
        labels.append({"x": round(left + n * group + group / 2, 2), "text": str(row["number"])})
    return {
        "width": width,
        "height": height,
        "axis": axis,
        "left": left,
        "top": top,
        "peak": peak,
        "bars": bars,
        "labels": labels,
        "label_y": axis + 14,
    }


def _severity(value: Any) -> str:
    """A severity a class name may be made of (an unknown one is shown as info)."""
    return value if value in SEVERITIES else "info"


def _count(value: Any) -> int:
    """A count from the file: a non-negative int, anything else 0."""
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return min(max(value, 0), 10**9)

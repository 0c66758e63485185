"""The report's scope section: the accounts x Regions a run covered, which were reached and
which failed and why, per step that fanned out over them (``run.fanout``).

Built from the run's view alone: the scope the run-started entry recorded and each fanned-out
step's ``TargetResult`` records. Errors quote AWS (and role names an operator typed): they
reach the templates cut and with their control characters made visible (``shown``).
"""

from __future__ import annotations

from typing import Any

from kmsir.evidence.view import RunView
from kmsir.report.findings import shown

#: Failures listed per step (the rest are counted).
MAX_FAILED = 200


def scope(view: RunView) -> dict[str, Any] | None:
    """The section's data; ``None`` for a run without a scope (its own account and Region)."""
    recorded = getattr(view.meta, "scope", None) if view.meta is not None else None
    recorded = recorded if isinstance(recorded, dict) else {}
    if not recorded and not view.targets:
        return None
    accounts = _strings(recorded.get("accounts"))
    regions = _strings(recorded.get("regions"))
    for results in view.targets.values():
        accounts += [r.account for r in results if r.account not in accounts]
        regions += [r.region for r in results if r.region not in regions]
    place = {(a, r): n for n, (a, r) in enumerate((a, r) for a in accounts for r in regions)}
    steps = [
        _step(view, step_id, sorted(results, key=lambda r: place[(r.account, r.region)]))
        for step_id, results in view.targets.items()
    ]
    return {
        "accounts": [shown(a, 64) for a in accounts],
        "regions": [shown(r, 64) for r in regions],
        "caller_account": shown(recorded.get("caller_account") or "", 64),
        "role_name": shown(recorded.get("role_name") or "", 200),
        "org": recorded.get("org") is True,
        "excluded": [shown(a, 64) for a in _strings(recorded.get("excluded"))],
        "grid": _grid(view, accounts, regions),
        "steps": steps,
    }


def _step(view: RunView, step_id: str, results: list[Any]) -> dict[str, Any]:
    """One fanned-out step: how many targets it reached, which failed and why (in the
    scope's order: account by account, Regions in order)."""
    found = view.steps.get(step_id)
    failed = [r for r in results if r.status != "reached"]
    return {
        "id": shown(step_id, 200),
        "action": shown(found.action if found is not None else "", 100),
        "reached": len(results) - len(failed),
        "total": len(results),
        "reached_targets": [
            shown(f"{r.account}/{r.region}", 100) for r in results if r.status == "reached"
        ],
        "failed": [
            {
                "account": shown(r.account, 64),
                "region": shown(r.region, 64),
                "error": shown(r.error or "no reason recorded", 500),
            }
            for r in failed[:MAX_FAILED]
        ],
        "more_failed": max(len(failed) - MAX_FAILED, 0),
    }


def _grid(view: RunView, accounts: list[str], regions: list[str]) -> list[dict[str, Any]]:
    """One row per account, one cell per Region: ``reached`` (by every fanned-out step),
    ``failed`` (by none), ``partly`` (by some), ``not run`` (no step went there)."""
    seen: dict[tuple[str, str], set[str]] = {}
    for results in view.targets.values():
        for r in results:
            seen.setdefault((r.account, r.region), set()).add(r.status)
    rows = []
    for account in accounts:
        cells = []
        for region in regions:
            statuses = seen.get((account, region), set())
            if not statuses:
                cell = "not run"
            elif statuses == {"reached"}:
                cell = "reached"
            elif "reached" in statuses:
                cell = "partly"
            else:
                cell = "failed"
            cells.append(cell)
        rows.append({"account": shown(account, 64), "cells": cells})
    return rows


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value if isinstance(v, str)] if isinstance(value, list) else []

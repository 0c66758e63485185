"""The report's "Impact (blast radius)" section, from the run's last ``kms.blast-radius`` step.

What each containment option would have cost (who loses access, which resources become
unreadable, what stays usable in other Regions), per grant, what depends on the key and
which listings could not be checked. Read from the step's journaled outputs alone (the
bundle, never AWS). The outputs repeat text from AWS and CloudTrail, so every value is
taken as plain text of bounded size and its type checked: the templates escape it like
every other output.
"""

from __future__ import annotations

from typing import Any

from kmsir.evidence.view import RunView

ACTION = "kms.blast-radius"
#: The containment options, in the order the section lists them.
OPTIONS = ("revoke-grants", "disable", "quarantine", "schedule-deletion")
MAX_ROWS = 50
MAX_TEXT = 2000


def impact(view: RunView) -> dict[str, Any] | None:
    """The section's data, or ``None`` when no blast-radius step succeeded."""
    done = [s for s in view.steps.values() if s.action == ACTION and s.done_ok]
    if not done:
        return None
    step = done[-1]
    outputs = step.outputs if isinstance(step.outputs, dict) else {}
    verdicts = _mapping(outputs.get("verdicts"))
    ordered = [o for o in OPTIONS if o in verdicts] + sorted(set(verdicts) - set(OPTIONS))
    return {
        "step": step.id,
        "key_id": _text(outputs.get("key_id")),
        "summary": _text(outputs.get("summary")),
        "verdicts": [{"option": o, "text": verdicts[o].removeprefix(f"{o}: ")} for o in ordered][
            :MAX_ROWS
        ],
        "grants": [{"id": g, "text": t} for g, t in _mapping(outputs.get("grants")).items()][
            :MAX_ROWS
        ],
        "dependents": [
            {k: _text(row.get(k)) for k in ("kind", "name", "via", "note")}
            for row in _rows(outputs.get("dependents"))
        ],
        "unchecked": [
            {k: _text(row.get(k)) for k in ("service", "operation", "error")}
            for row in _rows(outputs.get("unchecked"))
        ],
        "cut": [_text(c) for c in outputs.get("cut") or [] if isinstance(c, str)][:MAX_ROWS],
    }


def _text(value: Any) -> str:
    return "" if value is None else str(value)[:MAX_TEXT]


def _mapping(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {_text(k)[:200]: _text(v) for k, v in list(value.items())[:MAX_ROWS]}


def _rows(value: Any) -> list[dict[str, Any]]:
    return [r for r in value if isinstance(r, dict)][:MAX_ROWS] if isinstance(value, list) else []

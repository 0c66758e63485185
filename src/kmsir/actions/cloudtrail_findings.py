"""The ``cloudtrail.findings`` action: KMS findings over the events a collect step kept.

It reads the collect step's ``events.jsonl.gz`` (no AWS call), cuts the incident window from
the baseline before it, and runs the rules of ``trail.findings`` over them. When the collect
step checked its trail log files against CloudTrail's digests (``trail-integrity.json``), a
failed check is one more finding, critical: "Trail log tampering" (``trail.finding_integrity``).
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from kmsir.actions.base import Action, ActionContext, Outcome, Params
from kmsir.actions.cloudtrail import iso
from kmsir.errors import ActionError
from kmsir.evidence.calls import Call
from kmsir.playbook.values import duration_seconds
from kmsir.trail import finding_integrity
from kmsir.trail import summary as summaries
from kmsir.trail.actors import actors
from kmsir.trail.events import decode_event
from kmsir.trail.fields import event_time
from kmsir.trail.finding import Finding, context_for
from kmsir.trail.findings import findings

if TYPE_CHECKING:
    from kmsir.aws.targets import Target

#: Actors behind the findings that the findings step lists in its outputs.
MAX_ACTORS = 20


class FindingsParams(Params):
    """Which collect step's events, and how the incident window is cut from the baseline."""

    events: str = Field(pattern=r"^[a-z][a-z0-9_]*(-[a-z0-9_]+)*$")
    key: str | None = Field(default=None, pattern=r"^arn:aws[a-z-]*:kms:.+:key/.+$")
    window: str = "24h"
    baseline_days: int = Field(default=30, ge=1, le=90)

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        duration_seconds(value)
        return value


class Findings(Action[FindingsParams]):
    """KMS findings over a collect step's events, most severe first, into ``findings.json``.

    ```yaml
    - id: findings
      action: cloudtrail.findings
      with: {events: collect, window: 24h}
    ```
    The last ``window`` of the events is the incident window; the ``baseline_days`` before it
    are what "new principal", "new source" and "volume spike" compare against.
    Outputs: ``count``, ``by_severity``, ``top`` (the first ten), ``actors`` (who is behind
    the findings, most severe first: ``principal``, ``type``, ``account``, ``user`` or
    ``role``, ``access_keys``, ``severity``, ``findings``: how many), ``artifact``. Over a
    collect that fanned out over accounts and Regions, each target's events are judged on
    their own and ``findings.json`` holds them all, each with its ``account`` and ``region``.
    When the collect step checked its trail log files against CloudTrail's digests and one
    failed (``trail-integrity.json``), the first finding is the critical "Trail log
    tampering", naming what failed.
    """

    name = "cloudtrail.findings"
    params = FindingsParams
    outputs = MappingProxyType(
        {
            "count": "int",
            "by_severity": "dict",
            "top": "list[dict]",
            "actors": "list[dict]",
            "artifact": "str",
            "window": "dict",
            "skipped": "dict",
            "targets": "list[dict]",
        }
    )

    def api_calls(self, params: FindingsParams) -> list[Call]:
        return []

    def fans_out(self, params: FindingsParams, steps: Mapping[str, Any]) -> bool:
        earlier = steps.get(params.events)
        return isinstance(earlier, Mapping) and "targets" in earlier

    def merge(
        self,
        ctx: ActionContext,
        results: Mapping[Target, Outcome],
        failed: Mapping[Target, str],
    ) -> Outcome:
        """One ``findings.json`` at the step's root, each finding naming its account and
        Region: the report reads that one file."""
        from kmsir.actions import merges

        def read(target: Target) -> bytes | None:
            return ctx.artifacts.earlier(ctx.step_id, f"{target.label}/findings.json")

        data = merges.findings(results, read)
        path = ctx.artifacts.write("findings.json", data)
        return merges.finding_outputs(results, json.loads(data), path)

    def run(self, ctx: ActionContext, params: FindingsParams) -> Outcome:
        data = ctx.artifacts.earlier(params.events, "events.jsonl.gz")
        if data is None:
            raise ActionError(f"step {params.events!r} collected no events.jsonl.gz")
        events: list[dict[str, Any]] = []
        skipped: Counter[str] = Counter()
        lines = gzip.decompress(data)
        for line in lines.splitlines():
            event = decode_event(line) if line.strip() else None
            if isinstance(event, str):  # collect wrote it; an edited bundle may not have
                skipped[event] += 1
            elif event is not None:
                events.append(event)
        now = ctx.now()
        window_start = now - _delta(params.window)
        oldest = window_start - _delta(f"{params.baseline_days}d")
        # an event without a valid time cannot be shown to be too old: the rules see it
        kept = [e for e in events if (event_time(e) or now) >= oldest]
        found = findings(kept, context_for(kept, params.key, window_start))
        tampering = _tampering(ctx, params.events, skipped)
        if tampering is not None:  # critical, and no event of its own: the first one
            found = [tampering, *found]
        listed = [f.to_json() for f in found]
        path = ctx.write_json("findings.json", listed)
        # the events behind the findings as the report shows them: it need not read them all
        behind = summaries.interest_summary(lines, data, summaries.wanted_ids(listed))
        if behind is not None:
            ctx.artifacts.write(summaries.INTEREST_NAME, behind)
        by_severity = Counter(f.severity for f in found)
        top = [{k: v for k, v in f.to_json().items() if k != "details"} for f in found[:10]]
        summary = f"{len(found)} finding(s)" + (
            ": "
            + ", ".join(
                f"{n} {s}" for s, n in sorted(by_severity.items(), key=lambda i: -_rank(i[0]))
            )
            if found
            else ""
        )
        if found:
            ctx.reporter.table(
                f"Top findings ({min(len(found), TABLE_ROWS)} of {len(found)}, worst first)",
                ("severity", "title", "principal", "first seen"),
                [
                    (f.severity, f.title, f.principal, f.event_time)
                    for f in sorted(found, key=lambda f: (-_rank(f.severity), f.event_time))[
                        :TABLE_ROWS
                    ]
                ],
            )
        return Outcome(
            outputs={
                "count": len(found),
                "by_severity": dict(by_severity),
                "top": top,
                "actors": actors(found, kept)[:MAX_ACTORS],
                "artifact": path,
                "window": {"since": iso(window_start), "until": iso(now)},
                "skipped": dict(skipped),
            },
            summary=summary,
        )


#: Findings shown at the terminal when the step ends (all of them are in findings.json).
TABLE_ROWS = 10


def _tampering(ctx: ActionContext, step_id: str, skipped: Counter[str]) -> Finding | None:
    """The "Trail log tampering" finding of the collect step ``step_id``'s log file check,
    if it made one and something failed; an unreadable ``trail-integrity.json`` is counted
    in ``skipped`` (the collect step wrote it: an edited bundle may not have)."""
    data = ctx.artifacts.earlier(step_id, finding_integrity.INTEGRITY_NAME)
    if data is None:
        return None
    try:
        integrity = finding_integrity.read(data)
    except ValueError as exc:
        skipped[f"{finding_integrity.INTEGRITY_NAME} unreadable: {exc}"] += 1
        return None
    outputs = ctx.steps.get(step_id)
    checked = outputs.get("integrity") if isinstance(outputs, Mapping) else None
    path = checked.get("artifact") if isinstance(checked, Mapping) else None
    return finding_integrity.tampering_finding(integrity, path if isinstance(path, str) else None)


def _rank(severity: str) -> int:
    return ["info", "low", "medium", "high", "critical"].index(severity)


def _delta(duration: str) -> timedelta:
    return timedelta(seconds=duration_seconds(duration))

"""Render a bundle's incident report from the bundle alone (never AWS).

``build_context`` turns the journal and manifest into a plain template context (documented in
the README); ``render`` feeds it to a Jinja2 template from ``templates/`` or the user's own.
Everything that came from AWS or CloudTrail is attacker-controlled, so the Markdown filters
neutralise it (no raw HTML, no links, no table breaking).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Undefined

from kmsir import evidence, resources
from kmsir.errors import UsageError

FORMATS = ("md",)
#: Journal entries too fine-grained for the timeline (they are counted or indexed instead).
_NOT_IN_TIMELINE = frozenset(
    {"api-call", "api-intent", "artifact", "artifact-intent", "before-change", "step-started"}
)

#: Characters that could start Markdown markup inline: emphasis, code, links/images ([ ]),
#: raw HTML and autolinks (<), table cells (|), strikethrough (~) and escapes themselves.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|~])")


def md_inline(value: Any) -> str:
    """Text safe inside a Markdown paragraph or table cell: one line, markup escaped."""
    text = "" if value is None or isinstance(value, Undefined) else str(value)
    text = " ".join(text.split())  # newlines and tabs would end a table row
    return _MD_SPECIAL.sub(r"\\\1", text)


def md_code(value: Any) -> str:
    """Text as inline code (ids, ARNs, hashes): backticks and pipes cannot escape it."""
    empty = value is None or isinstance(value, Undefined)
    text = " ".join(("" if empty else str(value)).split())
    text = text.replace("`", "'").replace("|", "\\|")
    return f"`{text}`" if text else ""


@dataclass(frozen=True)
class StepView:
    """One step as the report shows it."""

    id: str
    name: str
    action: str
    phase: str | None
    status: str
    summary: str
    started: str | None
    finished: str | None
    approved_by: str | None
    reason: str | None
    inverse: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    outputs: dict[str, Any]
    api_calls: list[dict[str, Any]]


def _steps(entries: list[dict[str, Any]]) -> list[StepView]:
    order: list[str] = []
    by_step: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        step = entry.get("step")
        if step is None:
            continue
        if step not in by_step:
            order.append(step)
            by_step[step] = []
        by_step[step].append(entry)
    views = []
    for step_id in order:
        items = by_step[step_id]
        started = next((e for e in items if e["type"] == "step-started"), None)
        end = next(
            (
                e
                for e in reversed(items)
                if e["type"] in ("step-succeeded", "step-failed", "step-skipped")
            ),
            None,
        )
        decision = next(
            (e for e in reversed(items) if e["type"] == "decision" and "calls" in e["data"]), None
        )
        meta = (started or end or items[0])["data"]
        data = end["data"] if end else {}
        if end is None:
            status, summary = "incomplete", "started, no outcome recorded"
        elif end["type"] == "step-succeeded":
            status, summary = data.get("status", "succeeded"), data.get("summary", "")
        elif end["type"] == "step-failed":
            status, summary = "failed", data.get("error", "")
        else:
            status, summary = data.get("status", "skipped"), data.get("reason", "")
        views.append(
            StepView(
                id=step_id,
                name=meta.get("name") or step_id,
                action=meta.get("action", ""),
                phase=meta.get("phase"),
                status=status,
                summary=summary,
                started=started["ts"] if started else None,
                finished=end["ts"] if end else None,
                approved_by=decision["data"].get("by") if decision else None,
                reason=decision["data"].get("reason") if decision else None,
                inverse=data.get("inverse"),
                before=data.get("before"),
                after=data.get("after"),
                outputs=data.get("outputs") or {},
                api_calls=[e["data"] for e in items if e["type"] == "api-call"],
            )
        )
    return views


def _snapshots(steps: Iterable[StepView]) -> list[StepView]:
    return [s for s in steps if s.action == "kms.snapshot" and s.status == "succeeded"]


def build_context(bundle: evidence.Bundle) -> dict[str, Any]:
    """The template context: everything a report template may use (see README)."""
    entries = bundle.entries
    manifest = bundle.manifest
    steps = _steps(entries)
    snapshots = _snapshots(steps)
    timeline = [
        {"ts": e["ts"], "type": e["type"], "step": e.get("step"), "data": e["data"]}
        for e in entries
        if e["type"] not in _NOT_IN_TIMELINE
        # a note's or question's outcome repeats the note or decision entry just before it
        and not (e["type"] == "step-succeeded" and e["data"].get("action") in ("note", "ask"))
    ]
    collected = next(
        (s.outputs for s in steps if s.action == "cloudtrail.collect" and s.status == "succeeded"),
        None,
    )
    return {
        "manifest": manifest,
        "simulated": bool(manifest.get("simulated")),
        "check_mode": manifest.get("mode") == "check",
        "steps": steps,
        "changes": [s for s in steps if s.before is not None and s.action != "kms.snapshot"],
        "key_before": snapshots[0].outputs if snapshots else None,
        "key_after": snapshots[-1].outputs if len(snapshots) > 1 else None,
        "cloudtrail": collected,
        "notes": [e for e in timeline if e["type"] == "note"],
        "decisions": [e for e in timeline if e["type"] == "decision"],
        "timeline": timeline,
        "artifacts": manifest.get("artifacts", []),
        "api_calls": sum(1 for e in entries if e["type"] == "api-call"),
        "journal": manifest.get("journal")
        or {"entries": len(entries), "head": entries[-1]["hash"] if entries else None},
    }


def _environment(template_dir: Path) -> Any:
    from jinja2 import ChainableUndefined, Environment, FileSystemLoader

    env = Environment(
        loader=FileSystemLoader(str(template_dir)),
        autoescape=False,  # noqa: S701 - Markdown: the md filters neutralise attacker text
        # A bundle may come from an older kmsir or a failed run: a missing field renders
        # empty rather than failing the whole report.
        undefined=ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = md_inline
    env.filters["code"] = md_code
    return env


def render(bundle_root: Path, *, fmt: str = "md", template: Path | None = None) -> str:
    """Render the report of the bundle at ``bundle_root``."""
    from jinja2 import TemplateError

    if fmt not in FORMATS:
        raise UsageError(f"unknown report format {fmt!r}; known: {', '.join(FORMATS)}")
    bundle = evidence.Bundle.open(bundle_root)
    if template is not None:
        if not template.is_file():
            raise UsageError(f"--template {template}: no such file")
        env, name = _environment(template.parent), template.name
    else:
        env, name = _environment(resources.templates_dir()), f"report.{fmt}.j2"
    try:
        return str(env.get_template(name).render(build_context(bundle)))
    except TemplateError as exc:
        lineno = getattr(exc, "lineno", None)
        where = f" (line {lineno})" if lineno else ""
        raise UsageError(f"report template {name}{where}: {exc}") from None


def write(
    bundle_root: Path, *, fmt: str = "md", template: Path | None = None, out: Path | None = None
) -> Path:
    """Render and write the report: into the bundle (a derived file) or to ``out``."""
    text = render(bundle_root, fmt=fmt, template=template).encode()
    if out is None:
        target = bundle_root / f"report.{fmt}"
        evidence.replace_derived(target, text)
        return target
    try:
        out.write_bytes(text)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write: {exc.strerror or exc}") from None
    return out

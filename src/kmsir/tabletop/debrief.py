"""The facilitator's debrief of an exercise, and two teams side by side.

``write`` renders an ``Exercise`` (``exercise.load``) as Markdown and HTML from the built-in
``debrief.md.j2`` and ``debrief.html.j2``: each decision against the expected one (right,
acceptable, wrong, not reached, with the why), the times against the targets, the evidence
never looked at, the injects, the facilitator's observations, the ground truth, the best
practices that would have prevented or shortened the incident (named as the posture review
names them) and the score with its rubric beside it; written readable by its owner alone
(0600: it holds every hidden part). ``compare`` puts two teams' debriefs
side by side (``debrief.compare.md.j2``). Templates render in the report's bounded sandbox:
the HTML one autoescaped under a strict CSP, the Markdown ones through the report's filters
(journal text is untrusted). Nothing is ever written into a bundle: the players' bundle
keeps its one writer, and a facilitator's bundle is evidence too.
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kmsir import resources
from kmsir.errors import TemplateError, UsageError
from kmsir.posture import PRACTICES
from kmsir.tabletop import score as scoring
from kmsir.tabletop.exercise import IN_PROGRESS, Exercise, Judged
from kmsir.tabletop.progress import duration

__all__ = ["compare", "context", "out_paths", "render", "render_compare", "write"]

#: How each verdict reads in the debrief.
VERDICT_TEXT = {
    "right": "right",
    "acceptable": "acceptable",
    "wrong": "wrong",
    "not-reached": "not reached",
    "not-applicable": "not applicable",
    "pending": "not yet",
    "unscored": "not scored",
}


def context(ex: Exercise) -> dict[str, Any]:
    """The template context of one exercise's debrief (plain data)."""
    judged = scoring.score(ex)
    targets = ex.targets
    times = [
        ("identify", "Identify (first finding)", ex.timing.identify_seconds),
        ("contain", "Contain (first containment that succeeded)", ex.timing.contain_seconds),
        ("recover", "Recover", ex.timing.recover_seconds),
    ]
    return {
        "exercise": {
            "scenario": ex.scenario_id,
            "title": ex.title,
            "team": ex.team or "not named",
            "run_id": ex.run_id,
            "incident": ex.incident,
            "bundle": str(ex.bundle) if ex.bundle else None,
            "started": ex.started,
            "status": ex.status,
            "clock": duration(ex.clock_seconds),
        },
        "proof": ex.proof,
        "warnings": list(ex.warnings),
        "score": judged.as_dict(),
        "decisions": [_decision(d) for d in ex.decisions],
        "times": [
            {
                "what": label,
                "took": duration(seconds),
                "target": _target(targets, name),
            }
            for name, label, seconds in times
        ],
        "evidence_missed": [asdict(e) for e in ex.evidence if not e.seen],
        "evidence_seen": [asdict(e) for e in ex.evidence if e.seen],
        "injects": [asdict(f) for f in ex.injects],
        "injects_left": [asdict(n) for n in ex.next_injects],
        "injects_left_label": (
            "Not fired (the run ended)" if ex.status != IN_PROGRESS else "Not fired yet"
        ),
        "observations": [asdict(o) for o in ex.observations],
        "ground_truth": ex.ground_truth,
        "practices": [
            {
                "number": number,
                "title": PRACTICES[number].title if number in PRACTICES else f"Practice {number}",
                "doc": PRACTICES[number].doc if number in PRACTICES else None,
                "how": how,
            }
            for number, how in ex.prevented_by
        ],
        "timeline": [asdict(line) for line in ex.timeline],
        "facilitator_bundles": [str(p) for p in ex.facilitator_bundles],
    }


def _decision(d: Judged) -> dict[str, Any]:
    return {
        "step": d.step,
        "answer": d.answer,
        "by": d.by,
        "took": duration(d.seconds) if d.answer is not None else "",
        "expected": d.expected,
        "alternatives": list(d.alternatives),
        "why": d.why,
        "verdict": d.verdict,
        "verdict_text": VERDICT_TEXT.get(d.verdict, d.verdict) + (" (late)" if d.late else ""),
        "within": f"{d.within_minutes:g} min" if d.within_minutes is not None else None,
    }


def _target(targets: Any, name: str) -> str | None:
    minutes = getattr(targets, f"{name}_minutes", None) if targets is not None else None
    return f"{minutes:g} min" if minutes is not None else None


def _render(template: str, data: dict[str, Any], *, html: bool) -> str:
    from kmsir.playbook import templating  # jinja2, imported when a debrief is rendered
    from kmsir.report import FILTERS

    path = resources.templates_dir() / template
    try:
        return templating.render_report(
            path.read_text(encoding="utf-8"), data, name=template, html=html, filters=FILTERS
        )
    except TemplateError as exc:
        raise UsageError(str(exc)) from None


def render(ex: Exercise, fmt: str = "md") -> str:
    """The debrief of ``ex`` as Markdown (``md``) or HTML (``html``)."""
    if fmt not in ("md", "html"):
        raise UsageError(f"unknown debrief format {fmt!r}; known: md, html")
    return _render(f"debrief.{fmt}.j2", context(ex), html=fmt == "html")


def out_paths(out: Path | None, run_id: str | None, cwd: Path) -> tuple[Path, Path]:
    """FILE.md and FILE.html for ``--out FILE`` (a ``.md`` or ``.html`` ending dropped), or
    ``debrief-<run-id>.md/.html`` in ``cwd``."""
    if out is None:
        out = cwd / f"debrief-{run_id or 'run'}"
    if out.suffix in (".md", ".html"):
        out = out.with_suffix("")
    return out.with_name(out.name + ".md"), out.with_name(out.name + ".html")


def refuse_inside(bundles: list[Path], out: Path) -> None:
    """Refuse to write ``out`` inside one of the ``bundles`` (or through a hard link to one
    of their files): evidence is never overwritten, nor a file planted that its journal does
    not record."""
    target = out.resolve()
    for bundle in bundles:
        root = bundle.resolve()
        inside = target == root or root in target.parents
        if not inside and target.is_file() and target.stat().st_nlink > 1:
            inside = any(
                p.is_file() and not p.is_symlink() and p.samefile(target) for p in root.rglob("*")
            )
        if inside:
            raise UsageError(
                f"--out {out}: inside the bundle {bundle}; a debrief is written outside every "
                "bundle (give another --out)"
            )


def write(ex: Exercise, *, out: Path | None = None, cwd: Path | None = None) -> tuple[Path, Path]:
    """Write the debrief of ``ex`` as Markdown and HTML (``out_paths``), never into the
    players' bundle or a facilitator's; returns the two paths."""
    md, html = out_paths(out, ex.run_id, cwd or Path.cwd())
    bundles = [b for b in (ex.bundle, *ex.facilitator_bundles) if b is not None]
    for path in (md, html):
        refuse_inside(bundles, path)
    texts = {md: render(ex, "md"), html: render(ex, "html")}
    for path, text in texts.items():
        private_text(path, text)
    return md, html


def private_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner alone (0600, an existing file
    included): a debrief holds every hidden part of the scenario."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), 0o600)
            file.write(text)
    except OSError as exc:
        raise UsageError(f"--out {path}: cannot write: {exc.strerror or exc}") from None


#: Never write through a symbolic link planted at the debrief's path.
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def compare(a: Exercise, b: Exercise) -> dict[str, Any]:
    """Two teams' debriefs side by side: the template context of ``debrief.compare.md.j2``."""
    left, right = context(a), context(b)
    rows: list[dict[str, Any]] = []

    def row(label: str, one: Any, two: Any) -> None:
        rows.append(
            {"label": label, "a": "" if one is None else one, "b": "" if two is None else two}
        )

    row("Scenario", a.scenario_id, b.scenario_id)
    row("Run", a.run_id, b.run_id)
    row("Status", a.status, b.status)
    row("Score (out of 100)", left["score"]["total"], right["score"]["total"])
    parts_a = {p["name"]: p for p in left["score"]["parts"]}
    parts_b = {p["name"]: p for p in right["score"]["parts"]}
    for name, points in scoring.PARTS.items():
        if name in parts_a or name in parts_b:
            row(f"{name.capitalize()} ({points})", _part(parts_a, name), _part(parts_b, name))
    for (_, label, _), ta, tb in zip(_TIMES, left["times"], right["times"], strict=True):
        row(label, ta["took"], tb["took"])
    decided_a = {d["step"]: d for d in left["decisions"]}
    decided_b = {d["step"]: d for d in right["decisions"]}
    for step in dict.fromkeys([*decided_a, *decided_b]):
        da, db = decided_a.get(step), decided_b.get(step)
        expected = (da or db or {}).get("expected")
        label = f"Decision {step}" + (f" (expected {expected})" if expected else "")
        row(label, _answer(da), _answer(db))
    missed_a = {e["what"] for e in left["evidence_missed"]}
    missed_b = {e["what"] for e in right["evidence_missed"]}
    for item in [*(e.what for e in a.evidence), *(e.what for e in b.evidence)]:
        if any(r["label"] == f"Evidence: {item}" for r in rows):
            continue
        row(f"Evidence: {item}", _seen(item, missed_a, a), _seen(item, missed_b, b))
    row("Injects fired", len(a.injects), len(b.injects))
    row("Observations", len(a.observations), len(b.observations))
    warnings = list(dict.fromkeys([*left["warnings"], *right["warnings"]]))
    if a.scenario_id != b.scenario_id:
        warnings.insert(0, "the two runs played different scenarios")
    return {
        "teams": _names(a, b),
        "rows": rows,
        "warnings": warnings,
        "rubric": list(scoring.RUBRIC),
    }


_TIMES = (
    ("identify", "Time to identify", None),
    ("contain", "Time to contain", None),
    ("recover", "Time to recover", None),
)


def _names(a: Exercise, b: Exercise) -> dict[str, str]:
    """The two columns' names: the teams', with their run ids when that alone is ambiguous."""
    one, two = a.team or "team A", b.team or "team B"
    if one == two:
        one, two = f"{one} ({a.run_id})", f"{two} ({b.run_id})"
    return {"a": one, "b": two}


def _part(parts: dict[str, dict[str, Any]], name: str) -> str:
    part = parts.get(name)
    return f"{part['points']:g} ({part['detail']})" if part else "not judged"


def _answer(decision: dict[str, Any] | None) -> str:
    if decision is None:
        return "not in this run"
    if decision["answer"] is None:
        return str(decision["verdict_text"])
    return f"{decision['answer']} ({decision['verdict_text']}, {decision['took']})"


def _seen(item: str, missed: set[str], ex: Exercise) -> str:
    if not any(e.what == item for e in ex.evidence):
        return "not asked"
    return "not seen" if item in missed else "seen"


def render_compare(a: Exercise, b: Exercise) -> str:
    """The Markdown table of two teams' debriefs side by side."""
    return _render("debrief.compare.md.j2", compare(a, b), html=False)

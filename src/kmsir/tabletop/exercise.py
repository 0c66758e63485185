"""A tabletop exercise as the room, the facilitator and the debrief see it.

``load`` projects a players' bundle (its ``RunView``: ``evidence.view.fold``, the one reading
of a journal), the scenario it was played in (found through the run's ``sandbox.source``;
a fingerprint that no longer matches is a warning) and the facilitator's bundles that follow
it (``<evidence-dir>/<incident>-facilitator/*``, or given) into an ``Exercise``: plain,
frozen facts, which ``score`` judges and ``debrief`` writes up. Two JSON-able views are what
the room page and the facilitator's screen render: ``players_view`` holds nothing of the
scenario's hidden parts (not even the expected answers), ``facilitator_view`` adds them.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kmsir.errors import KmsirError, UsageError
from kmsir.evidence.bundle import JOURNAL, canonical, read_journal, sha256_hex
from kmsir.evidence.stepview import Seen
from kmsir.evidence.view import RunView
from kmsir.sandbox import scenario as scenarios
from kmsir.sandbox.scenario_model import Scenario
from kmsir.tabletop import channel, hidden, progress
from kmsir.tabletop.hidden import (
    VERDICTS,
    Evidence,
    Judged,
    NextInject,
    Observation,
    Targets,
)
from kmsir.tabletop.progress import Finding, Fired, KeyState, Line, Timing

__all__ = [
    "VERDICTS",
    "Evidence",
    "Exercise",
    "Judged",
    "NextInject",
    "Observation",
    "Targets",
    "facilitator_view",
    "load",
    "players_view",
]


@dataclass(frozen=True)
class Exercise:
    """One team's run of a scenario, as facts (see the module's docstring)."""

    scenario_id: str
    title: str
    briefing: str
    team: str | None = None
    run_id: str | None = None
    incident: str | None = None
    bundle: Path | None = None
    started: str | None = None
    status: str = "incomplete"
    clock_seconds: float | None = None
    current_step: str | None = None
    timeline: tuple[Line, ...] = ()
    keys: tuple[KeyState, ...] = ()
    findings: tuple[Finding, ...] = ()
    injects: tuple[Fired, ...] = ()
    decisions: tuple[Judged, ...] = ()
    evidence: tuple[Evidence, ...] = ()
    timing: Timing = field(default_factory=Timing)
    targets: Targets | None = None
    ground_truth: dict[str, Any] | None = None
    prevented_by: tuple[tuple[int, str], ...] = ()
    next_injects: tuple[NextInject, ...] = ()
    observations: tuple[Observation, ...] = ()
    facilitator_bundles: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()


def load(
    bundle: Path,
    *,
    scenario: Scenario | None = None,
    facilitator: list[Path] | None = None,
    now: datetime | None = None,
) -> Exercise:
    """The exercise the players' ``bundle`` tells of (as it stands: a live run is read as far
    as its journal goes); ``scenario`` defaults to the one the run was played in,
    ``facilitator`` to the facilitator's bundles found beside it; ``now``: the clock of a run
    that goes on."""
    now = now or datetime.now(timezone.utc)
    view = read_journal(bundle / JOURNAL).view()
    if not view.lines:
        raise UsageError(f"{bundle}: not an evidence bundle (no journal entries)")
    link = view.meta.facilitates if view.meta is not None else None
    if isinstance(link, dict):
        raise UsageError(
            f"{bundle}: a facilitator's bundle; give the players' bundle it follows "
            f"({link.get('bundle')})"
        )
    warnings: list[str] = []
    if scenario is None:
        scenario = _scenario(view, warnings)
    elif _fingerprint(view) not in (None, world_fingerprint(scenario)):
        warnings.append(_MISMATCH.format(scenario.id))
    found = facilitator if facilitator is not None else facilitators(bundle, view.run_id)
    facilitation: list[Seen] = []
    for path in found:
        actions = _facilitation(path, view.run_id)
        if actions is None:
            warnings.append(f"{path} does not follow this run: its actions are left out")
        facilitation += actions or []
    made = progress.decisions(view)
    fired = progress.injects(view)
    end = view.finished.ts if view.finished is not None else None
    clock = progress.seconds_between(view.started, end or progress.iso(now))
    meta = view.meta
    return Exercise(
        scenario_id=scenario.id if scenario else str(meta.scenario if meta else ""),
        title=scenario.title if scenario else "",
        briefing=scenario.briefing if scenario else "",
        team=_team(bundle, view, scenario),
        run_id=view.run_id,
        incident=meta.incident if meta else None,
        bundle=bundle,
        started=view.started,
        status=view.status,
        clock_seconds=clock,
        current_step=progress.current_step(view),
        timeline=tuple(progress.timeline(view, fired)),
        keys=tuple(progress.keys(view)),
        findings=tuple(progress.findings(view)),
        injects=tuple(fired),
        decisions=tuple(hidden.judge(view, made, scenario)),
        evidence=tuple(hidden.evidence(view, scenario)),
        timing=progress.timing(view),
        targets=hidden.targets(scenario),
        ground_truth=(
            scenario.ground_truth.model_dump(mode="json")
            if scenario and scenario.ground_truth
            else None
        ),
        prevented_by=tuple((p.practice, p.how) for p in scenario.prevented_by) if scenario else (),
        next_injects=tuple(hidden.next_injects(view, scenario, fired, facilitation, now)),
        observations=tuple(hidden.observations(facilitation)),
        facilitator_bundles=tuple(found),
        warnings=tuple(warnings),
    )


_MISMATCH = (
    "scenario {} has changed since this run was played (its world fingerprint "
    "differs): what is expected of the team may not match the world it saw"
)


def world_fingerprint(scenario: Scenario) -> str:
    """The fingerprint a run records of its scenario (``Sandbox.fingerprint``)."""
    return sha256_hex(canonical(scenario.world_dump()))


def _fingerprint(view: RunView) -> str | None:
    sandbox = view.meta.sandbox if view.meta is not None else None
    value = sandbox.get("scenario_sha256") if isinstance(sandbox, dict) else None
    return str(value) if value else None


def _scenario(view: RunView, warnings: list[str]) -> Scenario | None:
    """The scenario the run was played in, from its ``sandbox.source``; ``None`` (with a
    warning) when it cannot be found or loaded."""
    sandbox = view.meta.sandbox if view.meta is not None else None
    source = sandbox.get("source") if isinstance(sandbox, dict) else None
    source = source or (view.meta.scenario if view.meta is not None else None)
    if not source:
        warnings.append("this run was not played in a scenario: nothing to judge")
        return None
    try:
        found = scenarios.load(str(source))
    except KmsirError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        warnings.append(f"scenario {source}: cannot load it ({first})")
        return None
    if _fingerprint(view) not in (None, world_fingerprint(found)):
        warnings.append(_MISMATCH.format(found.id))
    return found


def _team(bundle: Path, view: RunView, scenario: Scenario | None) -> str | None:
    """The team: as the tabletop session recorded it (``channel``), else from the tabletop's
    incident id ``tabletop-<scenario>-<team>``."""
    with contextlib.suppress(KmsirError, OSError, ValueError):
        record = channel.find(bundle.resolve().parent.parent, bundle).record()
        for run in record.get("runs") or []:
            if isinstance(run, dict) and run.get("run_id") == view.run_id and run.get("team"):
                return str(run["team"])
    incident = view.meta.incident if view.meta is not None else ""
    prefix = f"tabletop-{scenario.id if scenario else ''}-"
    if scenario is not None and incident.startswith(prefix):
        return incident[len(prefix) :] or None
    return None


def facilitators(bundle: Path, run_id: str | None) -> list[Path]:
    """The facilitator's bundles that follow the run ``run_id`` of ``bundle``: under
    ``<evidence-dir>/<incident>-facilitator/``, their run-started ``facilitates.run_id``."""
    folder = bundle.parent.parent / f"{bundle.parent.name}-facilitator"
    if run_id is None or not folder.is_dir():
        return []
    return [
        path
        for path in sorted(folder.iterdir())
        if (path / JOURNAL).is_file() and _facilitation(path, run_id) is not None
    ]


def _facilitation(path: Path, run_id: str | None) -> list[Seen] | None:
    """What the facilitator did in the bundle at ``path``; ``None`` if it is no facilitator's
    bundle of the run ``run_id``."""
    view = read_journal(path / JOURNAL).view()
    if not view.lines:
        return None
    link = view.meta.facilitates if view.meta is not None else None
    if not isinstance(link, dict) or (run_id is not None and link.get("run_id") != run_id):
        return None
    return list(view.facilitation)


# -- the two views -------------------------------------------------------------------------


def players_view(ex: Exercise) -> dict[str, Any]:
    """What the room sees: the scenario's title and briefing and what the world did. Nothing
    of the hidden parts (ground truth, expected answers, evidence to see, targets)."""
    return {
        "scenario": {"id": ex.scenario_id, "title": ex.title, "briefing": ex.briefing},
        "team": ex.team,
        "run_id": ex.run_id,
        "started": ex.started,
        "clock_seconds": ex.clock_seconds,
        "status": ex.status,
        "current_step": ex.current_step,
        "timeline": [asdict(line) for line in ex.timeline],
        "keys": [asdict(key) for key in ex.keys],
        "findings": [asdict(finding) for finding in ex.findings],
        "injects": [{"at": f.at, "say": f.say, "trigger": f.trigger} for f in ex.injects],
    }


def facilitator_view(ex: Exercise) -> dict[str, Any]:
    """The players' view and what the facilitator alone knows: the ground truth, each
    decision against the expected one, the next injects, the evidence seen or not, the
    times, the observations and the score so far."""
    from kmsir.tabletop import score

    judged = score.score(ex)
    return {
        **players_view(ex),
        "ground_truth": ex.ground_truth,
        "decisions": [
            {
                "step": d.step,
                "answer": d.answer,
                "by": d.by,
                "at": d.at,
                "seconds": d.seconds,
                "expected": d.expected,
                "alternatives": list(d.alternatives),
                "why": d.why,
                "verdict": d.verdict,
                "late": d.late,
            }
            for d in ex.decisions
        ],
        "next_injects": [asdict(n) for n in ex.next_injects],
        "evidence": [{"what": item.what, "seen": item.seen} for item in ex.evidence],
        "timing": asdict(ex.timing),
        "observations": [asdict(o) for o in ex.observations],
        "score": judged.as_dict(),
        "warnings": list(ex.warnings),
    }

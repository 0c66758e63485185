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

from kmsir.errors import KmsirError, TamperedError, UsageError
from kmsir.evidence.bundle import JOURNAL, PLAYBOOK_COPY, canonical, read_journal, sha256_hex
from kmsir.evidence.stepview import Seen
from kmsir.evidence.view import RunView
from kmsir.playbook import yamlsafe
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
    "IN_PROGRESS",
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
    status: str = "in progress"
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
    #: For a debrief of a run whose end is not proven: the line that says so, else ``None``.
    proof: str | None = None


def load(
    bundle: Path,
    *,
    scenario: Scenario | None = None,
    facilitator: list[Path] | None = None,
    now: datetime | None = None,
    debrief: bool = False,
) -> Exercise:
    """The exercise the players' ``bundle`` tells of (as it stands: a live run is read as far
    as its journal goes); ``scenario`` defaults to the one the run was played in,
    ``facilitator`` to the facilitator's bundles found beside it; ``now``: the clock of a run
    that goes on. For a ``debrief`` the bundle is verified first (``TamperedError`` when it
    was altered; an unproven end is said in ``proof``) and an unfinished run's clock stops
    at its last journal entry. Refuses (``UsageError``) a bundle that is no tabletop run."""
    now = now or datetime.now(timezone.utc)
    proof = None
    if debrief:
        view, proof = _verified(bundle)
    else:
        view = read_journal(bundle / JOURNAL).view()
    if not view.lines:
        raise UsageError(f"{bundle}: not an evidence bundle (no journal entries)")
    meta = view.meta
    link = meta.facilitates if meta is not None else None
    if isinstance(link, dict):
        raise UsageError(
            f"{bundle}: a facilitator's bundle; give the players' bundle it follows "
            f"({link.get('bundle')})"
        )
    recorded = meta.sandbox if meta is not None and isinstance(meta.sandbox, dict) else {}
    if meta is None or not (recorded.get("source") or meta.scenario):
        raise UsageError(f"{bundle}: not a tabletop run (played in no sandbox scenario)")
    warnings: list[str] = []
    found = facilitator if facilitator is not None else facilitators(bundle, view.run_id)
    facilitation: list[Seen] = []
    following: list[Path] = []
    for path in found:
        actions = _facilitation(path, view.run_id)
        if actions is None:
            warnings.append(f"{path} does not follow this run: its actions are left out")
        else:
            following.append(path)
        facilitation += actions or []
    if scenario is None:
        scenario = _scenario(view, following, warnings)
    elif _fingerprint(view) not in (None, world_fingerprint(scenario)):
        warnings.append(_MISMATCH.format(scenario.id))
    session = _session(bundle)
    record = _record(session)
    made = progress.decisions(view)
    fired = progress.injects(view)
    end = view.finished.ts if view.finished is not None else None
    if end is None and (debrief or _gone(record)):
        end = view.times[-1]  # it stopped there
    clock = progress.seconds_between(view.started, end or progress.iso(now))
    order = _order(bundle) if view.finished is None else None
    return Exercise(
        scenario_id=scenario.id,
        title=scenario.title,
        briefing=scenario.briefing,
        team=_team(record, view, scenario),
        run_id=view.run_id,
        incident=meta.incident,
        bundle=bundle,
        started=view.started,
        status=view.status if view.finished is not None else IN_PROGRESS,
        clock_seconds=clock,
        current_step=progress.current_step(view, order),
        timeline=tuple(progress.timeline(view, fired)),
        keys=tuple(progress.keys(view)),
        findings=tuple(progress.findings(view)),
        injects=tuple(fired),
        decisions=tuple(hidden.judge(view, made, scenario)),
        evidence=tuple(hidden.evidence(view, scenario)),
        timing=progress.timing(view),
        targets=hidden.targets(scenario),
        ground_truth=hidden.ground_truth(scenario),
        prevented_by=tuple((p.practice, p.how) for p in scenario.prevented_by),
        next_injects=tuple(
            hidden.next_injects(view, scenario, fired, hidden.held(_acks(session)), now)
        ),
        observations=tuple(hidden.observations(facilitation)),
        facilitator_bundles=tuple(found),
        warnings=tuple(warnings),
        proof=proof,
    )


#: A run's status while it has not finished (its journal has no ``run-finished`` yet).
IN_PROGRESS = "in progress"
_MISMATCH = (
    "scenario {} has changed since this run was played (its world fingerprint "
    "differs): what is expected of the team may not match the world it saw"
)


def _verified(bundle: Path) -> tuple[RunView, str | None]:
    """The bundle's run once ``integrity.check`` passed it (as ``kmsir verify``): altered,
    ``TamperedError``; consistent with its end not proven, the line that says so."""
    from kmsir.evidence import integrity

    checked = integrity.check(bundle)
    if checked.problems:
        raise TamperedError(checked.problems)
    if checked.intact:
        return checked.view, None
    if checked.finished:
        return checked.view, "unproven run: it finished, but no manifest anchors its end"
    return checked.view, "unfinished run: its end cannot be proven"


def world_fingerprint(scenario: Scenario) -> str:
    """The fingerprint a run records of its scenario (``Sandbox.fingerprint``)."""
    return sha256_hex(canonical(scenario.world_dump()))


def _fingerprint(view: RunView) -> str | None:
    sandbox = view.meta.sandbox if view.meta is not None else None
    value = sandbox.get("scenario_sha256") if isinstance(sandbox, dict) else None
    return str(value) if value else None


def _scenario(view: RunView, following: list[Path], warnings: list[str]) -> Scenario:
    """The scenario the run was played in, from its ``sandbox.source``; when that no longer
    loads (or has changed), the exact copy a facilitator's bundle of the run keeps (its
    ``playbook.yaml``) if its fingerprint is the run's; else ``UsageError``."""
    sandbox = view.meta.sandbox if view.meta is not None else None
    source = sandbox.get("source") if isinstance(sandbox, dict) else None
    source = str(source or (view.meta.scenario if view.meta is not None else ""))
    found = None
    try:
        found = scenarios.load(source)
    except (KmsirError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        copy = _copy(view, following)
        if copy is None:
            raise UsageError(
                f"scenario {source}: cannot load it ({first}), and no facilitator's bundle of "
                "this run keeps a copy of it: nothing to judge the run against"
            ) from None
        warnings.append(f"scenario {source}: cannot load it; judged by the copy in {copy[1]}")
        return copy[0]
    if _fingerprint(view) not in (None, world_fingerprint(found)):
        copy = _copy(view, following)
        if copy is not None:
            warnings.append(f"scenario {source} has changed; judged by the copy in {copy[1]}")
            return copy[0]
        warnings.append(_MISMATCH.format(found.id))
    return found


def _copy(view: RunView, following: list[Path]) -> tuple[Scenario, Path] | None:
    """The scenario as a facilitator's bundle copied it, when its world is the run's."""
    recorded = _fingerprint(view)
    for path in following:
        copy = path / PLAYBOOK_COPY
        if recorded is None or not copy.is_file():
            continue
        try:
            found = scenarios.load(copy)
        except (KmsirError, OSError):
            continue
        if world_fingerprint(found) == recorded:
            return found, path
    return None


def _order(bundle: Path) -> list[str] | None:
    """The ids of the playbook's steps, in order (its copy in the bundle)."""
    try:
        data = yamlsafe.load_file(bundle / PLAYBOOK_COPY).data
    except KmsirError:
        return None
    steps = data.get("steps") if isinstance(data, dict) else None
    ids = [s.get("id") for s in steps if isinstance(s, dict)] if isinstance(steps, list) else []
    return [str(i) for i in ids if i]


def _session(bundle: Path) -> channel.Session | None:
    """The tabletop session the run belongs to (``channel``), if any."""
    with contextlib.suppress(KmsirError, OSError, ValueError):
        return channel.find(bundle.resolve().parent.parent, bundle)
    return None


def _record(session: channel.Session | None) -> dict[str, Any]:
    with contextlib.suppress(KmsirError, OSError, ValueError):
        return session.record() if session is not None else {}
    return {}


def _acks(session: channel.Session | None) -> list[dict[str, Any]]:
    with contextlib.suppress(KmsirError, OSError, ValueError):
        return channel.acks(session) if session is not None else []
    return []


def _gone(record: dict[str, Any]) -> bool:
    """The players' process (the session's ``pid``) is no longer running."""
    pid = record.get("pid")
    return isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 and not channel.alive(pid)


def _team(record: dict[str, Any], view: RunView, scenario: Scenario) -> str | None:
    """The team: as the tabletop session recorded it (``channel``), else from the tabletop's
    incident id ``tabletop-<scenario>-<team>``."""
    for run in record.get("runs") or []:
        if isinstance(run, dict) and run.get("run_id") == view.run_id and run.get("team"):
            return str(run["team"])
    incident = view.meta.incident if view.meta is not None else ""
    prefix = f"tabletop-{scenario.id}-"
    if incident.startswith(prefix):
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
    bundle of the run ``run_id`` (or no bundle at all: a file, nothing there)."""
    if not (path / JOURNAL).is_file():
        return None
    try:
        view = read_journal(path / JOURNAL).view()
    except (KmsirError, OSError):
        return None
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

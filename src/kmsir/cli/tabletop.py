"""``kmsir tabletop``: run an exercise. The players' commands (start, reset, replay) live here;
the facilitator's and the room's in ``tabletop_watch``, the debrief's in ``tabletop_debrief``,
each registering on ``tabletop_app``."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kmsir.cli.common import (
    EvidenceDir,
    app,
    err,
    handled,
    how_to_continue,
    load_answers,
    load_playbook,
    prompter_for,
    resume_command,
    say,
    started,
    write_reports,
)

if TYPE_CHECKING:
    from kmsir.run.engine import RunResult

tabletop_app = typer.Typer(
    help="Tabletop exercises: players, facilitator, room, debrief, replay.",
    no_args_is_help=True,
)
app.add_typer(tabletop_app, name="tabletop")

RunRef = Annotated[str, typer.Argument(metavar="RUN", help="The players' run id or bundle.")]


def facilitator_command(run_id: str, evidence_dir: Path) -> str:
    """The command a facilitator attaches to the players' run with."""
    where = (
        ""
        if evidence_dir == Path("evidence")
        else f" --evidence-dir {shlex.quote(str(evidence_dir))}"
    )
    return f"kmsir tabletop facilitator {run_id}{where}"


@tabletop_app.command("start")
@handled
def start(
    scenario: Annotated[str, typer.Argument(metavar="SCENARIO", help="Scenario name or file.")],
    team: Annotated[str, typer.Option("--team", help="The team's name.")],
    evidence_dir: EvidenceDir = Path("evidence"),
    answers: Annotated[
        Path | None, typer.Option("--answers", help="YAML: the team's scripted answers.")
    ] = None,
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: any free one).")] = 0,
    keep_serving: Annotated[
        bool,
        typer.Option("--keep-serving", help="Serve on after the run (the default at a terminal)."),
    ] = False,
) -> None:
    """Serve the scenario's world on 127.0.0.1 and run its playbook for the team (at the
    terminal, or with --answers); print the run id the facilitator attaches to. At each step
    the facilitator's commands (fire, hold, release, end) and due timed injects take effect.
    After the run it serves on until Ctrl-C, `end` or `reset` (at a terminal or with
    --keep-serving)."""
    from kmsir.cli.console import ConsoleReporter, banner
    from kmsir.cli.runs import scenario_source
    from kmsir.errors import UsageError
    from kmsir.sandbox import scenario as scenarios
    from kmsir.tabletop.session import Players, PlayersSession, Setup, incident_id

    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: not a port number")
    world = scenarios.load(scenario)
    incident_id(world.id, team)  # a bad team name is refused before anything starts
    loaded = load_playbook(world.playbook)
    scripted = load_answers(answers)
    interactive = answers is None and sys.stdin.isatty() and sys.stderr.isatty()

    def served(endpoint: str, environment: Mapping[str, str]) -> None:
        err(f"kmsir tabletop: scenario {world.id} (SIMULATED) served at {endpoint}")
        for name, value in environment.items():
            say(f"export {name}={shlex.quote(value)}")
        err("point any AWS client at it with the lines above")

    def run_started(run_id: str, bundle: Path) -> None:
        started(bundle, resume_command(bundle))
        say(f"run id: {run_id}")
        say(f"facilitator: {facilitator_command(run_id, evidence_dir)}")

    def run_finished(result: RunResult) -> None:
        from kmsir.cli.console import summary_table

        summary_table(result)
        written = write_reports(result.bundle)
        if written:
            err(f"report: {written[0]}")
        if result.status != "succeeded":
            err(f"kmsir tabletop: run {result.status}: {result.error}")

    def next_team() -> str | None:
        name = str(typer.prompt("Next team's name (empty: serve on)", default="")).strip()
        return name or None

    players = Players(
        prompter=prompter_for(scripted, "answers file", yes=False),
        reporter=ConsoleReporter(),
        say=err,
        served=served,
        run_started=run_started,
        run_finished=run_finished,
        warn=err,
        next_team=next_team if interactive else None,
    )
    setup = Setup(
        scenario=world,
        source=scenario_source(scenario),
        loaded=loaded,
        team=team,
        evidence_dir=evidence_dir,
        port=port,
        answers=scripted,
        keep_serving=keep_serving or interactive,
    )
    banner(f"SIMULATED · tabletop {world.title}, team {team}: {world.briefing}")
    session = PlayersSession(setup, players)
    try:
        results = session.play()
    except KeyboardInterrupt:
        if not session.results or session.running:
            raise
        err("kmsir tabletop: stopped serving")
        results = session.results
    last = results[-1]
    if last.status != "succeeded":
        err(f"kmsir: run {last.status}: {last.error}{how_to_continue()}")
        raise typer.Exit(1)


@tabletop_app.command("reset")
@handled
def reset(run: RunRef, evidence_dir: EvidenceDir = Path("evidence")) -> None:
    """Reset the world a players' session serves to the scenario's start (same endpoint),
    for the next team; waits for the players' process to say it did."""
    import getpass

    from kmsir.tabletop import session

    answer = session.reset(evidence_dir, run, by=getpass.getuser())
    if not answer.get("ok"):
        err(f"kmsir tabletop: reset refused: {answer.get('what')}")
        raise typer.Exit(1)
    say(f"kmsir tabletop: {answer.get('what')}")


@tabletop_app.command("replay")
@handled
def replay(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="The players' bundle.")],
    evidence_dir: Annotated[
        Path | None,
        typer.Option("--evidence-dir", help="Where the replay's bundle goes (default: the run's)."),
    ] = None,
) -> None:
    """Rerun a team's recorded decisions against a fresh world of the same scenario, firing
    its injects where they fired, into a new bundle; compare the outcome (decisions, final
    AWS state). Exit 0 the same, 1 different (each difference listed)."""
    from kmsir.cli.console import ConsoleReporter, banner
    from kmsir.errors import TamperedError
    from kmsir.tabletop import replay as replaying

    banner(f"SIMULATED · replay of {bundle}")
    try:
        replayed = replaying.replay(
            bundle,
            evidence_dir=evidence_dir,
            reporter=ConsoleReporter(),
            on_bundle=lambda root: err(f"replay bundle: {root}"),
            warn=err,
        )
    except TamperedError as exc:
        for problem in exc.problems:
            err(f"TAMPERED: {problem}")
        err(f"kmsir tabletop: {bundle} was altered: it is not replayed")
        raise typer.Exit(1) from None
    written = write_reports(replayed.result.bundle)
    if written:
        err(f"report: {written[0]}")
    if replayed.same:
        say(
            "kmsir tabletop: the replay reproduces the recorded run (same decisions, same "
            "final AWS state)"
        )
        return
    say(f"kmsir tabletop: the replay differs from the recorded run ({len(replayed.differences)}):")
    for line in replayed.differences:
        say(f"  - {line}")
    raise typer.Exit(1)

"""``kmsir tabletop``: run an exercise. The players' commands (start, reset, replay) live here;
the facilitator's and the room's in ``tabletop_watch``, the debrief's in ``tabletop_debrief``,
each registering on ``tabletop_app``."""

from __future__ import annotations

import contextlib
import shlex
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
    say,
    started,
    write_reports,
)

if TYPE_CHECKING:
    from kmsir.run.engine import RunResult
    from kmsir.tabletop.session import Players, PlayersSession, Setup

tabletop_app = typer.Typer(
    help="Tabletop exercises: players, facilitator, room, debrief, replay.",
    no_args_is_help=True,
)
app.add_typer(tabletop_app, name="tabletop")

RunRef = Annotated[str, typer.Argument(metavar="RUN", help="The players' run id or bundle.")]


def facilitator_command(run_id: str, evidence_dir: Path) -> str:
    """The command a facilitator attaches to the players' run with, from any directory (the
    evidence directory absolute)."""
    where = shlex.quote(str(evidence_dir.resolve()))
    return f"kmsir tabletop facilitator {run_id} --evidence-dir {where}"


def tabletop_resume_command(bundle: Path) -> str:
    """How a stopped team's run goes on: its world served again, its channel re-opened."""
    return f"kmsir tabletop resume {shlex.quote(str(bundle.resolve()))}"


Port = Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: any free one).")]
KeepServing = Annotated[
    bool,
    typer.Option("--keep-serving", help="Serve on after the run (the default at a terminal)."),
]


@tabletop_app.command("start")
@handled
def start(
    scenario: Annotated[str, typer.Argument(metavar="SCENARIO", help="Scenario name or file.")],
    team: Annotated[str, typer.Option("--team", help="The team's name.")],
    evidence_dir: EvidenceDir = Path("evidence"),
    answers: Annotated[
        Path | None, typer.Option("--answers", help="YAML: the team's scripted answers.")
    ] = None,
    port: Port = 0,
    keep_serving: KeepServing = False,
) -> None:
    """Serve the scenario's world on 127.0.0.1 and run its playbook for the team (at the
    terminal, or with --answers); print the run id the facilitator attaches to. At each step
    the facilitator's commands (fire, hold, release, end) and due timed injects take effect.
    After the run it serves on until Ctrl-C, `end` or `reset` (at a terminal or with
    --keep-serving)."""
    from kmsir.cli.console import banner
    from kmsir.cli.runs import scenario_source
    from kmsir.errors import UsageError
    from kmsir.sandbox import scenario as scenarios
    from kmsir.tabletop.session import PlayersSession, Setup, incident_id

    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: not a port number")
    world = scenarios.load(scenario)
    incident_id(world.id, team)  # a bad team name is refused before anything starts
    loaded = load_playbook(world.playbook)
    scripted = load_answers(answers)
    interactive = answers is None and sys.stdin.isatty() and sys.stderr.isatty()
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
    session = PlayersSession(setup, _players(setup, scripted, "answers file", interactive))
    _play(session, session.play)


@tabletop_app.command("resume")
@handled
def resume(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="The players' bundle.")],
    port: Port = 0,
    keep_serving: KeepServing = False,
) -> None:
    """Go on with a team's stopped run: its world rebuilt from the journal and served again
    (a new endpoint), the facilitator's channel re-opened, the run continued from its first
    unfinished step; then served on as after `tabletop start`."""
    from kmsir import actions
    from kmsir.cli.console import banner
    from kmsir.errors import TamperedError, UsageError
    from kmsir.evidence import bundle as evidence
    from kmsir.playbook import model as playbook
    from kmsir.run import resume as resuming
    from kmsir.sandbox import scenario as scenarios
    from kmsir.tabletop.session import ENDED, PlayersSession, Setup

    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: not a port number")
    try:
        state = resuming.load(bundle)
    except TamperedError as exc:
        for problem in exc.problems:
            say(f"TAMPERED: {problem}")
        raise typer.Exit(1) from None
    meta = state.meta
    recorded = meta.sandbox if isinstance(meta.sandbox, dict) else {}
    tabletop = recorded.get("tabletop")
    if not meta.scenario or not isinstance(tabletop, dict):
        raise UsageError(f"{bundle}: not a tabletop's run (go on with `kmsir resume {bundle}`)")
    if state.succeeded:
        err(f"{bundle}: the run already finished (succeeded); nothing to resume")
        return
    if state.finished is not None and state.finished.error == ENDED:
        raise UsageError(f"{ENDED} (run {meta.run_id}): it is not resumed")
    world = scenarios.load(str(recorded.get("source") or meta.scenario))
    scripted = dict((meta.answers or {}).get("values") or {})
    source = str((meta.answers or {}).get("source") or "answers file")
    interactive = not scripted and sys.stdin.isatty() and sys.stderr.isatty()
    root = bundle.resolve()
    setup = Setup(
        scenario=world,
        source=str(recorded.get("source") or meta.scenario),
        loaded=playbook.load(root / evidence.PLAYBOOK_COPY, actions.catalog()),
        team=str(tabletop.get("team") or ""),
        evidence_dir=root.parent.parent,
        port=port,
        answers=scripted,
        keep_serving=keep_serving or interactive,
    )
    err(f"kmsir tabletop resume: {bundle} ({state.view.lines} journal entries)")
    banner(f"SIMULATED · tabletop {world.title}, team {setup.team}: {world.briefing}")
    session = PlayersSession(setup, _players(setup, scripted, source, interactive))
    _play(session, lambda: session.resume(state))


def _players(setup: Setup, scripted: dict[str, Any], source: str, interactive: bool) -> Players:
    """What the players' terminal shows and asks, for ``PlayersSession``."""
    from kmsir.cli.console import ConsoleReporter
    from kmsir.tabletop.session import Players

    where: dict[str, str] = {"endpoint": "", "run": "RUN"}

    def served(endpoint: str, environment: Mapping[str, str]) -> None:
        where["endpoint"] = endpoint
        err(f"kmsir tabletop: scenario {setup.scenario.id} (SIMULATED) served at {endpoint}")
        for name, value in environment.items():
            say(f"export {name}={shlex.quote(value)}")
        err("point any AWS client at it with the lines above")

    def run_started(run_id: str, bundle: Path) -> None:
        where["run"] = run_id
        started(bundle, tabletop_resume_command(bundle))
        say(f"run id: {run_id}")
        say(f"facilitator: {facilitator_command(run_id, setup.evidence_dir)}")

    def run_finished(result: RunResult) -> None:
        from kmsir.cli.console import summary_table
        from kmsir.tabletop.session import ENDED

        summary_table(result)
        written = write_reports(result.bundle)
        if written:
            err(f"report: {written[0]}")
        if result.status != "succeeded" and result.error != ENDED:
            err(f"kmsir tabletop: run {result.status}: {result.error}")

    def next_team() -> str | None:
        import click

        _flush_input()  # an Enter typed during the run must not answer this
        try:
            name = str(typer.prompt("Next team's name (empty: serve on)", default="")).strip()
        except (click.exceptions.Abort, EOFError):
            raise KeyboardInterrupt from None  # Ctrl-C or end of input: stop serving
        if not name:
            err(
                f"kmsir tabletop: the world is still served at {where['endpoint']}; another "
                f"`kmsir tabletop reset {where['run']}` starts the next team"
            )
        return name or None

    return Players(
        prompter=prompter_for(scripted, source, yes=False),
        reporter=ConsoleReporter(),
        say=err,
        served=served,
        run_started=run_started,
        run_finished=run_finished,
        warn=err,
        next_team=next_team if interactive else None,
    )


def _flush_input() -> None:
    """Drop what was typed at the terminal and not read yet (a POSIX terminal only)."""
    if not sys.stdin.isatty():
        return
    try:
        import termios
    except ImportError:  # not a POSIX system
        return
    with contextlib.suppress(OSError, ValueError, termios.error):
        termios.tcflush(sys.stdin.fileno(), termios.TCIFLUSH)


def _play(session: PlayersSession, play: Callable[[], list[RunResult]]) -> None:
    """Play (or resume) and end as the last run did: the facilitator's end of the exercise
    is its end (exit 0); a run that stopped otherwise says how to go on (exit 1)."""
    from kmsir.tabletop.session import ENDED

    try:
        results = play()
    except KeyboardInterrupt:
        if not session.results or session.running:
            raise
        err("kmsir tabletop: stopped serving")
        results = session.results
    last = results[-1]
    if last.status == "aborted" and last.error == ENDED:
        err(f"kmsir tabletop: {ENDED} before its last step")
        return
    if last.status != "succeeded":
        err(f"kmsir: run {last.status}: {last.error}{how_to_continue()}")
        raise typer.Exit(1)


@tabletop_app.command("reset")
@handled
def reset(run: RunRef, evidence_dir: EvidenceDir = Path("evidence")) -> None:
    """Reset the world a players' session serves to the scenario's start (same endpoint),
    for the next team, once the team's run has ended (refused while it goes on); waits for
    the players' process to say it did."""
    import getpass

    from kmsir.tabletop import channel

    answer = channel.reset(evidence_dir, run, by=getpass.getuser())
    if not answer.get("ok"):
        err(f"kmsir tabletop: reset refused: {answer.get('what') or ''}")
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

"""Commands that run playbooks: demo, run, resume; and validate, actions, scenarios."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from kmsir.errors import UsageError

if TYPE_CHECKING:
    from kmsir.aws.targets import ScopeRequest
    from kmsir.playbook.model import LoadedPlaybook
    from kmsir.run.engine import RunOptions, RunResult

from kmsir.cli.common import (
    EvidenceDir,
    InputPairs,
    PlaybookRef,
    app,
    default_incident,
    err,
    finish,
    handled,
    live_clients,
    load_answers,
    load_playbook,
    parse_inputs,
    prompter_for,
    resume_command,
    say,
    started,
    write_reports,
)
from kmsir.cli.console import ConsoleReporter
from kmsir.cli.scope import Accounts, Exclude, ExternalId, Org, Regions, RoleName, scope_request


@app.command()
@handled
def demo(
    evidence_dir: EvidenceDir = Path("evidence"),
    scenario: Annotated[str, typer.Option("--scenario", help="Sandbox scenario.")] = "rogue-grant",
) -> None:
    """Run a scenario's playbook in the sandbox with its scripted answers; print the report."""
    from kmsir.prompts import ScriptedPrompter
    from kmsir.sandbox import scenario as scenarios

    world = scenarios.load(scenario)
    loaded = load_playbook(world.playbook)
    prompter = ScriptedPrompter(world.answers, source="scenario script")
    from kmsir.run.engine import RunOptions

    options = RunOptions(
        incident_id=f"demo-{world.id}",
        evidence_dir=evidence_dir,
        mode="sandbox",
        scenario=world.id,
        extra={"answers": {"source": "scenario script", "values": world.answers}},
    )
    finish(
        execute(
            loaded,
            {},
            prompter,
            options,
            world=world,
            source=scenario_source(scenario),
            resume=Resume(),
        )
    )


def scenario_source(reference: str) -> str:
    """How resume finds the scenario again: a built-in name, or a file's absolute path."""
    return str(Path(reference).resolve()) if Path(reference).suffix else reference


@dataclasses.dataclass(frozen=True)
class Resume:
    """What ``kmsir resume`` needs besides the bundle to go on as the run was started."""

    profile: str | None = None
    answers: Path | None = None
    yes: bool = False

    def command(self, bundle: Path) -> str:
        """The command that continues the run in ``bundle``."""
        return resume_command(bundle, profile=self.profile, answers=self.answers, yes=self.yes)


def execute(
    loaded: LoadedPlaybook,
    given: dict[str, Any],
    prompter: Any,
    options: RunOptions,
    *,
    world: Any = None,
    source: str | None = None,
    profile: str | None = None,
    region: str | None = None,
    anchor_key: str | None = None,
    scope: ScopeRequest | None = None,
    resume: Resume,
) -> RunResult:
    """Run against the scenario's sandbox when there is one, else against AWS.

    ``source`` is where the scenario came from (a built-in name or an absolute path), kept in
    the journal so that resume can rebuild the same world. ``anchor_key``: sign the journal's
    chain head with this KMS key after every step. ``scope``: the accounts and Regions to
    cover (resolved before the run starts)."""
    from kmsir.run import launch

    inputs = launch.run_inputs(loaded, given, prompter, world)
    with contextlib.ExitStack() as stack:
        if world is not None:
            from kmsir.cli.console import simulated
            from kmsir.sandbox import Sandbox

            simulated(world)
            second = options.require_approval  # the world gets a second identity
            sandbox = stack.enter_context(Sandbox(world, second_person=second))
            # the clock and scenario, so that resume can rebuild this same world
            recorded = {"sandbox": {**sandbox.record(), "source": source}}
            venue = launch.sandboxed(sandbox, options, recorded)
        else:
            venue = launch.live(lambda: live_clients(profile, region), options)
        venue = launch.scoped(venue, scope)
        engine = launch.engine(
            venue,
            prompter=prompter,
            reporter=ConsoleReporter(),
            anchor_key=anchor_key,
            on_bundle=lambda root: started(root, resume.command(root)),
            warn=err,
        )
        return engine.run(loaded, inputs, venue.options)


@app.command()
@handled
def run(
    playbook_ref: PlaybookRef,
    inputs: InputPairs = None,
    incident: Annotated[str | None, typer.Option("--incident", help="Incident id.")] = None,
    evidence_dir: EvidenceDir = Path("evidence"),
    profile: Annotated[str | None, typer.Option("--profile", help="AWS profile.")] = None,
    region: Annotated[str | None, typer.Option("--region", help="AWS Region.")] = None,
    sandbox: Annotated[
        str | None, typer.Option("--sandbox", metavar="SCENARIO", help="Run in the sandbox.")
    ] = None,
    answers: Annotated[
        Path | None, typer.Option("--answers", help="YAML: step id or input name -> answer.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Approve every step without asking.")] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Change nothing; show what would.")
    ] = False,
    start_at: Annotated[
        str | None, typer.Option("--start-at", help="Skip to this step (fresh runs only).")
    ] = None,
    force_start_at: Annotated[
        bool,
        typer.Option(
            "--force-start-at",
            help="Allow --start-at although an unfinished run of this playbook exists.",
        ),
    ] = False,
    anchor_key: Annotated[
        str | None,
        typer.Option(
            "--anchor-key",
            metavar="KEY",
            help="Sign the journal after every step with this KMS asymmetric key.",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Run although another run holds the incident's lock."),
    ] = False,
    require_approval: Annotated[
        bool,
        typer.Option(
            "--require-approval",
            help="A second person approves every irreversible or high-impact step "
            "(kmsir approve BUNDLE STEP, with their own AWS credentials).",
        ),
    ] = False,
    accounts: Accounts = None,
    org: Org = False,
    exclude: Exclude = None,
    role_name: RoleName = None,
    external_id: ExternalId = None,
    regions: Regions = None,
) -> None:
    """Run a playbook step by step, asking before anything changes."""
    from kmsir.evidence import bundle as evidence
    from kmsir.run.engine import RunOptions

    scope = scope_request(
        accounts=accounts,
        org=org,
        exclude=exclude,
        role_name=role_name,
        external_id=external_id,
        regions=regions,
    )
    loaded = load_playbook(playbook_ref)
    incident_id = evidence.check_incident_id(incident or default_incident())
    given: dict[str, Any] = parse_inputs(inputs or [])
    scripted = load_answers(answers)
    for name in loaded.playbook.inputs:
        if name in scripted and name not in given:
            given[name] = scripted[name]
    prompter = prompter_for(scripted, "answers file", yes=yes)
    world = None
    if sandbox:
        from kmsir.sandbox import scenario as scenarios

        world = scenarios.load(sandbox)
        _written_for(world, loaded, yes=yes)
    options = RunOptions(
        incident_id=incident_id,
        evidence_dir=evidence_dir,
        mode="check" if check else "sandbox" if world else "live",
        yes=yes,
        start_at=start_at,
        scenario=world.id if world else None,
        extra={"answers": {"source": "answers file", "values": scripted}} if scripted else {},
        force=force,
        require_approval=require_approval,  # and the scenario's (launch.sandboxed)
    )
    if start_at is not None and not force_start_at:
        _refuse_start_at_over_unfinished(evidence_dir / incident_id, loaded, start_at)
    if check:
        from kmsir.cli.console import banner

        banner("CHECK MODE · nothing is changed; each changing step says what it would do")
    source = scenario_source(sandbox) if sandbox else None
    finish(
        execute(
            loaded,
            given,
            prompter,
            options,
            world=world,
            source=source,
            profile=profile,
            region=region,
            anchor_key=anchor_key,
            scope=scope,
            # a sandbox run reuses its recorded answers; a live one is given the file again
            resume=Resume(profile, answers if answers and not world else None, yes),
        )
    )


def _written_for(world: Any, loaded: LoadedPlaybook, *, yes: bool) -> None:
    """A scenario run with a playbook it was not written for: its injects and expected
    decisions follow its own playbook's steps. Say so; at a terminal ask whether to go on
    (declined: exit 1, nothing run), else (``--yes``, no terminal) go on with a warning."""
    book = loaded.playbook.id
    if book in (world.playbook, Path(world.playbook).stem):
        return
    said = (
        f"scenario {world.id} was written for playbook {world.playbook}, not {book}: its "
        "injects and expected decisions follow the other playbook's steps"
    )
    prompter = None if yes else prompter_for({}, "scenario", yes=False)
    if prompter is None or not prompter.interactive:
        err(f"kmsir: warning: {said}; going on")
        return
    err(f"kmsir: {said}")
    if not prompter.confirm("scenario-playbook", f"Run {book} in scenario {world.id}?").value:
        err("kmsir run: not confirmed; nothing was run")
        raise typer.Exit(1)


def _refuse_start_at_over_unfinished(
    incident_dir: Path, loaded: LoadedPlaybook, start_at: str
) -> None:
    """--start-at skips steps: on an incident with an unfinished run of the same playbook,
    that run is to be resumed (its journal knows what ran), not restarted part-way."""
    from kmsir.run.resume import unfinished_runs

    for root in unfinished_runs(incident_dir, loaded.playbook.id)[:1]:
        raise UsageError(
            f"--start-at {start_at}: run {root} of this playbook did not finish; continue "
            f"it with `kmsir resume {root}`, or pass --force-start-at to start a new run "
            "part-way"
        )


@app.command()
@handled
def resume(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle directory.")],
    answers: Annotated[
        Path | None,
        typer.Option("--answers", help="YAML answers (default: those the run recorded)."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Approve every step without asking.")] = False,
    profile: Annotated[str | None, typer.Option("--profile", help="AWS profile.")] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Resume although another run holds the incident's lock."),
    ] = False,
) -> None:
    """Continue an interrupted or failed run in its own bundle, from its first unfinished
    step. A step that was changing something when the run stopped is re-checked against live
    state before anything is sent again; decisions already made are not asked again."""
    from kmsir import actions
    from kmsir.errors import TamperedError
    from kmsir.evidence import bundle as evidence
    from kmsir.playbook import model as playbook
    from kmsir.run import launch
    from kmsir.run import resume as resuming
    from kmsir.run.engine import Mode, RunOptions

    try:
        state = resuming.load(bundle)
    except TamperedError as exc:
        for problem in exc.problems:
            say(f"TAMPERED: {problem}")
        raise typer.Exit(1) from None
    if state.succeeded:
        if launch.settle_finished(bundle):
            write_reports(bundle)
            err(f"{bundle}: wrote the manifest and reports the interrupted finish did not")
        err(f"{bundle}: the run already finished (succeeded); nothing to resume")
        return
    from kmsir.tabletop.session import refuse_resume

    refuse_resume(state.view)  # a tabletop's run: `kmsir tabletop resume`, unless ended
    meta = state.meta
    loaded = playbook.load(bundle / evidence.PLAYBOOK_COPY, actions.catalog())
    # a sandbox run reuses its scripted answers; a live one asks, unless given --answers
    recorded = (meta.answers or {}) if meta.scenario else {}
    scripted = load_answers(answers) if answers else dict(recorded.get("values") or {})
    source = "answers file" if answers else str(recorded.get("source") or "answers file")
    prompter = prompter_for(scripted, source, yes=yes)
    options = RunOptions(
        incident_id=meta.incident,
        evidence_dir=bundle.resolve().parent.parent,
        mode=cast(Mode, meta.mode or "live"),
        yes=yes,
        scenario=meta.scenario,
        force=force,
        require_approval=meta.require_approval,
    )
    keys = state.view.anchor_keys
    anchor_key = keys[-1].record.key_arn if keys else None
    err(f"kmsir resume: {bundle} ({state.view.lines} journal entries)")
    with contextlib.ExitStack() as stack:
        if options.scenario:
            from kmsir.cli.console import simulated
            from kmsir.run import rollback_run

            sandbox = launch.rebuild_sandbox(
                meta.sandbox or {}, options.scenario, second_person=meta.require_approval
            )
            stack.enter_context(sandbox)
            # a rollback's world is the rolled-back run's, then its own changes
            replayed = rollback_run.replay_world(sandbox, state.view)
            world = sandbox.scenario
            simulated(world)
            err(f"sandbox: rebuilt scenario {world.id}, replayed {replayed['replayed']} call(s)")
            venue = launch.sandboxed(sandbox, options, {"sandbox_replay": replayed})
        else:
            venue = launch.live(lambda: live_clients(profile, meta.region), options)
        venue = launch.rescoped(venue, meta.scope)  # the accounts and Regions it started with
        again = Resume(profile, answers, yes)
        engine = launch.engine(
            venue,
            prompter=prompter,
            reporter=ConsoleReporter(),
            # an anchored run stays anchored, with the key it started with
            anchor_key=anchor_key,
            on_bundle=lambda root: started(root, again.command(root)),
            warn=err,
        )
        result = engine.resume(loaded, state, venue.options)
    finish(result)

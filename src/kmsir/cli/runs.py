"""Commands that run playbooks: demo, run, resume; and validate, actions, scenarios."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kmsir.errors import PlaybookError, UsageError

if TYPE_CHECKING:
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
        _execute(
            loaded,
            {},
            prompter,
            options,
            world=world,
            source=_scenario_source(scenario),
            resume=Resume(),
        )
    )


def _scenario_source(reference: str) -> str:
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


def _execute(
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
    resume: Resume,
) -> RunResult:
    """Run against the scenario's sandbox when there is one, else against AWS.

    ``source`` is where the scenario came from (a built-in name or an absolute path), kept in
    the journal so that resume can rebuild the same world. ``anchor_key``: sign the journal's
    chain head with this KMS key after every step."""
    from kmsir import actions
    from kmsir.playbook import model as playbook
    from kmsir.run.engine import Engine
    from kmsir.signer import KmsSigner

    if world is not None:  # the scenario's inputs are defaults for its playbook
        defaults = {k: v for k, v in world.inputs.items() if k in loaded.playbook.inputs}
        given = {**defaults, **given}
    given = _ask_missing_inputs(loaded, given, prompter)
    inputs = playbook.resolve_inputs(loaded.playbook, given)
    with contextlib.ExitStack() as stack:
        if world is not None:
            from kmsir.cli.console import banner
            from kmsir.sandbox import Sandbox

            banner(f"SIMULATED · sandbox scenario {world.id}, no AWS account: {world.story}")

            sandbox = stack.enter_context(Sandbox(world))
            clients = sandbox.client_factory()
            signing = sandbox.client_factory()
            # the clock and scenario, so that resume can rebuild this same world
            options = dataclasses.replace(
                options,
                extra={**options.extra, "sandbox": {**sandbox.record(), "source": source}},
            )
        else:
            clients = live_clients(profile, region)
            # its own clients: the signatures are not steps' calls (journaled as anchors)
            signing = live_clients(profile, region)
            options = dataclasses.replace(options, world=key_world())
        engine = Engine(
            actions=actions.registry(),
            clients=clients,
            prompter=prompter,
            reporter=ConsoleReporter(),
            after_step=sandbox.after_step if world is not None else None,
            anchor=KmsSigner(signing, anchor_key) if anchor_key else None,
            on_bundle=lambda root: started(root, resume.command(root)),
            warn=err,
        )
        return engine.run(loaded, inputs, options)


def key_world() -> str:
    """Where a live run's keys are, for key locks: AWS, or the endpoint it is pointed at (a
    sandbox server: its scenario keys have the same ids as every other sandbox's)."""
    import os

    return os.environ.get("AWS_ENDPOINT_URL_KMS") or os.environ.get("AWS_ENDPOINT_URL") or "aws"


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
) -> None:
    """Run a playbook step by step, asking before anything changes."""
    from kmsir.evidence import bundle as evidence
    from kmsir.run.engine import RunOptions

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
    options = RunOptions(
        incident_id=incident_id,
        evidence_dir=evidence_dir,
        mode="check" if check else "sandbox" if world else "live",
        yes=yes,
        start_at=start_at,
        scenario=world.id if world else None,
        extra={"answers": {"source": "answers file", "values": scripted}} if scripted else {},
        force=force,
    )
    if start_at is not None and not force_start_at:
        _refuse_start_at_over_unfinished(evidence_dir / incident_id, loaded, start_at)
    if check:
        from kmsir.cli.console import banner

        banner("CHECK MODE · nothing is changed; each changing step says what it would do")
    source = _scenario_source(sandbox) if sandbox else None
    finish(
        _execute(
            loaded,
            given,
            prompter,
            options,
            world=world,
            source=source,
            profile=profile,
            region=region,
            anchor_key=anchor_key,
            # a sandbox run reuses its recorded answers; a live one is given the file again
            resume=Resume(profile, answers if answers and not world else None, yes),
        )
    )


def _refuse_start_at_over_unfinished(
    incident_dir: Path, loaded: LoadedPlaybook, start_at: str
) -> None:
    """--start-at skips steps: on an incident with an unfinished run of the same playbook,
    that run is to be resumed (its journal knows what ran), not restarted part-way."""
    from kmsir.evidence import bundle as evidence

    if not incident_dir.is_dir():
        return
    for root in sorted(incident_dir.iterdir()):
        journal = root / evidence.JOURNAL
        if not journal.is_file():
            continue
        entries = evidence.read_journal(journal).entries
        started = next((e for e in entries if e["type"] == "run-started"), None)
        if started is None or (started["data"].get("playbook") or {}).get("id") != (
            loaded.playbook.id
        ):
            continue
        finished = evidence.finished_entry(entries)
        if finished is None or finished["data"].get("status") != "succeeded":
            raise UsageError(
                f"--start-at {start_at}: run {root} of this playbook did not finish; continue "
                f"it with `kmsir resume {root}`, or pass --force-start-at to start a new run "
                "part-way"
            )


def _ask_missing_inputs(
    loaded: LoadedPlaybook, given: dict[str, Any], prompter: Any
) -> dict[str, Any]:
    from kmsir.playbook.model import ask_input

    for name, spec in loaded.playbook.inputs.items():
        if name in given or not spec.required or spec.default is not None:
            continue
        question = f"{name} ({spec.type}): {spec.description}".rstrip(": ")
        given[name] = ask_input(prompter, name, name, spec, question).value
    return given


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
    from kmsir.evidence.bundle import utc_now
    from kmsir.playbook import model as playbook
    from kmsir.playbook.values import parse_time
    from kmsir.run import resume as resuming
    from kmsir.run.engine import Engine, RunOptions
    from kmsir.signer import KmsSigner

    try:
        state = resuming.load(bundle)
    except TamperedError as exc:
        for problem in exc.problems:
            say(f"TAMPERED: {problem}")
        raise typer.Exit(1) from None
    if state.succeeded:
        _complete_derived(bundle)
        err(f"{bundle}: the run already finished (succeeded); nothing to resume")
        return
    meta = state.meta
    loaded = playbook.load(bundle / evidence.PLAYBOOK_COPY, actions.catalog())
    # a sandbox run reuses its scripted answers; a live one asks, unless given --answers
    recorded = (meta.get("answers") or {}) if meta.get("scenario") else {}
    scripted = load_answers(answers) if answers else dict(recorded.get("values") or {})
    source = "answers file" if answers else str(recorded.get("source") or "answers file")
    prompter = prompter_for(scripted, source, yes=yes)
    options = RunOptions(
        incident_id=str(meta.get("incident")),
        evidence_dir=bundle.resolve().parent.parent,
        mode=meta.get("mode") or "live",
        yes=yes,
        scenario=meta.get("scenario"),
        force=force,
    )
    anchor_key = next(
        (
            str(e["data"].get("key_arn"))
            for e in reversed(state.entries)
            if e["type"] == "anchor-key"
        ),
        None,
    )
    err(f"kmsir resume: {bundle} ({len(state.entries)} journal entries)")
    with contextlib.ExitStack() as stack:
        if options.scenario:
            from kmsir.sandbox import Sandbox
            from kmsir.sandbox import scenario as scenarios

            recorded_world = meta.get("sandbox") or {}
            world = scenarios.load(str(recorded_world.get("source") or options.scenario))
            clock = recorded_world.get("now")
            sandbox = Sandbox(world, now=parse_time(clock, utc_now()) if clock else None)
            if recorded_world.get("scenario_sha256") != sandbox.fingerprint:
                raise UsageError(
                    f"scenario {world.id} changed since this run started; its sandbox world "
                    "cannot be rebuilt, so the run cannot be resumed"
                )
            stack.enter_context(sandbox)
            replayed = sandbox.replay(state.entries)
            from kmsir.cli.console import banner

            banner(f"SIMULATED · sandbox scenario {world.id}, no AWS account: {world.story}")
            err(f"sandbox: rebuilt scenario {world.id}, replayed {replayed['replayed']} call(s)")
            clients = sandbox.client_factory()
            signing = sandbox.client_factory()
            options = dataclasses.replace(options, extra={"sandbox_replay": replayed})
        else:
            clients = live_clients(profile, meta.get("region"))
            signing = live_clients(profile, meta.get("region"))
            options = dataclasses.replace(options, world=key_world())
        again = Resume(profile, answers, yes)
        engine = Engine(
            actions=actions.registry(),
            clients=clients,
            prompter=prompter,
            reporter=ConsoleReporter(),
            after_step=sandbox.after_step if options.scenario else None,
            # an anchored run stays anchored, with the key it started with
            anchor=KmsSigner(signing, anchor_key) if anchor_key else None,
            on_bundle=lambda root: started(root, again.command(root)),
            warn=err,
        )
        result = engine.resume(loaded, state, options)
    finish(result)


def _complete_derived(bundle: Path) -> None:
    """A finished run that stopped before its manifest or reports were (re)written and
    recorded: write them from the journal and remove the derived files' temporaries."""
    from kmsir.evidence import integrity
    from kmsir.evidence import journal as writer

    checked = integrity.check(bundle)
    if checked.torn_tail:  # it died writing a report's record: keep the line, then go on
        repairing, repaired = writer.BundleWriter.reopen(bundle)
        try:
            repairing.append("repair", repaired)
        finally:
            repairing.close()
    writer.settle_derived(bundle, checked.entries)
    reports_recorded = all((bundle / name).exists() for name in ("report.md", "report.html"))
    if checked.intact and not checked.notes and reports_recorded:
        return
    writer.write_manifest(bundle)
    write_reports(bundle)
    err(f"{bundle}: wrote the manifest and reports the interrupted finish did not")


@app.command()
@handled
def validate(
    playbooks: Annotated[list[Path], typer.Argument(metavar="PLAYBOOK...", help="Files to check.")],
) -> None:
    """Validate playbooks without any AWS call (exit 0 valid, 2 invalid)."""
    from kmsir import actions
    from kmsir.playbook import model as playbook

    catalog = actions.catalog()
    invalid = 0
    for path in playbooks:
        try:
            loaded = playbook.load(path, catalog)
        except PlaybookError as exc:
            invalid += 1
            for problem in exc.problems:
                err(problem)
            continue
        for warning in loaded.warnings:
            err(warning)
        say(f"{path}: valid ({len(loaded.playbook.steps)} steps)")
    if invalid:
        raise typer.Exit(2)


@app.command("actions")
@handled
def list_actions() -> None:
    """List the actions a playbook can use."""
    from kmsir import actions

    for name, action in sorted(actions.registry().items()):
        kind = "mutating" if action.mutating else "read-only"
        undo = f", undo: {action.inverse}" if action.inverse else ""
        doc = (action.__doc__ or "").strip().splitlines()[0]
        say(f"{name:<22} {kind}{undo}\n    {doc}")


@app.command()
@handled
def scenarios() -> None:
    """List the sandbox scenarios."""
    from kmsir.sandbox import scenario

    for name in scenario.available():
        world = scenario.load(name)
        say(f"{name:<24} {world.story}")


@app.command()
@handled
def plan(
    playbook_ref: PlaybookRef,
    inputs: InputPairs = None,
) -> None:
    """Show what a playbook would do: steps, API calls, IAM permissions, undo. No AWS call."""
    from kmsir import actions
    from kmsir.playbook.model import resolve_inputs
    from kmsir.run import plan as planning

    loaded = load_playbook(playbook_ref)
    book = loaded.playbook
    values = resolve_inputs(book, parse_inputs(inputs or []), partial=True)
    steps = planning.plan(book, actions.registry(), values)
    say(f"Plan: {book.id}{f' v{book.version}' if book.version else ''}: {book.title}")
    say("Inputs: " + (", ".join(f"{k}={v}" for k, v in values.items()) or "none"))
    missing = [n for n, s in book.inputs.items() if s.required and n not in values]
    if missing:
        say(f"  (not given, shown as templates: {', '.join(missing)})")
    for step in steps:
        phase = f" [{step.phase}]" if step.phase else ""
        say(f"\n{step.number:2d}. {step.id}{phase}: {step.title}")
        say(f"    action: {step.action} ({planning.describe_inverse(step)})")
        if step.when:
            say(f"    when: {step.when}")
        for call in step.calls:
            say(f"    calls: {call}")
        if step.permissions:
            say(f"    IAM: {', '.join(step.permissions)}")
    needed = planning.permissions(steps)
    changing = [s.id for s in steps if s.mutating]
    say(f"\nChanges AWS state: {', '.join(changing) or 'nothing'}")
    say(f"IAM permissions for the whole playbook ({len(needed)}): {', '.join(needed)}")

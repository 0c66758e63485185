"""``kmsir rollback``: undo what a run changed, newest first, as a new run linked to it."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kmsir.cli.common import (
    app,
    err,
    finish,
    handled,
    live_clients,
    prompter_for,
    resume_command,
    started,
)
from kmsir.errors import UsageError

if TYPE_CHECKING:
    from kmsir.run.rollback import Plan


@app.command()
@handled
def rollback(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="The run's bundle.")],
    step: Annotated[
        str | None, typer.Option("--step", metavar="ID", help="Undo this step only.")
    ] = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            help="Run the plan without asking; keys someone changed since the run are kept.",
        ),
    ] = False,
    check: Annotated[
        bool, typer.Option("--check", help="Change nothing; show what undoing would send.")
    ] = False,
    profile: Annotated[str | None, typer.Option("--profile", help="AWS profile.")] = None,
    region: Annotated[
        str | None, typer.Option("--region", help="AWS Region (default: the run's).")
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Run although another run holds the incident's lock."),
    ] = False,
) -> None:
    """Undo what a run changed, newest first, as a new run of its own (journal, report, run
    id) under the same incident, linked to the original. Shows the plan first, with what
    cannot be undone (a revoked grant, a deletion past its date) and what someone changed
    since the run; an undo that would wipe such a change asks again. A sandbox run is rolled
    back in its own world, rebuilt from its journal."""
    from kmsir import actions
    from kmsir.evidence.bundle import utc_now
    from kmsir.run import launch, rollback_drift, rollback_run
    from kmsir.run import rollback as rolling
    from kmsir.run.engine import RunOptions
    from kmsir.run.resume import refuse_facilitators

    view = rolling.load(bundle)
    meta = view.meta
    assert meta is not None  # load refuses a journal without its first line
    refuse_facilitators(bundle, meta, "roll back")
    if meta.mode == "check":
        err(f"{bundle}: run {meta.run_id} ran in check mode and changed nothing: nothing to undo")
        return
    registry = actions.registry()
    plan = rolling.plan(bundle, view, registry, utc_now(), step=step)
    options = RunOptions(
        incident_id=meta.incident,
        evidence_dir=bundle.resolve().parent.parent,
        mode="check" if check else "sandbox" if meta.scenario else "live",
        yes=True,  # the plan is confirmed once, below
        scenario=meta.scenario,
        force=force,
    )
    with contextlib.ExitStack() as stack:
        if meta.scenario:
            from kmsir.cli.console import simulated

            sandbox = launch.rebuild_sandbox(meta.sandbox or {}, meta.scenario)
            stack.enter_context(sandbox)
            replayed = rollback_run.replay_world(sandbox, view)
            world = sandbox.scenario
            simulated(world)
            calls = replayed["replayed"]
            err(f"sandbox: rebuilt the world run {meta.run_id} left ({calls} call(s) replayed)")
            recorded = {
                "sandbox": {**sandbox.record(), "source": (meta.sandbox or {}).get("source")}
            }
            # the scenario's injects answer its own playbook's steps, not a rollback's
            venue = launch.Venue(
                sandbox.client_factory(),
                sandbox.client_factory(),
                dataclasses.replace(options, extra=recorded),
            )
        else:
            venue = launch.live(lambda: live_clients(profile, region or meta.region), options)
        # a run over several accounts is undone in each key's own account: its recorded scope
        venue = launch.rescoped(venue, meta.scope)
        if check:
            from kmsir.cli.console import banner

            banner("CHECK MODE · nothing is changed; each undo says what it would send")
        plan = rollback_drift.drift(plan, venue.clients, venue.fleet)
        _show(plan)
        if not plan.undos:
            err("kmsir rollback: nothing to undo: no run started")
            return
        confirmed_by = (
            "nobody: check mode (nothing is sent)"
            if check
            else "the --yes option (not asked)"
            if yes
            else _confirm(len(plan.undos))
        )
        loaded, asked = rollback_run.playbook(plan, registry)
        scripted, source = rollback_run.answers(asked, yes=yes, check=check)
        extra: dict[str, Any] = {
            **venue.options.extra,
            **({"scope": meta.scope} if meta.scope else {}),  # its resume covers it again
            "rollback_of": rollback_run.link(plan, step=step, confirmed_by=confirmed_by),
        }
        if scripted:
            extra["answers"] = {"source": source, "values": scripted}
        venue = dataclasses.replace(venue, options=dataclasses.replace(venue.options, extra=extra))
        # a live run that signed its journal: the rollback signs its own with the same key
        keys = view.anchor_keys
        anchor_key = keys[-1].record.key_arn if keys and not meta.scenario else None
        engine = launch.engine(
            venue,
            prompter=prompter_for(scripted, source, yes=True),
            reporter=_reporter(),
            anchor_key=anchor_key,
            on_bundle=lambda root: started(root, resume_command(root, profile=profile, yes=True)),
            warn=err,
        )
        result = engine.run(loaded, {}, venue.options)
    finish(result)


def _reporter() -> Any:
    from kmsir.cli.console import ConsoleReporter

    return ConsoleReporter()


def _show(plan: Plan) -> None:
    """The plan on stderr: the undos newest first, then what stays as it is and why."""
    view = plan.view
    err(
        f"kmsir rollback: run {view.run_id} ({view.meta.playbook.get('id') if view.meta else '?'}, "
        f"{view.status}), {plan.root}"
    )
    undos = plan.undos
    err(f"undo, newest first ({len(undos)}):" if undos else "undo: nothing")
    for n, item in enumerate(undos, start=1):
        err(f"  {n}. step {item.step_id} ({item.action}): {item.text}")
        if item.drift:
            err(f"     CHANGED SINCE THE RUN: {item.drift}" + ("; asks again" if item.asks else ""))
        elif item.aspect is None:
            err("     (its live state is not compared with the run's: kmsir reads it for key")
            err("     states and key policies only)")
    sections = (
        ("cannot be undone", ("irreversible", "expired", "unknown")),
        ("left as it is", ("undone", "unneeded")),
    )
    for title, kinds in sections:
        found = [i for i in plan.items if i.kind in kinds]
        if found:
            err(f"{title}:")
        for item in found:
            err(f"  - step {item.step_id} ({item.action}): {item.text}")


def _confirm(count: int) -> str:
    """Ask once whether to run the plan; who confirmed it."""
    prompter = prompter_for({}, "rollback", yes=False)
    if not prompter.interactive:
        raise UsageError(
            "rollback: no terminal to confirm the plan on; nothing was changed (pass --yes to "
            "run it, --check to see what it would send)"
        )
    answer = prompter.confirm("rollback", f"Run these {count} undo(s) as a new run?")
    if not answer.value:
        err("kmsir rollback: not confirmed; nothing was changed")
        raise typer.Exit(1)
    return str(answer.source)

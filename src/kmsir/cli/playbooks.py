"""Commands that read playbooks and catalogs without running anything: validate, plan,
actions, scenarios. None of them calls AWS."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kmsir.cli.common import (
    InputPairs,
    PlaybookRef,
    app,
    err,
    handled,
    load_playbook,
    parse_inputs,
    say,
)
from kmsir.errors import PlaybookError


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
        if world.planted:  # a review scenario: what it plants is in its file, for the debrief
            say(f"{'':<24} plants {len(world.planted)} problems: kmsir audit --sandbox {name}")


@app.command()
@handled
def plan(
    playbook_ref: PlaybookRef,
    inputs: InputPairs = None,
) -> None:
    """Show what a playbook would do: steps, API calls, IAM permissions, undo. No AWS call."""
    from kmsir import actions
    from kmsir.evidence.calls import describe
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
            say(f"    calls: {describe(call)}")
        if step.permissions:
            say(f"    IAM: {', '.join(step.permissions)}")
    needed = planning.permissions(steps)
    changing = [s.id for s in steps if s.mutating]
    say(f"\nChanges AWS state: {', '.join(changing) or 'nothing'}")
    say(f"IAM permissions for the whole playbook ({len(needed)}): {', '.join(needed)}")

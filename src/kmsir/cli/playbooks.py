"""Commands that read playbooks and catalogs without running anything: validate, plan,
actions, scenarios. None of them calls AWS."""

from __future__ import annotations

import json
import re
import textwrap
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

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
from kmsir.errors import UsageError

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo


@app.command()
@handled
def validate(
    files: Annotated[
        list[Path], typer.Argument(metavar="FILE...", help="Playbooks or scenarios to check.")
    ],
    strict: Annotated[
        bool, typer.Option("--strict", help="Count lint warnings as problems (exit 2).")
    ] = False,
) -> None:
    """Validate playbooks and sandbox scenarios without any AWS call: every problem of a file
    at once, each naming file:line, then a playbook's lint warnings (exit 0 valid, 2 invalid;
    with --strict a warning makes a file invalid).

    A file is a scenario when it has no steps: and either lies under a directory named
    scenarios/ or has keys: or briefing:; a scenario is loaded as a run would load it (its
    model, the JSON Schema's source, then what spans its sections: references, its
    playbook's steps and choices, templates).

    Example: kmsir validate --strict playbooks/*.yaml playbooks/scenarios/*.yaml
    """
    from kmsir import actions
    from kmsir.playbook import model as playbook

    catalog = actions.catalog()
    invalid = 0
    for path in files:
        if _is_scenario(path):
            invalid += not _valid_scenario(path)
            continue
        checked = playbook.check_file(path, catalog)
        for problem in checked.problems:
            err(problem)
        # an invalid file's warnings wait for its problems to be fixed, unless they are
        # problems too (--strict)
        if strict or not checked.problems:
            for warning in checked.warnings:
                err(warning)
        if checked.problems or (strict and checked.warnings) or checked.playbook is None:
            invalid += 1
            continue
        say(f"{path}: valid ({len(checked.playbook.steps)} steps)")
    if invalid:
        raise typer.Exit(2)


def _is_scenario(path: Path) -> bool:
    """Whether ``validate`` checks ``path`` as a scenario: a mapping without ``steps:``
    (a playbook beside its scenarios has them) under a ``scenarios/`` directory or with
    ``keys:`` or ``briefing:``. A file that does not parse is checked as a playbook, which
    reports why, unless it lies under ``scenarios/``."""
    from kmsir.errors import PlaybookError
    from kmsir.playbook import yamlsafe

    under = "scenarios" in path.resolve().parent.parts
    try:
        data = yamlsafe.load_file(path).data
    except PlaybookError:
        return under
    if not isinstance(data, dict) or "steps" in data:
        return False
    return under or bool({"keys", "briefing"} & set(data))


def _valid_scenario(path: Path) -> bool:
    """Load the scenario at ``path``: its problems to stderr (each naming file:line), or a
    line saying it is valid."""
    from kmsir.errors import PlaybookError
    from kmsir.sandbox import scenario

    try:
        world = scenario.load(path)
    except PlaybookError as exc:
        for problem in exc.problems:
            err(problem)
        return False
    hidden = "with" if world.ground_truth or world.expected else "without"
    say(
        f"{path}: valid scenario (playbook {world.playbook}, {len(world.keys)} keys, "
        f"{len(world.injects)} injects, {hidden} a facilitator's rubric)"
    )
    return True


@app.command("actions")
@handled
def list_actions(
    names: Annotated[
        list[str] | None,
        typer.Argument(metavar="[ACTION]...", help="Only these actions (default: all)."),
    ] = None,
) -> None:
    """List the actions a playbook can use: what each does, its parameters (type, default,
    required) and its outputs (what later steps read as steps.<id>.<output>).

    Example: kmsir actions kms.snapshot
    """
    from kmsir import actions
    from kmsir.playbook.checks import did_you_mean

    found = actions.registry()
    for name in names or []:
        if name not in found:
            raise UsageError(f"no action {name!r}{did_you_mean(name, sorted(found))}")
    for name, action in sorted(found.items()):
        if names and name not in names:
            continue
        kind = "mutating" if action.mutating else "read-only"
        undo = f", undo: {action.inverse}" if action.inverse else ""
        doc = ((action.__doc__ or "").strip().splitlines() or [""])[0]
        say(f"{name:<22} {kind}{undo}\n    {doc}")
        params = [_parameter(n, info) for n, info in action.params.model_fields.items()]
        say(_wrapped("with: ", params or ["nothing"]))
        outputs = [f"{n} ({t})" for n, t in action.outputs.items()]
        say(_wrapped("outputs: ", outputs or ["not declared"]))


def _wrapped(label: str, items: list[str]) -> str:
    """``label`` and ``items``, comma-separated, wrapped under the action's description
    between items, never inside one."""
    text = textwrap.fill(
        ", ".join(item.replace(" ", "\xa0") for item in items),
        width=100,
        initial_indent=f"    {label}",
        subsequent_indent=" " * 6,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return text.replace("\xa0", " ")


def _parameter(name: str, info: FieldInfo) -> str:
    """``name (type, required)``, ``name (type, default X)`` or ``name (type, optional)``."""
    shown = info.alias or name
    kind = _type_word(info.annotation)
    if info.is_required():
        return f"{shown} ({kind}, required)"
    default = info.get_default(call_default_factory=True)
    if default is None:
        return f"{shown} ({kind}, optional)"
    return f"{shown} ({kind}, default {_literal(default)})"


def _literal(value: Any) -> str:
    """A default as a playbook would write it."""
    if isinstance(value, str) and re.fullmatch(r"[\w./:*-]+", value):
        return value
    return json.dumps(value, default=str)


def _type_word(annotation: Any) -> str:
    """A parameter's type as a playbook author reads it: ``str``, ``list[str]``,
    ``lookup|files``; ``None`` of an optional parameter is left out."""
    from pydantic import BaseModel

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "|".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        return "|".join(_type_word(a) for a in args if a is not type(None))
    if origin in (list, tuple, set, frozenset):
        return f"list[{_type_word(args[0])}]" if args else "list"
    if origin is dict:
        plain = not args or Any in args
        return "dict" if plain else f"dict[{_type_word(args[0])}, {_type_word(args[1])}]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "dict"
    return getattr(annotation, "__name__", None) or str(annotation)


@app.command()
@handled
def scenarios() -> None:
    """List the sandbox scenarios: each one's id, title, the playbook it was written for and
    its briefing (what the players are told; never what only the facilitator knows).
    """
    from kmsir.sandbox import scenario

    for n, name in enumerate(scenario.available()):
        world = scenario.load(name)
        say(("\n" if n else "") + f"{name}: {world.title}")
        say(f"    playbook: {world.playbook}")
        say(
            textwrap.fill(
                " ".join(world.briefing.split()),
                width=100,
                initial_indent="    briefing: ",
                subsequent_indent=" " * 6,
                break_on_hyphens=False,
            )
        )
        if world.planted:  # a review scenario: what it plants is in its file, for the debrief
            say(f"    plants {len(world.planted)} problems: kmsir audit --sandbox {name}")


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
        if step.for_each:
            say(f"    for each item of: {step.for_each} (each its own step and decision)")
        for name, value in step.given.items():  # every parameter the step gives
            shown = value if isinstance(value, str) else json.dumps(value, default=str)
            shown = " ".join(shown.split())
            say(f"    with {name}: {shown if len(shown) <= 200 else shown[:197] + '...'}")
        for call in step.calls:
            say(f"    calls: {describe(call)}")
        if step.permissions:
            say(f"    IAM: {', '.join(step.permissions)}")
    needed = planning.permissions(steps)
    changing = [s.id for s in steps if s.mutating]
    say(f"\nChanges AWS state: {', '.join(changing) or 'nothing'}")
    say(f"IAM permissions for the whole playbook ({len(needed)}): {', '.join(needed)}")

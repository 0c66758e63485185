"""Commands for writing playbooks and granting what they need: ``schema`` (the playbook JSON
Schema an editor checks and completes playbooks with). None of them calls AWS."""

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
    write_out,
)


@app.command()
@handled
def schema(
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="Write the schema here, not to stdout."),
    ] = None,
    scenario: Annotated[
        bool, typer.Option("--scenario", help="The sandbox scenario files' schema instead.")
    ] = False,
) -> None:
    """Print the playbook JSON Schema (or with --scenario the scenario one), generated from
    the models and the actions.

    Example: kmsir schema --out schema/playbook.schema.json
    """
    from kmsir import actions
    from kmsir.playbook import schema as playbook_schema
    from kmsir.sandbox import scenario_schema

    if scenario:
        text = scenario_schema.schema_text()
    else:
        text = playbook_schema.schema_text(actions.catalog())
    if out is None:
        say(text.removesuffix("\n"))
    else:
        write_out(out, text)


@app.command()
@handled
def permissions(
    playbook_ref: PlaybookRef,
    inputs: InputPairs = None,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Leave out the steps that change anything.")
    ] = False,
) -> None:
    """Print the least-privilege IAM policy (JSON) a role needs to run a playbook.

    Example: kmsir permissions playbooks/kms-key-compromise.yaml -i key=alias/payments-prod
    """
    import json

    from kmsir import actions
    from kmsir.playbook.model import resolve_inputs
    from kmsir.run import permissions as granting

    book = load_playbook(playbook_ref).playbook
    values = resolve_inputs(book, parse_inputs(inputs or []), partial=True)
    document = granting.policy(book, actions.registry(), values, read_only=read_only)
    for warning in granting.warnings(document):
        err(f"kmsir: warning: {warning}")
    say(json.dumps(document, indent=2))

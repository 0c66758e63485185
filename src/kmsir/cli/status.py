"""``kmsir status``: the incidents of an evidence directory, their runs, where each stands and
the command that continues it.

The reading is ``evidence.listing`` (one projection of each journal, locks checked without
being taken); this module only draws it: a table per incident on stdout, or JSON.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kmsir.cli.common import app, handled, say
from kmsir.errors import UsageError
from kmsir.inert import visible

if TYPE_CHECKING:
    from rich.console import Console

    from kmsir.evidence.listing import Listing, RunStatus

STATE_STYLE = {
    "running": "bold cyan",
    "unfinished": "bold yellow",
    "open risks": "bold yellow",
    "succeeded": "green",
    "failed": "bold red",
    "aborted": "red",
    "unreadable": "red",
}


@app.command()
@handled
def status(
    evidence_dir: Annotated[
        Path,
        typer.Option("--evidence-dir", help="Where the bundles are (or one incident's folder)."),
    ] = Path("evidence"),
    fmt: Annotated[
        str, typer.Option("--format", metavar="table|json", help="What stdout gets.")
    ] = "table",
) -> None:
    """Incidents and their runs: running, unfinished, failed, succeeded or with open risks,
    and the command that continues each (newest last)."""
    from kmsir.evidence.listing import MAX_RUNS, list_runs

    if fmt not in ("table", "json"):
        raise UsageError(f"--format {fmt[:20]!r}: expected table or json")
    if not evidence_dir.is_dir():
        what = "is not a directory" if evidence_dir.exists() else "does not exist"
        raise UsageError(
            f"--evidence-dir {evidence_dir} {what} (runs write their bundles under "
            "--evidence-dir, ./evidence by default)"
        )
    listing = list_runs(evidence_dir, limit=MAX_RUNS)
    if fmt == "json":
        say(json.dumps(as_json(listing), indent=2, ensure_ascii=False))
        return
    draw(listing)


def next_command(run: RunStatus) -> str | None:
    """The command that continues ``run`` (None: nothing to do, or wait for it)."""
    if run.next is None:
        return None
    return shlex.join(["kmsir", run.next, str(run.path)])


def as_json(listing: Listing) -> dict[str, Any]:
    """The listing for scripts: every field, the command to continue each run."""

    def one(run: RunStatus) -> dict[str, Any]:
        return {
            "run": run.run,
            "path": str(run.path),
            "state": run.state,
            "continue": next_command(run),
            "problem": run.problem,
            "mode": run.mode,
            "playbook": run.playbook,
            "started": run.started,
            "ended": run.ended,
            "error": run.error,
            "last_step": run.last_step,
            "last_status": run.last_status,
            "open_risks": run.open_risks,
            "journal_problems": run.journal_problems,
            "holder": run.holder,
            "facilitates": run.facilitates,
        }

    return {
        "evidence_dir": str(listing.root),
        "incidents": [
            {"incident": incident, "runs": [one(r) for r in runs]}
            for incident, runs in listing.incidents.items()
        ],
        "not_shown": listing.not_shown,
        "not_incidents": listing.strays,
    }


def _state(run: RunStatus) -> str:
    if run.state == "open risks":
        return f"open risks ({len(run.open_risks)})"
    return run.state


def _when(moment: str | None) -> str:
    """``2026-12-01T17:36:06.123456Z`` as ``12-01 17:36Z`` (the run id has it in full)."""
    return "" if moment is None else moment.replace("T", " ")[5:16] + "Z"


def _then(run: RunStatus) -> str | None:
    """The line under an incident's table that says how to go on with ``run``, if any."""
    command = next_command(run)
    if run.state == "unreadable":
        said = f"{run.run}: cannot be listed: {run.problem}"
        return said + (f"; check it with: {command}" if command else "")
    if run.facilitates is not None and command is None and run.state != "running":
        debrief = ["kmsir", "tabletop", "debrief", str(run.facilitates.get("bundle") or "PLAYERS")]
        read = shlex.join([*debrief, "--facilitator", str(run.path)])
        return f"{run.run} is a tabletop facilitator's bundle ({run.state}), read with: {read}"
    if command is not None:
        doing = {"report": "read them with", "verify": "check it with"}.get(run.next or "")
        return f"{run.run} {_state(run)}, {doing or 'continue with'}: {command}"
    if run.state == "running":
        holder = run.holder or {}
        who = (
            f"pid {holder.get('pid')} on {holder.get('host')}"
            if holder.get("pid")
            else "a kmsir process writes its journal"
        )
        return f"{run.run} is running ({who}): wait for it"
    return None


def draw(listing: Listing, out: Console | None = None) -> None:
    """A table an incident, newest last, and under it how to go on with each run that needs
    it: the command on a line of its own (never wrapped, so it copies whole)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    if out is None:
        out = Console(highlight=False)
        if not out.is_terminal and "COLUMNS" not in os.environ:
            out.width = 200  # a file or a pipe: one line a run, whatever the 80 default
    total = sum(len(runs) for runs in listing.incidents.values())
    if not total and not listing.strays:
        out.print(Text(f"no runs under {visible(str(listing.root))}"))
        return
    if listing.not_shown:
        older = f"{listing.not_shown} older run(s) not shown (the newest {total} are)"
        out.print(Text(older, style="dim"))
    for incident, runs in listing.incidents.items():
        out.print(Text(f"{visible(incident)} · {len(runs)} run(s)", style="bold"))
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0))
        # a narrow terminal wraps the playbook and the last step; the rest stays whole
        for column in ("run", "state", "mode", "playbook", "started", "last step"):
            wraps = column in ("playbook", "last step")
            table.add_column(column, no_wrap=not wraps, overflow="fold")
        for run in runs:
            if run.state == "unreadable":
                continue
            last = f"{run.last_step} ({run.last_status})" if run.last_step else ""
            table.add_row(
                Text(visible(run.run)),
                Text(_state(run), style=STATE_STYLE.get(run.state, "")),
                Text(visible(run.mode or "")),
                Text(visible(run.playbook or "")),
                Text(_when(run.started)),
                Text(visible(last)),
            )
        if table.row_count:
            out.print(table)
        for run in runs:
            then = _then(run)
            if then is not None:
                style = STATE_STYLE["unreadable"] if run.state == "unreadable" else ""
                out.print(Text(f"  {visible(then)}", style=style), soft_wrap=True)
    for stray in listing.strays:
        out.print(Text(visible(stray), style="dim"), soft_wrap=True)

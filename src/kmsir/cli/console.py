"""What the runner draws on the terminal with rich: step outcomes, progress bars, the preview
before each step, the summary table at the end.

Everything goes to stderr (stdout carries only the report path). Text from AWS or playbooks
is never read as rich markup, and its control characters are shown as escapes (``\\x1b``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kmsir.inert import visible

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from kmsir.actions.base import ApprovalWait
    from kmsir.prompts import StepPreview
    from kmsir.run.engine import RunResult
    from kmsir.sandbox.scenario_model import Scenario

STATUS_STYLE = {
    "succeeded": "green",
    "already": "green",
    "failed": "bold red",
    "skipped": "yellow",
    "would-run": "cyan",
}
#: The longest step summary shown at the terminal: a note's own limit, so notes show whole.
MAX_SUMMARY = 20_000
_console: list[Console] = []
#: The progress display running now, if any: module-wide, so a prompt can stop it first.
_progress: list[Progress] = []


def console() -> Console:
    """The one stderr console every part of the CLI draws on."""
    if not _console:
        from rich.console import Console

        _console.append(Console(stderr=True, highlight=False))
    return _console[0]


class ConsoleReporter:
    """Draws step outcomes, notices and progress bars (long work: CloudTrail pages, keys)."""

    def __init__(self) -> None:
        self.console = console()

    def progress(self, what: str, done: int, total: int | None = None) -> None:
        if not self.console.is_terminal:
            return
        if not _progress:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            bar = Progress(
                SpinnerColumn(),
                TextColumn("  {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            )
            bar.start()
            _progress.append(bar)
        bar = _progress[0]
        task = next((t.id for t in bar.tasks if t.description == what), None)
        if task is None:
            task = bar.add_task(what, total=total)
        bar.update(task, completed=done, total=total)

    def step(self, step_id: str, title: str, status: str, summary: str) -> None:
        """A step's outcome and its whole summary, wrapped under the step id (a note's last
        sentence is often the one that matters: the summary table shows one line a step)."""
        from rich.text import Text

        pause_progress()
        shown = summary if len(summary) <= MAX_SUMMARY else summary[: MAX_SUMMARY - 3] + "..."
        body = Text(f"{visible(step_id)}: ", style="bold")
        body.append(visible(shown))
        head = Text(f"{status:>10} ", style=STATUS_STYLE.get(status, ""))
        indent = len(head)
        room = max(20, self.console.width - indent)
        for number, line in enumerate(body.wrap(self.console, room)):
            line.rstrip()
            self.console.print(Text.assemble(head if number == 0 else " " * indent, line))

    def notice(self, text: str) -> None:
        from rich.text import Text

        pause_progress()
        self.console.print(Text(f"    INJECT {visible(text)}", style="bold magenta"))

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """Rows under the step's outcome, indented like it (text from AWS inert)."""
        from rich.padding import Padding
        from rich.table import Table
        from rich.text import Text

        pause_progress()
        drawn = Table(title=Text(visible(title)), title_justify="left", show_edge=False)
        for column in columns:
            drawn.add_column(Text(column), overflow="fold")
        for row in rows:
            drawn.add_row(*(Text(visible(cell)) for cell in row))
        self.console.print(Padding(drawn, (0, 0, 0, 11)))

    def waiting(self, wait: ApprovalWait) -> None:
        """A step waiting for a second person: the commands to give them, the deadline;
        then a line for each answer that comes (text from the journal inert)."""
        from rich.text import Text

        pause_progress()
        for number, line in enumerate(wait.lines()):
            style = "bold yellow" if number == 0 else ""
            self.console.print(Text(visible(line), style=style), soft_wrap=True)


def pause_progress() -> None:
    """Stop the progress display (before a prompt or a line of output)."""
    if _progress:
        _progress.pop().stop()


def banner(text: str) -> None:
    """A line that must not be missed (SIMULATED, CHECK MODE)."""
    from rich.text import Text

    console().print(Text(visible(text), style="bold reverse"))


def simulated(world: Scenario) -> None:
    """The banner of a run in a sandbox scenario, then what its players are told: its title
    and briefing (never the hidden parts, which only the facilitator sees)."""
    from rich.text import Text

    banner(f"SIMULATED · sandbox scenario {world.id}, no AWS account")
    briefing = " ".join(world.briefing.split())
    console().print(Text(visible(f"{world.title}. {briefing}")))


def _visible_preview(preview: StepPreview) -> StepPreview:
    def one(text: str | None) -> str | None:
        return None if text is None else visible(text)

    return dataclasses.replace(
        preview,
        title=visible(preview.title),
        does=visible(preview.does),
        target=one(preview.target),
        state=one(preview.state),
        impact=one(preview.impact),
        notes=tuple(visible(n) for n in preview.notes),
    )


def show_preview(preview: StepPreview) -> None:
    """The panel shown before a step: what it does; for a change, the exact calls, the live
    state and the undo."""
    from rich.panel import Panel
    from rich.text import Text

    from kmsir.evidence.calls import describe

    pause_progress()
    preview = _visible_preview(preview)
    calls = [visible(describe(c)) for c in preview.calls]
    body = Text()
    body.append(f"{preview.title}\n", style="bold")
    body.append(f"{preview.action}: {preview.does.replace('``', '')}\n", style="dim")
    if preview.target:
        body.append("target   ", style="bold").append(f"{preview.target}\n")
    if preview.state:
        body.append("current  ", style="bold").append(f"{preview.state}\n", style="yellow")
    if preview.mutating:
        for call in calls:
            body.append("will call ", style="bold").append(f"{call}\n", style="bold cyan")
    elif calls:
        body.append("reads    ", style="bold").append(", ".join(calls) + "\n")
    if preview.impact:
        body.append("impact   ", style="bold").append(f"{preview.impact}\n", style="magenta")
    for note in preview.notes:
        body.append(f"note     {note}\n", style="italic")
    if preview.mutating:
        irreversible = preview.inverse == "IRREVERSIBLE"
        body.append("undo     ", style="bold")
        body.append(f"{preview.inverse}\n", style="bold red" if irreversible else "green")
    phase = f" · {preview.phase}" if preview.phase else ""
    kind = "CHANGES AWS STATE" if preview.mutating else "read-only"
    border = (
        ("red" if preview.inverse == "IRREVERSIBLE" else "yellow") if preview.mutating else "blue"
    )
    body.rstrip()
    console().print(
        Panel(
            body,
            title=Text(f"Step {preview.position} {preview.step_id}{phase} · {kind}"),
            title_align="left",
            border_style=border,
        )
    )


def summary_table(result: RunResult) -> None:
    """Every step's outcome, as a table, at the end of a run."""
    from rich.table import Table
    from rich.text import Text

    if not result.steps:
        return
    title = f"Run {run_status(result)}"
    table = Table(title=title, title_justify="left", expand=False)
    widest_id = max(len(r.step_id) for r in result.steps)
    widest_status = max(len(r.status) for r in result.steps)
    table.add_column("#", justify="right", style="dim", no_wrap=True, min_width=2)
    table.add_column("step", style="bold", no_wrap=True, min_width=min(widest_id, 30))
    table.add_column("status", no_wrap=True, min_width=widest_status)
    # one line a step: the full summaries were printed as each step ended
    table.add_column("summary", no_wrap=True)
    # the borders and padding of four columns take 13 characters
    room = max(20, console().width - 13 - 2 - min(widest_id, 30) - widest_status)
    for number, record in enumerate(result.steps, start=1):
        summary = " ".join(record.summary.split())
        summary = summary if len(summary) <= room else summary[: room - 1] + "…"
        table.add_row(
            str(number),
            Text(visible(record.step_id)),
            Text(record.status, style=STATUS_STYLE.get(record.status, "")),
            Text(visible(summary)),
        )
    console().print(table)
    open_risks(result.open_risks)


def run_status(result: RunResult) -> str:
    """How a run ended, in words: "succeeded with open risks" when it left some."""
    if result.status == "succeeded" and result.open_risks:
        return "succeeded with open risks"
    return result.status


def open_risks(risks: list[dict[str, Any]]) -> None:
    """The risks a run left open, each in full (wrapped, never cut), with its deadline."""
    from rich.text import Text

    if not risks:
        return
    console().print(Text(f"Open risks ({len(risks)}):", style="bold yellow"))
    for risk in risks:
        until = f" (until {risk['until']})" if risk.get("until") else ""
        line = Text("  - ", style="yellow")
        line.append(visible(str(risk.get("text", ""))) + until)
        console().print(line)

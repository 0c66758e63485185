"""``kmsir tabletop debrief`` and ``kmsir tabletop compare``: the facilitator's report of an
exercise (``tabletop.debrief``), and two teams side by side. Both read bundles only, and never
write into one; a players' bundle is verified first (as ``kmsir verify``): an altered one is
refused (its TAMPERED lines, exit 1), never scored."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kmsir.cli.common import err, handled, say
from kmsir.cli.tabletop import tabletop_app
from kmsir.errors import UsageError

if TYPE_CHECKING:
    from kmsir.tabletop.exercise import Exercise

Bundle = Annotated[Path, typer.Argument(metavar="BUNDLE", help="The players' bundle directory.")]


@tabletop_app.command()
@handled
def debrief(
    bundle: Bundle,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            metavar="FILE",
            help="Write FILE.md and FILE.html (default: debrief-<run-id>.md/.html here); "
            "never inside a bundle.",
        ),
    ] = None,
    facilitator: Annotated[
        list[Path] | None,
        typer.Option(
            "--facilitator",
            metavar="BUNDLE",
            help="The facilitator's bundle (default: those found beside the players' run).",
        ),
    ] = None,
) -> None:
    """The facilitator's debrief of an exercise: decisions against the expected ones, times,
    evidence never looked at, observations, the practices that would have prevented it, and
    a score out of 100 with its rubric."""
    from kmsir.tabletop import debrief as debriefs

    _check_bundle(bundle)
    found = _load(bundle, facilitator=facilitator or None)
    for warning in found.warnings:
        err(f"warning: {warning}")
    md, html = debriefs.write(found, out=out)
    say(f"debrief: {md}")
    say(f"debrief (HTML): {html}")


@tabletop_app.command()
@handled
def compare(
    a: Annotated[Path, typer.Argument(metavar="A", help="One team's players' bundle.")],
    b: Annotated[Path, typer.Argument(metavar="B", help="The other team's players' bundle.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="Write the Markdown here (default: print it)."),
    ] = None,
) -> None:
    """Two teams' debriefs side by side, as a Markdown table."""
    from kmsir.tabletop import debrief as debriefs

    for path in (a, b):
        _check_bundle(path)
    one, two = _load(a), _load(b)
    text = debriefs.render_compare(one, two)
    if out is None:
        typer.echo(text, nl=False)
        return
    bundles = [p for ex in (one, two) for p in (ex.bundle, *ex.facilitator_bundles) if p]
    debriefs.refuse_inside(bundles, out)
    debriefs.private_text(out, text)
    say(str(out))


def _load(bundle: Path, facilitator: list[Path] | None = None) -> Exercise:
    """The exercise of a verified players' bundle; altered: its TAMPERED lines on stderr and
    exit 1, as ``kmsir verify``."""
    from kmsir.errors import TamperedError
    from kmsir.tabletop import exercise

    try:
        return exercise.load(bundle, facilitator=facilitator, debrief=True)
    except TamperedError as exc:
        for problem in exc.problems:
            err(f"TAMPERED: {problem}")
        err(f"kmsir tabletop: {bundle} was altered: it is not debriefed")
        raise typer.Exit(1) from None


def _check_bundle(path: Path) -> None:
    if not path.is_dir():
        raise UsageError(f"{path}: no such bundle directory")

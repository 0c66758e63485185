"""``kmsir audit``: the posture review (the ``kms-posture-review`` playbook) and its verdict.

The review runs like any playbook (a bundle, a journal, a report) against AWS or a sandbox
scenario; stdout then carries only the result, as a table, the review's JSON or SARIF, so
that ``kmsir audit --format sarif > review.sarif`` is a CI step. A review that completes
exits 0 whatever it found; ``--fail-on SEVERITY`` makes failures at or above it exit 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kmsir.cli.common import (
    EvidenceDir,
    InputPairs,
    app,
    default_incident,
    err,
    handled,
    how_to_continue,
    load_playbook,
    parse_inputs,
    prompter_for,
    write_reports,
)
from kmsir.cli.scope import Accounts, Exclude, ExternalId, Org, Regions, RoleName, scope_request
from kmsir.errors import UsageError
from kmsir.posture import SEVERITIES, Review

if TYPE_CHECKING:
    from kmsir.aws.targets import ScopeRequest
    from kmsir.run.engine import RunResult

PLAYBOOK = "kms-posture-review"
FORMATS = ("table", "json", "sarif")
#: Failures listed under the table (the report and posture.json have them all).
TABLE_FAILURES = 30


@app.command()
@handled
def audit(
    profile: Annotated[str | None, typer.Option("--profile", help="AWS profile.")] = None,
    region: Annotated[str | None, typer.Option("--region", help="AWS Region.")] = None,
    sandbox: Annotated[
        str | None,
        typer.Option("--sandbox", metavar="SCENARIO", help="Review a sandbox scenario."),
    ] = None,
    compare: Annotated[
        Path | None,
        typer.Option("--compare", metavar="BUNDLE", help="An earlier review's bundle."),
    ] = None,
    evidence_dir: EvidenceDir = Path("evidence"),
    incident: Annotated[str | None, typer.Option("--incident", help="Incident id.")] = None,
    fmt: Annotated[
        str, typer.Option("--format", metavar="table|json|sarif", help="What stdout gets.")
    ] = "table",
    waivers: Annotated[
        Path | None,
        typer.Option("--waivers", help="YAML: check, resource, reason, expires per waiver."),
    ] = None,
    fail_on: Annotated[
        str | None,
        typer.Option(
            "--fail-on",
            metavar="SEVERITY",
            help="Exit 1 on failures at or above: critical, high, medium, low, info.",
        ),
    ] = None,
    inputs: InputPairs = None,
    accounts: Accounts = None,
    org: Org = False,
    exclude: Exclude = None,
    role_name: RoleName = None,
    external_id: ExternalId = None,
    regions: Regions = None,
) -> None:
    """Review the account (or a sandbox scenario) against the ten KMS security best
    practices: read-only; a bundle and a report like every run. With --accounts or --org,
    and --regions, every account and Region of the scope."""
    from kmsir.evidence import bundle as evidence

    scope = scope_request(
        accounts=accounts,
        org=org,
        exclude=exclude,
        role_name=role_name,
        external_id=external_id,
        regions=regions,
    )

    if scope is not None and compare is not None:
        raise UsageError(
            "--compare: a review over several accounts or Regions cannot be compared with "
            "an earlier one; compare one account and Region at a time"
        )
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: expected one of {', '.join(FORMATS)}")
    if fail_on is not None and fail_on not in SEVERITIES:
        raise UsageError(f"--fail-on {fail_on}: expected one of {', '.join(SEVERITIES)}")
    given: dict[str, Any] = parse_inputs(inputs or [])
    if waivers is not None:
        given["waivers"] = str(_checked_waivers(_existing(waivers, "--waivers")))
    if compare is not None:
        given["compare"] = str(_checked_review(earlier_review(compare), compare))
    incident_id = evidence.check_incident_id(incident or default_incident())
    result = _review(given, incident_id, evidence_dir, sandbox, profile, region, scope)
    written = write_reports(result.bundle)
    if written:
        err(f"report: {written[0]} (HTML: {written[1]})")
    if result.status != "succeeded":
        err(f"kmsir: review {result.status}: {result.error}{how_to_continue()}")
        raise typer.Exit(1)
    review = Review.loads(review_path(result.bundle).read_bytes())
    _print(review, fmt)
    if fail_on is not None and (failed := review.failures(fail_on)):
        err(f"kmsir audit: {len(failed)} failure(s) at or above {fail_on}")
        raise typer.Exit(1)


def _review(
    given: dict[str, Any],
    incident_id: str,
    evidence_dir: Path,
    sandbox: str | None,
    profile: str | None,
    region: str | None,
    scope: ScopeRequest | None = None,
) -> RunResult:
    """Run the posture-review playbook (against ``sandbox``'s world when given), over
    ``scope``'s accounts and Regions when given."""
    from kmsir.cli.runs import Resume, execute, scenario_source
    from kmsir.run.engine import RunOptions

    loaded = load_playbook(PLAYBOOK)
    world = None
    if sandbox:
        from kmsir.sandbox import scenario as scenarios

        world = scenarios.load(sandbox)
        # any scenario's world can be reviewed; the inputs are only a review scenario's
        if world.playbook == PLAYBOOK:
            given = {**world.inputs, **given}
    options = RunOptions(
        incident_id=incident_id,
        evidence_dir=evidence_dir,
        mode="sandbox" if world else "live",
        yes=True,  # read-only: nothing to approve
        scenario=world.id if world else None,
    )
    return execute(
        loaded,
        given,
        prompter_for({}, "audit", yes=True),
        options,
        world=world,
        source=scenario_source(sandbox) if sandbox else None,
        profile=profile,
        region=region,
        scope=scope,
        resume=Resume(profile, None, True),
    )


def _checked_waivers(path: Path) -> Path:
    """``--waivers``, read as the review will read it: a file that is no list of waivers is
    refused here, before any run or bundle (exit 2), not as a failed review."""
    from kmsir.evidence.bundle import read_outside
    from kmsir.posture import waivers as waiving

    data, _ = read_outside(path)
    try:
        waiving.load(data, str(path))
    except ValueError as exc:
        raise UsageError(f"--waivers: {exc}") from None
    return path.resolve()


def _checked_review(path: Path, given: Path) -> Path:
    """``--compare``'s review, read before the run: a file that is no review is refused."""
    from kmsir.evidence.bundle import read_outside

    data, _ = read_outside(path)
    try:
        Review.loads(data)
    except ValueError as exc:
        raise UsageError(f"--compare {given}: {exc}") from None
    return path


def _existing(path: Path, option: str) -> Path:
    if not path.exists():
        raise UsageError(f"{option} {path}: no such file or directory")
    return path


def review_path(bundle: Path) -> Path:
    """The ``posture.json`` of the review a bundle holds (its last ``kms.audit`` step)."""
    from kmsir.evidence.manifest import Bundle
    from kmsir.report.posture import review_step

    opened = Bundle.open(bundle)
    found = review_step(opened)
    if found is None or found[1] is None:
        raise UsageError(f"{bundle}: holds no completed posture review (kms.audit step)")
    return opened.artifact_path(found[1])


def earlier_review(path: Path) -> Path:
    """``--compare``: a bundle's review, or a ``posture.json`` given directly."""
    _existing(path, "--compare")
    if path.is_dir():
        return review_path(path).resolve()
    return path.resolve()


def _print(review: Review, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(review.as_json(), indent=2, sort_keys=True))
    elif fmt == "sarif":
        from kmsir import __version__
        from kmsir.posture.sarif import to_sarif

        print(json.dumps(to_sarif(review, version=__version__), indent=2, sort_keys=True))
    else:
        _table(review)


def _table(review: Review) -> None:
    """Per practice the count of each status, then the failures, the most severe first."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from kmsir.inert import visible
    from kmsir.posture import table as summary

    out = Console(highlight=False)
    scope = review.scope
    title = (
        f"KMS posture review: account {scope.get('account', '?')}, {scope.get('region', '?')}, "
        f"{scope.get('keys', 0)} key(s); rule set {review.ruleset.get('version', '?')}"
    )
    table = Table(title=visible(title), title_justify="left")
    table.add_column("#", justify="right", no_wrap=True)
    # the counts keep their headers whole; the practice's title wraps (80 columns fit)
    table.add_column("practice", ratio=1, overflow="fold")
    for column in summary.COLUMNS:
        header = summary.HEADERS.get(column, column)
        table.add_column(header, justify="right", no_wrap=True, min_width=len(header))
    for number, practice, *counts, _ in summary.rows(review, worst=0):
        failed = counts[0] != "·"
        table.add_row(
            number, practice, Text(counts[0], style="bold red" if failed else ""), *counts[1:]
        )
    out.print(table)
    failures = review.failures()
    for check in failures[:TABLE_FAILURES]:
        resources = ", ".join(check.resources) or "(account)"
        style = "red" if check.severity in SEVERITIES[:2] else "yellow"
        line = Text(f"{check.severity:<8} ", style=style)
        line.append(visible(f"{check.id}: {resources}"))
        out.print(line, soft_wrap=True)  # an ARN stays whole, to copy
    if len(failures) > TABLE_FAILURES:
        out.print(f"... and {len(failures) - TABLE_FAILURES} more failure(s): see the report")
    if not failures:
        out.print("No failures.")
    for cut in review.scope.get("cut") or []:  # a listing stopped at its bound: said
        out.print(Text(visible(f"not all read: {cut}"), style="yellow"), soft_wrap=True)

"""``kmsir cloudtrail verify-logs``: trail log files proven unaltered by CloudTrail's signed
digests, from a folder, a trail bucket or a kmsir bundle's saved copy, without a playbook.

Exit 0: nothing failed (files no digest covers are said to be unproven, not failures); 1:
tampering found (or a bundle's re-check that does not give its recorded answer); 2: bad
input, in one line."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kmsir.cli.common import handled, live_clients, say, write_out
from kmsir.cli.trail import cloudtrail_app
from kmsir.errors import UsageError

if TYPE_CHECKING:
    from kmsir.run.scan import BucketReading
    from kmsir.run.verify_logs import Checked, Keys
    from kmsir.trail.files import ScanStats


@cloudtrail_app.command("verify-logs")
@handled
def cloudtrail_verify_logs(
    target: Annotated[
        str,
        typer.Argument(
            metavar="PATH",
            help="A copy of trail logs and digests (aws s3 sync), s3://BUCKET/PREFIX (a trail "
            "bucket; PREFIX: the part before AWSLogs/), or a kmsir bundle (its saved copy, "
            "checked offline).",
        ),
    ],
    since: Annotated[
        str | None,
        typer.Option("--since", metavar="TIME", help="ISO time or duration ago (7d)."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option("--until", metavar="TIME", help="ISO time or duration ago."),
    ] = None,
    public_keys: Annotated[
        Path | None,
        typer.Option(
            "--public-keys",
            metavar="FILE",
            help="The trail's public keys: aws cloudtrail list-public-keys output, or a "
            "bundle's trail-integrity.json. Default: ListPublicKeys (the bundle's own, for a "
            "bundle).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="The verdicts as JSON (trail-integrity)."),
    ] = None,
    profile: Annotated[
        str | None, typer.Option("--profile", metavar="PROFILE", help="AWS profile.")
    ] = None,
    region: Annotated[
        str | None,
        typer.Option(
            "--region",
            metavar="REGION",
            help="AWS Region of the clients (every Region's logs and digests are read; "
            "ListPublicKeys is asked in each digest's Region).",
        ),
    ] = None,
) -> None:
    """Check trail log files against CloudTrail's signed, chained digests: each file is
    validated, hash mismatch, deleted, not covered (unproven), digest missing, digest
    signature invalid or chain broken. Prints a summary line, then one line per problem.
    Exit 0 when nothing failed (unproven files are said, not failed), 1 when tampering is
    found, 2 on bad input.

    A kmsir bundle is re-checked offline from its saved copy (each collect step's digests,
    signatures, public keys and kept log files; the recorded SHA-256 of logs not kept), and
    the answer compared with the recorded one.

    Example: kmsir cloudtrail verify-logs s3://org-trail/logs --since 7d"""
    from kmsir.cli.trail import parse_window
    from kmsir.inert import one_line
    from kmsir.run import verify_logs

    start, end = parse_window(since, until)
    keys = keys_option(public_keys, profile, region)
    if out is not None:
        write_out(out, "")  # fail now, not after the check
    if target.startswith("s3://"):
        bucket = target.removeprefix("s3://").partition("/")[0]
        if not bucket:
            raise UsageError(f"{one_line(target, 200)}: no bucket named (s3://BUCKET/PREFIX)")
        checks = [
            verify_logs.check_bucket(
                target,
                keys,
                lambda: live_clients(profile, region),
                since=start,
                until=end,
            )
        ]
    else:
        path = Path(target)
        if not path.exists():
            raise UsageError(f"no such file or folder: {one_line(target, 200)}")
        if is_bundle(path):
            if since or until:
                raise UsageError(
                    f"{one_line(target, 200)} is a kmsir bundle: --since/--until do not "
                    f"apply (each collect step's own window is re-checked)"
                )
            from kmsir.run.verify_bundle import recheck

            checks = recheck(path, keys.given)
        else:
            holder = enclosing_bundle(path)
            if holder is not None:
                bundle = one_line(str(holder), 200)
                raise UsageError(
                    f"{one_line(target, 200)} is inside the kmsir bundle {bundle}: check the "
                    f"bundle itself (kmsir cloudtrail verify-logs {bundle}), with the days "
                    f"and keys its steps recorded"
                )
            checks = [verify_logs.check_folder(path, keys, since=start, until=end)]
    show(checks)
    if out is not None:
        write_out(out, as_json(checks))
    if any(c.failed for c in checks):
        raise typer.Exit(1)


def is_bundle(path: Path) -> bool:
    """A kmsir bundle: a folder holding a journal."""
    from kmsir.evidence.bundle import JOURNAL

    return path.is_dir() and (path / JOURNAL).is_file()


def enclosing_bundle(path: Path) -> Path | None:
    """The kmsir bundle ``path`` is inside (a folder above it holding a journal, as
    ``is_bundle`` decides), else ``None``: part of a bundle's saved copy, checked as a
    folder, lacks the days read and the keys the step recorded."""
    for folder in path.resolve().parents:
        if is_bundle(folder):
            return folder
    return None


def show(checks: list[Checked], *, say: Callable[[str], None] = say) -> None:
    """Each check's summary line, its problems, its notes and, for a bundle, whether the
    re-check gave the recorded answer; one line each, whatever file names they quote
    (``say``: stdout; the scan's summary goes to stderr)."""
    from kmsir.inert import one_line

    for checked in checks:
        if checked.label:
            say(one_line(checked.label))
        say(one_line(checked.result.summary()))
        for line in checked.result.problem_lines():
            say(one_line(f"  {line}"))
        for note in checked.notes:
            say(one_line(f"note: {note}"))
        if checked.recorded is not None:
            if checked.differences:
                say("DIFFERS from the answer recorded in the bundle:")
                for difference in checked.differences:
                    say(one_line(f"  {difference}"))
            elif checked.proven:
                say(
                    f"same answer as recorded in the bundle, but for {checked.proven} "
                    f"proven now with the keys given"
                )
            else:
                say("same answer as recorded in the bundle")


def as_json(checks: list[Checked]) -> str:
    """The checks' verdicts as JSON (``trail-integrity.json``'s schema; a list for a bundle
    with several collect steps)."""
    import json

    documents = [{**c.result.to_json(), **({"label": c.label} if c.label else {})} for c in checks]
    return json.dumps(documents[0] if len(documents) == 1 else documents, indent=2) + "\n"


def keys_option(public_keys: Path | None, profile: str | None, region: str | None) -> Keys:
    """``--public-keys FILE`` read (a bad file is a usage error, before any work), else
    ``ListPublicKeys`` with the ambient credentials when the check needs them."""
    from kmsir.inert import one_line
    from kmsir.run import verify_logs

    if public_keys is None:
        if profile is not None:
            live_clients(profile, region).session()  # a profile that does not exist: now
        return verify_logs.Keys(clients=lambda: live_clients(profile, region))
    return verify_logs.Keys(verify_logs.read_public_keys(public_keys), one_line(str(public_keys)))


def after_scan(
    stats: ScanStats,
    local: list[Path],
    buckets: list[str],
    keys: Keys,
    out: Path | None,
    aws: tuple[str | None, str | None],
    since: datetime | None,
    until: datetime | None,
    reading: Mapping[str, BucketReading] | None = None,
) -> None:
    """``scan --verify-logs``: the check over what the scan read (its hashes), said on
    stderr after the scan's summary, written to ``out`` (``--integrity-out``); exit 1 on
    tampering."""
    from kmsir.cli.common import err
    from kmsir.run import verify_logs

    checked = verify_logs.check_scanned(
        stats,
        local,
        buckets,
        keys,
        lambda: live_clients(*aws),
        since=since,
        until=until,
        reading=reading,
    )
    show([checked], say=err)
    if out is not None:
        write_out(out, as_json([checked]))
    if checked.failed:
        raise typer.Exit(1)

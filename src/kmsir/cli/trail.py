"""``kmsir cloudtrail scan``: a key's events in trail logs, without a playbook."""

from __future__ import annotations

import os
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer

from kmsir.cli.common import (
    app,
    handled,
    live_clients,
    write_out,
)
from kmsir.errors import UsageError

cloudtrail_app = typer.Typer(
    help="CloudTrail evidence without a playbook.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(cloudtrail_app, name="cloudtrail")


@cloudtrail_app.command("scan")
@handled
def cloudtrail_scan(
    paths: Annotated[
        list[str],
        typer.Argument(metavar="PATH...", help="Trail files, folders or s3://bucket/prefix."),
    ],
    key: Annotated[str, typer.Option("--key", help="Key id or key ARN.")],
    alias: Annotated[
        list[str] | None, typer.Option("--alias", help="An alias of the key (repeatable).")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO time or duration ago.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO time or duration ago.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Matched events (JSON Lines).")] = None,
    findings_out: Annotated[
        Path | None, typer.Option("--findings-out", help="Findings (JSON array).")
    ] = None,
    window: Annotated[
        str, typer.Option("--window", help="Incident window before the last event.")
    ] = "24h",
    profile: Annotated[str | None, typer.Option("--profile", help="AWS profile (s3://).")] = None,
    region: Annotated[str | None, typer.Option("--region", help="AWS Region (s3://).")] = None,
) -> None:
    """Match trail log files against a key and report findings (no window unless given)."""
    import json

    from kmsir.inert import one_line
    from kmsir.playbook.values import duration_seconds, is_kms_key_reference, parse_time
    from kmsir.run import scan
    from kmsir.trail.events import slim
    from kmsir.trail.match import KeyMatcher

    if not is_kms_key_reference(key) or key.startswith("alias/") or ":alias/" in key:
        raise UsageError(f"--key {key[:80]!r}: give a key id or key ARN (aliases go in --alias)")
    buckets = [p for p in paths if p.startswith("s3://")]
    local = [Path(p) for p in paths if not p.startswith("s3://")]
    missing = [str(p) for p in local if not p.exists()]
    if missing:
        raise UsageError(f"no such file or folder: {one_line(missing[0])}")
    now = datetime.now(timezone.utc)
    try:
        start = parse_time(since, now) if since else None
        end = parse_time(until, now) if until else None
        window_seconds = duration_seconds(window)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if start and end and start >= end:
        raise UsageError(f"--since {since} is not before --until {until}")
    if out is not None:
        write_out(out, "")  # fail now, not after a long scan
    matcher = KeyMatcher.for_key(key, alias or [])
    ordered, stats = scan.matched_records(
        local,
        buckets,
        matcher,
        since=start,
        until=end,
        clients=lambda: live_clients(profile, region),
    )
    # raw bytes out, unchanged; only the findings fields decoded
    _write_lines(out, ordered)
    events = [slim(r) for r in ordered]
    del ordered
    found = scan.findings_in_window(events, key, window_seconds)
    if findings_out is not None:
        write_out(findings_out, json.dumps([f.to_json() for f in found], indent=2) + "\n")
    _scan_summary(stats, len(events), found)


def _write_lines(out: Path | None, records: list[bytes]) -> None:
    """Matched events, one a line, to ``out`` or stdout, without building one big string.
    The bytes are the trail's own, except on a terminal (see ``_for_terminal``)."""
    from kmsir.inert import one_line

    try:
        handle = sys.stdout.buffer if out is None else out.open("wb")
    except OSError as exc:
        raise UsageError(f"{one_line(str(out))}: cannot write: {exc.strerror or exc}") from None
    terminal = out is None and sys.stdout.isatty()
    try:
        for record in records:
            handle.write(_for_terminal(record) if terminal else record)
            handle.write(b"\n")
        handle.flush()
    except BrokenPipeError:  # `| head`: the reader had enough; findings are still written
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        if out is not None:
            handle.close()


#: Bytes JSON lets through raw that a terminal may obey: DEL, and every non-ASCII character
#: (C1 controls such as U+009B, a one-character CSI, and bidi overrides are among them).
_RAW_FOR_TERMINALS = re.compile(rb"[\x7f-\xff]")


def _for_terminal(record: bytes) -> bytes:
    """A record for a terminal: the same JSON with every non-ASCII character and DEL written
    as a ``\\u`` escape (JSON already escapes C0 controls), so nothing in it is obeyed."""
    if not _RAW_FOR_TERMINALS.search(record):
        return record
    import json

    text = json.dumps(json.loads(record), ensure_ascii=True, separators=(",", ":"))
    return text.replace("\x7f", "\\u007f").encode()


def _scan_summary(stats: Any, matched: int, found: list[Any]) -> None:
    from collections import Counter

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from kmsir.inert import one_line

    table = Table(title="kmsir cloudtrail scan", show_header=False)
    table.add_row("files", f"{stats.files:,}")
    table.add_row(
        "JSON read",
        f"{stats.json_bytes / 2**20:,.1f} MiB ({stats.compressed_bytes / 2**20:,.1f} MiB on disk)",
    )
    table.add_row("records", f"{stats.records:,}")
    table.add_row("matching events", f"{matched:,}")
    # reasons may quote a parser's message about the input: text, never rich markup
    for reason, count in sorted(stats.skipped.items()):
        table.add_row("skipped", Text(f"{count:,}: {one_line(reason)}"))
    for note, count in sorted(stats.noted.items()):
        table.add_row("noted", Text(f"{count:,}: {one_line(note)}"))
    severities = Counter(f.severity for f in found)
    table.add_row("findings", ", ".join(f"{n} {s}" for s, n in severities.most_common()) or "none")
    console = Console(stderr=True, highlight=False)
    console.print(table)
    for problem in stats.problems[:5]:
        console.print(Text(f"  skipped: {one_line(problem)}"), soft_wrap=True)

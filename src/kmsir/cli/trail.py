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
    err,
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
    key: Annotated[str, typer.Option("--key", help="Key id or key ARN (an alias: --alias).")],
    alias: Annotated[
        list[str] | None,
        typer.Option("--alias", help="An alias of the key, alias/NAME or NAME (repeatable)."),
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="ISO time or duration ago.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO time or duration ago.")] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Matched events (JSON Lines) to FILE, or to stdout with --out - "
            "(without --out they are counted, not written).",
        ),
    ] = None,
    findings_out: Annotated[
        Path | None, typer.Option("--findings-out", help="Findings (JSON array).")
    ] = None,
    window: Annotated[
        str, typer.Option("--window", help="Incident window before the last event.")
    ] = "24h",
    profile: Annotated[str | None, typer.Option("--profile", help="AWS profile (s3://).")] = None,
    region: Annotated[str | None, typer.Option("--region", help="AWS Region (s3://).")] = None,
    verify_logs: Annotated[
        bool,
        typer.Option(
            "--verify-logs",
            help="Also prove the log files read unaltered with the trail's signed digests "
            "(those under the same paths and prefixes), from the same read; exit 1 on "
            "tampering.",
        ),
    ] = False,
    public_keys: Annotated[
        Path | None,
        typer.Option(
            "--public-keys",
            metavar="FILE",
            help="The trail's public keys (aws cloudtrail list-public-keys output; implies "
            "--verify-logs); default: ListPublicKeys.",
        ),
    ] = None,
    integrity_out: Annotated[
        Path | None,
        typer.Option(
            "--integrity-out",
            metavar="FILE",
            help="The verdicts as JSON (implies --verify-logs).",
        ),
    ] = None,
) -> None:
    """Match trail log files against a key and report findings (no window unless given).

    The summary and the findings go to stderr; the matched events to --out FILE, or to
    stdout with --out -. With --verify-logs, each log file read is checked against the
    trail's digests too (kmsir cloudtrail verify-logs), its verdicts on stderr."""
    import json

    from kmsir.cli import trail_verify
    from kmsir.inert import one_line
    from kmsir.playbook.values import duration_seconds
    from kmsir.run import scan
    from kmsir.trail.match import KeyMatcher

    key = _key_option(key)
    aliases = [_alias_option(a) for a in alias or []]
    to_stdout = out is not None and str(out) == "-"
    buckets = [p for p in paths if p.startswith("s3://")]
    local = [Path(p) for p in paths if not p.startswith("s3://")]
    missing = [str(p) for p in local if not p.exists()]
    if missing:
        raise UsageError(f"no such file or folder: {one_line(missing[0])}")
    start, end = parse_window(since, until)
    try:
        window_seconds = duration_seconds(window)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    verify_logs = verify_logs or public_keys is not None or integrity_out is not None
    keys = trail_verify.keys_option(public_keys, profile, region) if verify_logs else None
    if out is not None and not to_stdout:
        write_out(out, "")  # fail now, not after a long scan
    if integrity_out is not None:
        write_out(integrity_out, "")
    matcher = KeyMatcher.for_key(key, aliases)
    reading: dict[str, scan.BucketReading] | None = {} if verify_logs else None
    ordered, stats = scan.matched_records(
        local,
        buckets,
        matcher,
        since=start,
        until=end,
        clients=lambda: live_clients(profile, region),
        hashes=verify_logs,
        reading=reading,
    )
    # raw bytes out, unchanged; only the findings fields decoded
    if out is not None:
        _write_lines(None if to_stdout else out, [raw for raw, _ in ordered])
    events = [fields for _, fields in ordered]
    del ordered
    found = scan.findings_in_window(events, key, window_seconds)
    if findings_out is not None:
        write_out(findings_out, json.dumps([f.to_json() for f in found], indent=2) + "\n")
    _scan_summary(stats, len(events), found, written=out is not None, findings_out=findings_out)
    if keys is not None:  # exit 1 on tampering
        aws = (profile, region)
        trail_verify.after_scan(
            stats, local, buckets, keys, integrity_out, aws, start, end, reading
        )


def parse_window(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """``--since``/``--until``: ISO times or durations ago; ``UsageError`` for anything else,
    or a window that ends before it starts."""
    from kmsir.playbook.values import parse_time

    now = datetime.now(timezone.utc)
    try:
        start = parse_time(since, now) if since else None
        end = parse_time(until, now) if until else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if start and end and start >= end:
        raise UsageError(f"--since {since} is not before --until {until}")
    return start, end


@cloudtrail_app.command("athena-ddl")
@handled
def cloudtrail_athena_ddl(
    bucket: Annotated[
        str, typer.Option("--bucket", metavar="BUCKET", help="The trail's S3 bucket.")
    ],
    accounts: Annotated[
        list[str] | None,
        typer.Option(
            "--accounts",
            metavar="IDS",
            help="The accounts whose logs the table reads (12-digit ids, comma-separated or "
            "repeated): the account partition's values. Without them the account partition is "
            "injected: every query must name its accounts.",
        ),
    ] = None,
    org_id: Annotated[
        str | None,
        typer.Option(
            "--org-id", metavar="ORG_ID", help="An organisation trail's organization id (o-...)."
        ),
    ] = None,
    prefix: Annotated[
        str, typer.Option("--prefix", metavar="PREFIX", help="The trail's S3 key prefix.")
    ] = "",
    regions: Annotated[
        list[str] | None,
        typer.Option(
            "--regions",
            metavar="REGIONS",
            help="The Regions the table reads (default: every Region CloudTrail has in the "
            "aws partition, as botocore knows them).",
        ),
    ] = None,
    table: Annotated[
        str, typer.Option("--table", metavar="NAME", help="The table's name.")
    ] = "cloudtrail_org",
    database: Annotated[
        str, typer.Option("--database", metavar="NAME", help="Its Glue database.")
    ] = "default",
    since: Annotated[
        str, typer.Option("--since", metavar="YYYY/MM/DD", help="The first day projected.")
    ] = "2020/01/01",
) -> None:
    """Print the CREATE EXTERNAL TABLE of a trail's logs for Athena, partition-projected over
    account, Region and day: what cloudtrail.collect reads with source: athena and
    partitions: projection (the recommended path for an organisation's volume). The Regions,
    and the accounts when given, are enum partitions: a query naming none reads them all.
    Without --accounts every query must name its accounts (collect's accounts: [...]).

    Example: kmsir cloudtrail athena-ddl --bucket org-trail --org-id o-abcdefghij
    --accounts 111122223333,444455556666 --regions eu-west-1,us-east-1 > cloudtrail_org.sql"""
    from kmsir.trail.athena_ddl import TrailTable, cloudtrail_regions, split_list

    listed = split_list(regions) or cloudtrail_regions()
    found = TrailTable(
        bucket=bucket.strip(),
        accounts=split_list(accounts),
        regions=listed,
        org_id=org_id.strip() if org_id is not None else None,
        prefix=prefix.strip(),
        database=database,
        table=table,
        since=since.strip(),
    )
    sys.stdout.write(found.ddl())
    if not found.accounts:
        err(
            "athena-ddl: no --accounts: the account partition is injected, so every query "
            "must name its accounts (cloudtrail.collect: accounts: [...])"
        )


#: An alias name as AWS allows it (``CreateAlias``'s AliasName), ``alias/`` included.
_ALIAS_NAME = re.compile(r"alias/[A-Za-z0-9/_-]{1,250}")


def _key_option(key: str) -> str:
    """``--key``: a key id or key ARN; an alias is refused with the option it belongs in."""
    from kmsir.inert import one_line
    from kmsir.playbook.values import is_kms_key_reference

    key = key.strip()
    shown = one_line(key, 80)
    if key.startswith("alias/") or ":alias/" in key:
        raise UsageError(
            f"--key '{shown}': an alias; give the key id or key ARN in --key, and use --alias "
            f"{shown} to match the alias too"
        )
    if not is_kms_key_reference(key):
        raise UsageError(
            f"--key '{shown}': give a key id (1234abcd-12ab-...) or key ARN "
            f"(arn:aws:kms:REGION:ACCOUNT:key/ID); for an alias, use --alias"
        )
    return key


def _alias_option(value: str) -> str:
    """``--alias``: ``alias/NAME``, an alias ARN, or ``NAME`` alone (read as ``alias/NAME``,
    as the KMS console shows it); anything that cannot be an alias is refused with the fix."""
    from kmsir.inert import one_line
    from kmsir.playbook.values import is_kms_key_reference

    value = value.strip()
    shown = one_line(value, 80)
    if value.startswith("arn:"):
        if ":alias/" in value and is_kms_key_reference(value):
            return value
        raise UsageError(
            f"--alias '{shown}': not an alias ARN (arn:aws:kms:REGION:ACCOUNT:alias/NAME); "
            f"a key ARN goes in --key"
        )
    name = value if value.startswith("alias/") else f"alias/{value}"
    if name != value and is_kms_key_reference(value):  # a key id: no alias
        raise UsageError(f"--alias '{shown}': a key id; give it in --key")
    if not _ALIAS_NAME.fullmatch(name):
        raise UsageError(
            f"--alias '{shown}': not an alias name; give alias/NAME or NAME, NAME being letters, "
            f"digits, '/', '_' and '-' (e.g. --alias alias/payments-prod)"
        )
    return name


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


#: Findings shown at a terminal; the rest are counted (all are in --findings-out).
MAX_FINDINGS_SHOWN = 50


def _scan_summary(
    stats: Any, matched: int, found: list[Any], *, written: bool, findings_out: Path | None
) -> None:
    """On stderr: what was read, matched and skipped, then the findings, most severe first."""
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
    matching = f"{matched:,}"
    if matched and not written:
        matching += " (not written: --out FILE, or --out - for stdout)"
    table.add_row("matching events", matching)
    # reasons may quote a parser's message about the input: text, never rich markup
    for reason, count in sorted(stats.skipped.items()):
        table.add_row("skipped", Text(f"{count:,}: {one_line(reason)}"))
    for note, count in sorted(stats.noted.items()):
        table.add_row("noted", Text(f"{count:,}: {one_line(note)}"))
    severities = Counter(f.severity for f in found)
    by_rank = sorted(severities, key=_SEVERITY_RANK.__getitem__)
    table.add_row("findings", ", ".join(f"{severities[s]} {s}" for s in by_rank) or "none")
    console = Console(stderr=True, highlight=False)
    console.print(table)
    for problem in stats.problems[:5]:
        console.print(Text(f"  skipped: {one_line(problem)}"), soft_wrap=True)
    if found:
        _findings_table(console, found, findings_out)


#: Severities, most severe first (the order findings are shown in).
_SEVERITY_RANK = {s: n for n, s in enumerate(("critical", "high", "medium", "low", "info"))}


def _findings_table(console: Any, found: list[Any], findings_out: Path | None) -> None:
    """The findings as a table: most severe first, then by time; every cell from the events
    is attacker-controlled text, shown inert and cut, never read as markup."""
    from rich.table import Table
    from rich.text import Text

    from kmsir.inert import one_line

    ordered = sorted(
        found, key=lambda f: (_SEVERITY_RANK.get(f.severity, len(_SEVERITY_RANK)), f.event_time)
    )
    table = Table(title="findings (most severe first)", title_justify="left")
    # the severity and the time are never cut; the rest wraps on a narrow terminal
    table.add_column("severity", no_wrap=True, min_width=8)
    table.add_column("time", no_wrap=True, min_width=20)
    table.add_column("event", overflow="fold")
    table.add_column("principal", overflow="fold")
    table.add_column("title")
    for finding in ordered[:MAX_FINDINGS_SHOWN]:
        table.add_row(
            Text(finding.severity, style=_SEVERITY_STYLE.get(finding.severity, "")),
            Text(one_line(finding.event_time, 25)),
            Text(one_line(finding.event_name, 40)),
            Text(one_line(_IAM_ARN.sub("", finding.principal), 60)),
            Text(one_line(finding.title, 100)),
        )
    console.print(table)
    more = len(ordered) - MAX_FINDINGS_SHOWN
    if more > 0:
        where = (
            f"in {one_line(str(findings_out), 200)}"
            if findings_out is not None
            else "with --findings-out FILE"
        )
        console.print(Text(f"... and {more:,} more finding(s): all of them {where}"))


#: The part of an IAM or STS ARN a person can do without in a narrow table: the account and
#: what follows it stay (``111122223333:assumed-role/ci/x``).
_IAM_ARN = re.compile(r"^arn:aws[a-z-]*:(iam|sts)::(?=\d{12}:)")

_SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan"}

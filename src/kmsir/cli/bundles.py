"""Commands on evidence bundles: verify (a folder or an exported archive), report, export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kmsir.cli.common import EXIT_UNPROVEN, app, handled, live_clients, say
from kmsir.errors import UsageError
from kmsir.inert import one_line


@app.command()
@handled
def verify(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle directory.")],
    key: Annotated[
        Path | None,
        typer.Option(
            "--key",
            metavar="FILE",
            help="The public key the anchor and the export must be signed with (PEM or DER).",
        ),
    ] = None,
) -> None:
    """Check every hash, the journal chain, the manifest, the reports and the signatures
    (exit 0 intact, 1 tampered, 4 consistent but its end not proven).

    BUNDLE may also be an exported FILE.tar.gz: its .sha256 and .sig.json beside it are
    checked, then the bundle inside. A signature proves what it covers against a key you
    trust: give it with --key (aws kms get-public-key prints it), or compare the fingerprint
    shown."""
    from kmsir.evidence import integrity
    from kmsir.evidence.signatures import trusted_key

    if not bundle.exists():
        raise UsageError(f"{bundle}: no such file or directory")
    trusted = None
    if key is not None:
        try:
            trusted = trusted_key(key.read_bytes())
        except (OSError, ValueError) as exc:
            raise UsageError(f"--key {key}: {getattr(exc, 'strerror', None) or exc}") from None
    if bundle.is_file():
        if not bundle.name.endswith(".tar.gz"):
            raise UsageError(f"{bundle}: neither a bundle directory nor an exported .tar.gz")
        _verify_archive(bundle, trusted)
        return
    _report_check(integrity.check(bundle, trusted_key=trusted), label=None)


def _report_check(checked: Any, *, label: str | None) -> None:
    """Say what ``integrity.check`` found and exit accordingly: tampered (1), intact (0), or
    consistent with its end not proven (4). Each line is one line, whatever names it quotes."""
    view = checked.view
    if checked.problems:
        for problem in checked.problems:
            say(one_line(f"TAMPERED: {problem}"))
        raise typer.Exit(1)
    what = f"{label}, " if label else ""
    head = view.head or "-"
    artifacts = len(view.artifacts)
    if checked.signed_by:
        beyond = view.lines - checked.signed
        say(
            one_line(
                f"signed: {checked.signed_by} (public key {checked.signed_key}) signed the "
                f"journal through entry {checked.signed}"
                + (f"; the {beyond} entries after it are not signed" if beyond else "")
            )
        )
    if checked.intact:
        say(f"intact: {what}{view.lines} journal entries, {artifacts} artifacts, head {head}")
    for note in checked.notes:
        say(one_line(f"note: {note}"))
    if checked.intact:
        return
    said = f"consistent up to entry {view.lines} (head {head}), {artifacts} artifacts"
    if checked.finished:
        why = "the run finished but no manifest anchors its end (kmsir resume rewrites it)"
    else:
        why = "the end of an unfinished run cannot be proven (kmsir resume continues it)"
    if not checked.signed_by:
        why += "; run with --anchor-key to sign the journal after every step"
    say(f"unproven: {what}{said}: {why}")
    raise typer.Exit(EXIT_UNPROVEN)


def _verify_archive(archive: Path, trusted: str | None) -> None:
    """Say what the files beside an exported archive prove, then what the bundle in it does."""
    from kmsir.evidence import archive as archives

    seal = archives.check_seal(archive, trusted)
    for note in seal.notes:
        say(f"note: {note}")
    if seal.signed_by is not None:
        say(one_line(f"signature: valid ({seal.signed_by}, public key {seal.signed_key})"))
    contents = archives.check_contents(seal, trusted)
    if contents.bundle is None:
        for problem in contents.problems:
            say(one_line(f"TAMPERED: {problem}"))
        raise typer.Exit(1)
    _report_check(contents.bundle, label=f"{archive.name} (sha256 {seal.digest})")


@app.command()
@handled
def report(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle directory.")],
    fmt: Annotated[
        str, typer.Option("--format", metavar="md|html", help="The report's format.")
    ] = "md",
    template: Annotated[Path | None, typer.Option("--template", help="Your own template.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write here, not in the bundle.")
    ] = None,
    redact: Annotated[
        bool,
        typer.Option(
            "--redact",
            help="Account ids, IP addresses, principal and key names as stable pseudonyms "
            "(account-1, role-2...), for a report shared outside the team; written to --out, "
            "or printed. The bundle is untouched.",
        ),
    ] = False,
) -> None:
    """Re-render a bundle's report from the bundle alone (no AWS access)."""
    from kmsir import report as reports

    if redact and out is None:
        typer.echo(reports.render(bundle, fmt=fmt, template=template, redact=True), nl=False)
        return
    say(str(reports.write(bundle, fmt=fmt, template=template, out=out, redact=redact)))


@app.command()
@handled
def export(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle directory.")],
    out: Annotated[Path, typer.Option("--out", help="The archive (FILE.tar.gz).")],
    sign_key: Annotated[
        str | None, typer.Option("--sign-key", help="KMS asymmetric signing key (id/ARN/alias).")
    ] = None,
    profile: Annotated[str | None, typer.Option("--profile", help="AWS profile (signing).")] = None,
    region: Annotated[str | None, typer.Option("--region", help="AWS Region (signing).")] = None,
) -> None:
    """Write a deterministic .tar.gz of an intact bundle, its .sha256 and (with --sign-key) a
    detached KMS signature (.sig.json) that verify checks offline."""
    from kmsir.errors import TamperedError
    from kmsir.evidence import export as exporting
    from kmsir.signer import KmsSigner

    try:
        path, digest = exporting.export(bundle, out)
    except TamperedError as exc:
        for problem in exc.problems:
            say(f"TAMPERED: {problem}")
        raise typer.Exit(1) from None
    say(f"{digest}  {path}")
    if sign_key:
        signed, key_arn = exporting.sign(
            path, digest, KmsSigner(live_clients(profile, region), sign_key)
        )
        say(f"signed with {key_arn}: {signed}")

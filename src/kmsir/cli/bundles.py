"""Commands on evidence bundles: verify (a folder or an exported archive), report, export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kmsir.cli.common import (
    EXIT_UNPROVEN,
    app,
    handled,
    live_clients,
    say,
    write_out,
)
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
    entries = checked.entries
    if checked.problems:
        for problem in checked.problems:
            say(one_line(f"TAMPERED: {problem}"))
        raise typer.Exit(1)
    what = f"{label}, " if label else ""
    head = entries[-1]["hash"] if entries else "-"
    artifacts = sum(1 for e in entries if e["type"] == "artifact")
    if checked.signed_by:
        beyond = len(entries) - checked.signed
        say(
            one_line(
                f"signed: {checked.signed_by} (public key {checked.signed_key}) signed the "
                f"journal through entry {checked.signed}"
                + (f"; the {beyond} entries after it are not signed" if beyond else "")
            )
        )
    if checked.intact:
        say(f"intact: {what}{len(entries)} journal entries, {artifacts} artifacts, head {head}")
    for note in checked.notes:
        say(one_line(f"note: {note}"))
    if checked.intact:
        return
    said = f"consistent up to entry {len(entries)} (head {head}), {artifacts} artifacts"
    if checked.finished:
        why = "the run finished but no manifest anchors its end (kmsir resume rewrites it)"
    else:
        why = "the end of an unfinished run cannot be proven (kmsir resume continues it)"
    if not checked.signed_by:
        why += "; run with --anchor-key to sign the journal after every step"
    say(f"unproven: {what}{said}: {why}")
    raise typer.Exit(EXIT_UNPROVEN)


#: An export larger than this once unpacked, against its packed size, is refused unread
#: (a decompression bomb): trail events compress about tenfold, never a hundredfold.
MAX_EXPANSION = 100
#: ... and it may always unpack to this much, however small it is.
MIN_UNPACKED = 256 * 2**20


def _verify_archive(archive: Path, trusted: str | None) -> None:
    import gzip
    import json
    import tarfile
    import tempfile
    import zlib

    from kmsir.evidence import bundle as evidence
    from kmsir.evidence import integrity
    from kmsir.evidence.signatures import check_signature, fingerprint

    try:
        packed = archive.read_bytes()
    except OSError as exc:
        raise UsageError(f"{archive}: cannot read: {exc.strerror or exc}") from None
    digest = evidence.sha256_hex(packed)
    problems = []
    sidecar = archive.with_name(archive.name + ".sha256")
    if not sidecar.is_file():
        say(f"note: no {sidecar.name} beside it: the archive's checksum was not checked")
    elif sidecar.read_text(errors="replace").split()[:1] != [digest]:
        problems.append(f"{archive.name}: sha256 differs from {sidecar.name}")
    signed = archive.with_name(archive.name + ".sig.json")
    if signed.is_file():
        try:
            record = json.loads(signed.read_text())
            problem = check_signature(record, digest) if isinstance(record, dict) else "not JSON"
        except ValueError:
            record, problem = {}, "not valid JSON"
        pem = str(record.get("public_key_pem")) if isinstance(record, dict) else ""
        if problem is None and trusted is not None and fingerprint(pem) != fingerprint(trusted):
            problem = f"signed with key {fingerprint(pem)}, not the key given"
        if problem:
            problems.append(f"{signed.name}: {problem}")
        else:
            say(
                one_line(
                    f"signature: valid ({record.get('key_arn')}, public key {fingerprint(pem)})"
                )
            )
    limit = max(MIN_UNPACKED, MAX_EXPANSION * len(packed))
    with tempfile.TemporaryDirectory(prefix="kmsir-verify-") as tmp:
        try:
            unpacked = 0
            with gzip.open(archive) as whole:  # to its end: gzip's own CRC and length checks
                while chunk := whole.read(1 << 20):
                    unpacked += len(chunk)
                    if unpacked > limit:
                        raise UsageError(
                            f"{archive}: unpacks to more than {limit:,} bytes; not unpacked"
                        )
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, gzip.BadGzipFile, zlib.error, EOFError) as exc:
            problems.append(f"{archive.name}: archive corrupt ({exc})")
        except OSError as exc:
            raise UsageError(f"{archive}: cannot unpack: {exc.strerror or exc}") from None
        if problems:
            for problem in problems:
                say(one_line(f"TAMPERED: {problem}"))
            raise typer.Exit(1)
        roots = [p for p in Path(tmp).iterdir() if p.is_dir()]
        if len(roots) != 1:
            raise UsageError(f"{archive}: not a kmsir export (expected one bundle folder)")
        checked = integrity.check(roots[0], trusted_key=trusted)
        _report_check(checked, label=f"{archive.name} (sha256 {digest})")


@app.command()
@handled
def report(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle directory.")],
    fmt: Annotated[str, typer.Option("--format", help="md or html")] = "md",
    template: Annotated[Path | None, typer.Option("--template", help="Your own template.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write here, not in the bundle.")
    ] = None,
) -> None:
    """Re-render a bundle's report from the bundle alone (no AWS access)."""
    from kmsir import report as reports

    say(str(reports.write(bundle, fmt=fmt, template=template, out=out)))


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
    import json

    from kmsir.errors import TamperedError
    from kmsir.evidence import export as exporting
    from kmsir.evidence.signatures import signature_record
    from kmsir.signer import KmsSigner

    try:
        path, digest = exporting.export(bundle, out)
    except TamperedError as exc:
        for problem in exc.problems:
            say(f"TAMPERED: {problem}")
        raise typer.Exit(1) from None
    say(f"{digest}  {path}")
    if sign_key:
        signer = KmsSigner(live_clients(profile, region), sign_key)
        signature = signer.sign(digest)
        key = signer.describe()
        record = signature_record(
            key["key_arn"], key["algorithm"], digest, signature, key["public_key_pem"]
        )
        signed = path.with_name(path.name + ".sig.json")
        write_out(signed, json.dumps(record, indent=2) + "\n")
        say(f"signed with {key['key_arn']}: {signed}")

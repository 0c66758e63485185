"""Commands on evidence bundles: verify (a folder or an exported archive), report, export."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kmsir.errors import UsageError

if TYPE_CHECKING:
    pass

from kmsir.cli.common import (
    app,
    handled,
    live_clients,
    say,
    write_out,
)


@app.command()
@handled
def verify(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle directory.")],
) -> None:
    """Check every hash, the journal chain and the manifest (exit 0 intact, 1 tampered).

    BUNDLE may also be an exported FILE.tar.gz: its .sha256 and .sig.json beside it are
    checked, then the bundle inside."""
    from kmsir import evidence, integrity

    if bundle.is_file() and bundle.name.endswith(".tar.gz"):
        _verify_archive(bundle)
        return
    checked = integrity.check(bundle)
    if checked.problems:
        for problem in checked.problems:
            say(f"TAMPERED: {problem}")
        raise typer.Exit(1)
    opened = evidence.Bundle.open(bundle)
    say(
        f"intact: {len(opened.entries)} journal entries, "
        f"{len(opened.manifest.get('artifacts', []))} artifacts, "
        f"head {opened.entries[-1]['hash'] if opened.entries else '-'}"
    )
    for note in checked.notes:
        say(f"note: {note}")
    if not checked.finished:
        say(
            "note: the run did not finish (kmsir resume continues it), so no manifest anchors "
            "the journal's last entry: lines removed from its end would not show"
        )


def _verify_archive(archive: Path) -> None:
    import json
    import tarfile
    import tempfile

    from kmsir import evidence, integrity
    from kmsir import export as exporting

    digest = evidence.sha256_hex(archive.read_bytes())
    problems = []
    sidecar = archive.with_name(archive.name + ".sha256")
    if sidecar.is_file() and sidecar.read_text().split()[:1] != [digest]:
        problems.append(f"{archive.name}: sha256 differs from {sidecar.name}")
    signed = archive.with_name(archive.name + ".sig.json")
    if signed.is_file():
        try:
            problem = exporting.check_signature(json.loads(signed.read_text()), digest)
        except ValueError:
            problem = "not valid JSON"
        if problem:
            problems.append(f"{signed.name}: {problem}")
        else:
            say(f"signature: valid ({json.loads(signed.read_text())['key_arn']})")
    entries: list[Any] = []
    with tempfile.TemporaryDirectory(prefix="kmsir-verify-") as tmp:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            problems.append(f"{archive.name}: cannot be read as an archive ({exc})")
        else:
            roots = [p for p in Path(tmp).iterdir() if p.is_dir()]
            if len(roots) != 1:
                raise UsageError(f"{archive}: not a kmsir export (expected one bundle folder)")
            problems += integrity.verify(roots[0])
            entries = evidence.Bundle.open(roots[0]).entries
    if problems:
        for problem in problems:
            say(f"TAMPERED: {problem}")
        raise typer.Exit(1)
    say(f"intact: {archive.name} (sha256 {digest}), {len(entries)} journal entries")


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

    from kmsir import export as exporting
    from kmsir.actions.aws import aws_errors
    from kmsir.errors import TamperedError

    try:
        path, digest = exporting.export(bundle, out)
    except TamperedError as exc:
        for problem in exc.problems:
            say(f"TAMPERED: {problem}")
        raise typer.Exit(1) from None
    say(f"{digest}  {path}")
    if sign_key:
        kms = live_clients(profile, region).client("kms")
        with aws_errors(f"DescribeKey on {sign_key}"):
            metadata = kms.describe_key(KeyId=sign_key)["KeyMetadata"]
        algorithm = exporting.SIGNING_ALGORITHMS.get(str(metadata.get("KeySpec")))
        if metadata.get("KeyUsage") != "SIGN_VERIFY" or algorithm is None:
            raise UsageError(f"--sign-key {sign_key}: not an RSA or ECC key for SIGN_VERIFY")
        with aws_errors(f"Sign with {sign_key}"):
            signature = kms.sign(
                KeyId=metadata["KeyId"],
                Message=bytes.fromhex(digest),
                MessageType="RAW",
                SigningAlgorithm=algorithm,
            )["Signature"]
            public = kms.get_public_key(KeyId=metadata["KeyId"])["PublicKey"]
        record = exporting.signature_record(metadata["Arn"], algorithm, digest, signature, public)
        signed = path.with_name(path.name + ".sig.json")
        write_out(signed, json.dumps(record, indent=2) + "\n")
        say(f"signed with {metadata['Arn']}: {signed}")

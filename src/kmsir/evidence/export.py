"""``kmsir export``: one deterministic archive of a bundle, with its sha256 and, on request,
a detached signature.

The same bundle always gives the same bytes: entries sorted, owners and permissions fixed,
every mtime the run's start, and a gzip header without file name or time. Next to the archive
goes ``<archive>.sha256`` in ``sha256sum`` format, and with a signer ``<archive>.sig.json``.
Only an intact bundle is exported, and the archive holds nothing but the bundle's own files
under ``<run-id>/``. ``archive`` checks what is written here.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Protocol

from kmsir.errors import EvidenceError, TamperedError, UsageError
from kmsir.evidence import bundle as evidence
from kmsir.evidence import integrity
from kmsir.evidence import journal as writer
from kmsir.evidence.manifest import Bundle
from kmsir.evidence.signatures import signature_record


class DigestSigner(Protocol):
    """What signs an export: ``kmsir.signer.KmsSigner`` (KMS ``Sign`` over the digest)."""

    def describe(self) -> Mapping[str, str]:
        """``key_arn``, ``algorithm`` and ``public_key_pem`` of the signing key."""
        ...

    def sign(self, digest: str) -> bytes:
        """The signature over a hex sha256 ``digest``."""
        ...


def _mtime(bundle: Bundle) -> int:
    started = str(bundle.manifest.get("started") or "")
    try:
        return int(datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def archive_bytes(root: Path) -> bytes:
    """The deterministic ``.tar.gz`` of the intact bundle at ``root``: altered evidence, a run
    still going, or a journal whose end cannot be proven is never archived under a checksum
    (or a signature) that would vouch for it."""
    if not (root / evidence.JOURNAL).is_file():
        raise UsageError(f"{root}: not an evidence bundle (no {evidence.JOURNAL})")
    writer.ensure_idle(root)
    checked = integrity.check(root)
    if checked.problems:
        raise TamperedError([f"not exported: {p}" for p in checked.problems])
    if not checked.intact:
        raise EvidenceError(
            f"not exported: {root}: the end of its journal cannot be proven (an unfinished "
            "run, or a finished one without its manifest); kmsir resume finishes it first"
        )
    bundle = Bundle.open(root)
    mtime = _mtime(bundle)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        paths = sorted(p for p in root.rglob("*") if not p.name.startswith(".tmp-"))
        for path in [root, *paths]:
            name = "/".join([root.name, *path.relative_to(root).parts])
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = mtime, 0, 0, "", ""
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o700
                tar.addfile(info)
            else:
                data = path.read_bytes()
                info.size, info.mode = len(data), 0o600
                tar.addfile(info, io.BytesIO(data))
    compressed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0) as gz:
        gz.write(buffer.getvalue())
    return compressed.getvalue()


def export(root: Path, out: Path) -> tuple[Path, str]:
    """Write the archive and ``<out>.sha256``; return the archive path and its sha256."""
    if not out.name.endswith(".tar.gz"):
        raise UsageError(f"--out {out}: the archive name must end in .tar.gz")
    if out.exists():
        raise UsageError(f"--out {out}: already exists (an export is never overwritten)")
    data = archive_bytes(root)
    digest = evidence.sha256_hex(data)
    try:
        with out.open("xb") as handle:  # exclusive: never replace an earlier export
            handle.write(data)
        out.with_name(out.name + ".sha256").write_text(f"{digest}  {out.name}\n")
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write: {exc.strerror or exc}") from None
    return out, digest


def sign(archive: Path, digest: str, signer: DigestSigner) -> tuple[Path, str]:
    """Write ``<archive>.sig.json``, the detached signature over the archive's sha256
    ``digest`` that ``verify`` checks offline; return its path and the signing key's ARN."""
    signature = signer.sign(digest)
    key = signer.describe()
    record = signature_record(
        key["key_arn"], key["algorithm"], digest, signature, key["public_key_pem"]
    )
    signed = archive.with_name(archive.name + ".sig.json")
    try:
        signed.write_text(json.dumps(record, indent=2) + "\n")
    except OSError as exc:
        raise UsageError(f"{signed}: cannot write: {exc.strerror or exc}") from None
    return signed, key["key_arn"]

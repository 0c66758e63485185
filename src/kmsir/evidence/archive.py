"""Checking an exported archive (``kmsir verify FILE.tar.gz``) before trusting the bundle in it.

Two steps, so that what is known early can be said early: ``check_seal`` reads the files
beside the archive (its ``.sha256`` and ``.sig.json``) without unpacking anything;
``check_contents`` then reads the gzip stream to its end (its own CRC and length checks),
refuses a decompression bomb unread, unpacks with tarfile's ``data`` filter into a temporary
folder and checks the one bundle inside with ``integrity.check``.
"""

from __future__ import annotations

import gzip
import json
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from kmsir.errors import UsageError
from kmsir.evidence import integrity
from kmsir.evidence.bundle import sha256_hex
from kmsir.evidence.signatures import check_signature, fingerprint

#: An export larger than this once unpacked, against its packed size, is refused unread
#: (a decompression bomb): trail events compress about tenfold, never a hundredfold.
MAX_EXPANSION = 100
#: ... and it may always unpack to this much, however small it is.
MIN_UNPACKED = 256 * 2**20


@dataclass(frozen=True)
class Seal:
    """What the files beside an archive say about it: problems mean it was altered (or its
    checksum or signature was), notes what could not be checked."""

    archive: Path
    #: The archive's sha256 (hex), and its size as read.
    digest: str
    size: int
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    #: When ``.sig.json`` verifies: the key ARN it names, and its public key's fingerprint.
    signed_by: str | None = None
    signed_key: str | None = None

    def unpack_limit(self) -> int:
        """The most bytes the archive may unpack to before it is taken for a bomb."""
        return max(MIN_UNPACKED, MAX_EXPANSION * self.size)


@dataclass(frozen=True)
class Contents:
    """The archive's own problems (the seal's, a corrupt stream) or, when it has none, what
    ``integrity.check`` found in the bundle inside."""

    problems: tuple[str, ...]
    bundle: integrity.Verification | None = None


def check_seal(archive: Path, trusted_key: str | None = None) -> Seal:
    """Compare the archive with its ``.sha256`` and check its ``.sig.json`` (against
    ``trusted_key``, PEM, when given); neither file beside it is a note or nothing."""
    try:
        packed = archive.read_bytes()
    except OSError as exc:
        raise UsageError(f"{archive}: cannot read: {exc.strerror or exc}") from None
    digest = sha256_hex(packed)
    problems: list[str] = []
    notes: list[str] = []
    sidecar = archive.with_name(archive.name + ".sha256")
    if not sidecar.is_file():
        notes.append(f"no {sidecar.name} beside it: the archive's checksum was not checked")
    elif sidecar.read_text(errors="replace").split()[:1] != [digest]:
        problems.append(f"{archive.name}: sha256 differs from {sidecar.name}")
    signed_by = signed_key = None
    signed = archive.with_name(archive.name + ".sig.json")
    if signed.is_file():
        try:
            record = json.loads(signed.read_text())
            problem = check_signature(record, digest) if isinstance(record, dict) else "not JSON"
        except ValueError:
            record, problem = {}, "not valid JSON"
        pem = str(record.get("public_key_pem")) if isinstance(record, dict) else ""
        if problem is None and trusted_key and fingerprint(pem) != fingerprint(trusted_key):
            problem = f"signed with key {fingerprint(pem)}, not the key given"
        if problem:
            problems.append(f"{signed.name}: {problem}")
        else:
            signed_by, signed_key = str(record.get("key_arn")), fingerprint(pem)
    return Seal(archive, digest, len(packed), tuple(problems), tuple(notes), signed_by, signed_key)


def check_contents(seal: Seal, trusted_key: str | None = None) -> Contents:
    """Unpack the sealed archive into a temporary folder and check the bundle in it, unless
    the archive itself is altered or corrupt (every such problem is then returned)."""
    archive, limit = seal.archive, seal.unpack_limit()
    problems = list(seal.problems)
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
            return Contents(tuple(problems))
        roots = [p for p in Path(tmp).iterdir() if p.is_dir()]
        if len(roots) != 1:
            raise UsageError(f"{archive}: not a kmsir export (expected one bundle folder)")
        return Contents((), integrity.check(roots[0], trusted_key=trusted_key))

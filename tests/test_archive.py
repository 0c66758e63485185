"""Checking an exported archive (``evidence.archive``): what is beside it is checked before it
is unpacked, and an archive that would unpack to far more than it weighs is refused unread."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import pytest

from kmsir.errors import UsageError
from kmsir.evidence import archive as archives
from kmsir.evidence.bundle import sha256_hex

from .clikit import cli


def _tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(buffer.getvalue()))
    return path


def test_a_decompression_bomb_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """8 MiB of zeros pack to a few KiB: far beyond the hundredfold trail logs never reach.
    (The floor every archive may unpack to is lowered here, from 256 MiB, to keep it small.)"""
    monkeypatch.setattr(archives, "MIN_UNPACKED", 2**20)
    bomb = _tar_gz(tmp_path / "bomb.tar.gz", {"run/journal.jsonl": bytes(8 * 2**20)})
    seal = archives.check_seal(bomb)
    assert seal.unpack_limit() == 2**20 < 8 * 2**20
    with pytest.raises(UsageError, match=r"unpacks to more than 1,048,576 bytes; not unpacked"):
        archives.check_contents(seal)
    done = cli("verify", bomb)
    assert done.exit_code == 2
    assert "unpacks to more than 1,048,576 bytes; not unpacked" in done.stderr
    assert "Traceback" not in done.output


def test_an_archive_may_always_unpack_to_the_floor_and_a_hundredfold(tmp_path: Path) -> None:
    small = _tar_gz(tmp_path / "small.tar.gz", {"run/x": b"x"})
    assert archives.check_seal(small).unpack_limit() == archives.MIN_UNPACKED
    big = tmp_path / "big.tar.gz"
    big.write_bytes(bytes(3 * 2**20))  # never unpacked: only its size counts here
    assert archives.check_seal(big).unpack_limit() == 100 * 3 * 2**20


def test_the_seal_is_read_before_anything_is_unpacked(tmp_path: Path) -> None:
    """A checksum beside the archive that differs, and a signature that is not JSON, are
    problems; a missing checksum is a note; the archive itself has not been opened yet."""
    sealed = _tar_gz(tmp_path / "x.tar.gz", {"run/x": b"x"})
    assert archives.check_seal(sealed).notes == (
        "no x.tar.gz.sha256 beside it: the archive's checksum was not checked",
    )
    (tmp_path / "x.tar.gz.sha256").write_text("0" * 64 + "  x.tar.gz\n")
    (tmp_path / "x.tar.gz.sig.json").write_text("{not json")
    seal = archives.check_seal(sealed)
    assert seal.digest == sha256_hex(sealed.read_bytes())
    assert seal.problems == (
        "x.tar.gz: sha256 differs from x.tar.gz.sha256",
        "x.tar.gz.sig.json: not valid JSON",
    )
    assert seal.notes == () and seal.signed_by is None
    contents = archives.check_contents(seal)
    assert contents.bundle is None and contents.problems == seal.problems


def test_an_archive_of_no_bundle_is_not_a_kmsir_export(tmp_path: Path) -> None:
    loose = _tar_gz(tmp_path / "loose.tar.gz", {"a/x": b"x", "b/y": b"y"})
    with pytest.raises(UsageError, match="not a kmsir export"):
        archives.check_contents(archives.check_seal(loose))

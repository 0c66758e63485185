"""`kmsir export`: the same bytes for the same bundle, its sha256, and verify after extraction."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from pathlib import Path

from kmsir.evidence import integrity

from .conftest import LoopbackServer
from .test_cli import assert_no_traceback, kmsir


def test_export_is_deterministic_and_verifies_after_extraction(
    demo_bundle: Path, tmp_path: Path
) -> None:
    first = kmsir("export", str(demo_bundle), "--out", str(tmp_path / "a.tar.gz"))
    assert first.returncode == 0, first.stderr
    copy = tmp_path / "copy" / demo_bundle.name
    shutil.copytree(demo_bundle, copy)  # other inode times, same content
    second = kmsir("export", str(copy), "--out", str(tmp_path / "b.tar.gz"))
    assert second.returncode == 0, second.stderr
    a, b = (tmp_path / "a.tar.gz").read_bytes(), (tmp_path / "b.tar.gz").read_bytes()
    assert a == b
    digest = hashlib.sha256(a).hexdigest()
    assert (tmp_path / "a.tar.gz.sha256").read_text() == f"{digest}  a.tar.gz\n"
    assert first.stdout.startswith(digest)
    assert a[4:8] == b"\0\0\0\0"  # no time in the gzip header
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        names = tar.getnames()
        assert names == sorted(names) and all(n.startswith(demo_bundle.name) for n in names)
        assert {m.uid for m in tar.getmembers()} == {0}
        tar.extractall(tmp_path / "extracted", filter="data")
    assert integrity.verify(tmp_path / "extracted" / demo_bundle.name) == []


def test_a_tampered_bundle_is_not_exported(demo_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / demo_bundle.name
    shutil.copytree(demo_bundle, copy)
    target = next((copy / "artifacts").rglob("grants.json"))
    target.write_text("{}")
    result = kmsir("export", str(copy), "--out", str(tmp_path / "x.tar.gz"))
    assert result.returncode == 1
    assert "TAMPERED: not exported:" in result.stdout
    assert not (tmp_path / "x.tar.gz").exists()
    assert_no_traceback(result)


def test_signed_export_verifies_offline_and_catches_changes(
    demo_bundle: Path, tmp_path: Path, moto_server: LoopbackServer
) -> None:
    import subprocess
    import sys

    kms = moto_server.client("kms")
    key = kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]
    archive = tmp_path / "evidence.tar.gz"
    exported = subprocess.run(
        [
            sys.executable,
            "-m",
            "kmsir",
            "export",
            str(demo_bundle),
            "--out",
            str(archive),
            "--sign-key",
            key["Arn"],
        ],
        capture_output=True,
        text=True,
        env=moto_server.env(),
        timeout=120,
    )
    assert exported.returncode == 0, exported.stderr
    moto_server.stop()
    verified = kmsir("verify", str(archive))  # offline: the server is gone
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"signature: valid ({key['Arn']}, public key sha256:" in verified.stdout
    data = bytearray(archive.read_bytes())
    data[-10] ^= 1
    archive.write_bytes(bytes(data))
    tampered = kmsir("verify", str(archive))
    assert tampered.returncode == 1
    assert (
        "TAMPERED: evidence.tar.gz: sha256 differs from evidence.tar.gz.sha256" in tampered.stdout
    )
    assert "the signature is for another archive" in tampered.stdout
    assert_no_traceback(tampered)

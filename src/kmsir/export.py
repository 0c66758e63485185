"""``kmsir export``: one deterministic archive of a bundle, with its sha256.

The same bundle always gives the same bytes: entries sorted, owners and permissions fixed,
every mtime the run's start, and a gzip header without file name or time. Next to the archive
goes ``<archive>.sha256`` in ``sha256sum`` format. Only an intact bundle is exported, and the
archive holds nothing but the bundle's own files under ``<run-id>/``.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from datetime import datetime
from pathlib import Path

from kmsir import evidence, integrity
from kmsir.errors import TamperedError, UsageError


def _mtime(bundle: evidence.Bundle) -> int:
    started = str(bundle.manifest.get("started") or "")
    try:
        return int(datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def archive_bytes(root: Path) -> bytes:
    """The deterministic ``.tar.gz`` of the intact bundle at ``root``."""
    problems = integrity.verify(root)
    if problems:
        raise TamperedError([f"not exported: {p}" for p in problems])
    bundle = evidence.Bundle.open(root)
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


#: Signing algorithms by KMS key spec (the message signed is the archive's sha256 digest).
SIGNING_ALGORITHMS = {
    "RSA_2048": "RSASSA_PSS_SHA_256",
    "RSA_3072": "RSASSA_PSS_SHA_256",
    "RSA_4096": "RSASSA_PSS_SHA_256",
    "ECC_NIST_P256": "ECDSA_SHA_256",
    "ECC_NIST_P384": "ECDSA_SHA_256",
    "ECC_NIST_P521": "ECDSA_SHA_256",
}


def signature_record(
    key_arn: str, algorithm: str, digest: str, signature: bytes, public_key_der: bytes
) -> dict[str, str]:
    """What ``<archive>.sig.json`` holds: enough to check the signature offline, months later."""
    import base64

    from cryptography.hazmat.primitives import serialization

    public = serialization.load_der_public_key(public_key_der)
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return {
        "key_arn": key_arn,
        "algorithm": algorithm,
        "sha256": digest,
        "signature": base64.b64encode(signature).decode(),
        "public_key_pem": pem,
    }


def check_signature(record: dict[str, str], digest: str) -> str | None:
    """A problem with a detached signature, or ``None`` when it verifies (no AWS needed)."""
    import base64

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    if record.get("sha256") != digest:
        return "the signature is for another archive (sha256 differs)"
    try:
        public = serialization.load_pem_public_key(record["public_key_pem"].encode())
        signature = base64.b64decode(record["signature"])
        message = bytes.fromhex(digest)
        if isinstance(public, rsa.RSAPublicKey):
            public.verify(
                signature,
                message,
                padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO),
                hashes.SHA256(),
            )
        elif isinstance(public, ec.EllipticCurvePublicKey):
            public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        else:
            return "unsupported public key type"
    except (InvalidSignature, KeyError, ValueError):
        return "the signature does not verify"
    return None

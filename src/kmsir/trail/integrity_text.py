"""A log file integrity result in words (one summary line, problem lines) and read back from
its ``trail-integrity.json`` form."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kmsir.trail.integrity import (
    DIGEST_TAMPERING,
    DIGEST_UNPROVEN,
    TAMPERING,
    UNPROVEN,
    DigestStatus,
    FileVerdict,
)

if TYPE_CHECKING:
    from kmsir.trail.integrity import Result

_FILE_FIELDS = ("location", "name", "verdict", "sha256", "expected", "digest", "detail")
_DIGEST_FIELDS = ("location", "name", "status", "start", "end", "fingerprint", "region", "detail")


def summary(result: Result) -> str:
    """E.g. "trail integrity: 48 log files (47 validated, 1 deleted), 12 digests (12 valid):
    tampering found"."""
    files = ", ".join(f"{n} {verdict}" for verdict, n in result.counts().items())
    digests = ", ".join(f"{n} {status}" for status, n in result.digest_counts().items())
    unproven = sum(1 for f in result.files if f.verdict in UNPROVEN)
    if result.tampering:
        outcome = "TAMPERING FOUND"
    elif unproven or not result.files:
        outcome = f"no tampering found, {unproven} log file{_s(unproven)} unproven"
    else:
        outcome = "every log file proven intact"
    return (
        f"trail integrity: {len(result.files)} log file{_s(len(result.files))}"
        f"{f' ({files})' if files else ''}, {len(result.digests)} digest"
        f"{_s(len(result.digests))}{f' ({digests})' if digests else ''}: {outcome}"
    )


def problem_lines(result: Result, limit: int = 20) -> list[str]:
    """Every failing log file and digest, one line each, then the unproven ones (``limit``
    at most, then "... and N more unproven")."""
    lines = [_digest_line(d) for d in result.digests if d.status in DIGEST_TAMPERING]
    lines += [_file_line(f) for f in result.files if f.verdict in TAMPERING]
    unproven = [_digest_line(d) for d in result.digests if d.status in DIGEST_UNPROVEN]
    unproven += [_file_line(f) for f in result.files if f.verdict in UNPROVEN]
    lines += unproven[:limit]
    if len(unproven) > limit:
        lines.append(f"... and {len(unproven) - limit} more unproven")
    return lines


def _file_line(verdict: FileVerdict) -> str:
    detail = f" ({verdict.detail})" if verdict.detail else ""
    return f"log file {verdict.verdict}: {verdict.location}{detail}"


def _digest_line(status: DigestStatus) -> str:
    detail = f" ({status.detail})" if status.detail else ""
    return f"digest {status.status}: {status.location}{detail}"


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def result_from_json(document: Mapping[str, Any]) -> Result:
    """The result a ``trail-integrity.json`` records; ``ValueError`` naming what is wrong."""
    from kmsir.trail.integrity import Result

    if not isinstance(document, Mapping):
        raise ValueError("trail integrity: not a JSON object")
    if document.get("version", 1) != 1:
        raise ValueError(f"trail integrity: version {document.get('version')!r} is not 1")
    files = [
        FileVerdict(**_fields(entry, _FILE_FIELDS, "files", n))
        for n, entry in enumerate(_list(document, "files"))
    ]
    digests = [
        DigestStatus(**_fields(entry, _DIGEST_FIELDS, "digests", n))
        for n, entry in enumerate(_list(document, "digests"))
    ]
    return Result(files=files, digests=digests)


def _list(document: Mapping[str, Any], key: str) -> list[Any]:
    value = document.get(key)
    if not isinstance(value, list):
        raise ValueError(f"trail integrity: {key!r} is not a list")
    return value


def _fields(entry: Any, names: tuple[str, ...], key: str, n: int) -> dict[str, Any]:
    if not isinstance(entry, Mapping):
        raise ValueError(f"trail integrity: {key}[{n}] is not an object")
    for name in names[:3]:  # location, name, verdict/status
        if not isinstance(entry.get(name), str):
            raise ValueError(f"trail integrity: {key}[{n}] lacks {name!r}")
    values = {name: entry.get(name) for name in names}
    for name, value in values.items():
        if value is not None and not isinstance(value, str):
            raise ValueError(f"trail integrity: {key}[{n}].{name} is not text")
    values["detail"] = values["detail"] or ""
    return values

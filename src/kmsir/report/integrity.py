"""The report's "Trail log integrity" part of the evidence section, from each collect step's
``trail-integrity.json``.

A collect step that read trail log files (``source: s3`` or ``files``) checked each against
CloudTrail's signed digest files and saved the answer beside its events. Per such file (one
per collect step, or per account and Region when the step fanned out): the counts by verdict
and by digest status, every log file and digest that failed (bounded: a forged file may list
millions), the unproven ones (capped: they prove nothing either way, and are never shown as
failures), the fingerprints of the public keys the signatures were checked with, what the
bundle keeps to re-check offline, and the command that does.

Old bundles have no such file: the part is empty and the report reads as before. The file's
names, locations and details come from a trail bucket (attacker-controlled): each text is cut
and its controls made visible here (``findings.shown``), and the templates escape it.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Sequence
from typing import Any

from kmsir.errors import EvidenceError
from kmsir.evidence.manifest import Bundle
from kmsir.report.findings import shown
from kmsir.report.steps import ReportStep
from kmsir.trail.finding_integrity import INTEGRITY_NAME, Integrity, read

__all__ = ["integrity", "section"]

COLLECT = "cloudtrail.collect"
#: A ``trail-integrity.json`` larger than this is not read (a month of a busy trail is far less).
MAX_BYTES = 64 * 1024 * 1024
#: Failing log files and digests listed (every one a real check finds), unproven ones listed,
#: public keys listed.
MAX_FAILING = 1_000
MAX_UNPROVEN = 20
MAX_KEYS = 50
#: What re-checks a bundle's saved copy, offline.
RECHECK = "kmsir cloudtrail verify-logs <bundle>"


def integrity(bundle: Bundle, steps: Sequence[ReportStep]) -> list[dict[str, Any]]:
    """One entry per ``trail-integrity.json`` of the run's succeeded collect steps, in step
    order (none in a bundle written before the check, or without a trail-log collect)."""
    recorded = [str(getattr(a.record, "path", "")) for a in bundle.view.artifacts]
    known = set(recorded)
    return [
        _part(bundle, step, path)
        for step in steps
        if step.action == COLLECT and step.status == "succeeded"
        for path in _paths(step.outputs, known)
    ]


def _paths(outputs: dict[str, Any], known: set[str]) -> Iterator[str]:
    """The step's ``trail-integrity.json`` files: the one its ``integrity`` output names, and
    the one beside each events file it kept (a fanned-out step's, one per target), if the
    journal records them."""
    checked = outputs.get("integrity")
    named = checked.get("artifact") if isinstance(checked, dict) else None
    events = outputs.get("artifacts")
    events = events if isinstance(events, list) else [outputs.get("artifact")]
    beside = [
        posixpath.join(posixpath.dirname(p), INTEGRITY_NAME) for p in events if isinstance(p, str)
    ]
    seen: set[str] = set()
    for path in [named, *beside]:
        if isinstance(path, str) and path in known and path not in seen:
            seen.add(path)
            yield path


def _part(bundle: Bundle, step: ReportStep, path: str) -> dict[str, Any]:
    # artifacts/NN-step/<account>/<region>/trail-integrity.json: a target of a fanned-out step
    middle = path.split("/")[2:-1]
    base: dict[str, Any] = {
        "step": shown(step.id, 200),
        "target": shown("/".join(middle), 200),
        "artifact": shown(path, 500),
    }
    try:
        file = bundle.artifact_path(path)
        if file.stat().st_size > MAX_BYTES:
            return {**base, "unreadable": f"larger than {MAX_BYTES:,} bytes"}
        found = read(file.read_bytes())
    except (EvidenceError, OSError, ValueError) as exc:
        return {**base, "unreadable": shown(exc, 300)}
    return {**base, **section(found)}


def section(found: Integrity) -> dict[str, Any]:
    """What the part shows of one ``trail-integrity.json`` (see the module's docstring)."""
    failing, bad = found.failing, found.failing_digests
    unproven, unsure = found.unproven, found.unproven_digests
    return {
        "tampering": found.tampering,
        "source": shown(found.source or "", 1_100),
        "since": shown(found.since or "", 64),
        "until": shown(found.until or "", 64),
        "files": len(found.files),
        "digests": len(found.digests),
        "counts": {shown(v, 64): n for v, n in list(found.counts().items())[:20]},
        "digest_counts": {shown(s, 64): n for s, n in list(found.digest_counts().items())[:20]},
        "failing": [_file(f) for f in failing[:MAX_FAILING]],
        "more_failing": max(len(failing) - MAX_FAILING, 0),
        "failing_digests": [_digest(d) for d in bad[:MAX_FAILING]],
        "more_failing_digests": max(len(bad) - MAX_FAILING, 0),
        "unproven": [_file(f) for f in unproven[:MAX_UNPROVEN]],
        "more_unproven": max(len(unproven) - MAX_UNPROVEN, 0),
        "unproven_digests": [_digest(d) for d in unsure[:MAX_UNPROVEN]],
        "more_unproven_digests": max(len(unsure) - MAX_UNPROVEN, 0),
        "keys": [
            {name: shown(k.get(name) or "", 100) for name in k} for k in found.keys[:MAX_KEYS]
        ],
        "more_keys": max(len(found.keys) - MAX_KEYS, 0),
        "saved_digests": sum(1 for d in found.digests if d["saved"]),
        "kept_logs": sum(1 for f in found.files if f["kept"]),
        "recheck": RECHECK,
    }


def _file(entry: dict[str, str | None]) -> dict[str, Any]:
    sha256, expected = entry["sha256"] or "", entry["expected"] or ""
    return {
        "verdict": shown(entry["verdict"] or "unknown", 64),
        "file": shown(entry["location"] or entry["name"] or "", 1_100),
        "digest": shown(entry["digest"] or "", 300),
        "detail": shown(entry["detail"] or "", 500),
        # a hash that differs from the one the digest lists: both, for the record
        "sha256": shown(sha256, 100) if expected and sha256 and sha256 != expected else "",
        "expected": shown(expected, 100) if expected and sha256 and sha256 != expected else "",
    }


def _digest(entry: dict[str, str | None]) -> dict[str, Any]:
    return {
        "status": shown(entry["status"] or "unknown", 64),
        "file": shown(entry["location"] or entry["name"] or "", 1_100),
        "start": shown(entry["start"] or "", 64),
        "end": shown(entry["end"] or "", 64),
        "detail": shown(entry["detail"] or "", 500),
    }

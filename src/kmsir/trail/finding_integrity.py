"""A collect step's trail log integrity, as findings and the report read it back.

The collect step checks every trail log file it read against CloudTrail's digest files
(``trail.integrity``, whose verdict and status strings these are) and writes the answer as
``trail-integrity.json`` (version 1: ``files`` with a ``verdict`` each, ``digests`` with a
``status`` each, ``tampering``, the public keys used). ``read`` parses it into an
``Integrity``; ``tampering_finding`` makes of it the one critical finding "Trail log
tampering" when a log file or a digest failed (a log file's hash mismatch, deleted, chain
broken, digest missing, digest signature invalid; a digest missing, unreadable, wrongly
signed or off the chain). A file no checkable digest covers is unproven, never a failure;
nothing is found when every file was validated.

The file is evidence, but its names, locations and details come from a trail bucket an
attacker may write to: every text taken from it is cut (``clip``) here; whoever shows it makes
its controls visible and escapes it.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kmsir.trail.digest_format import LOG_NAME
from kmsir.trail.events import clip
from kmsir.trail.finding import Finding
from kmsir.trail.integrity import (
    DIGEST_UNPROVEN,
    STATUSES,
    TAMPERING,
    UNPROVEN,
    VALID,
    VALIDATED,
    VERDICTS,
)

__all__ = ["INTEGRITY_NAME", "TAMPERING", "Integrity", "read", "tampering_finding"]

#: The collect step's artifact, at the root of its step folder (or of a target's folder).
INTEGRITY_NAME = "trail-integrity.json"

RULE = "trail-log-tampering"
TITLE = "Trail log tampering"
PRACTICE = "CloudTrail log file integrity validation on every trail"
#: Failing files the finding names in its text, and lists in its details.
NAMED = 5
LISTED = 50

#: How much of each text field of an entry is kept (an S3 key is at most 1,024 bytes).
_LIMITS = {
    "location": 1_100,
    "name": 300,
    "verdict": 64,
    "status": 64,
    "sha256": 100,
    "expected": 100,
    "digest": 300,
    "detail": 500,
    "kept": 400,
    "saved": 400,
    "start": 64,
    "end": 64,
    "fingerprint": 100,
    "region": 64,
    "valid_from": 64,
    "valid_until": 64,
}


def _text(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return clip(str(value), _LIMITS.get(name, 300))


def _entry(value: Any, names: tuple[str, ...]) -> dict[str, str | None]:
    value = value if isinstance(value, Mapping) else {}
    return {n: _text(value.get(n), n) for n in names}


_FILE = ("location", "name", "verdict", "sha256", "expected", "digest", "detail", "kept")
_DIGEST = ("location", "name", "status", "start", "end", "fingerprint", "region", "detail", "saved")
_KEY = ("fingerprint", "region", "valid_from", "valid_until")


@dataclass(frozen=True)
class Integrity:
    """``trail-integrity.json`` as read: every entry's text fields as (cut) strings or
    ``None``; entries that are not objects are dropped."""

    files: list[dict[str, str | None]] = field(default_factory=list)
    digests: list[dict[str, str | None]] = field(default_factory=list)
    keys: list[dict[str, str | None]] = field(default_factory=list)
    #: What the file says as a whole (its ``tampering``); a failing file counts too.
    flagged: bool = False
    source: str | None = None
    since: str | None = None
    until: str | None = None

    @property
    def failing(self) -> list[dict[str, str | None]]:
        """The log files that failed: neither validated nor unproven (an unknown verdict
        too: the safe side; a digest likewise)."""
        return [f for f in self.files if f["verdict"] != VALIDATED and f["verdict"] not in UNPROVEN]

    @property
    def unproven(self) -> list[dict[str, str | None]]:
        return [f for f in self.files if f["verdict"] in UNPROVEN]

    @property
    def failing_digests(self) -> list[dict[str, str | None]]:
        return [
            d for d in self.digests if d["status"] != VALID and d["status"] not in DIGEST_UNPROVEN
        ]

    @property
    def unproven_digests(self) -> list[dict[str, str | None]]:
        return [d for d in self.digests if d["status"] in DIGEST_UNPROVEN]

    @property
    def tampering(self) -> bool:
        """As ``trail.integrity.Result.tampering``: a log file or a digest failed (or the
        file says so)."""
        return self.flagged or bool(self.failing) or bool(self.failing_digests)

    def counts(self) -> dict[str, int]:
        """Log files by verdict, in ``trail.integrity``'s order (any other verdict after)."""
        return _ordered(Counter(str(f["verdict"]) for f in self.files), VERDICTS)

    def digest_counts(self) -> dict[str, int]:
        """Digest files by status, in ``trail.integrity``'s order."""
        return _ordered(Counter(str(d["status"]) for d in self.digests), STATUSES)


def _ordered(found: Counter[str], order: tuple[str, ...]) -> dict[str, int]:
    return {k: found[k] for k in (*order, *sorted(set(found) - set(order))) if found[k]}


def read(data: bytes) -> Integrity:
    """``trail-integrity.json``'s bytes as an ``Integrity``; ``ValueError`` naming what is
    wrong when they are not one."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    if document.get("version") != 1:
        raise ValueError(f"version {clip(str(document.get('version')), 20)!r}, not 1")

    def listed(name: str, fields: tuple[str, ...]) -> list[dict[str, str | None]]:
        found = document.get(name)
        items = found if isinstance(found, list) else []
        return [_entry(i, fields) for i in items if isinstance(i, dict)]

    window = document.get("window")
    window = window if isinstance(window, dict) else {}
    return Integrity(
        files=listed("files", _FILE),
        digests=listed("digests", _DIGEST),
        keys=listed("public_keys", _KEY),
        flagged=document.get("tampering") is True,
        source=_text(document.get("source"), "location"),
        since=_text(window.get("since"), "start"),
        until=_text(window.get("until"), "end"),
    )


def _when(entry: Mapping[str, str | None], digests: Mapping[str, str | None]) -> str:
    """When a failing log file's period began: the time in its name, else its digest's start."""
    match = LOG_NAME.match(entry["name"] or "")
    if match:
        day, time = match["day"], match["time"]
        return f"{day[:4]}-{day[4:6]}-{day[6:]}T{time[:2]}:{time[2:]}:00Z"
    return digests.get(entry["digest"] or "") or ""


def tampering_finding(integrity: Integrity, artifact: str | None = None) -> Finding | None:
    """The critical finding "Trail log tampering" when a log file failed its check (or the
    file says tampering), naming what failed, the counts by verdict and the first files;
    ``None`` when nothing failed (unproven files alone are no finding)."""
    if not integrity.tampering:
        return None
    failing, bad_digests = integrity.failing, integrity.failing_digests
    starts = {str(d["name"]): d["start"] for d in integrity.digests if d["name"] and d["start"]}
    times = [t for t in (_when(f, starts) for f in failing) if t]
    times += [str(d["start"]) for d in bad_digests if d["start"]]
    counts = integrity.counts()
    failed = {v: n for v, n in counts.items() if v != VALIDATED and v not in UNPROVEN}
    said = ", ".join(f"{n} {v}" for v, n in list(failed.items())[:8])
    named = "; ".join(
        f"{clip(f['name'] or f['location'] or '?', 120)} ({f['verdict']})" for f in failing[:NAMED]
    )
    more = f" and {len(failing) - NAMED} more" if len(failing) > NAMED else ""
    checked = (
        f"{len(integrity.files)} log file(s) checked against {len(integrity.digests)} "
        "digest file(s)"
    )
    if failing:
        why = f"CloudTrail log file validation failed: {said} of {checked} (first: {named}{more})."
    else:
        why = f"CloudTrail log file validation found tampering ({checked})."
    if bad_digests:
        digest_counts = Counter(str(d["status"]) for d in bad_digests).most_common()
        first = bad_digests[0]
        why += (
            " Digest files: "
            + ", ".join(f"{n} {s}" for s, n in digest_counts)
            + f" (first: {clip(first['name'] or '?', 120)}: "
            + f"{clip(first['detail'] or first['status'] or '', 200)})."
        )
    why += (
        " Whoever can write to the trail bucket may have deleted or changed the record of "
        "their own calls: for those hours, trust the trail only where another source (the "
        "90-day event history, CloudTrail Lake, an organisation trail) agrees."
    )
    ids = sorted(f"{f['verdict']}:{f['name'] or f['location']}" for f in failing)
    ids += sorted(f"{d['status']}:{d['name']}" for d in bad_digests)
    digest = hashlib.sha256(json.dumps([RULE, ids]).encode()).hexdigest()[:12]
    return Finding(
        id=f"{RULE}-{digest}",
        severity="critical",
        title=TITLE,
        event_ids=[],
        event_name="",
        event_time=min(times) if times else "",
        principal="",
        why=why,
        practice=PRACTICE,
        details={
            "counts": counts,
            "digest_counts": integrity.digest_counts(),
            "files": failing[:LISTED],
            "more_files": max(len(failing) - LISTED, 0),
            "digests": bad_digests[:LISTED],
            "more_digests": max(len(bad_digests) - LISTED, 0),
            "artifact": artifact,
        },
    )

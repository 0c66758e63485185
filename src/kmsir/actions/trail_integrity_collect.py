"""``cloudtrail.collect``'s log file integrity check: what its scan read and hashed, checked
against the digests of the same bucket and days (or under the same paths), the public keys
asked of CloudTrail (``trail_integrity``), the answer and copies saved (``save``:
``trail-integrity.json``, ``trail-digests/<name>`` each digest as read, ``trail-logs/<name>``
each log file holding a matched event within a budget: enough to repeat the check offline
from the bundle alone)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kmsir.actions import trail_s3
from kmsir.actions.base import ActionContext
from kmsir.actions.trail_integrity import bucket_reading, days_listed, key_range, public_keys
from kmsir.evidence.bundle import NAME_PART
from kmsir.trail.digest_format import PublicKey, iso
from kmsir.trail.files import ScanStats
from kmsir.trail.integrity import DigestFile, LogFile, Result, basename, check, unproven_unread
from kmsir.trail.integrity_local import days_read, local_digests
from kmsir.trail.match import KeyMatcher

#: The artifact the check's answer is written to (``version`` 1), and the folders of copies.
ARTIFACT = "trail-integrity.json"
DIGESTS_DIR = "trail-digests"
LOGS_DIR = "trail-logs"


@dataclass
class Gathered:
    """What the ``s3`` source read of the digests before its log files were listed: the
    digests, the problems met, the log day prefixes to list, the backfill digests' times."""

    digests: list[DigestFile]
    problems: list[str]
    prefixes: list[str]
    backfills: dict[str, datetime] = field(default_factory=dict)


def read_bucket(
    ctx: ActionContext,
    bucket: str,
    prefix: str,
    regions: list[str] | None,
    matcher: KeyMatcher,
    start: datetime,
    end: datetime,
    *,
    validate: bool,
) -> tuple[list[bytes], ScanStats, Gathered | None]:
    """The ``s3`` source's scan (``trail_s3.scan_bucket``); with ``validate``, its digests
    fetched FIRST, before the log files are listed (``trail_integrity.bucket_reading``): a
    digest written while the logs are read would name files delivered after their listing."""
    gathered = None
    if validate:
        backfills: dict[str, datetime] = {}
        digests, problems, prefixes = bucket_reading(
            ctx.clients.client("s3"), bucket, prefix, regions, start, end, backfills=backfills
        )
        gathered = Gathered(digests, problems, prefixes, backfills)
    raw, stats = trail_s3.scan_bucket(
        ctx.clients,
        ctx.reporter,
        bucket,
        prefix,
        regions,
        matcher,
        start,
        end,
        hashes=validate,
        prefixes=gathered.prefixes if gathered else None,
    )
    return raw, stats, gathered


def check_collected(
    ctx: ActionContext,
    stats: ScanStats,
    *,
    start: datetime,
    end: datetime,
    bucket: str | None = None,
    prefix: str = "",
    gathered: Gathered | None = None,
    paths: Sequence[Path] = (),
) -> tuple[dict[str, Any], str, list[str]]:
    """The collect step's check of the log files its scan read and hashed (``stats``), against
    the digests of the same bucket and days (``gathered`` before the scan, ``bucket``) or
    under the same ``paths``: the artifacts written, the step's ``integrity`` output, the
    summary's part ("; trail integrity: 48 validated, 1 deleted") and the problems met
    reading digests."""
    backfills: dict[str, datetime] = {}
    if gathered is not None:
        digests, problems, backfills = gathered.digests, gathered.problems, gathered.backfills
        days = days_listed(gathered.prefixes, stats.hashes, digests)
        source = f"s3://{bucket}/{prefix.strip('/')}" if prefix.strip("/") else f"s3://{bucket}"
        kept = stats.kept
    else:
        digests, problems, source = local_digests(paths), [], "files"
        days = days_read(stats.hashes, start, end, [d.location for d in digests])
        kept = keep_local(stats.held, trail_s3.KEPT)
    failed: dict[str, str] = {}
    keys = public_keys(ctx.clients, key_range(digests, ctx.now(), backfills), failed=failed)
    why = {region: f"ListPublicKeys: {code}" for region, code in failed.items()}
    logs = [LogFile(where, sha) for where, sha in stats.hashes.items()]
    result = unproven_unread(
        check(logs, digests, keys, days=days, keys_problem=why or None), stats.unread
    )
    window = {"since": iso(start), "until": iso(end)}
    path = save(
        ctx,
        result,
        digests,
        keys,
        kept,
        source=source,
        window=window,
        days=days,
        keys_problem=why or None,
    )
    counts = result.counts()
    outputs = {
        "counts": counts,
        "digest_counts": result.digest_counts(),
        "tampering": result.tampering,
        "artifact": path,
    }
    told = ", ".join(f"{n} {verdict}" for verdict, n in counts.items()) or "no log file"
    summary = f"; trail integrity: {told}" + (" (TAMPERING)" if result.tampering else "")
    return outputs, summary, problems


def keep_local(held: Iterable[str], budget: int) -> dict[str, bytes]:
    """The bytes of local log files holding a matched event, read again for the bundle (the
    scan ran in other processes), up to ``budget`` bytes in all."""
    kept: dict[str, bytes] = {}
    total = 0
    for where in held:
        path = Path(where)
        try:
            size = path.stat().st_size
            if total + size > budget:
                continue
            kept[where] = path.read_bytes()
        except OSError:
            continue
        total += len(kept[where])
    return kept


def save(
    ctx: ActionContext,
    result: Result,
    digests: Sequence[DigestFile],
    keys: Sequence[PublicKey],
    kept_logs: Mapping[str, bytes],
    *,
    source: str,
    window: Mapping[str, str | None],
    days: Iterable[tuple[str, str, str]],
    keys_problem: Mapping[str, str] | None = None,
) -> str:
    """Write the check's artifacts (``trail-integrity.json``, the digests as read, the kept
    log files) and return the bundle path of ``trail-integrity.json``. Everything the
    answer depended on is in it, so that the bundle alone gives it again: besides the
    digests' bytes and signatures, each one's ``algorithm`` (S3 metadata) and ``problem``
    (why it could not be fetched), and ``keys_problem`` (Region -> why its public keys
    could not be had)."""
    names = _Names()
    saved: dict[str, str] = {}
    for digest in digests:
        if digest.gz and digest.location not in saved:
            name = f"{DIGESTS_DIR}/{names.take(DIGESTS_DIR, digest.name)}"
            ctx.artifacts.write(name, digest.gz)
            saved[digest.location] = name
    kept: dict[str, str] = {}
    for where, data in kept_logs.items():
        name = f"{LOGS_DIR}/{names.take(LOGS_DIR, basename(where))}"
        ctx.artifacts.write(name, data)
        kept[where] = name
    read = {d.location: d for d in digests}
    checked = result.to_json()
    for entry in checked.get("digests", []):
        found = read.get(entry["location"])
        entry["saved"] = saved.get(entry["location"])
        entry["signature"] = found.signature if found else None
        entry["algorithm"] = found.algorithm if found else None
        entry["problem"] = found.problem if found else None
    for entry in checked.get("files", []):
        entry["kept"] = kept.get(entry["location"])
    document: dict[str, Any] = {
        "version": 1,
        "source": source,
        "window": dict(window),
        "days": [list(d) for d in sorted(days)],
        "keys_problem": dict(keys_problem) if keys_problem else None,
    }
    document.update({k: v for k, v in checked.items() if k not in document})
    document["public_keys"] = [k.to_json() for k in keys]
    return ctx.artifacts.write(ARTIFACT, json.dumps(document, indent=1).encode() + b"\n")


class _Names:
    """Artifact names for files named by AWS or a folder: kept as they are when the bundle
    allows them, else made safe; never the same twice in one folder."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def take(self, folder: str, name: str) -> str:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).replace("..", "_")
        safe = safe.lstrip("._-") or "file"
        if len(safe) > 100:  # room for a number in front; the end (time, suffix) kept
            safe = safe[-100:].lstrip("._-") or "file"
        candidate, n = safe, 1
        while f"{folder}/{candidate}" in self._taken or not NAME_PART.fullmatch(candidate):
            n += 1
            candidate = f"{n}-{safe}"
        self._taken.add(f"{folder}/{candidate}")
        return candidate

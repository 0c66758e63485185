"""``kmsir cloudtrail verify-logs BUNDLE``: a collect step's log file check repeated offline,
from the bundle alone, and compared with the answer it recorded.

Each ``trail-integrity.json`` of the bundle (one per collect step that validated, per target
in a fan-out) names what the step read: the digests as read (``trail-digests/``, with the
signatures S3 gave), the public keys, the days read, each log file's SHA-256 and, for the log
files holding a matched event, their exact bytes (``trail-logs/``, within a budget). The saved
log files are hashed again; the others are taken at their recorded SHA-256 (said so). Every
saved file is also checked against the journal's record of it: a copy altered in the bundle
is named, not silently re-checked."""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kmsir.errors import UsageError
from kmsir.run.verify_logs import NOTHING, Checked

if TYPE_CHECKING:
    from kmsir.evidence.entries import Artifact
    from kmsir.trail.digest_format import PublicKey
    from kmsir.trail.integrity import DigestFile, LogFile, Result

#: The artifact a collect step's check writes (``actions.trail_integrity.ARTIFACT``).
ARTIFACT = "trail-integrity.json"
#: Differences listed by name at most (the rest counted).
MAX_DIFFERENCES = 20


def recheck(bundle: Path, keys: Sequence[PublicKey] | None = None) -> list[Checked]:
    """Every saved check of ``bundle`` repeated (with ``keys`` instead of the saved public
    keys when given). ``UsageError`` when the bundle holds none, or one that is no check."""
    from kmsir.evidence.bundle import JOURNAL, read_journal
    from kmsir.inert import one_line

    recorded = {a.record.path: a.record for a in read_journal(bundle / JOURNAL).view().artifacts}
    found = [path for path in recorded if posixpath.basename(path) == ARTIFACT]
    if not found:
        raise UsageError(
            f"{one_line(str(bundle), 200)}: no {ARTIFACT} in this bundle (no collect step of "
            f"its run validated trail logs: source s3 or files, validate: true)"
        )
    return [_recheck_one(bundle, path, recorded, keys) for path in found]


def _recheck_one(
    bundle: Path, path: str, recorded: Mapping[str, Artifact], keys: Sequence[PublicKey] | None
) -> Checked:
    from kmsir.inert import one_line
    from kmsir.trail.digest_format import PublicKey
    from kmsir.trail.integrity import Result

    copy = _Copy(bundle, posixpath.dirname(path), recorded)
    data = copy.read(ARTIFACT)
    where = one_line(f"{bundle.name}/{path}", 200)
    try:
        document = json.loads(data or b"")
        before = Result.from_json(document)
        saved_keys = [PublicKey.from_json(k) for k in document.get("public_keys") or []]
        days = {(str(a), str(r), str(d)) for a, r, d in document.get("days") or []}
        keys_problem = _keys_problem(document.get("keys_problem"))
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise UsageError(
            f"{where}: not a trail integrity check ({one_line(str(exc), 120)})"
        ) from None
    digests = [_digest(copy, entry) for entry in document.get("digests") or []]
    logs, unread, notes = _logs(copy, document.get("files") or [])
    public = list(keys) if keys is not None else saved_keys
    # the keys the step could not have (denied ListPublicKeys) left its digests unproven:
    # the same again offline, unless the responder gives keys
    why = keys_problem if keys is None else None
    after = _check(logs, [d for d in digests if d is not None], public, days, unread, why)
    notes.insert(
        0,
        f"public keys: {len(public)} "
        + ("given (--public-keys)" if keys is not None else "saved in the bundle"),
    )
    step = recorded[path].step
    label = f"step {step} ({path}): re-checked offline from the bundle's saved copy"
    changed, proven = _differences(before, after, proving=keys is not None)
    if proven:
        notes.append(
            f"proven now with the keys given: {proven} (log files and digests unproven when "
            f"recorded: not covered, signature unavailable)"
        )
    differences = [*copy.altered, *changed]
    return Checked(after, notes, label, before, differences, proven)


class _Copy:
    """The files of one saved check, each read as the journal vouches for it."""

    def __init__(self, bundle: Path, folder: str, recorded: Mapping[str, Artifact]) -> None:
        self.bundle, self.folder, self.recorded = bundle, folder, recorded
        self.altered: list[str] = []

    def read(self, name: str) -> bytes | None:
        """A saved file's bytes (``None`` when absent); one that is not what the journal
        recorded is noted in ``altered``."""
        import hashlib

        from kmsir.evidence.bundle import read_regular

        relative = posixpath.join(self.folder, name)
        if ".." in name.split("/") or name.startswith("/"):
            self.altered.append(f"{relative}: not a name the bundle could hold")
            return None
        try:
            data = read_regular(self.bundle / relative)
        except OSError:
            self.altered.append(f"{relative}: missing from the bundle (kmsir verify says more)")
            return None
        record = self.recorded.get(relative)
        if record is None or record.sha256 != hashlib.sha256(data).hexdigest():
            self.altered.append(
                f"{relative}: not as the journal recorded it (kmsir verify says more)"
            )
        return data


def _digest(copy: _Copy, entry: Mapping[str, Any]) -> DigestFile | None:
    """A digest as the step read it, from its saved copy (one it could not fetch: no bytes,
    as then); ``None`` for one it never read (named by the chain, absent)."""
    from kmsir.trail.integrity import NOT_FETCHED, UNREADABLE, DigestFile

    saved, signature = entry.get("saved"), entry.get("signature")
    algorithm, problem = entry.get("algorithm"), entry.get("problem")
    if not isinstance(problem, str) and entry.get("status") == NOT_FETCHED:
        problem = str(entry.get("detail") or "cannot fetch")  # a bundle of before "problem"
    if isinstance(problem, str):
        data: bytes | None = b""
    elif isinstance(saved, str):
        data = copy.read(saved)
    elif entry.get("status") == UNREADABLE:
        data = b""
    else:
        return None
    return DigestFile(
        str(entry["location"]),
        data or b"",
        signature if isinstance(signature, str) else None,
        algorithm if isinstance(algorithm, str) else None,
        problem=problem if isinstance(problem, str) else None,
    )


def _keys_problem(value: Any) -> dict[str, str] | str | None:
    """The recorded ``keys_problem``: Region -> why its public keys could not be had (or
    one reason for all); ``ValueError`` for anything else."""
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return value or None
    raise ValueError("keys_problem is neither null, a string nor Regions to reasons")


def _logs(
    copy: _Copy, entries: Sequence[Mapping[str, Any]]
) -> tuple[list[LogFile], dict[str, str], list[str]]:
    """The log files the step read: kept ones hashed again from their saved bytes, the
    others at their recorded SHA-256; those it could not read at all; and notes."""
    from kmsir.trail import files
    from kmsir.trail.integrity import DELETED, LogFile

    logs: list[LogFile] = []
    unread: dict[str, str] = {}
    rehashed = taken = 0
    for entry in entries:
        location = str(entry["location"])
        detail = str(entry.get("detail") or "")
        if entry.get("verdict") == DELETED:
            continue  # listed by a digest, never read
        if entry.get("sha256") is None and detail.startswith("cannot read"):
            unread[location] = detail.removeprefix("cannot read").strip(" ()")
        kept = entry.get("kept")
        if isinstance(kept, str):
            data = copy.read(kept)
            if data is not None:
                _, stats = files.scan_blob(data, location, NOTHING, None, None, hashes=True)
                logs.append(LogFile(location, stats.hashes.get(location)))
                rehashed += 1
                continue
        sha256 = entry.get("sha256")
        logs.append(LogFile(location, sha256 if isinstance(sha256, str) else None))
        taken += 1
    notes = [f"{rehashed} log file(s) kept in the bundle, hashed again"]
    if taken:
        notes.append(
            f"{taken} log file(s) not kept in the bundle: checked at the SHA-256 recorded "
            f"when the step read them"
        )
    return logs, unread, notes


def _check(
    logs: list[LogFile],
    digests: list[DigestFile],
    keys: list[PublicKey],
    days: set[tuple[str, str, str]],
    unread: dict[str, str],
    keys_problem: Mapping[str, str] | str | None,
) -> Result:
    from kmsir.trail.integrity import check, unproven_unread

    result = check(logs, digests, keys, days=days, keys_problem=keys_problem)
    return unproven_unread(result, unread)


def _differences(before: Result, after: Result, *, proving: bool) -> tuple[list[str], int]:
    """How the re-check's verdicts differ from the recorded ones, one line each (by file
    and digest name; details aside: a key's absence may be told differently), and, with
    keys given (``proving``), how many went from unproven (``not covered``, ``signature
    unavailable``) to proven (``validated``, ``valid``): what the keys prove that the step
    could not, not a difference."""
    from kmsir.trail.integrity import DIGEST_UNPROVEN, UNPROVEN, VALID, VALIDATED

    lines: list[str] = []
    proven = 0
    for kind, old, new, unproven, proof in (
        ("log file", {f.location: f.verdict for f in before.files}, {
            f.location: f.verdict for f in after.files
        }, UNPROVEN, VALIDATED),
        ("digest", {d.location: d.status for d in before.digests}, {
            d.location: d.status for d in after.digests
        }, DIGEST_UNPROVEN, VALID),
    ):  # fmt: skip
        for location in sorted(old.keys() | new.keys()):
            was, now = old.get(location, "absent"), new.get(location, "absent")
            if was == now:
                continue
            if proving and was in unproven and now == proof:
                proven += 1
            else:
                lines.append(f"{kind} {location}: recorded {was!r}, now {now!r}")
    if before.tampering != after.tampering:
        lines.insert(0, f"tampering: recorded {before.tampering}, now {after.tampering}")
    if len(lines) > MAX_DIFFERENCES:
        lines[MAX_DIFFERENCES:] = [f"... and {len(lines) - MAX_DIFFERENCES} more"]
    return lines, proven

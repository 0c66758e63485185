"""CloudTrail log file integrity on hostile digests: whatever a digest file holds (deep
nesting, huge numbers, wrong types, gzip bombs, random damage), ``integrity.check`` calls it
``unreadable`` (or ignores what it cannot use) and never raises, and memory stays bounded.

And on what real buckets and copies hold besides a trail: a gunzipped copy, stray files among
the digests, digests archived or throttled rather than withheld, a window reaching past the
bucket's lifecycle retention. Each proves nothing, and no tampering is claimed of it."""

from __future__ import annotations

import contextlib
import copy
import gzip
import json
import os
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from kmsir.trail import digest_format as fmt
from kmsir.trail.integrity import DigestFile, LogFile, Result, check
from kmsir.trail.integrity_chain import MAX_DIGEST_GZ, MAX_DIGEST_JSON, Chains
from tests import digestkit


def with_body(trail: digestkit.Trail, hour: int, uncompressed: bytes, *, sign: bool) -> Result:
    """``trail.check()`` with the ``hour``-th digest's content replaced (and signed)."""
    stored = trail.digests[trail.digest_name(hour)]
    stored.body = gzip.compress(uncompressed, mtime=0)
    if sign:
        try:
            document = json.loads(uncompressed)
        except (ValueError, RecursionError):
            document = None
        if isinstance(document, dict):
            with contextlib.suppress(KeyError, RecursionError):  # unsignable: left as it was
                stored.signature = fmt.sign(digestkit.private_key(), document, uncompressed)
    return trail.check()


def status(result: Result, name: str) -> tuple[str, str]:
    (found,) = [(d.status, d.detail) for d in result.digests if d.name == name]
    return found


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deep"),
        (b'{"digestEndTime": ' + b"9" * 5000 + b"}", "not a JSON document"),
        (b"\xff\xfe{}", "not a JSON document"),
    ],
)
def test_json_python_cannot_load_is_an_unreadable_digest(text: bytes, said: str) -> None:
    trail = digestkit.build(hours=2)
    result = with_body(trail, 1, text, sign=False)
    state, detail = status(result, trail.digest_name(1))
    assert state == "unreadable" and said in detail
    assert status(result, trail.digest_name(0))[0] == "valid"


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"logFiles": [1, "x"]}, "logFiles are not a list"),
        ({"logFiles": {"s3Object": "x"}}, "logFiles are not a list"),
        ({"logFiles": [{"s3Object": ["x"], "hashValue": "ab"}]}, "logFiles are not a list"),
        ({"logFiles": [{"s3Object": "x", "hashValue": 5}]}, "logFiles are not a list"),
        ({"digestEndTime": {"at": [1]}}, "digestEndTime not text"),
        ({"digestS3Object": None, "digestS3Bucket": 3}, "digestS3Bucket, digestS3Object not text"),
        ({"previousDigestSignature": 12}, "previousDigestSignature not text"),
        ({"digestPublicKeyFingerprint": ["x"]}, "digestPublicKeyFingerprint not text"),
    ],
)
def test_fields_of_the_wrong_type_make_a_digest_unreadable(
    change: dict[str, Any], said: str
) -> None:
    trail = digestkit.build(hours=2)
    document = trail.digest(trail.digest_name(1)) | change
    result = with_body(trail, 1, json.dumps(document).encode(), sign=True)
    state, detail = status(result, trail.digest_name(1))
    assert state == "unreadable" and said in detail


_ODD: list[Any] = [None, 0, -1, 2**70, 1.5, True, "", "x", "AWSLogs/", [], {}, [1], {"a": {}}]


def _mutate(value: Any, rng: random.Random) -> Any:
    """``value`` with one random change somewhere inside it."""
    if isinstance(value, dict) and value and rng.random() < 0.7:
        key = rng.choice(list(value))
        roll = rng.random()
        if roll < 0.15:
            del value[key]
        elif roll < 0.55:
            value[key] = _mutate(value[key], rng)
        else:
            value[key] = copy.deepcopy(rng.choice(_ODD))
        return value
    if isinstance(value, list) and value and rng.random() < 0.7:
        at = rng.randrange(len(value))
        value[at] = _mutate(value[at], rng) if rng.random() < 0.6 else rng.choice(_ODD)
        return value
    return copy.deepcopy(rng.choice(_ODD))


def test_random_damage_to_digests_never_raises() -> None:
    """Random field changes (signed again with the trail's key, so the chain and the
    listings are walked with them), and random byte damage to the stored file."""
    rng = random.Random(23)  # noqa: S311 - test data
    trail = digestkit.build(hours=3)
    originals = {name: stored.body for name, stored in trail.digests.items()}
    signatures = {name: stored.signature for name, stored in trail.digests.items()}
    seen: set[str] = set()
    for _ in range(300):
        for name, stored in trail.digests.items():
            stored.body, stored.signature = originals[name], signatures[name]
        hour = rng.randrange(3)
        name = trail.digest_name(hour)
        if rng.random() < 0.8:
            document = _mutate(trail.digest(name), rng)
            result = with_body(trail, hour, json.dumps(document).encode(), sign=True)
        else:
            body = bytearray(originals[name])
            for _ in range(rng.randint(1, 4)):
                body[rng.randrange(len(body))] = rng.randrange(256)
            trail.digests[name].body = bytes(body[: rng.randint(1, len(body))])
            result = trail.check()
        json.dumps(result.to_json())
        result.summary()
        result.problem_lines()
        seen.update(d.status for d in result.digests)
    assert {"valid", "unreadable"} <= seen


def test_a_digest_larger_than_the_caps_is_unreadable() -> None:
    trail = digestkit.build(hours=2)
    name = trail.digest_name(1)
    # stored: random filler that does not compress, signed correctly
    document = trail.digest(name) | {"filler": os.urandom(MAX_DIGEST_GZ).hex()}
    uncompressed, gz = fmt.encode(document)
    assert len(gz) > MAX_DIGEST_GZ and len(uncompressed) < MAX_DIGEST_JSON
    trail.digests[name].body = gz
    trail.digests[name].signature = fmt.sign(digestkit.private_key(), document, uncompressed)
    assert status(trail.check(), name) == ("unreadable", "larger than 4 MiB")
    # decompressed: a gzip bomb of spaces
    bomb = trail.digest(trail.digest_name(0))
    text = json.dumps(bomb).encode() + b" " * MAX_DIGEST_JSON
    result = with_body(trail, 1, text, sign=True)
    assert status(result, name) == ("unreadable", "larger than 16 MiB once decompressed")


def test_no_digest_keeps_its_decompressed_content_once_checked() -> None:
    trail = digestkit.build(hours=3)
    chains = Chains(
        trail.digest_files(), {k.fingerprint: k for k in trail.public_keys()}, trail.days(), None
    )
    assert [d.status for d in chains.read.values()] == ["valid"] * 3
    assert all(d.uncompressed == b"" and d.sha256 for d in chains.read.values())


def verdicts(result: Result) -> dict[str, tuple[str, str]]:
    return {f.name: (f.verdict, f.detail) for f in result.files}


def copy_of(trail: digestkit.Trail, root: Path) -> tuple[list[LogFile], list[DigestFile]]:
    """The log files and digests of a copy on disk, read as a local check reads them, each
    digest with its signature (a ``signatures.json`` sidecar's)."""
    signatures = {name: stored.signature for name, stored in trail.digests.items()}
    logs, digests = [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if "CloudTrail-Digest" in path.parts:
            name = path.name if path.name.endswith(".gz") else f"{path.name}.gz"
            digests.append(DigestFile(str(path), data, signatures.get(name)))
        else:
            content = gzip.decompress(data) if path.name.endswith(".gz") else data
            logs.append(LogFile(str(path), fmt.log_hash(content)))
    return logs, digests


@pytest.mark.parametrize("folder", ["AWSLogs", "CloudTrail"])
def test_a_gunzipped_copy_of_an_intact_trail_is_proven(tmp_path: Path, folder: str) -> None:
    """``aws s3 sync`` then ``gunzip -r``: the digests list ``...json.gz`` names, the files
    are ``...json``; the hashes are of the uncompressed content, so they still prove them
    (``folder``: gunzipped whole, or only the log files)."""
    trail = digestkit.build(hours=3)
    root = trail.write(tmp_path)
    gunzipped = next(p for p in root.rglob(folder) if p.is_dir())
    digestkit.gunzip(gunzipped)
    logs, digests = copy_of(trail, root)
    assert logs and all(log.name.endswith(".json") for log in logs)
    result = check(logs, digests, trail.public_keys(), days=trail.days())
    assert result.counts() == {"validated": 6}
    assert result.digest_counts() == {"valid": 3}
    assert not result.tampering
    # a log file deleted from such a copy is still caught, under the name its digest gives
    gone = trail.log_names(1)[0]
    (path,) = root.rglob(gone.removesuffix(".gz"))
    path.unlink()
    logs, digests = copy_of(trail, root)
    result = check(logs, digests, trail.public_keys(), days=trail.days())
    assert verdicts(result)[gone][0] == "deleted"
    assert result.counts() == {"validated": 5, "deleted": 1}


def test_stray_files_among_the_digests_are_ignored() -> None:
    """A macOS copy's ``._<digest>.json.gz`` (AppleDouble metadata) is no digest: it proves
    nothing, so it is neither a digest status nor tampering."""
    trail = digestkit.build(hours=2)
    digests = trail.digest_files()
    strays = [
        DigestFile(d.location.replace(d.name, f"._{d.name}"), b"\x00\x05\x16\x07 Mac", None)
        for d in digests
    ]
    strays.append(DigestFile(digests[0].location.replace(digests[0].name, "x.json.gz"), b"", None))
    result = check(trail.log_files(), [*strays, *digests], trail.public_keys(), days=trail.days())
    assert {d.name for d in result.digests} == set(trail.digests)
    assert result.digest_counts() == {"valid": 2}
    assert result.counts() == {"validated": 4}
    assert not result.tampering


def unfetched(trail: digestkit.Trail, hour: int, code: str) -> list[DigestFile]:
    """The trail's digests, the ``hour``-th listed but failing with ``code`` when fetched."""
    name = trail.digest_name(hour)
    return [
        DigestFile(d.location, b"", None, problem=f"cannot fetch ({code})") if d.name == name else d
        for d in trail.digest_files()
    ]


@pytest.mark.parametrize("code", ["InvalidObjectState", "SlowDown", "InternalError"])
def test_a_digest_archived_or_throttled_is_unproven_not_tampering(code: str) -> None:
    """A lifecycle rule moved it to Glacier (``InvalidObjectState``), or S3 was busy: its
    content is unknown, which proves nothing either way.
    https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html (InvalidObjectState)"""
    trail = digestkit.build(hours=3)
    result = check(
        trail.log_files(), unfetched(trail, 1, code), trail.public_keys(), days=trail.days()
    )
    assert status(result, trail.digest_name(1)) == ("not fetched", f"cannot fetch ({code})")
    period = {verdicts(result)[n] for n in trail.log_names(1)}
    assert period == {("not covered", f"its digest could not be fetched ({code})")}
    assert result.counts() == {"validated": 4, "not covered": 2}
    assert not result.tampering


@pytest.mark.parametrize("code", ["AccessDenied", "KMS.DisabledException"])
def test_a_digest_refused_while_its_chain_reads_is_a_failure(code: str) -> None:
    """Denied, or re-encrypted under a KMS key the responder cannot use: how an attacker
    hides the digest listing the log file they deleted."""
    trail = digestkit.build(hours=3)
    result = check(
        trail.log_files(), unfetched(trail, 1, code), trail.public_keys(), days=trail.days()
    )
    assert status(result, trail.digest_name(1))[0] == "unreadable"
    assert {verdicts(result)[n][0] for n in trail.log_names(1)} == {"digest missing"}
    assert result.tampering


def past_retention(hours: int = 6) -> digestkit.Trail:
    """A trail whose first two hours' digests and log files, and the third hour's first log
    file, were expired by the bucket's lifecycle (a window reaching past retention)."""
    trail = digestkit.build(hours=hours)
    for hour in (0, 1):
        trail.delete_digest(trail.digest_name(hour))
        for name in trail.log_names(hour):
            trail.delete_log(name)
    trail.delete_log(trail.log_names(2)[0])
    return trail


def test_a_window_reaching_past_retention_is_no_tampering() -> None:
    trail = past_retention()
    result = trail.check()
    expired = (
        "older than anything left of this trail: expired by the bucket's lifecycle, or deleted"
    )
    assert status(result, trail.digest_name(1)) == ("expired or absent", expired)
    assert result.digest_counts() == {"valid": 4, "expired or absent": 1}
    gone = trail.log_names(2)[0]
    assert verdicts(result)[gone] == (
        "not covered",
        f"listed in {trail.digest_name(2)}, absent; {expired}",
    )
    assert result.counts() == {"validated": 7, "not covered": 1}
    assert not result.tampering
    assert "no tampering found" in result.summary()


def test_a_deletion_in_the_middle_of_what_is_left_is_still_a_failure() -> None:
    trail = past_retention()
    trail.delete_digest(trail.digest_name(4))
    trail.delete_log(trail.log_names(3)[0])
    result = trail.check()
    assert status(result, trail.digest_name(4))[0] == "missing"
    assert status(result, trail.digest_name(1))[0] == "expired or absent"
    assert verdicts(result)[trail.log_names(3)[0]][0] == "deleted"
    assert {verdicts(result)[n][0] for n in trail.log_names(4)} == {"digest missing"}
    assert result.tampering


def test_the_oldest_digest_deleted_while_older_files_remain_is_missing() -> None:
    """Its log files are still there: lifecycle would have expired them first."""
    trail = digestkit.build(hours=3)
    trail.delete_digest(trail.digest_name(0))
    result = trail.check()
    assert status(result, trail.digest_name(0))[0] == "missing"
    assert {verdicts(result)[n][0] for n in trail.log_names(0)} == {"digest missing"}
    assert result.tampering
    # an older digest of the chain left (it lists no log file): lifecycle would have expired
    # it first
    trail = digestkit.build(hours=3, empty=(0,))
    trail.delete_digest(trail.digest_name(1))
    for name in trail.log_names(1):
        trail.delete_log(name)
    result = trail.check()
    assert status(result, trail.digest_name(1))[0] == "missing"
    assert result.tampering
    # and the very oldest log file deleted from an unexpired chain is deleted
    trail = digestkit.build(hours=3)
    trail.delete_log(trail.log_names(0)[0])
    assert verdicts(trail.check())[trail.log_names(0)[0]][0] == "deleted"
    # a log file read older than the digest named: lifecycle would have expired it first
    trail = past_retention()
    early = (digestkit.START + timedelta(minutes=1)).strftime("%Y%m%dT%H%MZ")
    name = f"{digestkit.ACCOUNT}_CloudTrail_{digestkit.REGION}_{early}_left.json.gz"
    logs = [*trail.log_files(), LogFile(f"s3://{digestkit.BUCKET}/{name}", "ab" * 32)]
    result = check(logs, trail.digest_files(), trail.public_keys(), days=trail.days())
    assert status(result, trail.digest_name(1))[0] == "missing"
    assert verdicts(result)[trail.log_names(2)[0]][0] == "deleted"
    assert result.tampering

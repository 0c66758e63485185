"""CloudTrail log file integrity on hostile digests: whatever a digest file holds (deep
nesting, huge numbers, wrong types, gzip bombs, random damage), ``integrity.check`` calls it
``unreadable`` (or ignores what it cannot use) and never raises, and memory stays bounded."""

from __future__ import annotations

import contextlib
import copy
import gzip
import json
import os
import random
from typing import Any

import pytest

from kmsir.trail import digest_format as fmt
from kmsir.trail.integrity import Result
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

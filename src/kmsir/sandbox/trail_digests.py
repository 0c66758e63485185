"""The sandbox trail's digest files: log file integrity validation as CloudTrail does it.

A trail with ``LogFileValidationEnabled`` writes, every hour, a digest file listing the log
files it delivered in that hour with the SHA-256 of each one's uncompressed content, chained
to its previous digest and signed (SHA256withRSA) with its Region's key, whose public half
``cloudtrail:ListPublicKeys`` returns (``kmsir.trail.digest_format`` holds the format;
https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-log-file-validation-digest-file-structure.html).

The sandbox keeps a ledger of the log files delivered into each bucket (``delivered``: name,
hash of the uncompressed content, oldest and newest event time; delivered at its newest event
time), on moto's own bucket object, so a moto reset or a deleted bucket forgets it. What a
log file held when it was delivered is what its digest lists: deleting or editing the file
afterwards (``delete_log_files``), before or after the digest was written, is what digest
validation finds.

Digests are written lazily (``flush``): before any S3 request naming the bucket is answered
(``install`` wraps moto's ``S3Response.setup_class``) and before ``ListPublicKeys`` answers,
for every hour that has closed by the world's clock (``attach``), per trail with validation
on that delivers to the bucket and per Region of its log files; each covers from its chain's
previous digest's end (its first, from the start of its hour), only hours with deliveries are
written, and a digest once written is never written again: a delivery late for a sealed
hour goes into the next digest. The same deliveries and clock give byte-identical digests
in every process: the signing key is one fixed, simulated key (``trail_key``), not one made
per process.
"""

from __future__ import annotations

import functools
import gzip
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from kmsir.sandbox.trail_key import signing_key as signing_key
from kmsir.trail import digest_format

_LEDGER = "kmsir_trail_ledger"
_INSTALLED = "_kmsir_digests"
_HOUR = timedelta(hours=1)
_lock = threading.RLock()


@dataclass(frozen=True)
class Delivery:
    """One log file as it was delivered."""

    key: str
    sha256: str
    oldest: datetime
    newest: datetime  # when it was delivered, too


@dataclass
class _Chain:
    """One trail's digests of one Region: what the next one links to."""

    done: set[int] = field(default_factory=set)
    last_key: str | None = None
    last_end: datetime | None = None
    last_signature: str | None = None
    last_hash: str | None = None


@dataclass
class Ledger:
    """The log files delivered into one bucket, and its trails' digest chains."""

    deliveries: list[Delivery] = field(default_factory=list)
    chains: dict[tuple[str, str], _Chain] = field(default_factory=dict)
    #: Digest keys written, in order (a test or a facilitator may list them).
    written: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _World:
    now: datetime
    clock: Callable[[], datetime]


_world: _World | None = None


def attach(now: datetime, clock: Callable[[], datetime]) -> None:
    """Write digests by ``clock`` (the world's); keys are valid around ``now`` (its start)."""
    global _world
    _world = _World(now, clock)


def detach() -> None:
    """Write no more digests (the world is gone)."""
    global _world
    _world = None


def _now() -> datetime | None:
    world = _world
    if world is None:
        return None
    moment = world.clock()
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def public_key() -> digest_format.PublicKey:
    """The public half of ``signing_key``, valid a year either side of the world's time."""
    der = digest_format.public_der(signing_key())
    world = _world
    around = world.now if world is not None else datetime.now(timezone.utc)
    later = max(around, _now() or around)
    start = (around - timedelta(days=366)).replace(hour=0, minute=0, second=0, microsecond=0)
    end = (later + timedelta(days=366)).replace(hour=0, minute=0, second=0, microsecond=0)
    return digest_format.PublicKey(
        fingerprint=digest_format.fingerprint(der),
        der=der,
        valid_from=digest_format.iso(start),
        valid_until=digest_format.iso(end),
    )


# -- the ledger ---------------------------------------------------------------------------


def _bucket(account: str, region: str, name: str) -> tuple[Any, Any] | None:
    """moto's S3 backend of ``account`` and its bucket ``name`` (``None``: no such bucket)."""
    from moto.s3.models import s3_backends
    from moto.utilities.utils import get_partition

    backend = s3_backends[account][get_partition(region)]
    bucket = backend.buckets.get(name)
    return None if bucket is None else (backend, bucket)


def delivered(
    account: str,
    region: str,
    bucket: str,
    key: str,
    uncompressed: bytes,
    records: Iterable[Mapping[str, Any]],
) -> None:
    """Note a log file delivered into ``bucket`` (of ``account``, in ``region``'s partition):
    its key, the hash of its ``uncompressed`` content and its ``records``' times."""
    found = _bucket(account, region, bucket)
    if found is None:
        return
    times = sorted(str(r["eventTime"]) for r in records)
    if not times:
        return
    oldest, newest = (digest_format.parse_iso(t) for t in (times[0], times[-1]))
    if oldest is None or newest is None:
        return
    with _lock:
        ledger: Ledger | None = getattr(found[1], _LEDGER, None)
        if ledger is None:
            ledger = Ledger()
            setattr(found[1], _LEDGER, ledger)
        ledger.deliveries.append(
            Delivery(key, digest_format.log_hash(uncompressed), oldest, newest)
        )


def ledger(account: str, region: str, bucket: str) -> Ledger | None:
    """The ledger of ``bucket`` (``None``: nothing was delivered into it)."""
    found = _bucket(account, region, bucket)
    return None if found is None else getattr(found[1], _LEDGER, None)


# -- writing the digests ------------------------------------------------------------------


@dataclass(frozen=True)
class _Trail:
    arn: str
    name: str
    home: str
    prefix: str
    multi_region: bool


def _trails(account: str, bucket: str) -> list[_Trail]:
    """The trails of ``account`` with validation on that deliver to ``bucket``."""
    from moto.cloudtrail.models import cloudtrail_backends

    found = []
    for backend in list(cloudtrail_backends[account].values()):
        for trail in list(backend.trails.values()):
            if trail.bucket_name == bucket and trail.log_validation:
                found.append(
                    _Trail(
                        arn=trail.arn,
                        name=trail.trail_name,
                        home=trail.region_name,
                        prefix=str(trail.s3_key_prefix or "").strip("/"),
                        multi_region=bool(trail.is_multi_region),
                    )
                )
    return sorted(found, key=lambda t: t.arn)


def flush_bucket(account: str, region: str, bucket: str) -> list[str]:
    """Write the digests due in ``bucket`` by the world's clock; the keys written."""
    found = _bucket(account, region, bucket)
    if found is None:
        return []
    return _flush(account, *found)


def flush_account(account: str, region: str) -> None:
    """Write the digests due in every bucket of ``account`` with deliveries."""
    from moto.s3.models import s3_backends
    from moto.utilities.utils import get_partition

    backend = s3_backends[account][get_partition(region)]
    for bucket in list(backend.buckets.values()):
        if getattr(bucket, _LEDGER, None) is not None:
            _flush(account, backend, bucket)


def _flush(account: str, backend: Any, bucket: Any) -> list[str]:
    now = _now()
    ledger: Ledger | None = getattr(bucket, _LEDGER, None)
    if now is None or ledger is None:
        return []
    written: list[str] = []
    with _lock:
        for trail in _trails(account, bucket.name):
            logs = (
                f"{trail.prefix}/AWSLogs/{account}/CloudTrail/"
                if trail.prefix
                else (f"AWSLogs/{account}/CloudTrail/")
            )
            by_region: dict[str, list[int]] = {}
            for n, delivery in enumerate(ledger.deliveries):
                if delivery.key.startswith(logs):
                    region = delivery.key[len(logs) :].split("/", 1)[0]
                    if trail.multi_region or region == trail.home:
                        by_region.setdefault(region, []).append(n)
            for region, indices in sorted(by_region.items()):
                chain = ledger.chains.setdefault((trail.arn, region), _Chain())
                pending = [n for n in indices if n not in chain.done]
                written += _seal(
                    account, backend, bucket.name, trail, region, chain, ledger, pending, now
                )
        ledger.written += written
    return written


def _seal(
    account: str,
    backend: Any,
    bucket: str,
    trail: _Trail,
    region: str,
    chain: _Chain,
    ledger: Ledger,
    pending: list[int],
    now: datetime,
) -> list[str]:
    """Digest each closed hour of ``pending`` deliveries, oldest first."""
    written = []
    while pending:

        def due(n: int) -> datetime:
            moment = ledger.deliveries[n].newest
            return max(moment, chain.last_end) if chain.last_end is not None else moment

        first = min(due(n) for n in pending)
        hour = first.replace(minute=0, second=0, microsecond=0)
        end = hour + _HOUR
        if end > now:
            break
        batch = sorted((n for n in pending if due(n) < end), key=lambda n: (due(n), n))
        start = chain.last_end or hour
        written.append(
            _write(account, backend, bucket, trail, region, chain, ledger, batch, start, end)
        )
        chain.done.update(batch)
        pending = [n for n in pending if n not in chain.done]
    return written


def _write(
    account: str,
    backend: Any,
    bucket: str,
    trail: _Trail,
    region: str,
    chain: _Chain,
    ledger: Ledger,
    batch: list[int],
    start: datetime,
    end: datetime,
) -> str:
    from kmsir.sandbox import trail_delivery

    key = digest_format.digest_key(
        account, region, trail.name, trail.home, end, prefix=trail.prefix
    )
    deliveries = [ledger.deliveries[n] for n in batch]
    der = digest_format.public_der(signing_key())
    digest: dict[str, Any] = {
        "awsAccountId": account,
        "digestStartTime": digest_format.iso(start),
        "digestEndTime": digest_format.iso(end),
        "digestS3Bucket": bucket,
        "digestS3Object": key,
        "digestPublicKeyFingerprint": digest_format.fingerprint(der),
        "digestSignatureAlgorithm": digest_format.SIGNATURE_ALGORITHM,
        "newestEventTime": digest_format.iso(max(d.newest for d in deliveries)),
        "oldestEventTime": digest_format.iso(min(d.oldest for d in deliveries)),
        "previousDigestS3Bucket": bucket if chain.last_key else None,
        "previousDigestS3Object": chain.last_key,
        "previousDigestHashValue": chain.last_hash,
        "previousDigestHashAlgorithm": "SHA-256" if chain.last_key else None,
        "previousDigestSignature": chain.last_signature,
        "logFiles": [
            {
                "s3Bucket": bucket,
                "s3Object": d.key,
                "hashValue": d.sha256,
                "hashAlgorithm": "SHA-256",
                "newestEventTime": digest_format.iso(d.newest),
                "oldestEventTime": digest_format.iso(d.oldest),
            }
            for d in deliveries
        ],
    }
    uncompressed, gz = digest_format.encode(digest)
    signature = digest_format.sign(signing_key(), digest, uncompressed)
    stored = trail_delivery.put_quietly(backend, bucket, key, gz, seed=f"digest:{key}")
    stored.set_metadata(
        {
            "x-amz-meta-signature": signature,
            "x-amz-meta-signature-algorithm": digest_format.SIGNATURE_ALGORITHM,
        }
    )
    chain.last_key, chain.last_end = key, end
    chain.last_signature = signature
    chain.last_hash = digest_format.log_hash(uncompressed)
    return key


# -- what an attacker does to the bucket --------------------------------------------------


def delete_log_files(account: str, region: str, bucket: str, event_ids: set[str]) -> list[str]:
    """Delete from ``bucket`` every log file holding one of the events ``event_ids`` (moto's
    backend directly: nothing is recorded, as a management-event trail logs no S3 object
    call); the keys deleted. The ledger keeps them: their digests list them all the same."""
    found = _bucket(account, region, bucket)
    if found is None or not event_ids:
        return []
    backend, moto_bucket = found
    ledger_now: Ledger | None = getattr(moto_bucket, _LEDGER, None)
    keys = sorted({d.key for d in ledger_now.deliveries}) if ledger_now else []
    deleted = []
    for key in keys:
        stored = moto_bucket.keys.get(key)
        if stored is None:
            continue
        try:
            records = json.loads(gzip.decompress(stored.value)).get("Records") or []
        except (OSError, ValueError, AttributeError):
            continue
        if any(str(r.get("eventID")) in event_ids for r in records):
            backend.delete_object(bucket, key)
            deleted.append(key)
    return deleted


# -- the hook -----------------------------------------------------------------------------


def install() -> None:
    """Flush a bucket's digests before moto's S3 answers any request naming it (moto's
    ``S3Response.setup_class``: bucket and object requests both read it), idempotently;
    fail loudly if moto moved it."""
    from moto.s3.responses import S3Response

    if getattr(S3Response, _INSTALLED, False):
        return
    original = vars(S3Response).get("setup_class")
    if not callable(original):
        raise RuntimeError(
            "moto's S3Response no longer defines setup_class: the sandbox's CloudTrail digests "
            "(kmsir.sandbox.trail_digests) must be reviewed for this moto version"
        )

    @functools.wraps(original)
    def setup_class(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        answer = original(self, request, *args, **kwargs)
        name = getattr(self, "bucket_name", None)
        if name and _world is not None:
            backend = self.backend
            bucket = backend.buckets.get(name)
            if bucket is not None and getattr(bucket, _LEDGER, None) is not None:
                _flush(str(self.current_account), backend, bucket)
        return answer

    setattr(S3Response, "setup_class", setup_class)  # noqa: B010
    setattr(S3Response, _INSTALLED, True)

"""Which of an account's trails deliver a record, and the trail log file each gets.

A record reaches a trail's S3 bucket (under its key prefix, ``AWSLogs/ACCOUNT/CloudTrail/
REGION/YYYY/MM/DD/``) only while that trail logs, when its Region scope covers the event
(multi-Region, or the event's Region; a global service's events only with
``IncludeGlobalServiceEvents``) and its selectors log it: classic selectors
(``IncludeManagementEvents``, ``ReadWriteType``, ``ExcludeManagementEventSources``) or advanced
ones (evaluated by ``kmsir.trail.event_rules``, as the scanner judges a trail's selectors). A
trail without selectors logs every management event. The event history (LookupEvents) does
not depend on trails: ``recorder`` keeps every record there.

CloudTrail's own event about a trail is delivered by that trail: a call is judged against
the trails as they were before it (StopLogging, DeleteTrail, a selector that leaves
CloudTrail out: their records are delivered) and, for a trail that did not deliver it then,
as they are after it (StartLogging's record is in the trail it starts). Calls after a trail
stopped are not in its bucket.

The file is written into moto's S3 backend directly (no client: nothing recorded), and noted
in the bucket's ledger (``trail_digests``: a trail with validation on lists it in a digest). A
versioned bucket gives each object a version id from moto's seeded random generator; the
recorder's puts draw theirs from a generator of their own, seeded by the record
(``install``), so recording never shifts the ids moto gives the world's keys, grants and
versions afterwards. (Saving and restoring the shared generator's state around the put would
also undo the draws another thread's call made meanwhile, and give two resources one id.)
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kmsir.sandbox import trail_digests
from kmsir.trail import event_rules

#: Services whose events CloudTrail logs as global (in us-east-1; STS's regional endpoints
#: are logged in their Region, as the sandbox's are).
_GLOBAL_SOURCES = frozenset(
    {"iam.amazonaws.com", "cloudfront.amazonaws.com", "route53.amazonaws.com"}
)
_local = threading.local()


@dataclass(frozen=True)
class TrailState:
    """What decides a trail's delivery, as moto holds it at one moment."""

    arn: str
    account: str
    home_region: str
    bucket: str
    prefix: str
    logging: bool
    multi_region: bool
    include_global: bool
    basic: tuple[dict[str, Any], ...]
    #: Advanced selectors, camelCase as a PutEventSelectors record gives them.
    advanced: tuple[dict[str, Any], ...]

    def delivers(self, record: dict[str, Any]) -> bool:
        """Whether this trail delivers ``record`` (a management event)."""
        if not self.logging:
            return False
        region, source = str(record.get("awsRegion")), str(record.get("eventSource"))
        if not self.multi_region and region != self.home_region:
            return False
        if source in _GLOBAL_SOURCES and not self.include_global:
            return False
        read = bool(record.get("readOnly"))
        if self.basic:  # moto keeps older advanced selectors when classic ones are put
            return any(_basic_logs(selector, source, read) for selector in self.basic)
        if self.advanced:
            probe = {
                "eventCategory": str(record.get("eventCategory") or "Management"),
                "eventSource": source,
                "eventName": str(record.get("eventName")),
                "eventType": str(record.get("eventType") or "AwsApiCall"),
                "readOnly": "true" if read else "false",
                "userIdentity.arn": str((record.get("userIdentity") or {}).get("arn") or ""),
            }
            return any(event_rules.selector_matches(selector, probe) for selector in self.advanced)
        return True  # no selectors: every management event


def _basic_logs(selector: dict[str, Any], source: str, read: bool) -> bool:
    if selector.get("IncludeManagementEvents") is False:
        return False
    if source in (selector.get("ExcludeManagementEventSources") or []):
        return False
    scope = selector.get("ReadWriteType") or "All"
    return scope == "All" or (scope == "ReadOnly") == read


def states(account: str) -> dict[str, TrailState]:
    """The trails of ``account`` (every Region's), by ARN."""
    from moto.cloudtrail.models import cloudtrail_backends

    from kmsir.sandbox.trail_record import camel

    found: dict[str, TrailState] = {}
    for backend in list(cloudtrail_backends[account].values()):
        for trail in list(backend.trails.values()):
            basic, advanced = trail.get_event_selectors()
            found[trail.arn] = TrailState(
                arn=trail.arn,
                account=trail.account_id,
                home_region=trail.region_name,
                bucket=trail.bucket_name,
                prefix=str(trail.s3_key_prefix or "").strip("/"),
                logging=bool(trail.status.is_logging),
                multi_region=bool(trail.is_multi_region),
                include_global=trail.include_global_service_events is not False,
                basic=tuple(dict(s) for s in basic or []),
                advanced=tuple(
                    camel("cloudtrail", "AdvancedEventSelector", s) for s in advanced or []
                ),
            )
    return found


def destinations(
    record: dict[str, Any],
    before: dict[str, TrailState] | None,
    after: dict[str, TrailState],
) -> list[TrailState]:
    """The trails that deliver ``record``: as they were before the call (``None``: not known,
    as they are now), else as they are after it."""
    chosen: list[TrailState] = []
    for arn in dict.fromkeys([*(before or {}), *after]):
        earlier = (before or {}).get(arn)
        if earlier is not None and earlier.delivers(record):
            chosen.append(earlier)
        elif arn in after and after[arn].delivers(record):
            chosen.append(after[arn])
    return chosen


def deliver(record: dict[str, Any], trails: list[TrailState], moment: datetime) -> None:
    """``record`` as a trail log file of its own in each trail's bucket (a bucket that is gone
    gets nothing: CloudTrail's delivery fails)."""
    from moto.s3.models import s3_backends
    from moto.utilities.utils import get_partition

    account, region = str(record["recipientAccountId"]), str(record["awsRegion"])
    unique = str(record["eventID"]).replace("-", "")[:16]
    name = (
        f"AWSLogs/{account}/CloudTrail/{region}/{moment:%Y/%m/%d}/"
        f"{account}_CloudTrail_{region}_{moment:%Y%m%dT%H%MZ}_{unique}.json.gz"
    )
    uncompressed = json.dumps({"Records": [record]}, separators=(",", ":")).encode()
    body = gzip.compress(uncompressed, mtime=0)
    for trail in trails:
        backend = s3_backends[trail.account][get_partition(trail.home_region)]
        if trail.bucket not in backend.buckets:
            continue
        key = f"{trail.prefix}/{name}" if trail.prefix else name
        put_quietly(backend, trail.bucket, key, body, seed=f"{record['eventID']}:{trail.arn}")
        trail_digests.delivered(
            trail.account, trail.home_region, trail.bucket, key, uncompressed, [record]
        )


def put_quietly(backend: Any, bucket: str, key: str, body: bytes, *, seed: str) -> Any:
    """Put an object into moto's S3 ``backend`` directly (no request: nothing recorded, no
    notification), its version id drawn from a generator seeded by ``seed``; moto's key."""
    _local.seed = seed
    try:
        return backend.put_object(bucket, key, body, disable_notification=True)
    finally:
        _local.seed = None


class _OwnRandom:
    """moto's S3 random generator, except in the recorder's puts: there, one seeded by the
    record (the same run, the same version ids) that leaves moto's sequence untouched."""

    def __init__(self, shared: Any) -> None:
        self._shared = shared

    def __getattr__(self, name: str) -> Any:
        seed = getattr(_local, "seed", None)
        if seed is None:
            return getattr(self._shared, name)
        from moto.moto_api._internal.moto_random import MotoRandom

        own = MotoRandom(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big"))
        return getattr(own, name)


def install() -> None:
    """Give moto's S3 models the generator that keeps the recorder's draws apart
    (idempotent); fail loudly if moto moved it."""
    from moto.s3 import models

    shared = getattr(models, "random", None)
    if isinstance(shared, _OwnRandom):
        return
    if shared is None or not callable(getattr(shared, "uuid4", None)):
        raise RuntimeError(
            "moto.s3.models no longer has its random generator: the sandbox's CloudTrail "
            "delivery (kmsir.sandbox.trail_delivery) must be reviewed for this moto version"
        )
    setattr(models, "random", _OwnRandom(shared))  # noqa: B010 (moto does not export it)

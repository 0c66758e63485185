"""Log file integrity, gathered: the digest files and public keys a check needs, from a trail
bucket or local folders, and the check's artifacts written into the bundle.

- ``bucket_digests``: the ``CloudTrail-Digest/REGION/YYYY/MM/DD/`` prefixes of the days the log
  scan lists (``trail_s3.trail_prefixes``), each digest fetched with its ``signature`` S3
  metadata (``x-amz-meta-signature``); ``bucket_reading`` fetches them BEFORE the log files
  are listed (a digest written while the logs are read names files delivered after their
  listing: read first, every file it names was there when the logs were listed) and gives
  the log prefixes to list (``days_listed``: exactly those days are read);
- ``local_digests``: digest files under local paths (an ``aws s3 sync`` copy, which keeps no
  metadata: a ``signatures.json`` sidecar, name -> signature, may give them back);
- ``public_keys``: ``cloudtrail:ListPublicKeys`` in each Region of the digests (each Region
  signs with its own key: https://docs.aws.amazon.com/awscloudtrail/latest/APIReference/API_ListPublicKeys.html);
- ``days_read`` (a local copy: the days holding a log file read and, with a window, a
  digest) and ``days_listed`` (a bucket: the day prefixes listed; listed whole, the days its
  files name): the (account, Region, day) folders a reading covered,
  whose digest-listed log files must then be there;
The check itself is ``kmsir.trail.integrity.check`` (pure).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from kmsir.actions.trail_s3 import LISTINGS, objects, trail_prefixes
from kmsir.aws import ClientFactory, aws_errors
from kmsir.errors import AwsError
from kmsir.trail.digest_format import DIGEST_NAME, PublicKey, der_key
from kmsir.trail.integrity import (
    DigestFile,
    log_day,
)
from kmsir.trail.integrity_local import DIGEST_BYTES, basename
from kmsir.trail.integrity_read import read_digest

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: GETs of digest files in flight at once.
WORKERS = 16
#: How far around the digests' times public keys are asked for: a key valid then signed them.
KEY_MARGIN = timedelta(hours=2)
_DIGEST_FOLDER = "CloudTrail-Digest"


def bucket_digests(
    client: S3Client,
    bucket: str,
    prefix: str,
    regions: list[str] | None,
    start: datetime | None,
    end: datetime | None,
    *,
    backfills: dict[str, datetime] | None = None,
    prefixes: list[str] | None = None,
) -> tuple[list[DigestFile], list[str]]:
    """The digest files of the window's days in a trail bucket, each with its signature (S3
    metadata), and the problems met (one line each: a digest that could not be fetched is
    still returned, with no bytes, so that the check names it rather than misses it).
    ``backfills``: filled with each backfill digest's ``backfill-generation-timestamp`` (S3
    metadata; location -> time): it was signed then, with the key of that time.
    ``prefixes``: the digest day prefixes, when listed already."""
    if prefixes is None:
        prefixes = trail_prefixes(
            client, bucket, prefix, regions, start, end, folder=_DIGEST_FOLDER
        )
    with ThreadPoolExecutor(max_workers=LISTINGS) as pool:
        keys = [
            o.key
            for found in pool.map(lambda p: objects(client, bucket, p), prefixes)
            for o in found
            if o.key.endswith(".json.gz")
        ]
    problems: list[str] = []

    def get(key: str) -> DigestFile | None:
        where = f"s3://{bucket}/{key}"
        try:
            with aws_errors(f"GetObject {where}", service="s3"):
                got = client.get_object(Bucket=bucket, Key=key)
                with closing(got["Body"]) as stream:
                    body = stream.read(DIGEST_BYTES + 1)  # a digest is kilobytes
        except AwsError as exc:
            problems.append(f"{where}: cannot fetch ({exc.code})")
            if exc.code == "NoSuchKey":  # gone since listed: as if never there (the chain
                return None  # says "missing" if a later digest names it)
            return DigestFile(where, b"", None, problem=f"cannot fetch ({exc.code})")
        if len(body) > DIGEST_BYTES:
            body = b""  # no digest is this large: read as unreadable, never held whole
        metadata = {k.lower(): v for k, v in got.get("Metadata", {}).items()}
        generated = _moment(metadata.get("backfill-generation-timestamp"))
        if generated is not None and backfills is not None:
            backfills[where] = generated
        return DigestFile(
            where, body, metadata.get("signature"), metadata.get("signature-algorithm")
        )

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        found = [d for d in pool.map(get, keys) if d is not None]
    return found, problems


def bucket_reading(
    client: S3Client,
    bucket: str,
    prefix: str,
    regions: list[str] | None,
    start: datetime | None,
    end: datetime | None,
    *,
    backfills: dict[str, datetime] | None = None,
) -> tuple[list[DigestFile], list[str], list[str]]:
    """A bucket's digests of the window, listed and fetched FIRST (``bucket_digests``), and
    then the log day prefixes to list (``trail_s3.scan_bucket(prefixes=...)``): those of
    the window, and those of every Region and day where digests are (all the log files of a
    Region deleted leave no folder to list, its digests still name them). Listed in that
    order, a digest names only log files delivered before the logs were listed: one absent
    from their listing was deleted, not delivered since."""
    digest_prefixes = trail_prefixes(
        client, bucket, prefix, regions, start, end, folder=_DIGEST_FOLDER
    )
    digests, problems = bucket_digests(
        client, bucket, prefix, regions, start, end, backfills=backfills, prefixes=digest_prefixes
    )
    logs = set(trail_prefixes(client, bucket, prefix, regions, start, end))
    for listed in digest_prefixes:
        above, _, below = listed.rpartition(f"/{_DIGEST_FOLDER}/")
        logs.add(f"{above}/CloudTrail/{below}")
    return digests, problems, sorted(logs)


def _moment(value: str | None) -> datetime | None:
    """A time as S3 metadata may carry it (ISO 8601, or epoch seconds); ``None`` if none."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        try:
            return datetime.fromtimestamp(float(value), timezone.utc)
        except (ValueError, OverflowError, OSError):
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def key_range(
    digests: Sequence[DigestFile],
    now: datetime | None = None,
    backfills: Mapping[str, datetime] | None = None,
) -> dict[str, tuple[datetime, datetime]]:
    """Per Region of ``digests``, the time range to ask its public keys for: the digests'
    end times and, for backfill digests, the time they were generated (``backfills``,
    location -> time: signed then, as the AWS CLI asks for them), ``KEY_MARGIN`` around,
    never past ``now``. Empty without a digest named as CloudTrail names them."""
    times: dict[str, list[datetime]] = {}
    for digest in digests:
        named = DIGEST_NAME.match(digest.name)
        if named is None:
            continue
        moments = times.setdefault(named["region"], [])
        moments.append(
            datetime.strptime(named["end"], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        )
        if backfills and digest.location in backfills:
            moments.append(backfills[digest.location])
    ranges: dict[str, tuple[datetime, datetime]] = {}
    for region, moments in sorted(times.items()):
        first, last = min(moments) - KEY_MARGIN, max(moments) + KEY_MARGIN
        if now is not None:
            last = max(min(last, now), first)
        ranges[region] = (first, last)
    return ranges


def public_keys(
    clients: ClientFactory,
    ranges: Mapping[str, tuple[datetime, datetime]],
    *,
    failed: dict[str, str] | None = None,
) -> list[PublicKey]:
    """The CloudTrail public keys of each Region of ``ranges`` valid in its time range
    (``ListPublicKeys`` in each). A Region whose call fails (denied, not answered) gives no
    key: its AWS error code goes into ``failed`` (Region -> code) when given, and the
    digests it signed are then reported unchecked, never a crash."""
    keys: list[PublicKey] = []
    for region, (start, end) in ranges.items():
        client = clients.client("cloudtrail", region)
        try:
            with aws_errors(f"ListPublicKeys in {region}", service="cloudtrail"):
                pages = client.get_paginator("list_public_keys").paginate(
                    StartTime=start, EndTime=end
                )
                listed = [k for page in pages for k in page.get("PublicKeyList", [])]
        except AwsError as exc:
            if failed is not None:
                failed[region] = exc.code
            continue
        except NotImplementedError:  # an emulator without the call (moto without the shim)
            if failed is not None:
                failed[region] = "not implemented here"
            continue
        for key in listed:
            try:
                der = der_key(key["Value"])
            except (KeyError, ValueError):
                if failed is not None:
                    failed[region] = "a key that is not DER"
                continue
            keys.append(
                PublicKey(
                    fingerprint=str(key.get("Fingerprint", "")),
                    der=der,
                    region=region,
                    valid_from=_iso(key.get("ValidityStartTime")),
                    valid_until=_iso(key.get("ValidityEndTime")),
                )
            )
    return keys


def _iso(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return None if value is None else str(value)


_LISTED = re.compile(r"(?:^|/)([^/]+)/CloudTrail/([^/]+)/(?:(\d{4}/\d{2}/\d{2})/)?$")


def days_listed(
    prefixes: Iterable[str], logs: Iterable[str], digests: Sequence[DigestFile]
) -> set[tuple[str, str, str]]:
    """A bucket's (account, Region, ``YYYY/MM/DD``) read: exactly the log day prefixes
    listed (``.../ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/``). A Region's whole prefix (no
    window: ``.../CloudTrail/REGION/``, its digests' too) is every day of it: those of the
    log files read (``logs``), of the log files its ``digests`` list, of the digests read
    (by name) and of the digest each one names as its previous one (a day whose log files
    and digests were all deleted is still named by the next digest's link)."""
    days: set[tuple[str, str, str]] = set()
    whole: set[tuple[str, str]] = set()
    for listed in prefixes:
        found = _LISTED.search(listed)
        if found is None:
            continue
        account, region, day = found.groups()
        if day:
            days.add((account, region, day))
        else:
            whole.add((account, region))
    if whole:
        listed_names, previous = _named(digests)
        named = [log_day(basename(where)) for where in logs]
        named += [log_day(name) for name in listed_names]
        named += [log_day(digest.name) for digest in digests]
        named += [log_day(name) for name in previous]
        days.update(d for d in named if d is not None and d[:2] in whole)
    return days


def _named(digests: Sequence[DigestFile]) -> tuple[list[str], list[str]]:
    """The log file names the readable ``digests`` list, and the names of the digests they
    link to as previous (an unreadable one names none; the check says what it is)."""
    names: list[str] = []
    previous: list[str] = []
    for digest in map(read_digest, digests):  # as the check reads them: caps, bombs, names
        entries = digest.get("logFiles")
        for entry in entries if isinstance(entries, list) else ():
            if isinstance(entry, dict) and isinstance(entry.get("s3Object"), str):
                names.append(basename(entry["s3Object"]))
        if digest.link:
            previous.append(digest.link)
    return names, previous

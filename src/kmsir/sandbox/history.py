"""A scenario's CloudTrail history as AWS records it: identities, events and trail log files.

The same events are served by LookupEvents (``sandbox.lookup``) and written as trail log files
to a moto S3 bucket (AWSLogs layout, one gzipped ``{"Records": [...]}`` file a day), so every
``cloudtrail.collect`` source reads the same story.
"""

from __future__ import annotations

import gzip
import json
import random
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from kmsir.playbook.values import duration_seconds
from kmsir.sandbox import trail_digests
from kmsir.sandbox.scenario_model import EventSpec, IdentitySpec, Scenario


class World(Protocol):
    """What the history needs of a seeded sandbox."""

    scenario: Scenario
    account: str
    region: str
    keys: dict[str, dict[str, str]]
    users: dict[str, dict[str, Any]]

    def render(self, value: Any) -> Any:
        """A scenario value with its templates rendered over the seeded world."""
        ...


def events(
    world: World, specs: Iterable[EventSpec], anchor: datetime, rng: random.Random
) -> Iterator[dict[str, Any]]:
    """The CloudTrail records of ``specs``, each ``at`` a duration before ``anchor``."""
    for spec in specs:
        first = anchor - timedelta(seconds=duration_seconds(spec.at.removeprefix("-")))
        step = timedelta(seconds=duration_seconds(spec.every))
        for n in range(spec.count):
            yield _event(world, spec, first + n * step, rng)


def deleted_log_events(
    specs: Iterable[EventSpec], records: Iterable[Mapping[str, Any]]
) -> set[str]:
    """The ids of ``records`` (what ``events`` made of ``specs``, in its order) whose trail log
    file the scenario says was deleted (``log_file: deleted``)."""
    owners = [spec for spec in specs for _ in range(spec.count)]
    return {
        str(record["eventID"])
        for spec, record in zip(owners, records, strict=True)
        if spec.log_file == "deleted"
    }


def identity(world: World, spec: IdentitySpec) -> dict[str, Any]:
    """The ``userIdentity`` of an identity spec (a scenario user's name and access key)."""
    account = spec.account or world.account
    user = world.users.get(spec.user) if spec.user is not None else None
    name = str(user["name"]) if user is not None else str(spec.name)
    access_key = spec.access_key_id or "ASIA" + "".join(
        random.Random(name).choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", k=16)  # noqa: S311
    )
    principal = (
        "AROA" + uuid.UUID(int=random.Random(name).getrandbits(128)).hex[:17].upper()  # noqa: S311
    )
    if spec.type == "AssumedRole":
        session = spec.session or "session"
        return {
            "type": "AssumedRole",
            "principalId": f"{principal}:{session}",
            "arn": f"arn:aws:sts::{account}:assumed-role/{name}/{session}",
            "accountId": account,
            "accessKeyId": access_key,
            "sessionContext": {
                "sessionIssuer": {
                    "type": "Role",
                    "principalId": principal,
                    "arn": f"arn:aws:iam::{account}:role/{name}",
                    "accountId": account,
                    "userName": name,
                },
                "attributes": {"mfaAuthenticated": "false"},
            },
        }
    if spec.type == "IAMUser":
        if user is not None and user.get("access_key_id"):
            access_key = str(user["access_key_id"])
        return {
            "type": "IAMUser",
            "principalId": principal.replace("AROA", "AIDA"),
            "arn": str(user["arn"]) if user else f"arn:aws:iam::{account}:user/{name}",
            "accountId": account,
            "accessKeyId": spec.access_key_id or access_key.replace("ASIA", "AKIA"),
            "userName": name,
        }
    if spec.type == "Root":
        return {
            "type": "Root",
            "principalId": account,
            "arn": f"arn:aws:iam::{account}:root",
            "accountId": account,
        }
    return {"type": "AWSService", "invokedBy": name}


def _event(world: World, spec: EventSpec, moment: datetime, rng: random.Random) -> dict[str, Any]:
    who = identity(world, world.scenario.identities[spec.identity])
    read_only = spec.read_only
    if read_only is None:
        read_only = spec.event.startswith(("Describe", "Get", "List"))
    event: dict[str, Any] = {
        "eventVersion": "1.10",
        "userIdentity": who,
        "eventTime": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "kms.amazonaws.com",
        "eventName": spec.event,
        "awsRegion": world.region,
        "sourceIPAddress": world.render(spec.source_ip),
        "userAgent": world.render(spec.user_agent),
        "requestParameters": world.render(spec.request) or None,
        "responseElements": world.render(spec.response) if spec.response is not None else None,
        "requestID": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "eventID": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "readOnly": read_only,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": world.account,
        "eventCategory": "Management",
    }
    if spec.key is not None:
        key = world.keys[spec.key]
        event["resources"] = [
            {"accountId": world.account, "type": "AWS::KMS::Key", "ARN": key["arn"]}
        ]
    if who.get("accountId") not in (None, world.account):
        event["sharedEventID"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if spec.error_code:
        event["errorCode"] = spec.error_code
        event["errorMessage"] = world.render(spec.error_message or spec.error_code)
    return event


def create_trail_bucket(s3: Any, bucket: str, region: str) -> None:
    """The bucket the trail delivers to."""
    config = (
        {}
        if region == "us-east-1"
        else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    )
    s3.create_bucket(Bucket=bucket, **config)


def write_trail_files(
    s3: Any,
    bucket: str,
    account: str,
    region: str,
    records: Iterable[Mapping[str, Any]],
    *,
    name: str = "sim",
) -> None:
    """``records`` as CloudTrail writes them: one gzipped file a day, AWSLogs layout; ``name``
    ends each file's name (another batch of the same day gets its own file). Each file is
    noted as delivered (``trail_digests``: a trail with validation on lists it in a digest)
    at its newest event's time, and named with that time (``YYYYMMDDTHHMMZ``) as CloudTrail
    names a file with its delivery time: the name's time falls in the period of the digest
    that lists it, which is how a validator tells which missing digest a log file belonged to."""
    by_day: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for record in records:
        by_day[str(record["eventTime"])[:10]].append(record)
    for day, batch in sorted(by_day.items()):
        year, month, date = day.split("-")
        newest = max(str(record["eventTime"]) for record in batch)  # "YYYY-MM-DDTHH:MM:SSZ"
        delivered = f"{year}{month}{date}T{newest[11:13]}{newest[14:16]}Z"
        key = (
            f"AWSLogs/{account}/CloudTrail/{region}/{year}/{month}/{date}/"
            f"{account}_CloudTrail_{region}_{delivered}_{name}.json.gz"
        )
        body = json.dumps({"Records": batch}, separators=(",", ":")).encode()
        s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(body, mtime=0))
        trail_digests.delivered(account, region, bucket, key, body, batch)

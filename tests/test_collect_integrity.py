"""``cloudtrail.collect`` proves the trail logs it reads: the ``s3`` and ``files`` sources check
every log file against CloudTrail's signed digests and keep what repeats the check offline.

The trail is ``tests/digestkit.py``'s (hourly digests, chained, signed with a test RSA key), in
moto's S3 or on disk. moto does not implement ``cloudtrail:ListPublicKeys``: here a botocore
``before-call`` handler registered on the session answers it (``listing``), with the value the
SDK hands over for AWS's answer (base64 text of the key's DER, which the wire carries base64
encoded once more: https://docs.aws.amazon.com/awscloudtrail/latest/APIReference/API_PublicKey.html)
or an ``AccessDenied`` error.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest

from kmsir import actions
from kmsir.actions.cloudtrail import Collect, CollectParams
from kmsir.actions.trail_integrity import days_listed
from kmsir.aws import ClientFactory
from kmsir.evidence.calls import describe
from kmsir.run import plan
from kmsir.trail import digest_format as fmt
from kmsir.trail.integrity_local import days_read, local_digests

from . import digestkit
from .conftest import load_playbook
from .fakes import context

SINCE = "2026-11-20T08:00:00Z"
UNTIL = "2026-11-20T13:00:00Z"
NOW = datetime(2026, 11, 20, 14, tzinfo=timezone.utc)


class _Http:
    """What botocore reads of an HTTP response a ``before-call`` handler answers with."""

    def __init__(self, status: int) -> None:
        self.status_code = status
        self.headers: dict[str, str] = {}


def listing(
    keys: list[fmt.PublicKey] | None,
    *,
    denied: Collection[str] = (),
    valid: Mapping[str, tuple[datetime, datetime]] | None = None,
) -> Callable[..., Any]:
    """A ``before-call.cloudtrail.ListPublicKeys`` handler: ``keys`` (each whose validity,
    ``valid`` by fingerprint, else October to December 2026, overlaps the asked range), or
    AccessDenied when ``keys`` is None or the Region is in ``denied``. Every call is kept
    in ``handler.asked`` (Region, StartTime, EndTime)."""
    validity = dict(valid or {})
    default = (
        datetime(2026, 10, 1, tzinfo=timezone.utc),
        datetime(2026, 12, 31, tzinfo=timezone.utc),
    )
    asked: list[tuple[str, datetime, datetime]] = []

    def answer(params: dict[str, Any], context: dict[str, Any], **_: Any) -> Any:
        region = context["client_region"]
        sent = json.loads(params["body"])  # the request as serialized: times in epoch seconds
        start, end = (
            datetime.fromtimestamp(sent[n], timezone.utc) for n in ("StartTime", "EndTime")
        )
        asked.append((region, start, end))
        if keys is None or region in denied:
            error = {"Code": "AccessDeniedException", "Message": "not allowed"}
            return _Http(400), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}
        listed = [
            {
                "Fingerprint": k.fingerprint,
                "Value": base64.b64encode(k.der),  # as botocore decodes the blob
                "ValidityStartTime": validity.get(k.fingerprint, default)[0],
                "ValidityEndTime": validity.get(k.fingerprint, default)[1],
            }
            for k in keys
            if k.region == region
            and validity.get(k.fingerprint, default)[0] <= end
            and validity.get(k.fingerprint, default)[1] >= start
        ]
        return _Http(200), {"PublicKeyList": listed, "ResponseMetadata": {"HTTPStatusCode": 200}}

    answer.asked = asked  # type: ignore[attr-defined]
    return answer


def clients_with(handler: Callable[..., Any]) -> ClientFactory:
    """A client factory on moto (active) whose session answers ListPublicKeys by ``handler``."""

    def session() -> Any:
        made = boto3.Session(region_name="eu-west-1")
        made.events.register("before-call.cloudtrail.ListPublicKeys", handler)
        return made

    return ClientFactory(session_factory=session, region="eu-west-1", guard_send=True)


@pytest.fixture
def s3(moto_clients: ClientFactory) -> Any:
    return boto3.client("s3", region_name="eu-west-1")


def collect_s3(
    clients: ClientFactory, trail: digestkit.Trail, *, now: datetime = NOW, **extra: Any
) -> tuple[Any, dict[str, Any], list[Any]]:
    """The collect step over ``trail``'s bucket: its context, outputs and the calls made."""
    ctx, calls = context(clients)
    ctx.now = lambda: now
    params = CollectParams.model_validate(
        {
            "key": digestkit.KEY_ARN,
            "source": "s3",
            "bucket": trail.bucket,
            "since": SINCE,
            "until": UNTIL,
            **extra,
        }
    )
    outcome = Collect().run(ctx, params)
    return ctx, {**outcome.outputs, "summary": outcome.summary}, calls


def artifact(ctx: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(ctx.artifacts.files["trail-integrity.json"])
    return document


def by_name(document: dict[str, Any], part: str) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in document[part]}


def test_an_intact_trail_in_s3_is_validated_and_kept_for_an_offline_check(s3: Any) -> None:
    trail = digestkit.build(hours=3)
    trail.put(s3)
    handler = listing(trail.public_keys())
    ctx, outputs, _ = collect_s3(clients_with(handler), trail)

    assert outputs["count"] == 12  # 6 files of 2 events
    assert outputs["integrity"]["counts"] == {"validated": 6}
    assert outputs["integrity"]["tampering"] is False
    assert outputs["integrity"]["artifact"].endswith("/trail-integrity.json")
    assert "; trail integrity: 6 validated" in outputs["summary"]

    document = artifact(ctx)
    assert document["version"] == 1
    assert document["source"] == f"s3://{trail.bucket}"
    assert document["window"] == {"since": SINCE, "until": UNTIL}
    assert ["123456789012", "eu-west-1", "2026/11/20"] in document["days"]
    assert document["digest_counts"] == {"valid": 3}
    # each digest as read, with the signature its S3 metadata carried
    digests = by_name(document, "digests")
    assert set(digests) == set(trail.digests)
    for name, stored in trail.digests.items():
        assert digests[name]["saved"] == f"trail-digests/{name}"
        assert ctx.artifacts.files[f"trail-digests/{name}"] == stored.body
        assert digests[name]["signature"] == stored.signature
    # each log file holding one of the key's events, its exact bytes
    files = by_name(document, "files")
    assert set(files) == set(trail.logs)
    for name, stored in trail.logs.items():
        assert files[name]["kept"] == f"trail-logs/{name}"
        assert ctx.artifacts.files[f"trail-logs/{name}"] == stored.body
        assert files[name]["sha256"] == fmt.log_hash(gzip.decompress(stored.body))
    # the public keys used, enough to check the signatures again without AWS
    saved = fmt.load_public_keys(ctx.artifacts.files["trail-integrity.json"])
    assert [k.der for k in saved] == [trail.public_keys()[0].der]
    # asked once, in the digests' Region, around their times
    [(region, start, end)] = handler.asked  # type: ignore[attr-defined]
    assert region == "eu-west-1"
    assert start <= digestkit.START + timedelta(hours=1) and end >= digestkit.START


def test_a_deleted_log_file_is_tampering(s3: Any) -> None:
    trail = digestkit.build(hours=3)
    gone = trail.log_names(1)[0]
    trail.delete_log(gone)
    trail.put(s3)
    ctx, outputs, _ = collect_s3(clients_with(listing(trail.public_keys())), trail)

    assert outputs["integrity"]["counts"] == {"validated": 5, "deleted": 1}
    assert outputs["integrity"]["tampering"] is True
    assert "trail integrity: 5 validated, 1 deleted" in outputs["summary"]
    deleted = by_name(artifact(ctx), "files")[gone]
    assert deleted["verdict"] == "deleted"
    assert deleted["digest"] == trail.digest_name(1)
    assert deleted["kept"] is None


def test_an_altered_log_file_is_a_hash_mismatch_and_its_altered_copy_is_kept(s3: Any) -> None:
    trail = digestkit.build(hours=2)
    altered = trail.log_names(0)[1]
    trail.alter_log(altered)
    trail.put(s3)
    ctx, outputs, _ = collect_s3(clients_with(listing(trail.public_keys())), trail)

    assert outputs["integrity"]["counts"] == {"validated": 3, "hash mismatch": 1}
    assert outputs["integrity"]["tampering"] is True
    entry = by_name(artifact(ctx), "files")[altered]
    assert entry["verdict"] == "hash mismatch"
    assert entry["sha256"] != entry["expected"]
    # the copy kept is what was read: re-hashing it gives the same mismatch offline
    kept = ctx.artifacts.files[entry["kept"]]
    assert fmt.log_hash(gzip.decompress(kept)) == entry["sha256"]


def test_denied_public_keys_leave_the_digests_unproven_by_signature_with_the_reason(
    s3: Any,
) -> None:
    trail = digestkit.build(hours=2)
    trail.put(s3)
    ctx, outputs, _ = collect_s3(clients_with(listing(None)), trail)

    assert outputs["count"] == 8  # the events are collected all the same
    # no key to check with is no sign of forgery: unproven (the check's choice), with the
    # reason the responder can act on
    assert outputs["integrity"]["tampering"] is False
    digests = by_name(artifact(ctx), "digests")
    assert {d["status"] for d in digests.values()} == {"signature unavailable"}
    for entry in digests.values():
        assert "ListPublicKeys: AccessDeniedException" in entry["detail"]
        assert entry["saved"] is not None  # kept: the check can be repeated with a key file
    assert artifact(ctx)["public_keys"] == []


def test_a_log_file_that_cannot_be_fetched_is_unproven_not_altered(s3: Any) -> None:
    trail = digestkit.build(hours=2)
    trail.put(s3)
    denied = trail.logs[trail.log_names(1)[0]].key

    def deny_one(params: dict[str, Any], **_: Any) -> Any:
        if params["url_path"].endswith(denied):  # the request as serialized
            error = {"Code": "AccessDenied", "Message": "denied"}
            return _Http(403), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 403}}
        return None

    clients = clients_with(listing(trail.public_keys()))
    session = clients.session()
    session.events.register("before-call.s3.GetObject", deny_one)
    ctx, outputs, _ = collect_s3(clients, trail)

    assert outputs["integrity"]["tampering"] is False
    assert outputs["integrity"]["counts"] == {"validated": 3, "not covered": 1}
    entry = by_name(artifact(ctx), "files")[trail.log_names(1)[0]]
    assert "cannot read" in entry["detail"] and "AccessDenied" in entry["detail"]


def test_a_bucket_without_digests_leaves_every_file_unproven_and_asks_no_key(s3: Any) -> None:
    trail = digestkit.build(hours=2)
    trail.digests.clear()
    trail.put(s3)
    handler = listing(trail.public_keys())
    ctx, outputs, _ = collect_s3(clients_with(handler), trail)

    assert outputs["integrity"]["counts"] == {"not covered": 4}
    assert outputs["integrity"]["tampering"] is False
    assert handler.asked == []  # type: ignore[attr-defined]
    assert artifact(ctx)["digests"] == []


def test_validate_false_reads_no_digest(s3: Any) -> None:
    trail = digestkit.build(hours=2)
    trail.put(s3)
    ctx, outputs, calls = collect_s3(
        clients_with(listing(trail.public_keys())), trail, validate=False
    )
    assert outputs["count"] == 8
    assert outputs["integrity"] is None
    assert "trail integrity" not in outputs["summary"]
    assert "trail-integrity.json" not in ctx.artifacts.files
    listed = [c.params.get("Prefix", "") for c in calls if c.operation == "ListObjectsV2"]
    assert not any("CloudTrail-Digest" in p for p in listed)


# -- the files source ---------------------------------------------------------------------


def collect_files(clients: ClientFactory, root: Path) -> tuple[Any, dict[str, Any]]:
    ctx, _ = context(clients)
    ctx.now = lambda: NOW
    params = CollectParams(
        key=digestkit.KEY_ARN, source="files", path=str(root), since=SINCE, until=UNTIL
    )
    outcome = Collect().run(ctx, params)
    return ctx, {**outcome.outputs, "summary": outcome.summary}


def test_a_local_copy_with_a_signatures_sidecar_is_validated(
    moto_clients: ClientFactory, tmp_path: Path
) -> None:
    trail = digestkit.build(hours=3)
    trail.delete_log(trail.log_names(2)[0])
    root = trail.write(tmp_path / "copy", sidecar=True)
    ctx, outputs = collect_files(clients_with(listing(trail.public_keys())), root)

    assert outputs["integrity"]["counts"] == {"validated": 5, "deleted": 1}
    document = artifact(ctx)
    assert document["source"] == "files"
    for entry in document["digests"]:
        assert entry["status"] == "valid"
        assert entry["signature"] == trail.digests[entry["name"]].signature
    kept = {e["name"]: e["kept"] for e in document["files"]}
    assert all(kept[name] == f"trail-logs/{name}" for name in trail.logs)


def test_a_local_copy_without_signatures_takes_them_from_the_next_digest(
    moto_clients: ClientFactory, tmp_path: Path
) -> None:
    trail = digestkit.build(hours=3)
    root = trail.write(tmp_path / "copy")  # as aws s3 sync copies it: no metadata
    ctx, outputs = collect_files(clients_with(listing(trail.public_keys())), root)

    statuses = {e["name"]: e["status"] for e in artifact(ctx)["digests"]}
    assert statuses[trail.digest_name(0)] == statuses[trail.digest_name(1)] == "valid"
    assert statuses[trail.digest_name(2)] == "signature unavailable"  # the newest: unproven
    assert outputs["integrity"]["tampering"] is False
    assert outputs["integrity"]["counts"]["validated"] == 4


def test_a_bad_sidecar_is_one_clear_error(tmp_path: Path) -> None:
    trail = digestkit.build(hours=1)
    root = trail.write(tmp_path / "copy", sidecar=True)
    [sidecar] = root.rglob("signatures.json")
    sidecar.write_text("[1, 2]")
    with pytest.raises(Exception, match=r"signatures\.json: not a JSON object of digest names"):
        local_digests([root])


def test_days_read_of_a_local_copy_are_those_holding_a_log_file_read() -> None:
    log = "copy/111122223333_CloudTrail_eu-west-1_20261119T2355Z_abc.json.gz"
    early = "copy/111122223333_CloudTrail_eu-west-1_20261118T0100Z_abc.json.gz"
    export = "copy/events.jsonl"
    start = datetime(2026, 11, 19, 12, tzinfo=timezone.utc)
    end = datetime(2026, 11, 20, 1, tzinfo=timezone.utc)
    # no day before, no day of a digest, no day without a log file read
    assert days_read([log, early, export], start, end) == {
        ("111122223333", "eu-west-1", "2026/11/19")
    }
    assert days_read([log, early, export], None, None) == {
        ("111122223333", "eu-west-1", "2026/11/19"),
        ("111122223333", "eu-west-1", "2026/11/18"),
    }
    # with a window, also the days of the copy's digests in it, of an (account, Region)
    # a log file was read of: a day whose log files were all deleted is still read
    digests = [
        "copy/111122223333_CloudTrail-Digest_eu-west-1_t_eu-west-1_20261120T010000Z.json.gz",
        "copy/111122223333_CloudTrail-Digest_eu-west-1_t_eu-west-1_20261125T010000Z.json.gz",
        "copy/444455556666_CloudTrail-Digest_eu-west-1_t_eu-west-1_20261120T010000Z.json.gz",
    ]
    assert days_read([log, early, export], start, end, digests) == {
        ("111122223333", "eu-west-1", "2026/11/19"),
        ("111122223333", "eu-west-1", "2026/11/20"),
    }
    # without one, not: a copy of part of a trail (one day's logs, every digest) is no alarm
    assert days_read([log], None, None, digests) == {("111122223333", "eu-west-1", "2026/11/19")}


def test_days_listed_of_a_bucket_are_exactly_its_day_prefixes() -> None:
    trail = digestkit.build(hours=1)
    prefixes = [
        "logs/AWSLogs/123456789012/CloudTrail/eu-west-1/2026/11/20/",
        "logs/AWSLogs/o-abcdefghij/111122223333/CloudTrail/us-east-1/2026/11/21/",
    ]
    assert days_listed(prefixes, [], trail.digest_files()) == {
        ("123456789012", "eu-west-1", "2026/11/20"),
        ("111122223333", "us-east-1", "2026/11/21"),
    }
    # a Region's whole prefix (no window): the days of its log files read and listed
    whole = ["AWSLogs/123456789012/CloudTrail/eu-west-1/"]
    assert days_listed(whole, [], trail.digest_files()) == {
        ("123456789012", "eu-west-1", "2026/11/20")
    }
    # ... and of each digest read and the one it names as its previous (a day whose log
    # files and digests were all deleted is named by the next digest's link)
    late = digestkit.build(
        hours=1,
        start=datetime(2026, 11, 22, 2, tzinfo=timezone.utc),
        previous=(
            digestkit.BUCKET,
            "AWSLogs/123456789012/CloudTrail-Digest/eu-west-1/2026/11/"
            "21/123456789012_CloudTrail-Digest_eu-west-1_t_eu-west-1_20261121T220000Z.json.gz",
            "0" * 64,
            "0" * 512,
        ),
    )
    assert days_listed(whole, [], late.digest_files()) == {
        ("123456789012", "eu-west-1", "2026/11/21"),
        ("123456789012", "eu-west-1", "2026/11/22"),
    }


# -- plan and permissions -------------------------------------------------------------------


def test_plan_and_permissions_name_list_public_keys(tmp_path: Path) -> None:
    book = tmp_path / "p.yaml"
    book.write_text(
        "id: p\ntitle: P\nsteps:\n"
        "  - {id: s3, action: cloudtrail.collect,"
        " with: {key: alias/x, source: s3, bucket: trail-logs}}\n"
        "  - {id: files, action: cloudtrail.collect,"
        " with: {key: alias/x, source: files, path: logs/}}\n"
        "  - {id: plain, action: cloudtrail.collect,"
        " with: {key: alias/x, source: files, path: logs/, validate: false}}\n"
    )
    registry = actions.registry()
    planned = plan.plan(load_playbook(book).playbook, registry, {})
    shown = [[describe(c) for c in step.calls] for step in planned]
    keys = "cloudtrail:ListPublicKeys (each digest's Region)"
    assert keys in shown[0] and shown[1] == [keys] and shown[2] == []
    collect = registry["cloudtrail.collect"]
    assert "cloudtrail:ListPublicKeys" in collect.permissions
    for source in ("s3", "files"):
        on = collect.params.model_construct(key="arn:x", source=source)
        off = collect.params.model_construct(key="arn:x", source=source, check_digests=False)
        assert "cloudtrail:ListPublicKeys" in collect.permissions_for(on)
        assert "cloudtrail:ListPublicKeys" not in collect.permissions_for(off)


def test_a_sidecar_at_the_copys_root_serves_every_digest_and_is_no_log_file(
    moto_clients: ClientFactory, tmp_path: Path
) -> None:
    trail = digestkit.build(hours=2)
    root = trail.write(tmp_path / "copy")
    signatures = {name: stored.signature for name, stored in trail.digests.items()}
    (root / "signatures.json").write_text(json.dumps(signatures))
    ctx, outputs = collect_files(clients_with(listing(trail.public_keys())), root)

    assert outputs["integrity"]["counts"] == {"validated": 4}
    assert outputs["skipped"] == {}
    assert {e["status"] for e in artifact(ctx)["digests"]} == {"valid"}


@pytest.mark.parametrize("source", ["s3", "files"])
def test_copies_of_log_files_stop_at_the_budget_and_every_file_is_still_checked(
    source: str, s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trail = digestkit.build(hours=2)
    size = max(len(stored.body) for stored in trail.logs.values())
    monkeypatch.setattr("kmsir.actions.trail_s3.KEPT", 2 * size)
    clients = clients_with(listing(trail.public_keys()))
    if source == "s3":
        trail.put(s3)
        ctx, outputs, _ = collect_s3(clients, trail)
    else:
        ctx, outputs = collect_files(clients, trail.write(tmp_path / "copy", sidecar=True))

    assert outputs["integrity"]["counts"] == {"validated": 4}
    files = artifact(ctx)["files"]
    kept = [f["kept"] for f in files if f["kept"]]
    assert 1 <= len(kept) <= 2
    assert sum(len(ctx.artifacts.files[k]) for k in kept) <= 2 * size
    assert all(f["sha256"] for f in files)  # hashes for all, copies within the budget


def test_a_digest_that_cannot_be_fetched_is_named_with_the_reason(s3: Any) -> None:
    trail = digestkit.build(hours=2)
    trail.put(s3)
    denied = trail.digests[trail.digest_name(1)].key

    def deny_digest(params: dict[str, Any], **_: Any) -> Any:
        if params["url_path"].endswith(denied):
            error = {"Code": "AccessDenied", "Message": "denied"}
            return _Http(403), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 403}}
        return None

    clients = clients_with(listing(trail.public_keys()))
    clients.session().events.register("before-call.s3.GetObject", deny_digest)
    ctx, outputs, _ = collect_s3(clients, trail)

    entry = by_name(artifact(ctx), "digests")[trail.digest_name(1)]
    assert entry["detail"].startswith("cannot fetch (AccessDenied)")
    assert entry["problem"] == "cannot fetch (AccessDenied)" and entry["saved"] is None
    assert outputs["skipped"] == {"digest file cannot be fetched": 1}
    # the one digest of a readable chain withheld (integrity.check's rule): a failure, its
    # log files' digest missing
    assert entry["status"] == "unreadable"
    verdicts = {f["name"]: f["verdict"] for f in artifact(ctx)["files"]}
    assert {verdicts[n] for n in trail.log_names(1)} == {"digest missing"}
    assert {verdicts[n] for n in trail.log_names(0)} == {"validated"}
    assert outputs["integrity"]["tampering"] is True


# -- review fixes -----------------------------------------------------------------------------


def test_a_digest_written_while_the_logs_are_read_calls_no_file_deleted(s3: Any) -> None:
    # CloudTrail delivers a log file and writes the hour's digest naming it just after the
    # collect listed that day's log files: the digests are read first, so the digest that
    # names a file the listing could not see is not read either (that hour stays unproven)
    trail = digestkit.build(hours=3)
    late_log = trail.logs.pop(trail.log_names(2)[1])
    late_digest = trail.digests.pop(trail.digest_name(2))
    trail.put(s3)
    log_day = "/CloudTrail/eu-west-1/2026/11/20/"  # the day of the late log file
    delivered: list[str] = []

    def deliver(parsed: dict[str, Any], **_: Any) -> None:
        if delivered or not parsed.get("Prefix", "").endswith(log_day):
            return
        for stored in (late_log, late_digest):  # after the log listing
            metadata = {"signature": stored.signature or ""} if stored is late_digest else {}
            s3.put_object(Bucket=trail.bucket, Key=stored.key, Body=stored.body, Metadata=metadata)
            delivered.append(stored.key)

    clients = clients_with(listing(trail.public_keys()))
    clients.session().events.register("after-call.s3.ListObjectsV2", deliver)
    _, outputs, _ = collect_s3(clients, trail)

    assert delivered  # the race happened
    assert outputs["integrity"]["tampering"] is False
    assert outputs["integrity"]["counts"] == {"validated": 4, "not covered": 1}


def test_a_local_copy_of_one_day_of_a_trail_crossing_midnight_is_no_tampering(
    moto_clients: ClientFactory, tmp_path: Path
) -> None:
    # the copy holds the 21st's folders only: the 21st's first digest lists the 20th's last
    # hour of log files and links to the 20th's last digest, neither of them copied
    trail = digestkit.build(hours=4, start=datetime(2026, 11, 20, 22, tzinfo=timezone.utc))
    copy = trail.write(tmp_path / "whole", sidecar=True)
    part = tmp_path / "part"
    for folder in ("CloudTrail", "CloudTrail-Digest"):
        day = Path("AWSLogs", trail.account, folder, trail.region, "2026", "11", "21")
        (part / day).parent.mkdir(parents=True)
        (copy / day).rename(part / day)
    ctx, _ = context(clients_with(listing(trail.public_keys())))
    ctx.now = lambda: datetime(2026, 11, 21, 5, tzinfo=timezone.utc)
    params = CollectParams(
        key=digestkit.KEY_ARN,
        source="files",
        path=str(part),
        since="2026-11-20T20:00:00Z",
        until="2026-11-21T03:00:00Z",
    )
    outputs = Collect().run(ctx, params).outputs

    assert outputs["integrity"]["tampering"] is False, artifact(ctx)
    assert outputs["integrity"]["counts"] == {"validated": 4}
    assert artifact(ctx)["days"] == [["123456789012", "eu-west-1", "2026/11/21"]]


def test_a_region_whose_keys_are_denied_leaves_other_regions_digests_judged(s3: Any) -> None:
    # ListPublicKeys denied in us-east-1 says nothing of eu-west-1's keys: there, a digest
    # naming a key CloudTrail does not list is forged, not merely unproven
    trail = digestkit.build(hours=2)
    newest = trail.digest_name(1)
    trail.replace_digest(newest, lambda d: d.update(digestPublicKeyFingerprint="0" * 32))
    trail.put(s3)
    other = "AWSLogs/123456789012/CloudTrail-Digest/us-east-1/2026/11/20/"
    other += "123456789012_CloudTrail-Digest_us-east-1_t_us-east-1_20261120T100000Z.json.gz"
    s3.put_object(Bucket=trail.bucket, Key=other, Body=trail.digests[newest].body)
    ctx, outputs, _ = collect_s3(
        clients_with(listing(trail.public_keys(), denied={"us-east-1"})), trail
    )

    digests = by_name(artifact(ctx), "digests")
    assert digests[newest]["status"] == "signature invalid"
    assert "ListPublicKeys" not in digests[newest]["detail"]
    assert artifact(ctx)["keys_problem"] == {"us-east-1": "ListPublicKeys: AccessDeniedException"}
    assert outputs["integrity"]["tampering"] is True


def test_what_the_answer_depended_on_is_in_the_artifact(s3: Any) -> None:
    trail = digestkit.build(hours=2)
    trail.put(s3)
    ctx, _, _ = collect_s3(clients_with(listing(None)), trail)
    document = artifact(ctx)
    assert document["keys_problem"] == {"eu-west-1": "ListPublicKeys: AccessDeniedException"}
    for entry in document["digests"]:
        assert entry["algorithm"] == fmt.SIGNATURE_ALGORITHM
        assert entry["problem"] is None


def test_a_backfill_digest_s_key_is_asked_for_when_it_was_signed(s3: Any) -> None:
    # a backfill digest, written days after its hour for a log file delivered late, is
    # signed with the key of the day it was written (a rotated one): its time (S3 metadata
    # backfill-generation-timestamp) is in the range ListPublicKeys is asked for, as the
    # AWS CLI asks (awscli/customizations/cloudtrail/validation.py)
    trail = digestkit.build(hours=3)
    trail.put(s3)
    written = datetime(2026, 11, 24, 6, tzinfo=timezone.utc)
    rotated = digestkit.public_key("rotated")
    moment = digestkit.START + timedelta(minutes=58)
    late = f"123456789012_CloudTrail_eu-west-1_{moment:%Y%m%dT%H%MZ}_late.json.gz"
    late_key = f"AWSLogs/123456789012/CloudTrail/eu-west-1/2026/11/20/{late}"
    content = json.dumps({"Records": [digestkit.event(moment, 7)]}).encode()
    s3.put_object(Bucket=trail.bucket, Key=late_key, Body=gzip.compress(content, mtime=0))
    end = digestkit.START + timedelta(hours=1)
    key = fmt.digest_key("123456789012", "eu-west-1", digestkit.TRAIL, "eu-west-1", end)
    key = key.replace(".json.gz", "_backfill.json.gz")
    document = {
        **trail.digest(trail.digest_name(0)),
        "digestS3Object": key,
        "digestPublicKeyFingerprint": rotated.fingerprint,
        "previousDigestS3Bucket": None,
        "previousDigestS3Object": None,
        "previousDigestHashValue": None,
        "previousDigestHashAlgorithm": None,
        "previousDigestSignature": None,
        "logFiles": [
            {
                "s3Bucket": trail.bucket,
                "s3Object": late_key,
                "hashValue": fmt.log_hash(content),
                "hashAlgorithm": "SHA-256",
                "newestEventTime": fmt.iso(moment),
                "oldestEventTime": fmt.iso(moment),
            }
        ],
    }
    uncompressed, gz = fmt.encode(document)
    metadata = {
        "signature": fmt.sign(digestkit.private_key("rotated"), document, uncompressed),
        "signature-algorithm": fmt.SIGNATURE_ALGORITHM,
        "backfill-generation-timestamp": fmt.iso(written),
    }
    s3.put_object(Bucket=trail.bucket, Key=key, Body=gz, Metadata=metadata)
    fall = (datetime(2026, 10, 1, tzinfo=timezone.utc), datetime(2026, 11, 23, tzinfo=timezone.utc))
    later = (datetime(2026, 11, 23, tzinfo=timezone.utc), datetime(2027, 2, 1, tzinfo=timezone.utc))
    handler = listing(
        [*trail.public_keys(), rotated],
        valid={trail.public_keys()[0].fingerprint: fall, rotated.fingerprint: later},
    )
    ctx, outputs, _ = collect_s3(
        clients_with(handler), trail, now=datetime(2026, 11, 25, tzinfo=timezone.utc)
    )

    [(_, start, end_asked)] = handler.asked  # type: ignore[attr-defined]
    assert start <= digestkit.START and end_asked >= written
    statuses = {e["name"]: e["status"] for e in artifact(ctx)["digests"]}
    assert statuses[key.rsplit("/", 1)[-1]] == "valid"
    assert outputs["integrity"]["tampering"] is False
    assert outputs["integrity"]["counts"] == {"validated": 7}

"""``kmsir cloudtrail verify-logs`` and ``cloudtrail scan --verify-logs``, as a responder runs
them: a copy of the trail on disk, the trail bucket (moto), a bundle's saved copy (offline);
the verdicts said in one line each, exit 0 (nothing failed), 1 (tampering), 2 (bad input)."""

from __future__ import annotations

import base64
import gzip
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from kmsir.aws import ClientFactory
from kmsir.trail import digest_format as fmt

from . import digestkit
from .clikit import Ran, cli
from .conftest import LoopbackServer
from .test_cli import assert_no_traceback


def keys_file(path: Path, trail: digestkit.Trail) -> Path:
    """The trail's public key as ``aws cloudtrail list-public-keys`` prints it (the CLI
    base64-encodes the blob, itself the base64 text of the DER)."""
    key = trail.public_keys()[0]
    value = base64.b64encode(base64.b64encode(key.der)).decode()
    listed = {
        "PublicKeyList": [
            {
                "Value": value,
                "ValidityStartTime": "2026-10-21T09:00:00+00:00",
                "ValidityEndTime": "2026-12-21T09:00:00+00:00",
                "Fingerprint": key.fingerprint,
            }
        ]
    }
    path.write_text(json.dumps(listed))
    return path


def verify(*args: str | Path) -> Ran:
    ran = cli("cloudtrail", "verify-logs", *args)
    assert_no_traceback(ran)
    return ran


def summary(ran: Ran) -> str:
    return ran.stdout.splitlines()[0]


# -- a copy of the trail on disk (aws s3 sync) ----------------------------------------------


def test_an_intact_copy_is_proven_with_signatures_from_the_sidecar(tmp_path: Path) -> None:
    trail = digestkit.build(hours=3)
    copy = trail.write(tmp_path / "copy", sidecar=True)
    ran = verify(copy, "--public-keys", keys_file(tmp_path / "keys.json", trail))
    assert ran.exit_code == 0, ran.output
    assert "6 validated" in summary(ran) and "3 valid" in summary(ran)
    assert "TAMPERING" not in ran.stdout


def test_a_copy_without_signatures_takes_them_from_the_next_digest(tmp_path: Path) -> None:
    # aws s3 sync keeps no S3 metadata: each digest's signature is in its successor's link,
    # the newest one's nowhere (unproven, not a failure)
    trail = digestkit.build(hours=3)
    copy = trail.write(tmp_path / "copy")
    ran = verify(copy, "--public-keys", keys_file(tmp_path / "keys.json", trail))
    assert ran.exit_code == 0, ran.output
    assert "signature unavailable" in ran.stdout
    assert "4 validated" in summary(ran)


def test_a_deleted_log_file_is_tampering_named_in_one_line(tmp_path: Path) -> None:
    trail = digestkit.build(hours=3)
    gone = trail.log_names(1)[0]
    trail.delete_log(gone)
    copy = trail.write(tmp_path / "copy", sidecar=True)
    ran = verify(copy, "--public-keys", keys_file(tmp_path / "keys.json", trail))
    assert ran.exit_code == 1, ran.output
    assert "TAMPERING" in summary(ran) and "1 deleted" in summary(ran)
    named = [line for line in ran.stdout.splitlines() if gone in line]
    assert len(named) == 1 and "deleted" in named[0]


def test_one_byte_altered_is_a_hash_mismatch(tmp_path: Path) -> None:
    trail = digestkit.build(hours=2)
    altered = trail.log_names(0)[1]
    trail.alter_log(altered)
    copy = trail.write(tmp_path / "copy", sidecar=True)
    ran = verify(copy, "--public-keys", keys_file(tmp_path / "keys.json", trail))
    assert ran.exit_code == 1
    assert any("hash mismatch" in line and altered in line for line in ran.stdout.splitlines())


def test_a_digest_signed_by_another_key_fails_its_log_files(tmp_path: Path) -> None:
    trail = digestkit.build(hours=3)
    trail.resign(trail.digest_name(2))
    copy = trail.write(tmp_path / "copy", sidecar=True)
    ran = verify(copy, "--public-keys", keys_file(tmp_path / "keys.json", trail))
    assert ran.exit_code == 1
    assert "digest signature invalid" in ran.stdout


def test_logs_no_digest_covers_yet_are_unproven_not_failed(tmp_path: Path) -> None:
    # the newest hour's digest is not written yet: its log files are not covered
    trail = digestkit.build(hours=3)
    trail.delete_digest(trail.digest_name(2))
    copy = trail.write(tmp_path / "copy", sidecar=True)
    ran = verify(copy, "--public-keys", keys_file(tmp_path / "keys.json", trail))
    assert ran.exit_code == 0, ran.output
    assert "2 not covered" in summary(ran) and "TAMPERING" not in ran.stdout


def test_the_window_reads_only_its_days(tmp_path: Path) -> None:
    # a trail of two days; the file deleted on the first is outside a window on the second
    trail = digestkit.build(hours=30, logs_per_hour=1, records=1)
    trail.delete_log(trail.log_names(2)[0])
    copy = trail.write(tmp_path / "copy", sidecar=True)
    keys = keys_file(tmp_path / "keys.json", trail)
    whole = verify(copy, "--public-keys", keys)
    assert whole.exit_code == 1 and "1 deleted" in summary(whole)
    second_day = verify(copy, "--public-keys", keys, "--since", "2026-11-21T01:00:00Z")
    assert second_day.exit_code == 0, second_day.output
    assert "deleted" not in second_day.stdout


def test_the_verdicts_as_json(tmp_path: Path) -> None:
    trail = digestkit.build(hours=2)
    copy = trail.write(tmp_path / "copy", sidecar=True)
    out = tmp_path / "integrity.json"
    ran = verify(copy, "--public-keys", keys_file(tmp_path / "k.json", trail), "--out", out)
    assert ran.exit_code == 0
    document = json.loads(out.read_text())
    assert document["counts"] == {"validated": 4} and document["tampering"] is False
    assert {f["name"] for f in document["files"]} == set(trail.logs)


def test_without_public_keys_they_are_asked_of_cloudtrail_and_said(
    moto_server: LoopbackServer, tmp_path: Path
) -> None:
    # no --public-keys: ListPublicKeys with the ambient credentials, here a moto server
    # (which does not answer it, or answers with the sandbox's key once a sandbox in this
    # process patched it): the trail's key is not among them, so no digest is trusted, the
    # note says where the keys came from, and nothing crashes
    trail = digestkit.build(hours=2)
    copy = trail.write(tmp_path / "copy", sidecar=True)
    ran = cli("cloudtrail", "verify-logs", copy, env={"AWS_ENDPOINT_URL": moto_server.endpoint})
    assert_no_traceback(ran)
    assert "validated" not in summary(ran), ran.output
    assert ran.exit_code == (1 if "TAMPERING" in summary(ran) else 0)
    assert "public key" in ran.stdout.split("\n", 1)[1]  # each digest says why
    assert any(
        line.startswith("note: public keys: ") and "from ListPublicKeys (eu-west-1)" in line
        for line in ran.stdout.splitlines()
    )


# -- the trail bucket ------------------------------------------------------------------------


@pytest.fixture
def bucket_trail(moto_clients: ClientFactory) -> tuple[Any, digestkit.Trail]:
    s3 = boto3.client("s3", region_name="eu-west-1")
    trail = digestkit.build(hours=3, prefix="logs")
    trail.put(s3)
    return s3, trail


def test_a_trail_bucket_with_signatures_in_s3_metadata(
    bucket_trail: tuple[Any, digestkit.Trail], tmp_path: Path
) -> None:
    s3, trail = bucket_trail
    keys = keys_file(tmp_path / "keys.json", trail)
    target = f"s3://{trail.bucket}/logs"
    intact = verify(target, "--public-keys", keys)
    assert intact.exit_code == 0, intact.output
    assert "6 validated" in summary(intact) and "3 valid" in summary(intact)

    gone = trail.logs[trail.log_names(0)[0]]
    s3.delete_object(Bucket=trail.bucket, Key=gone.key)
    deleted = verify(target, "--public-keys", keys)
    assert deleted.exit_code == 1
    assert any(
        "deleted" in line and f"s3://{trail.bucket}/{gone.key}" in line
        for line in deleted.stdout.splitlines()
    )


def test_a_window_of_a_trail_bucket(bucket_trail: tuple[Any, digestkit.Trail], tmp_path: Path):
    _, trail = bucket_trail
    keys = keys_file(tmp_path / "keys.json", trail)
    ran = verify(
        f"s3://{trail.bucket}/logs",
        "--public-keys",
        keys,
        "--since",
        "2026-11-20T00:00:00Z",
        "--until",
        "2026-11-20T23:00:00Z",
    )
    assert ran.exit_code == 0, ran.output
    assert "6 validated" in summary(ran)


def test_an_empty_prefix_is_bad_input(bucket_trail: tuple[Any, digestkit.Trail]) -> None:
    _, trail = bucket_trail
    ran = verify(f"s3://{trail.bucket}/elsewhere")
    assert ran.exit_code == 2
    assert ran.stderr.count("\n") == 1 and "no CloudTrail log or digest file" in ran.stderr


# -- scan --verify-logs ----------------------------------------------------------------------


def test_scan_finds_the_same_events_and_checks_them_in_one_read(tmp_path: Path) -> None:
    trail = digestkit.build(hours=3)
    copy = trail.write(tmp_path / "copy", sidecar=True)
    keys = keys_file(tmp_path / "keys.json", trail)
    plain = cli("cloudtrail", "scan", copy, "--key", digestkit.KEY_ARN, "--out", tmp_path / "a")
    checked = cli(
        "cloudtrail", "scan", copy, "--key", digestkit.KEY_ARN, "--out", tmp_path / "b",
        "--verify-logs", "--public-keys", keys, "--integrity-out", tmp_path / "i.json",
    )  # fmt: skip
    assert plain.exit_code == 0 and checked.exit_code == 0, checked.output
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    assert len((tmp_path / "a").read_text().splitlines()) == 12
    assert "every log file proven intact" in checked.stderr
    assert "trail integrity" not in plain.stderr
    assert json.loads((tmp_path / "i.json").read_text())["counts"] == {"validated": 6}


def test_scan_with_a_deleted_log_file_exits_1(tmp_path: Path) -> None:
    trail = digestkit.build(hours=2)
    trail.delete_log(trail.log_names(0)[0])
    copy = trail.write(tmp_path / "copy", sidecar=True)
    ran = cli(
        "cloudtrail", "scan", copy, "--key", digestkit.KEY_ARN, "--verify-logs",
        "--public-keys", keys_file(tmp_path / "keys.json", trail),
    )  # fmt: skip
    assert ran.exit_code == 1
    assert "1 deleted" in ran.stderr and "TAMPERING" in ran.stderr
    assert "matching events" in ran.stderr  # the scan's own summary is still there


def test_scan_of_a_bucket_with_verify_logs(
    bucket_trail: tuple[Any, digestkit.Trail], tmp_path: Path
) -> None:
    _, trail = bucket_trail
    ran = cli(
        "cloudtrail", "scan", f"s3://{trail.bucket}/logs", "--key", digestkit.KEY_ARN,
        "--verify-logs", "--public-keys", keys_file(tmp_path / "keys.json", trail),
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    assert "6 validated" in ran.stderr


def test_scan_leaves_other_files_out_of_the_check(tmp_path: Path) -> None:
    # an export (events.jsonl) is scanned, but no digest lists it: not a verdict
    trail = digestkit.build(hours=1)
    copy = trail.write(tmp_path / "copy", sidecar=True)
    record = digestkit.event(digestkit.START, 9)
    (copy / "export.jsonl").write_text(json.dumps(record) + "\n")
    ran = cli(
        "cloudtrail", "scan", copy, "--key", digestkit.KEY_ARN, "--verify-logs",
        "--public-keys", keys_file(tmp_path / "keys.json", trail),
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    assert "2 validated" in ran.stderr and "not covered" not in ran.stderr
    assert "1 file(s) not named as CloudTrail log files" in ran.stderr


# -- bad input: one line, exit 2 -------------------------------------------------------------


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    trail = digestkit.build(hours=1)
    copy = trail.write(tmp_path / "copy")
    (tmp_path / "empty").mkdir()
    (tmp_path / "keys.txt").write_text("not json")
    (tmp_path / "nokeys.json").write_text("[]")
    cases = {
        "no such file or folder": [tmp_path / "nowhere"],
        "no CloudTrail log or digest file": [tmp_path / "empty"],
        "--public-keys": [copy, "--public-keys", tmp_path / "keys.txt"],
        "lists no public key": [copy, "--public-keys", tmp_path / "nokeys.json"],
        "cannot read": [copy, "--public-keys", tmp_path / "absent.json"],
        "no bucket named": ["s3://"],
        "neither a duration": [copy, "--since", "yesterday-ish"],
        "is not before": [copy, "--since", "2026-11-21T00:00:00Z", "--until", "2026-11-20"],
        "no such AWS profile": [copy, "--profile", "no-such-profile"],
    }
    for expected, args in cases.items():
        ran = verify(*args)
        assert ran.exit_code == 2, (expected, ran.output)
        assert expected in ran.stderr, (expected, ran.stderr)
        assert ran.stderr.count("\n") == 1 and not ran.stdout, ran.output


def test_scan_with_public_keys_that_cannot_be_read_stops_before_scanning(tmp_path: Path) -> None:
    trail = digestkit.build(hours=1)
    copy = trail.write(tmp_path / "copy")
    bad = cli(
        "cloudtrail", "scan", copy, "--key", digestkit.KEY_ARN,
        "--public-keys", tmp_path / "absent.json",  # implies --verify-logs
    )  # fmt: skip
    assert_no_traceback(bad)
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1
    assert "--public-keys" in bad.stderr and "matching events" not in bad.stderr


def test_a_bundle_without_a_check_is_bad_input(demo_bundle: Path) -> None:
    ran = verify(demo_bundle)
    assert ran.exit_code == 2
    assert "no trail-integrity.json" in ran.stderr and ran.stderr.count("\n") == 1
    windowed = verify(demo_bundle, "--since", "7d")
    assert windowed.exit_code == 2 and "--since/--until do not apply" in windowed.stderr


def test_gzip_of_the_listed_file_is_what_is_hashed(tmp_path: Path) -> None:
    # the digest lists the SHA-256 of the uncompressed content: recompressing a log file
    # (other bytes on disk, the same content) changes nothing
    trail = digestkit.build(hours=1)
    name = trail.log_names(0)[0]
    stored = trail.logs[name]
    stored.body = gzip.compress(gzip.decompress(stored.body), compresslevel=1, mtime=12345)
    copy = trail.write(tmp_path / "copy", sidecar=True)
    ran = verify(copy, "--public-keys", keys_file(tmp_path / "keys.json", trail))
    assert ran.exit_code == 0 and "2 validated" in summary(ran)


# -- a bundle's saved copy, offline ----------------------------------------------------------

COLLECT = """\
id: collect-trail
title: Collect a key's events from a trail, each log file checked
steps:
  - id: collect
    action: cloudtrail.collect
    with:
      key: "{key}"
      source: {source}
      {where}
      since: "2026-11-20T08:00:00Z"
      until: "2026-11-20T13:00:00Z"
"""


def collected(
    tmp_path: Path,
    trail: digestkit.Trail,
    *,
    source: str,
    where: str,
    key: str = "",
    clients: ClientFactory | None = None,
) -> Path:
    """A finished run of a one-step playbook collecting from ``trail`` (ListPublicKeys
    answered with the trail's key, as test_collect_integrity does, unless ``clients``
    are given); its bundle."""
    from .conftest import bundles, load_playbook, run_playbook
    from .test_collect_integrity import clients_with, listing

    book = tmp_path / "collect.yaml"
    book.write_text(COLLECT.format(key=key or digestkit.KEY_ARN, source=source, where=where))
    clients = clients or clients_with(listing(trail.public_keys()))
    result = run_playbook(load_playbook(book), clients, tmp_path / "ev")
    assert result.status == "succeeded", result.error
    (bundle,) = bundles(tmp_path / "ev" / "INC-test")
    return bundle


def test_a_bundle_is_rechecked_offline_with_the_same_answer(
    bucket_trail: tuple[Any, digestkit.Trail], tmp_path: Path
) -> None:
    s3, trail = bucket_trail
    s3.delete_object(Bucket=trail.bucket, Key=trail.logs[trail.log_names(1)[0]].key)
    bundle = collected(
        tmp_path, trail, source="s3", where=f"bucket: {trail.bucket}\n      prefix: logs"
    )
    ran = verify(bundle)
    assert ran.exit_code == 1, ran.output  # the recorded tampering, found again
    lines = ran.stdout.splitlines()
    assert lines[0].startswith("step collect (artifacts/") and "offline" in lines[0]
    assert "5 validated, 1 deleted" in lines[1] and "TAMPERING" in lines[1]
    assert "note: public keys: 1 saved in the bundle" in lines
    assert "note: 5 log file(s) kept in the bundle, hashed again" in lines
    assert lines[-1] == "same answer as recorded in the bundle"


def test_log_files_not_kept_are_checked_at_their_recorded_hash(tmp_path: Path) -> None:
    # another key: no log file holds a matched event, so none is kept in the bundle
    trail = digestkit.build(hours=3)
    copy = trail.write(tmp_path / "copy", sidecar=True)
    other = "arn:aws:kms:eu-west-1:123456789012:key/00000000-0000-0000-0000-000000000000"
    with mock_aws():
        bundle = collected(tmp_path, trail, source="files", where=f"path: {copy}", key=other)
    ran = verify(bundle)
    assert ran.exit_code == 0, ran.output
    assert "6 validated" in ran.stdout
    assert any("6 log file(s) not kept in the bundle" in line for line in ran.stdout.splitlines())
    assert ran.stdout.splitlines()[-1] == "same answer as recorded in the bundle"


def test_a_saved_copy_altered_in_the_bundle_is_named_and_fails(
    bucket_trail: tuple[Any, digestkit.Trail], tmp_path: Path
) -> None:
    _, trail = bucket_trail
    bundle = collected(
        tmp_path, trail, source="s3", where=f"bucket: {trail.bucket}\n      prefix: logs"
    )
    assert verify(bundle).exit_code == 0
    name = trail.log_names(2)[1]
    (kept,) = bundle.glob(f"artifacts/*/trail-logs/{name}")
    content = bytearray(gzip.decompress(kept.read_bytes()))
    content[content.index(b"Decrypt")] = ord("d")
    kept.write_bytes(gzip.compress(bytes(content)))
    ran = verify(bundle)
    assert ran.exit_code == 1
    assert any("hash mismatch" in line and name in line for line in ran.stdout.splitlines())
    assert "DIFFERS from the answer recorded in the bundle:" in ran.stdout
    assert any(
        line.strip().endswith("not as the journal recorded it (kmsir verify says more)")
        and name in line
        for line in ran.stdout.splitlines()
    )


def test_a_bundle_checked_with_keys_given_instead_of_its_own(
    bucket_trail: tuple[Any, digestkit.Trail], tmp_path: Path
) -> None:
    _, trail = bucket_trail
    bundle = collected(
        tmp_path, trail, source="s3", where=f"bucket: {trail.bucket}\n      prefix: logs"
    )
    other = digestkit.public_key("someone-else")
    (tmp_path / "other.json").write_text(json.dumps([other.to_json()]))
    ran = verify(bundle, "--public-keys", tmp_path / "other.json")
    assert ran.exit_code == 1  # signed by a key the responder does not trust
    assert "digest signature invalid" in ran.stdout
    assert "note: public keys: 1 given (--public-keys)" in ran.stdout


def test_the_tampering_tabletop_s_bundle_gives_the_same_answer_offline(tmp_path: Path) -> None:
    # the sandbox's trail bucket, its signed digests and ListPublicKeys (the shim), the
    # attacker's deletion of the log file holding their CreateGrant: the run records it,
    # and the bundle alone, the sandbox gone, says the same
    from .conftest import played

    with played("trail-tampering", tmp_path) as (_, result):
        bundle = result.bundle
    ran = verify(bundle)
    assert ran.exit_code == 1, ran.output
    lines = ran.stdout.splitlines()
    assert "1 deleted" in lines[1] and "TAMPERING" in lines[1]
    assert sum("log file deleted: s3://" in line for line in lines) == 1
    assert lines[-1] == "same answer as recorded in the bundle"


def test_a_bundle_collected_without_public_keys_gives_the_same_answer_offline(
    bucket_trail: tuple[Any, digestkit.Trail], tmp_path: Path
) -> None:
    # ListPublicKeys denied when the step ran: its digests unproven by signature; offline,
    # from the bundle alone, the same (the denial is part of what the step recorded)
    from .test_collect_integrity import clients_with, listing

    _, trail = bucket_trail
    bundle = collected(
        tmp_path,
        trail,
        source="s3",
        where=f"bucket: {trail.bucket}\n      prefix: logs",
        clients=clients_with(listing(None)),
    )
    ran = verify(bundle)
    assert ran.exit_code == 0, ran.output
    assert "signature unavailable" in ran.stdout
    assert ran.stdout.splitlines()[-1] == "same answer as recorded in the bundle"


def test_a_bundle_with_a_digest_that_could_not_be_fetched_gives_the_same_answer_offline(
    bucket_trail: tuple[Any, digestkit.Trail], tmp_path: Path
) -> None:
    from .test_collect_integrity import _Http, clients_with, listing

    _, trail = bucket_trail
    denied = trail.digests[trail.digest_name(1)].key

    def deny_digest(params: dict[str, Any], **_: Any) -> Any:
        if params["url_path"].endswith(denied):
            error = {"Code": "AccessDenied", "Message": "denied"}
            return _Http(403), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 403}}
        return None

    clients = clients_with(listing(trail.public_keys()))
    clients.session().events.register("before-call.s3.GetObject", deny_digest)
    bundle = collected(
        tmp_path,
        trail,
        source="s3",
        where=f"bucket: {trail.bucket}\n      prefix: logs",
        clients=clients,
    )
    ran = verify(bundle)
    assert "cannot fetch (AccessDenied)" in ran.stdout, ran.output
    assert ran.stdout.splitlines()[-1] == "same answer as recorded in the bundle"


def test_a_copy_of_one_day_of_a_trail_crossing_midnight_is_no_tampering(tmp_path: Path) -> None:
    # the 21st's folders only: its first digest lists the 20th's last hour of log files
    # and links to the 20th's last digest, neither of them in the copy
    trail = digestkit.build(hours=4, start=datetime(2026, 11, 20, 22, tzinfo=timezone.utc))
    whole = trail.write(tmp_path / "whole", sidecar=True)
    part = tmp_path / "part"
    for folder in ("CloudTrail", "CloudTrail-Digest"):
        day = Path("AWSLogs", trail.account, folder, trail.region, "2026", "11", "21")
        (part / day).parent.mkdir(parents=True)
        (whole / day).rename(part / day)
    keys = keys_file(tmp_path / "keys.json", trail)
    for window in ([], ["--since", "2026-11-20T20:00:00Z", "--until", "2026-11-21T03:00:00Z"]):
        ran = verify(part, "--public-keys", keys, *window)
        assert ran.exit_code == 0, ran.output
        assert "TAMPERING" not in ran.stdout and "4 validated" in summary(ran)


# -- reviewer findings: days read, bundles, keys given, --until alone ------------------------


def test_a_window_sees_a_day_whose_log_files_were_all_deleted(tmp_path: Path) -> None:
    # a trail crossing midnight, every log file of the 21st deleted: the copy holds the
    # 21st's digests naming them, within the window, so that day was read: deleted
    trail = digestkit.build(hours=4, start=datetime(2026, 11, 20, 22, tzinfo=timezone.utc))
    gone = [name for name in trail.logs if "_20261121T" in name]
    assert len(gone) == 4
    for name in gone:
        trail.delete_log(name)
    copy = trail.write(tmp_path / "copy", sidecar=True)
    keys = keys_file(tmp_path / "keys.json", trail)
    window = ["--since", "2026-11-20T20:00:00Z", "--until", "2026-11-21T03:00:00Z"]
    ran = verify(copy, "--public-keys", keys, *window)
    assert ran.exit_code == 1, ran.output
    assert "TAMPERING" in summary(ran) and "4 deleted" in summary(ran)
    assert all(
        any(name in line and "deleted" in line for line in ran.stdout.splitlines()) for name in gone
    )


def test_a_whole_bucket_sees_a_day_deleted_with_its_digests(
    moto_clients: ClientFactory, tmp_path: Path
) -> None:
    # no window: each Region's prefix listed in full. One delivery a day (21:05 on the 19th
    # and the 20th, 02:05 on the 21st; no digest for the hours between, as the sandbox
    # writes them); the 20th's log file and digest deleted: the 21st's digest still names
    # the 20th's as its previous one, so the 20th was read and that digest is missing (the
    # 19th's, older, says it is no expired start of the trail)
    s3 = boto3.client("s3", region_name="eu-west-1")
    trail, link = digestkit.Trail(), None
    hours = [
        datetime(2026, 11, day, hour, tzinfo=timezone.utc)
        for day, hour in ((19, 21), (20, 21), (21, 2))
    ]
    for moment in hours:
        part = digestkit.build(hours=1, logs_per_hour=1, start=moment, previous=link)
        trail.logs.update(part.logs)
        trail.digests.update(part.digests)
        (stored,) = part.digests.values()
        sha = fmt.log_hash(gzip.decompress(stored.body))
        link = (part.bucket, stored.key, sha, stored.signature or "")
    gone = [name for name in [*trail.logs, *trail.digests] if "_20261120T" in name]
    assert len(gone) == 2
    for name in gone:
        trail.logs.pop(name, None)
        trail.digests.pop(name, None)
    trail.put(s3)
    ran = verify(f"s3://{trail.bucket}", "--public-keys", keys_file(tmp_path / "k.json", trail))
    assert ran.exit_code == 1, ran.output
    assert "TAMPERING" in summary(ran)
    (digest,) = [name for name in gone if "CloudTrail-Digest" in name]
    assert any("missing" in line and digest in line for line in ran.stdout.splitlines())


def test_a_folder_inside_a_bundle_is_refused_naming_the_bundle(
    bucket_trail: tuple[Any, digestkit.Trail], tmp_path: Path
) -> None:
    _, trail = bucket_trail
    bundle = collected(
        tmp_path, trail, source="s3", where=f"bucket: {trail.bucket}\n      prefix: logs"
    )
    (artifact,) = bundle.glob("artifacts/*/trail-integrity.json")
    for inside in (artifact.parent, artifact.parent / "trail-digests", artifact):
        ran = verify(inside)
        assert ran.exit_code == 2, ran.output
        assert ran.stderr.count("\n") == 1 and not ran.stdout, ran.output
        assert "is inside the kmsir bundle" in ran.stderr
        assert f"verify-logs {bundle.resolve()})" in ran.stderr


def test_keys_given_prove_a_bundle_collected_without_them_and_that_is_no_difference(
    bucket_trail: tuple[Any, digestkit.Trail], tmp_path: Path
) -> None:
    # ListPublicKeys denied when the step ran: its digests' signatures unavailable, its log
    # files not covered. The responder gives the trail's keys: proven now, the same answer
    from .test_collect_integrity import clients_with, listing

    _, trail = bucket_trail
    bundle = collected(
        tmp_path,
        trail,
        source="s3",
        where=f"bucket: {trail.bucket}\n      prefix: logs",
        clients=clients_with(listing(None)),
    )
    ran = verify(bundle, "--public-keys", keys_file(tmp_path / "keys.json", trail))
    assert ran.exit_code == 0, ran.output
    lines = ran.stdout.splitlines()
    assert "6 validated" in lines[1] and "3 valid" in lines[1]
    assert "DIFFERS" not in ran.stdout
    assert any(line.startswith("note: proven now with the keys given: 9 ") for line in lines)
    assert lines[-1] == (
        "same answer as recorded in the bundle, but for 9 proven now with the keys given"
    )
    # keys that prove nothing: every digest's signature invalid, a difference (exit 1)
    other = digestkit.public_key("someone-else")
    (tmp_path / "other.json").write_text(json.dumps([other.to_json()]))
    wrong = verify(bundle, "--public-keys", tmp_path / "other.json")
    assert wrong.exit_code == 1 and "DIFFERS" in wrong.stdout


def test_until_alone_leaves_out_the_later_days_of_a_copy(
    bucket_trail: tuple[Any, digestkit.Trail], tmp_path: Path
) -> None:
    # three days; a log file of the 22nd deleted: --until on the 20th reads up to the 21st
    # (late deliveries), so the deletion is not among what was checked
    trail = digestkit.build(hours=60, logs_per_hour=1, records=1)
    gone = trail.log_names(40)[0]
    assert "_20261122T" in gone
    trail.delete_log(gone)
    copy = trail.write(tmp_path / "copy", sidecar=True)
    keys = keys_file(tmp_path / "keys.json", trail)
    assert verify(copy, "--public-keys", keys).exit_code == 1
    ran = verify(copy, "--public-keys", keys, "--until", "2026-11-20T12:00:00Z")
    assert ran.exit_code == 0, ran.output
    assert "deleted" not in ran.stdout and "no tampering found" in summary(ran)
    # the 21st's last hour: its digest is the 22nd's, left out, so not covered (unproven)
    assert "39 log files (38 validated, 1 not covered)" in summary(ran)
    assert any(
        line.startswith("note: --until without --since: files of the days after 2026/11/21")
        for line in ran.stdout.splitlines()
    )
    # a trail bucket is listed by day from --since (or whole): --until alone is refused
    _, bucketed = bucket_trail
    refused = verify(f"s3://{bucketed.bucket}/logs", "--until", "2026-11-20T12:00:00Z")
    assert refused.exit_code == 2 and refused.stderr.count("\n") == 1, refused.output
    assert "--until without --since" in refused.stderr

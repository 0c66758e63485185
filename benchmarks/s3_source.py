"""Benchmark: the s3 source (a trail bucket read straight into the scanner) vs. copying the
prefix with the AWS CLI, then scanning the copy.

Starts moto's server in a child process on 127.0.0.1 (dummy credentials: nothing can reach a
real account), fills a trail bucket with N gzipped log files in CloudTrail's layout (the
events of ``scan_cloudtrail.py``'s generator, 5,000 a file, about 1% of them the key's), then
times, in one run:

  (a) ``kmsir cloudtrail scan s3://BUCKET/PREFIX`` (the headline: the s3 source's fetching
      and scanning, as ``cloudtrail.collect source: s3`` does them), and ``kmsir run`` of a
      one-step playbook with that collect, which adds a run's start-up, evidence and the
      reports it renders at its end;
  (b) ``aws s3 cp --recursive s3://BUCKET/PREFIX DIR`` followed by
      ``kmsir cloudtrail scan DIR``: what a responder does without the s3 source.

It checks that all of them found the same events (exit 1 if not), prints the times, the
ratio (b)/(a) and peak memory. With ``--latency-ms`` it also times the s3 source in process
with that delay added to every request (a botocore ``before-send`` hook), with its pool of
GETs and with one at a time, to show what the parallel GETs buy on a real network. Needs the
AWS CLI: ``pip install '.[bench]'``.

    python benchmarks/s3_source.py [--files 64] [--records 5000] [--latency-ms 20] [--record]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scan_cloudtrail import ARN, make_event  # noqa: E402 - the script's folder, just added
from snapshot_many_keys import ENV, dummy_environment, free_port, slow_clients  # noqa: E402 - the same

REGION = "eu-west-1"
BUCKET = "bench-trail"
PREFIX = "logs"
ACCOUNT = "111122223333"
SINCE, UNTIL = "2026-11-01T00:00:00Z", "2026-11-28T00:00:00Z"
#: The peer's time over the s3 source's. The issue sets no figure: faster than copying the
#: prefix, then scanning the copy.
GOAL = 1.0
PLAYBOOK = f"""\
id: s3-collect
title: Collect a key's events from a trail bucket
version: 1
severity: low
description: The s3 source of cloudtrail.collect (used by the benchmark).
steps:
  - id: collect
    name: Collect the key's events from the trail bucket
    phase: identification
    action: cloudtrail.collect
    with:
      key: "{ARN}"
      source: s3
      bucket: {BUCKET}
      prefix: {PREFIX}
      since: "{SINCE}"
      until: "{UNTIL}"
"""


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    """moto's server in a child process (its own interpreter and GIL), on 127.0.0.1."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return server, endpoint
        except OSError:
            time.sleep(0.1)
    server.kill()
    sys.exit("moto's server did not start in 30 s")


def trail_file(n: int, records: int) -> tuple[str, bytes, int]:
    """The ``n``-th log file: its key, its gzipped bytes and its JSON's size."""
    rng = random.Random(20261202 + n)  # noqa: S311 - reproducible test data, not secrets
    data = json.dumps(
        {"Records": [make_event(rng, n * records + i) for i in range(records)]},
        separators=(",", ":"),
    ).encode()
    day = 1 + n % 27
    key = (
        f"{PREFIX}/AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/2026/11/{day:02d}/"
        f"{ACCOUNT}_CloudTrail_{REGION}_202611{day:02d}T{n:04d}Z_{n:016x}.json.gz"
    )
    return key, gzip.compress(data, compresslevel=6, mtime=0), len(data)


def seed(endpoint: str, files: int, records: int) -> tuple[int, int]:
    """The trail bucket; the JSON and gzipped bytes put in it."""
    import boto3

    s3 = boto3.client("s3", region_name=REGION, endpoint_url=endpoint)
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    json_bytes = gz_bytes = 0
    for n in range(files):
        key, body, size = trail_file(n, records)
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        json_bytes, gz_bytes = json_bytes + size, gz_bytes + len(body)
    return json_bytes, gz_bytes


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Seconds and peak memory (MiB) of one command; exits if it fails."""
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert child.stderr is not None
    errors = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(command[:3])} failed: {errors.decode(errors='replace')[-2000:]}")
    return elapsed, usage.ru_maxrss / 1024


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        sys.exit(f"{name} is not installed: pip install '.[bench]'")
    return found


def ids_in(lines: bytes) -> set[str]:
    return {json.loads(line)["eventID"] for line in lines.splitlines() if line.strip()}


def kmsir_run(endpoint: str, work: Path) -> tuple[float, float, set[str]]:
    playbook = work / "s3-collect.yaml"
    playbook.write_text(PLAYBOOK)
    env = {**os.environ, **ENV, "AWS_ENDPOINT_URL": endpoint}
    command = [tool("kmsir"), "run", str(playbook), "--yes", "--region", REGION]
    command += ["--incident", "BENCH", "--evidence-dir", str(work / "evidence")]
    seconds, peak = timed(command, env)
    events = next((work / "evidence" / "BENCH").glob("*/artifacts/*/events.jsonl.gz"))
    return seconds, peak, ids_in(gzip.decompress(events.read_bytes()))


def kmsir_scan(target: str, endpoint: str, out: Path) -> tuple[float, float, set[str]]:
    env = {**os.environ, **ENV, "AWS_ENDPOINT_URL": endpoint}
    command = [tool("kmsir"), "cloudtrail", "scan", target, "--key", ARN, "--out", str(out)]
    seconds, peak = timed(command, env)
    return seconds, peak, ids_in(out.read_bytes())


def aws_copy(endpoint: str, folder: Path) -> float:
    command = [tool("aws"), "--endpoint-url", endpoint, "s3", "cp", "--recursive", "--quiet"]
    command += [f"s3://{BUCKET}/{PREFIX}/", str(folder)]
    return timed(command, {**os.environ, **ENV})[0]


def in_process(endpoint: str, latency: float, workers: int) -> tuple[float, int]:
    """The s3 source in process with ``latency`` added to every request: seconds, matches."""

    from kmsir.actions import trail_fetch
    from kmsir.actions.base import NullReporter
    from kmsir.actions.trail_s3 import scan_bucket
    from kmsir.trail.match import KeyMatcher

    factory = slow_clients(endpoint, latency)
    saved, trail_fetch.WORKERS = trail_fetch.WORKERS, workers
    try:
        started = time.perf_counter()
        raw, _ = scan_bucket(
            factory, NullReporter(), BUCKET, PREFIX, None, KeyMatcher.for_key(ARN), None, None
        )
        return time.perf_counter() - started, len(raw)
    finally:
        trail_fetch.WORKERS = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=64, help="trail log files in the bucket")
    parser.add_argument("--records", type=int, default=5000, help="events in each file")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="also time with this")
    parser.add_argument("--record", action="store_true", help="update benchmarks/README.md")
    args = parser.parse_args()
    dummy_environment()
    server, endpoint = start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="kmsir-s3-") as tmp:
            work = Path(tmp)
            json_bytes, gz_bytes = seed(endpoint, args.files, args.records)
            mib, gz_mib = json_bytes / 2**20, gz_bytes / 2**20
            print(
                f"moto server {endpoint}: {args.files} trail files, {mib:,.0f} MiB of JSON, "
                f"{gz_mib:,.1f} MiB gzipped, in s3://{BUCKET}/{PREFIX}/"
            )
            run_s, run_peak, by_run = kmsir_run(endpoint, work)
            scan_s, scan_peak, by_scan = kmsir_scan(
                f"s3://{BUCKET}/{PREFIX}", endpoint, work / "s3.jsonl"
            )
            copy_s = aws_copy(endpoint, work / "copy")
            local_s, _, by_copy = kmsir_scan(str(work / "copy"), endpoint, work / "local.jsonl")
            if not by_run == by_scan == by_copy or not by_run:
                sys.exit(
                    f"MISMATCH: kmsir run found {len(by_run)} events, cloudtrail scan "
                    f"s3:// {len(by_scan)}, aws s3 cp + scan {len(by_copy)}"
                )
            print(f"same {len(by_run):,} events from all three: yes")
            peer = copy_s + local_s
            ratio = peer / scan_s
            rows = (
                ("kmsir run (collect, source: s3)", run_s, f"peak {run_peak:.0f} MiB"),
                ("kmsir cloudtrail scan s3://", scan_s, f"peak {scan_peak:.0f} MiB"),
                ("aws s3 cp --recursive", copy_s, ""),
                ("  + kmsir cloudtrail scan DIR", local_s, ""),
                ("  = the peer", peer, ""),
            )
            for label, seconds, note in rows:
                print(f"{label:<32}: {seconds:7.2f} s {gz_mib / seconds:7.1f} MiB/s gz  {note}")
            reached = "reached" if ratio >= GOAL else "not reached"
            print(f"ratio (peer / cloudtrail scan)  : {ratio:7.2f}x (goal {GOAL:g}x: {reached})")
            print(f"ratio (peer / whole kmsir run)  : {peer / run_s:7.2f}x")
            if args.latency_ms:
                latency_report(endpoint, args.latency_ms, len(by_run))
            if args.record:
                from results import record

                record(
                    "s3 source",
                    kmsir=(
                        f"{scan_s:.2f} s, {scan_peak:.0f} MiB (cloudtrail scan s3://); "
                        f"{run_s:.2f} s (whole kmsir run with that collect, reports included)"
                    ),
                    peer=f"{peer:.2f} s (aws s3 cp {copy_s:.2f} s + scan {local_s:.2f} s)",
                    ratio=f"{ratio:.2f}x aws s3 cp + scan ({peer / run_s:.2f}x for the whole run)",
                    goal=f"{GOAL:g}x: {reached} ({args.files} files, {gz_mib:.0f} MiB gz)",
                )
    finally:
        server.terminate()
        server.wait(timeout=30)


def latency_report(endpoint: str, latency_ms: float, expected: int) -> None:
    from kmsir.actions import trail_fetch

    workers = trail_fetch.WORKERS
    pooled, found = in_process(endpoint, latency_ms / 1000, workers)
    serial, found_serial = in_process(endpoint, latency_ms / 1000, 1)
    if not found == found_serial == expected:
        sys.exit(f"MISMATCH with latency: {found} and {found_serial} events, not {expected}")
    print(
        f"with {latency_ms:g} ms per request, in process: {pooled:.2f} s with {workers} "
        f"GETs at once, {serial:.2f} s one at a time ({serial / pooled:.1f}x)"
    )


if __name__ == "__main__":
    main()

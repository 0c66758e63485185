"""Benchmark: scanning gzipped CloudTrail logs for one key, kmsir vs jq vs zcat alone.

Generates realistic trail log files (compact ``{"Records": [...]}`` JSON, gzipped as
CloudTrail writes them, 5,000 records a file, mixed services, about 1% KMS events that touch
the key), by default 300 MiB of them gzipped (``--gz-mib``; ``--mib`` counts JSON instead),
then times on the same files, in one run:

  (a) ``kmsir cloudtrail scan DIR --key ARN --out FILE``, a whole process: start-up included;
  (b) ``zcat FILES | jq -c --arg id KEY '.Records[] | select(...)'``, the filter a responder
      would write (the key id in resources, requestParameters or responseElements);
  (c) ``zcat FILES > /dev/null`` (one GNU gzip process), decompression alone.

Checks that (a) and (b) found the same events (exit 1 if not), prints MiB/s of decompressed
JSON for each, the ratios against the goals (2x zcat, 20x jq), kmsir's peak memory for the
input and for a quarter of it (memory must stay flat in the input size), and with
``--phases`` where the scanner's CPU time goes, phase by phase, on one core in process.
``--work DIR`` keeps the generated files there for the next run; ``--record`` writes the
figures to ``benchmarks/README.md``'s table.

    python benchmarks/scan_cloudtrail.py [--gz-mib 300] [--work DIR] [--phases] [--record]
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

KEY = "1234abcd-12ab-34cd-56ef-1234567890ab"
ARN = f"arn:aws:kms:eu-west-1:111122223333:key/{KEY}"
JQ_FILTER = (
    ".Records[] | select([.resources[]?.ARN, .requestParameters.keyId?, "
    ".responseElements.keyId?] | map(select(. != null) | tostring | contains($id)) | any)"
)
SERVICES = {
    "s3.amazonaws.com": ["GetObject", "PutObject", "ListObjects", "HeadObject"],
    "ec2.amazonaws.com": ["DescribeInstances", "RunInstances", "DescribeVolumes"],
    "sts.amazonaws.com": ["AssumeRole", "GetCallerIdentity"],
    "iam.amazonaws.com": ["GetRole", "ListRoles", "GetPolicy"],
    "lambda.amazonaws.com": ["Invoke", "GetFunction"],
    "dynamodb.amazonaws.com": ["GetItem", "PutItem", "Query"],
}


def make_event(rng: random.Random, n: int) -> dict[str, Any]:
    service = rng.choice(list(SERVICES))
    role = f"app-{rng.randint(1, 60)}"
    event: dict[str, Any] = {
        "eventVersion": "1.10",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": f"AROA{rng.getrandbits(48):012X}:{role}",
            "arn": f"arn:aws:sts::111122223333:assumed-role/{role}/i-{rng.getrandbits(32):08x}",
            "accountId": "111122223333",
            "accessKeyId": f"ASIA{rng.getrandbits(64):016X}",
            "sessionContext": {
                "attributes": {"creationDate": "2026-11-20T08:00:00Z", "mfaAuthenticated": "false"}
            },
        },
        "eventTime": f"2026-11-{rng.randint(1, 27):02d}T{rng.randint(0, 23):02d}:"
        f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z",
        "eventSource": service,
        "eventName": rng.choice(SERVICES[service]),
        "awsRegion": "eu-west-1",
        "sourceIPAddress": f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        "userAgent": rng.choice(
            [
                "aws-sdk-java/2.25.11 Linux/5.10",
                "Boto3/1.34.70 Python/3.12",
                "aws-cli/2.15.30 Python/3.11.8",
            ]
        ),
        "requestParameters": {"bucketName": "data-lake", "key": f"raw/{n}/{rng.getrandbits(40):x}"},
        "responseElements": None,
        "requestID": str(uuid.UUID(int=rng.getrandbits(128))),
        "eventID": str(uuid.UUID(int=rng.getrandbits(128))),
        "readOnly": True,
        "eventType": "AwsApiCall",
        "managementEvent": False,
        "recipientAccountId": "111122223333",
        "eventCategory": "Data",
        "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256"},
    }
    if rng.random() < 0.01:
        event.update(
            eventSource="kms.amazonaws.com",
            eventName="Decrypt",
            managementEvent=True,
            requestParameters={
                "encryptionAlgorithm": "SYMMETRIC_DEFAULT",
                "encryptionContext": {"aws:s3:arn": "arn:aws:s3:::d"},
            },
            resources=[{"accountId": "111122223333", "type": "AWS::KMS::Key", "ARN": ARN}],
        )
    return event


def _one_file(args: tuple[Path, int]) -> tuple[Path, int, int]:
    """File ``index`` of a generated set: 5,000 records of its own seed (reproducible, and
    independent of the others, so files are made in parallel)."""
    folder, index = args
    rng = random.Random(20261128 * 100_000 + index)  # noqa: S311 - test data, not secrets
    records = [make_event(rng, index * 5000 + i) for i in range(5000)]
    data = json.dumps({"Records": records}, separators=(",", ":")).encode()
    path = folder / f"111122223333_CloudTrail_eu-west-1_20261128T{index:06d}Z.json.gz"
    packed = gzip.compress(data, compresslevel=6, mtime=0)
    path.write_bytes(packed)
    return path, len(data), len(packed)


def generate(folder: Path, mib: int, *, gz: bool = False) -> tuple[list[Path], int]:
    """Trail files under ``folder`` until ``mib`` MiB of JSON (or of gzip with ``gz``); the
    paths and the JSON bytes. A folder generated before with the same figures is reused."""
    stamp = folder / f".generated-{mib}{'gz' if gz else ''}"
    if stamp.exists():
        paths = sorted(folder.glob("*.json.gz"))
        return paths, int(stamp.read_text())
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    paths, total, measured, index = [], 0, 0, 0
    with multiprocessing.Pool() as pool:
        while measured < mib * 2**20:
            batch = [(folder, index + i) for i in range(2 * (os.cpu_count() or 1))]
            for path, size, packed in pool.map(_one_file, batch):
                if measured < mib * 2**20:
                    paths.append(path)
                    total += size
                    measured += packed if gz else size
                else:
                    path.unlink()
            index += len(batch)
    stamp.write_text(str(total))
    return paths, total


def timed(command: str) -> float:
    started = time.perf_counter()
    subprocess.run(["bash", "-c", command], check=True)
    return time.perf_counter() - started


def kmsir_scan(folder: Path, out: Path) -> tuple[float, float]:
    """Seconds and peak memory (MiB, the largest process) of one ``kmsir cloudtrail scan``."""
    kmsir = shutil.which("kmsir", path=str(Path(sys.executable).parent)) or "kmsir"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    elapsed = timed(f"{kmsir} cloudtrail scan {folder} --key {ARN} --out {out} 2>/dev/null")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, max(peak, before) / 1024


GOAL_ZCAT, GOAL_JQ = 2.0, 20.0


def in_process_one_core(folder: Path) -> float:
    """Seconds kmsir's scanner takes on one core, in process (no start-up, no pool)."""
    from kmsir.trail import files
    from kmsir.trail.match import KeyMatcher

    started = time.perf_counter()
    files.scan([folder], KeyMatcher.for_key(ARN), workers=1)
    return time.perf_counter() - started


PHASES = """
import pickle, sys, time
from pathlib import Path
from kmsir.trail import cut, files
from kmsir.trail.match import KeyMatcher
matcher = KeyMatcher.for_key(sys.argv[2])
clock, spent, size = time.process_time, {}, 0
def timed(phase, work, *args):
    started = clock()
    result = work(*args)
    spent[phase] = spent.get(phase, 0.0) + clock() - started
    return result
for path in files.trail_files([Path(sys.argv[1])]):
    data = timed("read", path.read_bytes)
    data = timed("decompress", files._decompress, data)
    size += len(data)
    cut_out = timed("needle search", cut.fast_matches, data, matcher.needles)
    timed("record count", data.count, cut.RECORD_START)
    stats = files.ScanStats()
    kept = timed("decode + match", lambda: files._keep(
        files._decode_all(cut_out), "", matcher, None, None, stats))
    timed("result pickling", pickle.dumps, (kept, stats))
total = sum(spent.values())
for phase, seconds in spent.items():
    print(f"  {phase:<16} {seconds:6.2f} s CPU {seconds / total:6.1%}"
          f" {size / 2**20 / seconds:9,.0f} MiB/s")
print(f"  {'all':<16} {total:6.2f} s CPU         {size / 2**20 / total:9,.0f} MiB/s on one core")
"""


def best_of(times: int, command: str) -> float:
    """The fastest of ``times`` runs of a shell command (the others met a busier machine)."""
    return min(timed(command) for _ in range(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--gz-mib", type=int, default=300, help="MiB of gzipped logs to generate")
    size.add_argument("--mib", type=int, help="MiB of trail JSON to generate instead")
    parser.add_argument("--work", type=Path, help="keep (and reuse) the generated files here")
    parser.add_argument("--repeat", type=int, default=3, help="runs of kmsir and zcat (best)")
    parser.add_argument("--phases", action="store_true", help="the scanner's CPU per phase")
    parser.add_argument("--record", action="store_true", help="write benchmarks/README.md's row")
    args = parser.parse_args()
    for tool in ("zcat", "jq"):
        if shutil.which(tool) is None:
            sys.exit(
                f"{tool} is not installed (Debian: apt-get install {tool.replace('zcat', 'gzip')})"
            )
    amount, gz = (args.mib, False) if args.mib else (args.gz_mib, True)
    with tempfile.TemporaryDirectory(prefix="kmsir-scan-") as tmp:
        work = args.work or Path(tmp)
        paths, total = generate(work / "logs", amount, gz=gz)
        generate(work / "quarter", max(amount // 4, 1), gz=gz)
        mib = total / 2**20
        packed = sum(p.stat().st_size for p in paths) / 2**20
        listing = " ".join(str(p) for p in paths)
        print(f"{len(paths)} trail files: {mib:,.0f} MiB of JSON, {packed:,.0f} MiB gzipped")
        timed(f"cat {listing} > /dev/null")  # every run reads them from the page cache
        _, small_peak = kmsir_scan(work / "quarter", work / "quarter.jsonl")
        runs = [kmsir_scan(work / "logs", work / "kmsir.jsonl") for _ in range(args.repeat)]
        kmsir_time, peak = min(t for t, _ in runs), max(m for _, m in runs)
        zcat_time = best_of(args.repeat, f"zcat {listing} > /dev/null")
        jq_time = timed(f"zcat {listing} | jq -c --arg id {KEY} '{JQ_FILTER}' > {work}/jq.jsonl")
        ours = {json.loads(line)["eventID"] for line in (work / "kmsir.jsonl").open()}
        theirs = {json.loads(line)["eventID"] for line in (work / "jq.jsonl").open()}
        same = ours == theirs and len(ours) == sum(1 for _ in (work / "kmsir.jsonl").open())
        print(
            f"same {len(ours):,} matching events from kmsir and jq: "
            + ("yes" if same else f"NO (kmsir {len(ours):,}, jq {len(theirs):,})")
        )
        for label, seconds in (
            ("kmsir cloudtrail scan", kmsir_time),
            ("zcat | jq", jq_time),
            ("zcat > /dev/null", zcat_time),
        ):
            print(f"{label:<26}: {seconds:7.2f} s  {mib / seconds:8.0f} MiB/s")
        cores = os.cpu_count() or 1
        one_core = in_process_one_core(work / "logs")
        print(
            f"kmsir per core ({cores} cores)  : {mib / kmsir_time / cores:8.0f} MiB/s with "
            f"start-up; {mib / one_core:.0f} MiB/s scanning in process on one core"
        )
        vs_jq, vs_zcat = jq_time / kmsir_time, zcat_time / kmsir_time
        reached = vs_zcat >= GOAL_ZCAT and vs_jq >= GOAL_JQ
        print(f"kmsir vs jq               : {vs_jq:7.1f}x (goal {GOAL_JQ:.0f}x)")
        print(f"kmsir vs zcat alone       : {vs_zcat:7.2f}x (goal {GOAL_ZCAT:.0f}x)")
        print(f"goal                      : {'reached' if reached else 'NOT reached'}")
        print(
            f"kmsir peak memory         : {peak:7.0f} MiB for {mib:,.0f} MiB, "
            f"{small_peak:.0f} MiB for a quarter of it"
        )
        if args.phases:
            print("where the scanner's time goes (one core, in process, no start-up):")
            subprocess.run([sys.executable, "-c", PHASES, str(work / "logs"), ARN], check=True)
        if args.record:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from results import record

            record(
                "cloudtrail scan",
                kmsir=f"{kmsir_time:.2f} s, {peak:.0f} MiB for {packed:,.0f} MiB gzipped "
                f"({mib:,.0f} MiB JSON; {cores} cores, start-up included)",
                peer=f"zcat > /dev/null {zcat_time:.2f} s; zcat | jq {jq_time:.1f} s",
                ratio=f"{vs_zcat:.2f}x zcat, {vs_jq:.1f}x jq",
                goal=f"{GOAL_ZCAT:.0f}x zcat, {GOAL_JQ:.0f}x jq: "
                + ("reached" if reached else "not reached"),
            )
        if not same:
            raise SystemExit(1)


if __name__ == "__main__":
    main()

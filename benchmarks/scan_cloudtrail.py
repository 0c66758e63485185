"""Benchmark: scanning gzipped CloudTrail logs for one key, kmsir vs jq vs zcat alone.

Generates N MiB of realistic trail log files (compact ``{"Records": [...]}`` JSON, gzipped as
CloudTrail writes them, 5,000 records a file, mixed services, about 1% KMS events that touch
the key), then times on the same files, in one run:

  (a) ``kmsir cloudtrail scan DIR --key ARN --out FILE``;
  (b) ``zcat FILES | jq -c --arg id KEY '.Records[] | select(...)'``, the filter a responder
      would write (the key id in resources, requestParameters or responseElements);
  (c) ``zcat FILES > /dev/null``, decompression alone: the floor for any tool reading them.

Prints MiB/s of decompressed JSON for each and the ratios, checks (a) and (b) found the same
events, and prints kmsir's peak memory for the full input and for a quarter of it (memory
must stay flat in the input size).

    python benchmarks/scan_cloudtrail.py [--mib 512]
"""

from __future__ import annotations

import argparse
import gzip
import json
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


def generate(folder: Path, mib: int) -> tuple[list[Path], int]:
    rng = random.Random(20261128)  # noqa: S311 - reproducible test data, not secrets
    folder.mkdir(parents=True)
    paths, total, n = [], 0, 0
    while total < mib * 2**20:
        records = [make_event(rng, n + i) for i in range(5000)]
        n += 5000
        data = json.dumps({"Records": records}, separators=(",", ":")).encode()
        total += len(data)
        path = folder / f"111122223333_CloudTrail_eu-west-1_20261128T{len(paths):06d}Z.json.gz"
        path.write_bytes(gzip.compress(data, compresslevel=6, mtime=0))
        paths.append(path)
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


def in_process_one_core(folder: Path) -> float:
    """Seconds kmsir's scanner takes on one core, in process (no start-up, no pool)."""
    from kmsir.trail import files
    from kmsir.trail.match import KeyMatcher

    started = time.perf_counter()
    files.scan([folder], KeyMatcher.for_key(ARN), workers=1)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=512, help="MiB of trail JSON to generate")
    args = parser.parse_args()
    for tool in ("zcat", "jq"):
        if shutil.which(tool) is None:
            sys.exit(
                f"{tool} is not installed (Debian: apt-get install {tool.replace('zcat', 'gzip')})"
            )
    with tempfile.TemporaryDirectory(prefix="kmsir-scan-") as tmp:
        work = Path(tmp)
        paths, total = generate(work / "logs", args.mib)
        generate(work / "quarter", max(args.mib // 4, 1))
        mib = total / 2**20
        listing = " ".join(str(p) for p in paths)
        print(
            f"{len(paths)} trail files: {mib:,.0f} MiB of JSON, "
            f"{sum(p.stat().st_size for p in paths) / 2**20:,.0f} MiB gzipped"
        )
        _, small_peak = kmsir_scan(work / "quarter", work / "quarter.jsonl")
        kmsir_time, peak = kmsir_scan(work / "logs", work / "kmsir.jsonl")
        jq_time = timed(f"zcat {listing} | jq -c --arg id {KEY} '{JQ_FILTER}' > {work}/jq.jsonl")
        zcat_time = timed(f"zcat {listing} > /dev/null")
        ours = {json.loads(line)["eventID"] for line in (work / "kmsir.jsonl").open()}
        theirs = {json.loads(line)["eventID"] for line in (work / "jq.jsonl").open()}
        if ours != theirs:
            sys.exit(f"MISMATCH: kmsir found {len(ours)} events, jq {len(theirs)}")
        print(f"same {len(ours):,} matching events from kmsir and jq: yes")
        for label, seconds in (
            ("kmsir cloudtrail scan", kmsir_time),
            ("zcat | jq", jq_time),
            ("zcat > /dev/null (floor)", zcat_time),
        ):
            print(f"{label:<26}: {seconds:7.2f} s  {mib / seconds:8.0f} MiB/s")
        cores = os.cpu_count() or 1
        one_core = in_process_one_core(work / "logs")
        print(
            f"kmsir per core ({cores} cores)  : {mib / kmsir_time / cores:8.0f} MiB/s with "
            f"start-up; {mib / one_core:.0f} MiB/s scanning in process on one core"
        )
        print(f"kmsir vs jq               : {jq_time / kmsir_time:7.1f}x")
        print(f"kmsir vs zcat alone       : {zcat_time / kmsir_time:7.2f}x")
        print(
            f"kmsir peak memory         : {peak:7.0f} MiB for {mib:,.0f} MiB, "
            f"{small_peak:.0f} MiB for a quarter of it"
        )


if __name__ == "__main__":
    main()

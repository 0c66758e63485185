"""Benchmark: the report of a bundle that holds 1,000,000 CloudTrail events.

Builds the bundle the ordinary way (once; kept in --work for the next run): trail log files
with N KMS events on one key over a week (an outside principal decrypting at volume in the
last two days, some refusals, a rogue CreateGrant), a playbook that collects them
(``cloudtrail.collect source: files``) and runs ``cloudtrail.findings``, with moto standing in
for STS. Then, in one run, each in its own process:

  (a) ``kmsir report BUNDLE --format html`` (the whole page: findings, chart, timeline);
  (b) ``kmsir report BUNDLE --format md``;
  (c) ``zcat events.jsonl.gz | jq -r '.eventTime[0:13]' | sort | uniq -c``: events per hour,
      the one table a responder would build by hand, a fraction of what the report holds.

Prints wall time and peak memory (the process's largest RSS) of each, the ratios, and whether
the report stays under the limits (20 s, 500 MiB).

    python benchmarks/report_million.py [--events 1000000] [--work DIR]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ACCOUNT = "111122223333"
KEY = "1234abcd-12ab-34cd-56ef-1234567890ab"
ARN = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/{KEY}"
END = datetime(2026, 11, 28, 9, 0, tzinfo=timezone.utc)
PER_FILE = 5000
LIMIT_SECONDS, LIMIT_MIB = 20.0, 500
PLAYBOOK = """\
id: million
title: Report benchmark, 1M events
steps:
  - id: collect
    action: cloudtrail.collect
    with: {{key: "{arn}", source: files, path: "{trail}", since: "{since}", until: "{until}"}}
  - id: findings
    action: cloudtrail.findings
    with: {{events: collect, key: "{arn}", window: 2d, baseline_days: 5}}
"""


def event(rng: random.Random, n: int, total: int) -> dict[str, object]:
    """A KMS event on the key; the outside principal's share grows in the last two days."""
    moment = END - timedelta(seconds=int((1 - n / total) * 7 * 86400))
    late = moment > END - timedelta(days=2)
    outsider = late and rng.random() < 0.3
    account = "444455556666" if outsider else ACCOUNT
    role = "backup-sync" if outsider else f"app-{rng.randint(1, 20)}"
    name = "Decrypt" if rng.random() < 0.8 else "GenerateDataKey"
    record: dict[str, object] = {
        "eventVersion": "1.10",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": f"AROA{len(role):010X}:{role}",
            "arn": f"arn:aws:sts::{account}:assumed-role/{role}/{role}-session",
            "accountId": account,
        },
        "eventTime": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "kms.amazonaws.com",
        "eventName": name,
        "awsRegion": "eu-west-1",
        "sourceIPAddress": "192.0.2.200" if outsider else f"10.20.{rng.randint(0, 9)}.17",
        "userAgent": "Boto3/1.34.70" if outsider else "aws-sdk-java/2.25.11 Linux/5.10",
        "requestParameters": {"encryptionAlgorithm": "SYMMETRIC_DEFAULT", "keyId": ARN},
        "responseElements": None,
        "requestID": str(uuid.UUID(int=rng.getrandbits(128))),
        "eventID": str(uuid.UUID(int=rng.getrandbits(128))),
        "readOnly": True,
        "resources": [{"accountId": ACCOUNT, "type": "AWS::KMS::Key", "ARN": ARN}],
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
    }
    if outsider and rng.random() < 0.01:
        record["errorCode"] = "AccessDeniedException"
    if n == total // 2:
        record.update(
            eventName="CreateGrant",
            readOnly=False,
            requestParameters={
                "keyId": KEY,
                "granteePrincipal": "arn:aws:iam::444455556666:role/backup-sync",
                "operations": ["Decrypt"],
            },
        )
    return record


def generate(folder: Path, total: int) -> None:
    rng = random.Random(20261128)  # noqa: S311 - reproducible test data, not secrets
    folder.mkdir(parents=True)
    for start in range(0, total, PER_FILE):
        records = [event(rng, n, total) for n in range(start, min(start + PER_FILE, total))]
        data = json.dumps({"Records": records}, separators=(",", ":")).encode()
        name = f"{ACCOUNT}_CloudTrail_eu-west-1_20261128T{start // PER_FILE:06d}Z.json.gz"
        (folder / name).write_bytes(gzip.compress(data, compresslevel=1, mtime=0))


def build(work: Path, total: int) -> Path:
    """The bundle, made by running the playbook (moto answers GetCallerIdentity)."""
    import boto3
    from moto import mock_aws

    from kmsir import actions
    from kmsir.aws import ClientFactory
    from kmsir.playbook import model as playbook
    from kmsir.prompts import NoPrompter
    from kmsir.run.engine import Engine, RunOptions

    trail = work / "trail"
    if not trail.exists():
        print(f"generating {total:,} events ...", flush=True)
        generate(trail, total)
    book = work / "million.yaml"
    book.write_text(
        PLAYBOOK.format(
            arn=ARN,
            trail=trail,
            since=(END - timedelta(days=7, hours=1)).isoformat(),
            until=(END + timedelta(hours=1)).isoformat(),
        )
    )
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        os.environ[name] = value
    print("building the bundle (collect + findings) ...", flush=True)
    loaded = playbook.load(book, actions.catalog())
    with mock_aws():
        engine = Engine(
            actions=actions.registry(),
            clients=ClientFactory(session_factory=boto3.Session, region="eu-west-1"),
            prompter=NoPrompter(),
        )
        options = RunOptions(incident_id="BENCH-1M", evidence_dir=work / "evidence", mode="live")
        result = engine.run(loaded, {}, options)
    if result.status != "succeeded":
        raise SystemExit(f"building the bundle failed: {result.error}")
    return result.bundle


def measured(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of ``command`` run in a fresh process of its own."""
    probe = (
        "import resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *command], capture_output=True, text=True, check=True
    ).stdout.split()
    return float(out[0]), int(out[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, help="keep the generated bundle here")
    args = parser.parse_args()
    for tool in ("zcat", "jq", "sort", "uniq"):
        if shutil.which(tool) is None:
            raise SystemExit(f"needs {tool} on PATH")
    work = args.work or Path(tempfile.mkdtemp(prefix="kmsir-report-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    found = sorted((work / "evidence" / "BENCH-1M").glob("*/manifest.json"))
    bundle = found[-1].parent if found else build(work, args.events)
    events = next(bundle.glob("artifacts/*-collect/events.jsonl.gz"))
    with gzip.open(events) as lines:
        count = sum(1 for _ in lines)
    print(f"bundle {bundle}: {count:,} events, {events.stat().st_size / 2**20:.0f} MiB gzipped")
    kmsir = shutil.which("kmsir", path=str(Path(sys.executable).parent)) or "kmsir"
    out = work / "out"
    out.mkdir(exist_ok=True)
    results = {}
    for fmt in ("html", "md"):
        command = [kmsir, "report", str(bundle), "--format", fmt, "--out", str(out / f"r.{fmt}")]
        results[fmt] = measured(command)
    jq = f"zcat {events} | jq -r '.eventTime[0:13]' | sort | uniq -c > {out / 'hours.txt'}"
    started = time.perf_counter()
    subprocess.run(["bash", "-c", jq], check=True)
    results["jq"] = (time.perf_counter() - started, float("nan"))
    print(f"\n{'':38} {'seconds':>8} {'peak MiB':>9}")
    names = {
        "html": "kmsir report --format html",
        "md": "kmsir report --format md",
        "jq": "zcat | jq | sort | uniq -c (per hour)",
    }
    for key, (seconds, mib) in results.items():
        print(f"{names[key]:38} {seconds:8.2f} {mib:9.0f}")
    ratio = results["jq"][0] / results["html"][0]
    print(f"\nkmsir html report vs the jq per-hour table: {ratio:.1f}x faster")
    ok = all(s < LIMIT_SECONDS and m < LIMIT_MIB for k, (s, m) in results.items() if k != "jq")
    print(f"limits ({LIMIT_SECONDS:.0f} s, {LIMIT_MIB} MiB): {'met' if ok else 'MISSED'}")
    print(f"HTML report: {out / 'r.html'} ({(out / 'r.html').stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()

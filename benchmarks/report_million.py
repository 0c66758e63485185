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

The collect and findings steps leave compact summaries beside the events
(``events.summary.json``, ``findings.events.json``): the report reads those, not the million
events. ``--no-summary`` measures a copy of the bundle without them (the report then streams
the events, as for bundles written before summaries existed); both reports must be the same.

Prints wall time and peak memory (the process's largest RSS) of each, the ratios, whether the
report meets the goal (2 s, 100 MiB: issue 22), and checks that the report counted the same
events per hour as jq (exit 1 if not). ``--phases`` also times the report's phases in one
process (start-up imports, reading the bundle, the template's compilation, rendering).
``--record`` writes the figures into ``benchmarks/README.md``.

    python benchmarks/report_million.py [--events 1000000] [--work DIR] [--no-summary]
        [--phases] [--record]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
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
GOAL_SECONDS, GOAL_MIB = 2.0, 100
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


def without_summaries(bundle: Path, work: Path) -> Path:
    """A copy of ``bundle`` without the summaries (as a bundle written before them)."""
    copy = work / "no-summary" / bundle.name
    if not copy.exists():
        shutil.copytree(bundle, copy)
        for name in ("events.summary.json", "findings.events.json"):
            for path in copy.glob(f"artifacts/*/{name}"):
                path.unlink()
    return copy


PHASES = """\
import sys, time
t0 = time.perf_counter()
from pathlib import Path
from kmsir import cli, report
from kmsir.evidence.manifest import Bundle
from kmsir.playbook import templating
from kmsir.report import context as ctx
t1 = time.perf_counter()
bundle = Bundle.open(Path(sys.argv[1])); bundle.view
t2 = time.perf_counter()
context = ctx.build_context(bundle)
t3 = time.perf_counter()
source = (report.resources.templates_dir() / "report.html.j2").read_text()
env = templating.report_environment(html=True, filters=tuple(report.FILTERS.items()))
template = templating._compile_report(source, env)
t4 = time.perf_counter()
text = report.render(Path(sys.argv[1]), fmt="html")
t5 = time.perf_counter()
for name, a, b in [
    ("imports (kmsir.cli, report, jinja2)", t0, t1),
    ("open the bundle, fold its journal", t1, t2),
    ("build_context (trail view, findings, timeline, chart)", t2, t3),
    ("compile the HTML template (jinja2)", t3, t4),
    ("a whole render again, the template compiled", t4, t5),
]:
    print(f"  {name:55} {b - a:6.3f} s")
"""


def same_hours(html: str, hours_file: Path) -> bool:
    """The report's chart counts per hour (its bars' titles) equal jq's table."""
    charted: dict[str, int] = {}
    for hour, n in re.findall(r"<title>(\d{4}-\d\d-\d\d \d\d):00 UTC: (\d+) \w+</title>", html):
        key = hour.replace(" ", "T")
        charted[key] = charted.get(key, 0) + int(n)
    table = {}
    for row in hours_file.read_text().splitlines():
        n, hour = row.split()
        table[hour] = int(n)
    return bool(table) and charted == table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, help="keep the generated bundle here")
    parser.add_argument(
        "--no-summary",
        action="store_true",
        help="also time the report of the bundle without its summaries",
    )
    parser.add_argument("--phases", action="store_true", help="time the report's phases")
    parser.add_argument("--record", action="store_true", help="write the figures to README.md")
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
    if args.no_summary:
        old = without_summaries(bundle, work)
        for fmt in ("html", "md"):
            target = out / f"streamed.{fmt}"
            command = [kmsir, "report", str(old), "--format", fmt, "--out", str(target)]
            results[f"{fmt}-streamed"] = measured(command)
            if target.read_text() != (out / f"r.{fmt}").read_text().replace(str(bundle), str(old)):
                raise SystemExit(f"the {fmt} report without summaries differs from the one with")
    jq = f"zcat {events} | jq -r '.eventTime[0:13]' | sort | uniq -c > {out / 'hours.txt'}"
    started = time.perf_counter()
    subprocess.run(["bash", "-c", jq], check=True)
    results["jq"] = (time.perf_counter() - started, float("nan"))
    print(f"\n{'':38} {'seconds':>8} {'peak MiB':>9}")
    names = {
        "html": "kmsir report --format html",
        "md": "kmsir report --format md",
        "html-streamed": "  the same, no summary (html)",
        "md-streamed": "  the same, no summary (md)",
        "jq": "zcat | jq | sort | uniq -c (per hour)",
    }
    for key, (seconds, mib) in results.items():
        print(f"{names[key]:38} {seconds:8.2f} {'-' if mib != mib else f'{mib:.0f}':>9}")
    same = same_hours((out / "r.html").read_text(), out / "hours.txt")
    print(f"\nevents per hour, kmsir's chart vs jq: {'the same' if same else 'DIFFERENT'}")
    ratio = results["jq"][0] / results["html"][0]
    print(f"kmsir html report vs the jq per-hour table: {ratio:.1f}x faster")
    ok = all(
        s <= GOAL_SECONDS and m <= GOAL_MIB for k, (s, m) in results.items() if k in ("html", "md")
    )
    print(f"goal ({GOAL_SECONDS:.0f} s, {GOAL_MIB} MiB): {'reached' if ok else 'NOT reached'}")
    print(f"HTML report: {out / 'r.html'} ({(out / 'r.html').stat().st_size / 1024:.0f} KiB)")
    if args.phases:
        print("\nphases of one report (html), in one process:")
        subprocess.run([sys.executable, "-c", PHASES, str(bundle)], check=True)
    if args.record:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results import record

        html_s, html_mib = results["html"]
        record(
            f"report of {count:,} events",
            kmsir=f"{html_s:.2f} s, {html_mib:.0f} MiB (html); "
            f"{results['md'][0]:.2f} s, {results['md'][1]:.0f} MiB (md)",
            peer=f"{results['jq'][0]:.2f} s (zcat | jq | sort | uniq -c, per hour)",
            ratio=f"{ratio:.1f}x jq",
            goal=f"<= {GOAL_SECONDS:.0f} s, <= {GOAL_MIB} MiB: "
            + ("reached" if ok else "not reached"),
        )
    if not same:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

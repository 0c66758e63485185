"""Benchmark: what validating the logs against their digests adds to a files scan.

Generates gzipped trail log files in CloudTrail's layout
(``AWSLogs/ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/``; the events of ``scan_cloudtrail.py``'s
generator, 5,000 a file, about 1% of them the key's, their times inside their file's hour),
by default 300 MiB of them gzipped (``--gz-mib``), ``--files-per-hour`` files an hour, and
for every hour a digest file as CloudTrail writes one (``CloudTrail-Digest/...``: each log
file's SHA-256, chained to the previous digest, signed with SHA256withRSA by a key made for
the run). A local copy has no S3 metadata: the signatures go in a ``signatures.json`` beside
the digests, and the public key in ``public-keys.json`` beside the copy. Then times, on the
same files, in one run, best of ``--repeat`` each (interleaved, so both meet the same
machine):

  (a) ``kmsir cloudtrail scan DIR --key ARN --out FILE``;
  (b) the same with ``--verify-logs --public-keys public-keys.json``: one read of each file
      for the scan and the hashes, the digests checked after.

Checks that (a) and (b) found the same events and that (b) validated every log file (exit 1
if not), prints the overhead (b)/(a) against the goal (at most 1.20). ``--work DIR`` keeps
the generated files for the next run; ``--record`` writes the figures to
``benchmarks/README.md``'s table.

    python benchmarks/trail_integrity.py [--gz-mib 300] [--files-per-hour 4] [--repeat 3]
        [--work DIR] [--record]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scan_cloudtrail import ARN, make_event  # noqa: E402 - the script's folder, just added

ACCOUNT = "111122223333"
REGION = "eu-west-1"
TRAIL = "management-events"
BUCKET = "bench-trail"
RECORDS = 5000
#: The first hour of the generated logs.
FIRST_HOUR = datetime(2026, 11, 20, tzinfo=timezone.utc)
#: The most (b) may take over (a).
GOAL = 1.20


def log_key(index: int, per_hour: int) -> tuple[str, datetime]:
    """Log file ``index``'s S3 key (relative to the copy's root) and the start of its hour."""
    hour = FIRST_HOUR + timedelta(hours=index // per_hour)
    minute = (index % per_hour) * (60 // max(per_hour, 1)) % 60
    moment = hour + timedelta(minutes=minute)
    name = f"{ACCOUNT}_CloudTrail_{REGION}_{moment:%Y%m%dT%H%M}Z_{index:016x}.json.gz"
    return f"AWSLogs/{ACCOUNT}/CloudTrail/{REGION}/{moment:%Y/%m/%d}/{name}", hour


def _one_file(args: tuple[Path, int, int]) -> dict[str, Any]:
    """Log file ``index``: its events (of its own seed, made in parallel with the others) all
    in its hour; written, and described for its digest."""
    import gzip

    from kmsir.trail.digest_format import iso, log_hash

    root, index, per_hour = args
    key, hour = log_key(index, per_hour)
    rng = random.Random(20261202 * 100_000 + index)  # noqa: S311 - test data, not secrets
    records = [make_event(rng, index * RECORDS + i) for i in range(RECORDS)]
    seconds = sorted(rng.randrange(3600) for _ in records)
    for record, second in zip(records, seconds, strict=True):
        record["eventTime"] = iso(hour + timedelta(seconds=second))
    data = json.dumps({"Records": records}, separators=(",", ":")).encode()
    packed = gzip.compress(data, compresslevel=6, mtime=0)
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(packed)
    return {
        "key": key,
        "hour": hour.isoformat(),
        "sha256": log_hash(data),
        "oldest": records[0]["eventTime"],
        "newest": records[-1]["eventTime"],
        "json": len(data),
        "gz": len(packed),
    }


def write_digests(root: Path, logs: list[dict[str, Any]]) -> int:
    """One digest an hour over ``logs``, chained and signed as CloudTrail does, the signatures
    in ``signatures.json`` beside them, the public key in ``public-keys.json`` beside ``root``
    (not in it: it is no trail file); how many digests."""
    import gzip
    import hashlib

    from cryptography.hazmat.primitives.asymmetric import rsa

    from kmsir.trail import digest_format as fmt

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = fmt.public_der(private)
    key_id = fmt.fingerprint(der)
    by_hour: dict[str, list[dict[str, Any]]] = {}
    for log in logs:
        by_hour.setdefault(log["hour"], []).append(log)
    previous: tuple[str, str, str] | None = None  # its key, hash and signature
    signatures: dict[Path, dict[str, str]] = {}
    for hour_text in sorted(by_hour):
        start = datetime.fromisoformat(hour_text)
        end = start + timedelta(hours=1)
        key = fmt.digest_key(ACCOUNT, REGION, TRAIL, REGION, end)
        listed = by_hour[hour_text]
        digest = {
            "awsAccountId": ACCOUNT,
            "digestStartTime": fmt.iso(start),
            "digestEndTime": fmt.iso(end),
            "digestS3Bucket": BUCKET,
            "digestS3Object": key,
            "digestPublicKeyFingerprint": key_id,
            "digestSignatureAlgorithm": fmt.SIGNATURE_ALGORITHM,
            "newestEventTime": max(log["newest"] for log in listed),
            "oldestEventTime": min(log["oldest"] for log in listed),
            "previousDigestS3Bucket": BUCKET if previous else None,
            "previousDigestS3Object": previous[0] if previous else None,
            "previousDigestHashValue": previous[1] if previous else None,
            "previousDigestHashAlgorithm": "SHA-256" if previous else None,
            "previousDigestSignature": previous[2] if previous else None,
            "logFiles": [
                {
                    "s3Bucket": BUCKET,
                    "s3Object": log["key"],
                    "hashValue": log["sha256"],
                    "hashAlgorithm": "SHA-256",
                    "newestEventTime": log["newest"],
                    "oldestEventTime": log["oldest"],
                }
                for log in listed
            ],
        }
        uncompressed = json.dumps(digest, separators=(",", ":")).encode()
        signature = fmt.sign(private, digest, uncompressed)
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gzip.compress(uncompressed, mtime=0))
        signatures.setdefault(path.parent, {})[path.name] = signature
        previous = (key, hashlib.sha256(uncompressed).hexdigest(), signature)
    for folder, signed in signatures.items():
        (folder / "signatures.json").write_text(json.dumps(signed, indent=1) + "\n")
    public = fmt.PublicKey(key_id, der, REGION, fmt.iso(FIRST_HOUR - timedelta(days=1)), None)
    (root.parent / "public-keys.json").write_text(json.dumps([public.to_json()], indent=1) + "\n")
    return len(by_hour)


def generate(root: Path, gz_mib: int, per_hour: int) -> tuple[int, int, int, int]:
    """Log files and digests under ``root`` until ``gz_mib`` MiB of gzipped logs: files,
    digests, JSON bytes, gzipped bytes. A folder generated before with the same figures is
    reused."""
    stamp = root / f".generated-{gz_mib}-{per_hour}"
    if stamp.exists():
        return tuple(json.loads(stamp.read_text()))  # type: ignore[return-value]
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    logs: list[dict[str, Any]] = []
    packed = index = 0
    with multiprocessing.Pool() as pool:
        while packed < gz_mib * 2**20:
            batch = [(root, index + i, per_hour) for i in range(2 * (os.cpu_count() or 1))]
            for log in pool.map(_one_file, batch):
                if packed < gz_mib * 2**20:
                    logs.append(log)
                    packed += log["gz"]
                else:
                    (root / log["key"]).unlink()
            index += len(batch)
    digests = write_digests(root, logs)
    figures = [len(logs), digests, sum(log["json"] for log in logs), packed]
    stamp.write_text(json.dumps(figures))
    return figures[0], figures[1], figures[2], figures[3]


def kmsir_scan(root: Path, out: Path, *verify: str) -> tuple[float, str]:
    """Seconds and stderr of one ``kmsir cloudtrail scan`` (a whole process, start-up
    included); exits if it fails."""
    kmsir = shutil.which("kmsir", path=str(Path(sys.executable).parent)) or "kmsir"
    command = [kmsir, "cloudtrail", "scan", str(root), "--key", ARN, "--out", str(out), *verify]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[1:4])} ... failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed, done.stderr


def event_ids(path: Path) -> list[str]:
    with path.open() as lines:
        return [json.loads(line)["eventID"] for line in lines if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gz-mib", type=int, default=300, help="MiB of gzipped logs to make")
    parser.add_argument("--files-per-hour", type=int, default=4, help="log files an hour")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each (the best counts)")
    parser.add_argument("--work", type=Path, help="keep (and reuse) the generated files here")
    parser.add_argument("--record", action="store_true", help="write benchmarks/README.md's row")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kmsir-integrity-") as tmp:
        work = args.work or Path(tmp)
        root = work / "trail"
        files, digests, json_bytes, gz_bytes = generate(root, args.gz_mib, args.files_per_hour)
        mib, gz_mib = json_bytes / 2**20, gz_bytes / 2**20
        print(
            f"{files} trail files ({mib:,.0f} MiB of JSON, {gz_mib:,.0f} MiB gzipped), "
            f"{digests} signed digests"
        )
        subprocess.run(["bash", "-c", f"cat $(find {root} -type f) > /dev/null"], check=True)
        keys = work / "public-keys.json"
        check = work / "integrity.json"
        plain: list[float] = []
        verified: list[float] = []
        for _ in range(max(args.repeat, 1)):
            plain.append(kmsir_scan(root, work / "plain.jsonl")[0])
            seconds, _ = kmsir_scan(
                root,
                work / "verified.jsonl",
                "--verify-logs",
                "--public-keys",
                str(keys),
                "--integrity-out",
                str(check),
            )
            verified.append(seconds)
        scan_s, verify_s = min(plain), min(verified)
        ours, theirs = event_ids(work / "plain.jsonl"), event_ids(work / "verified.jsonl")
        same = ours == theirs and bool(ours)
        result = json.loads(check.read_text())
        counts = result.get("counts", {})
        all_valid = counts == {"validated": files} and not result.get("tampering")
        print(
            f"same {len(ours):,} matching events with and without --verify-logs: "
            + ("yes" if same else f"NO ({len(ours):,} vs {len(theirs):,})")
        )
        print(
            f"every log file validated     : {'yes' if all_valid else 'NO'} "
            f"({', '.join(f'{n} {v}' for v, n in sorted(counts.items())) or 'nothing checked'})"
        )
        ratio = verify_s / scan_s
        reached = "reached" if ratio <= GOAL else "NOT reached"
        for label, seconds in (("scan", scan_s), ("scan --verify-logs", verify_s)):
            print(f"{label:<29}: {seconds:7.2f} s  {mib / seconds:8.0f} MiB/s")
        print(f"overhead (b)/(a)             : {ratio:7.2f}x (goal <= {GOAL:.2f}x: {reached})")
        if args.record:
            from results import record

            record(
                "trail integrity",
                kmsir=f"{verify_s:.2f} s (cloudtrail scan --verify-logs, {files} files, "
                f"{digests} digests, {gz_mib:,.0f} MiB gzipped)",
                peer=f"{scan_s:.2f} s (cloudtrail scan alone)",
                ratio=f"{ratio:.2f}x the scan alone",
                goal=f"<= {GOAL:.2f}x: {reached.lower()}",
            )
        if not (same and all_valid):
            raise SystemExit(1)


if __name__ == "__main__":
    main()

"""Benchmark: the posture review of N keys, concurrent vs. one call at a time.

Starts the sandbox's moto as a loopback server (127.0.0.1 only, dummy credentials) holding
N keys (each with its key policy, 2 grants, an alias and 2 tags; rotation on for half), a
few buckets, volumes, secrets and parameters, and a trail. Then, in one run, it reviews the
account with the ``kms-posture-review`` playbook (``kms.audit`` with ``all: true``) in
process, with 30 ms added to every API call (a botocore ``before-send`` hook, standing in for
a real network's round trip):

  (a) as kmsir runs it: the keys read by a thread pool and the checks run concurrently,
      each call paced to its KMS quota;
  (b) one call at a time: every pool of the review given a single worker.

It checks that both reviews judged the same (every check's status and resources), and
prints both wall times, the calls made and the speed-up.

    python benchmarks/audit_many_keys.py [--keys 200] [--latency-ms 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# the loopback server and dummy credentials of the snapshot benchmark (run as scripts, the
# benchmarks import each other from this folder)
from snapshot_many_keys import dummy_environment, start_server

REPO = Path(__file__).resolve().parent.parent
PLAYBOOK = REPO / "playbooks" / "kms-posture-review.yaml"
REGION = "eu-west-1"


def seed(endpoint: str, count: int) -> None:
    import boto3

    def client(service: str) -> Any:
        return boto3.client(service, region_name=REGION, endpoint_url=endpoint)

    kms = client("kms")
    for n in range(count):
        key_id = kms.create_key(Description=f"benchmark key {n}")["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName=f"alias/bench-{n:04d}", TargetKeyId=key_id)
        for g, account in enumerate(("123456789012", "444455556666")):
            kms.create_grant(
                KeyId=key_id,
                Name=f"g{g}",
                Operations=["Decrypt", "Encrypt"],
                GranteePrincipal=f"arn:aws:iam::{account}:role/app-{g}",
            )
        kms.tag_resource(
            KeyId=key_id,
            Tags=[
                {"TagKey": "owner", "TagValue": f"team-{n % 7}"},
                {"TagKey": "env", "TagValue": "prod"},
            ],
        )
        if n % 2:
            kms.enable_key_rotation(KeyId=key_id)
    s3, ec2 = client("s3"), client("ec2")
    for n in range(5):
        s3.create_bucket(
            Bucket=f"bench-bucket-{n}", CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        ec2.create_volume(AvailabilityZone=f"{REGION}a", Size=8, Encrypted=bool(n % 2))
        client("secretsmanager").create_secret(Name=f"bench-secret-{n}", SecretString="x")
        client("ssm").put_parameter(Name=f"/bench/p{n}", Value="x", Type="SecureString")
    s3.create_bucket(Bucket="bench-trail", CreateBucketConfiguration={"LocationConstraint": REGION})
    client("cloudtrail").create_trail(
        Name="org", S3BucketName="bench-trail", IsMultiRegionTrail=True
    )


def review(
    endpoint: str, latency: float, serial: bool, workdir: Path
) -> tuple[float, int, dict[str, Any]]:
    """The posture review in process with ``latency`` added to each call; ``serial``: every
    pool of the review has one worker. Returns the wall time, the calls made and the review."""
    import boto3

    from kmsir import actions
    from kmsir.aws import ClientFactory
    from kmsir.playbook import model as playbook
    from kmsir.prompts import AutoApprovePrompter, NoPrompter
    from kmsir.run import launch
    from kmsir.run.engine import Engine, RunOptions

    calls = 0
    lock = threading.Lock()

    def slow(**_: Any) -> None:
        nonlocal calls
        with lock:
            calls += 1
        time.sleep(latency)

    class SlowNetwork(ClientFactory):
        def _install_hooks(self, client: Any) -> None:
            super()._install_hooks(client)
            client.meta.events.register("before-send", slow)

    factory = SlowNetwork(
        session_factory=lambda: boto3.Session(region_name=REGION),
        region=REGION,
        endpoint_url=endpoint,
    )
    loaded = playbook.load(PLAYBOOK, actions.catalog())
    prompter = AutoApprovePrompter(NoPrompter())
    engine = Engine(actions=actions.registry(), clients=factory, prompter=prompter)
    inputs = launch.run_inputs(loaded, {}, prompter, None)
    label = "serial" if serial else "concurrent"
    options = RunOptions(incident_id=f"AUDIT-{label}", evidence_dir=workdir, mode="live", yes=True)
    saved = _workers(1 if serial else None)
    try:
        started = time.perf_counter()
        result = engine.run(loaded, inputs, options)
        elapsed = time.perf_counter() - started
    finally:
        _workers(None, saved)
    if result.status != "succeeded":
        sys.exit(f"kmsir failed: {result.error}")
    bundle = result.bundle
    posture = next(bundle.glob("artifacts/*/posture.json"))
    return elapsed, calls, json.loads(posture.read_text())


def _workers(value: int | None, restore: dict[Any, int] | None = None) -> dict[Any, int]:
    """Set every ``WORKERS`` of the review's modules to ``value`` (or restore them)."""
    import importlib
    import pkgutil

    import kmsir.actions.audit as package

    modules = [package] + [
        importlib.import_module(f"{package.__name__}.{m.name}")
        for m in pkgutil.iter_modules(package.__path__)
    ]
    saved: dict[Any, int] = {}
    for module in modules:
        if isinstance(getattr(module, "WORKERS", None), int):
            saved[module] = module.WORKERS
            if restore is not None:
                module.WORKERS = restore[module]
            elif value is not None:
                module.WORKERS = value
    return saved


def _verdicts(posture: dict[str, Any]) -> list[tuple[str, str, tuple[str, ...]]]:
    return sorted(
        (c["id"], c["status"], tuple(c["resources"]))
        for c in posture["checks"]
        if c["practice"] not in (9, 10)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    args = parser.parse_args()
    dummy_environment()
    server, endpoint = start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="kmsir-bench-") as tmp:
            workdir = Path(tmp)
            seed(endpoint, args.keys)
            print(
                f"moto server {endpoint}: {args.keys} keys (policy, 2 grants, alias, 2 tags), "
                f"5 buckets, volumes, secrets, parameters, a trail; {args.latency_ms:g} ms per call"
            )
            latency = args.latency_ms / 1000
            fast, fast_calls, fast_review = review(endpoint, latency, False, workdir)
            slow, slow_calls, slow_review = review(endpoint, latency, True, workdir)
            if _verdicts(fast_review) != _verdicts(slow_review):
                sys.exit("MISMATCH: the concurrent and the serial review judged differently")
            checks = len(fast_review["checks"])
            print(
                f"kms.audit all: true, concurrent  : {fast:8.2f} s "
                f"({fast_calls} calls, {checks} check entries)"
            )
            print(f"kms.audit all: true, one at a time: {slow:8.2f} s ({slow_calls} calls)")
            print("same verdicts from both: yes")
            print(f"speed-up (one at a time / concurrent): {slow / fast:8.1f}x")
    finally:
        server.stop()


if __name__ == "__main__":
    main()

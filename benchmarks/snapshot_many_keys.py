"""Benchmark: snapshot N keys with kmsir vs. the AWS CLI loop a responder would write.

Starts the sandbox's moto as a loopback server (127.0.0.1 only, dummy credentials) with N keys,
each with a key policy, 3 grants, an alias and 2 tags. Then, in one run:

  (a) ``kmsir run benchmarks/snapshot-all.yaml`` (kms.snapshot with ``all: true``), the way a
      responder runs it, pointed at the server with AWS_ENDPOINT_URL;
  (b) the shell loop a responder would otherwise write: ``aws kms list-keys``, then per key
      ``describe-key``, ``get-key-policy``, ``list-grants``, ``list-aliases``,
      ``list-resource-tags`` and ``get-key-rotation-status``, each output saved to a file.

It checks that both produced the same key policies and grant ids, prints both wall times and
the ratio, then times kmsir's snapshot in process with 30 ms added to every API call (a
botocore ``before-send`` hook), with its thread pool and with one worker, to show what the
concurrency buys on a real network. Needs the AWS CLI: ``pip install '.[bench]'``.

    python benchmarks/snapshot_many_keys.py [--keys 100] [--latency-ms 30]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PLAYBOOK = HERE / "snapshot-all.yaml"
REGION = "eu-west-1"
ENV = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7BENCHMK",
    "AWS_SECRET_ACCESS_KEY": "kmsir-benchmark-dummy",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


def dummy_environment() -> None:
    """This process's AWS settings: the benchmark's dummy credentials, no profile, no
    endpoint or session token of the machine's (nothing can reach a real account)."""
    os.environ.update(ENV)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        os.environ.pop(name, None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server() -> tuple[Any, str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per request
    from kmsir.sandbox import lookup, shim

    shim.install()  # the server runs in this process: the sandbox's fidelity applies
    lookup.install()
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def seed(endpoint: str, count: int) -> list[str]:
    import boto3

    kms = boto3.client("kms", region_name=REGION, endpoint_url=endpoint)
    ids = []
    for n in range(count):
        key_id = kms.create_key(Description=f"benchmark key {n}")["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName=f"alias/bench-{n:04d}", TargetKeyId=key_id)
        for g, account in enumerate(("123456789012", "123456789012", "444455556666")):
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
        ids.append(key_id)
    return ids


def run_kmsir(endpoint: str, workdir: Path) -> tuple[float, Path]:
    kmsir = shutil.which("kmsir", path=str(Path(sys.executable).parent)) or "kmsir"
    env = {**os.environ, **ENV, "AWS_ENDPOINT_URL": endpoint}
    started = time.perf_counter()
    subprocess.run(
        [
            kmsir,
            "run",
            str(PLAYBOOK),
            "--yes",
            "--region",
            REGION,
            "--incident",
            "BENCH",
            "--evidence-dir",
            str(workdir / "evidence"),
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    # the run's bundle, not the incident's lock file beside it
    bundle = next(p for p in (workdir / "evidence" / "BENCH").iterdir() if p.is_dir())
    return elapsed, bundle


def run_aws_cli(endpoint: str, workdir: Path) -> float:
    aws = shutil.which("aws", path=str(Path(sys.executable).parent)) or shutil.which("aws")
    if aws is None:
        sys.exit("the AWS CLI is not installed: pip install '.[bench]'")
    env = {**os.environ, **ENV}
    out = workdir / "cli"
    out.mkdir()

    def aws_kms(*args: str) -> str:
        result = subprocess.run(
            [aws, "--endpoint-url", endpoint, "--output", "json", "kms", *args],
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout

    started = time.perf_counter()
    keys = [k["KeyId"] for k in json.loads(aws_kms("list-keys"))["Keys"]]
    for key_id in keys:
        folder = out / key_id
        folder.mkdir()
        for name, args in (
            ("describe-key", ["describe-key", "--key-id", key_id]),
            ("policy", ["get-key-policy", "--key-id", key_id, "--policy-name", "default"]),
            ("grants", ["list-grants", "--key-id", key_id]),
            ("aliases", ["list-aliases", "--key-id", key_id]),
            ("tags", ["list-resource-tags", "--key-id", key_id]),
            ("rotation", ["get-key-rotation-status", "--key-id", key_id]),
        ):
            (folder / f"{name}.json").write_text(aws_kms(*args))
    return time.perf_counter() - started


def compare(bundle: Path, cli: Path, keys: list[str]) -> None:
    artifacts = bundle / "artifacts"
    step = next(artifacts.iterdir())
    for key_id in keys:
        ours = step / key_id
        policy = json.loads(json.loads((ours / "policy-default.json").read_text())["Policy"])
        theirs = json.loads(json.loads((cli / key_id / "policy.json").read_text())["Policy"])
        if policy != theirs:
            sys.exit(f"MISMATCH: key policy of {key_id}")
        grants = {g["GrantId"] for g in json.loads((ours / "grants.json").read_text())["Grants"]}
        cli_grants = {
            g["GrantId"] for g in json.loads((cli / key_id / "grants.json").read_text())["Grants"]
        }
        if grants != cli_grants or len(grants) != 3:
            sys.exit(f"MISMATCH: grants of {key_id}: {sorted(grants)} vs {sorted(cli_grants)}")


def in_process(endpoint: str, latency: float, workers: int, workdir: Path) -> float:
    """kmsir's snapshot of every key, in process, with ``latency`` added to each API call."""
    import boto3

    from kmsir import actions
    from kmsir.actions import kms_snapshot
    from kmsir.aws import ClientFactory
    from kmsir.playbook import model as playbook
    from kmsir.prompts import AutoApprovePrompter, NoPrompter
    from kmsir.run.engine import Engine, RunOptions

    class SlowNetwork(ClientFactory):
        def _install_hooks(self, client: Any) -> None:
            super()._install_hooks(client)
            client.meta.events.register("before-send", lambda **_: time.sleep(latency))

    factory = SlowNetwork(
        session_factory=lambda: boto3.Session(region_name=REGION),
        region=REGION,
        endpoint_url=endpoint,
    )
    loaded = playbook.load(PLAYBOOK, actions.catalog())
    engine = Engine(
        actions=actions.registry(), clients=factory, prompter=AutoApprovePrompter(NoPrompter())
    )
    options = RunOptions(
        incident_id=f"LAT-{workers}", evidence_dir=workdir / "latency", mode="live", yes=True
    )
    saved, kms_snapshot.WORKERS = kms_snapshot.WORKERS, workers
    try:
        started = time.perf_counter()
        result = engine.run(loaded, {}, options)
        elapsed = time.perf_counter() - started
    finally:
        kms_snapshot.WORKERS = saved
    if result.status != "succeeded":
        sys.exit(f"kmsir failed: {result.error}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    args = parser.parse_args()
    dummy_environment()
    server, endpoint = start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="kmsir-bench-") as tmp:
            workdir = Path(tmp)
            keys = seed(endpoint, args.keys)
            print(
                f"moto server {endpoint}: {len(keys)} keys, each with a policy, 3 grants, "
                "an alias and 2 tags"
            )
            kmsir_time, bundle = run_kmsir(endpoint, workdir)
            print(f"kmsir run (kms.snapshot all: true) : {kmsir_time:8.2f} s")
            cli_time = run_aws_cli(endpoint, workdir)
            print(f"AWS CLI loop ({1 + 6 * len(keys)} commands)".ljust(35) + f": {cli_time:8.2f} s")
            compare(bundle, workdir / "cli", keys)
            print("same key policies and grant ids from both: yes")
            print(f"ratio (AWS CLI / kmsir)            : {cli_time / kmsir_time:8.1f}x")
            latency = args.latency_ms / 1000
            concurrent = in_process(endpoint, latency, kms_snapshot_workers(), workdir)
            serial = in_process(endpoint, latency, 1, workdir)
            print(
                f"with {args.latency_ms:g} ms per call, kmsir in process: "
                f"{concurrent:.2f} s with {kms_snapshot_workers()} workers, "
                f"{serial:.2f} s with 1 ({serial / concurrent:.1f}x)"
            )
    finally:
        server.stop()


def kms_snapshot_workers() -> int:
    from kmsir.actions import kms_snapshot

    return kms_snapshot.WORKERS


if __name__ == "__main__":
    main()

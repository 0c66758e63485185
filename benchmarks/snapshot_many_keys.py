"""Benchmark: snapshot N keys with kmsir vs. the AWS CLI loop a responder would write.

Starts the sandbox's moto as a loopback server (127.0.0.1 only, dummy credentials) with N keys,
each with a key policy, 3 grants, an alias and 2 tags. Then, in one run:

  (a) ``kmsir run benchmarks/snapshot-all.yaml`` (kms.snapshot with ``all: true``), the way a
      responder runs it, pointed at the server with AWS_ENDPOINT_URL;
  (b) the shell loop a responder would otherwise write: ``aws kms list-keys``, then per key
      ``describe-key``, ``get-key-policy``, ``list-grants``, ``list-aliases``,
      ``list-resource-tags`` and ``get-key-rotation-status``, each output saved to a file.

It checks that both found the same keys, key policies and grant ids (exit 1 if not), prints
both wall times (kmsir's: the best of ``--runs``), the ratio and whether the goal (60x) is
reached, then times kmsir's snapshot in process with 30 ms added to every API call (a botocore
``before-send`` hook), with its thread pool and with one worker, to show what the concurrency
buys on a real network. ``--phases`` breaks one kmsir run into its phases (interpreter start,
imports, the run's set-up, the snapshot, the open-risks re-read and the bundle's finish, the
reports). ``--record`` writes the figures into ``benchmarks/README.md``'s table. Needs the AWS
CLI: ``pip install '.[bench]'``.

    python benchmarks/snapshot_many_keys.py [--keys 20] [--runs 3] [--phases] [--record]
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
#: The goal of issue 22: the AWS CLI loop's time over kmsir's.
GOAL_RATIO = 60.0
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


def run_kmsir(endpoint: str, workdir: Path, *, phases: bool = False) -> tuple[float, Path]:
    """One ``kmsir run`` of the snapshot playbook (``phases``: through ``PHASES``, which times
    its parts and prints them); its wall time and bundle."""
    kmsir = shutil.which("kmsir", path=str(Path(sys.executable).parent)) or "kmsir"
    env = {**os.environ, **ENV, "AWS_ENDPOINT_URL": endpoint}
    command = [sys.executable, "-c", PHASES] if phases else [kmsir]
    started = time.perf_counter()
    done = subprocess.run(
        [
            *command,
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
    if phases:
        print(done.stderr[done.stderr.index("phases of") :].rstrip())
    # the run's bundle, not the incident's lock file beside it
    bundle = next(p for p in (workdir / "evidence" / "BENCH").iterdir() if p.is_dir())
    return elapsed, bundle


#: ``kmsir`` with timers around its phases (``python -c PHASES run ...``): what a run spends
#: where, measured in the run itself (a profiler would slow the part it profiles).
PHASES = """
import time
start = time.perf_counter()
import sys, atexit
spans = []
def timed(owner, name, label):
    original = getattr(owner, name)
    def timer(*args, **kwargs):
        began = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            spans.append((began, label, time.perf_counter() - began))
    setattr(owner, name, timer)
import kmsir.cli
from kmsir.cli import common, runs
cli_imported = time.perf_counter()
import kmsir.run.engine as engine, kmsir.actions.kms_snapshot as snapshot, kmsir.report as report
from kmsir.evidence import journal
from kmsir.playbook import templating
spans.append((cli_imported, "import the run's modules (engine, actions, report...)",
              time.perf_counter() - cli_imported))
timed(runs, "load_playbook", "load and validate the playbook")
timed(runs, "execute", "execute: run set-up, steps, open risks, finish")
timed(engine.Engine, "_operator", "  sts:GetCallerIdentity (boto3 session, first client)")
timed(snapshot.Snapshot, "run", "  kms.snapshot (ListKeys + 8 calls a key, 16 threads)")
timed(engine.Engine, "_open_risks", "  open risks (journal re-read)")
timed(journal.BundleWriter, "finish", "  finish (journal end, manifest)")
timed(common, "write_reports", "reports (md + html, journaled)")
timed(templating, "_compile_report", "  jinja2 compile of a report template")
def show():
    print("phases of one kmsir run (s, in the process; imports of the run's modules are",
          "counted where they happen):", file=sys.stderr)
    print(f"  {'import kmsir.cli (typer, the commands)':52} {cli_imported - start:6.3f}",
          file=sys.stderr)
    for _, label, seconds in sorted(spans):
        print(f"  {label:52} {seconds:6.3f}", file=sys.stderr)
    print(f"  {'total (from the interpreter running this code)':52}",
          f"{time.perf_counter() - start:6.3f}", file=sys.stderr)
atexit.register(show)
sys.argv = ["kmsir", *sys.argv[1:]]
kmsir.cli.main()
"""


def interpreter_start() -> float:
    """The best of 5 bare ``python -c pass`` (the floor of any Python tool's start-up)."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        best = min(best, time.perf_counter() - started)
    return best


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
    """Exit 1 unless kmsir and the AWS CLI found the same keys, key policies and grant ids."""
    artifacts = bundle / "artifacts"
    step = next(artifacts.iterdir())
    ours_keys = {p.name for p in step.iterdir() if p.is_dir()}
    cli_keys = {p.name for p in cli.iterdir() if p.is_dir()}
    if ours_keys != cli_keys or ours_keys != set(keys):
        sys.exit(f"MISMATCH: keys: kmsir {len(ours_keys)}, AWS CLI {len(cli_keys)}")
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


def slow_clients(endpoint: str, latency: float) -> Any:
    """kmsir's clients for the server at ``endpoint``, each API call ``latency`` seconds
    slower (a botocore ``before-send`` hook, standing in for a real network)."""
    import boto3

    from kmsir.aws import ClientFactory

    class SlowNetwork(ClientFactory):
        def _install_hooks(self, client: Any) -> None:
            super()._install_hooks(client)
            client.meta.events.register("before-send", lambda **_: time.sleep(latency))

    return SlowNetwork(
        session_factory=lambda: boto3.Session(region_name=REGION),
        region=REGION,
        endpoint_url=endpoint,
    )


def in_process(endpoint: str, latency: float, workers: int, workdir: Path) -> float:
    """kmsir's snapshot of every key, in process, with ``latency`` added to each API call."""

    from kmsir import actions
    from kmsir.actions import kms_snapshot
    from kmsir.playbook import model as playbook
    from kmsir.prompts import AutoApprovePrompter, NoPrompter
    from kmsir.run.engine import Engine, RunOptions

    factory = slow_clients(endpoint, latency)
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
    parser.add_argument("--keys", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3, help="kmsir runs; the best counts")
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--phases", action="store_true", help="time one kmsir run's phases")
    parser.add_argument("--record", action="store_true", help="update benchmarks/README.md")
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
            times = []
            for n in range(max(args.runs, 1)):
                elapsed, bundle = run_kmsir(endpoint, workdir / f"run-{n}")
                times.append(elapsed)
            kmsir_time = min(times)
            print(
                f"kmsir run (kms.snapshot all: true) : {kmsir_time:8.2f} s "
                f"(best of {len(times)}: {', '.join(f'{t:.2f}' for t in times)})"
            )
            if args.phases:
                print(f"python -c pass (interpreter start)  : {interpreter_start():8.3f} s")
                elapsed, _ = run_kmsir(endpoint, workdir / "phases", phases=True)
                print(f"  {'wall time of that run, start to exit':52} {elapsed:6.3f}")
            cli_time = run_aws_cli(endpoint, workdir)
            print(f"AWS CLI loop ({1 + 6 * len(keys)} commands)".ljust(35) + f": {cli_time:8.2f} s")
            compare(bundle, workdir / "cli", keys)
            print("same keys, key policies and grant ids from both: yes")
            ratio = cli_time / kmsir_time
            reached = ratio >= GOAL_RATIO
            print(f"ratio (AWS CLI / kmsir)            : {ratio:8.1f}x")
            print(
                f"goal ({GOAL_RATIO:g}x)                        : "
                + ("reached" if reached else "NOT reached")
            )
            latency = args.latency_ms / 1000
            concurrent = in_process(endpoint, latency, kms_snapshot_workers(), workdir)
            serial = in_process(endpoint, latency, 1, workdir)
            print(
                f"with {args.latency_ms:g} ms per call, kmsir in process: "
                f"{concurrent:.2f} s with {kms_snapshot_workers()} workers, "
                f"{serial:.2f} s with 1 ({serial / concurrent:.1f}x)"
            )
            if args.record:
                sys.path.insert(0, str(HERE))
                from results import record

                record(
                    f"snapshot of {len(keys)} keys",
                    kmsir=f"{kmsir_time:.2f} s (kmsir run, best of {len(times)})",
                    peer=f"{cli_time:.1f} s (AWS CLI loop, {1 + 6 * len(keys)} commands)",
                    ratio=f"{ratio:.1f}x AWS CLI",
                    goal=f">= {GOAL_RATIO:g}x: " + ("reached" if reached else "not reached"),
                )
    finally:
        server.stop()


def kms_snapshot_workers() -> int:
    from kmsir.actions import kms_snapshot

    return kms_snapshot.WORKERS


if __name__ == "__main__":
    main()

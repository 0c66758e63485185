"""Benchmark: a snapshot of every key of an organisation, fanned out vs. one at a time.

Starts the sandbox's moto as a loopback server (127.0.0.1 only, dummy credentials; in a
process of its own, so that moto's work does not share kmsir's interpreter lock) and seeds
ACCOUNTS accounts x REGIONS Regions x KEYS keys (each key with an alias; moto's STS gives each
account its own credentials through AssumeRole, as AWS does). Then, in one run, kmsir
snapshots every key of the scope in process (``kms.snapshot`` with ``all: true`` over
``--accounts ... --role-name ... --regions ...``), with 30 ms added to every API call (a
botocore ``before-send`` hook on every client, the assumed-role ones included, standing in for
a real network's round trip):

  (a) as kmsir runs it: the targets (account x Region) by the fan-out's pool, each target's
      keys by the snapshot's own pool, every call paced to its quota per account and Region;
  (b) one at a time: both pools given a single worker.

It checks that both runs snapshotted the same keys, that every call of an operation with a
documented quota stayed within it in every second, per account (access key) and Region, and
prints the wall times, the calls and the speed-up.

    python benchmarks/fanout_snapshot.py [--accounts 10] [--regions 4] [--keys 25]
        [--latency-ms 30]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

# the loopback server and dummy credentials of the snapshot benchmark (run as scripts, the
# benchmarks import each other from this folder)
from snapshot_many_keys import ENV, dummy_environment, free_port

HERE = Path(__file__).resolve().parent
PLAYBOOK = HERE / "snapshot-all.yaml"
REGIONS = ("eu-west-1", "us-east-1", "us-west-2", "ap-southeast-2", "eu-central-1", "sa-east-1")
ROLE = "KmsirResponder"
CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


SERVER = """
import logging, sys, threading
logging.getLogger("werkzeug").setLevel(logging.ERROR)
from kmsir.sandbox import lookup, shim
shim.install()
lookup.install()
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
server.start()
print("ready", flush=True)
sys.stdin.read()  # until the benchmark closes it
server.stop()
"""


def start_server() -> tuple[subprocess.Popen[str], str]:
    """The sandbox's moto as a loopback server in a process of its own: the benchmark
    measures kmsir's side, not moto's share of one interpreter's lock."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **ENV},
    )
    assert server.stdout is not None
    if server.stdout.readline().strip() != "ready":
        sys.exit("the moto server did not start")
    return server, f"http://127.0.0.1:{port}"


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) process ``pid`` has used so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def accounts(count: int) -> list[str]:
    """The benchmark's accounts: the caller's own (moto's default) and ``count - 1`` more."""
    return ["123456789012", *(f"{200000000000 + n:012d}" for n in range(1, count))]


def seed(endpoint: str, account_ids: list[str], regions: tuple[str, ...], keys: int) -> int:
    """Every account's keys, created with its own (assumed-role) credentials."""
    import boto3

    sts = boto3.client("sts", endpoint_url=endpoint)
    made = 0
    for account in account_ids:
        role = f"arn:aws:iam::{account}:role/{ROLE}"
        found = sts.assume_role(RoleArn=role, RoleSessionName="kmsir-seed")["Credentials"]
        session = boto3.Session(
            aws_access_key_id=found["AccessKeyId"],
            aws_secret_access_key=found["SecretAccessKey"],
            aws_session_token=found["SessionToken"],
        )
        for region in regions:
            kms = session.client("kms", region_name=region, endpoint_url=endpoint)
            for n in range(keys):
                key_id = kms.create_key(Description=f"{account} {region} key {n}")["KeyMetadata"][
                    "KeyId"
                ]
                kms.create_alias(AliasName=f"alias/bench-{n:03d}", TargetKeyId=key_id)
                made += 1
    return made


class Sent:
    """Every request sent, by (access key, Region, operation): the moments it left."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.moments: dict[tuple[str, str, str], list[float]] = defaultdict(list)
        #: kmsir's own CPU time (every thread of this process) during the run.
        self.cpu = 0.0

    def hook(self, request: Any, region: str, event_name: str) -> None:
        header = request.headers.get("Authorization") or b""
        text = header.decode(errors="replace") if isinstance(header, bytes) else str(header)
        found = CREDENTIAL.search(text)
        key = (found[1] if found else "", region, event_name.rsplit(".", 1)[-1])
        with self.lock:
            self.moments[key].append(time.monotonic())

    def calls(self) -> int:
        return sum(len(v) for v in self.moments.values())

    def worst(self, quotas: dict[tuple[str, str], float]) -> tuple[float, str]:
        """The highest share of its quota any operation reached in any one second."""
        worst, where = 0.0, ""
        for (_, _, operation), moments in self.moments.items():
            quota = next((q for (_, name), q in quotas.items() if name == operation), None)
            if quota is None:
                continue
            moments.sort()
            start = 0
            for end, moment in enumerate(moments):
                while moment - moments[start] >= 1.0:
                    start += 1
                share = (end - start + 1) / quota
                if share > worst:
                    worst, where = share, f"{operation}: {end - start + 1} in 1 s, quota {quota:g}"
        return worst, where


def snapshot(
    endpoint: str,
    account_ids: list[str],
    regions: tuple[str, ...],
    latency: float,
    serial: bool,
    workdir: Path,
) -> tuple[float, Sent, set[str]]:
    """kmsir's fanned-out snapshot in process; ``serial``: every pool of one worker."""
    import boto3

    from kmsir import actions
    from kmsir.actions import kms_snapshot
    from kmsir.aws import ClientFactory
    from kmsir.aws.targets import Fleet, Scope, session_name
    from kmsir.playbook import model as playbook
    from kmsir.prompts import AutoApprovePrompter, NoPrompter
    from kmsir.run import fanout
    from kmsir.run.engine import Engine, RunOptions

    sent = Sent()
    original = ClientFactory._install_hooks

    def slow(self: ClientFactory, client: Any) -> None:  # every factory, assumed ones too
        original(self, client)
        region = client.meta.region_name

        def record(request: Any, event_name: str, **_: Any) -> None:
            sent.hook(request, region, event_name)
            time.sleep(latency)

        client.meta.events.register("before-send", record)

    base = ClientFactory(
        session_factory=lambda: boto3.Session(region_name=regions[0]),
        region=regions[0],
        endpoint_url=endpoint,
    )
    incident = "FANOUT-1" if serial else "FANOUT-N"
    scope = Scope(
        caller_account=account_ids[0],
        accounts=tuple(account_ids),
        regions=regions,
        role_name=ROLE,
    )
    fleet = Fleet(base, scope, session_name(incident))
    loaded = playbook.load(PLAYBOOK, actions.catalog())
    engine = Engine(
        actions=actions.registry(),
        clients=base,
        prompter=AutoApprovePrompter(NoPrompter()),
        fleet=fleet,
    )
    options = RunOptions(
        incident_id=incident, evidence_dir=workdir / incident, mode="live", yes=True
    )
    saved = (kms_snapshot.WORKERS, fanout.FANOUT_WORKERS)
    if serial:
        kms_snapshot.WORKERS, fanout.FANOUT_WORKERS = 1, 1
    ClientFactory._install_hooks = slow  # type: ignore[method-assign]
    try:
        started, cpu = time.perf_counter(), time.process_time()
        result = engine.run(loaded, {}, options)
        elapsed = time.perf_counter() - started
        sent.cpu = time.process_time() - cpu
    finally:
        ClientFactory._install_hooks = original  # type: ignore[method-assign]
        kms_snapshot.WORKERS, fanout.FANOUT_WORKERS = saved
    if result.status != "succeeded":
        sys.exit(f"kmsir failed: {result.error}")
    arns = {p.parent.name for p in result.bundle.glob("artifacts/*/*/*/*/key.json")}
    return elapsed, sent, arns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--regions", type=int, default=4)
    parser.add_argument("--keys", type=int, default=25)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    args = parser.parse_args()
    if not 1 <= args.regions <= len(REGIONS):
        sys.exit(f"--regions: 1 to {len(REGIONS)}")
    dummy_environment()
    from kmsir.aws.pacing import QUOTAS
    from kmsir.run import fanout

    server, endpoint = start_server()
    try:
        with tempfile.TemporaryDirectory(prefix="kmsir-bench-") as tmp:
            workdir = Path(tmp)
            account_ids = accounts(args.accounts)
            regions = REGIONS[: args.regions]
            made = seed(endpoint, account_ids, regions, args.keys)
            print(
                f"moto server {endpoint}: {len(account_ids)} accounts x {len(regions)} Regions "
                f"x {args.keys} keys = {made} keys; {args.latency_ms:g} ms per call"
            )
            latency = args.latency_ms / 1000
            moto = cpu_seconds(server.pid)
            fast, fast_sent, fast_keys = snapshot(
                endpoint, account_ids, regions, latency, False, workdir
            )
            moto_fast, moto = cpu_seconds(server.pid) - moto, cpu_seconds(server.pid)
            print(
                f"fanned out ({fanout.FANOUT_WORKERS} targets at once)".ljust(34)
                + f": {fast:8.2f} s ({fast_sent.calls()} calls; CPU: kmsir {fast_sent.cpu:.1f} s, "
                f"moto server {moto_fast:.1f} s)"
            )
            slow, slow_sent, slow_keys = snapshot(
                endpoint, account_ids, regions, latency, True, workdir
            )
            moto_slow = cpu_seconds(server.pid) - moto
            print(
                "one call at a time".ljust(34)
                + f": {slow:8.2f} s ({slow_sent.calls()} calls; CPU: kmsir {slow_sent.cpu:.1f} s, "
                f"moto server {moto_slow:.1f} s)"
            )
            if fast_keys != slow_keys or len(fast_keys) != made:
                sys.exit(f"MISMATCH: {len(fast_keys)} vs {len(slow_keys)} keys of {made}")
            print(f"same {made} keys snapshotted by both: yes")
            share, where = fast_sent.worst(QUOTAS)
            print(f"busiest second against its quota   : {share:6.0%} ({where})")
            if share > 1.0:
                sys.exit("QUOTA EXCEEDED")
            print(f"speed-up (one at a time / fanned out): {slow / fast:6.1f}x")
            # the most any client could gain on this machine: the one-at-a-time run's time
            # over the CPU the same calls need (kmsir's and the server's, on 2 cores; moto
            # answers with one interpreter, so never faster than its own CPU time)
            floor = max(moto_fast, (moto_fast + fast_sent.cpu) / (os.cpu_count() or 1))
            print(f"bound set by CPU (kmsir + moto)       : {slow / floor:6.1f}x")
    finally:
        assert server.stdin is not None
        server.stdin.close()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()

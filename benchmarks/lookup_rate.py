"""Benchmark: the rate at which ``cloudtrail.collect`` sends LookupEvents, against the quota.

CloudTrail allows LookupEvents 2 requests per second per account and Region, and answers more
with ThrottlingException. This runs ``cloudtrail.collect`` (``source: lookup``) in the sandbox
with an AWS stand-in in front of moto that enforces that quota (a token bucket per Region, the
sandbox has one account: 2 tokens a second, at most 2 saved up; a request that finds it empty
is throttled),
over a history of N events naming the key (pages of 50, a pass by ARN and one by key id):

  (a) one collect, one Region;
  (b) two collects of the same key at once, in one process: two callers, one quota;
  (c) one collect over two Regions (each Region has its own quota).

For each it prints the requests that reached the stand-in per Region, their rate (requests
after the first over the time from the first to the last), the shortest gap between two, how
many were throttled, and the wall time. kmsir must send at about 2 req/s and never be throttled.

    python benchmarks/lookup_rate.py [--events 1000]
"""

from __future__ import annotations

import argparse
import itertools
import json
import threading
import time
import uuid
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any

QUOTA_PER_SECOND = 2.0
BURST = 2.0
OTHER_REGION = "us-east-1"


class Quota:
    """Stands in front of moto on a session's ``before-send``: LookupEvents beyond the quota
    is answered with ThrottlingException as CloudTrail does; every request is timed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}
        self._filled: dict[str, float] = {}
        self.sent: dict[str, list[float]] = defaultdict(list)
        self.throttled: dict[str, int] = defaultdict(int)

    def reset(self) -> None:
        with self._lock:
            self._tokens.clear()
            self._filled.clear()
            self.sent.clear()
            self.throttled.clear()

    def __call__(self, request: Any, event_name: str, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse
        from moto.core.botocore_stubber import MockRawResponse
        from moto.core.models import botocore_stubber

        if event_name.endswith(".LookupEvents"):
            region = str(request.url).split(".")[1]  # https://cloudtrail.<region>.amazonaws.com
            now = time.monotonic()
            with self._lock:
                saved = now - self._filled.get(region, now)
                tokens = min(BURST, self._tokens.get(region, BURST) + saved * QUOTA_PER_SECOND)
                self._filled[region] = now
                self.sent[region].append(now)
                if tokens < 1.0:
                    self._tokens[region] = tokens
                    self.throttled[region] += 1
                    body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"})
                    return AWSResponse(
                        request.url,
                        400,
                        {"Content-Type": "application/x-amz-json-1.1"},
                        MockRawResponse(body),
                    )
                self._tokens[region] = tokens - 1.0
        return botocore_stubber(event_name=event_name, request=request)


class Artifacts:
    """An in-memory artifact sink: the benchmark keeps nothing."""

    def write(self, name: str, data: bytes) -> str:
        return name

    def journal(self, type_: str, data: dict[str, Any]) -> None:
        """Nothing journaled."""

    def earlier(self, step_id: str, name: str) -> bytes | None:
        return None

    def outside(self, path: str) -> bytes:
        raise NotImplementedError


def history(arn: str, region: str, count: int, now: datetime) -> list[dict[str, Any]]:
    """``count`` Decrypt events naming the key over the last six days."""
    account = arn.split(":")[4]
    spacing = 6 * 24 * 60 / count
    return [
        {
            "eventVersion": "1.08",
            "eventID": str(uuid.UUID(int=n + 1)),
            "eventTime": (now - timedelta(minutes=10 + n * spacing)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventSource": "kms.amazonaws.com",
            "eventName": "Decrypt",
            "awsRegion": region,
            "sourceIPAddress": "10.0.0.1",
            "userIdentity": {"type": "AssumedRole", "accountId": account},
            "requestParameters": {"keyId": arn},
            "resources": [{"ARN": arn, "accountId": account, "type": "AWS::KMS::Key"}],
            "readOnly": True,
            "recipientAccountId": account,
        }
        for n in range(count)
    ]


def collect(factory: Any, key: str, regions: list[str]) -> str:
    """One ``cloudtrail.collect``: how many events it found, or why it failed."""
    from kmsir.actions.base import ActionContext, RunInfo
    from kmsir.actions.cloudtrail import Collect, CollectParams
    from kmsir.errors import AwsError
    from kmsir.prompts import NoPrompter

    ctx = ActionContext(
        step_id="collect",
        clients=factory,
        prompter=NoPrompter(),
        artifacts=Artifacts(),  # type: ignore[arg-type]
        run=RunInfo("BENCH", "run", "sandbox", True),
        now=lambda: datetime.now(timezone.utc),
    )
    try:
        outcome = Collect().run(ctx, CollectParams(key=key, since="7d", regions=regions))
    except AwsError as exc:
        return f"failed ({exc.code})"
    except Exception as exc:  # a broken benchmark must say so, not print empty figures
        return f"crashed ({type(exc).__name__}: {exc})"
    return f"{outcome.outputs['count']} events"


def report(label: str, quota: Quota, elapsed: float, found: list[str]) -> None:
    print(f"{label}: {elapsed:.1f} s; {', '.join(found)}")
    for region, sent in sorted(quota.sent.items()):
        span = sent[-1] - sent[0] if len(sent) > 1 else 0.0
        rate = (len(sent) - 1) / span if span else float("nan")
        gap = min((b - a for a, b in itertools.pairwise(sent)), default=float("nan"))
        print(
            f"    {region:10} {len(sent):4d} requests  {rate:5.2f} req/s  "
            f"shortest gap {gap * 1000:4.0f} ms  throttled {quota.throttled.get(region, 0)}"
        )


def main() -> int:
    """Run the three cases; exit 1 when a collect failed or a request was throttled."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    args = parser.parse_args()
    from kmsir.sandbox import Sandbox, lookup
    from kmsir.sandbox import scenario as scenarios

    quota = Quota()
    with Sandbox(scenarios.load("rogue-grant")) as sandbox:
        key = next(iter(sandbox.keys.values()))["arn"]
        now = datetime.now(timezone.utc)
        for region in (sandbox.region, OTHER_REGION):
            lookup.add_events(sandbox.account, region, history(key, region, args.events, now))

        def session() -> Any:
            from moto.core.models import botocore_stubber

            made = sandbox.session()
            made.events.unregister("before-send", botocore_stubber)
            made.events.register_first("before-send", quota)
            return made

        def factory() -> Any:
            from kmsir.aws import ClientFactory

            return ClientFactory(session_factory=session, region=sandbox.region, guard_send=True)

        print(
            f"LookupEvents quota {QUOTA_PER_SECOND:g} req/s per account and Region (burst "
            f"{BURST:g}); {args.events} events of the key per Region"
        )
        cases: list[tuple[str, int, list[str]]] = [
            ("(a) one collect, one Region", 1, [sandbox.region]),
            ("(b) two collects at once, one Region", 2, [sandbox.region]),
            ("(c) one collect, two Regions", 1, [sandbox.region, OTHER_REGION]),
        ]
        failed = throttled = 0
        for label, callers, regions in cases:
            quota.reset()
            found: list[str] = []
            started = time.perf_counter()
            threads = [
                threading.Thread(
                    target=lambda f=found, r=regions: f.append(collect(factory(), key, r))
                )
                for _ in range(callers)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            report(label, quota, time.perf_counter() - started, found)
            failed += sum(not f.endswith(" events") for f in found)
            throttled += sum(quota.throttled.values())
            time.sleep(1.0)  # the next case starts with a full bucket, as after a pause
    if failed or throttled:
        print(f"FAILED: {failed} collect(s) failed, {throttled} request(s) throttled")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The client factory's own jobs: pacing a known quota for every caller at once, the
sandbox's guard (a request no ``before-send`` handler answered is refused, never sent), and
clients typed per service."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kmsir.aws import ClientFactory
from kmsir.aws.pacing import QUOTAS, Pacing
from kmsir.errors import AwsError
from kmsir.sandbox import Sandbox

from .conftest import REPO
from .netguard import NetGuard

QUOTA = ("cloudtrail", "LookupEvents")


class Clock:
    """Time that passes only when someone sleeps: what was slept is what pacing cost."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self.log: list[str] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.log.append("paced")
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The process's pacing on a fake clock (2 LookupEvents a second, as in ``QUOTAS``)."""
    fake = Clock()
    monkeypatch.setattr("kmsir.aws.pacing.PACING", Pacing(QUOTAS, clock=fake, sleep=fake.sleep))
    return fake


def test_a_quota_spaces_the_requests_of_its_holder() -> None:
    fake = Clock()
    pacing = Pacing({QUOTA: 2.0}, clock=fake, sleep=fake.sleep)
    for _ in range(5):
        pacing.wait(*QUOTA, "AKIAONE", "eu-west-1")
    assert fake.slept == [0.5, 0.5, 0.5, 0.5]


def test_each_account_and_region_has_its_own_schedule_and_other_calls_none() -> None:
    fake = Clock()
    pacing = Pacing({QUOTA: 2.0}, clock=fake, sleep=fake.sleep)
    pacing.wait(*QUOTA, "AKIAONE", "eu-west-1")
    pacing.wait(*QUOTA, "AKIAONE", "us-east-1")  # another Region's quota
    pacing.wait(*QUOTA, "AKIATWO", "eu-west-1")  # other credentials
    for _ in range(3):
        pacing.wait("kms", "ListKeys", "AKIAONE", "eu-west-1")  # no known quota
    assert fake.slept == []
    pacing.wait(*QUOTA, "AKIAONE", "eu-west-1")
    assert fake.slept == [0.5]


def test_a_pacer_that_has_been_idle_does_not_hold_back() -> None:
    fake = Clock()
    pacing = Pacing({QUOTA: 2.0}, clock=fake, sleep=fake.sleep)
    pacing.wait(*QUOTA, "AKIAONE", "eu-west-1")
    fake.now += 10.0
    pacing.wait(*QUOTA, "AKIAONE", "eu-west-1")
    assert fake.slept == []


def _lookup(factory: ClientFactory, region: str | None = None) -> None:
    factory.client("cloudtrail", region).lookup_events(MaxResults=1)


def test_every_caller_of_the_process_shares_one_schedule(
    rogue_grant: Sandbox, clock: Clock
) -> None:
    """Two factories (a run's clients and its signer's, two threads' collects) with the
    same credentials in the same Region wait on one schedule: together at the quota."""
    first, second = rogue_grant.client_factory(), rogue_grant.client_factory()
    for _ in range(3):
        _lookup(first)
    _lookup(second)
    _lookup(second)
    assert clock.slept == [0.5] * 4  # five requests, 2 a second, whoever sent them
    _lookup(first, "us-east-1")  # the quota of another Region: not held back
    first.client("kms").list_keys()  # no known quota: never paced
    assert clock.slept == [0.5] * 4


def test_pacing_happens_before_the_request_is_answered(rogue_grant: Sandbox, clock: Clock) -> None:
    """The pacer stands on the service's own ``before-send`` event, which botocore calls
    before any handler of plain ``before-send`` (where moto, or AWS's stand-in in the
    benchmark, answers): each request reaches the answer only after its turn came."""
    factory = rogue_grant.client_factory()
    trail = factory.client("cloudtrail")

    def answered(**_: Any) -> None:
        clock.log.append("answered")

    trail.meta.events.register_first("before-send", answered)
    for _ in range(3):
        trail.lookup_events(MaxResults=1)
    assert clock.log == ["answered", "paced", "answered", "paced", "answered"]


def test_the_guard_refuses_what_moto_does_not_answer(
    moto_clients: ClientFactory, net: NetGuard
) -> None:
    """A guarded factory's client pointed where moto does not answer is refused before any
    connection is tried; one moto answers works as ever."""
    assert moto_clients.client("kms").list_keys()["Keys"] == []
    astray = ClientFactory(
        session_factory=moto_clients.session_factory,
        region="eu-west-1",
        endpoint_url="https://kms.corp.example.com",
        guard_send=True,
    )
    with pytest.raises(AwsError, match=r"^sandbox: refused to send a request to https://kms\.corp"):
        astray.client("kms").list_keys()
    assert net.refused == []


def test_a_refused_request_is_not_retried(moto_clients: ClientFactory, net: NetGuard) -> None:
    """The refusal is no transient error: botocore does not try again."""
    astray = ClientFactory(
        session_factory=moto_clients.session_factory,
        region="eu-west-1",
        endpoint_url="https://kms.corp.example.com",
        guard_send=True,
    )
    kms = astray.client("kms")
    attempts: list[str] = []
    kms.meta.events.register_first("before-send", lambda **_: attempts.append("sent"))
    with pytest.raises(AwsError) as refused:
        kms.list_keys()
    assert refused.value.code == "SandboxRefused"
    assert attempts == ["sent"]
    assert net.refused == []


def test_a_typo_in_a_client_method_fails_the_type_check(tmp_path: Path) -> None:
    """``ClientFactory.client`` returns each service's boto3-stubs client type, so mypy (the
    CI's ``mypy --strict``) catches a misspelt operation before any run does."""
    snippet = tmp_path / "uses_clients.py"
    snippet.write_text(
        "from kmsir.aws import ClientFactory\n\n\n"
        "def use(clients: ClientFactory) -> None:\n"
        '    clients.client("kms").describe_kye(KeyId="k")\n'
        '    clients.client("cloudtrail").lookup_events(MaxResults=1)\n'
        '    clients.client("s3").list_objects_v2(Bucket="b")\n'
    )
    command = [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent"]
    checked = subprocess.run(
        [*command, "--cache-dir", str(tmp_path / "cache"), snippet.name],
        cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [line for line in checked.stdout.splitlines() if ": error:" in line]
    assert errors == [
        'uses_clients.py:5: error: "KMSClient" has no attribute "describe_kye"; maybe '
        '"describe_key"?  [attr-defined]'
    ], checked.stdout + checked.stderr

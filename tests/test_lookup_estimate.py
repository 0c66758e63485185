"""A ``lookup`` pull that would take long says so once, and suggests Athena.

LookupEvents returns a key's events newest first, 50 a page, 2 pages a second per account and
Region (https://docs.aws.amazon.com/awscloudtrail/latest/APIReference/API_LookupEvents.html):
the oldest event of the pages so far says which part of the window is covered, and no pull
reads more than 100 events a second per account and Region. Every clock here is the run's
(``ctx.now``), faked: nothing waits, nothing reads wall time.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from botocore.stub import Stubber

from kmsir.actions.base import NullReporter
from kmsir.actions.cloudtrail import Collect, CollectParams
from kmsir.actions.trail_lookup import MAX_EVENTS_PER_SECOND, SUGGEST_AFTER, Estimate
from kmsir.aws import ClientFactory
from kmsir.trail.catalogue import TRAIL_EVENTS

from .fakes import context

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)


class Shown(NullReporter):
    """What the responder sees: the notices."""

    def __init__(self) -> None:
        self.notices: list[str] = []

    def notice(self, text: str) -> None:
        self.notices.append(text)


class Clock:
    """The run's clock: ``step`` seconds later at every reading."""

    def __init__(self, step: float) -> None:
        self.moment = NOW
        self.step = timedelta(seconds=step)

    def __call__(self) -> datetime:
        self.moment += self.step
        return self.moment


@pytest.fixture(scope="module")
def world() -> Iterator[tuple[ClientFactory, str]]:
    """A moto account with a key (the pull describes it first)."""
    import boto3
    from moto import mock_aws

    dummy = {f"aws_{k}": "testing" for k in ("access_key_id", "secret_access_key", "session_token")}
    with mock_aws():
        clients = ClientFactory(
            session_factory=lambda: boto3.Session(region_name="eu-west-1", **dummy),
            region="eu-west-1",
            guard_send=True,
        )
        yield clients, str(clients.client("kms").create_key()["KeyMetadata"]["Arn"])


def page(newest: datetime, every: timedelta, n: int = 50, token: str | None = "t") -> Any:  # noqa: S107
    """A LookupEvents page of ``n`` events, newest first, ``every`` apart."""
    events = [
        {"EventId": f"e{newest:%H%M%S}-{i}", "EventTime": newest - i * every}
        for i in range(n)  # no CloudTrailEvent: unusable, counted as skipped, still paged
    ]
    return {"Events": events, **({"NextToken": token} if token else {})}


def pull(
    world: tuple[ClientFactory, str], pages: list[Any], clock: Clock, since: str = "7d"
) -> tuple[dict[str, Any], list[str]]:
    """A lookup collect over ``pages`` (the pass by ARN; the others find nothing)."""
    clients, arn = world
    ctx, _ = context(clients)
    shown = Shown()
    ctx.reporter = shown
    ctx.now = clock
    trail = clients.client("cloudtrail")
    with Stubber(trail) as stub:
        for response in pages:
            stub.add_response("lookup_events", response)
        for _ in range(1 + len(TRAIL_EVENTS)):  # by key id, then by each trail event's name
            stub.add_response("lookup_events", {"Events": []})
        outcome = Collect().run(ctx, CollectParams(key=arn, since=since))
        stub.assert_no_pending_responses()
    return outcome.outputs, shown.notices


def test_a_long_pull_suggests_athena_once(world: tuple[ClientFactory, str]) -> None:
    # 50 events every 30 minutes of a 7-day window: ~16,800 a pass, two passes by key name
    half_hour = timedelta(seconds=36)
    newest = NOW - timedelta(minutes=1)
    pages = [
        page(newest - timedelta(minutes=30 * p), half_hour, token=None if p == 6 else f"t{p}")
        for p in range(7)
    ]
    outputs, notices = pull(world, pages, Clock(0.5))  # a page every 0.5 s: 100 events/s
    # told once the pages are evidence enough (1% of the window), never again
    assert len(notices) == 1, notices
    [notice] = notices
    assert "source: athena" in notice and "kmsir cloudtrail athena-ddl" in notice
    estimate = outputs["estimate"]
    assert estimate["suggestion"] == "athena"
    # after 4 pages: 1/84 of the window in 200 events
    assert 16_000 * 2 < estimate["expected_events"] < 17_500 * 2
    assert estimate["remaining_seconds"] > SUGGEST_AFTER
    assert estimate["remaining_seconds"] >= (estimate["expected_events"] - 200) / 100 - 1


def test_a_short_pull_says_nothing(world: tuple[ClientFactory, str]) -> None:
    # the first page already reaches 4 of the window's 7 days
    pages = [
        page(NOW - timedelta(minutes=1), timedelta(hours=2)),
        page(NOW - timedelta(days=4), timedelta(hours=2), token=None),
    ]
    outputs, notices = pull(world, pages, Clock(0.5))
    assert notices == [] and outputs["estimate"] is None


def test_no_estimate_assumes_more_than_100_events_a_second(
    world: tuple[ClientFactory, str],
) -> None:
    """A clock that barely moves would make any pull look instant: the quota bounds it."""
    last = [page(NOW - timedelta(minutes=1), timedelta(minutes=3), token=None)]
    # 50 events every 3 minutes of 7 days: ~3,400 a pass, ~6,700 in all: 67 s at best
    quick = pull(world, [page(NOW, timedelta(minutes=3)), *last], Clock(0.001))
    assert quick[1] == [] and quick[0]["estimate"] is None
    # 50 events every 30 seconds: ~20,000 a pass: 200 s at least, however fast the pages came
    # (told after 5 pages: evidence enough however quickly they came)
    dense = [page(NOW - timedelta(minutes=25 * n), timedelta(seconds=30)) for n in range(5)]
    slow = pull(world, [*dense, *last], Clock(0.001))
    assert len(slow[1]) == 1
    assert slow[0]["estimate"]["remaining_seconds"] >= 20_000 / MAX_EVENTS_PER_SECOND


@pytest.mark.parametrize(("seconds_a_page", "told"), [(0.5, False), (10.0, True)])
def test_a_throttled_pull_is_estimated_at_its_own_pace(seconds_a_page: float, told: bool) -> None:
    """The same pages: quick at 100 events a second, too slow at 5 (throttled). Regions run
    at once: the slowest sets the time."""
    ctx, _ = context(ClientFactory(session_factory=lambda: None))  # type: ignore[arg-type,return-value]
    shown = Shown()
    ctx.reporter = shown
    ctx.now = Clock(seconds_a_page / 2)  # read once for the start, once a page
    estimate = Estimate(ctx, "k", ["eu-west-1", "us-east-1"], NOW - timedelta(days=7), NOW)
    estimate.page("us-east-1", page(NOW, timedelta(hours=4))["Events"])  # all of the window
    # eu-west-1: 1/14 of the window: ~700 a pass, ~1,350 to go
    estimate.page("eu-west-1", page(NOW, timedelta(seconds=12 * 3600 / 49))["Events"])
    assert (estimate.told is not None) is told
    assert len(shown.notices) == int(told)
    if told:
        assert estimate.told is not None and estimate.told["remaining_seconds"] > SUGGEST_AFTER


def _told(clock: Clock, start: datetime, pages: list[list[Any]]) -> dict[str, Any] | None:
    ctx, _ = context(ClientFactory(session_factory=lambda: None))  # type: ignore[arg-type,return-value]
    ctx.now = clock
    estimate = Estimate(ctx, "k", ["eu-west-1"], start, NOW)
    for events in pages:
        estimate.page("eu-west-1", events)
    return estimate.told


def test_a_burst_at_the_window_s_end_is_no_pace() -> None:
    """50 events in the window's last 100 seconds would extrapolate to ~300,000 over 7 days:
    one page is no evidence (issue 20, R2#5); the next, past the burst, shows a short pull."""
    burst = page(NOW, timedelta(seconds=2))["Events"]
    assert _told(Clock(0.5), NOW - timedelta(days=7), [burst]) is None
    calm = page(NOW - timedelta(minutes=2), timedelta(hours=3))["Events"]  # 6 days more
    assert _told(Clock(0.5), NOW - timedelta(days=7), [burst, calm]) is None


def test_the_estimate_covers_only_the_90_days_lookup_keeps() -> None:
    """A year's window: LookupEvents keeps 90 days
    (https://docs.aws.amazon.com/awscloudtrail/latest/userguide/view-cloudtrail-events.html),
    so 50 events over 80 days are nearly all of it (R2#6), not 22% of a year."""
    spread = page(NOW, timedelta(days=80) / 49)["Events"]
    clock = Clock(30.0)  # slow pages: 1.7 events a second
    clock.moment = NOW - timedelta(seconds=60)
    assert _told(clock, NOW - timedelta(days=365), [spread]) is None

"""A step over many accounts and Regions (issue 20 review): what stops it, what each target
shows, where a key named by its id runs, which of an earlier step's files it reads, and who
may resume it. No AWS call is made but moto's GetCallerIdentity."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from kmsir.actions.base import Action, ActionContext, Outcome, Params
from kmsir.aws import ClientFactory
from kmsir.aws.targets import Fleet, Scope, Target
from kmsir.errors import (
    Aborted,
    ActionError,
    EvidenceError,
    KmsirError,
    MissingAnswer,
    TamperedError,
    UsageError,
)
from kmsir.run import fanout

from .fakes import context

REGIONS = ("eu-west-1", "us-east-1", "ap-southeast-2", "eu-central-1", "us-west-2", "sa-east-1")
CALLER, OTHER, THIRD = "123456789012", "111111111111", "222222222222"


def _fleet(clients: ClientFactory, accounts: tuple[str, ...] = (CALLER,)) -> Fleet:
    return Fleet(clients, Scope(CALLER, accounts, REGIONS, role_name="r"), "kmsir-test")


class _Stopping(Action[Params]):
    """The first target raises ``stop``; the next one waits for the test to let it end (the
    pool's one worker took it before the stop reached the run); every other one is queued."""

    name = "test.stopping"
    params = Params

    def __init__(self, stop: BaseException) -> None:
        self.stop, self.started, self.release = stop, list[str](), threading.Event()

    def run(self, ctx: ActionContext, params: Params) -> Outcome:
        self.started.append(ctx.clients.resolved_region)
        if len(self.started) == 1:
            raise self.stop
        self.release.wait(2)
        return Outcome(outputs={}, summary="read")


@pytest.mark.parametrize(
    "stop",
    [
        KeyboardInterrupt(),
        EvidenceError("disk full"),
        TamperedError(["journal changed"]),
        Aborted("aborted"),
        MissingAnswer("no answer"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_ctrl_c_or_a_stop_in_a_target_stops_the_step_and_starts_no_queued_target(
    stop: BaseException, moto_clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fanout, "FANOUT_WORKERS", 1)
    action = _Stopping(stop)
    ctx, _ = context(moto_clients, step_id="stopping")
    try:
        with pytest.raises(type(stop)):
            fanout.run_fanned(action, ctx, Params(), _fleet(moto_clients))
        assert len(action.started) <= 2 < len(REGIONS)  # the queued targets never started
        journaled = [d for kind, d in ctx.artifacts.events if kind == "target-result"]  # type: ignore[attr-defined]
        assert journaled == []  # not "a failed target": the run stops
    finally:
        action.release.set()


def test_ctrl_c_while_snapshotting_keys_starts_no_queued_key(
    moto_clients: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kmsir.actions import kms_snapshot

    started: list[str] = []
    release = threading.Event()

    def describe(ctx: ActionContext, reference: str) -> Any:
        started.append(reference)
        if len(started) == 1:
            raise KeyboardInterrupt
        release.wait(2)
        raise ActionError(f"{reference}: not found")

    monkeypatch.setattr(kms_snapshot, "WORKERS", 1)
    monkeypatch.setattr(kms_snapshot, "describe", describe)
    ctx, _ = context(moto_clients)
    try:
        with pytest.raises(KeyboardInterrupt):
            kms_snapshot.Snapshot._many(ctx, [f"alias/key-{n}" for n in range(8)])
        assert len(started) <= 2
    finally:
        release.set()


class _Shows(Action[Params]):
    name = "test.shows"
    params = Params

    def run(self, ctx: ActionContext, params: Params) -> Outcome:
        ctx.reporter.notice("LookupEvents is slow here")
        ctx.reporter.table("top findings", ["severity"], [["high"]])
        ctx.reporter.progress("events", 1)
        return Outcome(outputs={}, summary="shown")


class _Recorded:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def progress(self, what: str, done: int, total: int | None = None) -> None:
        self.lines.append(f"progress {what}")

    def step(self, step_id: str, title: str, status: str, summary: str) -> None:
        self.lines.append(f"step {step_id}")

    def notice(self, text: str) -> None:
        self.lines.append(f"notice {text}")

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.lines.append(f"table {title}")


def test_what_each_target_shows_on_the_terminal_names_it(moto_clients: ClientFactory) -> None:
    ctx, _ = context(moto_clients, step_id="shows")
    shown = _Recorded()
    ctx.reporter = shown
    fanout.run_fanned(_Shows(), ctx, Params(), _fleet(moto_clients))
    for region in REGIONS:
        label = f"{CALLER}/{region}"
        assert f"notice {label}: LookupEvents is slow here" in shown.lines
        assert f"table {label}: top findings" in shown.lines
        assert f"progress {label}: events" in shown.lines
    assert "notice LookupEvents is slow here" not in shown.lines


def test_a_key_named_by_id_or_alias_runs_where_the_run_s_snapshot_found_it(
    moto_clients: ClientFactory,
) -> None:
    fleet = _fleet(moto_clients, (CALLER, OTHER, THIRD))
    arn = f"arn:aws:kms:us-east-1:{OTHER}:key/1234abcd-0000"
    steps = {
        "snapshot": {"key_id": "1234abcd-0000", "arn": arn, "aliases": ["alias/app"]},
        "all": {"keys": [{"key_id": "5678", "arn": f"arn:aws:kms:eu-west-1:{THIRD}:key/5678"}]},
    }
    here = Target(OTHER, "us-east-1")
    for key in ("1234abcd-0000", "alias/app", arn, f"arn:aws:kms:us-east-1:{OTHER}:alias/app"):
        assert fanout.route(fleet, SimpleNamespace(key=key), steps) == here, key
    # a loop's item from a snapshot of every key: the key's own account and Region
    assert fanout.route(fleet, SimpleNamespace(key="5678"), steps) == Target(THIRD, "eu-west-1")
    assert fanout.route(fleet, SimpleNamespace(key="unknown"), steps) is None
    assert fanout.route(fleet, SimpleNamespace(keys=[arn, "alias/app"]), steps) == here
    # the same name for keys in two accounts: refused, not guessed
    twin = {"key_id": "x", "arn": f"arn:aws:kms:eu-west-1:{THIRD}:key/x", "aliases": ["alias/app"]}
    steps["other"] = twin
    with pytest.raises(ActionError, match="several accounts or Regions"):
        fanout.route(fleet, SimpleNamespace(key="alias/app"), steps)
    with pytest.raises(ActionError, match="several accounts or Regions"):
        fanout.route(fleet, SimpleNamespace(keys=[arn, "5678"]), steps)


def test_a_fanned_out_step_s_files_are_read_as_its_outputs_list_them(
    moto_clients: ClientFactory,
) -> None:
    """A target that failed in the attempt that succeeded left no file in it; the one an
    earlier attempt wrote is stale and not read."""
    ctx, _ = context(moto_clients, step_id="blast")
    a, b = f"{CALLER}/eu-west-1", f"{CALLER}/us-east-1"
    ctx.scope = (a, b)
    ctx.artifacts.write(f"{a}/events.jsonl.gz", b"fresh")
    ctx.artifacts.write(f"{b}/events.jsonl.gz", b"stale")  # attempt 1, failed in attempt 2
    ctx.steps = {
        "collect": {
            "targets": [{"account": CALLER, "region": "eu-west-1", "status": "reached"}],
            "artifacts": [f"artifacts/02-collect.2/{a}/events.jsonl.gz"],
        }
    }
    assert ctx.earlier_everywhere("collect", "events.jsonl.gz") == [b"fresh"]


def test_resume_refuses_another_account_than_the_run_s_caller(
    moto_clients: ClientFactory, tmp_path: Path
) -> None:
    from kmsir.run import launch
    from kmsir.run.engine import RunOptions

    options = RunOptions(incident_id="INC-1", evidence_dir=tmp_path, mode="live")
    venue = launch.Venue(moto_clients, moto_clients, options)
    recorded = Scope(OTHER, (OTHER, CALLER), ("eu-west-1",), role_name="r").to_json()
    with pytest.raises(UsageError) as refused:
        launch.rescoped(venue, recorded)
    message = str(refused.value)
    assert "\n" not in message and OTHER in message and f"signed in to {CALLER}" in message
    own = Scope(CALLER, (CALLER, OTHER), ("eu-west-1",), role_name="r").to_json()
    fleet = launch.rescoped(venue, own).fleet
    assert fleet is not None and fleet.scope.accounts == (CALLER, OTHER)


def test_a_kmsir_error_in_a_target_is_still_only_that_target_s_failure() -> None:
    assert not issubclass(ActionError, fanout.STOPS_RUN) and issubclass(ActionError, KmsirError)


def test_only_key_actions_run_where_their_key_is(moto_clients: ClientFactory) -> None:
    """A collect from Athena, S3 or CloudTrail Lake reads where the trail is (the run's own
    account), whatever account its key is in; a KMS action on the key runs in the key's
    account and Region, the caller's own account included."""
    fleet = _fleet(moto_clients, (CALLER, OTHER))
    arn = f"arn:aws:kms:us-east-1:{OTHER}:key/1234abcd-0000"
    ctx, _ = context(moto_clients)
    key = SimpleNamespace(key=arn)
    fanout.place(ctx, moto_clients, fleet, key, {}, action="cloudtrail.collect")
    assert ctx.clients is moto_clients and ctx.where == f"account {CALLER}, eu-west-1"
    fanout.place(ctx, moto_clients, fleet, key, {}, action="kms.disable-key")
    assert ctx.where == f"account {OTHER}, us-east-1"
    mine = SimpleNamespace(key=f"arn:aws:kms:us-east-1:{CALLER}:key/9")
    fanout.place(ctx, moto_clients, fleet, mine, {}, action="kms.disable-key")
    assert ctx.where == f"account {CALLER}, us-east-1"
    assert ctx.clients.resolved_region == "us-east-1"


def test_the_end_of_run_re_read_finds_a_key_named_by_alias_in_its_own_account(
    moto_clients: ClientFactory,
) -> None:
    """The same alias names another key in the caller's account: the key the run touched
    (the one its snapshot recorded, in another account) is the one read again."""
    fleet = _fleet(moto_clients, (CALLER, OTHER))
    theirs = fleet.clients(OTHER).client("kms", "us-east-1")
    key = theirs.create_key()["KeyMetadata"]
    theirs.create_alias(AliasName="alias/app", TargetKeyId=key["KeyId"])
    theirs.disable_key(KeyId=key["KeyId"])
    mine = moto_clients.client("kms")
    decoy = mine.create_key()["KeyMetadata"]["KeyId"]
    mine.create_alias(AliasName="alias/app", TargetKeyId=decoy)
    steps = {"snapshot": {"key_id": key["KeyId"], "arn": key["Arn"], "aliases": ["alias/app"]}}
    (state,) = fanout.reread(moto_clients, fleet, ["alias/app"], steps)
    assert (state.arn, state.state, state.error) == (key["Arn"], "Disabled", None)

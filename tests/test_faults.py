"""Faults on every AWS call each action makes.

The fault layer (``faultkit``) stands in front of moto where botocore hands each attempt to
the wire, and answers the attempts a rule strikes with what AWS or the network would:
throttling and refusals in the service's own error format, HTTP 500 and 503, a connection
reset, an unreachable endpoint, a read timeout, and a read timeout after AWS carried the
request out (the response was lost).

``CALLS`` lists every call each action makes (as the layer recorded them: a test keeps the
list honest), ``OUTCOMES`` and ``CALL_OUTCOMES`` what each fault must lead to. The cases built
from them check what a responder would care about: a passing glitch is retried by botocore and
the step succeeds; a lasting one ends the step with one clear line after a bounded number of
attempts; a refusal is not retried; the journal says why, ``on_error`` applies, the bundle
verifies, and resume finishes the work once the fault is gone, without sending a change twice.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import pytest

from kmsir import actions
from kmsir.actions.base import NullReporter
from kmsir.aws import ClientFactory
from kmsir.evidence import integrity
from kmsir.evidence.calls import is_read_only
from kmsir.playbook.model import LoadedPlaybook
from kmsir.prompts import NoPrompter, ScriptedPrompter
from kmsir.run import resume as resuming
from kmsir.run.engine import RETRYABLE, Engine, RunOptions, RunResult

from .conftest import load_playbook
from .faultkit import (
    ACCOUNT,
    REGION,
    FaultLayer,
    Moto,
    Rule,
    SleepRecorder,
    World,
    code_of,
    faulty_moto,
    service_of,
)

INCIDENT = "INC-faults"
#: The identity moto signs every request as: the break-glass principal of the quarantine.
CALLER = f"arn:aws:sts::{ACCOUNT}:user/moto"
#: Attempts botocore makes at one call (ClientFactory's retry configuration).
ATTEMPTS = 5
#: ``retries:`` of the failing step: kmsir's own retries of a RETRYABLE error multiply
#: botocore's attempts, and the bound below must still hold.
STEP_RETRIES = 1
#: The most attempts one call may see in a run: botocore's times the step's runs.
MAX_ATTEMPTS_PER_CALL = ATTEMPTS * (STEP_RETRIES + 1)

# -- what each action calls ----------------------------------------------------------------

#: Every AWS call each action makes in a step, in order: the preview of a mutating step (what
#: the responder approves), then the run. ``test_calls_are_every_call_the_action_makes``
#: records them to keep this list honest.
CALLS: dict[str, tuple[str, ...]] = {
    "kms.snapshot": (
        "DescribeKey",
        "ListKeyPolicies",
        "GetKeyPolicy",
        "ListGrants",
        "ListAliases",
        "ListResourceTags",
        "GetKeyRotationStatus",
        "ListKeyRotations",
    ),
    "kms.disable-key": ("DescribeKey", "DescribeKey", "DisableKey", "DescribeKey"),
    "kms.enable-key": ("DescribeKey", "DescribeKey", "EnableKey", "DescribeKey"),
    "kms.schedule-deletion": (
        "DescribeKey",
        "ListAliases",
        "DescribeKey",
        "ScheduleKeyDeletion",
        "DescribeKey",
    ),
    "kms.cancel-deletion": ("DescribeKey", "DescribeKey", "CancelKeyDeletion", "DescribeKey"),
    "kms.revoke-grants": (
        "DescribeKey",
        "ListGrants",
        "ListAliases",
        "DescribeKey",
        "ListGrants",
        "RevokeGrant",
        "ListGrants",
    ),
    "kms.quarantine": (
        "DescribeKey",
        "GetKeyPolicy",
        "GetCallerIdentity",
        "DescribeKey",
        "GetKeyPolicy",
        "GetCallerIdentity",
        "PutKeyPolicy",
        "GetKeyPolicy",
    ),
    "kms.put-policy": (
        "DescribeKey",
        "GetKeyPolicy",
        "GetCallerIdentity",
        "DescribeKey",
        "GetKeyPolicy",
        "GetCallerIdentity",
        "PutKeyPolicy",
        "GetKeyPolicy",
    ),
    "kms.restore-policy": (
        "DescribeKey",
        "GetKeyPolicy",
        "GetCallerIdentity",
        "DescribeKey",
        "GetKeyPolicy",
        "GetCallerIdentity",
        "PutKeyPolicy",
        "GetKeyPolicy",
    ),
    "kms.tag-key": (
        "DescribeKey",
        "ListResourceTags",
        "DescribeKey",
        "ListResourceTags",
        "TagResource",
        "ListResourceTags",
    ),
    "kms.enable-rotation": (
        "DescribeKey",
        "GetKeyRotationStatus",
        "DescribeKey",
        "GetKeyRotationStatus",
        "EnableKeyRotation",
        "GetKeyRotationStatus",
    ),
    "kms.rotate-now": (
        "DescribeKey",
        "ListKeyRotations",
        "DescribeKey",
        "ListKeyRotations",
        "RotateKeyOnDemand",
        "ListKeyRotations",
    ),
    "iam.deactivate-access-key": (
        "GetCallerIdentity",
        "ListAccessKeys",
        "GetAccessKeyLastUsed",
        "GetCallerIdentity",
        "ListAccessKeys",
        "GetAccessKeyLastUsed",
        "UpdateAccessKey",
        "ListAccessKeys",
        "GetAccessKeyLastUsed",
    ),
    "iam.reactivate-access-key": (
        "ListAccessKeys",
        "GetAccessKeyLastUsed",
        "ListAccessKeys",
        "GetAccessKeyLastUsed",
        "UpdateAccessKey",
        "ListAccessKeys",
        "GetAccessKeyLastUsed",
    ),
    # the key by ARN and by id, then the trail events that can blind a trail to KMS
    "cloudtrail.collect": ("DescribeKey", *("LookupEvents",) * 5),
}

#: The service of each operation that is not KMS's.
# -- the faults ----------------------------------------------------------------------------

#: Faults that retrying should fix when they pass (and must give up on when they last):
#: ``throttle`` HTTP 400 ThrottlingException (IAM/STS: Throttling) in the service's format;
#: ``http-500`` the service's internal error (KMSInternalException, InternalFailure,
#: ServiceFailure); ``http-503`` a load balancer's HTML 503; ``reset`` the connection closed
#: before an answer (ConnectionClosedError); ``unreachable`` no connection at all
#: (EndpointConnectionError); ``timeout`` no answer in time (ReadTimeoutError), the request
#: never reached AWS; ``lost`` the same timeout after AWS carried the request out.
RETRYABLE_FAULTS = ("throttle", "http-500", "http-503", "reset", "unreachable", "timeout", "lost")
#: Faults no retry can fix, each AWS's answer in the service's format:
#: AccessDeniedException (IAM/STS: AccessDenied), KMSInvalidStateException, ExpiredToken(Exception).
REFUSALS = ("access-denied", "invalid-state", "expired-token")
#: How often a passing fault strikes each call before it clears.
PASSING = (1, 2)


def applies(fault: str, operation: str) -> bool:
    """KMSInvalidStateException is a KMS answer: IAM, STS and CloudTrail never send it."""
    return fault != "invalid-state" or service_of(operation) == "kms"


# -- action x fault -> outcome -------------------------------------------------------------

RETRIED = "retried by botocore; the step succeeds"
GIVES_UP = "bounded attempts, then the step fails in one line; resume finishes the work"
REFUSED = "one attempt; the step fails in one line; resume finishes the work"
READ_BACK_REFUSED = "the change is made; its refused read-back is recorded, the step succeeds"
CHECKED = "not re-sent: AWS shows the change was made; one attempt, the step succeeds"
NOT_RESENT = "not re-sent blindly: one attempt, the step fails in one line; resume sends it once"

#: What each fault leads to, whichever action meets it: ``<fault>*<n>`` passes after n
#: attempts, ``<fault>`` lasts until it is removed.
DEFAULT_OUTCOME = {
    **{f"{fault}*{n}": RETRIED for fault in RETRYABLE_FAULTS for n in PASSING},
    **dict.fromkeys(RETRYABLE_FAULTS, GIVES_UP),
    **dict.fromkeys(REFUSALS, REFUSED),
}
#: action x fault -> outcome: every action meets each fault the same way, call by call,
#: except where ``CALL_OUTCOMES`` says otherwise.
OUTCOMES: dict[tuple[str, str], str] = {
    (action, fault): outcome for action in CALLS for fault, outcome in DEFAULT_OUTCOME.items()
}
#: (action, call, fault) -> outcome, where one call departs from its action's row.
CALL_OUTCOMES: dict[tuple[str, str, str], str] = {
    # AccessDenied reading the policy back after putting it is what a policy that shuts the
    # caller out answers: the put is done, the step records that it could not read it back
    **{
        (action, "GetKeyPolicy#3", "access-denied"): READ_BACK_REFUSED
        for action in ("kms.quarantine", "kms.put-policy", "kms.restore-policy")
    },
    # a second RotateKeyOnDemand rotates again: never re-sent after a response was lost
    **{
        ("kms.rotate-now", "RotateKeyOnDemand#1", variant): CHECKED
        for variant in ("lost", *(f"lost*{n}" for n in PASSING))
    },
    **{
        ("kms.rotate-now", "RotateKeyOnDemand#1", variant): NOT_RESENT
        for fault in ("timeout", "reset")
        for variant in (fault, *(f"{fault}*{n}" for n in PASSING))
    },
}
#: Known defects outside the files these tests cover: (action, operation, fault) -> why.
#: Strict: once fixed, the case passes and the mark must go.
KNOWN: dict[tuple[str, str, str], str] = {}


def outcome(action: str, operation: str, call: int, variant: str) -> str:
    """What ``variant`` of a fault on the ``call``-th ``operation`` of ``action`` leads to."""
    return CALL_OUTCOMES.get((action, f"{operation}#{call}", variant), OUTCOMES[action, variant])


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    """moto for the whole module (each case seeds its own key, grant and user in it)."""
    # Speed only (the module has over a thousand runs): bundles are written and read back
    # in memory where the system has a RAM-backed folder.
    memory = Path("/dev/shm")
    root = Path(
        tempfile.mkdtemp(prefix="kmsir-faults-", dir=memory)
        if memory.is_dir() and os.access(memory, os.W_OK)
        else tmp_path_factory.mktemp("faults")
    )
    try:
        with faulty_moto(root) as world:
            yield world
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def layer(moto: Moto, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultLayer]:
    """The fault layer, fresh for the test; botocore's backoff recorded instead of slept, and
    no request paced (pacing is tested in test_aws.py)."""
    import time

    import botocore.endpoint

    from kmsir.aws import pacing

    moto.layer.reset()
    monkeypatch.setattr(botocore.endpoint, "time", SleepRecorder(time))
    monkeypatch.setattr(pacing, "PACING", pacing.Pacing({}))
    yield moto.layer
    moto.layer.reset()


def backoff() -> list[float]:
    """The backoff sleeps botocore asked for in this test."""
    import botocore.endpoint

    recorder = botocore.endpoint.time
    assert isinstance(recorder, SleepRecorder)
    return recorder.slept


@pytest.fixture(scope="module")
def tally() -> Iterator[dict[str, Counter[str]]]:
    """Faults injected per action over the module (``KMSIR_FAULT_TALLY=FILE`` writes them,
    for the README's figures; run with ``-n 0`` so one process sees every case)."""
    counts: dict[str, Counter[str]] = {}
    yield counts
    out = os.environ.get("KMSIR_FAULT_TALLY")
    if out:
        Path(out).write_text(json.dumps({a: dict(c) for a, c in counts.items()}, indent=2))


# -- playbooks and runs --------------------------------------------------------------------

POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "Admins",
            "Effect": "Allow",
            "Principal": {"AWS": ACCOUNT},
            "Action": "kms:*",
            "Resource": "*",
        }
    ],
}


def params(action: str, world: World) -> dict[str, Any]:
    """The ``with:`` of the step under test."""
    key = {"key": world.key_id}
    return {
        "kms.schedule-deletion": {**key, "pending_window_days": 7},
        "kms.revoke-grants": {**key, "grant_ids": [world.grant_id]},
        "kms.quarantine": {**key, "break_glass": [CALLER]},
        "kms.put-policy": {**key, "policy": POLICY},
        "kms.restore-policy": {**key, "from": "quarantine"},
        "kms.enable-rotation": {**key, "period_days": 90},
        "iam.deactivate-access-key": {"user": world.user, "access_key_id": world.access_key_id},
        "iam.reactivate-access-key": {"user": world.user, "access_key_id": world.access_key_id},
        "cloudtrail.collect": {**key, "source": "lookup", "since": "7d"},
    }.get(action, key)


def playbook(
    workdir: Path, action: str, world: World, *, on_error: str = "stop", retries: int = 0
) -> tuple[LoadedPlaybook, str]:
    """A run of three steps: one before (a note, or the quarantine a restore needs), the
    action under test (``act``), a note after it. Returns it and the step after which the
    faults are armed."""
    before: dict[str, Any] = {"id": "first", "action": "note", "with": {"text": "begin"}}
    if action == "kms.restore-policy":
        before = {
            "id": "quarantine",
            "action": "kms.quarantine",
            "with": {"key": world.key_id, "break_glass": [CALLER]},
        }
    book = {
        "id": "faults",
        "title": "One action under faults",
        "steps": [
            before,
            {
                "id": "act",
                "action": action,
                "with": params(action, world),
                "on_error": on_error,
                "retries": retries,
            },
            {"id": "after", "action": "note", "with": {"text": "went on"}},
        ],
    }
    path = workdir / "faults.yaml"
    path.write_text(json.dumps(book))  # JSON is YAML
    return load_playbook(path), str(before["id"])


@dataclass
class Run:
    """What a case's run (and its resume) left."""

    result: RunResult
    step_sleeps: list[float]

    @property
    def bundle(self) -> Path:
        return self.result.bundle

    def journal(self) -> list[dict[str, Any]]:
        text = (self.bundle / "journal.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines()]

    def entries(self, type_: str, step: str = "act") -> list[dict[str, Any]]:
        return [e for e in self.journal() if e["type"] == type_ and e.get("step") == step]

    def status(self, step: str) -> str:
        return next(r.status for r in self.result.steps if r.step_id == step)


class Disarm(NullReporter):
    """Disarms the fault layer once the step under test has an outcome: the faults and the
    calls counted are the step's, not those of the run's closing re-read of its keys."""

    def __init__(self, layer: FaultLayer) -> None:
        self.layer = layer

    def step(self, step_id: str, title: str, status: str, summary: str) -> None:
        if step_id == "act":
            self.layer.armed = False


def engine(moto: Moto, arm_after: str | None, step_sleeps: list[float]) -> Engine:
    layer = moto.layer

    def arm(step_id: str) -> list[dict[str, Any]]:
        if step_id == arm_after:
            layer.armed = True
        return []

    return Engine(
        actions=actions.registry(),
        clients=ClientFactory(session_factory=lambda: moto.session, region=REGION, guard_send=True),
        prompter=ScriptedPrompter({}, source="test answers", fallback=NoPrompter()),
        reporter=Disarm(layer),
        sleep=step_sleeps.append,
        after_step=arm,
    )


def options(evidence: Path) -> RunOptions:
    return RunOptions(incident_id=INCIDENT, evidence_dir=evidence, mode="sandbox", yes=True)


def run(moto: Moto, action: str, world: World, **step: Any) -> Run:
    workdir = moto.workdir()
    loaded, arm_after = playbook(workdir, action, world, **step)
    sleeps: list[float] = []
    result = engine(moto, arm_after, sleeps).run(loaded, {}, options(workdir / "ev"))
    return Run(result, sleeps)


def resume(moto: Moto, bundle: Path) -> Run:
    state = resuming.load(bundle)
    sleeps: list[float] = []
    result = engine(moto, None, sleeps).resume(
        load_playbook(bundle / "playbook.yaml"), state, options(bundle.parent.parent)
    )
    return Run(result, sleeps)


# -- what a done action left in AWS --------------------------------------------------------


def done(moto: Moto, action: str, world: World, outcome: Run) -> None:
    """Assert AWS (or the step's outputs, for the read-only actions) shows the work done."""
    kms, iam = moto.client("kms"), moto.client("iam")

    def key_state() -> str:
        return str(kms.describe_key(KeyId=world.key_id)["KeyMetadata"]["KeyState"])

    def statements() -> list[str]:
        policy = json.loads(kms.get_key_policy(KeyId=world.key_id, PolicyName="default")["Policy"])
        return [str(s.get("Sid")) for s in policy["Statement"]]

    def key_status() -> str:
        keys = iam.list_access_keys(UserName=world.user)["AccessKeyMetadata"]
        return str(keys[0]["Status"])

    outputs = outcome.entries("step-succeeded")[-1]["data"]["outputs"]
    quarantine = f"kmsir-quarantine-{INCIDENT}"
    checks: dict[str, Callable[[], bool]] = {
        "kms.snapshot": lambda: outputs["grant_ids"] == [world.grant_id],
        "kms.disable-key": lambda: key_state() == "Disabled",
        "kms.enable-key": lambda: key_state() == "Enabled",
        "kms.schedule-deletion": lambda: key_state() == "PendingDeletion",
        "kms.cancel-deletion": lambda: key_state() == "Disabled",
        "kms.revoke-grants": lambda: kms.list_grants(KeyId=world.key_id)["Grants"] == [],
        "kms.quarantine": lambda: quarantine in statements(),
        "kms.put-policy": lambda: statements() == ["Admins"],
        "kms.restore-policy": lambda: quarantine not in statements(),
        "kms.tag-key": lambda: (
            kms.list_resource_tags(KeyId=world.key_id)["Tags"]
            == [{"TagKey": "kmsir-incident", "TagValue": INCIDENT}]
        ),
        "kms.enable-rotation": lambda: (
            itemgetter("KeyRotationEnabled", "RotationPeriodInDays")(
                kms.get_key_rotation_status(KeyId=world.key_id)
            )
            == (True, 90)
        ),
        "kms.rotate-now": lambda: len(kms.list_key_rotations(KeyId=world.key_id)["Rotations"]) == 1,
        "iam.deactivate-access-key": lambda: key_status() == "Inactive",
        "iam.reactivate-access-key": lambda: key_status() == "Active",
        "cloudtrail.collect": lambda: outputs["count"] == 1,
    }
    assert checks[action](), f"{action}: the work is not done in AWS"


def one_line(message: str | None) -> str:
    assert message, "no error message"
    assert "\n" not in message and "Traceback" not in message, message
    assert len(message) < 600, message
    return message


def expected_words(fault: str, operation: str) -> list[str]:
    """What the step's one line must say: the operation, and the AWS error or the fault."""
    service = service_of(operation)
    words = {
        "http-503": ["AWS 503"],
        "reset": ["Connection was closed"],
        "unreachable": ["Could not connect"],
        "timeout": ["Read timeout"],
        "lost": ["Read timeout"],
        "access-denied": [f"missing IAM permission {service}:{operation}"],
        "expired-token": ["refresh", "kmsir resume"],
    }.get(fault, [])
    code = code_of(fault, service)
    return [operation, *([f"AWS {code}"] if code else []), *words]


# -- the cases -----------------------------------------------------------------------------


#: Calls struck one by one, of an operation an action sends again and again down the same
#: path: the collect's LookupEvents of each query (by key, then each trail event) past the
#: second are struck only all at once, by
#: ``test_passing_fault_on_every_call_is_retried_and_the_step_succeeds``.
REPEATS_STRUCK = {("cloudtrail.collect", "LookupEvents"): 2}


def numbered(action: str) -> list[tuple[str, int]]:
    """The action's calls as (operation, its nth call)."""
    seen: Counter[str] = Counter()
    calls = []
    for operation in CALLS[action]:
        seen[operation] += 1
        calls.append((operation, seen[operation]))
    return calls


def lasting_faults(action: str, position: int, operation: str, call: int) -> tuple[str, ...]:
    """The lasting faults and refusals struck on one call (``position`` in the action's
    calls). Every one on each change and on the action's first read. A later read fails the
    same way whatever the fault (botocore's retries, then the step fails there; a refusal,
    at once), and the wording of each fault's line is the first read's: so one retryable
    fault and one refusal, in turn, so that every fault still meets reads in every position
    across the actions (and the read-backs ``CALL_OUTCOMES`` names keep theirs)."""
    reads = [n for n, op in enumerate(CALLS[action]) if is_read_only(op)]
    if not is_read_only(operation) or position == reads[0]:
        return RETRYABLE_FAULTS + REFUSALS
    turn = reads.index(position) + list(CALLS).index(action)
    refusals = [f for f in REFUSALS if applies(f, operation)]
    special = tuple(
        fault
        for fault in RETRYABLE_FAULTS + REFUSALS
        if (action, f"{operation}#{call}", fault) in CALL_OUTCOMES
    )
    chosen = (RETRYABLE_FAULTS[turn % len(RETRYABLE_FAULTS)], refusals[turn % len(refusals)])
    return tuple(dict.fromkeys(chosen + special))


def call_cases() -> list[Any]:
    """(action, operation, nth call, fault, times) for every call each action makes: the
    lasting faults and refusals ``lasting_faults`` picks, and the passing faults whose
    outcome on that call departs from the action's row (the others are struck on every call
    at once, below)."""
    cases = []
    for action in CALLS:
        for position, (operation, call) in enumerate(numbered(action)):
            if call > REPEATS_STRUCK.get((action, operation), call):
                continue  # the same request again, down the same path as the ones struck
            variants: list[tuple[str, int | None]] = [
                (fault, None) for fault in lasting_faults(action, position, operation, call)
            ]
            variants += [
                (fault, times)
                for fault in RETRYABLE_FAULTS
                for times in PASSING
                if (action, f"{operation}#{call}", f"{fault}*{times}") in CALL_OUTCOMES
            ]
            for fault, times in variants:
                if not applies(fault, operation):
                    continue
                why = KNOWN.get((action, operation, fault)) if times is None else None
                variant = fault if times is None else f"{fault}*{times}"
                cases.append(
                    pytest.param(
                        action,
                        operation,
                        call,
                        fault,
                        times,
                        id=f"{action}-{operation}#{call}-{variant}",
                        marks=[pytest.mark.xfail(reason=why, strict=True)] if why else [],
                    )
                )
    return cases


@pytest.mark.parametrize("action", list(CALLS))
def test_calls_are_every_call_the_action_makes(moto: Moto, layer: FaultLayer, action: str) -> None:
    world = moto.world(action)
    outcome = run(moto, action, world)
    assert outcome.result.status == "succeeded", outcome.result.error
    assert tuple(a.operation for a in layer.attempts) == CALLS[action]
    done(moto, action, world, outcome)


@pytest.mark.parametrize("times", PASSING, ids=lambda n: f"{n}x")
@pytest.mark.parametrize("fault", RETRYABLE_FAULTS)
@pytest.mark.parametrize("action", list(CALLS))
def test_passing_fault_on_every_call_is_retried_and_the_step_succeeds(
    moto: Moto,
    layer: FaultLayer,
    tally: dict[str, Counter[str]],
    action: str,
    fault: str,
    times: int,
) -> None:
    variant = f"{fault}*{times}"
    assert OUTCOMES[action, variant] == RETRIED
    spared = {  # calls with an outcome of their own are cases of the test below
        f"{operation}#{call}"
        for operation, call in numbered(action)
        if outcome(action, operation, call, variant) != RETRIED
    }
    world = moto.world(action)
    layer.rules = [Rule(fault, times=times, spare=frozenset(spared))]
    outcome_ = run(moto, action, world)
    tally.setdefault(action, Counter()).update(layer.injected)

    assert outcome_.result.status == "succeeded", outcome_.result.error
    assert outcome_.status("act") == "succeeded"
    done(moto, action, world, outcome_)
    # botocore retried each call (``times`` faults, then the answer), backing off in between
    calls = Counter(f"{a.operation}#{a.call}" for a in layer.attempts)
    struck = [c for c in calls if c not in spared]
    assert {calls[c] for c in struck} == {times + 1}
    first_attempts = [a.operation for a in layer.attempts if a.attempt == 1]
    if fault == "lost":  # a refused retry of a change was checked against the key: one more read
        changes = [c for c in CALLS[action] if not is_read_only(c)]
        assert [c for c in first_attempts if not is_read_only(c)] == changes
    else:
        assert first_attempts == list(CALLS[action])
    assert len(backoff()) == times * len(struck)
    assert 0 < max(backoff()) <= 20
    assert outcome_.step_sleeps == []  # kmsir's own step retries were not needed
    if fault != "lost":  # a lost response's retry re-sends what AWS already did, by design
        assert all(n == 1 for n in layer.carried_out().values()), layer.carried_out()
    assert integrity.verify(outcome_.bundle) == []


@pytest.mark.parametrize(("action", "operation", "call", "fault", "times"), call_cases())
def test_fault_on_each_call(
    moto: Moto,
    layer: FaultLayer,
    tally: dict[str, Counter[str]],
    action: str,
    operation: str,
    call: int,
    fault: str,
    times: int | None,
) -> None:
    expected = outcome(action, operation, call, fault if times is None else f"{fault}*{times}")
    world = moto.world(action)
    layer.rules = [Rule(fault, operation, call, times)]
    first = run(moto, action, world, retries=STEP_RETRIES)
    tally.setdefault(action, Counter()).update(layer.injected)
    attempts = layer.of(operation, since_call=call)
    assert integrity.verify(first.bundle) == []

    if expected in (READ_BACK_REFUSED, CHECKED):
        assert first.result.status == "succeeded", first.result.error
        assert first.status("act") == "succeeded"
        done(moto, action, world, first)
        if expected == READ_BACK_REFUSED:
            (after,) = first.bundle.glob("artifacts/*-act/policy-after.json")
            assert json.loads(after.read_text())["ReadBack"] is False
            assert (
                "reading it back was refused"
                in first.entries("step-succeeded")[0]["data"]["summary"]
            )
        else:
            assert len(attempts) == 1
            assert layer.carried_out()[operation] == 1
        return

    # the run stops at the step, with one clear line naming the operation and the error
    assert first.result.status == "failed"
    assert first.status("act") == "failed"
    assert first.entries("step-succeeded", "after") == []  # on_error: stop
    message = one_line(first.result.error)
    for word in expected_words(fault, operation):
        assert word in message, f"{word!r} not in {message!r}"
    # the journal says why
    (failed,) = first.entries("step-failed")
    assert failed["data"]["error"] == message
    code = code_of(fault, service_of(operation))
    if code is not None:
        answers = [
            (c["data"]["operation"], c["data"]["error_code"])
            for c in first.journal()
            if c["type"] == "api-call"
        ]
        assert (operation, code) in answers

    # attempts are bounded: botocore's, times kmsir's step runs for a RETRYABLE error only
    runs = 1 + len(first.entries("step-retry"))
    if expected in (REFUSED, NOT_RESENT):
        assert len(attempts) == 1
        assert runs == 1 and first.step_sleeps == []
    else:
        assert expected == GIVES_UP
        assert len(attempts) == ATTEMPTS * runs <= MAX_ATTEMPTS_PER_CALL
        # ``retries:`` re-runs the action, not the preview before it (steps.py)
        in_run = bool(first.entries("step-started"))
        assert runs == (1 + STEP_RETRIES if code in RETRYABLE and in_run else 1)
        assert len(backoff()) == (ATTEMPTS - 1) * runs
    assert len(layer.attempts) <= len(CALLS[action]) * MAX_ATTEMPTS_PER_CALL

    # resumed once the fault is gone: the work is finished, no change is carried out twice
    layer.rules = []
    again = resume(moto, first.bundle)
    assert again.result.status == "succeeded", again.result.error
    assert again.status("act") == "succeeded"
    assert again.entries("step-succeeded", "after")
    done(moto, action, world, again)
    if fault != "lost":
        assert all(n == 1 for n in layer.carried_out().values()), layer.carried_out()
    assert integrity.verify(again.bundle) == []


def main_operation(action: str) -> str:
    """The call that does the action's work: its change, or its last read."""
    calls = CALLS[action]
    return next((c for c in calls if not is_read_only(c)), calls[-1])


@pytest.mark.parametrize(
    ("action", "fault"),
    [
        (action, fault)
        for action in CALLS
        for fault in ("throttle", "reset", *REFUSALS)
        # only the faults the action's service answers with (no KMSInvalidState from IAM)
        if applies(fault, main_operation(action))
    ],
)
def test_on_error_continue_goes_on_to_the_next_step(
    moto: Moto, layer: FaultLayer, tally: dict[str, Counter[str]], action: str, fault: str
) -> None:
    operation = main_operation(action)
    world = moto.world(action)
    layer.rules = [Rule(fault, operation)]
    outcome_ = run(moto, action, world, on_error="continue")
    tally.setdefault(action, Counter()).update(layer.injected)

    assert outcome_.status("act") == "failed"
    assert outcome_.status("after") == "succeeded"
    assert outcome_.result.status == "failed"  # the run says a step failed
    one_line(outcome_.result.error)
    assert integrity.verify(outcome_.bundle) == []


def test_a_step_retry_after_the_change_was_made_reports_the_change(
    moto: Moto, layer: FaultLayer
) -> None:
    world = moto.world("kms.disable-key")
    # DisableKey is carried out; reading the key back then fails all of botocore's attempts,
    # and kmsir's step retry (retries: 1, a RETRYABLE error) runs the action again
    layer.rules = [Rule("http-500", "DescribeKey", 3, times=ATTEMPTS)]
    outcome_ = run(moto, "kms.disable-key", world, retries=STEP_RETRIES)

    assert outcome_.result.status == "succeeded", outcome_.result.error
    done(moto, "kms.disable-key", world, outcome_)
    (succeeded,) = outcome_.entries("step-succeeded")
    assert succeeded["data"]["status"] == "succeeded"  # not "already Disabled: nothing sent"
    assert succeeded["data"]["inverse"] == "kms.enable-key"  # what rollback undoes


def test_a_grant_someone_else_revoked_while_throttled_is_not_claimed(
    moto: Moto, layer: FaultLayer
) -> None:
    """RevokeGrant is throttled, someone else revokes the grant meanwhile, the retry is told
    NotFound: the grant is recorded as gone by another hand, not as revoked by this run (a
    throttled attempt did nothing; only a lost response or a 5xx may have)."""
    world = moto.world("kms.revoke-grants")
    kms = moto.client("kms")
    layer.rules = [Rule("throttle", "RevokeGrant", 1, times=1)]
    layer.meanwhile = lambda _: kms.revoke_grant(KeyId=world.key_id, GrantId=world.grant_id)
    outcome_ = run(moto, "kms.revoke-grants", world)
    assert outcome_.result.status == "succeeded", outcome_.result.error
    (succeeded,) = outcome_.entries("step-succeeded", "act")
    assert succeeded["data"]["outputs"]["revoked"] == []
    assert succeeded["data"]["outputs"]["already_gone"] == [world.grant_id]

"""Scenario injects: the world reacts after a given step, once, journaled, and survives a crash.

The rogue-grant scenario's inject: once the responder has disabled the key, the attacker
(still holding the CI role) schedules its deletion; the playbook reads the key again and
cancels it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest

from kmsir.errors import PlaybookError, TemplateError, UsageError
from kmsir.evidence import entries
from kmsir.sandbox import Sandbox
from kmsir.sandbox import scenario as scenarios

from .conftest import bundles, played, refused_scenario
from .journalkit import RUN, failed, skipped, started, succeeded, view_of
from .test_crash import Crashkit, normalised, only_bundle, verify


@pytest.fixture(scope="module")
def crashkit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crashkit]:
    """A crashkit server (``test_crash``): kmsir runs in processes forked from it."""
    server = Crashkit(tmp_path_factory.mktemp("crashkit-output"))
    yield server
    server.close()


def journal(bundle: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (bundle / "journal.jsonl").read_text().splitlines()]


def key_state(sandbox: Sandbox) -> str:
    kms = sandbox.session().client("kms")
    return str(kms.describe_key(KeyId=sandbox.keys["payments"]["id"])["KeyMetadata"]["KeyState"])


def test_an_inject_fires_after_its_step_only_and_once(rogue_grant: Sandbox) -> None:
    assert rogue_grant.after_step("snapshot") == []
    assert key_state(rogue_grant) == "Enabled"
    (record,) = rogue_grant.after_step("disable")
    assert key_state(rogue_grant) == "PendingDeletion"
    assert record["after"] == "disable" and record["inject"] == 0
    assert record["trigger"] == "step" and "before" not in record
    assert record["say"].startswith("The attacker's Decrypt calls fail now")
    assert "alias/payments-prod" in record["say"]  # a template over the world
    (call,) = record["calls"]
    assert (call["operation"], call["error_code"]) == ("ScheduleKeyDeletion", None)
    assert call["params"] == {"KeyId": rogue_grant.keys["payments"]["id"], "PendingWindowInDays": 7}
    assert record["events"] == ["ScheduleKeyDeletion"]
    assert rogue_grant.after_step("disable") == []  # at most once


def test_an_inject_adds_its_events_to_lookup_and_the_trail_bucket(rogue_grant: Sandbox) -> None:
    (record,) = rogue_grant.after_step("disable")
    session = rogue_grant.session()
    found = session.client("cloudtrail").lookup_events(
        LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "ScheduleKeyDeletion"}]
    )["Events"]
    (event,) = [json.loads(e["CloudTrailEvent"]) for e in found]
    assert event["userIdentity"]["arn"].endswith("assumed-role/ci-deploy/build-4821")
    assert event["eventTime"] == record["at"][:19] + "Z"
    assert event["requestParameters"]["pendingWindowInDays"] == 7
    listed = session.client("s3").list_objects_v2(Bucket=rogue_grant.trail_bucket)["Contents"]
    assert any(o["Key"].endswith("_inject00.json.gz") for o in listed)


def test_nothing_fires_in_check_mode(rogue_grant: Sandbox) -> None:
    rogue_grant.client_factory().check_mode = True
    assert rogue_grant.after_step("disable") == []
    assert key_state(rogue_grant) == "Enabled"


def test_the_run_journals_the_inject_right_after_its_step(tmp_path: Path) -> None:
    with played("rogue-grant", tmp_path) as (sandbox, result):
        assert key_state(sandbox) == "Disabled"  # the deletion was cancelled, then disabled
    entries = journal(result.bundle)
    injects = [e for e in entries if e["type"] == "inject"]
    assert len(injects) == 1 and injects[0]["step"] == "disable"
    at = entries.index(injects[0])
    assert entries[at - 1]["type"] == "step-succeeded" and entries[at - 1]["step"] == "disable"
    outcome = {
        e["step"]: e["data"] for e in entries if e["type"] in ("step-succeeded", "step-skipped")
    }
    assert outcome["snapshot"]["outputs"]["state"] == "Enabled"
    assert outcome["disable"]["after"]["state"] == "Disabled"
    assert outcome["recheck"]["outputs"]["state"] == "PendingDeletion"
    assert outcome["cancel"]["before"]["state"] == "PendingDeletion"


def test_the_report_timeline_shows_the_inject(demo_bundle: Path) -> None:
    report = (demo_bundle / "report.md").read_text()
    (row,) = [line for line in report.splitlines() if "| inject |" in line]
    assert row.split("|")[2].strip() == "`disable`"
    assert "The attacker's Decrypt calls fail now" in row
    assert "(sandbox: ScheduleKeyDeletion; CloudTrail +1: ScheduleKeyDeletion)" in row
    assert 'class=" inject"' in (demo_bundle / "report.html").read_text()


def test_replay_refires_journaled_injects_and_fires_owed_ones(tmp_path: Path) -> None:
    world = scenarios.load("rogue-grant")
    with Sandbox(world) as first:
        (record,) = first.after_step("disable")
        now = first.now
    inject = ("disable", entries.Inject(record=record))
    with Sandbox(world, now=now) as again:  # the inject was journaled: fired again, once
        result = again.replay(view_of((None, RUN), succeeded("disable"), inject))
        assert result == {"replayed": 0, "refused": [], "injects_replayed": 1}
        assert key_state(again) == "PendingDeletion"
        assert again.after_step("disable") == []
    with Sandbox(world, now=now) as again:  # its step was done, the inject never journaled
        result = again.replay(view_of((None, RUN), succeeded("disable")))
        assert [r["after"] for r in result["injects"]] == ["disable"]
        assert key_state(again) == "PendingDeletion"
        assert again.after_step("disable") == []
    with Sandbox(world, now=now) as again:  # the step was in flight: it fires after its rerun
        result = again.replay(view_of((None, RUN), started("disable")))
        assert "injects" not in result and key_state(again) == "Enabled"
        assert len(again.after_step("disable")) == 1


def test_replay_follows_the_journal_order_of_calls_and_injects() -> None:
    """The attacker's deletion (an inject after ``disable``) came before the responder
    cancelled it: replayed in that order, the cancellation applies and the key is Disabled."""
    world = scenarios.load("rogue-grant")
    with Sandbox(world) as first:
        key = first.keys["payments"]["id"]
        (record,) = first.after_step("disable")
        now = first.now

    def sent(step: str, operation: str, call: int) -> list[tuple[str, entries.Journaled]]:
        shown = {"service": "kms", "operation": operation, "params": {"KeyId": key}}
        return [
            (step, entries.ApiIntent(**shown, region="eu-west-1", call=call)),
            (step, entries.ApiCall(**shown, region="eu-west-1", http_status=200, call=call)),
        ]

    journal = [
        (None, RUN),
        started("disable"),
        *sent("disable", "DisableKey", 1),
        succeeded("disable"),
        ("disable", entries.Inject(record=record)),
        started("cancel"),
        *sent("cancel", "CancelKeyDeletion", 2),
        succeeded("cancel"),
    ]
    with Sandbox(world, now=now) as again:
        result = again.replay(view_of(*journal))
        assert result == {"replayed": 2, "refused": [], "injects_replayed": 1}
        assert key_state(again) == "Disabled"


def test_replay_rebuilds_the_world_without_refused_calls() -> None:
    world = scenarios.load("rogue-grant")
    with Sandbox(world) as first:
        key = first.keys["payments"]["id"]
        now = first.now
    disable = {"service": "kms", "operation": "DisableKey", "params": {"KeyId": key}}
    delete = {
        "service": "kms",
        "operation": "ScheduleKeyDeletion",
        "params": {"KeyId": key, "PendingWindowInDays": 7},
    }
    journal: list[tuple[str | None, entries.Journaled]] = [
        (None, RUN),
        started("disable"),
        ("disable", entries.ApiIntent(**disable, region="eu-west-1", call=1)),
        ("disable", entries.ApiCall(**disable, region="eu-west-1", http_status=200, call=1)),
        ("disable", entries.ApiIntent(**delete, region="eu-west-1", call=2)),
        (
            "disable",
            entries.ApiCall(
                **delete,
                region="eu-west-1",
                http_status=400,
                error_code="AccessDeniedException",
                call=2,
            ),
        ),
    ]
    with Sandbox(world, now=now) as again:
        assert again.keys["payments"]["id"] == key  # the same seeded ids
        assert again.replay(view_of(*journal)) == {"replayed": 1, "refused": []}
        assert key_state(again) == "Disabled"


@pytest.mark.parametrize(
    ("ends", "owed"),
    [
        ([succeeded("disable")], True),
        ([succeeded("disable", status="already")], True),
        ([skipped("disable")], False),
        ([failed("disable")], False),
        ([succeeded("disable"), started("disable")], False),
        ([failed("disable"), succeeded("disable")], True),
    ],
    ids=["succeeded", "already", "skipped", "failed", "started-again", "failed-then-done"],
)
def test_only_a_step_that_was_done_owes_its_injects(
    ends: list[tuple[str, entries.Journaled]], owed: bool
) -> None:
    """An inject is owed on resume only if its step's last outcome is ``step-succeeded`` and
    it was not started again since."""
    with Sandbox(scenarios.load("rogue-grant")) as world:
        result = world.replay(view_of((None, RUN), started("disable"), *ends))
        assert ("injects" in result) is owed
        assert key_state(world) == ("PendingDeletion" if owed else "Enabled")


def test_nothing_owed_fires_when_replaying_a_check_mode_run() -> None:
    check = msgspec.structs.replace(RUN, mode="check")
    with Sandbox(scenarios.load("rogue-grant")) as world:
        result = world.replay(view_of((None, check), started("disable"), succeeded("disable")))
        assert result == {"replayed": 0, "refused": []}
        assert key_state(world) == "Enabled"


def _answers(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_run_stopped_at_the_steps_preview_fires_its_inject_once_the_step_is_done(
    tmp_path: Path, crashkit: Crashkit
) -> None:
    """Stopped at ``disable`` for want of an answer (journaled ``step-failed``), then resumed
    with the answer: the world is rebuilt without the inject, which fires once, right after
    ``disable`` succeeds in the resumed run."""
    run = ["run", "kms-key-compromise", "--sandbox", "rogue-grant", "--incident", "INC-7"]
    run += ["--evidence-dir", "ev"]
    partial = _answers(tmp_path, "partial.yaml", "decide: revoke-grants-and-disable\nrevoke: y\n")
    stopped = crashkit([*run, "--answers", partial], tmp_path)
    assert stopped.returncode == 1 and "no answer for 'disable'" in stopped.stderr
    (bundle,) = bundles(tmp_path / "ev" / "INC-7")
    before = journal(bundle)
    assert [e["type"] for e in before if e.get("step") == "disable"][-1] == "step-failed"
    assert not [e for e in before if e["type"] == "inject"]

    full = _answers(tmp_path, "full.yaml", "disable: approve\ncancel: approve\nactors: none\n")
    resumed = crashkit(["resume", str(bundle), "--answers", full], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert verify(bundle)[0] == 0
    entries = journal(bundle)
    (again,) = [e for e in entries if e["type"] == "run-resumed"]
    assert "injects" not in again["data"]["sandbox_replay"]  # nothing fired at the rebuild
    (inject,) = [e for e in entries if e["type"] == "inject"]
    at = entries.index(inject)
    done = entries[at - 1]
    assert (done["type"], done["step"]) == ("step-succeeded", "disable")
    assert entries.index(again) < at - 1
    assert done["data"]["before"]["state"] == "Enabled"  # disabled before the attacker struck
    steps = {e["step"]: e for e in entries if e["type"] in ("step-succeeded", "step-skipped")}
    assert steps["recheck"]["data"]["outputs"]["state"] == "PendingDeletion"
    assert steps["cancel"]["type"] == "step-succeeded"


def test_a_skipped_step_fires_no_inject(tmp_path: Path) -> None:
    with played("rogue-grant", tmp_path, answers={"disable": "skip"}) as (sandbox, result):
        assert key_state(sandbox) == "Enabled"
    entries = journal(result.bundle)
    assert not [e for e in entries if e["type"] == "inject"]
    steps = {e["step"]: e for e in entries if e["type"] in ("step-succeeded", "step-skipped")}
    assert steps["disable"]["type"] == "step-skipped"
    assert steps["recheck"]["data"]["outputs"]["state"] == "Enabled"
    assert steps["cancel"]["type"] == "step-skipped"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, crashkit: Crashkit) -> tuple[str, int]:
    """An uninterrupted demo: its normalised report and the journal line of the inject."""
    tmp = tmp_path_factory.mktemp("reference")
    done = crashkit(["demo", "--evidence-dir", "ev"], tmp)
    assert done.returncode == 0, done.stderr
    bundle = only_bundle(tmp / "ev")
    (inject,) = [e for e in journal(bundle) if e["type"] == "inject"]
    return normalised((bundle / "report.md").read_text(), tmp / "ev"), int(inject["seq"])


@pytest.mark.parametrize("offset", [-1, 0], ids=["before-journaled", "journaled"])
def test_a_crash_around_the_inject_neither_loses_nor_repeats_it(
    offset: int, tmp_path: Path, reference: tuple[str, int], crashkit: Crashkit
) -> None:
    """Killed just before the inject was journaled (its step had ended), or just after: the
    resumed run has the attacker's deletion in its world before going on, journals the
    inject exactly once, and reports the same as an uninterrupted run."""
    reference_report, line = reference
    crashed = crashkit(["demo", "--evidence-dir", "ev"], tmp_path, kill=f"entry:{line + offset}")
    assert crashed.returncode == -9, crashed.stderr[-500:]
    bundle = only_bundle(tmp_path / "ev")
    resumed = crashkit(["resume", str(bundle)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert verify(bundle)[0] == 0

    entries = journal(bundle)
    (again,) = [e for e in entries if e["type"] == "run-resumed"]
    replay = again["data"]["sandbox_replay"]
    fired = [e for e in entries if e["type"] == "inject"] + replay.get("injects", [])
    assert len(fired) == 1
    if offset == 0:
        assert replay["injects_replayed"] == 1 and "injects" not in replay
    else:
        assert "injects_replayed" not in replay and len(replay["injects"]) == 1
    recheck = next(e for e in entries if e["type"] == "step-succeeded" and e["step"] == "recheck")
    assert recheck["data"]["outputs"]["state"] == "PendingDeletion"
    report = normalised((bundle / "report.md").read_text(), tmp_path / "ev")
    assert report == reference_report
    assert report.count("| inject |") == 1


def _scenario(tmp_path: Path, injects: str) -> Path:
    text = (scenarios.scenario_dir() / "rogue-grant.yaml").read_text()
    head = text[: text.index("injects:")]
    path = tmp_path / "bad.yaml"
    path.write_text(head + "injects:\n" + injects)
    return path


@pytest.mark.parametrize(
    ("inject", "message"),
    [
        (
            "  - {after: revok, say: hi}\n",
            "playbook kms-key-compromise has no step 'revok' (did you mean 'revoke'?)",
        ),
        (
            "  - {after: revoke, say: hi, calls: [{call: DisableKey, key: paymnts}]}\n",
            "unknown key 'paymnts' (did you mean 'payments'?)",
        ),
        (
            "  - {after: revoke, say: hi, calls: [{call: DeleteKey, key: payments}]}\n",
            "does not match any of the expected tags",
        ),
        (
            "  - {after: revoke, say: hi, calls: [{call: ScheduleKeyDeletion, key: payments,"
            " pending_window_days: 3}]}\n",
            "greater than or equal to 7",
        ),
        (
            "  - {after: revoke, say: hi, history: [{event: Decrypt, identity: nobody}]}\n",
            "unknown identity 'nobody'",
        ),
        ('  - after: revoke\n    say: "two\\nlines"\n', "say: one line"),
        (
            "  - {after: revoke, after_minutes: 5, say: hi}\n",
            "injects.0: Value error, give exactly one of after (a step id) and after_minutes",
        ),
        ("  - {title: soon, say: hi}\n", "give exactly one of after (a step id) and after_m"),
        ("  - {after_minutes: -1, say: hi}\n", "greater than or equal to 0"),
    ],
)
def test_a_bad_inject_is_one_line_naming_file_and_line(
    tmp_path: Path, inject: str, message: str
) -> None:
    path = _scenario(tmp_path, inject)
    with pytest.raises(PlaybookError) as raised:
        scenarios.load(str(path))
    (problem,) = raised.value.problems
    line = len(path.read_text().splitlines())  # the inject is the file's last entry
    assert problem.startswith(f"{path}:") and message in problem, problem
    assert int(problem.split(":")[1]) in range(line - 1, line + 1), problem


@pytest.mark.parametrize(
    ("inject", "message"),
    [
        (
            '  - {after: revoke, say: "Gone: {{ keys.nope.id }}"}\n',
            "injects.0.say: template 'Gone: {{ keys.nope.id }}': 'dict object' has no attribute "
            "'nope'",
        ),
        (
            '  - {after: revoke, say: "{{ keys.payments.id | shout }}"}\n',
            "No filter named 'shout'",
        ),
        (
            "  - {after: revoke, say: hi, calls: [{call: PutKeyPolicy, key: payments, policy:"
            ' {Statement: [{Effect: Allow, Principal: {AWS: "{{ nope }}"}}]}}]}\n',
            "injects.0.calls.0.policy.Statement.0.Principal.AWS: template ' nope ': 'nope' is "
            "undefined",
        ),
        (
            "  - {after: revoke, say: hi, calls: [{call: CreateGrant, key: payments, grantee:"
            ' "{{ grants.rogue.arn }}", operations: [Decrypt]}]}\n',
            "injects.0.calls.0.grantee: template ' grants.rogue.arn ': 'dict object' has no "
            "attribute 'arn'",
        ),
        (
            "  - {after: revoke, say: hi, calls: [{call: CreateGrant, key: payments, grantee:"
            ' "{{ keys.payments }}", operations: [Decrypt]}]}\n',
            "injects.0.calls.0.grantee: renders to dict, not a string",
        ),
        (
            "  - {after: revoke, say: hi, history: [{event: Decrypt, identity: ci,"
            ' request: {keyId: "{{ keys.payments.key_id }}"}}]}\n',
            "injects.0.history.0.request.keyId: template ' keys.payments.key_id '",
        ),
        (
            "  - {after: revoke, say: hi, history: [{event: Decrypt, identity: ci,"
            ' error_code: AccessDenied, error_message: "{{ users.ci.arn }} denied"}]}\n',
            "injects.0.history.0.error_message: template '{{ users.ci.arn }} denied'",
        ),
    ],
    ids=[
        "say",
        "say-filter",
        "call-policy",
        "call-grantee",
        "grantee-not-text",
        "history",
        "error",
    ],
)
def test_a_template_mistake_in_an_inject_is_refused_when_the_scenario_loads(
    tmp_path: Path, inject: str, message: str
) -> None:
    path = _scenario(tmp_path, inject)
    with pytest.raises(PlaybookError) as raised:
        scenarios.load(str(path))
    (problem,) = raised.value.problems
    line = len(path.read_text().splitlines())  # the inject is the file's last line
    assert problem.startswith(f"{path}:{line}:") and message in problem, problem


@pytest.mark.parametrize(
    ("good", "bad", "message"),
    [
        (
            'response: {grantId: "{{ grants.rogue.id }}"',
            'response: {grantId: "{{ grants.rouge.id }}"',
            "history.3.response.grantId: template ' grants.rouge.id ': 'dict object' has no "
            "attribute 'rouge'",
        ),
        (
            'grantee: "arn:aws:iam::{{ account }}:role/payments-app"',
            'grantee: "arn:aws:iam::{{ acount }}:role/payments-app"',
            "grants.app.grantee: template 'arn:aws:iam::{{ acount }}:role/payments-app': "
            "'acount' is undefined",
        ),
        (
            "    rotation: true\n",
            '    rotation: true\n    policy: {Statement: [{Resource: "{{ grants.app.id }}"}]}\n',
            # seeding puts a key's policy before any grant exists
            "keys.payments.policy.Statement.0.Resource: template ' grants.app.id ': 'dict "
            "object' has no attribute 'app'",
        ),
    ],
    ids=["history", "grantee", "key-policy"],
)
def test_a_template_mistake_in_the_world_is_refused_when_the_scenario_loads(
    tmp_path: Path, good: str, bad: str, message: str
) -> None:
    path, problem = refused_scenario(tmp_path, "rogue-grant", good, bad)
    changed = next(
        n for n, line in enumerate(path.read_text().splitlines(), 1) if bad.rstrip()[-12:] in line
    )
    assert problem.startswith(f"{path}:{changed}:") and message in problem, problem


def test_the_cli_refuses_a_template_mistake_before_the_run(
    tmp_path: Path, crashkit: Crashkit
) -> None:
    path = _scenario(tmp_path, '  - {after: disable, say: "{{ keys.nope.alias }} is gone"}\n')
    result = crashkit(["demo", "--scenario", str(path), "--evidence-dir", "ev"], tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"{path}:") and "injects.0.say: template" in line
    assert not (tmp_path / "ev").exists()  # refused before anything ran


@pytest.mark.parametrize("name", sorted(scenarios.available()))
def test_the_stand_in_world_has_the_sandboxs_names_and_shapes(name: str) -> None:
    """Templates are checked at load against a stand-in of ``Sandbox.template_context``:
    the same names, and values of the same types and lengths."""

    def shape(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: shape(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shape(v) for v in value]
        return (type(value).__name__, len(value) if isinstance(value, str) else None)

    world = scenarios.load(name)
    with Sandbox(world) as sandbox:
        real = sandbox.template_context()
    assert shape(scenarios.stand_in_world(world)) == shape(real)


def test_an_inject_that_fails_to_render_changes_nothing(rogue_grant: Sandbox) -> None:
    """Past the load-time check (a scenario built in code): the line is rendered before the
    attacker's calls, so a failure leaves the world as it was, and the inject unfired."""
    (inject,) = rogue_grant.scenario.injects
    broken = inject.model_copy(update={"say": "{{ nope }}"})
    rogue_grant.scenario = rogue_grant.scenario.model_copy(update={"injects": [broken]})
    with pytest.raises(TemplateError):
        rogue_grant.after_step("disable")
    assert key_state(rogue_grant) == "Enabled"
    assert rogue_grant.injects.fired == set()


def test_the_cli_refuses_a_bad_scenario_in_one_line(tmp_path: Path, crashkit: Crashkit) -> None:
    path = _scenario(tmp_path, "  - {after: revok, say: hi}\n")
    result = crashkit(["demo", "--scenario", str(path), "--evidence-dir", "ev"], tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"{path}:") and "has no step 'revok'" in line


def test_an_identity_naming_an_unknown_user_is_refused(tmp_path: Path) -> None:
    path, problem = refused_scenario(
        tmp_path,
        "leaked-credentials-decrypt-spike",
        "{type: IAMUser, user: reports}",
        "{type: IAMUser, user: report}",
    )
    assert problem.startswith(f"{path}:") and "unknown user 'report'" in problem
    assert "did you mean 'reports'?" in problem


# -- timed injects, holds and the facilitator's -------------------------------------------

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)


class FakeClock:
    """The sandbox's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def at(self, minutes: float) -> None:
        self.now = T0 + timedelta(minutes=minutes)


def timed_world(tmp_path: Path) -> scenarios.Scenario:
    """rogue-grant with its deletion inject on a timer (10 minutes into the exercise)."""
    text = (scenarios.scenario_dir() / "rogue-grant.yaml").read_text()
    assert text.count("  - after: disable\n") == 1
    path = tmp_path / "timed.yaml"
    path.write_text(text.replace("  - after: disable\n", "  - after_minutes: 10\n    title: t\n"))
    return scenarios.load(str(path))


def test_a_timed_inject_fires_at_the_first_boundary_once_due_and_once(tmp_path: Path) -> None:
    clock = FakeClock()
    with Sandbox(timed_world(tmp_path), now=T0, clock=clock) as sandbox:
        clock.at(9.9)
        assert sandbox.before_step("recheck") == []
        assert sandbox.after_step("disable") == []  # no step sets a timed inject off
        clock.at(10)
        (record,) = sandbox.before_step("recheck")
        assert (record["trigger"], record["before"], record["after"]) == ("timer", "recheck", None)
        assert record["after_minutes"] == 10 and record["at"].startswith("2026-12-01T10:10:00")
        assert key_state(sandbox) == "PendingDeletion"
        clock.at(60)
        assert sandbox.before_step(None) == []  # a timer fires once


def test_a_held_timer_waits_for_its_release(tmp_path: Path) -> None:
    clock = FakeClock()
    with Sandbox(timed_world(tmp_path), now=T0, clock=clock) as sandbox:
        sandbox.hold()
        clock.at(30)
        assert sandbox.before_step("recheck") == []
        assert key_state(sandbox) == "Enabled"
        sandbox.release()
        (record,) = sandbox.before_step(None)
        assert (record["trigger"], record["before"]) == ("timer", None)


def test_the_facilitator_fires_an_inject_now_once(tmp_path: Path) -> None:
    clock = FakeClock()
    with Sandbox(timed_world(tmp_path), now=T0, clock=clock) as sandbox:
        record = sandbox.fire_now(0, before="snapshot", command=3)
        assert (record["trigger"], record["before"], record["command"]) == (
            "facilitator",
            "snapshot",
            3,
        )
        assert key_state(sandbox) == "PendingDeletion"
        clock.at(30)
        assert sandbox.before_step("recheck") == []  # its timer does not fire it again
        with pytest.raises(UsageError, match="inject 0 fired already"):
            sandbox.fire_now(0, before="recheck")
        with pytest.raises(UsageError, match="has no inject 5"):
            sandbox.fire_now(5, before="recheck")


def test_no_timer_fires_in_check_mode(tmp_path: Path) -> None:
    clock = FakeClock()
    with Sandbox(timed_world(tmp_path), now=T0, clock=clock) as sandbox:
        sandbox.client_factory().check_mode = True
        clock.at(30)
        assert sandbox.before_step("recheck") == []
        with pytest.raises(UsageError, match="check mode"):
            sandbox.fire_now(0, before="recheck")
        assert key_state(sandbox) == "Enabled"


def test_a_rebuilt_world_refires_a_timer_from_the_journal_never_again(tmp_path: Path) -> None:
    world = timed_world(tmp_path)
    clock = FakeClock()
    with Sandbox(world, now=T0, clock=clock) as first:
        clock.at(12)
        (record,) = first.before_step("recheck")
    inject = (None, entries.Inject(record=record))
    with Sandbox(world, now=T0, clock=clock) as again:
        result = again.replay(view_of((None, RUN), succeeded("disable"), inject))
        assert result == {"replayed": 0, "refused": [], "injects_replayed": 1}
        assert key_state(again) == "PendingDeletion"
        clock.at(90)
        assert again.before_step("cancel") == []


def test_a_sandbox_run_fires_a_due_timer_at_its_next_step_boundary(tmp_path: Path) -> None:
    """``run --sandbox`` and ``demo`` are wired as this: the sandbox's ``before_step`` is the
    engine's; the timer is due from the start here, so it fires before the first step."""
    from kmsir.actions.base import NullReporter
    from kmsir.prompts import ScriptedPrompter
    from kmsir.run import launch
    from kmsir.run.engine import RunOptions

    from .conftest import PLAYBOOKS, load_playbook

    world = timed_world(tmp_path)
    loaded = load_playbook(PLAYBOOKS / f"{world.playbook}.yaml")
    prompter = ScriptedPrompter(world.answers, source="scenario script")
    late = T0 + timedelta(minutes=11)
    with Sandbox(world, now=T0, clock=lambda: late) as sandbox:
        options = RunOptions(
            incident_id="INC-timer", evidence_dir=tmp_path / "ev", mode="sandbox", scenario=world.id
        )
        venue = launch.sandboxed(sandbox, options, {})
        engine = launch.engine(
            venue,
            prompter=prompter,
            reporter=NullReporter(),
            anchor_key=None,
            on_bundle=lambda _: None,
            warn=lambda _: None,
        )
        result = engine.run(loaded, launch.run_inputs(loaded, {}, prompter, world), venue.options)
    lines = journal(result.bundle)
    (inject,) = [e for e in lines if e["type"] == "inject"]
    assert (inject["data"]["trigger"], inject["data"]["before"], inject["step"]) == (
        "timer",
        "snapshot",
        None,
    )
    after = lines[lines.index(inject) + 1]
    assert (after["type"], after["step"]) == ("step-started", "snapshot")

"""Scenario injects: the world reacts after a given step, once, journaled, and survives a crash.

The rogue-grant scenario's inject: once the responder has disabled the key, the attacker
(still holding the CI role) schedules its deletion; the playbook reads the key again and
cancels it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kmsir.errors import PlaybookError
from kmsir.sandbox import Sandbox
from kmsir.sandbox import scenario as scenarios

from .conftest import played
from .test_crash import kmsir, normalised, only_bundle, verify


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
    started = {"type": "run-started", "data": {"mode": "sandbox"}}
    disabled = {"type": "step-succeeded", "step": "disable", "data": {}}
    with Sandbox(world, now=now) as again:  # the inject was journaled: fired again, once
        result = again.replay([started, disabled, {"type": "inject", "data": record}])
        assert result == {"replayed": 0, "refused": [], "injects_replayed": 1}
        assert key_state(again) == "PendingDeletion"
        assert again.after_step("disable") == []
    with Sandbox(world, now=now) as again:  # its step ended, the inject never journaled
        result = again.replay([started, disabled])
        assert [r["after"] for r in result["injects"]] == ["disable"]
        assert key_state(again) == "PendingDeletion"
        assert again.after_step("disable") == []
    with Sandbox(world, now=now) as again:  # the step was in flight: it fires after its rerun
        result = again.replay([started, {"type": "step-started", "step": "disable", "data": {}}])
        assert "injects" not in result and key_state(again) == "Enabled"
        assert len(again.after_step("disable")) == 1


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int]:
    """An uninterrupted demo: its normalised report and the journal line of the inject."""
    tmp = tmp_path_factory.mktemp("reference")
    done = kmsir(["demo", "--evidence-dir", "ev"], tmp)
    assert done.returncode == 0, done.stderr
    bundle = only_bundle(tmp / "ev")
    (inject,) = [e for e in journal(bundle) if e["type"] == "inject"]
    return normalised((bundle / "report.md").read_text(), tmp / "ev"), int(inject["seq"])


@pytest.mark.parametrize("offset", [-1, 0], ids=["before-journaled", "journaled"])
def test_a_crash_around_the_inject_neither_loses_nor_repeats_it(
    offset: int, tmp_path: Path, reference: tuple[str, int]
) -> None:
    """Killed just before the inject was journaled (its step had ended), or just after: the
    resumed run has the attacker's deletion in its world before going on, journals the
    inject exactly once, and reports the same as an uninterrupted run."""
    reference_report, line = reference
    crashed = kmsir(["demo", "--evidence-dir", "ev"], tmp_path, kill=f"entry:{line + offset}")
    assert crashed.returncode == -9, crashed.stderr[-500:]
    bundle = only_bundle(tmp_path / "ev")
    resumed = kmsir(["resume", str(bundle)], tmp_path)
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


def test_the_cli_refuses_a_bad_scenario_in_one_line(tmp_path: Path) -> None:
    path = _scenario(tmp_path, "  - {after: revok, say: hi}\n")
    result = kmsir(["demo", "--scenario", str(path), "--evidence-dir", "ev"], tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"{path}:") and "has no step 'revok'" in line


def test_an_identity_naming_an_unknown_user_is_refused(tmp_path: Path) -> None:
    text = (scenarios.scenario_dir() / "leaked-credentials-decrypt-spike.yaml").read_text()
    path = tmp_path / "typo.yaml"
    path.write_text(text.replace("{type: IAMUser, user: reports}", "{type: IAMUser, user: report}"))
    with pytest.raises(PlaybookError) as raised:
        scenarios.load(str(path))
    (problem,) = raised.value.problems
    assert problem.startswith(f"{path}:") and "unknown user 'report'" in problem
    assert "did you mean 'reports'?" in problem

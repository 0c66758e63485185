"""The engine with fake actions: templating, when, confirmation, check mode, on_error, retries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

from kmsir import actions
from kmsir.actions.base import Action, ActionContext, Outcome, Params, Preview
from kmsir.aws import ClientFactory
from kmsir.errors import ActionError, AwsError
from kmsir.evidence import integrity
from kmsir.playbook.model import LoadedPlaybook, from_document
from kmsir.playbook.yamlsafe import load_bytes
from kmsir.prompts import ScriptedPrompter

from .conftest import bundles, run_playbook


class ValueParams(Params):
    value: Any = None


class Record(Action[ValueParams]):
    """Outputs its value."""

    name = "test.record"
    params = ValueParams

    def run(self, ctx: ActionContext, params: ValueParams) -> Outcome:
        return Outcome(outputs={"value": params.value}, summary=f"recorded {params.value!r}")


class Change(Action[ValueParams]):
    """Sets WORLD[value] = 'changed'; mutating."""

    name = "test.change"
    params = ValueParams
    mutating = True
    inverse = "test.undo"
    world: ClassVar[dict[str, str]] = {}

    def preview(self, ctx: ActionContext, params: ValueParams) -> Preview:
        state = self.world.get(str(params.value), "original")
        return Preview(
            calls=(f"Change Target={params.value}",), target=str(params.value), state=state
        )

    def run(self, ctx: ActionContext, params: ValueParams) -> Outcome:
        before = self.world.get(str(params.value), "original")
        self.world[str(params.value)] = "changed"
        return Outcome(
            outputs={}, summary="changed", before={"state": before}, after={"state": "changed"}
        )


class Flaky(Action[ValueParams]):
    """Fails `value` times (``code``, a transient KMS failure by default), then succeeds."""

    name = "test.flaky"
    params = ValueParams
    calls: ClassVar[list[int]] = []
    code: ClassVar[str] = "KMSInternalException"

    def run(self, ctx: ActionContext, params: ValueParams) -> Outcome:
        self.calls.append(1)
        if len(self.calls) <= int(params.value):
            raise AwsError("failed", code=self.code, operation="X")
        return Outcome(outputs={"attempts": len(self.calls)}, summary="ok")


class Fail(Action[ValueParams]):
    """Always fails."""

    name = "test.fail"
    params = ValueParams

    def run(self, ctx: ActionContext, params: ValueParams) -> Outcome:
        raise ActionError(f"boom {params.value}")


@pytest.fixture
def registry() -> actions.Registry:
    Change.world.clear()
    Flaky.calls.clear()
    fakes: list[Action[Any]] = [Record(), Change(), Flaky(), Fail()]
    return {**actions.registry(), **{a.name: a for a in fakes}}


def book(registry: actions.Registry, steps: str) -> LoadedPlaybook:
    raw = f"id: t\ntitle: T\nsteps:\n{steps}".encode()
    return from_document(load_bytes(raw, "t.yaml"), actions.catalog(registry), path=Path("t.yaml"))


def journal(result_bundle: Path) -> list[dict[str, Any]]:
    lines = (result_bundle / "journal.jsonl").read_bytes().splitlines()
    return [json.loads(line) for line in lines]


def outcome_of(entries: list[dict[str, Any]], step: str) -> dict[str, Any]:
    ends = ("step-succeeded", "step-failed", "step-skipped")
    return next(e for e in reversed(entries) if e["step"] == step and e["type"] in ends)


def test_outputs_flow_between_steps_as_native_values(
    registry: actions.Registry, moto_clients: ClientFactory, tmp_path: Path
) -> None:
    playbook = book(
        registry,
        """\
  - {id: a, action: test.record, with: {value: [g1, g2]}}
  - {id: b, action: test.record, with: {value: "{{ steps.a.value }}"}}
  - id: c
    action: test.record
    with: {value: "{{ steps.b.value | length }} ids: {{ steps.b.value | join(',') }}"}
""",
    )
    result = run_playbook(playbook, moto_clients, tmp_path, registry=registry, mode="live")
    assert result.status == "succeeded"
    entries = journal(result.bundle)
    assert outcome_of(entries, "b")["data"]["outputs"]["value"] == ["g1", "g2"]
    assert outcome_of(entries, "c")["data"]["outputs"]["value"] == "2 ids: g1,g2"
    assert integrity.verify(result.bundle) == []


def test_when_false_skips_with_reason(
    registry: actions.Registry, moto_clients: ClientFactory, tmp_path: Path
) -> None:
    playbook = book(
        registry,
        """\
  - {id: a, action: test.record, with: {value: 1}}
  - {id: b, action: test.change, when: "steps.a.value == 2", with: {value: k}}
""",
    )
    result = run_playbook(playbook, moto_clients, tmp_path, registry=registry, mode="live")
    assert Change.world == {}
    skipped = outcome_of(journal(result.bundle), "b")
    assert skipped["type"] == "step-skipped"
    assert skipped["data"]["reason"] == "when: steps.a.value == 2 is false"


@pytest.mark.parametrize(
    ("answers", "yes", "world", "by"),
    [
        ({"c": "approve"}, False, {"k": "changed"}, "test answers"),
        ({"c": "skip"}, False, {}, "test answers"),
        ({}, True, {"k": "changed"}, "auto-approved"),
    ],
)
def test_mutating_steps_need_confirmation(
    registry: actions.Registry,
    moto_clients: ClientFactory,
    tmp_path: Path,
    answers: dict[str, str],
    yes: bool,
    world: dict[str, str],
    by: str,
) -> None:
    playbook = book(registry, "  - {id: c, action: test.change, with: {value: k}}\n")
    result = run_playbook(
        playbook, moto_clients, tmp_path, registry=registry, answers=answers, yes=yes, mode="live"
    )
    assert Change.world == world
    entries = journal(result.bundle)
    decision = next(e for e in entries if e["type"] == "decision")
    assert decision["data"]["by"] == by
    assert decision["data"]["calls"] == ["Change Target=k"]
    assert decision["data"]["inverse"] == "test.undo"


def test_missing_answer_without_terminal_aborts_naming_it(
    registry: actions.Registry, moto_clients: ClientFactory, tmp_path: Path
) -> None:
    playbook = book(registry, "  - {id: c, action: test.change, with: {value: k}}\n")
    result = run_playbook(playbook, moto_clients, tmp_path, registry=registry, mode="live")
    assert result.status == "aborted"
    assert result.error is not None and "no answer for 'c'" in result.error
    assert Change.world == {}
    assert integrity.verify(result.bundle) == []


def test_check_mode_changes_nothing(
    registry: actions.Registry, moto_clients: ClientFactory, tmp_path: Path
) -> None:
    playbook = book(registry, "  - {id: c, action: test.change, with: {value: k}}\n")
    result = run_playbook(
        playbook, moto_clients, tmp_path, registry=registry, mode="check", yes=True
    )
    assert Change.world == {}
    assert result.steps[0].status == "would-run"
    assert "would call Change Target=k" in result.steps[0].summary


@pytest.mark.parametrize(
    ("on_error", "ran_next", "status"), [("stop", False, "failed"), ("continue", True, "failed")]
)
def test_on_error(
    registry: actions.Registry,
    moto_clients: ClientFactory,
    tmp_path: Path,
    on_error: str,
    ran_next: bool,
    status: str,
) -> None:
    playbook = book(
        registry,
        f"""\
  - {{id: f, action: test.fail, on_error: {on_error}, with: {{value: 7}}}}
  - {{id: n, action: test.record, with: {{value: 1}}}}
""",
    )
    result = run_playbook(playbook, moto_clients, tmp_path, registry=registry, mode="live")
    assert result.status == status
    assert result.error == "step 'f' (test.fail): boom 7"
    assert ("n" in [s.step_id for s in result.steps]) is ran_next


def test_on_error_ask_can_skip(
    registry: actions.Registry, moto_clients: ClientFactory, tmp_path: Path
) -> None:
    playbook = book(
        registry,
        """\
  - {id: f, action: test.fail, on_error: ask, with: {value: 7}}
  - {id: n, action: test.record, with: {value: 1}}
""",
    )
    result = run_playbook(
        playbook,
        moto_clients,
        tmp_path,
        registry=registry,
        mode="live",
        answers={"f.on-error": "skip"},
    )
    assert result.status == "succeeded"
    assert [s.status for s in result.steps] == ["skipped", "succeeded"]


def test_retries_re_run_the_action_after_a_transient_failure(
    registry: actions.Registry, moto_clients: ClientFactory, tmp_path: Path
) -> None:
    playbook = book(registry, "  - {id: f, action: test.flaky, retries: 2, with: {value: 2}}\n")
    result = run_playbook(playbook, moto_clients, tmp_path, registry=registry, mode="live")
    assert result.status == "succeeded"
    entries = journal(result.bundle)
    assert [e["data"]["attempt"] for e in entries if e["type"] == "step-retry"] == [1, 2]


def test_throttling_is_not_retried_again_by_the_step(
    registry: actions.Registry,
    moto_clients: ClientFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Throttling is botocore's to retry (and the pacer's to avoid): once botocore gave up, a
    step's ``retries:`` does not send the refused requests again."""
    monkeypatch.setattr(Flaky, "code", "ThrottlingException")
    playbook = book(registry, "  - {id: f, action: test.flaky, retries: 2, with: {value: 1}}\n")
    result = run_playbook(playbook, moto_clients, tmp_path, registry=registry, mode="live")
    assert result.status == "failed"
    assert len(Flaky.calls) == 1
    assert not [e for e in journal(result.bundle) if e["type"] == "step-retry"]


def test_template_failure_is_a_clear_step_error(
    registry: actions.Registry, moto_clients: ClientFactory, tmp_path: Path
) -> None:
    playbook = book(
        registry,
        """\
  - {id: a, action: test.record, with: {value: 1}}
  - {id: b, action: test.record, with: {value: "{{ steps.a.nothing }}"}}
""",
    )
    result = run_playbook(playbook, moto_clients, tmp_path, registry=registry, mode="live")
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.startswith("step 'b' (test.record): with: template")
    assert "nothing" in result.error


def test_declined_confirm_step_aborts(moto_clients: ClientFactory, tmp_path: Path) -> None:
    registry = actions.registry()
    playbook = book(
        registry,
        """\
  - {id: ok, action: confirm, with: {message: "Legal informed?"}}
  - {id: n, action: note, with: {text: after}}
""",
    )
    result = run_playbook(
        playbook,
        moto_clients,
        tmp_path,
        registry=registry,
        mode="live",
        prompter=ScriptedPrompter({"ok": "no"}, source="test"),
    )
    assert result.status == "aborted"
    assert [s.step_id for s in result.steps] == []
    failed = outcome_of(journal(result.bundle), "ok")
    assert failed["type"] == "step-failed" and "not confirmed" in failed["data"]["error"]
    assert integrity.verify(result.bundle) == []


class Crash(Action[ValueParams]):
    """A bug in an action."""

    name = "test.crash"
    params = ValueParams

    def run(self, ctx: ActionContext, params: ValueParams) -> Outcome:
        raise RuntimeError("bug")


def test_a_bug_still_leaves_a_finished_verifiable_bundle(
    moto_clients: ClientFactory, tmp_path: Path
) -> None:
    registry = {**actions.registry(), "test.crash": Crash()}
    playbook = book(registry, "  - {id: c, action: test.crash, with: {value: 1}}\n")
    with pytest.raises(RuntimeError):
        run_playbook(playbook, moto_clients, tmp_path, registry=registry, mode="live")
    (bundle,) = bundles(tmp_path / "INC-test")
    assert integrity.verify(bundle) == []
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert journal(bundle)[-1]["data"]["error"] == "RuntimeError: bug"


def test_retried_step_keeps_each_attempts_artifacts(
    moto_clients: ClientFactory, tmp_path: Path
) -> None:
    class Writes(Flaky):
        name = "test.writes"

        def run(self, ctx: ActionContext, params: ValueParams) -> Outcome:
            ctx.write_json("state.json", {"attempt": len(self.calls) + 1})
            return super().run(ctx, params)

    Flaky.calls.clear()
    registry = {**actions.registry(), "test.writes": Writes()}
    playbook = book(registry, "  - {id: w, action: test.writes, retries: 1, with: {value: 1}}\n")
    result = run_playbook(playbook, moto_clients, tmp_path, registry=registry, mode="live")
    assert result.status == "succeeded"
    paths = [e["data"]["path"] for e in journal(result.bundle) if e["type"] == "artifact"]
    assert paths == ["artifacts/01-w/state.json", "artifacts/01-w.2/state.json"]
    assert integrity.verify(result.bundle) == []

"""Prompters: scripted answers are checked, missing ones are named, --yes never invents answers."""

from __future__ import annotations

import pytest

from kmsir.errors import Aborted, MissingAnswer, UsageError
from kmsir.evidence.calls import Call
from kmsir.prompts import AutoApprovePrompter, NoPrompter, ScriptedPrompter, StepPreview


def _preview(*, mutating: bool = True, typed: tuple[str, ...] = ()) -> StepPreview:
    return StepPreview(
        step_id="revoke",
        title="Revoke the outside grants",
        action="kms.revoke-grants",
        phase="containment",
        position="6/12",
        does="Revoke grants",
        mutating=mutating,
        calls=(Call(service="kms", operation="RevokeGrant"),),
        inverse="IRREVERSIBLE",
        typed=typed,
    )


def _no_notes(text: str, by: str) -> None:
    raise AssertionError("no note expected")


def test_scripted_choice_must_be_one_of_the_choices() -> None:
    prompter = ScriptedPrompter({"decide": "disable", "bad": "nuke"}, source="answers file")
    answer = prompter.ask("decide", "How?", ["disable", "none"])
    assert (answer.value, answer.source) == ("disable", "answers file")
    with pytest.raises(UsageError, match="answer for 'bad' is 'nuke', not one of: disable, none"):
        prompter.ask("bad", "How?", ["disable", "none"])


@pytest.mark.parametrize(
    ("value", "approved"),
    [
        ("approve", True),
        ("yes", True),
        (True, True),
        ("skip", False),
        ("no", False),
        ("alias/payments", True),
        ("1234", True),
    ],
)
def test_scripted_confirmations(value: object, approved: bool) -> None:
    prompter = ScriptedPrompter({"revoke": value}, source="answers file")
    answer = prompter.before_step(_preview(typed=("1234", "alias/payments")), _no_notes)
    assert answer is not None and answer.value == ("run" if approved else "skip")


def test_scripted_abort_and_nonsense() -> None:
    with pytest.raises(Aborted):
        ScriptedPrompter({"s": "abort"}, source="x").confirm("s", "Run?")
    with pytest.raises(UsageError, match="use approve, skip or abort"):
        ScriptedPrompter({"s": "maybe"}, source="x").confirm("s", "Run?")


def test_missing_answers_are_named() -> None:
    prompter = ScriptedPrompter({}, source="answers file", fallback=NoPrompter())
    with pytest.raises(MissingAnswer, match="no answer for 'revoke'"):
        prompter.before_step(_preview(), _no_notes)
    assert prompter.before_step(_preview(mutating=False), _no_notes) is None  # read-only: runs
    with pytest.raises(MissingAnswer, match=r"add 'decide: \.\.\.' to the answers file"):
        prompter.ask("decide", "How?", ["a", "b"])


def test_yes_approves_but_does_not_answer_questions() -> None:
    prompter = AutoApprovePrompter(NoPrompter())
    answer = prompter.before_step(_preview(typed=("k",)), _no_notes)
    assert answer is not None and (answer.value, answer.source) == ("run", "auto-approved")
    assert prompter.before_step(_preview(mutating=False), _no_notes) is None
    with pytest.raises(MissingAnswer):
        prompter.ask("decide", "How?", ["a", "b"])


def test_end_of_input_at_a_prompt_aborts() -> None:
    from kmsir.cli.interactive import InteractivePrompter

    class ClosedStdin:
        def unsafe_ask(self) -> str:
            raise EOFError

    with pytest.raises(Aborted, match="end of file"):
        InteractivePrompter(show=print, show_preview=print)._answer(ClosedStdin())


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ({"decison": "skip", "reason": "legal hold"}, "unknown key 'decison'"),
        ({"reason": "not yet"}, "no 'decision'"),
        ({"note": "seen"}, "no 'decision'"),
        ({"decision": "maybe"}, "use run, skip or abort"),
    ],
)
def test_a_mistyped_step_answer_is_refused_not_taken_as_run(
    answer: dict[str, str], problem: str
) -> None:
    preview = _preview()
    notes: list[tuple[str, str]] = []
    with pytest.raises(UsageError, match=problem):
        ScriptedPrompter({"revoke": answer}, source="answers file").before_step(
            preview, lambda text, by: notes.append((text, by))
        )
    assert notes == []


def test_missing_required_inputs_are_asked_and_checked() -> None:
    """Only a required input neither given nor defaulted is asked; a choice is picked from
    its choices, anything else is text checked against the input's type."""
    from kmsir.playbook.inputs import InputSpec
    from kmsir.prompts import ask_missing_inputs

    specs = {
        "key": InputSpec(type="kms-key", required=True),
        "given": InputSpec(required=True),
        "defaulted": InputSpec(required=True, default="x"),
        "optional": InputSpec(),
        "how": InputSpec(type="choice", required=True, choices=("disable", "revoke")),
    }
    answers = {"key": "alias/payments", "how": "revoke", "defaulted": "never asked"}
    prompter = ScriptedPrompter(answers, source="answers file")
    asked = ask_missing_inputs(prompter, specs, {"given": "g"})
    assert asked == {"given": "g", "key": "alias/payments", "how": "revoke"}
    wrong = {"key": "nope", "how": "revoke"}
    with pytest.raises(UsageError, match="answer for 'key': input 'key': 'nope' is not a KMS key"):
        ask_missing_inputs(ScriptedPrompter(wrong, source="x"), specs, {"given": "g"})
    wrong = {"key": "alias/payments", "how": "delete"}
    with pytest.raises(UsageError, match="not one of: disable, revoke"):
        ask_missing_inputs(ScriptedPrompter(wrong, source="x"), specs, {"given": "g"})

"""Playbook loading: every problem is one `file:line:col:` line naming the step and the fix."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from kmsir import actions
from kmsir.errors import PlaybookError, UsageError
from kmsir.playbook import model as playbook
from kmsir.playbook import yamlsafe

from .conftest import PLAYBOOKS

VALID = """\
id: t
title: T
version: 1
severity: high
description: test
inputs:
  key: {type: kms-key, required: true}
steps:
  - id: snap
    phase: identification
    action: kms.snapshot
    with: {key: "{{ inputs.key }}"}
  - id: disable
    phase: containment
    action: kms.disable-key
    when: "steps.snap.state == 'Enabled'"
    with: {key: "{{ steps.snap.key_id }}"}
"""


def problems_for(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(PlaybookError) as caught:
        playbook.load(path, actions.catalog())
    return caught.value.problems


def test_shipped_playbook_is_valid_without_warnings() -> None:
    loaded = playbook.load(PLAYBOOKS / "kms-key-compromise.yaml", actions.catalog())
    assert loaded.playbook.id == "kms-key-compromise"
    assert loaded.warnings == ()
    assert loaded.playbook.step("revoke").action == "kms.revoke-grants"


def test_valid_playbook_is_frozen(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(VALID)
    loaded = playbook.load(path, actions.catalog())
    with pytest.raises(Exception, match="frozen"):
        loaded.playbook.steps[0].action = "kms.disable-key"  # type: ignore[misc]


def test_unknown_action_names_line_step_and_suggestion(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, VALID.replace("kms.disable-key", "kms.disabel-key"))
    assert problems == [
        f"{tmp_path / 'p.yaml'}:15:13: step 'disable': unknown action 'kms.disabel-key' "
        "(did you mean 'kms.disable-key'?)"
    ]


def test_missing_id(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, VALID.replace("id: t\n", "", 1))
    assert problems == [f"{tmp_path / 'p.yaml'}:1:1: missing required field 'id'"]


def test_bad_when_expression(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, VALID.replace("state == 'Enabled'", "state == = 'x'"))
    assert len(problems) == 1
    assert problems[0].startswith(f"{tmp_path / 'p.yaml'}:16:11: step 'disable': when: invalid")


def test_yaml_syntax_error(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, VALID.replace("    action: kms.snapshot", "   action: [x"))
    assert len(problems) == 1
    assert ": YAML syntax error: " in problems[0]
    assert problems[0].startswith(f"{tmp_path / 'p.yaml'}:")


def test_template_reaching_internals_is_invalid(tmp_path: Path) -> None:
    problems = problems_for(
        tmp_path, VALID.replace('"{{ inputs.key }}"', "\"{{ ''.__class__.__mro__ }}\"")
    )
    assert len(problems) == 1
    assert "step 'snap'" in problems[0] and "Python internals" in problems[0]


def test_unknown_parameter_and_reference_to_later_step(tmp_path: Path) -> None:
    text = VALID.replace('{key: "{{ inputs.key }}"}', '{kee: "{{ steps.disable.x }}"}')
    problems = problems_for(tmp_path, text)
    assert any("has no parameter 'kee' (did you mean 'key'?)" in p for p in problems)
    assert any(
        "step 'snap': Value error, give exactly one of key, keys or all" in p for p in problems
    )
    assert any("refers to steps.disable, which is not an earlier step" in p for p in problems)


def test_duplicate_keys_and_step_ids(tmp_path: Path) -> None:
    assert problems_for(tmp_path, "id: a\nid: b\n") == [
        f"{tmp_path / 'p.yaml'}:2:1: duplicate key 'id'"
    ]
    problems = problems_for(tmp_path, VALID.replace("id: disable", "id: snap"))
    assert any("step 'snap': duplicate step id" in p for p in problems)


def test_python_tags_are_refused(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, "id: !!python/object/apply:os.system ['true']\n")
    assert problems == [
        f"{tmp_path / 'p.yaml'}:1:5: unsupported YAML tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'"
    ]
    problems = problems_for(tmp_path, "id: !!python/name:os.system x\n")
    assert "unsupported YAML value" in problems[0]


def peak_of_problems(tmp_path: Path, text: str) -> tuple[list[str], int]:
    """The problems loading ``text`` finds, and the most memory it had allocated at once."""
    tracemalloc.start()
    try:
        problems = problems_for(tmp_path, text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return problems, peak


def test_billion_laughs_is_refused_after_a_bounded_number_of_nodes(tmp_path: Path) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    # 9**9 (387 million) values once expanded; the loader's node limit stops it at 100,001
    problems, peak = peak_of_problems(tmp_path, "\n".join(lines) + "\n")
    assert f"more than {yamlsafe.MAX_NODES:,} values (alias bomb?)" in problems[0]
    assert peak < 48 * 1024 * 1024  # 100,000 nodes' worth; all of them: tens of GB


def test_huge_values_are_not_echoed(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, VALID.replace("kms.disable-key", "x" * 100_000))
    assert all(len(p) < 300 for p in problems)


def test_inputs_are_checked_by_type() -> None:
    loaded_text = VALID
    book = playbook.Playbook.model_validate(__import__("yaml").safe_load(loaded_text))
    assert playbook.resolve_inputs(book, {"key": "alias/payments"}) == {"key": "alias/payments"}
    with pytest.raises(UsageError, match="input 'key'"):
        playbook.resolve_inputs(book, {"key": "not a key"})
    with pytest.raises(UsageError, match="input 'key' is required"):
        playbook.resolve_inputs(book, {})
    with pytest.raises(UsageError, match="has no input 'kye' \\(did you mean 'key'\\?\\)"):
        playbook.resolve_inputs(book, {"key": "alias/x", "kye": "y"})


def test_literal_parameters_and_defaults_are_checked_before_running(tmp_path: Path) -> None:
    text = """\
id: t
title: T
inputs:
  k: {type: int, default: abc}
steps:
  - {id: a, action: note, with: {text: 5}}
  - {id: b, action: ask, with: {question: "{{ inputs.k }}", choices: "a,b"}}
"""
    problems = problems_for(tmp_path, text)
    path = tmp_path / "p.yaml"
    assert problems == [
        f"{path}:6:40: step 'a': parameter text: Input should be a valid string",
        f"{path}:7:70: step 'b': parameter choices: Input should be a valid list",
        f"{path}:4:27: default of input 'k': 'abc' is not an integer",
    ]


def test_missing_step_id_is_one_message(tmp_path: Path) -> None:
    problems = problems_for(
        tmp_path, "id: t\ntitle: T\nsteps:\n  - {action: note, with: {text: x}}\n"
    )
    assert problems == [f"{tmp_path / 'p.yaml'}:4:5: step #1: missing required field 'id'"]


def test_deep_nesting_and_wide_aliases_are_refused_with_bounded_work(tmp_path: Path) -> None:
    too_deep = [f"{tmp_path / 'p.yaml'}:1:1: nesting too deep (more than 64 levels)"]
    # deeper than Python's stack: the parser gives up at its recursion limit
    assert problems_for(tmp_path, "steps: " + "[" * 20000 + "]" * 20000 + "\n") == too_deep
    deep, peak = peak_of_problems(tmp_path, "steps: " + "[" * 200 + "]" * 200 + "\n")
    assert deep[0].endswith("nesting too deep (more than 64 levels)")
    assert peak < 4 * 1024 * 1024
    # 19,000 aliases of a 100,000-character string: 1.9 billion characters once expanded
    wide = 'big: &b "' + "x" * 100_000 + '"\nchoices: [' + ",".join(["*b"] * 19_000) + "]\n"
    problems, peak = peak_of_problems(tmp_path, wide)
    limit = yamlsafe.MAX_EXPANDED_CHARS
    assert f"more than {limit:,} characters (alias bomb?)" in problems[0]
    assert peak < 4 * 1024 * 1024  # one 100,000-character string, shared

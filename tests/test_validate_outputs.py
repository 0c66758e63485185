"""Declared outputs, every problem of a file in one pass, and lint: what ``kmsir validate``
and ``kmsir actions`` tell a playbook's author before anything runs.

Each action declares its outputs next to its parameters; a read of ``steps.X.field`` that X's
action does not return is a problem, with a did-you-mean. The declarations are checked against
what real runs return: the shipped scenarios in their sandboxes, and a playbook that runs every
action once in the rogue-grant sandbox.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kmsir import actions
from kmsir.actions.human_lists import DONE
from kmsir.errors import PlaybookError
from kmsir.playbook import model as playbook
from kmsir.playbook import yamlsafe
from kmsir.sandbox import Sandbox
from kmsir.sandbox import scenario as scenarios

from .clikit import cli
from .conftest import PLAYBOOKS, load_playbook, played, run_playbook
from .test_actions_imported import MATERIAL, external_key
from .test_actions_key_stores import hsm_store

HEAD = """\
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
"""

#: The type words an output may declare.
TYPE_WORDS = {
    "str",
    "int",
    "bool",
    "dict",
    "list[str]",
    "list[dict]",
    "str|null",
    "int|null",
    "bool|null",
    "dict|null",
}


def written(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def problems_for(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(PlaybookError) as caught:
        playbook.load(written(tmp_path, text), actions.catalog())
    return caught.value.problems


def warnings_for(tmp_path: Path, text: str) -> list[str]:
    """The warnings of a valid playbook, without the file name."""
    loaded = playbook.load(written(tmp_path, text), actions.catalog())
    return [w.removeprefix(str(tmp_path / "p.yaml")) for w in loaded.warnings]


# --- outputs -------------------------------------------------------------------------------


def test_a_wrong_output_name_is_a_problem_with_a_did_you_mean(tmp_path: Path) -> None:
    text = (
        HEAD
        + """\
  - id: disable
    phase: containment
    action: kms.disable-key
    when: "steps.snap.stat == 'Enabled'"
    with: {key: "{{ steps['snap'].kye_id }}"}
  - id: say
    phase: recovery
    action: note
    with: {text: "{{ steps.snap['grant_id'] | length }} {{ steps.disable.status }}"}
"""
    )
    path = tmp_path / "p.yaml"
    assert problems_for(tmp_path, text) == [
        f"{path}:16:11: step 'disable': steps.snap.stat: step 'snap' has no output 'stat' "
        "(did you mean 'state'?)",
        f"{path}:17:17: step 'disable': steps.snap.kye_id: step 'snap' has no output 'kye_id' "
        "(did you mean 'key_id'?)",
        f"{path}:21:18: step 'say': steps.snap.grant_id: step 'snap' has no output 'grant_id' "
        "(did you mean 'grant_ids'?)",
    ]


def test_every_output_a_shipped_playbook_reads_is_declared() -> None:
    for path in sorted(PLAYBOOKS.glob("*.yaml")):
        checked = playbook.check_file(path, actions.catalog())
        assert (checked.problems, checked.warnings) == ([], []), path


def test_every_action_declares_its_outputs_with_a_type_word() -> None:
    for name, action in actions.registry().items():
        assert action.outputs, f"{name} declares no outputs"
        assert set(action.outputs.values()) <= TYPE_WORDS, name
        assert all(o.isidentifier() for o in action.outputs), name


def test_an_action_that_declares_nothing_is_not_checked(tmp_path: Path) -> None:
    """A catalog without outputs (a plain mapping, as tests' fake actions give) checks no
    output names."""
    document = yamlsafe.load_bytes(
        (HEAD + "  - {id: n, action: note, with: {text: '{{ steps.snap.anything }}'}}\n").encode(),
        "p.yaml",
    )
    plain = dict(actions.catalog())
    assert playbook.check(document, plain).problems == []
    assert playbook.check(document, actions.catalog()).problems != []


# --- every problem in one pass -------------------------------------------------------------

THREE = (
    HEAD
    + """\
  - id: disable
    phase: containment
    action: kms.disabel-key
    with: {key: "{{ steps.snap.key_id }}"}
  - id: after
    phase: recovery
    action: kms.snapshot
    wehn: "steps.snap.state == 'Enabled'"
    with: {key: "{{ steps.snap.key_id }}"}
  - id: say
    phase: recovery
    action: note
    with: {text: "{{ steps.later.state }}"}
"""
)


def test_three_independent_problems_come_out_in_one_run(tmp_path: Path) -> None:
    """A shape problem (a typo in ``when``) no longer hides the others."""
    path = tmp_path / "p.yaml"
    assert problems_for(tmp_path, THREE) == [
        f"{path}:20:11: step 'after': unknown field 'wehn' (did you mean 'when'?)",
        f"{path}:15:13: step 'disable': unknown action 'kms.disabel-key' "
        "(did you mean 'kms.disable-key'?)",
        f"{path}:25:18: step 'say': refers to steps.later, which is not an earlier step",
    ]


def test_validate_prints_all_three_and_plan_refuses_with_the_same(tmp_path: Path) -> None:
    written(tmp_path, THREE)
    ran = cli("validate", "p.yaml", cwd=tmp_path)
    assert ran.exit_code == 2
    lines = ran.stderr.splitlines()
    where = [line.split(": ")[0] for line in lines]
    assert where == ["p.yaml:20:11", "p.yaml:15:13", "p.yaml:25:18"]
    assert cli("plan", "p.yaml", cwd=tmp_path).stderr == ran.stderr


def test_a_step_with_a_wrong_field_is_checked_for_the_others(tmp_path: Path) -> None:
    text = (
        HEAD
        + """\
  - id: bad
    phase: containment
    action: kms.disable-key
    retries: 99
    when: "steps.snap.stat == 'x'"
    with: {kee: "{{ steps.snap.key_id }}"}
  - {id: "Not An Id", action: note, with: {text: x}}
  - {id: after, phase: recovery, action: note, with: {text: "{{ steps['Not An Id'].text }}"}}
"""
    )
    problems = problems_for(tmp_path, text)
    said = [p.split(": ", 1)[1] for p in problems]
    assert said == [
        "step 'bad': steps.1.retries: Input should be less than or equal to 10",
        "step 'Not An Id': steps.2.id: use lowercase letters, digits, '-' or '_', starting "
        "with a letter",
        "step 'bad': action 'kms.disable-key' has no parameter 'kee' (did you mean 'key'?)",
        "step 'bad': action 'kms.disable-key' needs parameter 'key'",
        "step 'bad': steps.snap.stat: step 'snap' has no output 'stat' (did you mean 'state'?)",
    ]  # and no "not an earlier step" for the step whose id is wrong


def test_a_when_with_a_syntax_typo_and_the_rest_in_one_run(tmp_path: Path) -> None:
    text = THREE.replace("wehn:", "when:").replace("== 'Enabled'", "== = 'Enabled'")
    said = [p.split(": ", 1)[1] for p in problems_for(tmp_path, text)]
    assert len(said) == 3
    assert said[0].startswith("step 'disable': unknown action")
    assert said[1].startswith("step 'after': when: invalid expression")
    assert said[2] == "step 'say': refers to steps.later, which is not an earlier step"


def test_templates_too_deep_to_read_are_problems_not_crashes(tmp_path: Path) -> None:
    """``a and b and ...`` parses without recursion, into a tree thousands of levels deep:
    the reads and guards are not looked for in it (the syntax check refuses it anyway)."""
    chain = " and ".join(["x"] * 3000)
    text = (
        HEAD
        + f"""\
  - id: b
    phase: recovery
    action: note
    when: "'snap' in steps and {chain} and steps.snap.stat"
    with: {{text: "{{{{ {chain} and steps.snap.stat }}}}"}}
"""
    )
    said = [p.split(": ", 1)[1] for p in problems_for(tmp_path, text)]
    assert said == [
        "step 'b': when: invalid expression: nested too deeply",
        "step 'b': template syntax error: nested too deeply",
    ]


# --- lint -----------------------------------------------------------------------------------

ASK = (
    HEAD
    + """\
  - id: decide
    phase: containment
    action: ask
    with: {question: "Contain?", choices: [disable, none]}
"""
)


def test_a_when_that_needs_an_answer_not_among_the_choices_never_runs(tmp_path: Path) -> None:
    text = (
        ASK
        + """\
  - id: disable
    phase: containment
    action: kms.disable-key
    when: "'decide' in steps and steps.decide.answer == 'disabel'"
    with: {key: "{{ steps.snap.key_id }}"}
  - id: other
    phase: containment
    action: kms.enable-key
    when: "steps.decide.answer in ['disable', 'enable'] or 'x' == steps.decide.answer"
    with: {key: "{{ steps.snap.key_id }}"}
  - {id: never, phase: recovery, action: note, when: "false", with: {text: x}}
  - id: fine
    phase: recovery
    action: note
    when: "steps.decide.answer != 'none'"
    with: {text: x}
"""
    )
    assert warnings_for(tmp_path, text) == [
        ":20:11: warning: step 'disable' can never run: steps.decide.answer is never 'disabel' "
        "(its choices: disable, none)",
        ":25:11: warning: step 'other': steps.decide.answer compared with 'enable', which is not "
        "one of its choices (disable, none)",
        ":25:11: warning: step 'other': steps.decide.answer compared with 'x', which is not one "
        "of its choices (disable, none)",
        ":27:54: warning: step 'never' can never run: its when: is always false",
    ]


def test_a_read_of_a_step_that_may_not_have_run_needs_a_guard(tmp_path: Path) -> None:
    text = (
        ASK
        + """\
  - id: disable
    phase: containment
    action: kms.disable-key
    when: "steps.decide.answer == 'disable'"
    with: {key: "{{ steps.snap.key_id }}"}
  - id: collect
    phase: identification
    action: cloudtrail.collect
    with: {key: "{{ steps.snap.arn }}"}
    on_error: continue
  - id: findings
    phase: identification
    action: cloudtrail.findings
    when: "'collect' in steps"
    with: {events: collect}
  - id: bare
    phase: recovery
    action: note
    with: {text: "{{ steps.disable.state }} {{ steps.collect.count }}"}
  - id: guarded
    phase: recovery
    action: note
    when: "'findings' in steps"
    with:
      text: >-
        {{ steps.collect.count }} {{ steps.findings.count }}
        {% if 'disable' in steps %}{{ steps.disable.state }}{% else %}not disabled{% endif %}
        {{ steps.disable.state if 'disable' in steps else '' }}
        {% if steps.disable is defined %}{{ steps.disable.state }}{% endif %}
        {% if 'disable' not in steps %}-{% elif steps.disable.state %}{{ steps.disable.state
        }}{% endif %}
  - id: conditions
    phase: recovery
    action: note
    when: "'disable' not in steps or steps.disable.state == 'Disabled'"
    with: {text: "{{ 'collect' in steps and steps.collect.count }}"}
"""
    )
    assert warnings_for(tmp_path, text) == [
        ":35:18: warning: step 'bare' reads steps.disable, which may not have run (it has a "
        "when:): guard the read with 'disable' in steps",
        ":35:18: warning: step 'bare' reads steps.collect, which may not have run (on_error: "
        "continue lets the run go on without it): guard the read with 'collect' in steps",
    ]


def test_a_change_with_no_snapshot_before_it_and_a_missing_phase(tmp_path: Path) -> None:
    text = """\
id: t
title: T
steps:
  - {id: disable, action: kms.disable-key, with: {key: alias/x}}
  - {id: snap, phase: identification, action: kms.snapshot, with: {key: alias/x}}
  - {id: enable, phase: recovery, action: kms.enable-key, with: {key: alias/x}}
"""
    assert warnings_for(tmp_path, text) == [
        ":1:1: warning: no 'version' (helps the report and reviewers)",
        ":1:1: warning: no 'severity' (helps the report and reviewers)",
        ":1:1: warning: no 'description' (helps the report and reviewers)",
        ":4:5: warning: step 'disable' has no phase (the report groups steps by NIST phase)",
        ":4:5: warning: step 'disable' changes AWS state (kms.disable-key) with no kms.snapshot "
        "step before it: the evidence would not hold the state before the change",
    ]


def test_warnings_exit_0_and_strict_makes_them_errors(tmp_path: Path) -> None:
    written(tmp_path, "id: t\ntitle: T\nsteps:\n  - {id: a, action: note, with: {text: x}}\n")
    relaxed = cli("validate", "p.yaml", cwd=tmp_path)
    assert relaxed.exit_code == 0
    assert relaxed.stdout == "p.yaml: valid (1 steps)\n"
    assert len(relaxed.stderr.splitlines()) == 4
    strict = cli("validate", "--strict", "p.yaml", cwd=tmp_path)
    assert (strict.exit_code, strict.stdout, strict.stderr) == (2, "", relaxed.stderr)


def test_shipped_playbooks_pass_strict() -> None:
    ran = cli("validate", "--strict", *map(str, sorted(PLAYBOOKS.glob("*.yaml"))))
    assert (ran.exit_code, ran.stderr) == (0, "")


# --- kmsir actions --------------------------------------------------------------------------


def test_actions_lists_parameters_and_outputs() -> None:
    ran = cli("actions", "cloudtrail.collect", "kms.restore-policy")
    assert ran.exit_code == 0
    text = " ".join(ran.stdout.split())  # as one line: wrapping is the terminal's business
    assert "cloudtrail.collect read-only" in text
    assert "with: key (str, required), source (lookup|files|s3|athena|lake, default lookup)" in text
    assert "until (str, optional)" in text
    assert "aliases (list[str], default [])" in text
    assert "outputs: count (int), first (str|null)" in text
    assert "kms.restore-policy mutating, undo: kms.restore-policy" in text
    assert "from (str, required), allow_lockout (bool, default false)" in text
    everything = cli("actions").stdout
    assert everything.count("\n    outputs: ") == len(actions.registry())
    unknown = cli("actions", "kms.snapshto")
    assert unknown.exit_code == 2
    assert "did you mean 'kms.snapshot'?" in unknown.stderr


# --- declared outputs against real runs -----------------------------------------------------

#: Outputs only some parameters give (the action's docstring says which).
SNAPSHOT_OF_MANY = frozenset({"count", "keys", "external_grants", "failed"})


#: Outputs only a step that fanned out over a run's accounts and Regions returns
#: (``run.fanout``), by the actions that fan out: these runs have no scope.
FANNED_OUT = {"targets", "artifacts"}
FANNING = {"kms.snapshot", "kms.audit", "cloudtrail.collect", "cloudtrail.findings"}


def expected_outputs(action: str, params: dict[str, Any]) -> set[str]:
    """The outputs ``action`` declares for a run with ``params`` (without a scope)."""
    declared = set(actions.registry()[action].outputs)
    declared -= FANNED_OUT if action in FANNING else set()
    if action == "kms.snapshot":
        return set(SNAPSHOT_OF_MANY) if params.get("key") is None else declared - SNAPSHOT_OF_MANY
    if action in ("iam.attach-deny-policy", "iam.detach-deny-policy"):
        return declared - ({"role"} if params.get("user") else {"user"})
    return declared


def returned(bundle: Path) -> list[tuple[str, str, dict[str, Any], set[str]]]:
    """``(step, action, params, output names)`` of each step that succeeded in a bundle."""
    params: dict[str, dict[str, Any]] = {}
    found = []
    for line in (bundle / "journal.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry["type"] == "step-started":
            params[entry["step"]] = entry["data"]["params"]
        elif entry["type"] == "step-succeeded":
            step, data = entry["step"], entry["data"]
            found.append((step, data["action"], params[step], set(data["outputs"])))
    return found


@pytest.mark.parametrize("scenario", scenarios.available())
def test_scenario_runs_return_the_declared_outputs(scenario: str, tmp_path: Path) -> None:
    with played(scenario, tmp_path) as (_, result):
        runs = returned(result.bundle)
    assert runs
    for step, action, params, outputs in runs:
        assert outputs == expected_outputs(action, params), (scenario, step)


EVERY_ACTION = """\
id: every-action
title: Every action once, for the outputs it returns
inputs:
  user: {type: string, required: true}
  access_key: {type: string, required: true}
  evidence: {type: string, required: true}
  external: {type: string, required: true}
  material: {type: string, required: true}
  store: {type: string, required: true}
  ou: {type: string, required: true}
steps:
  - {id: snap, action: kms.snapshot, with: {key: alias/payments-prod}}
  - {id: some, action: kms.snapshot, with: {keys: [alias/payments-prod]}}
  - {id: every, action: kms.snapshot, with: {all: true}}
  - {id: collect, action: cloudtrail.collect, with: {key: "{{ steps.snap.arn }}", since: 7d}}
  - {id: findings, action: cloudtrail.findings, with: {events: collect, window: 4d}}
  - {id: blast, action: kms.blast-radius, with: {key: "{{ steps.snap.key_id }}", events: collect}}
  - {id: audit, action: kms.audit, with: {key: "{{ steps.snap.key_id }}"}}
  - {id: decide, action: ask, with: {question: "Go on?", choices: [go, stop]}}
  - {id: sure, action: confirm, with: {message: "Go on"}}
  - {id: say, action: note, with: {text: "hello"}}
  - {id: pause, action: wait, with: {duration: 0s}}
  - {id: check, action: checklist, with: {items: ["legal informed"]}}
  - {id: attach, action: evidence.attach, with: {path: "{{ inputs.evidence }}", description: x}}
  - {id: tag, action: kms.tag-key, with: {key: "{{ steps.snap.key_id }}"}}
  - {id: tag-again, action: kms.tag-key, with: {key: "{{ steps.snap.key_id }}"}}
  - {id: rotation, action: kms.enable-rotation, with: {key: "{{ steps.snap.key_id }}"}}
  - {id: rotate, action: kms.rotate-now, with: {key: "{{ steps.snap.key_id }}"}}
  - id: quarantine
    action: kms.quarantine
    with: {key: "{{ steps.snap.key_id }}", break_glass: ["{{ run.operator }}"]}
  - id: restore
    action: kms.restore-policy
    with: {key: "{{ steps.snap.key_id }}", from: quarantine}
  - id: put
    action: kms.put-policy
    with: {key: "{{ steps.snap.key_id }}", policy: "{{ steps.snap.policy }}"}
  - id: deny
    action: kms.deny-principals
    with: {key: "{{ steps.snap.key_id }}", principals: ["444455556666"]}
  - id: revoke
    action: kms.revoke-grants
    with: {key: "{{ steps.snap.key_id }}", grant_ids: "{{ steps.snap.external_grant_ids }}"}
  - id: retire
    action: kms.retire-grants
    with: {key: "{{ steps.snap.key_id }}", filter: {operations: [Decrypt]}}
  - {id: disable, action: kms.disable-key, with: {key: "{{ steps.snap.key_id }}"}}
  - {id: enable, action: kms.enable-key, with: {key: "{{ steps.snap.key_id }}"}}
  - id: schedule
    action: kms.schedule-deletion
    with: {key: "{{ steps.snap.key_id }}", pending_window_days: 7}
  - id: schedule-again
    action: kms.schedule-deletion
    with: {key: "{{ steps.snap.key_id }}", pending_window_days: 7}
  - {id: cancel, action: kms.cancel-deletion, with: {key: "{{ steps.snap.key_id }}"}}
  - {id: freeze, action: iam.attach-deny-policy, with: {role: ci-deploy}}
  - {id: unfreeze, action: iam.detach-deny-policy, with: {user: "{{ inputs.user }}"}}
  - {id: sessions, action: iam.revoke-role-sessions, with: {role: [payments-app]}}
  - {id: sessions-back, action: iam.restore-role-sessions, with: {role: [payments-app]}}
  - id: deactivate
    action: iam.deactivate-access-key
    with: {user: "{{ inputs.user }}", access_key_id: "{{ inputs.access_key }}"}
  - id: reactivate
    action: iam.reactivate-access-key
    with: {user: "{{ inputs.user }}", access_key_id: "{{ inputs.access_key }}"}
  - {id: unimport, action: kms.delete-imported-material, with: {key: "{{ inputs.external }}"}}
  - {id: unimport-again, action: kms.delete-imported-material, with: {key: "{{ inputs.external }}"}}
  - id: reimport
    action: kms.import-key-material
    with: {key: "{{ inputs.external }}", material: "{{ inputs.material }}", valid_to: 30d}
  - id: reimport-again
    action: kms.import-key-material
    with: {key: "{{ inputs.external }}", material: "{{ inputs.material }}"}
  - {id: store-off, action: kms.disconnect-key-store, with: {store: "{{ inputs.store }}"}}
  - {id: store-on, action: kms.connect-key-store, with: {store: "{{ inputs.store }}"}}
  - id: scp
    action: org.attach-scp
    with: {targets: ["{{ inputs.ou }}"], break_glass: ["arn:aws:iam::*:role/BreakGlass"]}
  - id: scp-again
    action: org.attach-scp
    with: {targets: ["{{ inputs.ou }}"], break_glass: ["arn:aws:iam::*:role/BreakGlass"]}
  - id: unscp
    action: org.detach-scp
    with: {policy: "{{ steps.scp.policy_id }}", targets: ["{{ inputs.ou }}"], delete: true}
  - id: unscp-again
    action: org.detach-scp
    with: {policy: "{{ steps.scp.policy_id }}", targets: ["{{ inputs.ou }}"], delete: true}
"""


def organisation(sandbox: Sandbox) -> str:
    """An organisation (SCPs enabled) whose management account is the sandbox's, for the
    org.* steps: the id of an OU in it."""
    api = sandbox.session().client("organizations")
    api.create_organization(FeatureSet="ALL")
    root = api.list_roots()["Roots"][0]["Id"]
    api.enable_policy_type(RootId=root, PolicyType="SERVICE_CONTROL_POLICY")
    return str(api.create_organizational_unit(ParentId=root, Name="w")["OrganizationalUnit"]["Id"])


def test_every_action_returns_the_outputs_it_declares(rogue_grant: Sandbox, tmp_path: Path) -> None:
    """Every action run once (twice where a second run takes the "already" path) in the
    rogue-grant sandbox: each returns exactly what it declares."""
    iam = rogue_grant.session().client("iam")
    iam.create_user(UserName="build-bot")
    access_key = iam.create_access_key(UserName="build-bot")["AccessKey"]["AccessKeyId"]
    evidence = tmp_path / "ticket.txt"
    evidence.write_text("the ticket\n")
    material = tmp_path / "escrow.bin"
    material.write_bytes(MATERIAL)
    store, _ = hsm_store(rogue_grant, keys=0)
    ou = organisation(rogue_grant)
    loaded = load_playbook(written(tmp_path, EVERY_ACTION))
    result = run_playbook(
        loaded,
        rogue_grant.client_factory(),
        tmp_path / "ev",
        inputs={
            "user": "build-bot",
            "access_key": access_key,
            "evidence": str(evidence),
            "external": external_key(rogue_grant),
            "material": str(material),
            "store": store,
            "ou": ou,
        },
        answers={"decide": "go", "sure": True, "check.1": DONE},
        yes=True,
        scenario="rogue-grant",
    )
    assert result.status == "succeeded", result.error
    runs = returned(result.bundle)
    assert [step for step, *_ in runs] == [step.id for step in loaded.playbook.steps]
    assert {action for _, action, *_ in runs} == set(actions.registry())
    for step, action, params, outputs in runs:
        assert outputs == expected_outputs(action, params), step

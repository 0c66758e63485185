"""The shipped playbooks' texts are true on every branch.

Each shipped incident playbook is played in its scenario's sandbox as scripted and with one
deviation at a time (``tests/deviations.py``: each other choice of each ``ask``, a skip of
each step the responder may skip). Every run must succeed, and no note or report sentence
may contradict the state the run leaves AWS in: "before enabling it again" about an enabled
key, "no longer pending deletion" about a key pending deletion, a quarantine that is not in
the key policy, a containment claimed when none was chosen, an access key said inactive that
still works...

``contradictions`` holds the rules; ``test_the_rules_catch_the_texts_that_shipped`` feeds it
the texts the playbooks used to render, so that a rule that stops matching fails a test.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from kmsir import actions

from .conftest import PLAYBOOKS, load_playbook
from .deviations import Deviation, deviations
from .journalkit import journal_lines

INCIDENT_PLAYBOOKS = (
    "kms-key-compromise",
    "kms-key-deletion-response",
    "kms-key-outage",
    "kms-policy-tampering",
    "kms-leaked-credentials",
    "kms-imported-material",
    "kms-key-store-incident",
    "kms-trail-tampering",
)
PENDING = ("PendingDeletion", "PendingReplicaDeletion")
_SENTENCE = re.compile(r"(?<=[.?!])\s+")
_STATE_WORD = (
    r"(Enabled|Disabled|PendingDeletion|PendingReplicaDeletion|PendingImport|Unavailable|Creating)"
)


def sentences(text: str) -> Iterator[str]:
    """``text`` cut into sentences (Markdown escapes of the report undone)."""
    for part in _SENTENCE.split(text.replace("\\", "")):
        if part.strip():
            yield part.strip()


def contradictions(
    state: dict[str, Any], notes: list[str], closing: list[str], report_md: str
) -> list[str]:
    """Every sentence of ``notes`` (all of a run's notes), ``closing`` (the notes of its
    recovery and lessons-learned steps, written after every change) and ``report_md`` that
    contradicts ``state`` (a ``Deviation.final_state``), each with the reason."""
    found: list[str] = []
    key = state.get("key") or {}
    key_state = key.get("state")
    sids = [str(s) for s in key.get("policy_sids", [])]
    quarantined = any(s.startswith("kmsir-quarantine") for s in sids)
    denied = any(s.startswith("kmsir-deny") for s in sids)
    access_keys = {k: v for keys in state.get("access_keys", {}).values() for k, v in keys.items()}
    roles = state.get("roles", {})

    def check(sentence: str, final: bool) -> None:
        def bad(reason: str) -> None:
            found.append(f"{reason}: {sentence[:240]!r}")

        low = sentence.lower()
        if "before enabling it again" in low and key_state != "Disabled":
            bad(f"the key is {key_state}, not disabled")
        if "no longer pending deletion" in low and key_state in PENDING:
            bad(f"the key is {key_state}")
        if ("not cancelled" in low or "still pending deletion" in low) and (
            key_state not in PENDING
        ):
            bad(f"the key is {key_state}: its deletion was cancelled")
        if (
            "decrypt calls succeed again" in low
            and "once it is enabled" not in low
            and key_state != "Enabled"
        ):
            bad(f"the key is {key_state}: decrypting fails")
        if "it is still usable" in low and key_state != "Enabled":
            bad(f"the key is {key_state}")
        if "after the cancellation" in low and state["steps"].get("cancel") == "skipped":
            bad("the cancellation was skipped")
        for said in re.findall(rf"\bis now {_STATE_WORD}", sentence):
            if said != key_state:
                bad(f"the key is {key_state}, not {said}")
        for count in re.findall(r"\bis now \w+ with (\d+) grant\(s\)", sentence):
            if int(count) != len(key.get("grants", [])):
                bad(f"the key has {len(key.get('grants', []))} grant(s)")
        if final:
            for said in re.findall(rf"^Key \S+ is {_STATE_WORD}\b", sentence):
                if said != key_state:
                    bad(f"the key is {key_state}, not {said}")
            if "scheduled for deletion" in low and key_state not in PENDING:
                bad(f"the key is {key_state}")
        if ("is quarantined" in low or "quarantine covered" in low) and not quarantined:
            bad("the key policy has no quarantine statement")
        if "tampered policy is still in force" in low and (quarantined or denied):
            bad("the key policy denies the intruders")
        if "no containment of the key was chosen" in low and (
            state["answers"].get("decide") != "none"
        ):
            bad(f"containment {state['answers'].get('decide')} was chosen")
        for access_key, status in re.findall(
            r"Access key (\w+) of IAM user \S+ is (\w+)", sentence
        ):
            if access_keys.get(access_key) != status:
                bad(f"access key {access_key} is {access_keys.get(access_key)}")
        for access_key in re.findall(r"access key (\w+) of IAM user \S+ still works", sentence):
            if access_keys.get(access_key) != "Active":
                bad(f"access key {access_key} is {access_keys.get(access_key)}")
        if "no access key was deactivated" in low and "Inactive" in access_keys.values():
            bad("an access key is inactive")
        for role in re.findall(
            r"\b[Tt]he sessions of (\S+) issued before \S+ are revoked", sentence
        ):
            if "AWSRevokeOlderSessions" not in roles.get(role, []):
                bad(f"role {role} has no session revocation")
        for role in re.findall(r"(\S+) is denied everything", sentence):
            if "AWSDenyAll" not in roles.get(role.strip(";"), []):
                bad(f"role {role} is not denied")

    for note in notes:
        for sentence in sentences(note):
            check(sentence, final=note in closing)
    for sentence in sentences(report_md):
        check(sentence, final=False)
    return found


def closing_notes(run: Deviation) -> list[str]:
    """The notes of the run's recovery and lessons-learned steps."""
    lines = journal_lines(run.result.bundle / "journal.jsonl")
    started = next(line for line in lines if line.get("type") == "run-started")
    loaded = load_playbook(PLAYBOOKS / f"{started['data']['playbook']['id']}.yaml")
    late = {s.id for s in loaded.playbook.steps if s.phase in ("recovery", "lessons-learned")}
    return [
        str(line["data"]["text"])
        for line in lines
        if line.get("type") == "note" and line.get("step") in late
    ]


@pytest.mark.parametrize("playbook_id", INCIDENT_PLAYBOOKS)
def test_every_deviation_succeeds(playbook_id: str) -> None:
    runs = deviations(playbook_id)
    assert runs[0].name == "scripted" and runs[0].skipped == ()
    failed = [(r.name, r.result.error) for r in runs if r.result.status != "succeeded"]
    assert not failed


@pytest.mark.parametrize("playbook_id", INCIDENT_PLAYBOOKS)
def test_no_note_or_report_sentence_contradicts_the_final_state(playbook_id: str) -> None:
    problems = [
        f"{run.name}: {problem}"
        for run in deviations(playbook_id)
        for problem in contradictions(
            run.final_state, list(run.notes), closing_notes(run), run.report_md
        )
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("playbook_id", INCIDENT_PLAYBOOKS)
def test_one_deviation_at_a_time(playbook_id: str) -> None:
    """Each other choice of each ask that the scripted run reached, and a skip of each step
    that the scripted run ran and a responder may skip, each once; every run recorded its
    calls, and its own answers are the scenario's with one change."""
    loaded = load_playbook(PLAYBOOKS / f"{playbook_id}.yaml")
    registry = actions.registry()
    runs = deviations(playbook_id)
    scripted = runs[0]
    ran = {s for s, status in scripted.final_state["steps"].items() if status != "skipped"}
    expected = ["scripted"]
    for step in loaded.playbook.steps:
        if step.action == "ask" and step.id in scripted.final_state["answers"]:
            chosen = scripted.final_state["answers"][step.id]
            expected += [f"{step.id}={c}" for c in step.with_["choices"] if c != chosen]
    expected += [
        f"skip {s.id}" for s in loaded.playbook.steps if not registry[s.action].asks and s.id in ran
    ]
    assert [r.name for r in runs] == expected
    for run in runs:
        assert run.calls, run.name
        assert all(re.fullmatch(r"[a-z0-9-]+:[A-Z][A-Za-z0-9]+", c) for c in run.calls)
        changed = {k for k, v in run.answers.items() if scripted.answers.get(k) != v}
        deviated = run.name.removeprefix("skip ").split("=")[0]
        if run.name.startswith("skip "):
            assert run.skipped == (deviated,)
            assert run.final_state["steps"][deviated] == "skipped"
        elif run.name != "scripted":
            assert run.final_state["answers"][deviated] == run.name.split("=")[1]
        # besides the one change, only approvals of steps the script never reached
        assert all(run.answers[k] == "approve" for k in changed - {deviated})


def test_the_issue_s_two_runs_tell_the_truth() -> None:
    # kms-key-compromise with `none`: the key stays enabled with its outside grant
    declined = next(r for r in deviations("kms-key-compromise") if r.name == "decide=none")
    assert declined.final_state["key"]["state"] == "Enabled"
    outside = declined.final_state["key"]["outside_grants"]
    assert outside
    recovery = closing_notes(declined)[0]
    assert "before enabling it again" not in recovery.lower()
    assert "No containment of the key was chosen" in recovery
    assert f"still active ({outside[0]})" in recovery
    # kms-key-deletion-response with `cancel` skipped: the key is still pending deletion
    kept = next(r for r in deviations("kms-key-deletion-response") if r.name == "skip cancel")
    assert kept.final_state["key"]["state"] == "PendingDeletion"
    recovery = closing_notes(kept)[0]
    assert "no longer pending deletion" not in recovery
    assert "the deletion was NOT cancelled" in recovery
    assert "after the cancellation" not in kept.report_md


#: AWS as the two runs of the issue left it.
_ENABLED_WITH_OUTSIDE_GRANT = {
    "key": {"state": "Enabled", "grants": ["a", "b"], "outside_grants": ["b"], "policy_sids": []},
    "steps": {"decide": "succeeded", "revoke": "skipped", "disable": "skipped"},
    "answers": {"decide": "none"},
    "access_keys": {"svc": {"AKIAEXAMPLE": "Active"}},
    "roles": {"ci-deploy": []},
}
_DISABLED = {
    "key": {"state": "Disabled", "grants": [], "outside_grants": [], "policy_sids": []},
    "steps": {"decide": "succeeded", "enable": "skipped"},
    "answers": {"decide": "keep-disabled"},
    "access_keys": {},
    "roles": {},
}
_PENDING_DELETION = {
    "key": {"state": "PendingDeletion", "grants": [], "outside_grants": [], "policy_sids": []},
    "steps": {"cancel": "skipped", "decide": "succeeded"},
    "answers": {"decide": "keep-disabled"},
    "access_keys": {},
    "roles": {},
}


@pytest.mark.parametrize(
    ("state", "text", "closing"),
    [
        # the texts the playbooks rendered before they were made true on every branch
        (
            _ENABLED_WITH_OUTSIDE_GRANT,
            "Key k is now Enabled with 2 grant(s). Before enabling it again: rotate the "
            "credentials of every principal that created grants.",
            False,
        ),
        (
            _PENDING_DELETION,
            "Key k is PendingDeletion and no longer pending deletion. Revoke the credentials.",
            True,
        ),
        (_PENDING_DELETION, "Key k is Disabled after the cancellation. Applications fail.", False),
        (
            _DISABLED,
            "Key k is Disabled. Check that the applications' Decrypt calls succeed again.",
            True,
        ),
        (
            _ENABLED_WITH_OUTSIDE_GRANT,
            "Write the key's intended policy. The quarantine covered this Region only: review.",
            False,
        ),
        # and claims the rules must catch on any branch
        (_PENDING_DELETION, "Key k is Disabled. Tell the owners.", True),
        (_ENABLED_WITH_OUTSIDE_GRANT, "Key k is now Disabled with 2 grant(s).", False),
        (_ENABLED_WITH_OUTSIDE_GRANT, "Key k is now Enabled with 1 grant(s).", False),
        (_PENDING_DELETION, "No containment of the key was chosen.", False),
        (_ENABLED_WITH_OUTSIDE_GRANT, "Access key AKIAEXAMPLE of IAM user svc is Inactive.", False),
        (
            _ENABLED_WITH_OUTSIDE_GRANT,
            "The sessions of ci-deploy issued before now are revoked.",
            False,
        ),
        (_ENABLED_WITH_OUTSIDE_GRANT, "Then ci-deploy is denied everything; review.", False),
        (_PENDING_DELETION, "It is still usable: disable it.", False),
    ],
)
def test_the_rules_catch_the_texts_that_shipped(
    state: dict[str, Any], text: str, closing: bool
) -> None:
    assert contradictions(state, [text], [text] if closing else [], "")
    # the report's sentences are read too
    assert contradictions(state, [], [], text) or closing


def test_true_texts_pass_the_rules() -> None:
    text = (
        "No containment of the key was chosen. Key k is now Enabled with 2 grant(s), 1 of them "
        "to outside accounts and still active (b): revoke them with kms.revoke-grants. It is "
        "still usable: disable it with kms.disable-key if the misuse goes on."
    )
    assert contradictions(_ENABLED_WITH_OUTSIDE_GRANT, [text], [text], text) == []

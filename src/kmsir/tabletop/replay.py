"""Replaying a team's exercise: the recorded decisions against a fresh world, compared.

``kmsir tabletop replay BUNDLE`` checks the players' bundle (a tampered one is refused), plays
the same playbook (the bundle's copy) with the same inputs against a fresh world of the same
scenario (refused when the scenario changed since: it would be another world), answering
every question from the recorded decisions (``recorded``). The world's timers are off: each
timed or facilitator's inject fires where the journal says it took effect (before the step in
its ``before``; ``None``: at the run's end), each step's inject after its step as always; an
exercise the facilitator ended ends before the same step. The replay is a new run with its own
bundle (incident ``<incident>-replay``). A replay never waits for a second person's approval
(nobody would answer): where the recorded run waited, its outcome is reproduced (approved: the
step runs; denied or timed out: it fails the same way, and the team's recorded answer to the
failure menu applies).

An unfinished run is not replayed (its outcome is not known yet). The outcome is compared
with the recorded run's: its status, its decisions (step and answer: a question's text may
hold a time), the injects fired (which, set off how, where), and the final AWS state of the
recorded run's world, rebuilt from its journal by the resume machinery (``Sandbox.replay``),
against the replay's: each key's state, deletion date (the date only), policy, grants and
aliases, and the IAM containment of users and roles (access keys' status, policies by name),
the replay's incident id written as the recorded run's (a quarantine policy's Sid names it).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kmsir.errors import TamperedError, UsageError
from kmsir.evidence.bundle import JOURNAL, PLAYBOOK_COPY, check_incident_id, read_journal
from kmsir.evidence.view import RunView
from kmsir.run.engine import EndAtBoundary
from kmsir.tabletop.recorded import RecordedPrompter, decisions
from kmsir.tabletop.session import ENDED

if TYPE_CHECKING:
    from kmsir.actions.base import Reporter
    from kmsir.run.engine import RunResult
    from kmsir.sandbox import Sandbox


@dataclass(frozen=True)
class Replayed:
    """A replay's run and how its outcome compares with the recorded run's."""

    result: RunResult
    #: One line per difference (empty: the same outcome).
    differences: list[str]

    @property
    def same(self) -> bool:
        return not self.differences


def replay(
    bundle: Path,
    *,
    evidence_dir: Path | None = None,
    reporter: Reporter,
    on_bundle: Callable[[Path], None],
    warn: Callable[[str], None],
) -> Replayed:
    """Replay the players' run in ``bundle`` into a new bundle under ``evidence_dir`` (default:
    the recorded run's) and compare the outcomes (see the module's docstring)."""
    from kmsir import actions
    from kmsir.evidence import integrity
    from kmsir.playbook import model as playbook
    from kmsir.run import launch
    from kmsir.run.engine import RunOptions
    from kmsir.sandbox import Sandbox
    from kmsir.sandbox import scenario as scenarios

    root = bundle.resolve()
    checked = integrity.check(root)
    if checked.problems:
        raise TamperedError(checked.problems)
    view = checked.view
    meta = view.meta
    recorded = meta.sandbox if meta is not None else None
    if meta is None or not meta.scenario or not isinstance(recorded, dict):
        raise UsageError(f"{bundle}: not a sandbox run (only a scenario's world can be replayed)")
    if view.finished is None:
        raise UsageError(
            f"{bundle}: the run has not finished (resume it first): an unfinished run's outcome "
            "cannot be compared"
        )
    loaded = playbook.load(root / PLAYBOOK_COPY, actions.catalog())
    source = str(recorded.get("source") or meta.scenario)
    if Sandbox(scenarios.load(source)).fingerprint != recorded.get("scenario_sha256"):
        raise UsageError(
            f"scenario {meta.scenario} ({source}) changed since this run was played: its world "
            "would not be the one the team played, so the run is not replayed"
        )
    original = launch.rebuild_sandbox(recorded, meta.scenario)
    with original:
        original.replay(view)
        before = final_state(original)
    fresh = Sandbox(original.scenario)
    with fresh:
        fresh.injects.timers = False  # they fire where the journal says they took effect
        incident = check_incident_id(f"{meta.incident}-replay"[:64].rstrip("-."))
        options = RunOptions(
            incident_id=incident,
            evidence_dir=evidence_dir or root.parent.parent,
            mode="sandbox",
            scenario=meta.scenario,
        )
        again = {
            **fresh.record(),
            "source": recorded.get("source"),
            "replay_of": {"run_id": meta.run_id, "bundle": str(root), "head": view.head},
        }
        venue = launch.sandboxed(fresh, options, {"sandbox": again})
        # nobody answers a replay: it never waits for a second person; where the recorded
        # run waited, the recorded outcome is reproduced (approved: on; denied or timed out:
        # the same failure, so the team's recorded answer to the failure menu applies)
        unasked = dataclasses.replace(
            venue.options,
            scenario_approvals=False,
            require_approval=False,
            approver_env={},
            replayed_approvals=approval_outcomes(view),
        )
        venue = dataclasses.replace(venue, options=unasked, before_step=_boundaries(fresh, view))
        engine = launch.engine(
            venue,
            prompter=RecordedPrompter(view),
            reporter=reporter,
            anchor_key=None,
            on_bundle=on_bundle,
            warn=warn,
        )
        result = engine.run(loaded, dict(view.inputs), venue.options)
        # what names the incident (a quarantine's Sid) names the recorded one, as it did then
        after = _renamed(final_state(fresh), incident, meta.incident)
    replayed = read_journal(result.bundle / JOURNAL).view()
    return Replayed(result, compare(view, replayed, before, after))


def approval_outcomes(view: RunView) -> dict[str, list[str | None]]:
    """Per step, what came of each second-person request of the recorded run, in order:
    ``None`` approved, else the failure it gave (denied, timed out, the key changed)."""
    from kmsir.evidence import entries as e
    from kmsir.run import second_person

    found: dict[str, list[str | None]] = {}
    open_requests: dict[str, e.ApprovalRequested] = {}
    for moment in view.timeline:
        record, step = moment.record, moment.step
        if step is None:
            continue
        if isinstance(record, e.ApprovalRequested):
            open_requests[step] = record
            found.setdefault(step, []).append(None)
            continue
        request = open_requests.get(step)
        if request is None:
            continue
        if isinstance(record, e.ApprovalGiven) and record.decision == "deny":
            found[step][-1] = second_person.denied(record)
        elif isinstance(record, e.ApprovalTimedOut):
            found[step][-1] = second_person.timed_out(request, record.approved)
        elif isinstance(record, e.Recheck) and record.reason == second_person.WAITED:
            found[step][-1] = second_person.CHANGED
        else:
            continue
        del open_requests[step]
    return found


def _boundaries(sandbox: Sandbox, view: RunView) -> Callable[[str | None], list[dict[str, Any]]]:
    """The replay's ``before_step``: the recorded timer's and facilitator's injects before
    the steps where they took effect, and the facilitator's end where it came."""
    planned: dict[str | None, list[Mapping[str, Any]]] = {}
    for moment in view.injects:
        record = moment.record
        if isinstance(record, Mapping) and record.get("trigger") in ("timer", "facilitator"):
            planned.setdefault(record.get("before"), []).append(record)
    ended = view.finished is not None and view.finished.error == ENDED
    reached = set(view.steps)  # each step and each loop iteration the run started

    def boundary(step_id: str | None) -> list[dict[str, Any]]:
        fired = [
            sandbox.fire_now(
                int(record["inject"]),
                before=step_id,
                command=record.get("command"),
                trigger="timer" if record.get("trigger") == "timer" else "facilitator",
            )
            for record in planned.pop(step_id, [])
        ]
        if ended and step_id is not None and step_id not in reached:
            raise EndAtBoundary(ENDED, fired)  # the first step (or iteration) it never began
        return fired

    return boundary


# -- the outcome --------------------------------------------------------------------------


def compare(
    recorded: RunView, replayed: RunView, before: dict[str, Any], after: dict[str, Any]
) -> list[str]:
    """What differs between the recorded run and its replay (empty: the same outcome)."""
    found: list[str] = []
    if recorded.status != replayed.status:
        found.append(f"status: {recorded.status} recorded, {replayed.status} in the replay")
    # by step and answer: a question's text may hold a time (when the team was asked)
    ours = [(s, d.answer) for s, d in decisions(recorded)]
    theirs = [(s, d.answer) for s, d in decisions(replayed)]
    for n in range(max(len(ours), len(theirs))):
        one = ours[n] if n < len(ours) else None
        two = theirs[n] if n < len(theirs) else None
        if one != two:
            found.append(
                f"decision {n + 1}: {_decision(one)} recorded, {_decision(two)} in the replay"
            )
    fired = [_inject(m.record) for m in recorded.injects]
    fired_again = [_inject(m.record) for m in replayed.injects]
    if fired != fired_again:
        found.append(f"injects: {fired} recorded, {fired_again} in the replay")
    found += [f"AWS state: {line}" for line in _differ(before, after, "")]
    return found


def _decision(item: tuple[str | None, Any] | None) -> str:
    if item is None:
        return "none"
    step, answer = item
    return f"step {step} -> {answer!r}"


def _renamed(state: dict[str, Any], replay_incident: str, incident: str) -> dict[str, Any]:
    """The replay's final state with its incident id written as the recorded run's."""
    text = json.dumps(state, sort_keys=True, default=str).replace(replay_incident, incident)
    renamed: dict[str, Any] = json.loads(text)
    return renamed


def _inject(record: Any) -> str:
    if not isinstance(record, Mapping):
        return "?"
    where = record.get("before") if record.get("trigger") in ("timer", "facilitator") else None
    how = record.get("trigger") or "step"
    return f"{record.get('inject')} ({how}{f', before {where}' if where else ''})"


def _differ(one: Any, two: Any, path: str) -> list[str]:
    if isinstance(one, dict) and isinstance(two, dict):
        lines = []
        for name in sorted(set(one) | set(two), key=str):
            here = f"{path}.{name}" if path else str(name)
            if name not in one:
                lines.append(f"{here}: absent recorded, {_short(two[name])} in the replay")
            elif name not in two:
                lines.append(f"{here}: {_short(one[name])} recorded, absent in the replay")
            else:
                lines += _differ(one[name], two[name], here)
        return lines
    if one != two:
        return [f"{path}: {_short(one)} recorded, {_short(two)} in the replay"]
    return []


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 160 else text[:157] + "..."


def final_state(sandbox: Sandbox) -> dict[str, Any]:
    """The world's AWS state that a team's decisions change: each key's (by scenario name)
    state, deletion date, policy, grants and aliases; each IAM user's access keys and
    policies, each role's policies (by name: a revoked session's policy holds a time)."""
    from botocore.exceptions import ClientError

    session = sandbox.session()
    kms, iam = session.client("kms"), session.client("iam")
    names = {k["id"]: n for n, k in sandbox.keys.items()}

    def read(operation: str, **params: Any) -> dict[str, Any]:
        """A KMS read; AWS's error code instead when it refuses (a key's state may)."""
        try:
            answer: dict[str, Any] = getattr(kms, operation)(**params)
        except ClientError as exc:
            return {"error": exc.response.get("Error", {}).get("Code")}
        return answer

    keys: dict[str, Any] = {}
    for page in kms.get_paginator("list_keys").paginate():
        for listed in page["Keys"]:
            key_id = listed["KeyId"]
            meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
            if meta.get("KeyManager") == "AWS":
                continue
            deletion = meta.get("DeletionDate")
            policy = read("get_key_policy", KeyId=key_id, PolicyName="default")
            grants = read("list_grants", KeyId=key_id)
            keys[names.get(key_id, key_id)] = {
                "state": meta.get("KeyState"),
                "deletion_date": deletion.date().isoformat() if deletion else None,
                "policy": json.loads(policy["Policy"]) if "Policy" in policy else policy,
                "grants": sorted(
                    f"{g.get('Name', '')} {g.get('GranteePrincipal')} "
                    f"{','.join(sorted(g.get('Operations', [])))}"
                    for g in grants.get("Grants", [])
                )
                if "error" not in grants
                else grants,
            }
    aliases = {
        a["AliasName"]: names.get(a.get("TargetKeyId", ""), a.get("TargetKeyId"))
        for page in kms.get_paginator("list_aliases").paginate()
        for a in page["Aliases"]
        if not a["AliasName"].startswith("alias/aws/")
    }
    users = {
        u["UserName"]: {
            "access_keys": {
                k["AccessKeyId"]: k["Status"]
                for k in iam.list_access_keys(UserName=u["UserName"])["AccessKeyMetadata"]
            },
            "policies": sorted(iam.list_user_policies(UserName=u["UserName"])["PolicyNames"]),
            "attached": sorted(
                p["PolicyName"]
                for p in iam.list_attached_user_policies(UserName=u["UserName"])["AttachedPolicies"]
            ),
        }
        for u in iam.list_users()["Users"]
    }
    roles = {
        r["RoleName"]: {
            "policies": sorted(iam.list_role_policies(RoleName=r["RoleName"])["PolicyNames"]),
            "attached": sorted(
                p["PolicyName"]
                for p in iam.list_attached_role_policies(RoleName=r["RoleName"])["AttachedPolicies"]
            ),
        }
        for r in iam.list_roles()["Roles"]
    }
    return {"keys": keys, "aliases": aliases, "iam": {"users": users, "roles": roles}}

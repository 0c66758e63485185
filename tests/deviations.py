"""Each shipped playbook played in its scenario's sandbox once as scripted and once per
deviation, every AWS call recorded: the runs that the texts test and the permissions test
read.

A deviation changes one thing of the scenario's answers: another choice of one ``ask``, or a
skip of one step the responder may skip (any step that is not itself a question or a note).
Every other answer stays as scripted; a mutating step the scenario does not answer (reached
only through the deviation, e.g. ``enable`` after ``decide: enable``) is approved. A skip is
played only for a step the scripted run ran: skipping a step that did not run takes the
scripted path again.

Each run gets its own sandbox, in process. The runs of a playbook are made once per process
and cached, so the texts test and the permissions test share them. Each run's Markdown
report is rendered from its bundle (not written into it).

Calls are recorded with a botocore ``before-call`` hook on the session of the runner's
clients (never on the sandbox's own seeding and injects: those are the world, not the run),
in IAM spelling: ``kms:DescribeKey``, ``cloudtrail:LookupEvents``, ``s3:ListBucket`` (for
``ListObjectsV2``).
"""

from __future__ import annotations

import atexit
import functools
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

from kmsir import actions, report
from kmsir.run.engine import RunResult
from kmsir.sandbox import Sandbox
from kmsir.sandbox import scenario as scenarios
from kmsir.sandbox.scenario_model import Scenario

from .conftest import PLAYBOOKS, load_playbook, run_playbook
from .journalkit import journal_lines

#: botocore signing names that are not the service's IAM prefix.
IAM_PREFIX = {"monitoring": "cloudwatch", "email": "ses", "runtime.sagemaker": "sagemaker"}

#: botocore operations whose IAM action has another name (``service:Operation`` both).
IAM_ACTION = {
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:ListObjects": "s3:ListBucket",
    "s3:HeadBucket": "s3:ListBucket",
    "s3:HeadObject": "s3:GetObject",
    "s3:ListBuckets": "s3:ListAllMyBuckets",
    "s3:ListObjectVersions": "s3:ListBucketVersions",
    "s3:GetBucketEncryption": "s3:GetEncryptionConfiguration",
    "s3:PutBucketEncryption": "s3:PutEncryptionConfiguration",
    "s3:GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "s3:GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "s3:GetBucketReplication": "s3:GetReplicationConfiguration",
    "s3:GetBucketNotificationConfiguration": "s3:GetBucketNotification",
    "s3:GetObjectLockConfiguration": "s3:GetBucketObjectLockConfiguration",
    "s3:CreateMultipartUpload": "s3:PutObject",
    "s3:UploadPart": "s3:PutObject",
    "s3:CompleteMultipartUpload": "s3:PutObject",
    "s3:DeleteObjects": "s3:DeleteObject",
}


@dataclass(frozen=True)
class Deviation:
    """One run of a playbook: what was changed from the script, and what it left behind.

    ``final_state``: AWS as the run left it, read after the run from the sandbox:
    ``key`` (``id``, ``arn``, ``state``, ``deletion_date``, ``grants``, ``outside_grants``
    (grant ids to principals of other accounts), ``policy_sids``) when the playbook has a
    ``key`` input; ``access_keys`` (user -> access key id -> Active/Inactive); ``roles``
    (role name -> the policies attached to it or inline); ``answers`` (ask step -> the
    choice taken, for the asks that ran); ``steps`` (step id -> status); ``open_risks``
    (the kinds the run reported).
    """

    name: str
    answers: dict[str, Any]
    skipped: tuple[str, ...]
    result: RunResult
    calls: frozenset[str]
    notes: tuple[str, ...]
    report_md: str
    final_state: dict[str, Any]


def scenario_of(playbook_id: str) -> str:
    """The built-in scenario that plays ``playbook_id`` (read from its ``playbook:`` line:
    loading every scenario costs more than a run)."""
    line = re.compile(rf"^playbook:\s*{re.escape(playbook_id)}\s*$", re.MULTILINE)
    for path in sorted(scenarios.scenario_dir().glob("*.yaml")):
        if line.search(path.read_text()):
            return path.stem
    raise LookupError(f"no scenario plays {playbook_id}")


def iam_action(model: Any) -> str:
    """``service:Operation`` in IAM spelling for a botocore operation model."""
    service = model.service_model
    prefix = service.signing_name or service.endpoint_prefix
    name = f"{IAM_PREFIX.get(prefix, prefix)}:{model.name}"
    return IAM_ACTION.get(name, name)


@functools.cache
def _evidence_root() -> Path:
    """Where this process's runs leave their bundles (removed when it exits)."""
    root = Path(tempfile.mkdtemp(prefix="kmsir-deviations-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root


@functools.cache
def deviations(playbook_id: str) -> list[Deviation]:
    """``playbook_id`` played in its scenario's sandbox as scripted (first, named
    ``scripted``), then once per deviation (named ``<ask>=<choice>`` or ``skip <step>``).
    Made once per process: the texts and the permissions tests share them (under xdist a
    second worker may make them again, about 5 s of CPU a playbook)."""
    return _runs(playbook_id, _evidence_root() / playbook_id)


def _runs(playbook_id: str, root: Path) -> list[Deviation]:
    # the bundles are read once, by these tests: durable writes (an fsync per journal line
    # and file, which the crash tests cover) would be most of the harness's wall time
    with mock.patch("os.fsync", return_value=None):
        return _made(playbook_id, root)


def _made(playbook_id: str, root: Path) -> list[Deviation]:
    scenario = scenario_of(playbook_id)
    loaded = load_playbook(PLAYBOOKS / f"{playbook_id}.yaml")
    registry = actions.registry()
    world = scenarios.load(scenario)
    steps = loaded.playbook.steps
    # every mutating step approved unless the scenario answers it; every ask answered
    base: dict[str, Any] = {s.id: "approve" for s in steps if registry[s.action].mutating}
    for step in steps:
        if step.action == "ask":
            choices = list(step.with_["choices"])
            base[step.id] = step.with_.get("decline") or choices[0]
    base.update(world.answers)

    scripted = _play(world, loaded, "scripted", dict(world.answers), (), root)
    runs = [scripted]
    for step in steps:
        if step.action == "ask":
            for choice in step.with_["choices"]:
                if choice != base[step.id]:
                    answers = {**base, step.id: choice}
                    runs.append(_play(world, loaded, f"{step.id}={choice}", answers, (), root))
    ran = {s for s, status in scripted.final_state["steps"].items() if status != "skipped"}
    for step in steps:
        if not registry[step.action].asks and step.id in ran:
            answers = {**base, step.id: "skip"}
            runs.append(_play(world, loaded, f"skip {step.id}", answers, (step.id,), root))
    return runs


def _play(
    world: Scenario,
    loaded: Any,
    name: str,
    answers: dict[str, Any],
    skipped: tuple[str, ...],
    root: Path,
) -> Deviation:
    """One run in a fresh sandbox of ``world``, its calls recorded."""
    calls: set[str] = set()

    def record(model: Any, **_: Any) -> None:
        calls.add(iam_action(model))

    evidence = root / name.replace(" ", "-").replace("=", "-")
    sandbox = Sandbox(world)
    # the world's own seeding and injects share one session (a botocore session costs as
    # much to make as a step to run); the runner's clients get a session of their own,
    # the only one recorded
    fresh = Sandbox.session
    sandbox.session = functools.cache(lambda: fresh(sandbox))  # type: ignore[method-assign]
    with sandbox:
        factory = sandbox.client_factory()

        def hooked() -> Any:
            session = fresh(sandbox)
            session.events.register("before-call", record)
            return session

        factory.session_factory = hooked
        result = run_playbook(
            loaded,
            factory,
            evidence,
            inputs=world.inputs,
            answers=answers,
            scenario=world.id,
            after_step=sandbox.after_step,
        )
        state = _final_state(sandbox, world.inputs, result)
    lines = journal_lines(result.bundle / "journal.jsonl")
    notes = tuple(str(line["data"]["text"]) for line in lines if line.get("type") == "note")
    asks = {s.id for s in loaded.playbook.steps if s.action == "ask"}
    state["answers"] = {
        str(line["step"]): line["data"]["outputs"]["answer"]
        for line in lines
        if line.get("type") == "step-succeeded" and line.get("step") in asks
    }
    report_md = report.render(result.bundle, fmt="md")
    return Deviation(
        name=name,
        answers=answers,
        skipped=skipped,
        result=result,
        calls=frozenset(calls),
        notes=notes,
        report_md=report_md,
        final_state=state,
    )


def _final_state(sandbox: Sandbox, inputs: dict[str, Any], result: RunResult) -> dict[str, Any]:
    """AWS as the run left it (read with the sandbox's own, unrecorded clients)."""
    session = sandbox.session()
    state: dict[str, Any] = {
        "steps": {r.step_id: r.status for r in result.steps},
        "open_risks": [str(r.get("kind")) for r in result.open_risks],
    }
    if "key" in inputs:
        kms = session.client("kms")
        meta = kms.describe_key(KeyId=inputs["key"])["KeyMetadata"]
        grants = kms.list_grants(KeyId=meta["KeyId"])["Grants"]
        policy = kms.get_key_policy(KeyId=meta["KeyId"], PolicyName="default")["Policy"]
        state["key"] = {
            "id": meta["KeyId"],
            "arn": meta["Arn"],
            "state": meta["KeyState"],
            "deletion_date": str(meta["DeletionDate"]) if meta.get("DeletionDate") else None,
            "grants": sorted(g["GrantId"] for g in grants),
            "outside_grants": sorted(
                g["GrantId"]
                for g in grants
                if f":{sandbox.account}:" not in str(g.get("GranteePrincipal", ""))
                and str(g.get("GranteePrincipal", "")).startswith("arn:")
            ),
            "policy_sids": [str(s.get("Sid", "")) for s in json.loads(policy).get("Statement", [])],
        }
    iam = session.client("iam")
    state["access_keys"] = {
        user["UserName"]: {
            k["AccessKeyId"]: k["Status"]
            for k in iam.list_access_keys(UserName=user["UserName"])["AccessKeyMetadata"]
        }
        for user in iam.list_users()["Users"]
    }
    state["roles"] = {
        role["RoleName"]: sorted(
            [
                p["PolicyName"]
                for p in iam.list_attached_role_policies(RoleName=role["RoleName"])[
                    "AttachedPolicies"
                ]
            ]
            + iam.list_role_policies(RoleName=role["RoleName"])["PolicyNames"]
        )
        for role in iam.list_roles()["Roles"]
    }
    return state

"""The report's scope section (accounts x Regions, reached or failed and why) and the merged
review of a ``kms.audit`` that fanned out: what the report's posture section reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kmsir import report
from kmsir.aws import ClientFactory
from kmsir.evidence import entries as e
from kmsir.evidence.view import RunView
from kmsir.posture import Review
from kmsir.report.posture import section
from kmsir.report.scope import MAX_FAILED, scope

from .journalkit import run_started

CALLER = "123456789012"


def _result(account: str, region: str, error: str | None = None) -> e.TargetResult:
    if error is None:
        return e.TargetResult(account=account, region=region, status="reached", summary="ok")
    return e.TargetResult(account=account, region=region, status="failed", error=error)


def _view(targets: dict[str, list[e.TargetResult]], recorded: dict[str, Any] | None) -> RunView:
    return RunView(meta=run_started(scope=recorded), targets=targets)


def test_a_run_without_a_scope_has_no_scope_section(demo_bundle: Path) -> None:
    assert scope(RunView()) is None
    assert scope(_view({}, None)) is None
    assert "## Scope" not in report.render(demo_bundle, fmt="md")
    assert "<h2>Scope</h2>" not in report.render(demo_bundle, fmt="html")


def test_the_grid_says_per_account_and_region_what_every_fanned_out_step_reached() -> None:
    other = "111111111111"
    recorded = {
        "caller_account": CALLER,
        "accounts": [CALLER, other],
        "regions": ["eu-west-1", "us-east-1", "ap-south-1"],
        "role_name": "Responder",
        "org": False,
    }
    denied = "AccessDenied: not authorized to perform sts:AssumeRole"
    view = _view(
        {
            "snapshot": [
                _result(CALLER, "eu-west-1"),
                _result(CALLER, "us-east-1"),
                _result(other, "eu-west-1"),
                _result(other, "us-east-1", denied),
            ],
            "collect": [
                _result(CALLER, "eu-west-1"),
                _result(CALLER, "us-east-1", "UnrecognizedClientException"),
                _result(other, "eu-west-1"),
                _result(other, "us-east-1", denied),
            ],
        },
        recorded,
    )
    found = scope(view)
    assert found is not None
    assert found["accounts"] == [CALLER, other]
    assert [row["cells"] for row in found["grid"]] == [
        ["reached", "partly", "not run"],  # ap-south-1: in the scope, no step went there
        ["reached", "failed", "not run"],
    ]
    (snapshot, collect) = found["steps"]
    assert (snapshot["id"], snapshot["reached"], snapshot["total"]) == ("snapshot", 3, 4)
    assert snapshot["failed"] == [{"account": other, "region": "us-east-1", "error": denied}]
    assert [f["error"] for f in collect["failed"]] == ["UnrecognizedClientException", denied]


def test_errors_reach_the_templates_inert_and_bounded() -> None:
    hostile = "AccessDenied \x1b[2J\u202e<script>alert(1)</script>" + "x" * 2000
    failed = [_result(f"{n:012d}", "eu-west-1", hostile) for n in range(MAX_FAILED + 5)]
    found = scope(_view({"snapshot": failed}, None))
    assert found is not None
    step = found["steps"][0]
    assert len(step["failed"]) == MAX_FAILED and step["more_failed"] == 5
    error = step["failed"][0]["error"]
    assert "\x1b" not in error and "\u202e" not in error
    assert "\\x1b" in error and len(error) <= 520


def test_a_fanned_out_audit_writes_one_posture_file_naming_each_region(
    moto_clients: ClientFactory,
) -> None:
    from kmsir.actions.audit import Audit, AuditParams
    from kmsir.aws.targets import Fleet, Scope
    from kmsir.run.fanout import run_fanned

    from .fakes import context

    regions = ("eu-west-1", "us-east-1")
    for region in regions:
        moto_clients.client("kms", region).create_key(Description=f"a key in {region}")
    account = moto_clients.client("sts").get_caller_identity()["Account"]
    fleet = Fleet(moto_clients, Scope(account, (account,), regions), "kmsir-test")
    ctx, _ = context(moto_clients, step_id="review")
    outcome = run_fanned(Audit(), ctx, AuditParams(all=True), fleet)
    files = ctx.artifacts.files  # type: ignore[attr-defined]
    for region in regions:
        assert f"{account}/{region}/posture.json" in files
    merged = json.loads(files["posture.json"])
    assert {(c["account"], c["region"]) for c in merged["checks"]} == {
        (account, r) for r in regions
    }
    assert merged["scope"]["keys"] == 2 and merged["scope"]["region"] == ", ".join(regions)
    assert outcome.outputs["posture"].endswith("/posture.json")
    assert [t["status"] for t in outcome.outputs["targets"]] == ["reached", "reached"]
    shown = section(Review.loads(files["posture.json"]))  # what the report's section reads
    assert shown["scope"]["key_count"] == 2
    assert sum(shown["totals"].values()) == len(merged["checks"])

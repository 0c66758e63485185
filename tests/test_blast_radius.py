"""kms.blast-radius: who and what loses access under each containment option.

In the rogue-grant sandbox: the legitimate grant (payments-app) and the rogue outside-account
grant (444455556666) with their verdicts, encryption-context resources from Decrypt events,
the resources found by listing (the DR snapshot nobody calls), a listing that fails listed as
unchecked, a multi-Region key's Regions, the verdict a containment step shows, and the
report's impact section.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from kmsir import report
from kmsir.actions.base import ActionContext
from kmsir.actions.cloudtrail import Collect, CollectParams
from kmsir.actions.kms_blast import BlastParams, BlastRadius, containment_verdict
from kmsir.errors import ActionError
from kmsir.sandbox import Sandbox
from kmsir.sandbox import scenario as scenarios
from kmsir.sandbox.scenario_model import Scenario

from .conftest import load_playbook, run_playbook
from .fakes import context

OUTSIDE = "444455556666"


def blast(
    sandbox: Sandbox, *, events: bool = True, key: str = "alias/payments-prod"
) -> tuple[dict[str, Any], ActionContext]:
    """The blast radius of ``key`` (after collecting its events, unless ``events`` is False)."""
    ctx, _ = context(sandbox.client_factory())
    if events:
        Collect().run(ctx, CollectParams(key="alias/payments-prod", since="7d"))
    params = BlastParams(key=key, events="collect" if events else None)
    return BlastRadius().run(ctx, params).outputs, ctx


def test_names_the_legitimate_and_the_rogue_grant_with_their_verdicts(
    rogue_grant: Sandbox,
) -> None:
    out, ctx = blast(rogue_grant)
    app, rogue = rogue_grant.grants["app"]["id"], rogue_grant.grants["rogue"]["id"]
    assert out["key_id"] == rogue_grant.keys["payments"]["id"]
    assert out["arn"] == rogue_grant.keys["payments"]["arn"]
    assert out["grants"][rogue].startswith(f"revoke grant {rogue} (backup-sync): only {OUTSIDE}")
    assert "loses access" in out["grants"][rogue]
    assert "only payments-app loses access (24 calls, last " in out["grants"][app]
    kinds = {g["id"]: g["kind"] for g in out["grantees"]}
    assert kinds == {app: "role", rogue: "outside-account"}
    verdicts = out["verdicts"]
    assert set(verdicts) == {"disable", "schedule-deletion", "quarantine", "revoke-grants"}
    assert f"only {OUTSIDE} loses access" in verdicts["revoke-grants"]
    disable = verdicts["disable"]
    assert "payments-app (24 calls, last 6 h ago)" in disable
    assert "s3-bucket payments-receipts-prod" in disable and "become unreadable" in disable
    assert disable.endswith("data keys already decrypted keep working until re-fetched")
    assert verdicts["quarantine"].startswith("quarantine: everyone but the break-glass")
    # the full details, as an artifact
    stored = json.loads(ctx.artifacts.files["blast-radius.json"])  # type: ignore[attr-defined]
    assert {g["id"] for g in stored["grants"]} == {app, rogue}
    assert stored["policy_principals"][0]["who"] == "account 123456789012"
    json.dumps(out)  # JSON-simple


def test_encryption_context_resources_come_from_decrypt_events(rogue_grant: Sandbox) -> None:
    out, _ = blast(rogue_grant)
    from_events = {
        (d["kind"], d["name"]) for d in out["dependents"] if d["via"] == "encryption-context"
    }
    assert from_events == {
        ("s3-object", "arn:aws:s3:::payments-receipts-prod/receipts/2026/11/r-000184.json"),
        ("dynamodb-table", "payments-ledger"),
    }
    callers = {c["who"]: c for c in out["callers"]}
    assert callers["payments-app"]["calls"] == 24
    assert callers[f"{OUTSIDE} role backup-sync"]["failed"] == 3
    # without a collect step, nothing comes from events: no callers, no contexts
    bare, _ = blast(rogue_grant, events=False)
    assert not bare["callers"]
    assert not [d for d in bare["dependents"] if d["via"] in ("calls", "encryption-context")]


def test_resources_configured_with_the_key_are_listed(rogue_grant: Sandbox) -> None:
    out, _ = blast(rogue_grant)
    listed = {(d["kind"], d["name"]) for d in out["dependents"] if d["via"] == "configured"}
    names = {name for _, name in listed}
    assert {"payments-receipts-prod", "payments-ledger", "payments/db-credentials"} <= names
    assert ("ssm-parameter", "/payments/api-signing-key") in listed  # named by key id
    assert "marketing-assets-prod" not in names  # AWS's default encryption, not this key
    snapshot = next(d for d in out["dependents"] if d["kind"] == "ebs-snapshot")
    assert snapshot["note"] == "payments-db quarterly DR copy"
    # the DR copy no call names is what a deletion loses unnoticed
    forgotten = out["verdicts"]["schedule-deletion"].split("easily forgotten: ", 1)[1]
    assert "payments-db quarterly DR copy" in forgotten
    assert "payments-receipts-prod" not in forgotten  # its objects are decrypted every day
    assert out["unchecked"] == [] and out["cut"] == []


def test_a_listing_that_fails_is_unchecked_not_hidden(rogue_grant: Sandbox) -> None:
    from botocore.exceptions import ClientError

    clients = rogue_grant.client_factory()

    def denied(model: Any, **_: Any) -> None:
        error = {"Error": {"Code": "AccessDeniedException", "Message": "not allowed"}}
        raise ClientError(error, model.name)  # type: ignore[arg-type]

    secrets: Any = clients.client("secretsmanager")  # type: ignore[call-overload]
    secrets.meta.events.register("before-call.secrets-manager.ListSecrets", denied)
    s3 = clients.client("s3")
    s3.meta.events.register("before-call.s3.GetBucketEncryption", denied)
    ctx, _ = context(clients)
    outcome = BlastRadius().run(ctx, BlastParams(key="alias/payments-prod"))
    out = outcome.outputs
    assert {
        "service": "secretsmanager",
        "operation": "ListSecrets",
        "error": "AccessDeniedException",
    } in out["unchecked"]
    per_bucket = next(u for u in out["unchecked"] if u["service"] == "s3")
    assert per_bucket["operation"] == "GetBucketEncryption" and per_bucket["items"] >= 2
    assert "secretsmanager:ListSecrets (AccessDeniedException)" in outcome.summary
    kinds = {d["kind"] for d in out["dependents"]}
    assert "secret" not in kinds and "s3-bucket" not in kinds
    assert "dynamodb-table" in kinds  # the other listings went on


def test_a_multi_region_key_names_its_replica_regions(rogue_grant: Sandbox) -> None:
    kms = rogue_grant.session().client("kms")
    primary = kms.create_key(MultiRegion=True, Description="global")["KeyMetadata"]
    for region in ("us-east-1", "ap-southeast-2"):
        kms.replicate_key(KeyId=primary["KeyId"], ReplicaRegion=region)
    out, _ = blast(rogue_grant, events=False, key=primary["Arn"])
    assert out["multi_region"] == "PRIMARY"
    assert out["replica_regions"] == ["ap-southeast-2", "us-east-1"]
    disable = out["verdicts"]["disable"]
    assert (
        "only eu-west-1 is affected: the replica(s) in ap-southeast-2 and us-east-1 stay" in disable
    )
    every = containment_verdict(out, "kms.disable-key", {"key": primary["KeyId"], "replicas": True})
    assert every is not None and "every Region" in every and "us-east-1" in every
    assert "PendingReplicaDeletion" in out["verdicts"]["schedule-deletion"]
    replica_arn = primary["Arn"].replace("eu-west-1", "us-east-1")
    replica, _ = blast(rogue_grant, events=False, key=replica_arn)
    assert replica["multi_region"] == "REPLICA" and replica["region"] == "us-east-1"
    assert (
        "the primary in eu-west-1 and any other replica stay usable"
        in replica["verdicts"]["disable"]
    )


def test_grants_for_aws_services_are_told_apart(rogue_grant: Sandbox) -> None:
    kms = rogue_grant.session().client("kms")
    key_id = rogue_grant.keys["payments"]["id"]
    grant = kms.create_grant(
        KeyId=key_id,
        GranteePrincipal="rds.eu-west-1.amazonaws.com",
        Operations=["Decrypt", "GenerateDataKey"],
        Constraints={"EncryptionContextSubset": {"aws:rds:db-id": "db-PAYMENTS1"}},
    )["GrantId"]
    out, _ = blast(rogue_grant, events=False)
    assert {g["id"]: g["kind"] for g in out["grantees"]}[grant] == "service"
    assert "loses access for aws:rds:db-id=db-PAYMENTS1" in out["grants"][grant]
    assert "1 AWS service grant(s)" in out["verdicts"]["disable"]


def test_containment_verdict_picks_the_line_for_each_step(rogue_grant: Sandbox) -> None:
    out, _ = blast(rogue_grant)
    rogue, app = rogue_grant.grants["rogue"]["id"], rogue_grant.grants["app"]["id"]
    key = {"key": out["key_id"]}
    assert containment_verdict(out, "kms.disable-key", key) == out["verdicts"]["disable"]
    assert containment_verdict(out, "kms.quarantine", key) == out["verdicts"]["quarantine"]
    assert (
        containment_verdict(out, "kms.schedule-deletion", {**key, "pending_window_days": 7})
        == out["verdicts"]["schedule-deletion"]
    )
    revoke = containment_verdict(out, "kms.revoke-grants", {**key, "grant_ids": [rogue]})
    assert revoke == out["grants"][rogue]
    # retiring removes the grant as revoking does: the same people lose the same access
    assert containment_verdict(out, "kms.retire-grants", {**key, "grant_ids": [rogue]}) == revoke
    both = containment_verdict(out, "kms.revoke-grants", {**key, "grant_ids": [rogue, app]})
    assert both == f"{out['grants'][rogue]}; {out['grants'][app]}"
    by_filter = {**key, "filter": {"allowed_accounts": ["123456789012"]}}
    assert (
        containment_verdict(out, "kms.revoke-grants", by_filter) == out["verdicts"]["revoke-grants"]
    )
    denied = containment_verdict(out, "kms.deny-principals", {**key, "principals": [OUTSIDE]})
    assert denied == (
        f"deny-principals: {OUTSIDE} (40 calls, grant {rogue[:8]}) loses access; "  # id shortened
        "everyone else keeps it"
    )
    role = "arn:aws:iam::123456789012:role/payments-app"
    assert "payments-app (24 calls, grant" in str(
        containment_verdict(out, "kms.deny-principals", {**key, "principals": [role]})
    )
    assert containment_verdict(out, "kms.enable-key", key) is None
    assert containment_verdict({}, "kms.disable-key", key) is None


PLAYBOOK = """\
id: blast-only
title: Blast radius of a key
steps:
  - id: collect
    action: cloudtrail.collect
    with: {key: alias/payments-prod, since: 7d}
  - id: blast
    action: kms.blast-radius
    with: {key: alias/payments-prod, events: collect}
"""


@pytest.mark.parametrize("fmt", ["md", "html"])
def test_the_report_shows_the_impact_inertly(
    rogue_grant: Sandbox, tmp_path: Path, fmt: str
) -> None:
    hostile = "arn:aws:iam::999988887777:role/<img src=x onerror=alert(1)>[x](http://evil)"
    kms = rogue_grant.session().client("kms")
    kms.create_grant(
        KeyId=rogue_grant.keys["payments"]["id"], GranteePrincipal=hostile, Operations=["Decrypt"]
    )
    path = tmp_path / "blast.yaml"
    path.write_text(PLAYBOOK)
    result = run_playbook(load_playbook(path), rogue_grant.client_factory(), tmp_path / "ev")
    assert result.status == "succeeded", result.error
    text = report.render(result.bundle, fmt=fmt)
    heading = "## Impact (blast radius)" if fmt == "md" else "<h2>Impact (blast radius)</h2>"
    assert heading in text
    assert f"only {OUTSIDE} loses access" in text
    assert "payments-receipts-prod" in text
    if fmt == "html":
        assert "<img src=x" not in text and "&lt;img src=x" in text
    else:  # escaped, or inside inline code: no raw HTML, no link
        prose = re.sub(r"`[^`\n]*`", "", text)
        assert re.search(r"(?<!\\)<img", prose) is None and "\\<img src=x" in prose
        assert re.search(r"(?<!\\)\]\(http", prose) is None


def test_no_blast_radius_step_no_impact_section(rogue_grant: Sandbox, tmp_path: Path) -> None:
    path = tmp_path / "collect.yaml"
    path.write_text(PLAYBOOK.split("  - id: blast")[0])
    result = run_playbook(load_playbook(path), rogue_grant.client_factory(), tmp_path / "ev")
    assert "Impact (blast radius)" not in report.render(result.bundle, fmt="md")


def test_a_missing_collect_step_is_an_error(rogue_grant: Sandbox) -> None:
    ctx, _ = context(rogue_grant.client_factory())
    with pytest.raises(ActionError, match="step 'collect' collected no events"):
        BlastRadius().run(ctx, BlastParams(key="alias/payments-prod", events="collect"))


def test_a_scenario_resource_must_name_one_of_its_keys() -> None:
    world = scenarios.load("rogue-grant").model_dump(mode="json")
    world["resources"] = [{"kind": "secret", "name": "x", "key": "payment"}]
    with pytest.raises(ValidationError, match="unknown key 'payment'"):
        Scenario.model_validate(world)
    world["resources"] = [{"kind": "s3-bucket", "name": "y"}]  # AWS's default encryption
    assert Scenario.model_validate(world).resources[0].key is None

"""``kms.retire-grants`` beside ``kms.revoke-grants``, and both waiting out eventual consistency.

Retiring and revoking both delete a grant; the grant decides who may retire it (its retiring
principal, its grantee when it allows RetireGrant, the account it was made in), key and IAM
policies who may revoke it ("Retiring and revoking grants",
https://docs.aws.amazon.com/kms/latest/developerguide/grant-delete.html). RetireGrant names the
key by its ARN (https://docs.aws.amazon.com/kms/latest/APIReference/API_RetireGrant.html).
A removed grant may stay visible for a while: "there might be a brief delay, usually less than
five minutes, until the grant is available throughout AWS KMS" (RevokeGrant API reference,
https://docs.aws.amazon.com/kms/latest/APIReference/API_RevokeGrant.html; "Eventual
consistency", https://docs.aws.amazon.com/kms/latest/developerguide/accessing-kms.html).
The waits between listings go through the context's (the engine's) sleep: none is real here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kmsir import actions
from kmsir.actions.base import IRREVERSIBLE, Done
from kmsir.actions.kms_grants import (
    GrantFilter,
    RetireGrants,
    RetireGrantsParams,
    RevokeGrants,
    RevokeGrantsParams,
)
from kmsir.aws import ClientFactory
from kmsir.errors import ActionError
from kmsir.evidence.bundle import JOURNAL, read_journal
from kmsir.evidence.calls import describe
from kmsir.prompts import ScriptedPrompter
from kmsir.run.engine import Engine, RunOptions
from kmsir.sandbox import Sandbox

from .conftest import load_playbook
from .fakes import context
from .faultkit import REGION, Rule, faulty_moto


def listed(sandbox: Sandbox, key: str) -> set[str]:
    kms = sandbox.session().client("kms")
    return {g["GrantId"] for g in kms.list_grants(KeyId=key)["Grants"]}


class Lagging:
    """AWS's eventual consistency on one client: after ``operation`` removed a grant,
    ListGrants keeps listing it for ``listings`` more answers."""

    def __init__(self, clients: ClientFactory, operation: str, listings: int) -> None:
        self.left = listings
        self.removed: list[dict[str, Any]] = []
        self.seen: dict[str, dict[str, Any]] = {}
        events = clients.client("kms").meta.events
        events.register("after-call.kms.ListGrants", self._listed)
        events.register(f"before-call.kms.{operation}", self._removing)

    def _removing(self, params: dict[str, Any], **_: Any) -> None:
        self.removed.append(self.seen[json.loads(params["body"])["GrantId"]])

    def _listed(self, parsed: dict[str, Any], **_: Any) -> None:
        for grant in parsed.get("Grants", []):
            self.seen[grant["GrantId"]] = grant
        if self.removed and self.left > 0:
            self.left -= 1
            parsed["Grants"].extend(g for g in self.removed if g not in parsed["Grants"])


def test_retire_a_grant_by_id(rogue_grant: Sandbox) -> None:
    key = rogue_grant.keys["payments"]
    rogue, app = rogue_grant.grants["rogue"]["id"], rogue_grant.grants["app"]["id"]
    ctx, calls = context(rogue_grant.client_factory())
    params = RetireGrantsParams(key="alias/payments-prod", grant_ids=[rogue])
    preview = RetireGrants().preview(ctx, params)
    # RetireGrant names the key by its ARN, as AWS documents it
    assert [describe(c) for c in preview.calls] == [
        f"kms:RetireGrant KeyId={key['arn']} GrantId={rogue}"
    ]
    assert preview.typed == (key["id"], "alias/payments-prod")
    (note, *_) = preview.notes
    assert "444455556666:role/backup-sync" in note and "no retiring principal" in note
    ctx.approved = preview
    outcome = RetireGrants().run(ctx, params)

    assert listed(rogue_grant, key["id"]) == {app}
    assert outcome.outputs["retired"] == [rogue] and outcome.outputs["still_listed"] == []
    assert [c.identity for c in calls if not c.read_only] == [c.identity for c in preview.calls]
    events = ctx.artifacts.events  # type: ignore[attr-defined]
    assert ("before-change", {"before": {"key_id": key["id"], "grants": sorted([rogue, app])}}) in (
        events
    )
    assert "grants-before.json" in ctx.artifacts.files  # type: ignore[attr-defined]

    again = RetireGrants().run(context(rogue_grant.client_factory())[0], params)
    assert again.status == "already" and again.outputs["already_gone"] == [rogue]

    undo = RetireGrants().undo(
        Done(
            step_id="retire",
            params={"key": key["id"], "grant_ids": [rogue]},
            outputs=outcome.outputs,
            before=outcome.before,
            after=outcome.after,
            bundle="/b",
            artifacts=("artifacts/03-retire/grants-before.json",),
        )
    )
    assert undo is not None and undo.action == IRREVERSIBLE
    assert "a retired grant cannot be restored" in undo.summary
    assert "kept in artifacts/03-retire/grants-before.json" in undo.summary


def test_retire_by_filter_names_each_grants_retiring_principal(rogue_grant: Sandbox) -> None:
    kms = rogue_grant.session().client("kms")
    key = rogue_grant.keys["payments"]["id"]
    partner = "arn:aws:iam::777788889999:role/partner"
    grant = kms.create_grant(
        KeyId=key,
        GranteePrincipal=partner,
        Operations=["Decrypt", "RetireGrant"],
        RetiringPrincipal="arn:aws:iam::123456789012:role/responder",
    )["GrantId"]
    ctx, _ = context(rogue_grant.client_factory())
    params = RetireGrantsParams(key=key, filter=GrantFilter(grantee_principal="*:role/partner"))
    (note, *_) = RetireGrants().preview(ctx, params).notes
    assert note.endswith(
        "(retiring principal arn:aws:iam::123456789012:role/responder; its grantee may retire "
        "it too)"
    )
    assert RetireGrants().run(ctx, params).outputs["retired"] == [grant]


def test_a_refused_retirement_says_who_may_retire_and_keeps_the_grant(tmp_path: Path) -> None:
    with faulty_moto(tmp_path) as moto:
        world = moto.world("kms.retire-grants")
        moto.layer.rules = [Rule("access-denied", "RetireGrant")]
        moto.layer.armed = True
        clients = ClientFactory(
            session_factory=lambda: moto.session, region=REGION, guard_send=True
        )
        params = RetireGrantsParams(key=world.key_id, grant_ids=[world.grant_id])
        with pytest.raises(ActionError) as refused:
            RetireGrants().run(context(clients)[0], params)
        message = str(refused.value)
        assert message.startswith(f"RetireGrant {world.grant_id} on {world.key_id}: AWS Access")
        assert "only the grant's retiring principal" in message
        assert "kms.revoke-grants" in message
        grants = moto.client("kms").list_grants(KeyId=world.key_id)["Grants"]
        assert [g["GrantId"] for g in grants] == [world.grant_id]


@pytest.mark.parametrize(
    ("action", "operation"), [(RevokeGrants(), "RevokeGrant"), (RetireGrants(), "RetireGrant")]
)
def test_a_grant_listed_for_a_while_is_waited_for(
    rogue_grant: Sandbox, action: RevokeGrants, operation: str
) -> None:
    rogue = rogue_grant.grants["rogue"]["id"]
    ctx, calls = context(rogue_grant.client_factory())
    slept: list[float] = []
    ctx.sleep = slept.append
    Lagging(ctx.clients, operation, listings=2)
    outcome = action.run(ctx, action.params(key="alias/payments-prod", grant_ids=[rogue]))
    assert slept == [1.0, 2.0]  # listed again after 1 s, then 2 s more: gone
    assert outcome.outputs["still_listed"] == []
    assert "still listed" not in outcome.summary
    assert rogue not in outcome.outputs["remaining_grant_ids"]
    assert [c.operation for c in calls].count("ListGrants") == 1 + 3


def test_a_grant_still_listed_after_the_bound_is_reported_not_failed(
    rogue_grant: Sandbox,
) -> None:
    rogue = rogue_grant.grants["rogue"]["id"]
    ctx, _ = context(rogue_grant.client_factory())
    slept: list[float] = []
    ctx.sleep = slept.append
    Lagging(ctx.clients, "RevokeGrant", listings=1000)
    outcome = RevokeGrants().run(
        ctx, RevokeGrantsParams(key="alias/payments-prod", grant_ids=[rogue])
    )
    assert slept == [1.0, 2.0, 4.0, 8.0, 8.0, 7.0] and sum(slept) == 30  # the default bound
    assert outcome.status == "succeeded" and outcome.outputs["revoked"] == [rogue]
    assert outcome.outputs["still_listed"] == [rogue]
    assert f"still listed after 30 s (eventual consistency): {rogue}" in outcome.summary
    # the sandbox itself had removed it at once: only the listing lagged
    assert rogue not in listed(rogue_grant, rogue_grant.keys["payments"]["id"])

    ctx, _ = context(rogue_grant.client_factory())
    ctx.sleep = slept.append
    slept.clear()
    app = rogue_grant.grants["app"]["id"]
    Lagging(ctx.clients, "RevokeGrant", listings=1000)
    quick = RevokeGrants().run(
        ctx, RevokeGrantsParams(key="alias/payments-prod", grant_ids=[app], settle_seconds=0)
    )
    assert slept == [] and f"still listed after 0 s (eventual consistency): {app}" in (
        quick.summary
    )


def test_a_run_waits_through_the_engines_sleep(rogue_grant: Sandbox, tmp_path: Path) -> None:
    rogue = rogue_grant.grants["rogue"]["id"]
    playbook = tmp_path / "retire.yaml"
    playbook.write_text(
        "id: retire\ntitle: Retire\nsteps:\n"
        "  - id: retire\n    action: kms.retire-grants\n"
        f"    with: {{key: alias/payments-prod, grant_ids: [{rogue}], settle_seconds: 5}}\n"
    )
    clients = rogue_grant.client_factory()
    Lagging(clients, "RetireGrant", listings=1000)
    slept: list[float] = []
    result = Engine(
        actions=actions.registry(),
        clients=clients,
        prompter=ScriptedPrompter({}, source="test"),
        sleep=slept.append,
    ).run(
        load_playbook(playbook),
        {},
        RunOptions(incident_id="INC-test", evidence_dir=tmp_path / "ev", mode="sandbox", yes=True),
    )
    assert result.status == "succeeded", result.error
    assert slept == [1.0, 2.0, 2.0]
    step = read_journal(result.bundle / JOURNAL).view().steps["retire"]
    assert step.outputs["still_listed"] == [rogue]
    assert "still listed after 5 s (eventual consistency)" in step.summary


def test_check_mode_shows_the_retirement_and_changes_nothing(
    rogue_grant: Sandbox, tmp_path: Path
) -> None:
    key, rogue = rogue_grant.keys["payments"], rogue_grant.grants["rogue"]["id"]
    playbook = tmp_path / "retire.yaml"
    playbook.write_text(
        "id: retire\ntitle: Retire\nsteps:\n"
        "  - id: retire\n    action: kms.retire-grants\n"
        f"    with: {{key: alias/payments-prod, grant_ids: [{rogue}]}}\n"
    )
    result = Engine(
        actions=actions.registry(),
        clients=rogue_grant.client_factory(),
        prompter=ScriptedPrompter({}, source="test"),
    ).run(
        load_playbook(playbook),
        {},
        RunOptions(incident_id="INC-test", evidence_dir=tmp_path / "ev", mode="check", yes=True),
    )
    assert result.status == "succeeded", result.error
    assert [s.status for s in result.steps] == ["would-run"]
    assert rogue in listed(rogue_grant, key["id"])
    view = read_journal(result.bundle / JOURNAL).view()
    assert not view.world


def test_settle_seconds_is_bounded() -> None:
    with pytest.raises(ValueError, match="less than or equal to 900"):
        RetireGrantsParams(key="alias/x", grant_ids=["abc"], settle_seconds=901)
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        RevokeGrantsParams(key="alias/x", grant_ids=["abc"], settle_seconds=-1)

"""What changed since a run, before its rollback undoes it: the live state of each key an
undo acts on (its state, or its policy), compared with the last the run saw of it.

A change someone made since the run is shown in the plan; when the live state is already what
the undo restores, nothing needs asking (the undo will find nothing to do); otherwise the undo
would wipe that change too, and asks again before it runs (``rollback_run``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kmsir.actions.base import Undo
from kmsir.aws import ClientFactory, aws_errors
from kmsir.errors import KmsirError, UsageError
from kmsir.evidence.bundle import read_outside
from kmsir.evidence.stepview import StepView
from kmsir.evidence.view import RunView
from kmsir.run.rollback import Item, Plan

if TYPE_CHECKING:
    from kmsir.aws.targets import Fleet


def drift(plan: Plan, clients: ClientFactory, fleet: Fleet | None = None) -> Plan:
    """The plan with what changed since the run: the live state of each key an undo acts on,
    compared with the last the run saw of it (a later undo of the same key sees it first).
    When it differs and is not already what the undo restores, the undo asks again. A run
    over several accounts (``fleet``: its recorded scope) reads a key in another account of
    it with that account's clients."""
    seen: dict[tuple[str, str], Item] = {}
    items = []
    arns = key_arns(plan) if fleet is not None else {}
    for item in plan.items:
        aspect, key = item.aspect, item.key
        if item.kind != "undo" or aspect is None or key is None or item.undo is None:
            items.append(item)
            continue
        first = seen.get((key, aspect))
        if first is not None:  # the newest undo of this key decided for the key
            items.append(dataclasses.replace(item, drift=first.drift, asks=first.asks))
            continue
        checked = _compare(plan, item, item.undo, aspect, key, clients, fleet, arns)
        seen[(key, aspect)] = checked
        items.append(checked)
    return dataclasses.replace(plan, items=tuple(items))


def key_arns(plan: Plan) -> dict[str, str]:
    """For a run over several accounts (it recorded a scope): each key id or alias its steps'
    outputs name one key by, to that key's ARN, so the rollback's steps run in the key's own
    account and Region (``fanout.route``). Without a scope: none (the run's own account)."""
    meta = plan.view.meta
    if meta is None or not meta.scope:
        return {}
    from kmsir.run import fanout

    return fanout.unique_arns({s.id: s.outputs for s in plan.view.steps.values()})


def _clients(own: ClientFactory, fleet: Fleet | None, reference: str) -> ClientFactory:
    """The clients of the account the key is in (its ARN says which)."""
    from kmsir.run import fanout

    target = fanout.key_target(fleet, reference)
    return own if fleet is None or target is None else fanout.routed(fleet, target)[0]


def _compare(
    plan: Plan,
    item: Item,
    undo: Undo,
    aspect: str,
    key: str,
    own: ClientFactory,
    fleet: Fleet | None,
    arns: dict[str, str],
) -> Item:
    reference = str(undo.params.get("key") or key)
    reference = arns.get(reference, reference)  # a key of another account: by its ARN
    region = reference.split(":")[3] if reference.startswith("arn:") else None
    try:
        clients = _clients(own, fleet, reference)
        if aspect == "state":
            live: Any = _live_state(clients, reference, region)
            last, seen_at = _last_state(plan.view, key)
            restores: Any = (item.before or {}).get("state")
            what = "state"
        else:
            live = _live_policy(clients, reference, region)
            last, seen_at = _last_policy(plan, key)
            restores = _policy_of(Path(str(undo.params.get("from"))))
            what = "policy"
    except KmsirError as exc:
        return dataclasses.replace(item, drift=f"its live {aspect} could not be read: {exc}")
    if last is None or live == last:
        return item
    if aspect == "state":
        change = f"key {key} is {live} now; the run left it {last} (step {seen_at})"
    else:
        change = f"key {key}'s policy changed since step {seen_at} kept it"
    if live == restores:
        return dataclasses.replace(
            item, drift=f"{change}: already as the undo leaves it, nothing will be sent"
        )
    return dataclasses.replace(
        item,
        drift=f"{change}: someone changed its {what} since the run; undoing would undo "
        "their change too",
        asks=True,
    )


def _live_state(clients: ClientFactory, key: str, region: str | None) -> str:
    with aws_errors(f"DescribeKey on {key}"):
        metadata = clients.client("kms", region).describe_key(KeyId=key)["KeyMetadata"]
    return str(metadata.get("KeyState"))


def _live_policy(clients: ClientFactory, key: str, region: str | None) -> Any:
    with aws_errors(f"GetKeyPolicy on {key}"):
        response = clients.client("kms", region).get_key_policy(KeyId=key, PolicyName="default")
    return json.loads(response["Policy"])


def _in_order(view: RunView) -> list[StepView]:
    """The steps with an outcome, in the order of their outcomes."""
    done = [s for s in view.steps.values() if s.done_ok and s.outcome_seq is not None]
    return sorted(done, key=lambda s: s.outcome_seq or 0)


def _last_state(view: RunView, key: str) -> tuple[str | None, str | None]:
    """The key's state the run last recorded (a change's "after" or a snapshot), and where."""
    last: tuple[str | None, str | None] = (None, None)
    for step in _in_order(view):
        after = step.after or {}
        if after.get("key_id") == key and after.get("state"):
            last = (str(after["state"]), step.id)
    return last


def _last_policy(plan: Plan, key: str) -> tuple[Any, str | None]:
    """The key's policy the run last kept (a change's policy-after or a snapshot's), and
    where; read through ``read_outside``, which checks it against the journal."""
    steps = {s.id: s for s in plan.view.steps.values() if s.done_ok}
    last: tuple[Any, str | None] = (None, None)
    for seen in plan.view.artifacts:
        path, step = seen.record.path, steps.get(seen.record.step)
        if step is None or not path.endswith(("/policy-after.json", "/policy-default.json")):
            continue
        parts = path.split("/")  # artifacts/NN-step/[key id/]file
        owner = parts[2] if len(parts) == 4 else step.outputs.get("key_id")
        if owner == key:
            last = (path, step.id)
    if last[0] is None:
        return last
    return _policy_of(plan.root / str(last[0])), last[1]


def _policy_of(path: Path) -> Any:
    """A kept policy document (a GetKeyPolicy response or a policy file), parsed."""
    data, _ = read_outside(path)
    try:
        value = json.loads(data)
        return json.loads(value["Policy"]) if isinstance(value.get("Policy"), str) else value
    except (ValueError, AttributeError) as exc:
        raise UsageError(f"{path}: not a key policy ({exc})") from None

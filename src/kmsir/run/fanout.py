"""One step over the run's scope: every account and Region it names, a bounded pool at once.

A run given ``--accounts``/``--org`` and ``--regions`` has a ``Fleet`` (``aws.targets``): the
scope, and a ``ClientFactory`` per account. A step whose action fans out
(``Action.fans_out``: ``kms.snapshot``/``kms.audit`` with ``all: true``, a ``lookup``
collect, the findings over a collect that fanned out) runs once per target, each with its own
``ActionContext``: that account's clients in that Region, and artifacts written under
``<account>/<region>/`` of the step's folder (where ``earlier`` reads the same target's
artifacts of an earlier step). A target that cannot be reached (AssumeRole refused, a Region
not enabled, any ``KmsirError``) is journaled as failed and the others go on; each target's
result is a ``TargetResult`` record. The step's outcome is the action's ``merge`` of the
targets reached, plus ``targets`` (each target's status, summary or error); it fails only
when no target was reached. What a target shows on the terminal names it
(``TargetReporter``). Ctrl-C, or an error that stops the run (``STOPS_RUN``: the evidence
cannot be kept, the person aborted, an answer is missing), stops the step at once: the targets
still queued never start.

Pacing needs nothing here: ``aws.pacing`` paces per access key id and Region, and each
account has its own credentials, so LookupEvents stays within 2 requests a second per account
and Region whatever the pool does.

A single-key step whose key is in another account of the scope (containment stays one
decision per key) runs with that account's clients in the key's Region (``route``): a key ARN
says where, and a key id or alias the run's snapshots saw (their ``arn``) says it too.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any

from kmsir.actions.base import (
    Action,
    ActionContext,
    ApprovalWait,
    ArtifactSink,
    Outcome,
    Reporter,
)
from kmsir.aws import ClientFactory
from kmsir.aws.targets import explain
from kmsir.errors import Aborted, ActionError, EvidenceError, KmsirError, MissingAnswer
from kmsir.evidence.entries import Record, TargetResult
from kmsir.inert import one_line
from kmsir.run import risks
from kmsir.run.risks import KeyState

if TYPE_CHECKING:
    from kmsir.aws.targets import Fleet, Target

#: Targets (account, Region) run at once. Each target's action has its own pools (keys,
#: Regions), so the calls in flight stay bounded by the product, and every API's quota is
#: per account and Region: targets never share one.
FANOUT_WORKERS = 8
#: How much of a target's error the journal and outputs keep.
MAX_ERROR = 500
#: A KMS key or alias ARN: its partition, Region and account.
_KMS_ARN = re.compile(r"^arn:aws[a-z-]*:kms:([a-z]{2}(?:-[a-z]+)+-\d):(\d{12}):(?:key|alias)/.+$")
#: Errors in a target that stop the whole run, not just that target: the evidence cannot be
#: kept, or the person stopped the run (the targets still queued are not started).
STOPS_RUN = (EvidenceError, Aborted, MissingAnswer)
#: How deep ``known_keys`` looks into the steps' outputs (a loop's items' keys' ARN).
DEPTH = 4


class TargetReporter:
    """The step's reporter as one target sees it: what it shows names the target."""

    def __init__(self, inner: Reporter, target: Target) -> None:
        self.inner, self.label = inner, target.label

    def progress(self, what: str, done: int, total: int | None = None) -> None:
        self.inner.progress(f"{self.label}: {what}", done, total)

    def step(self, step_id: str, title: str, status: str, summary: str) -> None:
        self.inner.step(step_id, title, status, summary)

    def notice(self, text: str) -> None:
        self.inner.notice(f"{self.label}: {text}")

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.inner.table(f"{self.label}: {title}", columns, rows)

    def waiting(self, wait: ApprovalWait) -> None:
        self.inner.waiting(wait)


class TargetSink:
    """The step's artifact sink as one target sees it: its artifacts under
    ``<account>/<region>/``, an earlier step's read from the same place."""

    def __init__(self, inner: ArtifactSink, target: Target) -> None:
        self.inner, self.prefix = inner, f"{target.account}/{target.region}/"

    def write(self, name: str, data: bytes) -> str:
        return self.inner.write(self.prefix + name, data)

    def journal(self, record: Record) -> None:
        self.inner.journal(record)

    def earlier(self, step_id: str, name: str) -> bytes | None:
        return self.inner.earlier(step_id, self.prefix + name)

    def outside(self, path: str) -> bytes:
        return self.inner.outside(path)


def fans_out(action: Action[Any], params: Any, context: Mapping[str, Any]) -> bool:
    """Whether a step of ``action`` with ``params`` runs once per target, given the run's
    template ``context`` (its ``steps`` so far)."""
    return action.fans_out(params, context.get("steps") or {})


def labels(fleet: Fleet | None) -> tuple[str, ...]:
    """The run's targets as ``<account>/<region>`` (``ActionContext.scope``)."""
    return tuple(t.label for t in fleet.scope.targets()) if fleet is not None else ()


def regional(clients: ClientFactory, region: str) -> ClientFactory:
    """``clients`` whose default Region is ``region``: the same session, clients, call
    numbering and recorders (a shallow copy; the session made first, so it is shared)."""
    if clients.region == region:
        return clients
    clients.session()
    found = copy.copy(clients)
    found.region = region
    return found


def run_fanned(action: Action[Any], ctx: ActionContext, params: Any, fleet: Fleet) -> Outcome:
    """Run ``action`` once per target of ``fleet``'s scope (see the module's docstring)."""
    targets = fleet.scope.targets()
    results: dict[Target, Outcome] = {}
    failed: dict[Target, str] = {}

    def one(target: Target) -> Outcome:
        clients = regional(fleet.clients(target.account), target.region)
        sink = TargetSink(ctx.artifacts, target)
        shown = TargetReporter(ctx.reporter, target)
        here = dataclasses.replace(ctx, clients=clients, artifacts=sink, reporter=shown)
        return action.run(here, params)

    def journal(target: Target, outcome: Outcome | None, error: str | None) -> None:
        ctx.artifacts.journal(
            TargetResult(
                account=target.account,
                region=target.region,
                status="failed" if outcome is None else "reached",
                error=error,
                summary=None if outcome is None else one_line(outcome.summary)[:MAX_ERROR],
            )
        )

    ctx.reporter.progress("accounts and Regions", 0, len(targets))
    pool = ThreadPoolExecutor(max_workers=max(1, min(FANOUT_WORKERS, len(targets))))
    try:
        futures = {pool.submit(one, target): target for target in targets}
        for future in as_completed(futures):
            target = futures[future]
            try:
                outcome = future.result()
            except STOPS_RUN:
                raise
            except KmsirError as exc:  # one account or Region does not stop the others
                text = explain(exc, target.account, target.region)  # an opt-in Region?
                failed[target] = one_line(text)[:MAX_ERROR]
                journal(target, None, failed[target])
            else:
                results[target] = outcome
                journal(target, outcome, None)
            ctx.reporter.progress("accounts and Regions", len(results) + len(failed), len(targets))
    except BaseException:
        # Ctrl-C, or an error that stops the run: the targets not started never start
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    if not results:
        first = min(failed)
        raise ActionError(
            f"no account or Region of the scope was reached ({len(failed)} failed; "
            f"{first.label}: {failed[first]})"
        )
    merged = action.merge(ctx, results, failed)
    outputs = {**merged.outputs, "targets": target_list(targets, results, failed)}
    summary = f"{merged.summary} [{len(results)} of {len(targets)} account/Region target(s)"
    if failed:
        first = min(failed)
        summary += f"; {len(failed)} failed, {first.label}: {failed[first][:160]}"
    return dataclasses.replace(merged, outputs=outputs, summary=summary + "]")


def target_list(
    targets: tuple[Target, ...], results: Mapping[Target, Outcome], failed: Mapping[Target, str]
) -> list[dict[str, Any]]:
    """The step's ``targets`` output: each target in scope order, reached or failed."""
    listed: list[dict[str, Any]] = []
    for target in targets:
        entry: dict[str, Any] = {"account": target.account, "region": target.region}
        if target in results:
            entry.update(status="reached", summary=one_line(results[target].summary)[:MAX_ERROR])
        else:
            entry.update(status="failed", error=failed.get(target, "not run"))
        listed.append(entry)
    return listed


def route(
    fleet: Fleet | None, params: Any, steps: Mapping[str, Any] | None = None
) -> Target | None:
    """Where a single-key step runs when its key is in another account of the scope: that
    account, the key's Region; ``None``: with the run's own clients. The key is an ARN, or a
    key id or alias the run's earlier steps (``steps``, their outputs) name with its ARN (a
    snapshot's ``key_id`` and ``arn``); ``kms.snapshot keys:`` all in one account and Region
    run there. ``ActionError`` when the key (or the keys) are in several of them."""
    if fleet is None:
        return None
    key = getattr(params, "key", None)
    named = [key] if isinstance(key, str) else getattr(params, "keys", None)
    if not isinstance(named, list) or not named:
        return None
    found = {key_target(fleet, arn) for ref in named for arn in arns_of(ref, steps or {})}
    if len(found) > 1:
        where = ", ".join(sorted("own account" if t is None else t.label for t in found))
        raise ActionError(
            f"key(s) {', '.join(map(str, named))[:200]} are in several accounts or Regions of "
            f"the run's scope ({where}): name one key by its ARN in each step"
        )
    return found.pop() if found else None


def arns_of(ref: str, steps: Mapping[str, Any]) -> set[str]:
    """The key ARNs ``ref`` names: itself when it is one, else those of the keys the steps'
    outputs name it for (its key id, alias name or alias ARN); none known: ``{ref}``."""
    if _KMS_ARN.match(ref) and ":key/" in ref:
        return {ref}
    found = {arn for arn, names in known_keys(steps, DEPTH) if ref in names}
    return found or {ref}


def unique_arns(steps: Mapping[str, Any]) -> dict[str, str]:
    """Each name (key id, ARN, alias) the steps' outputs give exactly one key by, to that
    key's ARN; a name two keys share is left out (``route`` refuses it)."""
    found: dict[str, set[str]] = {}
    for arn, names in known_keys(steps, DEPTH):
        for name in names:
            found.setdefault(name, set()).add(arn)
    return {name: arns.pop() for name, arns in found.items() if len(arns) == 1}


def known_keys(value: Any, depth: int) -> Iterator[tuple[str, set[str]]]:
    """Each key the outputs in ``value`` describe: its ARN, and the names it goes by (key id,
    ARN, aliases)."""
    if depth < 0:
        return
    if isinstance(value, Mapping):
        arn = value.get("arn")
        if isinstance(arn, str) and _KMS_ARN.match(arn) and ":key/" in arn:
            names = {arn, arn.rsplit("/", 1)[-1], str(value.get("key_id") or "")}
            aliases = value.get("aliases")
            names.update(a for a in aliases or [] if isinstance(a, str))
            region, account = arn.split(":")[3:5]
            names.update(f"arn:aws:kms:{region}:{account}:{a}" for a in list(names))
            yield arn, names - {""}
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return
    for child in children:
        yield from known_keys(child, depth - 1)


def key_target(fleet: Fleet | None, key: str) -> Target | None:
    """The account and Region of ``key`` when it is a key ARN of an account of the scope
    (the caller's too: a key of another Region is read there); ``None`` otherwise."""
    from kmsir.aws.targets import Target

    found = _KMS_ARN.match(key) if fleet is not None else None
    if fleet is None or found is None:
        return None
    region, account = found.group(1), found.group(2)
    scope = fleet.scope
    if account not in scope.accounts and account != scope.caller_account:
        return None
    return Target(account=account, region=region)


def reread(
    own: ClientFactory,
    fleet: Fleet | None,
    refs: list[str],
    steps: Mapping[str, Any] | None = None,
) -> list[KeyState]:
    """``risks.reread`` of the keys a run touched, each in its own account and Region: a key
    named by id or alias is read by the one ARN the run's steps (``steps``, their outputs)
    recorded for it, so it is not read as another key of the same name elsewhere."""
    arns = unique_arns(steps or {}) if fleet is not None else {}
    groups: dict[Target | None, list[str]] = {}
    for ref in refs:
        arn = arns.get(ref, ref)
        groups.setdefault(key_target(fleet, arn), []).append(arn)
    states: list[KeyState] = []
    for target, named in groups.items():
        try:
            clients = own if fleet is None or target is None else routed(fleet, target)[0]
        except KmsirError as exc:  # the account cannot be reached (any more)
            states.extend(KeyState(ref=r, error=one_line(str(exc))[:MAX_ERROR]) for r in named)
            continue
        states.extend(risks.reread(clients, named))
    return states


def routed(fleet: Fleet, target: Target) -> tuple[ClientFactory, str]:
    """The clients of ``target``'s account in its Region, and the line naming them (the
    preview's target line shows it)."""
    clients = regional(fleet.clients(target.account), target.region)
    return clients, f"account {target.account}, {target.region}"


def place(
    ctx: ActionContext,
    own: ClientFactory,
    fleet: Fleet | None,
    params: Any,
    steps: Mapping[str, Any] | None = None,
    *,
    action: str = "kms.",
) -> None:
    """Where a step runs: a KMS action on a key of the scope (``route``) with that account's
    clients in the key's Region; every other step (a collect from Athena, S3 or CloudTrail
    Lake, which reads where the trail is, whatever key it looks for) with the run's own
    clients (``own``). In a run with a scope, ``ctx.where`` names the account and Region
    either way (the preview's target line shows it); without one, ``None``."""
    by_key = action.startswith("kms.")
    target = route(fleet, params, steps) if by_key else None
    if fleet is None:
        ctx.clients, ctx.where = own, None
    elif target is None:
        key = getattr(params, "key", None)
        found = _KMS_ARN.match(key) if by_key and isinstance(key, str) else None
        region = found.group(1) if found else own.resolved_region
        ctx.clients, ctx.where = own, f"account {fleet.scope.caller_account}, {region}"
    else:
        ctx.clients, ctx.where = routed(fleet, target)

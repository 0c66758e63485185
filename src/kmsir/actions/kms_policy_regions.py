"""A key policy change made in every Region of a multi-Region key (``replicas: true``).

Each Region's key of a multi-Region key has a policy of its own, so quarantining the primary
leaves every replica open. With ``replicas: true`` a policy action (``kms.quarantine``,
``kms.restore-policy``) makes its change on the key it was given and on each other Region's
key, one ``PutKeyPolicy`` each, under one approval: every key gets its own lockout check, and
its policy before and after is kept under ``<Region>/`` in the step's artifacts (the key id is
the same in every Region, so the Region tells them apart). ``kms.restore-policy`` with
``replicas: true`` puts each Region's policy back from there.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from msgspec import structs

from kmsir.actions.base import ActionContext, ArtifactSink, Done, Outcome, Preview, Undo
from kmsir.actions.kmskeys import KeyInfo, members, regions_note, target
from kmsir.actions.policy_change import PolicyChange, put_policy
from kmsir.evidence.calls import Call
from kmsir.evidence.entries import Record

#: A Region's name, as the folder of a replica's policy artifacts.
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")


class InRegion:
    """The step's artifacts for another Region's key of a ``replicas: true`` step: the same
    names, under ``<Region>/``; journal records and outside files as for the step."""

    def __init__(self, sink: ArtifactSink, region: str) -> None:
        self.sink, self.region = sink, region

    def write(self, name: str, data: bytes) -> str:
        """Store the artifact under the Region's folder."""
        return self.sink.write(f"{self.region}/{name}", data)

    def journal(self, record: Record) -> None:
        """Journal as the step does."""
        self.sink.journal(record)

    def earlier(self, step_id: str, name: str) -> bytes | None:
        """The artifact an earlier step kept for this Region's key: under ``<Region>/``, or a
        name that says the Region already (a snapshot's ``replica-<Region>-policy-...``)."""
        found = self.sink.earlier(step_id, f"{self.region}/{name}")
        if found is None and f"-{self.region}-" in name:
            return self.sink.earlier(step_id, name)
        return found

    def outside(self, path: str) -> bytes:
        """A file from outside the bundle, as for the step."""
        return self.sink.outside(path)


def regional_artifact(path: str) -> bool:
    """Whether a step's artifact is one kept for another Region's key (``.../<Region>/x``)."""
    return bool(_REGION.match(Path(path).parent.name))


class EveryRegion(PolicyChange):
    """A policy action whose params have ``replicas``: with ``replicas: true`` the change of
    ``PolicyChange`` is made on each Region's key in turn (the key given first)."""

    def one_preview(self, ctx: ActionContext, params: Any) -> Preview:
        """The preview for one key (``PolicyChange``'s; a subclass may refine it)."""
        return PolicyChange.preview(self, ctx, params)

    def regional(self, params: Any, key: KeyInfo) -> Any:
        """``params`` for another Region's key (a subclass adjusts where it reads from)."""
        return params.model_copy(update={"key": key.arn, "replicas": False})

    def api_calls(self, params: Any) -> list[Call]:
        calls = super().api_calls(params)
        if params.replicas:
            calls.append(put_policy("<each replica's key, in its Region>"))
        return calls

    def _keys(self, ctx: ActionContext, params: Any) -> list[KeyInfo]:
        return members(ctx, target(ctx, params.key, self.name), True)

    def preview(self, ctx: ActionContext, params: Any) -> Preview:
        first = self.one_preview(ctx, params)
        if not params.replicas:
            return first
        keys = self._keys(ctx, params)
        shown = [first] + [
            self.one_preview(_in_region(ctx, k), self.regional(params, k)) for k in keys[1:]
        ]
        return Preview(
            calls=tuple(
                structs.replace(c, region=k.region)
                for k, p in zip(keys, shown, strict=True)
                for c in p.calls
            ),
            target="; ".join(p.target for p in shown),
            state="; ".join(f"{k.region}: {p.state}" for k, p in zip(keys, shown, strict=True)),
            notes=(
                regions_note(keys),
                *(f"{k.region}: {n}" for k, p in zip(keys, shown, strict=True) for n in p.notes),
            ),
        )

    def run(self, ctx: ActionContext, params: Any) -> Outcome:
        first = PolicyChange.run(self, ctx, params)
        if not params.replicas:
            return dataclasses.replace(first, outputs={**first.outputs, "replicas_changed": []})
        keys = self._keys(ctx, params)
        changed: list[str] = []
        summaries = [f"{keys[0].region}: {first.summary}"]
        before: dict[str, Any] = {}
        after: dict[str, Any] = {}
        for key in keys[1:]:
            done = PolicyChange.run(self, _in_region(ctx, key), self.regional(params, key))
            summaries.append(f"{key.region}: {done.summary}")
            if done.status != "already":
                changed.append(key.arn)
                before[key.arn] = (done.before or {}).get("statements")
                after[key.arn] = (done.after or {}).get("statements")
        return Outcome(
            outputs={**first.outputs, "replicas_changed": changed},
            summary="; ".join(summaries),
            status="already" if first.status == "already" and not changed else "succeeded",
            before={**(first.before or {"key_id": keys[0].key_id}), "replicas": before},
            after={**(first.after or {"key_id": keys[0].key_id}), "replicas": after},
        )

    def undo(self, done: Done) -> Undo | None:
        """Put back the policy of the key the step was given and, when it changed replicas,
        of every Region's key (``kms.restore-policy`` with ``replicas: true`` reads each from
        the step's ``<Region>/policy-before.json``)."""
        main = tuple(a for a in done.artifacts if not regional_artifact(a))
        found = super().undo(dataclasses.replace(done, artifacts=main))
        replicas = [str(a) for a in done.outputs.get("replicas_changed") or []]
        if found is None or not replicas:
            return found
        return Undo(
            found.action,
            {**found.params, "replicas": True},
            f"{found.summary}; and the policies its replicas had ({', '.join(replicas)}), "
            "kept beside it by Region",
        )


def _in_region(ctx: ActionContext, key: KeyInfo) -> ActionContext:
    return dataclasses.replace(ctx, artifacts=InRegion(ctx.artifacts, key.region))

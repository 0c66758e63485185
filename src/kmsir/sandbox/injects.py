"""Scenario injects: what the world does after a step of the playbook ends.

An inject (``injects:`` in a scenario) fires once, right after the step it names: the line it
says is shown to the people in the exercise, the attacker's calls are made in the sandbox
(through moto's request handling, so the fidelity shim applies), and the CloudTrail events
it describes are added to LookupEvents and to the trail bucket. The engine journals each
record ``fire`` returns as an ``inject`` entry.

Only a step that was done (it succeeded, or found things already so) sets its injects off;
one that was skipped (by ``when``, by the responder, by ``--start-at``) or failed does not.

A resumed run rebuilds the world from the journal: injects already journaled are fired again
in journal order (with the moment they first fired, so their events are the same), never a
second time in the run; an inject whose step succeeded before the run stopped but which was
not journaled (the process died in between) fires while the world is rebuilt, before the run
continues, and is recorded in the ``run-resumed`` entry (``sandbox_replay.injects``). A step
that stopped at its preview (aborted, or no scripted answer) journaled ``step-failed``: its
injects wait for the resumed run to do it.

Everything an inject renders (its line, its calls' parameters, its events) is rendered before
anything is changed in the sandbox, so a template that fails leaves the world as it was.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone
from typing import Any, Protocol

from kmsir.evidence.bundle import timestamp
from kmsir.evidence.view import RunView
from kmsir.playbook.values import parse_time
from kmsir.sandbox import history, lookup
from kmsir.sandbox.scenario_model import (
    CallSpec,
    CreateGrantCall,
    PutKeyPolicyCall,
    ScheduleDeletionCall,
)


class InjectWorld(history.World, Protocol):
    """What firing an inject needs of a seeded sandbox."""

    @property
    def trail_bucket(self) -> str:
        """The moto bucket the trail delivers to."""
        ...

    def session(self) -> Any:
        """A boto3 session on the sandbox (its clients never send to the network)."""
        ...


class Injects:
    """The injects of one sandbox world, each fired at most once."""

    def __init__(self, world: InjectWorld) -> None:
        self.world = world
        self.fired: set[int] = set()

    def after(self, step_id: str, moment: datetime) -> list[dict[str, Any]]:
        """Fire the injects that wait for ``step_id`` (in scenario order)."""
        return [
            self.fire(n, moment)
            for n, inject in enumerate(self.world.scenario.injects)
            if inject.after == step_id and n not in self.fired
        ]

    def fire(self, index: int, moment: datetime) -> dict[str, Any]:
        """Make inject ``index`` happen at ``moment``; the record says what was done.

        Every template is rendered first: one that fails raises with the world unchanged.
        """
        world = self.world
        inject = world.scenario.injects[index]
        say = str(world.render(inject.say))
        prepared = [call_parameters(world, spec) for spec in inject.calls]
        rng = random.Random(f"{world.scenario.seed}:inject:{index}")  # noqa: S311 - ids only
        events = list(history.events(world, inject.history, moment, rng))
        self.fired.add(index)
        calls = [self._call(operation, params) for operation, params in prepared]
        if events:
            lookup.add_events(world.account, world.region, events)
            history.write_trail_files(
                world.session().client("s3"),
                world.trail_bucket,
                world.account,
                world.region,
                events,
                name=f"inject{index:02d}",
            )
        return {
            "inject": index,
            "after": inject.after,
            "say": say,
            "at": timestamp(moment),
            "calls": calls,
            "events": [str(e["eventName"]) for e in events],
        }

    def refire(self, record: dict[str, Any]) -> bool:
        """Replay a journaled inject record in a rebuilt world (``False``: not one of this
        scenario's injects, or already replayed)."""
        index = record.get("inject")
        injects = self.world.scenario.injects
        if not isinstance(index, int) or not 0 <= index < len(injects) or index in self.fired:
            return False
        if injects[index].after != record.get("after"):
            return False
        moment = parse_time(str(record.get("at")), datetime.now(timezone.utc))
        self.fire(index, moment)
        return True

    def owed(self, view: RunView) -> list[int]:
        """Injects whose step was done in the run ``view`` tells of but that were never
        journaled: the step succeeded (or was already so) and was not started again since (it
        is re-run, and its injects follow that run); not skipped, not failed (a run stopped
        at the step's preview journals that)."""
        done = {s.id for s in view.steps.values() if s.done_ok}
        return [
            n
            for n, inject in enumerate(self.world.scenario.injects)
            if n not in self.fired and inject.after in done
        ]

    def _call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """One attacker call, made in the sandbox; what AWS (moto and the shim) answered."""
        from botocore import xform_name
        from botocore.exceptions import ClientError

        # the sandbox's session refuses to send what moto does not answer
        client = self.world.session().client("kms", region_name=self.world.region)
        error = None
        try:
            getattr(client, xform_name(operation))(**params)
        except ClientError as exc:
            error = str(exc.response.get("Error", {}).get("Code", "Unknown"))
        return {"service": "kms", "operation": operation, "params": params, "error_code": error}


def call_parameters(world: history.World, spec: CallSpec) -> tuple[str, dict[str, Any]]:
    """The AWS operation and parameters of a call spec, on the seeded world's ids."""
    key_id = world.keys[spec.key]["id"]
    if isinstance(spec, ScheduleDeletionCall):
        return spec.call, {"KeyId": key_id, "PendingWindowInDays": spec.pending_window_days}
    if isinstance(spec, CreateGrantCall):
        params: dict[str, Any] = {
            "KeyId": key_id,
            "GranteePrincipal": world.render(spec.grantee),
            "Operations": list(spec.operations),
        }
        if spec.name:
            params["Name"] = spec.name
        return spec.call, params
    if isinstance(spec, PutKeyPolicyCall):
        policy = json.dumps(world.render(spec.policy), sort_keys=True)
        return spec.call, {"KeyId": key_id, "PolicyName": "default", "Policy": policy}
    return spec.call, {"KeyId": key_id}

"""Scenario injects: what the world does after a step of the playbook ends, or on a timer.

An inject (``injects:`` in a scenario) fires once: right after the step it names (``after``;
its record's ``trigger`` is ``step``), or at the first step boundary once ``after_minutes``
have passed since the world's start (``trigger: timer``; not while the facilitator holds the
timers), or when a tabletop's facilitator fires it (``trigger: facilitator``, with the
channel's ``command`` number). A timer's or a facilitator's record names the step about to
start when it took effect (``before``; ``None`` at the run's end). The line it
says is shown to the people in the exercise, the attacker's calls are made in the sandbox
(through moto's request handling, so the fidelity shim applies), and the CloudTrail events
it describes are added to LookupEvents and to the trail bucket. Its calls themselves are
recorded by the sandbox's trail (``recorder``) as its actor's, from the address and with the
user agent of its story, unless that story already has an event of the call's name (the
scenario's record stands for it). The engine journals each record ``fire`` returns as an
``inject`` entry.

Only a step that was done (it succeeded, or found things already so) sets its injects off;
one that was skipped (by ``when``, by the responder, by ``--start-at``) or failed does not.

A resumed run rebuilds the world from the journal: injects already journaled (whatever set
them off) are fired again in journal order (with the moment they first fired, so their events
are the same), never a second time in the run (a timer already fired never fires again); an
inject whose step succeeded before the run stopped but which was not journaled (the process
died in between) fires while the world is rebuilt, before the run
continues, and is recorded in the ``run-resumed`` entry (``sandbox_replay.injects``). A step
that stopped at its preview (aborted, or no scripted answer) journaled ``step-failed``: its
injects wait for the resumed run to do it.

An inject's calls stand for its actor (its ``identity``, or that of its first event). One the
responder has contained (sessions revoked, denied by an identity or key policy, access key
inactive: ``sandbox.containment``) is refused as AWS would refuse it: the call is not made and
its record carries AWS's error and ``blocked: true`` (the trail logs the refused attempt), the
actor's CloudTrail events are recorded as failed (``failed_events``), and the record says
``blocked`` (why, in words) with a ``say`` line telling the players the attempt was blocked. A
rebuilt world replays that outcome from the journaled record, never deciding it again. The
record names the actor by its ARN only (``actor.arn``; older journals also carry the
scenario's name for it, ``identity``, which nothing reads).

Everything an inject renders (its line, its calls' parameters, its events) is rendered before
anything is changed in the sandbox, so a template that fails leaves the world as it was.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, Protocol

from kmsir.evidence.bundle import timestamp
from kmsir.evidence.view import RunView
from kmsir.playbook.values import parse_time
from kmsir.sandbox import containment, history, lookup, recorder, trail_record
from kmsir.sandbox.scenario_model import (
    CallSpec,
    CreateGrantCall,
    InjectSpec,
    PutKeyPolicyCall,
    ScheduleDeletionCall,
)


class InjectWorld(containment.ContainmentWorld, Protocol):
    """What firing an inject needs of a seeded sandbox."""

    @property
    def trail_bucket(self) -> str:
        """The moto bucket the trail delivers to."""
        ...

    def session(self) -> Any:
        """A boto3 session on the sandbox (its clients never send to the network)."""
        ...


#: What set an inject off: its step was done, its timer was due, or the facilitator fired it.
Trigger = Literal["step", "timer", "facilitator"]


class Injects:
    """The injects of one sandbox world, each fired at most once."""

    def __init__(self, world: InjectWorld) -> None:
        self.world = world
        self.fired: set[int] = set()
        #: The facilitator holds the timed injects: none fires until released.
        self.held = False
        #: Whether timed injects fire at all (a replay fires them where the journal says).
        self.timers = True

    def after(self, step_id: str, moment: datetime) -> list[dict[str, Any]]:
        """Fire the injects that wait for ``step_id`` (in scenario order)."""
        return [
            self.fire(n, moment)
            for n, inject in enumerate(self.world.scenario.injects)
            if inject.after == step_id and n not in self.fired
        ]

    def due(self, start: datetime, moment: datetime) -> list[int]:
        """The timed injects due at ``moment`` in a world that started at ``start`` and not
        fired yet, in scenario order (none while held, or with the timers off)."""
        if self.held or not self.timers:
            return []
        return [
            n
            for n, inject in enumerate(self.world.scenario.injects)
            if inject.after_minutes is not None
            and n not in self.fired
            and start + timedelta(minutes=inject.after_minutes) <= moment
        ]

    def fire(
        self,
        index: int,
        moment: datetime,
        journaled: dict[str, Any] | None = None,
        *,
        trigger: Trigger = "step",
        before: str | None = None,
        command: int | None = None,
    ) -> dict[str, Any]:
        """Make inject ``index`` happen at ``moment``; the record says what was done and what
        set it off (``trigger``; for a timer's or a facilitator's, ``before``: the step about
        to start, and a facilitator's ``command`` number).

        A request its actor would be refused now (``sandbox.containment``) is not made: the
        call is answered with AWS's error, its CloudTrail event is recorded as failed, and
        the record says ``blocked`` and why. ``journaled``, the record of a first firing,
        decides that instead of the world (a rebuilt world replays what happened then).
        Every template is rendered first: one that fails raises with the world unchanged.
        """
        world = self.world
        inject = world.scenario.injects[index]
        say = str(world.render(inject.say))
        say_blocked = world.render(inject.say_blocked) if inject.say_blocked else None
        prepared = [call_parameters(world, spec) for spec in inject.calls]
        rng = random.Random(f"{world.scenario.seed}:inject:{index}")  # noqa: S311 - ids only
        events = list(history.events(world, inject.history, moment, rng))
        actor = containment.actor_of(world, inject)
        if journaled is None:
            refusals = _decide(world, actor, moment, inject, prepared, events)
        else:
            refusals = _journaled(journaled, len(prepared), len(events))
        call_denials, event_denials = refusals
        self.fired.add(index)
        caller = _caller(world, inject, moment)
        skip = frozenset(event.event for event in inject.history)
        calls = []
        with recorder.acting(
            caller.identity,
            skip=skip,
            moment=moment,
            source_ip=caller.source_ip,
            user_agent=caller.user_agent,
        ):
            for (operation, params), denial, spec in zip(
                prepared, call_denials, inject.calls, strict=True
            ):
                if denial is None:
                    calls.append(self._call(operation, params))
                    continue
                calls.append(_refused(operation, params, denial))
                if caller.identity is not None:  # the refused attempt is logged as AWS logs it
                    error = (denial.error_code, denial.error_message)
                    arn = world.keys[spec.key]["arn"]
                    recorder.add(
                        trail_record.refused(
                            world.account, world.region, operation, params, error, caller, arn
                        )
                    )
        for event, denial in zip(events, event_denials, strict=True):
            if denial is not None:
                event.update(
                    errorCode=denial.error_code,
                    errorMessage=denial.error_message,
                    responseElements=None,
                )
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
        # blocked: a call refused (an inject without calls: an event refused)
        refused = [d for d in (call_denials if prepared else event_denials) if d is not None]
        blocked = refused[0].reason if refused else None
        record: dict[str, Any] = {
            "inject": index,
            "after": inject.after,
            "say": say,
            "at": timestamp(moment),
            "calls": calls,
            "events": [str(e["eventName"]) for e in events],
            "trigger": trigger,
        }
        if inject.after_minutes is not None:
            record["after_minutes"] = inject.after_minutes
        if trigger != "step":
            record["before"] = before
        if command is not None:
            record["command"] = command
        if actor is not None:
            # its ARN only: the scenario's name for it ("attacker") would tell the players
            record["actor"] = {"arn": actor.arn}
        if blocked is not None:
            record["say"] = str(say_blocked or f"Attempt blocked: {blocked}. The attempt: {say}")
            record["blocked"] = blocked
        failed = [
            {"event": n, "error_code": d.error_code, "error_message": d.error_message}
            for n, d in enumerate(event_denials)
            if d is not None
        ]
        if failed:
            record["failed_events"] = failed
        return record

    def refire(self, record: dict[str, Any]) -> bool:
        """Replay a journaled inject record in a rebuilt world (``False``: not one of this
        scenario's injects, or already replayed). What was blocked then is blocked again,
        and only that, whatever the rebuilt world would decide now."""
        index = record.get("inject")
        injects = self.world.scenario.injects
        if not isinstance(index, int) or not 0 <= index < len(injects) or index in self.fired:
            return False
        if injects[index].after != record.get("after"):
            return False
        moment = parse_time(str(record.get("at")), datetime.now(timezone.utc))
        trigger = record.get("trigger")
        self.fire(
            index,
            moment,
            journaled=record,
            trigger=trigger if trigger in ("timer", "facilitator") else "step",
            before=record.get("before"),
            command=record.get("command"),
        )
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


def _caller(world: InjectWorld, inject: InjectSpec, moment: datetime) -> trail_record.Caller:
    """Whom the sandbox's trail records the inject's calls as (``recorder.acting``): its actor,
    with the address and user agent of its story, at the moment it fires (a call whose event
    the inject's ``history`` tells of is not recorded a second time: ``fire`` skips it)."""
    name = inject.identity or (inject.history[0].identity if inject.history else None)
    who = history.identity(world, world.scenario.identities[name]) if name else None
    first = inject.history[0] if inject.history else None
    return trail_record.Caller(
        moment,
        who,
        source_ip=str(world.render(first.source_ip)) if first else None,
        user_agent=str(world.render(first.user_agent)) if first else None,
    )


def _refused(operation: str, params: dict[str, Any], denial: containment.Denial) -> dict[str, Any]:
    """A call AWS would refuse the contained actor: not made, answered with AWS's error."""
    return {
        "service": "kms",
        "operation": operation,
        "params": params,
        "error_code": denial.error_code,
        "error_message": denial.error_message,
        "blocked": True,
    }


Refusals = tuple[list["containment.Denial | None"], list["containment.Denial | None"]]


def _decide(
    world: InjectWorld,
    actor: containment.Actor | None,
    moment: datetime,
    inject: InjectSpec,
    prepared: list[tuple[str, dict[str, Any]]],
    events: list[dict[str, Any]],
) -> Refusals:
    """Which of the inject's calls, and of its actor's events, AWS would refuse now."""
    if actor is None:
        return [None] * len(prepared), [None] * len(events)
    check = containment.Containment(world, actor, moment)
    calls = [
        check.denial(f"kms:{operation}", world.keys[spec.key]["arn"])
        for (operation, _), spec in zip(prepared, inject.calls, strict=True)
    ]
    found: list[containment.Denial | None] = []
    for event in events:
        if event["userIdentity"].get("arn") != actor.arn or event["eventSource"] != (
            "kms.amazonaws.com"
        ):
            found.append(None)
            continue
        resources = event.get("resources") or [{}]
        found.append(check.denial(f"kms:{event['eventName']}", resources[0].get("ARN")))
    return calls, found


def _journaled(record: dict[str, Any], calls: int, events: int) -> Refusals:
    """The refusals a journaled record tells of (a record from before containment: none)."""
    journaled_calls = record.get("calls")
    made: list[Any] = journaled_calls if isinstance(journaled_calls, list) else []
    reason = str(record.get("blocked") or "blocked when it first fired")
    call_denials: list[containment.Denial | None] = []
    for n in range(calls):
        call = made[n] if n < len(made) and isinstance(made[n], dict) else {}
        call_denials.append(
            containment.Denial(
                str(call.get("error_code")), str(call.get("error_message") or ""), reason
            )
            if call.get("blocked")
            else None
        )
    event_denials: list[containment.Denial | None] = [None] * events
    for failed in record.get("failed_events") or []:
        at = failed.get("event") if isinstance(failed, dict) else None
        if isinstance(at, int) and 0 <= at < events:
            event_denials[at] = containment.Denial(
                str(failed.get("error_code")), str(failed.get("error_message") or ""), reason
            )
    return call_denials, event_denials


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

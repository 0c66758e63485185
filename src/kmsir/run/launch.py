"""Starting a run, or going on with one: where it happens, and the engine wired for it.

``cli`` parses the command line and hands in what only it has: the prompter, the reporter,
the callbacks that say things, and how to make live AWS clients (a profile and Region). This
module picks the run's inputs, its clients (a scenario's sandbox, or AWS), records where the
run happens in its options, resolves the accounts and Regions it covers (``scoped``: its
``Fleet``, recorded in the run-started entry), adds the journal anchor's signer and builds the
``Engine``. For ``resume`` it rebuilds a sandbox run's world and the recorded scope's
``Fleet`` (``rescoped``), and completes a finished run whose finish was cut short.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kmsir.errors import UsageError
from kmsir.run.engine import AfterBoundary, AfterStep, BeforeStep, Engine, RunOptions

if TYPE_CHECKING:
    from kmsir.actions.base import Reporter
    from kmsir.aws import ClientFactory
    from kmsir.aws.targets import Fleet, ScopeRequest
    from kmsir.evidence.bundle import Clock
    from kmsir.playbook.model import LoadedPlaybook
    from kmsir.prompts import Prompter
    from kmsir.sandbox import Sandbox
    from kmsir.sandbox.scenario_model import Scenario


@dataclasses.dataclass(frozen=True)
class Venue:
    """Where a run calls AWS: the clients its steps use, the separate clients that sign its
    journal (those calls are not steps' calls; they are journaled as anchors), what runs
    after each step and at each step boundary (a sandbox's injects), and the run's options
    recording where it happens."""

    clients: ClientFactory
    signing: ClientFactory
    options: RunOptions
    after_step: AfterStep | None = None
    before_step: BeforeStep | None = None
    #: Told once what ``before_step`` returned is journaled (a tabletop's acknowledgements).
    after_boundary: AfterBoundary | None = None
    #: The accounts x Regions the run covers (``scoped``); None: its own account and Region.
    fleet: Fleet | None = None


def key_world() -> str:
    """Where a live run's keys are, for key locks: AWS, or the endpoint it is pointed at (a
    sandbox server: its scenario keys have the same ids as every other sandbox's)."""
    return os.environ.get("AWS_ENDPOINT_URL_KMS") or os.environ.get("AWS_ENDPOINT_URL") or "aws"


def run_inputs(
    loaded: LoadedPlaybook,
    given: Mapping[str, Any],
    prompter: Prompter,
    world: Scenario | None = None,
) -> dict[str, Any]:
    """The inputs a run starts with: those given, over the scenario's values for the
    playbook's inputs (its defaults), then an answer for each required one still missing;
    each checked against its type."""
    from kmsir.playbook.model import resolve_inputs
    from kmsir.prompts import ask_missing_inputs

    specs = loaded.playbook.inputs
    if world is not None:
        given = {**{k: v for k, v in world.inputs.items() if k in specs}, **given}
    return resolve_inputs(loaded.playbook, ask_missing_inputs(prompter, specs, given))


def sandboxed(sandbox: Sandbox, options: RunOptions, extra: Mapping[str, Any]) -> Venue:
    """A run in an entered sandbox; ``extra``: what its run-started entry records about the
    sandbox, so that resume can rebuild the same world. When the two-person rule applies
    (``--require-approval``, or the scenario's ``approvals: required``), the approver's
    command is shown with the credentials of the world's second identity."""
    required = sandbox.scenario.approvals == "required"
    second = sandbox.second if options.require_approval or required else None
    return Venue(
        sandbox.client_factory(),
        sandbox.client_factory(),
        dataclasses.replace(
            options,
            extra={**options.extra, **extra},
            scenario_approvals=required,
            approver_env=second.environment() if second is not None else {},
        ),
        sandbox.after_step,
        sandbox.before_step,  # its timed injects
    )


def live(clients: Callable[[], ClientFactory], options: RunOptions) -> Venue:
    """A run against AWS, or the endpoint the environment points AWS clients at."""
    return Venue(clients(), clients(), dataclasses.replace(options, world=key_world()))


def scoped(venue: Venue, request: ScopeRequest | None) -> Venue:
    """``venue`` covering the accounts and Regions ``request`` names: the scope resolved
    once, now (a bad value or a refused call is one line, before any bundle exists), recorded
    in the run-started entry (``extra["scope"]``), and its ``Fleet`` for the engine. No scope
    option given: ``venue`` as it is (the run's own account and Region, no fan-out)."""
    if request is None or not request.given:
        return venue
    from kmsir.aws.targets import Fleet, session_name

    scope = request.resolve(venue.clients)
    options = venue.options
    recorded = dataclasses.replace(options, extra={**options.extra, "scope": scope.to_json()})
    fleet = Fleet(venue.clients, scope, session_name(options.incident_id))
    return dataclasses.replace(venue, options=recorded, fleet=fleet)


def rescoped(venue: Venue, recorded: Mapping[str, Any] | None) -> Venue:
    """``venue`` covering the scope a run recorded when it started (``resume``): the same
    accounts and Regions, without asking Organizations or EC2 again. Signed in to another
    account than the run's caller (STS ``GetCallerIdentity``): ``UsageError``, one line."""
    if not recorded:
        return venue
    from kmsir.aws import aws_errors
    from kmsir.aws.targets import Fleet, Scope, session_name

    scope = Scope.from_json(recorded)
    with aws_errors("GetCallerIdentity (who is resuming the run)", service="sts"):
        caller = str(venue.clients.client("sts").get_caller_identity()["Account"])
    if caller != scope.caller_account:
        raise UsageError(
            f"this run was started by account {scope.caller_account} and covers its scope "
            f"from there; you are signed in to {caller}: resume it with that account's "
            "credentials (--profile)"
        )
    fleet = Fleet(venue.clients, scope, session_name(venue.options.incident_id))
    return dataclasses.replace(venue, fleet=fleet)


def engine(
    venue: Venue,
    *,
    prompter: Prompter,
    reporter: Reporter,
    anchor_key: str | None,
    on_bundle: Callable[[Path], None],
    warn: Callable[[str], None],
    clock: Clock | None = None,
) -> Engine:
    """The engine for a run in ``venue``, with every action; ``anchor_key``: sign the
    journal's chain head with this KMS key after every step; ``clock``: the journal's (a
    tabletop's, shared with its world's timers)."""
    from kmsir import actions
    from kmsir.evidence.bundle import utc_now
    from kmsir.signer import KmsSigner

    return Engine(
        actions=actions.registry(),
        clients=venue.clients,
        prompter=prompter,
        reporter=reporter,
        after_step=venue.after_step,
        before_step=venue.before_step,
        after_boundary=venue.after_boundary,
        anchor=KmsSigner(venue.signing, anchor_key) if anchor_key else None,
        on_bundle=on_bundle,
        warn=warn,
        clock=clock or utc_now,
        fleet=venue.fleet,
    )


def rebuild_sandbox(
    recorded: Mapping[str, Any], scenario: str, *, second_person: bool = False
) -> Sandbox:
    """The sandbox a run started in (not yet entered), from what its journal recorded about
    it: the scenario's source and the world's clock; ``second_person``: the run was started
    with ``--require-approval`` (its world has a second identity). A scenario changed since
    then cannot give the same world: ``UsageError``."""
    from kmsir.evidence.bundle import utc_now
    from kmsir.playbook.values import parse_time
    from kmsir.sandbox import Sandbox
    from kmsir.sandbox import scenario as scenarios

    world = scenarios.load(str(recorded.get("source") or scenario))
    clock = recorded.get("now")
    sandbox = Sandbox(
        world,
        now=parse_time(clock, utc_now()) if clock else None,
        second_person=second_person,
    )
    if recorded.get("scenario_sha256") != sandbox.fingerprint:
        raise UsageError(
            f"scenario {world.id} changed since this run started; its sandbox world "
            "cannot be rebuilt, so the run cannot be resumed"
        )
    return sandbox


def settle_finished(bundle: Path) -> bool:
    """A finished run that stopped before its manifest or reports were (re)written and
    recorded: keep a torn last record, remove the derived files' temporaries and write the
    manifest from the journal. True when the reports must be rendered again too (and the
    manifest was rewritten); False when the bundle was complete."""
    from kmsir.evidence import derived, integrity, manifest
    from kmsir.evidence import journal as writer
    from kmsir.evidence.entries import Repair

    checked = integrity.check(bundle)
    if checked.torn_tail:  # it died writing a report's record: keep the line, then go on
        repairing, repaired = writer.BundleWriter.reopen(bundle)
        try:
            repairing.append(Repair(**repaired))
        finally:
            repairing.close()
    derived.settle_derived(bundle, checked.view)
    reports_recorded = all((bundle / name).exists() for name in ("report.md", "report.html"))
    if checked.intact and not checked.notes and reports_recorded:
        return False
    manifest.write_manifest(bundle)
    return True

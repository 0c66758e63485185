"""The journal's records: the ``data`` of each entry type, one model each.

A field that a record always carried is required; a field written only when it said
something has a default and is left out when it has it (``ALWAYS`` names the few written
even at their default, as releases always wrote them). Unknown fields are ignored on reading.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from kmsir.evidence.calls import Call

Json = dict[str, Any]


class Record(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The ``data`` of one journal entry; ``TYPE`` is the entry type it is written as,
    ``ALWAYS`` the fields written even at their default (as releases always wrote them)."""

    TYPE: ClassVar[str]
    ALWAYS: ClassVar[tuple[str, ...]] = ()


# -- the run ---------------------------------------------------------------------------------


class Custody(Record, frozen=True, kw_only=True):
    """Who handled the evidence, with what, where (recorded at start and at each resume)."""

    tool: Json
    versions: Json
    operator: Json
    host: str
    location: str
    #: The answers a run was given up front (an answers file, a scenario's script).
    answers: Json | None = None


class RunStarted(Custody, frozen=True, kw_only=True):
    TYPE = "run-started"
    playbook: Json
    incident: str
    run_id: str
    inputs: Json
    mode: str
    simulated: bool
    scenario: str | None
    region: str | None
    #: The sandbox world the run was played in (its clock, scenario and source).
    sandbox: Json | None = None
    #: The run this one rolls back (``kmsir rollback``): its run id, bundle, journal head, and
    #: what its steps came to (undone, or why not).
    rollback_of: Json | None = None
    #: The tabletop run a facilitator's run follows (``kmsir tabletop facilitator``): the
    #: players' run id, bundle and incident. Its bundle holds the facilitator's actions only.
    facilitates: Json | None = None
    #: The accounts x Regions the run covers (``aws.targets.Scope.to_json``), when given
    #: ``--accounts``, ``--org`` or ``--regions``: resume rebuilds the same scope from it.
    scope: Json | None = None
    #: ``--require-approval``: a second person approves every irreversible or high-impact
    #: step (resume keeps it).
    require_approval: bool = False


class RunResumed(Custody, frozen=True, kw_only=True):
    TYPE = "run-resumed"
    previous: Json
    resume_at: str | None
    #: A resumed sandbox run's rebuilt world: the changes replayed and the injects fired.
    sandbox_replay: Json | None = None


class RunFinished(Record, frozen=True, kw_only=True):
    TYPE = "run-finished"
    status: str
    error: str | None = None


class OpenRisks(Record, frozen=True, kw_only=True):
    """The end of a run: every key it touched read again, and what the run leaves open."""

    TYPE = "open-risks"
    keys: list[Json]
    risks: list[Json]


class RunInterrupted(Record, frozen=True, kw_only=True):
    TYPE = "run-interrupted"
    reason: str


class Repair(Record, frozen=True, kw_only=True):
    """What resume found and recorded before going on: a torn last line moved to
    ``quarantine/``, files an interrupted write left, a signature that never came."""

    TYPE = "repair"
    torn_tail: Json | None = None
    leftovers: list[Json] | None = None
    unsigned_anchor: int | None = None


class LockOverridden(Record, frozen=True, kw_only=True):
    TYPE = "lock-overridden"
    lock: str
    holder: Json


class AnchorKey(Record, frozen=True, kw_only=True):
    TYPE = "anchor-key"
    key_arn: str
    algorithm: str | None = None
    public_key_pem: str


class Anchor(Record, frozen=True, kw_only=True):
    TYPE = "anchor"
    key_arn: str


class AnchorFailed(Record, frozen=True, kw_only=True):
    TYPE = "anchor-failed"
    error: str


class ReportWritten(Record, frozen=True, kw_only=True):
    TYPE = "report-written"
    path: str
    sha256: str
    bytes: int
    format: str
    kmsir: str
    template: str
    template_sha256: str


# -- files -----------------------------------------------------------------------------------


class ArtifactIntent(Record, frozen=True, kw_only=True):
    """An artifact about to be written: journaled before its bytes reach the disk."""

    TYPE = "artifact-intent"
    path: str
    sha256: str
    bytes: int


class Artifact(Record, frozen=True, kw_only=True):
    """An artifact written, as the journal and the manifest record it."""

    TYPE = "artifact"
    path: str
    sha256: str
    bytes: int
    step: str
    created: str


class InputFile(Record, frozen=True, kw_only=True):
    """A file read from outside the bundle (a policy to put), with its provenance."""

    TYPE = "input-file"
    path: str
    sha256: str
    bytes: int
    #: The bundle it is an artifact of, when it is one.
    bundle: str | None = None


class InputSkipped(Record, frozen=True, kw_only=True):
    """Input a step could not read (CloudTrail records), counted by reason."""

    TYPE = "input-skipped"
    counts: dict[str, int]
    examples: list[Any]


# -- steps -----------------------------------------------------------------------------------


class StepStarted(Record, frozen=True, kw_only=True):
    TYPE = "step-started"
    action: str
    name: str
    phase: str | None
    params: Json
    mutating: bool
    inverse: str | None


class StepSucceeded(Record, frozen=True, kw_only=True):
    TYPE = "step-succeeded"
    action: str
    status: str
    summary: str
    outputs: Json
    before: Json | None
    after: Json | None
    inverse: str | None
    inverse_until: str | None
    rechecked: bool = False


class StepSkipped(Record, frozen=True, kw_only=True):
    TYPE = "step-skipped"
    reason: str
    status: str
    action: str
    name: str
    phase: str | None


class StepFailed(Record, frozen=True, kw_only=True):
    TYPE = "step-failed"
    error: str
    action: str
    name: str
    phase: str | None
    #: The evidence could not be kept: the run stopped whatever ``on_error`` said.
    stopped_run: bool = False


class TargetResult(Record, frozen=True, kw_only=True):
    """One account and Region of a fanned-out step (``run.fanout``): reached, with the
    target's summary, or failed, with why (AccessDenied on AssumeRole, an opt-in Region)."""

    TYPE = "target-result"
    account: str
    region: str
    status: str  # "reached" | "failed"
    summary: str | None = None
    error: str | None = None


class StepRetry(Record, frozen=True, kw_only=True):
    TYPE = "step-retry"
    attempt: int
    error: str


class Decision(Record, frozen=True, kw_only=True):
    """A person's (or an answers file's) answer. Approving a step carries what was shown:
    the calls, the state and the undo; releases before 0.3 journaled the calls as text."""

    TYPE = "decision"
    question: str
    answer: Any
    by: str
    reason: str | None
    calls: list[Call | str] | None = None
    state: str | None = None
    inverse: str | None = None
    #: Who and what loses access, as the blast radius shown with the step said.
    impact: str | None = None


# -- a second person's approval (the two-person rule) ----------------------------------------


class ApprovalRequested(Record, frozen=True, kw_only=True):
    """A step waits for ``count`` approvals: what the approver must see (``preview``, the
    fields of the responder's ``Decision``; ``preview_sha256`` of its canonical JSON), and the
    STS endpoint they sign for. ``request`` is a fresh nonce each answer is bound to."""

    TYPE = "approval-requested"
    request: str
    count: int
    from_: list[str] = msgspec.field(name="from", default_factory=list)
    timeout_s: int
    until: str
    sts_url: str
    sts_region: str | None
    preview: Json
    preview_sha256: str
    #: Approvals of the step's earlier request kept (resume): their answers and identities.
    kept: list[Json] = msgspec.field(default_factory=list)


class ApprovalGiven(Record, frozen=True, kw_only=True):
    """An answer accepted: who (from STS, never typed), what they saw, why, when."""

    TYPE = "approval-given"
    answer: str
    request: str
    decision: str  # "approve" | "deny"
    identity: Json  # arn, account, user_id
    sts_request_id: str | None
    reason: str | None
    saw: str
    #: When the approver answered: their signed request's ``X-Amz-Date`` (not the file's word).
    answered: str
    #: The answer file, copied into the step's artifacts (the approver's session token
    #: replaced by a marker: ``evidence.approvals.without_token``).
    file: str | None = None
    #: sha256 of the answer file's bytes as read from the inbox (token included).
    answer_sha256: str | None = None


class ApprovalRefused(Record, frozen=True, kw_only=True):
    """An answer not counted, and why (self-approval, outside ``from:``, a failed check)."""

    TYPE = "approval-refused"
    answer: str
    why: str
    request: str | None = None
    identity: Json | None = None


class ApprovalTimedOut(Record, frozen=True, kw_only=True):
    TYPE = "approval-timed-out"
    request: str
    until: str
    approved: int
    count: int


class Note(Record, frozen=True, kw_only=True):
    TYPE = "note"
    text: str
    by: str | None = None


class InputChanged(Record, frozen=True, kw_only=True):
    """An input the responder corrected after a failure."""

    TYPE = "input-changed"
    name: str
    from_: Any = msgspec.field(name="from")
    to: Any
    by: str


class Recheck(Record, frozen=True, kw_only=True):
    """A step that was in flight when the run stopped, re-read before anything is re-sent."""

    TYPE = "recheck"
    reason: str
    sent_before: list[str]
    state: str | None
    would_call: list[Call | str]


class CheckMode(Record, frozen=True, kw_only=True):
    TYPE = "check-mode"
    would_call: list[Call | str]
    target: str | None
    state: str | None


class BeforeChange(Record, frozen=True, kw_only=True):
    """The state a step recorded before its first change."""

    TYPE = "before-change"
    before: Json | None


class ApiIntent(Call, frozen=True, kw_only=True):
    """A state-changing call about to be sent (its result may never be journaled)."""

    TYPE: ClassVar[str] = "api-intent"
    ALWAYS: ClassVar[tuple[str, ...]] = ("region", "params", "call")


class ApiCall(Call, frozen=True, kw_only=True):
    """An API call and AWS's answer."""

    TYPE: ClassVar[str] = "api-call"
    ALWAYS: ClassVar[tuple[str, ...]] = (
        "region",
        "params",
        "http_status",
        "request_id",
        "error_code",
        "call",
    )


class Query(Record, frozen=True, kw_only=True):
    """A query a step ran (Athena, CloudTrail Lake), with its id and SQL."""

    TYPE = "query"
    service: str
    id: str
    sql: str


class Inject(Record, frozen=True, kw_only=True):
    """What a sandbox scenario's world did after a step (its record, with a ``say`` line)."""

    TYPE = "inject"
    record: Json


class FacilitatorAction(Record, frozen=True, kw_only=True):
    """What a tabletop's facilitator did, journaled in the facilitator's own bundle (the
    players' bundle keeps its one writer): fire an inject now, hold or release the timed
    injects, an observation, end the exercise, or stop following it."""

    TYPE = "facilitator-action"
    #: Every action a facilitator journals, in the order ``help`` lists them.
    ACTIONS: ClassVar[tuple[str, ...]] = ("fire", "hold", "release", "note", "end", "quit")
    action: str
    #: The players' journal length when it was taken: where it stands in their run.
    players_entries: int
    #: The inject fired (its index in the scenario), for ``fire``.
    inject: int | None = None
    #: The observation, for ``note``.
    text: str | None = None
    #: The command channel's sequence number, for what was sent to the players' process.
    command: int | None = None
    by: str | None = None

"""What every action is: a typed params model, permissions, mutating/inverse, run and preview.

Actions never print and never open files: they talk to AWS through the ``ClientFactory``,
to a person through the ``Prompter``, and to the bundle through ``ArtifactSink``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from kmsir.aws import ClientFactory
from kmsir.evidence.calls import Call
from kmsir.evidence.entries import BeforeChange, Decision, Note, Record
from kmsir.prompts import Prompter

if TYPE_CHECKING:
    from kmsir.aws.targets import Target

#: The action cannot be undone.
IRREVERSIBLE = "irreversible"


class Params(BaseModel):
    """Base of every action's parameters: frozen, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


P = TypeVar("P", bound=Params)


class ArtifactSink(Protocol):
    """Where an action's evidence goes (the bundle, for the running step)."""

    def write(self, name: str, data: bytes) -> str:
        """Store ``data`` as artifact ``name``; return its bundle-relative path."""
        ...

    def journal(self, record: Record) -> None:
        """Record an event of this step in the journal (a record of ``evidence.entries``)."""
        ...

    def earlier(self, step_id: str, name: str) -> bytes | None:
        """Artifact ``name`` of an earlier step of this run (its last attempt), if any."""
        ...

    def outside(self, path: str) -> bytes:
        """A file from outside the bundle (a policy file, another bundle's artifact).

        Only a regular file, read up to a bound; its sha256 is journaled; an artifact of
        another bundle is checked against that bundle's journal first.
        """
        ...


class Reporter(Protocol):
    """Progress for long work and step outcomes; ``cli`` draws it, tests may ignore it."""

    def progress(self, what: str, done: int, total: int | None = None) -> None:
        """``done`` units of ``what`` so far (``total`` when known)."""
        ...

    def step(self, step_id: str, title: str, status: str, summary: str) -> None:
        """A step ended with ``status``."""
        ...

    def notice(self, text: str) -> None:
        """Something the person running the playbook should see (a scenario inject)."""
        ...

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """Rows the person should read before the next decision (the top findings)."""
        ...

    def waiting(self, wait: ApprovalWait) -> None:
        """A step waits for a second person's approval (or an answer to it just came)."""
        ...


class NullReporter:
    """A reporter that shows nothing."""

    def progress(self, what: str, done: int, total: int | None = None) -> None:
        """Ignore progress."""

    def step(self, step_id: str, title: str, status: str, summary: str) -> None:
        """Ignore step outcomes."""

    def notice(self, text: str) -> None:
        """Ignore notices."""

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """Ignore tables."""

    def waiting(self, wait: ApprovalWait) -> None:
        """Ignore waits."""


@dataclass(frozen=True)
class ApprovalWait:
    """A step waiting for a second person: what the responder's screen says. ``news`` is
    ``None`` when the wait begins (show it all), else one line about an answer just handled."""

    step_id: str
    title: str
    #: Approvals needed, and those counted so far.
    count: int
    approved: int
    #: When the step stops waiting and fails (UTC, ``...Z``).
    deadline: str
    #: The exact commands the approver runs (with the bundle path).
    approve: str
    deny: str
    #: Who may approve (ARN globs); empty: anyone but the run's operator.
    allowed: tuple[str, ...] = ()
    news: str | None = None
    #: A line under the commands (a sandbox: whose credentials they carry, SIMULATED).
    note: str | None = None

    def lines(self) -> list[str]:
        """The wait as lines of text."""
        if self.news is not None:
            return [f"{self.news} ({self.approved}/{self.count} approvals)"]
        who = ", ".join(self.allowed) if self.allowed else "anyone but you"
        return [
            f"WAITING for {self.count - self.approved} more approval(s) of step "
            f"'{self.step_id}' ({self.title}) by a second person ({who}), until {self.deadline}",
            "  the approver runs, with their own AWS credentials:",
            f"    {self.approve}",
            "  or, to refuse it:",
            f"    {self.deny}",
            *([f"  {self.note}"] if self.note else []),
        ]


@dataclass(frozen=True)
class RunInfo:
    """Facts about the run that actions may need."""

    incident_id: str
    run_id: str
    mode: Literal["live", "check", "sandbox"]
    simulated: bool


@dataclass(frozen=True)
class Preview:
    """What a mutating step is about to do, shown before it is confirmed."""

    #: The exact calls ``run`` would send (shown with ``evidence.calls.describe``).
    calls: tuple[Call, ...]
    target: str
    state: str
    #: For irreversible steps: the key id and aliases, one of which must be typed to approve.
    typed: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    #: What exactly was shown (grant ids...): ``run`` acts on no more than this.
    items: tuple[str, ...] = ()


@dataclass(frozen=True)
class EarlierAttempt:
    """What earlier, unfinished attempts of this step did: an attempt the run was inside when
    it stopped (crash, Ctrl-C), or one that failed and is retried. Built from the journal."""

    #: What the step recorded with ``ActionContext.changing`` before its first change.
    before: dict[str, Any] | None
    #: The state-changing calls journaled as sent (their intents), less refused ones.
    sent: tuple[Call, ...]
    #: Notes and decisions the attempts journaled: never asked twice.
    recorded: tuple[Decision | Note, ...] = ()


@dataclass
class ActionContext:
    """Everything an action may use while it runs one step."""

    step_id: str
    clients: ClientFactory
    prompter: Prompter
    artifacts: ArtifactSink
    run: RunInfo
    now: Callable[[], datetime]
    reporter: Reporter = field(default_factory=NullReporter)
    #: How an action waits (a grant still listed after its revocation): the engine's sleep,
    #: so tests inject one that never waits in real time.
    sleep: Callable[[float], None] = time.sleep
    #: The preview the responder approved, for a mutating step (``None``: not previewed).
    approved: Preview | None = None
    #: Set when an earlier attempt of this step did not finish (see ``EarlierAttempt``).
    earlier_attempt: EarlierAttempt | None = None
    #: The calls approved for this step before the run stopped (on resume): a preview whose
    #: calls carry the moment they are shown (a session cutoff) shows those again, so the
    #: approval still covers them and is not asked twice.
    approved_before: tuple[Call, ...] = ()
    #: The run's accounts and Regions as ``<account>/<region>`` (``Target.label``), when it
    #: has a scope: where a fanned-out earlier step kept each target's artifacts.
    scope: tuple[str, ...] = ()
    #: The account and Region a step runs in when it is not the run's own (a key in another
    #: account of the scope): the preview's target line names them.
    where: str | None = None
    #: The outputs of the run's steps done so far, by step id (what ``steps.<id>`` reads).
    steps: Mapping[str, Any] = field(default_factory=dict)

    def changing(self, before: dict[str, Any]) -> None:
        """Record the state about to change, just before the first call that changes it.

        If the attempt does not finish, a later one compares the live state with this record
        instead of sending the call again.
        """
        self.artifacts.journal(BeforeChange(before=before))

    def changed_by_earlier_attempt(self) -> dict[str, Any] | None:
        """The state recorded before a change an earlier, unfinished attempt sent.

        Not ``None`` only when such an attempt sent a changing call that AWS did not refuse:
        live state already as wanted then means that call took effect.
        """
        found = self.earlier_attempt
        return found.before if found is not None and found.sent else None

    def earlier_decision(self) -> Decision | None:
        """The last decision an earlier, unfinished attempt journaled."""
        found = self.earlier_attempt
        records = [r for r in (found.recorded if found else ()) if isinstance(r, Decision)]
        return records[-1] if records else None

    def earlier_note(self) -> Note | None:
        """The last note an earlier, unfinished attempt journaled."""
        found = self.earlier_attempt
        records = [r for r in (found.recorded if found else ()) if isinstance(r, Note)]
        return records[-1] if records else None

    def sent_by_earlier_attempt(self, operation: str) -> list[dict[str, Any]]:
        """Parameters of each ``operation`` call earlier attempts sent (or were about to)."""
        found = self.earlier_attempt
        if found is None:
            return []
        return [dict(c.params) for c in found.sent if c.operation == operation]

    def earlier_everywhere(self, step_id: str, name: str) -> list[bytes]:
        """Artifact ``name`` of an earlier step: its own, or, when that step fanned out over
        the run's accounts and Regions, each target's (in scope order; none: empty): those
        its outputs' ``artifacts`` list when it lists them (the attempt that succeeded, not a
        target's file an earlier attempt left)."""
        outputs = self.steps.get(step_id)
        listed = outputs.get("artifacts") if isinstance(outputs, Mapping) else None
        if isinstance(listed, list):  # artifacts/NN-<step>[.attempt]/<account>/<region>/<name>
            names = [
                path.split("/", 2)[2]
                for path in listed
                if isinstance(path, str) and path.count("/") >= 2 and path.endswith(f"/{name}")
            ]
            read = (self.artifacts.earlier(step_id, n) for n in names)
            return [data for data in read if data is not None]
        found = self.artifacts.earlier(step_id, name)
        if found is not None:
            return [found]
        each = (self.artifacts.earlier(step_id, f"{label}/{name}") for label in self.scope)
        return [data for data in each if data is not None]

    def write_json(self, name: str, value: Any) -> str:
        """Store a JSON artifact (indented, sorted keys, dates as ISO strings)."""
        data = json.dumps(value, indent=2, sort_keys=True, default=_json_default).encode()
        return self.artifacts.write(name, data + b"\n")


def permitted_calls(permissions: Iterable[str]) -> list[Call]:
    """The operations IAM permissions name (``kms:DescribeKey``), as calls without parameters:
    what a step that makes no more precise claim is shown to call."""
    return [Call(service=s, operation=o) for s, _, o in (p.partition(":") for p in permissions)]


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return value.hex()
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


@dataclass(frozen=True)
class Outcome:
    """The result of a step: outputs for later steps, and what the journal and report show.

    ``status``: ``succeeded``, or ``already`` (already in the desired state: nothing sent).
    ``inverse_until``: when the inverse stops being possible (a deletion date), if ever.
    """

    outputs: dict[str, Any]
    summary: str
    status: Literal["succeeded", "already"] = "succeeded"
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    inverse_until: str | None = None


class Action(Generic[P]):
    """Base of every action. Subclasses set the class attributes and implement ``run``."""

    name: ClassVar[str]
    params: ClassVar[type[Params]]
    #: What a run returns for later steps (``steps.<id>.<name>``): output name -> a short type
    #: word (``str``, ``int``, ``list[str]``, ``str|null``...). Outputs some parameters give
    #: and others do not are all listed (the docstring says which). ``validate`` checks
    #: references against it; empty: not declared, references are not checked. Read-only:
    #: ``MappingProxyType({...})``, shared by every instance.
    outputs: ClassVar[Mapping[str, str]] = MappingProxyType({})
    permissions: ClassVar[tuple[str, ...]] = ()
    mutating: ClassVar[bool] = False
    #: The action that undoes this one, ``IRREVERSIBLE``, or ``None`` (nothing to undo).
    inverse: ClassVar[str | None] = None
    #: The step is itself a question to the person (ask, confirm, note): no "run it?" first.
    asks: ClassVar[bool] = False
    #: It cuts access off or destroys (disable, delete, deny, revoke): with
    #: ``--require-approval`` or a playbook's top-level ``approvals:``, a second person
    #: approves it, as every irreversible action.
    high_impact: ClassVar[bool] = False

    @property
    def needs_second_person(self) -> bool:
        """True for an irreversible or high-impact action (``run --require-approval``)."""
        return self.inverse == IRREVERSIBLE or self.high_impact

    def permissions_for(self, params: P) -> tuple[str, ...]:
        """The IAM permissions of the path ``params`` select (``permissions`` is the union of
        every path): what ``plan``, the step's details and ``kmsir permissions`` grant."""
        return self.permissions

    def api_calls(self, params: P) -> list[Call]:
        """The API calls this step makes, for ``plan`` and confirmations (no AWS call)."""
        return permitted_calls(self.permissions_for(params))

    def preview(self, ctx: ActionContext, params: P) -> Preview:
        """Read the current state and describe exactly what ``run`` would send."""
        return Preview(calls=tuple(self.api_calls(params)), target="", state="")

    def run(self, ctx: ActionContext, params: P) -> Outcome:
        """Do the work; raise ``ActionError`` on failure."""
        raise NotImplementedError

    def fans_out(self, params: P, steps: Mapping[str, Any]) -> bool:
        """Whether, in a run whose scope names accounts and Regions, this step runs once per
        target (``run.fanout``); ``steps``: the outputs of the steps done so far."""
        return False

    def merge(
        self,
        ctx: ActionContext,
        results: Mapping[Target, Outcome],
        failed: Mapping[Target, str],
    ) -> Outcome:
        """One outcome from the targets' (``results``: those reached; ``failed``: why the
        others were not): each target's outputs by its label. ``ctx`` writes to the step's own
        folder (a merged artifact); the run layer adds ``targets`` to the outputs."""
        return Outcome(
            outputs={"results": {t.label: dict(o.outputs) for t, o in sorted(results.items())}},
            summary="; ".join(f"{t.label}: {o.summary}" for t, o in sorted(results.items())),
        )

    def undo(self, done: Done) -> Undo | None:
        """How ``rollback`` undoes a step of this action that changed something: the
        ``inverse`` action's parameters, built from what the step journaled. ``None``: this
        action has nothing to undo, or the journal does not say enough to undo it."""
        return None


@dataclass(frozen=True)
class Done:
    """A step that changed something, as its journal tells it (what ``undo`` is built from)."""

    step_id: str
    #: The rendered parameters it ran with.
    params: dict[str, Any]
    outputs: dict[str, Any]
    #: The state it recorded before and after its change (``Outcome.before``/``after``).
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    #: The bundle it was recorded in, for artifacts the inverse reads (a policy to restore).
    bundle: str
    #: Its artifacts, bundle-relative paths.
    artifacts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Undo:
    """The step that undoes a change: ``action`` (the inverse) run ``with`` ``params``."""

    action: str
    params: dict[str, Any]
    #: One line for the rollback plan: what undoing restores ("enable key 1234...").
    summary: str

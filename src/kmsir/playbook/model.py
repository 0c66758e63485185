"""Load and validate playbooks into frozen models, before any AWS call.

Loading is two passes over a position-aware YAML document (``yamlsafe``): pydantic checks the
shape, then ``checks`` checks what needs the action catalog (unknown actions and
parameters, with a did-you-mean), ``when:`` and template syntax, references to steps that do
not run earlier, and each ``steps.X.field`` against the outputs X's action declares. Both
passes run whatever the other finds: a step whose shape is wrong is still checked for what
its other fields say, so every problem of a file comes out at once. Every problem is one line
``file:line:col: step 'id': message``; ``lint`` adds the warnings. Inputs are declared and
checked in ``inputs``; asking a person for one is ``prompts``'s job.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kmsir.errors import PlaybookError, UsageError
from kmsir.playbook import checks, lint, yamlsafe

# a second person's approval (the two-person rule): part of this module's face too
from kmsir.playbook.approvals import Approvals as Approvals
from kmsir.playbook.approvals import check_timeout, timeout_seconds

# a playbook's inputs are InputSpecs: their model and check are part of this module's face
from kmsir.playbook.inputs import InputSpec as InputSpec
from kmsir.playbook.inputs import coerce_input as coerce_input

Phase = Literal[
    "preparation",
    "identification",
    "containment",
    "eradication",
    "recovery",
    "lessons-learned",
]
KebabId = Annotated[str, Field(pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$", max_length=64)]
StepId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*(-[a-z0-9_]+)*$", max_length=48)]

#: Most problems (or warnings) reported for one playbook; the rest are summed up in one line.
MAX_PROBLEMS = 50

#: Action catalog the validator needs: action name -> its parameters model.
ActionCatalog = Mapping[str, type[BaseModel]]


class Catalog(Mapping[str, type[BaseModel]]):
    """An ``ActionCatalog`` (name -> parameters model) that also says what each action
    returns (its declared outputs: name -> type word; empty: not declared) and which actions
    change AWS state: what the output checks and lint read. A plain mapping gets neither."""

    def __init__(
        self,
        params: Mapping[str, type[BaseModel]],
        *,
        outputs: Mapping[str, Mapping[str, str]],
        mutating: Iterable[str] = (),
    ) -> None:
        # kept as given, not copied: the registry's mappings import an action's module
        # only when the action is looked up (``kmsir.actions``)
        self._params = params
        self.outputs = outputs
        self.mutating = frozenset(mutating)

    def __getitem__(self, name: str) -> type[BaseModel]:
        return self._params[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Step(_Frozen):
    """One playbook step."""

    id: StepId = Field(
        description="Unique in the playbook; later steps read its outputs as steps.<id>.<name>."
    )
    action: str = Field(description="What the step does: one of the actions `kmsir actions` lists.")
    name: str | None = Field(
        default=None, description="What the step does, in words; the id is shown when absent."
    )
    phase: Phase | None = Field(
        default=None, description="Its incident-response phase (NIST): the report groups by it."
    )
    description: str | None = Field(default=None, description="More about the step.")
    with_: dict[str, Any] = Field(
        default_factory=dict,
        alias="with",
        description="The action's parameters; a value may be a template such as "
        '"{{ steps.snapshot.key_id }}", checked once rendered.',
    )
    when: str | None = Field(
        default=None,
        description="An expression (Jinja): the step runs only when it is true, else it is "
        "skipped; e.g. \"'snapshot' in steps\".",
    )
    for_each: str | None = Field(
        default=None,
        description="A template giving a list (at most 100 items): the step runs once per "
        "item, with the item as `item`, each run journaled and confirmed on its own; e.g. "
        '"{{ steps.findings.actors }}". Later steps read steps.<id>.items (each run\'s '
        "outputs) and steps.<id>.count.",
    )
    on_error: Literal["stop", "continue", "ask"] = Field(
        default="stop",
        description="After a failure: 'stop' the run (at a terminal the responder may still "
        "retry or skip), 'continue' with the next step, or 'ask' the responder.",
    )
    retries: int = Field(
        default=0,
        ge=0,
        le=10,
        description="How many times a step failed by a transient AWS error is tried again.",
    )
    approvals: Approvals | None = Field(
        default=None,
        description="A second person must approve the step (with their own AWS credentials: "
        "`kmsir approve BUNDLE STEP`) after the responder did, before it runs.",
    )
    approval_timeout: str | None = Field(
        default=None,
        description="How long the step waits for its approvals (a duration like 30m or 2h, at "
        "most 24h; default 30m); none by then: the step fails, then its on_error applies.",
    )

    _timeout = field_validator("approval_timeout")(check_timeout)

    @property
    def title(self) -> str:
        """The step's name, or its id when it has none."""
        return self.name or self.id

    @property
    def approval_timeout_s(self) -> int:
        """Seconds the step waits for its approvals."""
        return timeout_seconds(self.approval_timeout)


class Playbook(_Frozen):
    """A validated playbook."""

    id: KebabId = Field(description="The playbook's name, kebab-case: journaled with each run.")
    title: str = Field(description="What incident the playbook answers, in one line.")
    steps: tuple[Step, ...] = Field(min_length=1, description="The steps, run in this order.")
    version: int | str | None = Field(default=None, description="The playbook's own version.")
    severity: Literal["low", "medium", "high", "critical"] | None = Field(
        default=None, description="How severe the incident it answers is."
    )
    description: str | None = Field(
        default=None, description="The incident and the response, for the report and reviewers."
    )
    references: tuple[str, ...] = Field(default=(), description="Links to read (AWS docs...).")
    mitre: tuple[str, ...] = Field(default=(), description="MITRE ATT&CK technique ids (T1078).")
    inputs: dict[str, InputSpec] = Field(
        default_factory=dict,
        description="What a run is given (-i NAME=VALUE, or asked): templates read inputs.NAME.",
    )
    approvals: Approvals | None = Field(
        default=None,
        description="Approvals every irreversible or high-impact step needs (a step's own "
        "approvals: replace them).",
    )

    def step(self, step_id: str) -> Step:
        """The step with ``step_id``."""
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)


@dataclass(frozen=True)
class LoadedPlaybook:
    """A playbook plus where it came from: path, exact bytes, sha256, lint warnings."""

    playbook: Playbook
    path: Path
    raw: bytes
    warnings: tuple[str, ...]

    @property
    def sha256(self) -> str:
        """Hex sha256 of the exact bytes that were loaded."""
        return hashlib.sha256(self.raw).hexdigest()


def load(path: Path, catalog: ActionCatalog, *, source: str | None = None) -> LoadedPlaybook:
    """Load, validate and lint the playbook at ``path``; raise ``PlaybookError`` on problems."""
    document = yamlsafe.load_file(path, source=source)
    return from_document(document, catalog, path=path)


def check_file(path: Path, catalog: ActionCatalog) -> Checked:
    """``check`` the playbook at ``path``: what ``validate`` reports, warnings included
    (a file that is not readable YAML has its one problem and nothing more)."""
    try:
        document = yamlsafe.load_file(path)
    except PlaybookError as exc:
        return Checked(None, exc.problems)
    return check(document, catalog)


def from_document(
    document: yamlsafe.Document, catalog: ActionCatalog, *, path: Path
) -> LoadedPlaybook:
    """Validate an already-parsed document."""
    checked = check(document, catalog)
    if checked.problems or checked.playbook is None:
        raise PlaybookError(checked.problems)
    return LoadedPlaybook(checked.playbook, path, document.raw, tuple(checked.warnings))


@dataclass(frozen=True)
class Checked:
    """One pass over a playbook document: every problem and every warning it has, and the
    playbook when its shape is right (``None`` otherwise)."""

    playbook: Playbook | None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check(document: yamlsafe.Document, catalog: ActionCatalog) -> Checked:
    """Check a parsed document in one pass: its shape, what the catalog says of its steps,
    and lint; a problem of one field does not hide those of the others."""
    data = document.data
    if not isinstance(data, dict):
        return Checked(None, [f"{document.where(())}: a playbook must be a YAML mapping"])
    playbook: Playbook | None = None
    try:
        playbook = Playbook.model_validate(data)
    except ValidationError as exc:
        shape = _pydantic_problems(exc, document)
        parts, inputs = _parts(data, exc), _inputs(data)
    else:
        shape = iter(())
        parts = [checks.Part(index, step) for index, step in enumerate(playbook.steps)]
        inputs = playbook.inputs
    known = catalog if isinstance(catalog, Catalog) else None
    semantic = checks.problems(
        parts, inputs, document, catalog, known.outputs if known is not None else None
    )
    problems = _at_most(itertools.chain(shape, semantic), document)
    mutating = known.mutating if known is not None else None
    named = [(p.index, p.step) for p in parts if "id" not in p.bad]
    found = lint.warnings(data, named, document, lint.Facts(mutating=mutating))
    return Checked(playbook, problems, _at_most(found, document, kind="warnings"))


def _parts(data: dict[str, Any], exc: ValidationError) -> list[checks.Part]:
    """The steps of a playbook whose shape is wrong, each with its wrong fields left out (at
    their defaults), so that the rest of it is checked all the same."""
    steps = data.get("steps")
    if not isinstance(steps, list):
        return []
    bad: dict[int, set[str]] = {}
    for error in exc.errors(include_url=False, include_input=False):
        loc = error["loc"]
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            bad.setdefault(loc[1], set()).add(str(loc[2]) if len(loc) > 2 else "")
    parts = []
    for index, item in enumerate(steps):
        wrong = bad.get(index, set())
        if not isinstance(item, dict) or "" in wrong:
            continue
        kept = {k: v for k, v in item.items() if k not in wrong}
        # an id or action missing or wrong: a stand-in, whose checks are skipped
        stand_in = {"id": "step", "action": ""}
        missing = {k: v for k, v in stand_in.items() if k not in kept}
        try:
            step = Step.model_validate({**kept, **missing})
        except ValidationError:
            continue
        written = item.get("id")
        skipped = frozenset(wrong | set(missing))
        name = written if isinstance(written, str) else None
        parts.append(checks.Part(index, step, skipped, name))
    return parts


def _inputs(data: dict[str, Any]) -> dict[str, InputSpec]:
    """The inputs of a playbook whose shape is wrong that are right themselves."""
    given = data.get("inputs")
    found: dict[str, InputSpec] = {}
    for name, spec in given.items() if isinstance(given, dict) else ():
        try:
            found[name] = InputSpec.model_validate(spec)
        except ValidationError:
            continue
    return {name: spec for name, spec in found.items() if isinstance(name, str)}


def _at_most(
    found: Iterator[str], document: yamlsafe.Document, kind: str = "problems"
) -> list[str]:
    """The first ``MAX_PROBLEMS`` lines of ``found``, and one line saying there are more: a
    generated file with thousands of broken steps must not flood the terminal, and the
    first problems are the ones to fix first."""
    lines = list(itertools.islice(found, MAX_PROBLEMS + 1))
    if len(lines) > MAX_PROBLEMS:
        lines[MAX_PROBLEMS:] = [
            f"{document.where(())}: more {kind} not shown (only the first {MAX_PROBLEMS} are)"
        ]
    return lines


def _step_prefix(document: yamlsafe.Document, loc: tuple[str | int, ...]) -> str:
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        steps = document.data.get("steps") if isinstance(document.data, dict) else None
        if isinstance(steps, list) and loc[1] < len(steps) and isinstance(steps[loc[1]], dict):
            step_id = steps[loc[1]].get("id")
            if isinstance(step_id, str):
                return f"step {yamlsafe.shorten(step_id, 50)}: "
        return f"step #{loc[1] + 1}: "
    return ""


def _pydantic_problems(
    exc: ValidationError, document: yamlsafe.Document, *, prefix: tuple[str | int, ...] = ()
) -> Iterator[str]:
    errors = exc.errors(include_url=False, include_input=False)
    in_steps = any(len(e["loc"]) > 2 and e["loc"][0] == "steps" for e in errors)
    for error in errors:
        loc = (*prefix, *error["loc"])
        kind = error["type"]
        if in_steps and loc == ("steps",) and kind == "too_short":
            continue  # a consequence of the step errors reported on their own lines
        field = ".".join(yamlsafe.shorten(p, 40).strip("'") for p in loc) or "playbook"
        last = yamlsafe.shorten(loc[-1], 40).strip("'") if loc else ""
        if kind == "missing":
            message = f"missing required field '{last}'"
        elif kind == "extra_forbidden":
            message = f"unknown field '{last}'{_field_hint(loc)}"
        elif kind == "string_pattern_mismatch" and loc == ("id",):
            message = "id: must be kebab-case (lowercase letters, digits and '-')"
        elif kind == "string_pattern_mismatch" and last == "id":
            message = f"{field}: use lowercase letters, digits, '-' or '_', starting with a letter"
        else:
            message = f"{field}: {yamlsafe.one_line(error['msg'])}"
        yield f"{document.where(loc)}: {_step_prefix(document, loc)}{message}"


def _field_hint(loc: tuple[str | int, ...]) -> str:
    """A did-you-mean for an unknown field of the playbook or of one of its steps."""
    if len(loc) == 1:
        model: type[BaseModel] = Playbook
    elif len(loc) == 3 and loc[0] == "steps":
        model = Step
    else:
        return ""
    names = [info.alias or name for name, info in model.model_fields.items()]
    return checks.did_you_mean(str(loc[-1]), names)


def referenced_steps(text: str) -> list[str]:
    """The ids of the steps a template reads (``steps.x``, ``steps['x']``), each once."""
    return checks.referenced_steps(text)


# --- inputs -----------------------------------------------------------------------------


def resolve_inputs(
    playbook: Playbook, given: Mapping[str, Any], *, partial: bool = False
) -> dict[str, Any]:
    """Inputs for a run: given values checked, defaults filled, unknown or missing refused.

    ``partial`` (for ``plan``): an input neither given nor defaulted is left out, not refused.
    """
    unknown = sorted(set(given) - set(playbook.inputs))
    if unknown:
        hint = checks.did_you_mean(unknown[0], list(playbook.inputs))
        raise UsageError(
            f"playbook '{playbook.id}' has no input {yamlsafe.shorten(unknown[0], 40)}{hint}"
        )
    values: dict[str, Any] = {}
    for name, spec in playbook.inputs.items():
        if name in given:
            values[name] = coerce_input(name, spec, given[name])
        elif spec.default is not None:
            values[name] = coerce_input(name, spec, spec.default)
        elif partial:
            continue
        elif spec.required:
            raise UsageError(f"input '{name}' is required: pass -i {name}=VALUE")
        else:
            values[name] = None
    return values

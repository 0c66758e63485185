"""Load and validate playbooks into frozen models, before any AWS call.

Loading is two passes over a position-aware YAML document (``yamlsafe``): pydantic checks the
shape, then ``_check_semantics`` checks what needs the action catalog (unknown actions and
parameters, with a did-you-mean), ``when:`` and template syntax, and references to steps
that do not run earlier. Every problem is one line ``file:line:col: step 'id': message``.
Inputs are declared and checked in ``inputs``; asking a person for one is ``prompts``'s job.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kmsir.errors import PlaybookError, UsageError
from kmsir.playbook import templating, yamlsafe

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


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Step(_Frozen):
    """One playbook step."""

    id: StepId
    action: str
    name: str | None = None
    phase: Phase | None = None
    description: str | None = None
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    when: str | None = None
    on_error: Literal["stop", "continue", "ask"] = "stop"
    retries: int = Field(default=0, ge=0, le=10)

    @property
    def title(self) -> str:
        """The step's name, or its id when it has none."""
        return self.name or self.id


class Playbook(_Frozen):
    """A validated playbook."""

    id: KebabId
    title: str
    steps: tuple[Step, ...] = Field(min_length=1)
    version: int | str | None = None
    severity: Literal["low", "medium", "high", "critical"] | None = None
    description: str | None = None
    references: tuple[str, ...] = ()
    mitre: tuple[str, ...] = ()
    inputs: dict[str, InputSpec] = Field(default_factory=dict)

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


def from_document(
    document: yamlsafe.Document, catalog: ActionCatalog, *, path: Path
) -> LoadedPlaybook:
    """Validate an already-parsed document."""
    if not isinstance(document.data, dict):
        raise PlaybookError([f"{document.where(())}: a playbook must be a YAML mapping"])
    try:
        playbook = Playbook.model_validate(document.data)
    except ValidationError as exc:
        raise PlaybookError(_at_most(_pydantic_problems(exc, document), document)) from None
    problems = _at_most(_check_semantics(playbook, document, catalog), document)
    if problems:
        raise PlaybookError(problems)
    warnings = _at_most(_lint(playbook, document), document, kind="warnings")
    return LoadedPlaybook(playbook, path, document.raw, tuple(warnings))


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
            message = f"unknown field '{last}'"
        elif kind == "string_pattern_mismatch" and loc == ("id",):
            message = "id: must be kebab-case (lowercase letters, digits and '-')"
        elif kind == "string_pattern_mismatch" and last == "id":
            message = f"{field}: use lowercase letters, digits, '-' or '_', starting with a letter"
        else:
            message = f"{field}: {yamlsafe.one_line(error['msg'])}"
        yield f"{document.where(loc)}: {_step_prefix(document, loc)}{message}"


_STEP_REFERENCE = re.compile(r"\bsteps(?:\.([A-Za-z_][\w]*)|\[\s*['\"]([^'\"]+)['\"]\s*\])")


def _templates_in(
    value: Any, path: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _templates_in(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _templates_in(item, (*path, index))


def _did_you_mean(word: str, options: Iterator[str] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _check_semantics(
    playbook: Playbook, document: yamlsafe.Document, catalog: ActionCatalog
) -> Iterator[str]:
    seen: set[str] = set()
    for index, step in enumerate(playbook.steps):
        base: tuple[str | int, ...] = ("steps", index)
        prefix = f"step '{step.id}': "

        def at(*path: str | int, _base: tuple[str | int, ...] = base) -> str:
            return document.where((*_base, *path))

        if step.id in seen:
            yield f"{at('id')}: {prefix}duplicate step id (ids must be unique)"
        params_model = catalog.get(step.action)
        if params_model is None:
            hint = _did_you_mean(step.action, list(catalog))
            yield f"{at('action')}: {prefix}unknown action {yamlsafe.shorten(step.action)}{hint}"
        else:
            fields = params_model.model_fields
            names = {info.alias or name for name, info in fields.items()}
            for key in step.with_:
                if key not in names:
                    hint = _did_you_mean(str(key), sorted(names))
                    yield (
                        f"{at('with', key)}: {prefix}action '{step.action}' has no parameter "
                        f"{yamlsafe.shorten(key, 40)}{hint}"
                    )
            for name, info in fields.items():
                if info.is_required() and (info.alias or name) not in step.with_:
                    yield f"{at('with')}: {prefix}action '{step.action}' needs parameter '{name}'"
            yield from _check_literal_params(step, params_model, document, base, prefix)
        if step.when is not None:
            problem = _template_problem(templating.check_expression, step.when)
            if problem:
                yield f"{at('when')}: {prefix}when: {problem}"
            yield from _references(step.when, seen, at("when"), prefix)
        for path, text in _templates_in(step.with_, ("with",)):
            problem = _template_problem(templating.check_template, text)
            if problem:
                yield f"{at(*path)}: {prefix}{problem}"
            yield from _references(text, seen, at(*path), prefix)
        seen.add(step.id)
    for name, spec in playbook.inputs.items():
        where = document.where(("inputs", name))
        if spec.type == "choice" and not spec.choices:
            yield f"{where}: input {yamlsafe.shorten(name, 40)}: type choice needs choices"
        elif spec.default is not None:
            try:
                coerce_input(name, spec, spec.default)
            except UsageError as exc:
                where = document.where(("inputs", name, "default"))
                yield f"{where}: default of {yamlsafe.one_line(str(exc))}"


def _template_problem(check: Callable[[str], str | None], text: str) -> str | None:
    """``check(text)`` as one short line."""
    problem = check(text)
    return None if problem is None else yamlsafe.one_line(problem)


def _has_template(value: Any) -> bool:
    return any("{{" in text or "{%" in text for _, text in _templates_in(value, ()))


def _check_literal_params(
    step: Step,
    model: type[BaseModel],
    document: yamlsafe.Document,
    base: tuple[str | int, ...],
    prefix: str,
) -> Iterator[str]:
    """Check the parameters that hold no template now; the others are checked at run time."""
    names = {info.alias or name for name, info in model.model_fields.items()}
    templated = {key for key, value in step.with_.items() if _has_template(value)}
    literal = {
        key: value for key, value in step.with_.items() if key not in templated and key in names
    }
    try:
        model.model_validate(literal)
    except ValidationError as exc:
        for error in exc.errors(include_url=False, include_input=False):
            loc = tuple(error["loc"])
            if error["type"] in ("missing", "extra_forbidden") or (loc and loc[0] in templated):
                continue  # templated: checked once rendered; missing/unknown: reported above
            if not loc:  # a rule across parameters; it may hold once templates are rendered
                if not templated & names:
                    problem = yamlsafe.one_line(error["msg"])
                    yield f"{document.where((*base, 'with'))}: {prefix}{problem}"
                continue
            where = document.where((*base, "with", *loc))
            name = ".".join(yamlsafe.shorten(p, 40).strip("'") for p in loc)
            # an action's own validator may quote the value: keep it one short line
            yield f"{where}: {prefix}parameter {name}: {yamlsafe.one_line(error['msg'])}"


def referenced_steps(text: str) -> list[str]:
    """The ids of the steps a template reads (``steps.x``, ``steps['x']``), each once."""
    return list(dict.fromkeys(m.group(1) or m.group(2) for m in _STEP_REFERENCE.finditer(text)))


def _references(text: str, earlier: set[str], where: str, prefix: str) -> Iterator[str]:
    for match in _STEP_REFERENCE.finditer(text):
        ref = match.group(1) or match.group(2)
        if ref not in earlier:
            # a bracketed name may hold anything (newlines, megabytes): quoted and cut then
            plain = match.group(1) and len(ref) <= 50
            shown = f"steps.{ref}" if plain else f"steps[{yamlsafe.shorten(ref, 50)}]"
            yield f"{where}: {prefix}refers to {shown}, which is not an earlier step"


def _lint(playbook: Playbook, document: yamlsafe.Document) -> Iterator[str]:
    """Style warnings: never fail a run, only shown by ``validate``."""
    for field in ("version", "severity", "description"):
        if getattr(playbook, field) is None:
            yield f"{document.where(())}: warning: no '{field}' (helps the report and reviewers)"
    for index, step in enumerate(playbook.steps):
        if step.phase is None:
            yield (
                f"{document.where(('steps', index))}: warning: step '{step.id}' has no phase "
                "(the report groups steps by NIST phase)"
            )


# --- inputs -----------------------------------------------------------------------------


def resolve_inputs(
    playbook: Playbook, given: Mapping[str, Any], *, partial: bool = False
) -> dict[str, Any]:
    """Inputs for a run: given values checked, defaults filled, unknown or missing refused.

    ``partial`` (for ``plan``): an input neither given nor defaulted is left out, not refused.
    """
    unknown = sorted(set(given) - set(playbook.inputs))
    if unknown:
        hint = _did_you_mean(unknown[0], list(playbook.inputs))
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

"""The checks of a playbook that need the action catalog: unknown actions and parameters (with
a did-you-mean), literal parameters, ``when:`` and template syntax, reads of steps that do not
run earlier, and each ``steps.X.field`` against the outputs X's action declares.

They run on every step whose shape allows it, even when other steps (or other fields of the
same step) are wrong: a field whose shape is wrong is ``bad`` and the checks that read it are
skipped, the others run, so that every problem of a file comes out in one pass.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from kmsir.errors import UsageError
from kmsir.playbook import references, templating, yamlsafe
from kmsir.playbook.inputs import InputSpec, coerce_input

if TYPE_CHECKING:
    from kmsir.playbook.model import Step

#: The output every step has besides its action's: ``succeeded``, or ``already`` (nothing sent).
STATUS_OUTPUT = "status"

#: ``steps.X`` or ``steps['X']``; not a call of one of the mapping's own methods
#: (``steps.get('x')``, ``steps.items()``).
_STEP_REFERENCE = re.compile(
    r"\bsteps(?:\.([A-Za-z_][\w]*)(?![\w(])(?!\s+\()|\[\s*['\"]([^'\"]+)['\"]\s*\])"
)


@dataclass(frozen=True)
class Part:
    """A step as far as it can be checked: where it is in the file, the step with the fields
    whose shape is wrong (``bad``) at their defaults, those fields' names, and its id as
    written (``None``: not a string)."""

    index: int
    step: Step
    bad: frozenset[str] = frozenset()
    written_id: str | None = None

    @property
    def prefix(self) -> str:
        """How a problem names the step."""
        return f"step #{self.index + 1}: " if "id" in self.bad else f"step '{self.step.id}': "


def did_you_mean(word: str, options: Iterator[str] | list[str]) -> str:
    """`` (did you mean 'x'?)`` for the option closest to ``word``, or nothing."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


#: What a ``for_each`` step returns (``run.loops``): each iteration's outputs (``None`` for
#: one that did not succeed) and how many items there were.
LOOP_OUTPUTS: Mapping[str, str] = {"items": "list[dict|null]", "count": "int"}


def problems(
    parts: Sequence[Part],
    inputs: Mapping[str, InputSpec],
    document: yamlsafe.Document,
    catalog: Mapping[str, type[BaseModel]],
    outputs: Mapping[str, Mapping[str, str]] | None,
) -> Iterator[str]:
    """Every problem the catalog finds in the checkable ``parts`` and ``inputs``
    (``outputs``: each action's declared outputs, ``None`` when not known)."""
    seen: set[str] = set()
    #: earlier steps (by id) whose outputs are known: what they return
    returns: dict[str, Mapping[str, str] | None] = {}
    for part in parts:
        step, base, prefix = part.step, ("steps", part.index), part.prefix

        def at(*path: str | int, _base: tuple[str | int, ...] = base) -> str:
            return document.where((*_base, *path))

        if "id" not in part.bad and step.id in seen:
            yield f"{at('id')}: {prefix}duplicate step id (ids must be unique)"
        if "action" not in part.bad:
            yield from _action_problems(part, catalog, document)
        for path, text, expression in _checkable_texts(part):
            where = at(*path)
            check = templating.check_expression if expression else templating.check_template
            problem = _template_problem(check, text)
            if problem:
                label = "" if path[0] == "with" else f"{path[0]}: "
                yield f"{where}: {prefix}{label}{problem}"
            yield from _references(text, seen, where, prefix)
            yield from _outputs_read(text, expression, returns, where, prefix)
        yield from _item_reads(part, at, prefix)
        name = step.id if "id" not in part.bad else part.written_id
        if name is not None:
            seen.add(name)
            known = outputs is not None and "action" not in part.bad and "id" not in part.bad
            returns[name] = (outputs or {}).get(step.action) if known else None
            if known and step.for_each is not None:
                returns[name] = LOOP_OUTPUTS  # run.loops: each iteration's, and how many
    for name, spec in inputs.items():
        where = document.where(("inputs", name))
        if spec.type == "choice" and not spec.choices:
            yield f"{where}: input {yamlsafe.shorten(name, 40)}: type choice needs choices"
        elif spec.default is not None:
            try:
                coerce_input(name, spec, spec.default)
            except UsageError as exc:
                where = document.where(("inputs", name, "default"))
                yield f"{where}: default of {yamlsafe.one_line(str(exc))}"


def _checkable_texts(part: Part) -> list[tuple[tuple[str | int, ...], str, bool]]:
    """``(path in the step, text, is an expression)`` of the step's ``when:``, ``for_each:``
    and every string of its ``with:``, leaving out the fields whose shape is wrong."""
    step = part.step
    texts: list[tuple[tuple[str | int, ...], str, bool]] = []
    if step.when is not None and "when" not in part.bad:
        texts.append((("when",), step.when, True))
    if step.for_each is not None and "for_each" not in part.bad:
        texts.append((("for_each",), step.for_each, False))
    if "with" not in part.bad:
        texts += [(path, text, False) for path, text in _templates_in(step.with_, ("with",))]
    return texts


def _item_reads(part: Part, at: Callable[..., str], prefix: str) -> Iterator[str]:
    """``item`` is there only in a ``for_each`` step's ``with:`` and ``when:``."""
    step = part.step
    if step.for_each is not None and "for_each" not in part.bad:
        if references.reads_variable(step.for_each, "item", expression=False):
            yield f"{at('for_each')}: {prefix}for_each: reads 'item', which it defines"
        return
    for path, text, expression in _checkable_texts(part):
        if references.reads_variable(text, "item", expression=expression):
            yield f"{at(*path)}: {prefix}reads 'item', but the step has no for_each"
            return


def _action_problems(
    part: Part, catalog: Mapping[str, type[BaseModel]], document: yamlsafe.Document
) -> Iterator[str]:
    """An unknown action, or its parameters: unknown, missing, or wrong where literal."""
    step, base, prefix = part.step, ("steps", part.index), part.prefix
    params_model = catalog.get(step.action)
    if params_model is None:
        hint = did_you_mean(step.action, list(catalog))
        where = document.where((*base, "action"))
        yield f"{where}: {prefix}unknown action {yamlsafe.shorten(step.action)}{hint}"
        return
    if "with" in part.bad:
        return
    fields = params_model.model_fields
    names = {info.alias or name for name, info in fields.items()}
    for key in step.with_:
        if key not in names:
            hint = did_you_mean(str(key), sorted(names))
            yield (
                f"{document.where((*base, 'with', key))}: {prefix}action '{step.action}' has no "
                f"parameter {yamlsafe.shorten(key, 40)}{hint}"
            )
    for name, info in fields.items():
        if info.is_required() and (info.alias or name) not in step.with_:
            where = document.where((*base, "with"))
            yield f"{where}: {prefix}action '{step.action}' needs parameter '{name}'"
    yield from _check_literal_params(step, params_model, document, base, prefix)


def _outputs_read(
    text: str,
    expression: bool,
    returns: Mapping[str, Mapping[str, str] | None],
    where: str,
    prefix: str,
) -> Iterator[str]:
    """Each ``steps.X.field`` of ``text`` whose X declares outputs and not ``field``."""
    tree = references.parse(text, expression=expression)
    if tree is None:
        return
    told: set[tuple[str, str]] = set()
    for ref in references.references(tree):
        declared = returns.get(ref.step)
        if not declared or ref.field is None or (ref.step, ref.field) in told:
            continue
        told.add((ref.step, ref.field))
        if ref.field in declared or ref.field == STATUS_OUTPUT:
            continue
        plain = ref.field.isidentifier() and len(ref.field) <= 40
        shown = f".{ref.field}" if plain else f"[{yamlsafe.shorten(ref.field, 40)}]"
        hint = did_you_mean(ref.field, [*declared, STATUS_OUTPUT])
        yield (
            f"{where}: {prefix}steps.{ref.step}{shown}: step '{ref.step}' has no output "
            f"{yamlsafe.shorten(ref.field, 40)}{hint}"
        )


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
            top = len(loc) == 1 and error["type"] in ("missing", "extra_forbidden")
            if top or (loc and loc[0] in templated):
                continue  # templated: checked once rendered; missing/unknown: reported above
            if not loc:  # a rule across parameters; it may hold once templates are rendered
                if not templated & names:
                    problem = yamlsafe.one_line(error["msg"])
                    yield f"{document.where((*base, 'with'))}: {prefix}{problem}"
                continue
            where = document.where((*base, "with", *loc))
            name = ".".join(yamlsafe.shorten(p, 40).strip("'") for p in loc)
            if error["type"] == "extra_forbidden":  # inside a parameter (filter: {...})
                yield f"{where}: {prefix}parameter {name}: unknown field"
                continue
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

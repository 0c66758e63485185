"""What a scenario's loading checks beyond its model: everything that spans its records.

References between sections (a grant's key, an event's identity, an inject's calls, the
ground truth's names) must name something the scenario defines, with a did-you-mean; replicas
must be in other Regions where KMS is offered; injects, expected decisions and the evidence to
see must name steps of the scenario's playbook, and an expected answer one that step's decision
can record (a choice of an ``ask``; ``approved`` or ``skipped`` for an approval); the hidden
parts must be plain text; and every template must render against a stand-in of the seeded
world (same names, made-up ids), so a broken one is refused when the scenario loads, not
mid-run. Every problem is one line naming its file and line.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kmsir import resources
from kmsir.errors import PlaybookError
from kmsir.playbook import yamlsafe
from kmsir.sandbox.hidden_model import HIDDEN_FIELDS
from kmsir.sandbox.resource_model import templates as resource_templates
from kmsir.sandbox.scenario_model import (
    CreateGrantCall,
    EventSpec,
    ExpectedSpec,
    KeySpec,
    PutKeyPolicyCall,
    Scenario,
)


def check(
    scenario: Scenario, document: yamlsafe.Document, path: Path, world: Mapping[str, Any]
) -> None:
    """Refuse (``PlaybookError``, every problem at once) a scenario loaded from ``path`` whose
    records do not fit together; ``world`` is the stand-in of its seeded world
    (``scenario.stand_in_world``) its templates are rendered against."""
    problems = []

    def unknown(where: tuple[Any, ...], what: str, name: str, known: Any) -> None:
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(f"{document.where(where)}: unknown {what} {name!r}{hint}")

    for name, key in scenario.keys.items():
        problems += _check_replicas(scenario, name, key, document)
    for name, grant in scenario.grants.items():
        if grant.key not in scenario.keys:
            unknown(("grants", name, "key"), "key", grant.key, scenario.keys)
    for name, identity in scenario.identities.items():
        if identity.user is not None and identity.user not in scenario.users:
            unknown(("identities", name, "user"), "user", identity.user, scenario.users)
    histories: list[tuple[tuple[Any, ...], list[Any]]] = [(("history",), scenario.history)]
    histories += [(("injects", n, "history"), i.history) for n, i in enumerate(scenario.injects)]
    for prefix, history in histories:
        for index, event in enumerate(history):
            if event.identity not in scenario.identities:
                at = (*prefix, index, "identity")
                unknown(at, "identity", event.identity, scenario.identities)
            if event.key is not None and event.key not in scenario.keys:
                unknown((*prefix, index, "key"), "key", event.key, scenario.keys)
    for n, inject in enumerate(scenario.injects):
        for c, call in enumerate(inject.calls):
            if call.key not in scenario.keys:
                unknown(("injects", n, "calls", c, "key"), "key", call.key, scenario.keys)
        if inject.identity is not None and inject.identity not in scenario.identities:
            unknown(("injects", n, "identity"), "identity", inject.identity, scenario.identities)
    steps = None
    if scenario.injects or scenario.expected or scenario.evidence_to_see:
        steps = _playbook_steps(scenario, document, path, problems)

    def step_named(at: tuple[Any, ...], step: str) -> bool:
        """Whether ``step`` (at ``at``) is a step of the playbook (else a problem)."""
        if steps is None or step in steps:
            return steps is not None
        close = difflib.get_close_matches(step, list(steps), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        problems.append(
            f"{document.where(at)}: playbook {scenario.playbook} has no step {step!r}{hint}"
        )
        return False

    for n, inject in enumerate(scenario.injects):
        if inject.after is not None:  # a timed inject follows no step
            step_named(("injects", n, "after"), inject.after)
    for step, expected in scenario.expected.items():
        if step_named(("expected", step), step) and steps is not None:
            problems += _check_expected(step, expected, steps[step], document)
    for n, evidence in enumerate(scenario.evidence_to_see):
        step_named(("evidence_to_see", n, "step"), evidence.step)
    truth = scenario.ground_truth
    if truth is not None:
        named: list[tuple[str, str | None, str, Mapping[str, Any]]] = [
            ("key", truth.key, "key", scenario.keys),
            ("principal", truth.principal, "identity", scenario.identities),
            ("grant", truth.grant, "grant", scenario.grants),
            ("access_key", truth.access_key, "user", scenario.users),
        ]
        for field, value, what, known in named:
            if value is not None and value not in known:
                unknown(("ground_truth", field), what, value, known)
    problems += _check_plain(scenario, document)
    problems += _check_templates(scenario, document, world)
    if problems:
        raise PlaybookError(problems)


def _check_replicas(
    scenario: Scenario, name: str, key: KeySpec, document: yamlsafe.Document
) -> list[str]:
    """A key's replicas: only of a multi-Region key, each in a Region where KMS is offered
    (in the scenario Region's partition), other than the scenario's, and once."""
    if not key.replicas:
        return []
    if not key.multi_region:
        at = ("keys", name, "replicas")
        return [f"{document.where(at)}: keys.{name}.replicas: replicas need multi_region: true"]
    problems = []
    offered = _kms_regions(scenario.region)
    for index, region in enumerate(key.replicas):
        where = f"{document.where(('keys', name, 'replicas', index))}: "
        where += f"keys.{name}.replicas.{index}: "
        if region == scenario.region:
            problems.append(
                f"{where}{region} is the scenario's Region: a replica is in another Region"
            )
        elif region in key.replicas[:index]:
            problems.append(f"{where}{region} is named twice (one replica per Region)")
        elif region not in offered:
            close = difflib.get_close_matches(region, offered, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(
                f"{where}{region} is not a Region with KMS in the partition of the "
                f"scenario's Region, {scenario.region}{hint}"
            )
    return problems


def _kms_regions(region: str) -> list[str]:
    """The Regions where KMS is offered, as botocore (and so moto) knows them: those of
    ``region``'s partition, or of every partition if ``region`` is in none. Read from
    botocore's endpoint data, without a session (which a missing profile would break)."""
    from botocore.loaders import create_loader
    from botocore.regions import EndpointResolver

    resolver = EndpointResolver(create_loader().load_data("endpoints"))
    partitions = [
        list(resolver.get_available_endpoints("kms", partition))
        for partition in resolver.get_available_partitions()
    ]
    same = next((regions for regions in partitions if region in regions), None)
    return same if same is not None else [r for regions in partitions for r in regions]


def _check_templates(
    scenario: Scenario, document: yamlsafe.Document, world: Mapping[str, Any]
) -> list[str]:
    """Render every template of the scenario against a stand-in of its seeded world, as the
    sandbox renders it (the same names at the same moment of seeding); what does not render
    is a problem naming its file and line."""
    from kmsir.errors import TemplateError
    from kmsir.playbook import templating

    problems: list[str] = []

    _failed = object()

    def render(at: tuple[Any, ...], value: Any, context: Mapping[str, Any]) -> Any:
        """Render ``value`` (recursively) at ``at``: the result, or ``_failed``."""
        if isinstance(value, Mapping):
            return {k: render((*at, k), v, context) for k, v in value.items()}
        if isinstance(value, list):
            return [render((*at, n), v, context) for n, v in enumerate(value)]
        try:
            return templating.render_value(value, context)
        except TemplateError as exc:
            problems.append(f"{document.where(at)}: {'.'.join(map(str, at))}: {exc}")
            return _failed

    def text(at: tuple[Any, ...], value: str, context: Mapping[str, Any]) -> None:
        """Render ``value``, which must come out a string (a principal AWS is sent)."""
        rendered = render(at, value, context)
        if rendered is not _failed and not isinstance(rendered, str):
            problems.append(
                f"{document.where(at)}: {'.'.join(map(str, at))}: renders to "
                f"{type(rendered).__name__}, not a string"
            )

    # seeding renders each key's policy once that key exists, before any grant
    for n, (name, key) in enumerate(scenario.keys.items()):
        if key.policy is not None:
            seeded = dict(list(world["keys"].items())[: n + 1])
            render(("keys", name, "policy"), key.policy, {**world, "keys": seeded, "grants": {}})
    for n, (name, grant) in enumerate(scenario.grants.items()):
        seeded = dict(list(world["grants"].items())[:n])
        text(("grants", name, "grantee"), grant.grantee, {**world, "grants": seeded})
    histories: list[tuple[tuple[Any, ...], list[Any]]] = [(("history",), scenario.history)]
    histories += [(("injects", n, "history"), i.history) for n, i in enumerate(scenario.injects)]
    for prefix, events in histories:
        for index, event in enumerate(events):
            for field, value in _event_templates(event):
                render((*prefix, index, field), value, world)
    for n, inject in enumerate(scenario.injects):
        render(("injects", n, "say"), inject.say, world)
        if inject.say_blocked is not None:
            render(("injects", n, "say_blocked"), inject.say_blocked, world)
        for c, call in enumerate(inject.calls):
            if isinstance(call, CreateGrantCall):
                text(("injects", n, "calls", c, "grantee"), call.grantee, world)
            elif isinstance(call, PutKeyPolicyCall):
                render(("injects", n, "calls", c, "policy"), call.policy, world)
    for n, resource in enumerate(scenario.resources):  # seeded once keys and grants exist
        for at, value in resource_templates(resource):
            render(("resources", n, *at), value, world)
    return problems


def _event_templates(event: EventSpec) -> list[tuple[str, Any]]:
    """The fields of an event the sandbox renders (``history._event``), by name."""
    fields: list[tuple[str, Any]] = [
        ("source_ip", event.source_ip),
        ("user_agent", event.user_agent),
        ("request", event.request),
    ]
    if event.response is not None:
        fields.append(("response", event.response))
    if event.error_code:
        if event.error_message:
            fields.append(("error_message", event.error_message))
        else:
            fields.append(("error_code", event.error_code))
    return fields


def _playbook_steps(
    scenario: Scenario, document: yamlsafe.Document, path: Path, problems: list[str]
) -> dict[str, dict[str, Any]] | None:
    """The steps of the scenario's playbook (a built-in name, or a file beside the scenario),
    by id, as written: for checking where injects go and what is expected at them; ``None``
    (and a problem) if it is missing."""
    name = scenario.playbook
    candidates = [path.parent / name, resources.playbooks_dir() / f"{name}.yaml"]
    found = next((c for c in candidates if c.suffix in (".yaml", ".yml") and c.is_file()), None)
    if found is None:
        problems.append(
            f"{document.where(('playbook',))}: no playbook {name!r} (built-in name or a file "
            "beside the scenario) to check the steps its injects and rubric name against"
        )
        return None
    data = yamlsafe.load_file(found).data
    steps = data.get("steps") if isinstance(data, dict) else None
    if not isinstance(steps, list):
        return {}
    return {str(s.get("id")): s for s in steps if isinstance(s, dict)}


#: What the journal's decision records at a step asking its own question (``ask``: one of
#: its choices); any other step is ``approved`` or ``skipped`` before it runs.
_ANSWERS = {"confirm": ("confirmed", "declined")}
_APPROVAL = ("approved", "skipped")


def _check_expected(
    step: str, expected: ExpectedSpec, written: Mapping[str, Any], document: yamlsafe.Document
) -> list[str]:
    """The expected answer and alternatives at ``step`` (the playbook's step as written):
    answers its decision can record."""
    action = str(written.get("action"))
    given = written.get("with")
    if action == "ask":
        choices = given.get("choices") if isinstance(given, Mapping) else None
        if not isinstance(choices, list) or any(
            not isinstance(c, str) or "{{" in c or "{%" in c for c in choices
        ):
            return []  # choices made at run time: nothing to check them against
        allowed, what = tuple(choices), "one of its choices"
    elif action in _ANSWERS:
        allowed, what = _ANSWERS[action], f"what {action} records"
    else:
        allowed, what = _APPROVAL, "what its approval records"
    problems = []
    answers: list[tuple[tuple[Any, ...], str]] = [(("answer",), expected.answer)]
    answers += [(("alternatives", n), a) for n, a in enumerate(expected.alternatives)]
    for at, answer in answers:
        if answer not in allowed:
            close = difflib.get_close_matches(answer, allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(
                f"{document.where(('expected', step, *at))}: expected.{step}: {answer!r} is "
                f"not {what} ({', '.join(allowed)}){hint}"
            )
    return problems


def _check_plain(scenario: Scenario, document: yamlsafe.Document) -> list[str]:
    """The hidden parts are shown as written: a template in one is a mistake."""
    problems = []
    dumped = scenario.model_dump(mode="json")
    queue: list[tuple[tuple[Any, ...], Any]] = [((n,), dumped.get(n)) for n in HIDDEN_FIELDS]
    while queue:
        at, value = queue.pop(0)
        if isinstance(value, dict):
            queue += [((*at, k), v) for k, v in value.items()]
        elif isinstance(value, list):
            queue += [((*at, n), v) for n, v in enumerate(value)]
        elif isinstance(value, str) and ("{{" in value or "{%" in value):
            problems.append(
                f"{document.where(at)}: {'.'.join(map(str, at))}: a hidden part is plain "
                "text, shown as written: no template"
            )
    return problems

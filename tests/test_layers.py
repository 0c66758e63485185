"""The architecture in DESIGN.md, kept honest: imports point downwards only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "kmsir"

#: Lower numbers are lower layers; a module may import its own layer or lower ones.
LAYERS = {
    "kmsir.errors": 0,
    "kmsir": 0,
    "kmsir.inert": 0,
    "kmsir.run": 0,
    "kmsir.evidence": 0,
    "kmsir.playbook": 0,
    "kmsir.playbook.values": 1,
    "kmsir.playbook.yamlsafe": 1,
    "kmsir.playbook.templating": 1,
    "kmsir.playbook.templating.limits": 1,
    "kmsir.playbook.templating.budget": 1,
    "kmsir.playbook.templating.formats": 1,
    "kmsir.playbook.templating.growth": 1,
    "kmsir.playbook.templating.environment": 1,
    "kmsir.resources": 1,
    "kmsir.evidence.bundle": 2,
    "kmsir.evidence.integrity": 2,
    "kmsir.evidence.anchoring": 2,
    "kmsir.evidence.journal": 2,
    "kmsir.evidence.locks": 2,
    "kmsir.evidence.signatures": 2,
    "kmsir.trail": 1,
    "kmsir.trail.match": 1,
    "kmsir.trail.findings": 1,
    "kmsir.trail.files": 1,
    "kmsir.trail.events": 1,
    "kmsir.trail.actors": 1,
    "kmsir.prompts": 2,
    "kmsir.playbook.model": 3,
    "kmsir.report": 3,
    "kmsir.report.context": 3,
    "kmsir.report.trail": 3,
    "kmsir.evidence.export": 3,
    "kmsir.signer": 3,
    "kmsir.aws": 3,
    "kmsir.actions.base": 4,
    "kmsir.actions.kmskeys": 5,
    "kmsir.keypolicy": 1,
    "kmsir.actions.kms_snapshot": 5,
    "kmsir.actions.kms_lifecycle": 5,
    "kmsir.actions.kms_rotation": 5,
    "kmsir.actions.kms_grants": 5,
    "kmsir.actions.kms_policy": 5,
    "kmsir.actions.cloudtrail": 5,
    "kmsir.actions.trail_s3": 5,
    "kmsir.actions.trail_query": 5,
    "kmsir.actions.human": 5,
    "kmsir.actions.iam": 5,
    "kmsir.actions": 6,
    "kmsir.sandbox.scenario": 6,
    "kmsir.sandbox.lookup": 6,
    "kmsir.sandbox.shim": 6,
    "kmsir.sandbox.history": 6,
    "kmsir.sandbox.injects": 6,
    "kmsir.sandbox": 6,
    "kmsir.run.engine": 7,
    "kmsir.run.steps": 7,
    "kmsir.run.resume": 7,
    "kmsir.run.plan": 7,
    "kmsir.cli": 8,
    "kmsir.cli.common": 8,
    "kmsir.cli.console": 8,
    "kmsir.cli.runs": 8,
    "kmsir.cli.bundles": 8,
    "kmsir.cli.trail": 8,
    "kmsir.cli.sandbox": 8,
    "kmsir.__main__": 9,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, *, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


MODULES = sorted(SRC.rglob("*.py"))


def test_every_module_has_a_layer() -> None:
    assert {module_name(p) for p in MODULES} == set(LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_imports_point_downwards(path: Path) -> None:
    name = module_name(path)
    for imported in imports(path):
        if imported.startswith("kmsir") and imported in LAYERS:
            assert LAYERS[imported] <= LAYERS[name], f"{name} imports {imported}"


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_heavy_and_ui_libraries_stay_where_they_belong(path: Path) -> None:
    name = module_name(path)
    everything = {i.split(".")[0] for i in imports(path)}
    top = {i.split(".")[0] for i in imports(path, top_level_only=True)}
    if name != "kmsir.cli" and not name.startswith("kmsir.cli."):
        assert "typer" not in everything and "rich" not in everything
    if name != "kmsir.prompts":
        assert "questionary" not in everything
    assert not top & {"boto3", "botocore", "moto"}, f"{name} imports AWS libraries at import time"
    if not name.startswith("kmsir.sandbox"):
        assert "moto" not in everything


def test_only_the_cli_prints() -> None:
    for path in MODULES:
        if module_name(path) == "kmsir.cli" or module_name(path).startswith("kmsir.cli."):
            continue
        tree = ast.parse(path.read_text())
        calls = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
        ]
        assert not calls, f"{module_name(path)} prints"

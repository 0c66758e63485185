"""The architecture in DESIGN.md, kept honest: imports point downwards only.

The layers and the forbidden imports are import-linter contracts in pyproject.toml
(``[tool.importlinter]``); CI runs ``lint-imports`` and so does this file, so the README's
test command catches a violation too. What import-linter cannot say is checked here: what a
module loads when it is imported (heavy libraries stay lazy), and that only the CLI prints.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "kmsir"

#: Runs import-linter on the package found first on PYTHONPATH, with this checkout's contracts.
LINT = (
    "import sys\n"
    "from importlinter.cli import lint_imports\n"
    "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))\n"
)


def lint_imports(src: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over the ``kmsir`` package in ``src`` (not an installed copy)."""
    return subprocess.run(
        [sys.executable, "-c", LINT, str(ROOT / "pyproject.toml")],
        capture_output=True,
        text=True,
        cwd=src,
        env={**os.environ, "PYTHONPATH": str(src)},
        timeout=120,
    )


def test_the_import_contracts_hold() -> None:
    done = lint_imports(SRC.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # a pure layer reaching for the top one
        ("trail/match.py", "import kmsir.cli", "imports point downwards"),
        # the report reaching for the action registry (lazily, inside a function)
        (
            "report/trail.py",
            "def _late() -> None:\n    import kmsir.actions\n",
            "the report reads a bundle",
        ),
        ("playbook/values.py", "from kmsir import prompts", "validating a playbook asks no one"),
        ("run/plan.py", "import questionary", "the runner neither parses arguments nor prompts"),
        ("evidence/calls.py", "import pydantic", "evidence is stdlib"),
        ("keypolicy.py", "import typer", "only the CLI draws"),
        ("aws/__init__.py", "import moto", "only the sandbox imports moto"),
    ],
)
def test_a_forbidden_import_breaks_a_contract(
    tmp_path: Path, module: str, line: str, broken: str
) -> None:
    """The contracts are not vacuous: each catches the import it forbids, in a copy of src/."""
    copy = tmp_path / "kmsir"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + f"\n{line}\n")
    done = lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert broken in done.stdout and "BROKEN" in done.stdout


def test_the_package_wide_contracts_name_every_top_level_module() -> None:
    """The layers contract is exhaustive: a new top-level module fails it until it has a
    layer. The "terminal" and "moto" contracts list their modules: a new one must be in them
    too, or it could draw or import moto unnoticed."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pytest's own dependency there
        import tomli as tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contracts = {c["id"]: c for c in config["contracts"]}
    top = {f"kmsir.{p.stem}" for p in SRC.glob("*.py")} | {
        f"kmsir.{p.parent.name}" for p in SRC.glob("*/__init__.py")
    }
    top -= {"kmsir.__init__", "kmsir.__main__"}
    assert set(contracts["terminal"]["source_modules"]) == top - {"kmsir.cli"}
    assert set(contracts["moto"]["source_modules"]) == top - {"kmsir.sandbox"}


def test_importing_the_report_loads_no_action_aws_or_pydantic() -> None:
    """``kmsir report`` re-renders a bundle with no AWS access: the report's import must not
    pull the action registry, the AWS SDK or pydantic in, even indirectly."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys\nimport kmsir.report\nprint(json.dumps(sorted(sys.modules)))",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(SRC.parent)},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert "kmsir.report" in loaded
    unwanted = [
        name
        for name in loaded
        if name == "kmsir.actions"
        or name.startswith("kmsir.actions.")
        or name.split(".")[0] in ("boto3", "botocore", "pydantic")
    ]
    assert not unwanted


# -- what import-linter cannot say -----------------------------------------------------------


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_time_imports(path: Path) -> set[str]:
    """The modules ``path`` imports when it is imported: everywhere but inside functions and
    ``if TYPE_CHECKING:`` blocks."""
    found: set[str] = set()
    pending: list[ast.AST] = [ast.parse(path.read_text())]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
        pending.extend(ast.iter_child_nodes(node))
    return found


MODULES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_aws_libraries_are_imported_lazily(path: Path) -> None:
    """boto3, botocore and moto load when AWS (or the sandbox) is used, never on import:
    ``kmsir --help`` and ``kmsir report`` stay fast."""
    top = {name.split(".")[0] for name in import_time_imports(path)}
    assert not top & {"boto3", "botocore", "moto"}, f"{module_name(path)} imports them on import"


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

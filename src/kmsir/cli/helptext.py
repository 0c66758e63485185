"""``--help`` that reads well: commands in the order a responder meets them, each with a
one-line example, and value names a person would write (``PLAYBOOK``, ``DIR``, ``md|html``)
instead of the types typer shows by default (``{PLAYBOOK}``, ``<path>``, ``<list[Path]>``).

Applied to each command as the group hands it out (``common._OneLineErrors``), so the
commands themselves stay plain typer functions.
"""

from __future__ import annotations

from typing import Any

#: ``kmsir --help``'s order: a run and what follows it, then reading evidence, then the rest.
ORDER = (
    "run",
    "resume",
    "status",
    "rollback",
    "plan",
    "validate",
    "report",
    "verify",
    "export",
    "approve",
    "deny",
    "audit",
    "cloudtrail",
    "sandbox",
    "tabletop",
    "demo",
    "scenarios",
    "actions",
    "schema",
    "permissions",
)

#: One example per command, shown under its help.
EXAMPLES = {
    "run": "kmsir run kms-key-compromise -i key=alias/payments --incident INC-42",
    "resume": "kmsir resume evidence/INC-42/20261201T101500Z-1a2b",
    "status": "kmsir status --evidence-dir evidence",
    "approve": "kmsir approve evidence/INC-42/20261201T101500Z-1a2b schedule-deletion "
    "--reason 'key leaked, confirmed with the payments team'",
    "deny": "kmsir deny evidence/INC-42/20261201T101500Z-1a2b schedule-deletion "
    "--reason 'the payments team still needs the key'",
    "rollback": "kmsir rollback evidence/INC-42/20261201T101500Z-1a2b --check",
    "plan": "kmsir plan kms-key-compromise -i key=alias/payments",
    "validate": "kmsir validate playbooks/*.yaml --strict",
    "report": "kmsir report evidence/INC-42/20261201T101500Z-1a2b --format html",
    "verify": "kmsir verify evidence/INC-42/20261201T101500Z-1a2b",
    "export": "kmsir export evidence/INC-42/20261201T101500Z-1a2b --out INC-42.tar.gz",
    "audit": "kmsir audit --sandbox posture-drift --format sarif > posture.sarif",
    "demo": "kmsir demo --scenario ransom-deletion",
    "scenarios": "kmsir scenarios",
    "actions": "kmsir actions kms.revoke-grants",
    "schema": "kmsir schema --out schema/playbook.schema.json",
    "permissions": "kmsir permissions kms-key-compromise -i key=arn:aws:kms:...:key/1234...",
    "serve": "kmsir sandbox serve --scenario rogue-grant --port 4566",
    "scan": "kmsir cloudtrail scan ./trail-logs --key arn:aws:kms:...:key/1234... --alias payments "
    "--since 7d --out events.jsonl",
}

#: The value an option takes, by its long name, where the type alone says too little.
METAVARS = {
    "--evidence-dir": "DIR",
    "--answers": "FILE",
    "--template": "FILE",
    "--out": "FILE",
    "--findings-out": "FILE",
    "--waivers": "FILE",
    "--incident": "ID",
    "--profile": "PROFILE",
    "--region": "REGION",
    "--scenario": "SCENARIO",
    "--sign-key": "KEY",
    "--key": "KEY",
    "--alias": "ALIAS",
    "--start-at": "STEP",
    "--step": "STEP",
    "--since": "TIME",
    "--until": "TIME",
    "--window": "DURATION",
    "--compare": "BUNDLE",
    "--port": "N",
    "--fail-on": "SEVERITY",
}


def order(names: list[str]) -> list[str]:
    """``names`` in ``ORDER``, any command not listed there after them, alphabetically."""
    known = [n for n in ORDER if n in names]
    return known + sorted(n for n in names if n not in ORDER)


def readable(command: Any, name: str) -> Any:
    """``command`` with value names a person would write and its example (once)."""
    if getattr(command, "_kmsir_readable", False):
        return command
    command._kmsir_readable = True
    example = EXAMPLES.get(name)
    if example and not command.epilog and "Example:" not in (command.help or ""):
        command.epilog = f"Example: {example}"
    for param in getattr(command, "params", ()):
        if param.param_type_name == "argument":
            param.__class__ = _argument_class(type(param))
        elif param.metavar is None and not getattr(param, "is_flag", False):
            long = next((o for o in param.opts if o.startswith("--")), None)
            if long in METAVARS:
                param.metavar = METAVARS[long]
    return command


_ARGUMENTS: dict[type, type] = {}


def _argument_class(base: type) -> type:
    """A subclass of typer's argument that shows ``PLAYBOOK`` / ``PATH...`` (its metavar,
    or its name in capitals) in the usage line and the argument list, with no type."""
    if base in _ARGUMENTS or base in _ARGUMENTS.values():
        return _ARGUMENTS.get(base, base)

    class Readable(base):  # type: ignore[misc]
        def _label(self) -> str:
            name = str(self.metavar or self.name or "").upper().replace("...", "")
            name = name.strip("[]")
            return name + ("..." if self.nargs != 1 else "")

        def _usage_display_name(self) -> str:
            return self._label() if self.required else f"[{self._label()}]"

        def _rich_display_name(self) -> str:
            return self._label()

        def display_type_rich(self, ctx: Any) -> str | None:
            return None

    _ARGUMENTS[base] = Readable
    return Readable

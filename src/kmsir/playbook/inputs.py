"""A playbook's inputs: how each is declared (``InputSpec``) and how a given value is checked
and converted to its type (``coerce_input``), for the command line, an answers file, a
person at a prompt and a declared default alike."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from kmsir.errors import UsageError
from kmsir.playbook import yamlsafe
from kmsir.playbook.values import duration_seconds, is_kms_key_reference, is_region

InputType = Literal[
    "string", "kms-key", "duration", "int", "bool", "account-id", "region", "list", "choice"
]


class InputSpec(BaseModel):
    """One playbook input: its type, whether it is required, its default."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    type: InputType = "string"
    description: str = ""
    required: bool = False
    default: Any = None
    choices: tuple[str, ...] | None = None


def coerce_input(name: str, spec: InputSpec, value: Any) -> Any:
    """Check and convert one input value against its spec; ``UsageError`` names the input."""

    def bad(why: str) -> UsageError:
        return UsageError(f"input {yamlsafe.shorten(name, 40)}: {why}")

    kind = spec.type
    if kind == "list":
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            return value
        raise bad("expected a list or a comma-separated string")
    if kind == "bool":
        if isinstance(value, bool):
            return value
        lowered = str(value).lower()
        if lowered in ("true", "yes", "1"):
            return True
        if lowered in ("false", "no", "0"):
            return False
        raise bad(f"{yamlsafe.shorten(value)} is not true/false")
    if kind == "int":
        try:
            return int(str(value))
        except ValueError:
            raise bad(f"{yamlsafe.shorten(value)} is not an integer") from None
    text = str(value).strip()
    if kind == "kms-key" and not is_kms_key_reference(text):
        raise bad(
            f"{yamlsafe.shorten(text)} is not a KMS key id, key ARN, alias name (alias/...) "
            "or alias ARN"
        )
    if kind == "duration":
        try:
            duration_seconds(text)
        except ValueError as exc:
            raise bad(str(exc)) from None
    if kind == "account-id" and not re.fullmatch(r"\d{12}", text):
        raise bad(f"{yamlsafe.shorten(text)} is not a 12-digit AWS account id")
    if kind == "region" and not is_region(text):
        raise bad(f"{yamlsafe.shorten(text)} is not an AWS Region name like eu-west-1")
    if kind == "choice" and spec.choices and text not in spec.choices:
        raise bad(f"{yamlsafe.shorten(text)} is not one of {_listed(spec.choices)}")
    return text


def _listed(choices: tuple[str, ...], most: int = 10) -> str:
    """Choices for a message: the first ``most``, each shortened, then how many more."""
    shown = ", ".join(yamlsafe.shorten(c, 40).strip("'\"") for c in choices[:most])
    return shown + (f" (and {len(choices) - most} more)" if len(choices) > most else "")

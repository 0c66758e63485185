"""The KmsirError hierarchy: every failure a user can meet, each with an exit code.

Only ``cli`` turns these into messages and exit codes; everything below raises them.
Stdlib only.
"""

from __future__ import annotations


class KmsirError(Exception):
    """Base of every expected failure; ``str()`` is the one line the user sees."""

    exit_code = 1


class UsageError(KmsirError):
    """Bad command-line usage or bad input value (exit 2)."""

    exit_code = 2


class PlaybookError(KmsirError):
    """A playbook (or scenario) that does not load or validate.

    Carries every problem found, each already formatted as ``file:line:col: message``.
    """

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class TemplateError(KmsirError):
    """A ``with:`` template or ``when:`` expression that fails to render or evaluate."""


class ActionError(KmsirError):
    """A step's action failed (AWS error, refused by a safety rail, bad parameter)."""


class AwsError(ActionError):
    """An AWS API call failed; carries the AWS error code and operation."""

    def __init__(self, message: str, *, code: str, operation: str) -> None:
        self.code = code
        self.operation = operation
        super().__init__(message)


class CheckModeRefusal(ActionError):
    """A mutating API call was refused because the run is in check mode."""


class Aborted(KmsirError):
    """The responder aborted the run, or declined a required confirmation."""


class MissingAnswer(UsageError):
    """A scripted or non-interactive run needed an answer nobody gave."""


class EvidenceError(KmsirError):
    """The evidence bundle could not be written or read."""


class TamperedError(EvidenceError):
    """``verify`` found the bundle altered; carries each problem found."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))

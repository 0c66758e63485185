"""One AWS API call as kmsir plans it, shows it, journals it and reports it.

A ``Call`` names the service, the operation and its parameters; once sent it also carries
the Region, AWS's request id, the HTTP status and the error code, and ``call`` (the number
pairing a state-changing call's intent, journaled before it is sent, with its result).
``describe`` is the one way a call is written out as text: ``plan``, the step preview, the
journal's decisions and the report all show calls through it, and approvals are compared by
the structured call (``same_call``), never by that text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import msgspec

#: Operations that only read, by botocore operation name prefix; everything else mutates.
READ_ONLY_PREFIXES = ("Describe", "Get", "List", "Lookup")
#: Operations that look read-only by name but change state or hand out material.
NOT_READ_ONLY = frozenset({"GetParametersForImport"})


def is_read_only(operation: str) -> bool:
    """True when a botocore operation name only reads state."""
    return operation.startswith(READ_ONLY_PREFIXES) and operation not in NOT_READ_ONLY


class Call(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One API call: planned (service, operation, params, an optional ``note`` such as
    "every page"), or made (with its Region and result)."""

    service: str
    operation: str
    params: dict[str, Any] = {}
    note: str | None = None
    region: str | None = None
    http_status: int | None = None
    request_id: str | None = None
    error_code: str | None = None
    #: Pairs a state-changing call's intent with its result, within one process.
    call: int | None = None
    #: The account the call went to, when a run spans several (``--accounts``/``--org``)
    #: and it is not the run's own; ``None``: the account the run signs in to.
    account: str | None = None

    @property
    def read_only(self) -> bool:
        """True when the operation only reads state."""
        return is_read_only(self.operation)

    @property
    def identity(self) -> tuple[str, str, str]:
        """What the call does, without its result: compared to match an approval."""
        return (
            self.service,
            self.operation,
            json.dumps(self.params, sort_keys=True, default=str, separators=(",", ":")),
        )


def describe(call: Call | str) -> str:
    """A call as one line of text: ``kms:DisableKey KeyId=1234abcd-...``.

    A string is a call as releases before 0.3 journaled it (already text)."""
    if isinstance(call, str):
        return call
    words = [f"{call.service}:{call.operation}"]
    words += [f"{name}={_value(value)}" for name, value in call.params.items()]
    if call.note:
        words.append(f"({call.note})")
    return " ".join(words)


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


def same_call(shown: Call, approved: Call | str) -> bool:
    """True when ``approved`` (from a journaled decision) is the call ``shown``; a decision
    journaled as text by an older release is compared with the call's text."""
    if isinstance(approved, str):
        return describe(shown) == approved
    return shown.identity == approved.identity


def covered(shown: Iterable[Call], approved: Iterable[Call | str]) -> bool:
    """True when every call in ``shown`` was approved before (resume asks again otherwise)."""
    earlier = list(approved)
    return all(any(same_call(call, was) for was in earlier) for call in shown)

"""Explicit Deny statements of key policies, enforced as AWS enforces them.

moto checks Deny statements for DescribeKey only, and ignores their principals and conditions:
a quarantine exempting break-glass roles would lock everyone out there, and leave every other
operation open. Here every operation naming a key is checked against its policy, for the
caller moto's STS sees, with principals and ``aws:PrincipalArn`` exemptions honoured
(``kmsir.keypolicy.explicit_deny``).
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable
from typing import Any

from kmsir.sandbox.shim.common import error, find_key


def _caller_arn(response: Any) -> str:
    """Who is calling, as moto's STS would answer GetCallerIdentity for these credentials."""
    from moto.sts.models import sts_backends

    backend = sts_backends[response.current_account][response.partition]
    return str(backend.get_caller_identity(response.get_access_key(), response.region)[1])


#: Operations whose access IAM alone decides (no key policy is consulted).
_IAM_ONLY = frozenset(
    {
        "CreateKey",
        "ListKeys",
        "ListAliases",
        "GenerateRandom",
        "ListRetirableGrants",
        "DescribeCustomKeyStores",
    }
)
#: The KMS request being handled on this thread, so backend wrappers can check the caller.
_REQUEST = threading.local()


def current_response() -> Any:
    """The KMS request being handled on this thread (moto's ``KmsResponse``), or ``None``."""
    return getattr(_REQUEST, "response", None)


def deny_check(response: Any, key_ref: str, action: str) -> None:
    """Refuse ``action`` on the key ``key_ref`` names if its policy explicitly denies it to
    the caller of ``response``; a key or policy that cannot be read is left to moto."""
    from kmsir.keypolicy import explicit_deny

    try:
        key = find_key(response.kms_backend, key_ref, aliases=True)
        policy = json.loads(key.policy)
    except Exception:
        return
    if not isinstance(policy, dict):
        return
    caller = _caller_arn(response)
    sid = explicit_deny(policy, action, caller_arn=caller)
    if sid is not None:
        raise error(
            "AccessDeniedException",
            f"User: {caller} is not authorized to perform: {action} on resource: {key.arn} "
            f"with an explicit deny in a resource-based policy ({sid})",
        )


def enforce_explicit_deny(original: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse a key operation that an explicit Deny of the key policy applies to (moto's
    ``call_action``, for KMS only), before moto handles it. Decrypt and ReEncrypt, which may
    name no key, are checked by the backend wrapper (``key_state.decrypt``) once the ciphertext
    names it: the request is kept for it meanwhile."""

    @functools.wraps(original)
    def wrapper(self: Any) -> Any:
        action = self._get_action()
        if action not in _IAM_ONLY:
            for param, iam_action in (
                ("KeyId", f"kms:{action}"),
                ("DestinationKeyId", "kms:ReEncryptTo"),
            ):
                value = self._get_param(param)
                if isinstance(value, str):
                    deny_check(self, value, iam_action)
        _REQUEST.response = self
        try:
            return original(self)
        finally:
            _REQUEST.response = None

    return wrapper


def no_naive_policy_check(original: Callable[..., Any]) -> Callable[..., Any]:
    """moto's own Deny check ignores principals; ``enforce_explicit_deny`` replaces it."""

    @functools.wraps(original)
    def wrapper(self: Any, key_id: str, action: str) -> None:
        return None

    return wrapper

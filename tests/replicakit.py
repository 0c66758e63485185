"""What the replicas tests share: the policy-tampering world, whose HR key is a multi-Region
primary in eu-west-1 with a replica in us-east-1, and reading a key's state and policy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kmsir.actions.base import Done
from kmsir.sandbox import Sandbox
from kmsir.sandbox import scenario as scenarios

EAST = "us-east-1"


@contextmanager
def hr_world() -> Iterator[tuple[Sandbox, str, str]]:
    """The policy-tampering world: the sandbox, the HR key's id and its replica's ARN."""
    with Sandbox(scenarios.load("policy-tampering")) as sandbox:
        key = sandbox.keys["hr"]
        (replica,) = key["replicas"]
        yield sandbox, key["id"], replica


def state(sandbox: Sandbox, key: str, region: str | None = None) -> str:
    kms = sandbox.session().client("kms", region_name=region or sandbox.region)
    return str(kms.describe_key(KeyId=key)["KeyMetadata"]["KeyState"])


def policy(sandbox: Sandbox, key: str, region: str | None = None) -> Any:
    kms = sandbox.session().client("kms", region_name=region or sandbox.region)
    return json.loads(kms.get_key_policy(KeyId=key, PolicyName="default")["Policy"])


def done(step: str, params: dict[str, Any], outcome: Any) -> Done:
    return Done(
        step_id=step,
        params=params,
        outputs=outcome.outputs,
        before=outcome.before,
        after=outcome.after,
        bundle="/b",
    )

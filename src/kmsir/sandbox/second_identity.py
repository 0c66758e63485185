"""The sandbox's second person: an IAM user who can approve a step (the two-person rule).

When a sandbox run asks for approvals (``run --require-approval``, or a scenario with
``approvals: required``), the world gets an IAM user ``second-responder`` with an access key,
in the scenario's account. The waiting screen hands the approver's command out with that
user's dummy credentials in front of it (``approver_env``); the run sends the approver's
signed ``sts:GetCallerIdentity`` to moto, which names the user by the access key id alone
(moto checks no signature: in the sandbox, whoever holds the key id is the second person).

The user is made with moto's random generator seeded on its own and then put back as it was:
its ids are the same in every run of the scenario, and the ids of everything made after it
are those a run without it gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kmsir.sandbox import Sandbox

#: The second identity's IAM user name.
NAME = "second-responder"


@dataclass(frozen=True)
class SecondIdentity:
    """The IAM user who approves in the sandbox, and its access key (dummy: moto's)."""

    name: str
    arn: str
    access_key_id: str
    secret_access_key: str

    def environment(self) -> dict[str, str]:
        """The variables that make ``kmsir approve`` sign as this user."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }


def seed(sandbox: Sandbox) -> SecondIdentity:
    """Create the second identity in ``sandbox``'s account (while it seeds)."""
    from moto.moto_api._internal import mock_random

    state = mock_random.getstate()
    mock_random.seed(f"{sandbox.scenario.seed}/{NAME}")
    try:
        iam = sandbox.session().client("iam")
        user = iam.create_user(
            UserName=NAME, Tags=[{"Key": "kmsir:sandbox", "Value": "second person (SIMULATED)"}]
        )["User"]
        key = iam.create_access_key(UserName=NAME)["AccessKey"]
    finally:
        mock_random.setstate(state)
    return SecondIdentity(
        name=NAME,
        arn=str(user["Arn"]),
        access_key_id=str(key["AccessKeyId"]),
        secret_access_key=str(key["SecretAccessKey"]),
    )

"""A run waiting for a second person, for tests of the two-person rule (issue 21): two IAM
users in a moto account (each with an access key), and a bundle whose step waits for an
approval, with the run's side of the exchange played by hand (``WaitingRun.answer_inbox``)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import boto3
import msgspec

from kmsir.aws import ClientFactory
from kmsir.aws.approver import identify
from kmsir.evidence import approvals, entries
from kmsir.evidence.journal import BundleWriter

from .journalkit import run_started

REGION = "eu-west-1"


def user(clients: ClientFactory, name: str) -> tuple[boto3.Session, str, str]:
    """An IAM user with an access key: a session with its credentials, its ARN, its secret."""
    iam = clients.client("iam")
    arn = iam.create_user(UserName=name)["User"]["Arn"]
    key = iam.create_access_key(UserName=name)["AccessKey"]
    session = boto3.Session(
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
        region_name=REGION,
    )
    return session, arn, key["SecretAccessKey"]


def sts_url(clients: ClientFactory) -> str:
    """The endpoint of the run's STS client: what an approver signs for."""
    return str(clients.client("sts").meta.endpoint_url)


def two_users(clients: ClientFactory) -> dict[str, Any]:
    """alice and bob (each ``user``'s triple), the clients and the STS endpoint."""
    alice = user(clients, "alice")
    bob = user(clients, "bob")
    return {"clients": clients, "alice": alice, "bob": bob, "url": sts_url(clients)}


STEP = "delete"
PREVIEW = {
    "step": STEP,
    "title": "Schedule the key's deletion",
    "action": "kms.schedule-deletion",
    "calls": [
        {
            "service": "kms",
            "operation": "ScheduleKeyDeletion",
            "params": {"KeyId": "1234abcd-0000-4000-8000-000000000001", "PendingWindowInDays": 30},
        }
    ],
    "target": "key 1234abcd-0000-4000-8000-000000000001 (alias/payments)",
    "state": "Enabled, 2 grants",
    "inverse": "kms.cancel-deletion",
    "impact": "role/payments-app loses Decrypt",
    "notes": ["the key is a multi-Region primary"],
    "details": [
        "  parameters (rendered):",
        '    key: "alias/payments"',
        "    pending_window_days: 30",
        "  IAM permissions: kms:ScheduleKeyDeletion",
        "  on error: stop",
        "  when: steps.scope.confirmed",
    ],
}


class WaitingRun:
    """A run's bundle whose step ``delete`` waits for one approval, and the run's side of the
    exchange played by hand (``answer_inbox``: what the run does with each new answer file)."""

    def __init__(self, evidence: Path, clients: ClientFactory, **request: Any) -> None:
        raw = b"id: x\ntitle: X\nsteps: []\n"
        self.writer = BundleWriter.create(evidence, "INC-7", playbook_raw=raw)
        self.bundle = self.writer.root
        self.clients = clients
        self.sts_url = sts_url(clients)
        self.handled: set[str] = set()
        self.writer.append(
            run_started(
                run_id=self.writer.run_id,
                incident="INC-7",
                playbook={"id": "x", "sha256": hashlib.sha256(raw).hexdigest()},
            )
        )
        fields: dict[str, Any] = {
            "request": "0123456789abcdef",
            "count": 1,
            "timeout_s": 1800,
            "until": "2026-12-01T10:30:00Z",
            "sts_url": self.sts_url,
            "sts_region": REGION,
            "preview": PREVIEW,
            "preview_sha256": approvals.preview_sha256(PREVIEW),
            **request,
        }
        self.writer.append(entries.ApprovalRequested(**fields), step=STEP)

    def answer_inbox(self, refuse: str | None = None) -> None:
        """The run's look at its inbox: each new answer's binding checked, its identity taken
        from STS, and what it made of it journaled (accepted, or refused with ``refuse``)."""
        for item in approvals.read_answers(self.bundle, skip=self.handled):
            self.handled.add(item.id)
            answer = item.answer
            assert answer is not None and answer.signed_binding == answer.binding
            found = identify(self.clients, msgspec.to_builtins(answer.signed), self.sts_url)
            identity = {"arn": found.arn, "account": found.account, "user_id": found.user_id}
            record: Any = (
                entries.ApprovalRefused(
                    answer=item.id, why=refuse, request=answer.request, identity=identity
                )
                if refuse
                else entries.ApprovalGiven(
                    answer=item.id,
                    request=answer.request,
                    decision=answer.decision,
                    identity=identity,
                    sts_request_id=found.request_id,
                    reason=answer.reason,
                    saw=answer.saw,
                    answered=answer.answered,
                )
            )
            self.writer.append(record, step=STEP)

    def inbox(self) -> list[str]:
        folder = approvals.inbox(self.bundle)
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

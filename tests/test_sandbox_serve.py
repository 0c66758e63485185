"""kmsir sandbox serve: a scenario's world as a loopback moto server, used by the AWS CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import served, served_cli_env

AWS = shutil.which("aws", path=str(Path(sys.executable).parent)) or shutil.which("aws")


@pytest.mark.skipif(
    AWS is None and not os.environ.get("CI"), reason="needs the AWS CLI (pip install awscli)"
)
def test_the_aws_cli_works_against_a_served_scenario(tmp_path: Path) -> None:
    assert AWS is not None
    with served("rogue-grant", tmp_path) as exported:
        assert exported["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")  # never 0.0.0.0
        env = served_cli_env(exported)

        def aws(*args: str) -> dict:  # type: ignore[type-arg]
            done = subprocess.run(
                [AWS, *args, "--output", "json"], env=env, capture_output=True, text=True
            )
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)  # type: ignore[no-any-return]

        grants = aws("kms", "list-grants", "--key-id", "alias/payments-prod")["Grants"]
        grantees = {g["GranteePrincipal"] for g in grants}
        assert "arn:aws:iam::444455556666:role/backup-sync" in grantees  # the rogue grant
        created = aws(
            "cloudtrail",
            "lookup-events",
            "--lookup-attributes",
            "AttributeKey=EventName,AttributeValue=CreateGrant",
        )["Events"]
        assert [e["EventName"] for e in created] == ["CreateGrant"]
        # the sandbox's fidelity applies to other clients too: a bad window is refused
        refused = subprocess.run(
            [
                AWS,
                "kms",
                "schedule-key-deletion",
                "--key-id",
                grants[0]["KeyId"],
                "--pending-window-in-days",
                "3",
            ],
            env=env,
            capture_output=True,
            text=True,
        )
        assert refused.returncode != 0 and "ValidationException" in refused.stderr

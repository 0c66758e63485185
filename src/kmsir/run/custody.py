"""Who runs kmsir, with what, from where: the chain of custody recorded at the start of a run
(``run-started``) and at each resume (``run-resumed``), and the run's own metadata.

The operator is the AWS identity ``sts:GetCallerIdentity`` names, never a name typed by hand,
with the local user beside it.
"""

from __future__ import annotations

import getpass
import platform
import socket
import sys
from collections.abc import Mapping
from typing import Any

from kmsir import __version__
from kmsir.actions.base import RunInfo
from kmsir.aws import ClientFactory, aws_errors
from kmsir.evidence.entries import RunStarted
from kmsir.playbook.model import LoadedPlaybook
from kmsir.run.steps import RunOptions


def operator(clients: ClientFactory) -> dict[str, Any]:
    """The AWS identity running kmsir (``sts:GetCallerIdentity``)."""
    sts = clients.client("sts")
    with aws_errors("GetCallerIdentity (who is running this?)", service="sts"):
        identity = sts.get_caller_identity()
    return {
        "arn": identity.get("Arn"),
        "account": identity.get("Account"),
        "user_id": identity.get("UserId"),
    }


def custody(operator: dict[str, Any], options: RunOptions) -> dict[str, Any]:
    """Who handles the evidence, with what, where: recorded at start and at each resume."""
    import boto3
    import botocore

    return {
        "tool": {"name": "kmsir", "version": __version__},
        "versions": {
            "python": platform.python_version(),
            "boto3": boto3.__version__,
            "botocore": botocore.__version__,
            "platform": sys.platform,
        },
        "operator": {**operator, "local_user": _local_user()},
        "host": socket.gethostname(),
        "location": str(options.evidence_dir.resolve()),
    }


def run_started(
    loaded: LoadedPlaybook,
    inputs: Mapping[str, Any],
    options: RunOptions,
    info: RunInfo,
    operator: dict[str, Any],
    region: str | None,
) -> RunStarted:
    """The ``run-started`` record: custody, the playbook that ran, the run's metadata."""
    playbook = loaded.playbook
    return RunStarted(
        **custody(operator, options),
        playbook={
            "id": playbook.id,
            "title": playbook.title,
            "version": playbook.version,
            "severity": playbook.severity,
            "sha256": loaded.sha256,
            "path": loaded.path.name,
        },
        incident=options.incident_id,
        run_id=info.run_id,
        inputs=dict(inputs),
        mode=options.mode,
        simulated=info.simulated,
        scenario=options.scenario,
        region=region,
        require_approval=options.require_approval,
        **dict(options.extra),
    )


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"

"""Runs kmsir's CLI with a kill switch and a call counter, for the crash tests.

    python tests/crashkit.py demo --evidence-dir DIR

Environment:
- ``CRASHKIT_KILL``: where to SIGKILL the process, ``KIND:N`` for the N-th occurrence:
  ``entry`` (right after a journal line is fsync'd), ``torn`` (half-way through writing
  journal line N), ``call`` (a state-changing AWS call answered, before kmsir journals its
  result) or ``artifact`` (an artifact's bytes are in place, its journal line is not).
  Empty: never.
- ``CRASHKIT_CALLS``: a file that gets one line per state-changing AWS call sent, written by a
  botocore ``before-call`` hook registered after kmsir's own (which journals the intent).

AWS's quotas are kept on a schedule that never waits, as in the in-process tests
(``_unpaced`` in tests/conftest.py): a kill point is counted, not timed, and 2 LookupEvents a
second made each run and each resume wait more than a second for nothing.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from kmsir import aws, cli
from kmsir.aws import pacing
from kmsir.evidence import journal as writer

pacing.PACING = pacing.Pacing(pacing.QUOTAS, sleep=lambda _: None)

KIND, _, AT = os.environ.get("CRASHKIT_KILL", "").partition(":")
CALLS = os.environ.get("CRASHKIT_CALLS")
seen = {"entry": 0, "call": 0, "artifact": 0}


def tick(kind: str) -> None:
    seen[kind] += 1
    if kind == KIND and seen[kind] == int(AT):
        os.kill(os.getpid(), signal.SIGKILL)


def log_call(model: Any, context: dict[str, Any], **_: Any) -> None:
    if CALLS and not aws.is_read_only(model.name):
        params = context.get("kmsir_params", {})
        line = json.dumps([model.name, params], sort_keys=True, default=str) + "\n"
        fd = os.open(CALLS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def answered(model: Any, **_: Any) -> None:
    if not aws.is_read_only(model.name):
        tick("call")


original_install = aws.ClientFactory._install_hooks
original_append = writer.BundleWriter.append
original_write_new = writer.write_new


def install(self: aws.ClientFactory, client: Any) -> None:
    original_install(self, client)
    client.meta.events.register_last("before-call", log_call)
    client.meta.events.register_first("after-call", answered)


def append(self: writer.BundleWriter, *args: Any, **kwargs: Any) -> dict[str, Any]:
    if KIND == "torn" and seen["entry"] + 1 == int(AT):
        write = os.write

        def half_then_die(fd: int, data: Any) -> int:
            write(fd, bytes(data)[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
            return 0

        os.write = half_then_die
    entry = original_append(self, *args, **kwargs)
    tick("entry")
    return entry


def write_new(path: Any, data: bytes) -> None:
    original_write_new(path, data)
    if "/artifacts/" in str(path):
        tick("artifact")


aws.ClientFactory._install_hooks = install  # type: ignore[method-assign]
writer.BundleWriter.append = append  # type: ignore[method-assign]
writer.write_new = write_new

if __name__ == "__main__":
    sys.argv[0] = "kmsir"
    cli.main()

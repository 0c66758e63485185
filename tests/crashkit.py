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

    python tests/crashkit.py --serve

A fork server, for the crash tests' many runs (each a fresh ``python`` would spend most of
its CPU importing kmsir, boto3 and moto and loading their models again): it reads one request
a line on stdin (JSON: ``argv``, ``cwd``, ``env``, ``stdout`` and ``stderr`` files, ``fork``)
and runs the CLI as above with that environment (``CRASHKIT_KILL`` and ``CRASHKIT_CALLS``
included), its output in the two files. ``fork``: in a child process forked for the request,
which kills itself at its kill point like the process above; it answers ``{"pid": ...}`` when
the child is started, then ``{"returncode": ...}`` (``-9``: killed). Without ``fork``, in the
server itself: the first run warms every lazy import and cache, so that the children forked
after it start where a run starts, not where a process does. A child shares nothing with
another run but what a process has before its run starts: each one's world is seeded anew
and each resume reads only the bundle on disk.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import signal
import sys
import traceback
from typing import Any

from kmsir import aws, cli
from kmsir.aws import pacing
from kmsir.evidence import journal as writer

pacing.PACING = pacing.Pacing(pacing.QUOTAS, sleep=lambda _: None)

KIND = AT = ""
CALLS: str | None = None
seen = {"entry": 0, "call": 0, "artifact": 0}


def arm() -> None:
    """Read the kill point and the call log from the environment; nothing counted yet."""
    global KIND, AT, CALLS
    KIND, _, AT = os.environ.get("CRASHKIT_KILL", "").partition(":")
    CALLS = os.environ.get("CRASHKIT_CALLS")
    seen.update(dict.fromkeys(seen, 0))


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


def run(argv: list[str]) -> int:
    """``kmsir ARGV`` as its own process would run it (armed from the environment): the exit
    code it would leave with."""
    arm()
    sys.argv = ["kmsir", *argv]
    try:
        cli.main()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def run_in(request: dict[str, Any]) -> int:
    """``run`` with the request's folder, environment and output files (each put back after
    it; a forked child leaves them as they are)."""
    cwd, environ = os.getcwd(), dict(os.environ)
    saved = [os.dup(fd) for fd in (1, 2)]
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, name in ((1, "stdout"), (2, "stderr")):
            out = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(out, fd)
            os.close(out)
        return run(request["argv"])
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environ)


def serve() -> None:
    """The fork server (see the module's docstring): requests on stdin, answers on the
    stdout it was started with; what runs print goes to their own files."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    quiet = os.open(os.devnull, os.O_RDWR)
    os.dup2(quiet, 1)
    for line in sys.stdin:
        request = json.loads(line)
        if not request.get("fork"):
            answers.write(json.dumps({"returncode": run_in(request)}) + "\n")
            continue
        # nothing of the server's own heap needs collecting in a child: keep it out of the
        # children's collections (and their pages shared)
        gc.collect()
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.dup2(quiet, 0)  # a run reads no requests
                code = run_in(request)
                atexit._run_exitfuncs()  # what a process's exit runs
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        answers.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        answers.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        arm()
        sys.argv[0] = "kmsir"
        cli.main()

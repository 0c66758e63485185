"""``kmsir sandbox serve``: a scenario's world as a moto server for any other AWS client."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from kmsir.cli.common import app, err, handled

sandbox_app = typer.Typer(help="The embedded sandbox (moto), for exercises and other tools.")
app.add_typer(sandbox_app, name="sandbox")


@sandbox_app.command("serve")
@handled
def serve(
    scenario: Annotated[str, typer.Option("--scenario", help="Scenario name or file.")],
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: any free one).")] = 0,
) -> None:
    """Serve a scenario as a moto server on 127.0.0.1 until Ctrl-C; print the environment
    variables (endpoint, dummy credentials, Region) that point any AWS client at it."""
    import shlex

    from kmsir.errors import UsageError
    from kmsir.sandbox import Sandbox
    from kmsir.sandbox import scenario as scenarios

    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: not a port number")
    world = scenarios.load(scenario)
    with Sandbox(world) as sandbox:
        try:
            server, endpoint = sandbox.serve(port)
        except OSError as exc:
            raise UsageError(f"--port {port}: cannot listen on 127.0.0.1: {exc.strerror}") from None
        try:
            err(f"kmsir sandbox: scenario {world.id} (SIMULATED) served at {endpoint}")
            keys = [f"{n} {k['id']} {k['alias']}".strip() for n, k in sandbox.keys.items()]
            err(f"keys: {', '.join(keys)}")
            trail = f"trail {sandbox.trail_name}: " if sandbox.trail_name else ""
            err(
                f"CloudTrail: {trail}what any client changes, or uses a key for, is logged "
                f"(lookup-events; s3://{sandbox.trail_bucket}/AWSLogs/)"
            )
            for name, value in sandbox.client_environment(endpoint).items():
                print(f"export {name}={shlex.quote(value)}", flush=True)
            err("point any AWS client at it with the lines above; Ctrl-C stops it")
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            err("kmsir sandbox: stopped")
        finally:
            server.stop()

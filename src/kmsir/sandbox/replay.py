"""Rebuilding a run's sandbox world: its journaled changes re-applied to the re-seeded world.

A resumed or rolled-back sandbox run starts from its scenario again (same seed, same clock);
what the run had changed is then re-applied from its journal, in journal order: each
state-changing call AWS did not refuse, and each inject. Two kinds of call cannot be sent
again as journaled: grant ids of older releases' journals (mapped to the ids the re-seeded
world has, ``shim.grants.journaled_params``), and ImportKeyMaterial, whose wrapped bytes only
the original world's wrapping key opened and are not journaled anyway (the material file is
imported again, if it still has the sha256 the journal recorded).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kmsir.evidence.bundle import sha256_hex
from kmsir.evidence.calls import Call
from kmsir.evidence.view import RunView
from kmsir.sandbox import recorder, seed_kms, shim

if TYPE_CHECKING:
    from kmsir.sandbox import Sandbox


def replay(sandbox: Sandbox, view: RunView) -> dict[str, Any]:
    """Re-apply the state-changing calls and the injects ``view``'s journal records, in
    journal order, to ``sandbox``'s re-seeded world.

    A call whose intent was journaled but whose result was not (the process died in between)
    is re-applied as if it reached AWS; one that AWS refused is not. Each call re-applied is
    recorded in the sandbox's trail at its journal entry's moment, with the ids it had when
    first made (``recorder``); the refused calls, and the run's reads and cryptographic calls
    (not journaled), have no record in the rebuilt world. An inject whose step succeeded but
    that was never journaled fires now, before the run goes on, and is listed under
    ``injects`` (the engine journals this result in ``run-resumed``).
    """
    from botocore import xform_name
    from botocore.exceptions import ClientError

    session = sandbox.session()
    replayed, refused, injects = 0, [], 0
    for change in view.world:
        intent = change.record
        if not isinstance(intent, Call):
            injects += sandbox.injects.refire(intent)
            continue
        client = _client(session, intent.service, intent.region)
        with recorder.acting(moment=_moment(change.ts)):
            if intent.operation == "ImportKeyMaterial":
                error = reimport(client, intent, view, change.seq, change.step)
                if error is None:
                    replayed += 1
                else:
                    refused.append(f"ImportKeyMaterial: {error}")
                continue
            params = shim.grants.journaled_params(  # grant ids of older releases' journals
                intent.operation, intent.params, sandbox.account, intent.region or sandbox.region
            )
            try:
                getattr(client, xform_name(intent.operation))(**params)
            except ClientError as exc:
                refused.append(f"{intent.operation}: {exc.response['Error'].get('Code')}")
            except Exception as exc:  # moto may not implement it: say so and go on
                refused.append(f"{intent.operation}: {type(exc).__name__}")
            else:
                replayed += 1
    result: dict[str, Any] = {"replayed": replayed, "refused": refused}
    if injects:
        result["injects_replayed"] = injects
    if view.meta is not None and view.mode != "check":
        late = [sandbox.injects.fire(n, sandbox.clock()) for n in sandbox.injects.owed(view)]
        if late:
            result["injects"] = late
    return result


def _client(session: Any, service: str, region: str | None) -> Any:
    """A client configured as ``kmsir.aws.ClientFactory`` configures the run's (the same user
    agent: the sandbox's trail records the replayed calls as it recorded the run's), without
    the factory's hooks: replaying is not the run making calls (no intents, no pacing)."""
    from kmsir.aws import client_config

    return session.client(service, region_name=region, config=client_config())


def _moment(ts: str | None) -> datetime | None:
    """A journal entry's time (``None``: none readable, the sandbox's clock stands)."""
    try:
        return datetime.fromisoformat(str(ts).replace("Z", "+00:00"))
    except ValueError:
        return None


def reimport(client: Any, intent: Call, view: RunView, seq: int, step: str | None) -> str | None:
    """Replay a journaled ImportKeyMaterial: the journal keeps the material file's path and
    sha256 (never the material), so the same file is imported again if it still has that
    hash. ``None`` when done, else why not."""
    from botocore.exceptions import ClientError

    read = [m.record for m in view.input_files if m.step == step and m.seq < seq]
    if not read:
        return "no material file journaled for its step"
    path, digest = read[-1].path, read[-1].sha256
    try:
        material = Path(path).read_bytes()
    except OSError as exc:
        return f"material file {path}: {exc.strerror or exc}"
    if sha256_hex(material) != digest:
        return f"material file {path} has changed since the run (sha256 differs)"
    expiry = {k: v for k, v in intent.params.items() if k in ("ExpirationModel", "ValidTo")}
    try:
        seed_kms.import_bytes(client, str(intent.params.get("KeyId")), material, expiry)
    except ClientError as exc:
        return str(exc.response["Error"].get("Code"))
    return None

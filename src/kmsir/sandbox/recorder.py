"""The sandbox's own CloudTrail: every call that changes its world, or uses a key, recorded.

Installed around moto's request handling (``BaseResponse._dispatch``, which both the
in-process mock and ``sandbox serve`` go through, outside the KMS shim's ``call_action``
wrappers whatever the install order, and S3's own ``bucket_response``), so whoever calls
(kmsir, the AWS CLI, an inject) leaves a record. Once moto has read a request
(``setup_class``), what only the world before the call can tell is noted: the trails as they
were (``trail_delivery``: a StopLogging is delivered by the trail it stops) and the key an
alias pointed to (a DeleteAlias record names it). Once the request is answered (or refused
with an AWS error), a call ``trail_calls.recorded`` names becomes a CloudTrail record as AWS
writes it (``trail_record``). Reads are left out: AWS logs them, but the sandbox's trail
keeps to what changes the world and uses keys.

Each record goes to LookupEvents (``lookup.add_events``: the event history, whatever the
trails say) and to the bucket of every trail that delivers it (``trail_delivery``), as a
gzipped ``{"Records": [...]}`` file of its own, written into moto's S3 backend directly (no
client: nothing recursive, nothing recorded). Event and request ids are derived from the
scenario's seed and what the call was (its n-th occurrence), so the same run gives the same
trail; the client sees the record's ``requestID`` as the request id.

A resumed run's rebuilt world (``replay``) records the journaled calls it re-applies, at
their journal entries' moments and with the ids they first had, and nothing else: its trail
holds the scenario's history and the records of the journaled calls AWS did not refuse.
Calls AWS refused are not re-made (their records are missing), nor are the run's
cryptographic calls and reads (the journal keeps only changes), nor the calls of anyone else
(the AWS CLI against ``sandbox serve``); an inject's calls are recorded again as it fires
again (``Injects.refire``).

Nothing is recorded until the sandbox ``attach``-es its ``Trail`` (after seeding: the
scenario's history is the story) or after it ``detach``-es it. ``acting`` makes the calls of
one thread stand for someone else (an inject's actor) or happen at another moment (a journal
entry's, when a world is rebuilt).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kmsir.sandbox import lookup, trail_calls, trail_delivery, trail_record
from kmsir.sandbox.trail_calls import S3_DATA_CALLS, recorded

__all__ = ["S3_DATA_CALLS", "TRAIL_NAME", "Acting", "Trail", "acting", "add", "recorded"]

#: The trail the sandbox seeds when its scenario declares none.
TRAIL_NAME = "kmsir-sandbox-trail"
_INSTALLED = "_kmsir_recorder"
_log = logging.getLogger(__name__)


@dataclass
class Trail:
    """What the recorder needs of the sandbox world it records."""

    account: str
    region: str
    clock: Callable[[], datetime]
    seed: str
    counts: dict[str, int] = field(default_factory=dict)
    #: Calls that could not be recorded (the call itself was answered): what went wrong.
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Acting:
    """Whom, and when, the calls of a thread stand for (``acting``)."""

    identity: dict[str, Any] | None = None
    skip: frozenset[str] = frozenset()
    moment: datetime | None = None
    source_ip: str | None = None
    user_agent: str | None = None


@dataclass
class _Before:
    """What the world was before the call being answered (``setup_class`` notes it)."""

    noted: bool = False
    action: str | None = None
    trails: dict[str, trail_delivery.TrailState] | None = None
    alias_keys: tuple[str, ...] = ()


_current: Trail | None = None
_local = threading.local()


def attach(trail: Trail) -> None:
    """Start recording into ``trail`` (one sandbox world a process at a time)."""
    global _current
    _current = trail


def detach(trail: Trail) -> None:
    """Stop recording into ``trail`` (another attached since is left alone)."""
    global _current
    if _current is trail:
        _current = None


@contextlib.contextmanager
def acting(
    identity: dict[str, Any] | None = None,
    *,
    skip: frozenset[str] = frozenset(),
    moment: datetime | None = None,
    source_ip: str | None = None,
    user_agent: str | None = None,
) -> Iterator[None]:
    """While inside, this thread's calls are recorded as ``identity``'s (a ``userIdentity``;
    ``None``: the caller's) at ``moment`` (``None``: the sandbox's clock), from ``source_ip``
    with ``user_agent`` when given; calls named in ``skip`` are not recorded at all."""
    previous = getattr(_local, "acting", None)
    _local.acting = Acting(identity, frozenset(skip), moment, source_ip, user_agent)
    try:
        yield
    finally:
        _local.acting = previous


def install() -> None:
    """Wrap moto's ``BaseResponse._dispatch`` and ``S3Response.bucket_response`` (S3 has its
    own dispatch; its key-level calls are all data calls), and ``BaseResponse.setup_class``
    (where the world before a call is noted), idempotently; fail loudly if moto moved them."""
    from moto.core.responses import BaseResponse
    from moto.s3.responses import S3Response

    trail_delivery.install()
    wrappers = (
        (BaseResponse, "_dispatch", _around_dispatch),
        (S3Response, "bucket_response", _around_dispatch),
        (BaseResponse, "setup_class", _noting_before),
    )
    done = {cls for cls in (BaseResponse, S3Response) if getattr(cls, _INSTALLED, False) is cls}
    for cls, name, wrap in wrappers:
        if cls in done:  # its own mark, not one it inherits
            continue
        original = vars(cls).get(name)
        if not callable(original):
            raise RuntimeError(
                f"moto's {cls.__name__} no longer defines {name}: the sandbox's CloudTrail "
                "recorder (kmsir.sandbox.recorder) must be reviewed for this moto version"
            )
        setattr(cls, name, wrap(original))
    for cls in (BaseResponse, S3Response):
        setattr(cls, _INSTALLED, cls)


def _around_dispatch(original: Callable[..., Any]) -> Callable[..., Any]:
    """moto's ``_dispatch``: the request answered, then recorded (the outermost one only)."""

    @functools.wraps(original)
    def wrapper(self: Any, request: Any, full_url: Any = None, headers: Any = None) -> Any:
        if _current is None or getattr(_local, "before", None) is not None:
            return original(self, request, full_url, headers)
        before = _local.before = _Before()
        try:
            result = original(self, request, full_url, headers)
        except Exception as exc:
            _local.before = None
            _record_safely(self, request, None, exc, before)
            raise
        _local.before = None
        _record_safely(self, request, result, None, before)
        return result

    return wrapper


def _noting_before(original: Callable[..., Any]) -> Callable[..., Any]:
    """moto's ``setup_class``: the request read, what the world was before it is noted (the
    outermost request's, once)."""

    @functools.wraps(original)
    def wrapper(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        answer = original(self, request, *args, **kwargs)
        before: _Before | None = getattr(_local, "before", None)
        if before is not None and not before.noted and _current is not None:
            before.noted = True
            try:
                _note(self, request, before)
            except Exception as problem:  # noted or not, the call goes on
                _log.debug("sandbox trail: the world before a call was not noted: %s", problem)
        return answer

    return wrapper


def _note(response: Any, request: Any, before: _Before) -> None:
    service = response.boto3_service_name
    action = trail_calls.s3_bucket_action(request) if service == "s3" else response._get_action()
    before.action = action
    if not action or not recorded(service, action):
        return
    before.trails = trail_delivery.states(str(response.current_account))
    before.alias_keys = trail_record.alias_target(response, action)


def _record_safely(
    response: Any, request: Any, result: Any, exc: Exception | None, before: _Before
) -> None:
    """Record the call; a record that cannot be made never fails the call it is about."""
    trail = _current
    if trail is None or not hasattr(response, "current_account"):
        return  # moto never got as far as reading the request
    try:
        with trail.lock:
            _record(trail, response, request, result, exc, before)
    except Exception as problem:  # the call was answered: say so, and go on
        trail.failures.append(f"{type(problem).__name__}: {problem}")
        _log.warning("sandbox trail: a call was not recorded: %s", problem)


def _record(
    trail: Trail, response: Any, request: Any, result: Any, exc: Exception | None, before: _Before
) -> None:
    service = response.boto3_service_name
    action = before.action
    if not before.noted:
        if service == "s3":  # S3 routes for itself: a bucket-level request (key-level: data)
            action = trail_calls.s3_bucket_action(request)
        else:
            action = response._get_action() if service else None
    if not action or not recorded(service, action):
        return
    acting_now: Acting = getattr(_local, "acting", None) or Acting()
    if action in acting_now.skip:
        return
    moment = acting_now.moment or trail.clock()
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    caller = trail_record.Caller(
        moment, acting_now.identity, acting_now.source_ip, acting_now.user_agent
    )
    record = trail_record.build(response, request, result, exc, action, caller, before.alias_keys)
    if record is None:
        return
    _keep(trail, record, before.trails)
    headers = result[1] if result is not None else None
    if isinstance(headers, dict) and "x-amzn-requestid" in headers:
        headers["x-amzn-requestid"] = record["requestID"]  # the client sees it, as from AWS


def add(record: dict[str, Any]) -> None:
    """Record a call that never reached moto (an inject's call AWS would refuse its contained
    actor: ``trail_record.refused``), as any other: ids, LookupEvents, the trails' buckets."""
    trail = _current
    if trail is not None and record.get("eventName") not in _skipped():
        with trail.lock:
            _keep(trail, record, None)


def _skipped() -> frozenset[str]:
    acting_now: Acting | None = getattr(_local, "acting", None)
    return acting_now.skip if acting_now is not None else frozenset()


def _keep(
    trail: Trail,
    record: dict[str, Any],
    before: dict[str, trail_delivery.TrailState] | None,
) -> None:
    """Give ``record`` its ids, keep it in LookupEvents, and deliver it to the trails that
    log it (as they were before the call, ``before``; ``None``: as they are)."""
    # the n-th call of its kind and outcome in this world: the same run, the same ids
    basis = json.dumps(
        [
            record["eventSource"],
            record["eventName"],
            record["awsRegion"],
            record["requestParameters"],
            record.get("errorCode"),
        ],
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(basis.encode()).hexdigest()[:16]
    n = trail.counts.get(digest, 0)
    trail.counts[digest] = n + 1
    record["requestID"] = _uuid(f"{trail.seed}:request:{digest}:{n}")
    record["eventID"] = _uuid(f"{trail.seed}:event:{digest}:{n}")
    account = str(record["recipientAccountId"])
    lookup.add_events(account, str(record["awsRegion"]), [record])
    moment = datetime.strptime(str(record["eventTime"]), "%Y-%m-%dT%H:%M:%SZ")
    trails = trail_delivery.destinations(record, before, trail_delivery.states(account))
    trail_delivery.deliver(record, trails, moment)


def _uuid(text: str) -> str:
    return str(uuid.UUID(bytes=hashlib.sha256(text.encode()).digest()[:16], version=4))

"""What every posture check reads: the keys in scope with their policies, grants, tags and
rotation, gathered once and concurrently, and the account's other listings, each gathered
once however many checks read it.

Every AWS response a check judges is saved as an artifact (``AuditContext.evidence``) and
named in that check's entry. A call AWS refuses (no permission, a service not offered in the
Region) raises ``Unavailable``: the check that needed it says ``could-not-check`` and names
the permission, and the review goes on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from kmsir.actions.base import ActionContext
from kmsir.actions.kmskeys import list_all, strip_metadata
from kmsir.aws import EXPIRED_CREDENTIALS, aws_errors
from kmsir.errors import ActionError, AwsError

T = TypeVar("T")
R = TypeVar("R")

#: Keys examined at once; each makes up to five calls one after another.
WORKERS = 16
#: Pages read of one listing before it is cut (and the cut said in the review's scope).
MAX_PAGES = 100
#: The fields by which a page says another follows.
_MORE = (
    "NextToken",
    "nextToken",
    "Marker",
    "NextMarker",
    "ContinuationToken",
    "LastEvaluatedTableName",
)


#: Error codes by which AWS services say the caller lacks a permission (``403``: an HTTP
#: Forbidden whose body botocore could not read a code from).
REFUSED = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError", "403"}
)


class Unavailable(ActionError):
    """A call a check needed failed: the check cannot say. ``permission`` is the IAM
    permission (or the API) that was missing when that is why, else ``None`` (a throttle
    that outlasted the retries, a resource gone meanwhile: ``code`` and ``detail`` say).

    Caught by the checks; one that escapes them fails the step with its one line."""

    def __init__(self, permission: str | None, code: str, detail: str) -> None:
        self.permission = permission
        self.code = code
        self.detail = detail
        super().__init__(detail)


@dataclass
class KeyFacts:
    """One key in scope, as the checks see it. A ``None`` field was not read: its error is
    in ``unavailable`` under the field's name (``policy``, ``grants``, ``tags``,
    ``rotation``); AWS-managed keys are only described."""

    metadata: dict[str, Any]
    aliases: list[str]
    policy: dict[str, Any] | None = None
    grants: list[dict[str, Any]] | None = None
    tags: dict[str, str] | None = None
    #: ``GetKeyRotationStatus``'s response, for keys that rotate automatically.
    rotation: dict[str, Any] | None = None
    unavailable: dict[str, Unavailable] = field(default_factory=dict)
    #: Artifact paths of the responses read for this key, by field name (and ``key``).
    evidence: dict[str, str] = field(default_factory=dict)

    @property
    def key_id(self) -> str:
        return str(self.metadata["KeyId"])

    @property
    def arn(self) -> str:
        return str(self.metadata["Arn"])

    @property
    def account(self) -> str:
        return self.arn.split(":")[4]

    @property
    def customer_managed(self) -> bool:
        return self.metadata.get("KeyManager") == "CUSTOMER"

    @property
    def state(self) -> str:
        return str(self.metadata.get("KeyState", "Unknown"))

    @property
    def origin(self) -> str:
        return str(self.metadata.get("Origin", "AWS_KMS"))

    @property
    def spec(self) -> str:
        return str(self.metadata.get("KeySpec") or self.metadata.get("CustomerMasterKeySpec", ""))

    @property
    def rotatable(self) -> bool:
        """Automatic rotation applies to symmetric encryption keys with KMS-made material in
        AWS KMS's own key store."""
        return (
            self.spec == "SYMMETRIC_DEFAULT"
            and self.origin == "AWS_KMS"
            and not self.metadata.get("CustomKeyStoreId")
        )

    def need(self, name: str) -> Any:
        """Field ``name``, or raise its ``Unavailable`` (a check then cannot say)."""
        value = getattr(self, name)
        if value is None and name in self.unavailable:
            raise self.unavailable[name]
        return value

    def label(self) -> str:
        """The key id and its aliases, for a detail line."""
        return f"{self.key_id} ({', '.join(self.aliases)})" if self.aliases else self.key_id


@dataclass
class AuditContext:
    """The review's shared reading of the account: keys, listings, evidence, settings."""

    ctx: ActionContext
    region: str
    account: str
    settings: Any
    keys: list[KeyFacts] = field(default_factory=list)
    #: Every alias of the Region (``ListAliases``), AWS-managed ones (``alias/aws/*``) too.
    aliases: list[dict[str, Any]] = field(default_factory=list)
    #: Listings cut at ``MAX_PAGES``, said in the review's scope.
    cut: list[str] = field(default_factory=list)
    #: Keys named or listed that could not be described: reference -> why.
    unreadable: dict[str, Unavailable] = field(default_factory=dict)
    _shared: dict[str, Any] = field(default_factory=dict)
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def now(self) -> datetime:
        return self.ctx.now()

    def client(self, service: str) -> Any:
        """A client of ``service`` in the review's Region (read-only calls only)."""
        factory: Any = self.ctx.clients
        return factory.client(service, self.region)

    def call(
        self,
        service: str,
        operation: str,
        send: Callable[[], T],
        *,
        what: str = "",
        permission: str | None = None,
    ) -> T:
        """``send()`` (one call of ``service``'s ``operation``); an AWS error raises
        ``Unavailable`` naming the IAM permission (``service:operation`` unless the
        operation's permission is named otherwise: S3's GetPublicAccessBlock needs
        ``s3:GetBucketPublicAccessBlock``)."""
        permission = permission or f"{_iam_prefix(service)}:{operation}"
        try:
            with aws_errors(f"{operation}{' ' + what if what else ''}", service=service):
                return send()
        except AwsError as exc:
            if exc.code in EXPIRED_CREDENTIALS:
                raise  # every later call would fail too: the step stops, to be resumed
            refused = exc.code in REFUSED
            raise Unavailable(permission if refused else None, exc.code, str(exc)) from None
        except NotImplementedError:
            # moto in process (the sandbox) raises this for an API it does not offer; AWS
            # never does: the check cannot say, and says why
            detail = f"{operation}: not offered by the sandbox (moto lacks it)"
            missing = f"{permission} (not offered by the sandbox)"
            raise Unavailable(missing, "NotImplemented", detail) from None

    def pages(
        self, service: str, operation: str, method: str, result_key: str, **kwargs: Any
    ) -> list[Any]:
        """Every item of a paginated call, at most ``MAX_PAGES`` pages (a cut is recorded)."""

        def read() -> list[Any]:
            items: list[Any] = []
            paginator = self.client(service).get_paginator(method)
            for number, page in enumerate(paginator.paginate(**kwargs), 1):
                items.extend(page.get(result_key) or [])
                if number >= MAX_PAGES and any(page.get(k) for k in _MORE):
                    self.cut.append(f"{service} {operation}: only {MAX_PAGES} pages were read")
                    break
            return items

        return self.call(service, operation, read)

    def shared(self, name: str, read: Callable[[], T]) -> T:
        """``read()`` once per review, whichever check asks first; the others wait for it and
        get the same result (or the same ``Unavailable``)."""
        with self._lock:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if name not in self._shared:
                try:
                    self._shared[name] = (True, read())
                except Unavailable as exc:
                    self._shared[name] = (False, exc)
            ok, value = self._shared[name]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def evidence(self, name: str, value: Any) -> str:
        """Save an API response the checks judge as artifact ``<name>.json``; its path.

        A bundle keeps artifacts at most one folder deep: ``a/b/c`` is stored as ``a/b-c``."""
        folder, _, rest = name.partition("/")
        flat = f"{folder}/{rest.replace('/', '-')}" if rest else folder
        return self.ctx.write_json(f"{flat}.json", _plain(value))

    def customer_keys(self) -> Iterator[KeyFacts]:
        """The customer-managed keys in scope."""
        return (k for k in self.keys if k.customer_managed)


def concurrently(one: Callable[[T], R], items: list[T], workers: int = 8) -> list[R]:
    """``one`` of every item, ``workers`` at a time, in the items' order (per-item reads of
    a check: a bucket's encryption, a key's rotations, a stack's resources)."""
    if len(items) < 2:
        return [one(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(one, items))


def _iam_prefix(service: str) -> str:
    """The IAM action prefix of a botocore service name."""
    return {"events": "events", "monitoring": "cloudwatch"}.get(service, service)


def _plain(value: Any) -> Any:
    """A response without botocore's ``ResponseMetadata``, at any depth of the top level."""
    if isinstance(value, dict):
        return strip_metadata(value)
    return value


def gather(audit: AuditContext, references: list[str] | None) -> None:
    """Read the keys in scope into ``audit.keys``: every key of the Region (``None``), or
    the keys named. Concurrent, ``WORKERS`` keys at a time."""
    ctx = audit.ctx
    audit.aliases = audit.call(
        "kms", "ListAliases", lambda: list_all(ctx, "ListAliases", "Aliases", region=audit.region)
    )
    audit.evidence("aliases", {"Aliases": audit.aliases})
    by_key: dict[str, list[str]] = {}
    for alias in audit.aliases:
        if alias.get("TargetKeyId"):
            by_key.setdefault(str(alias["TargetKeyId"]), []).append(str(alias["AliasName"]))
    if references is None:
        listed = audit.call(
            "kms", "ListKeys", lambda: list_all(ctx, "ListKeys", "Keys", region=audit.region)
        )
        references = [str(k["KeyId"]) for k in listed]
    total = len(references)
    ctx.reporter.progress("keys", 0, total)
    seen: set[str] = set()
    lock = threading.Lock()
    done = 0

    def one(reference: str) -> KeyFacts | None:
        nonlocal done
        facts = _key(audit, reference, by_key, seen, lock)
        with lock:
            done += 1
            ctx.reporter.progress("keys", done, total)
        return facts

    with ThreadPoolExecutor(max_workers=min(WORKERS, max(total, 1))) as pool:
        found = list(pool.map(one, references))
    audit.keys = sorted((k for k in found if k is not None), key=lambda k: k.key_id)


def _key(
    audit: AuditContext,
    reference: str,
    aliases: dict[str, list[str]],
    seen: set[str],
    lock: threading.Lock,
) -> KeyFacts | None:
    kms = audit.client("kms")
    try:
        metadata = audit.call(
            "kms",
            "DescribeKey",
            lambda: kms.describe_key(KeyId=reference)["KeyMetadata"],
            what=f"on {reference}",
        )
    except Unavailable as exc:  # one key's refusal does not lose the others
        with lock:
            audit.unreadable[reference] = exc
        return None
    key_id = str(metadata["KeyId"])
    with lock:  # the same key named twice (id, alias, ARN) is read once
        if key_id in seen:
            return None
        seen.add(key_id)
    facts = KeyFacts(metadata=dict(metadata), aliases=sorted(aliases.get(key_id, [])))
    facts.evidence["key"] = audit.evidence(f"{key_id}/key", {"KeyMetadata": metadata})
    if not facts.customer_managed:
        return facts
    reads: dict[str, Callable[[], Any]] = {
        "policy": lambda: kms.get_key_policy(KeyId=key_id, PolicyName="default"),
        "grants": lambda: list_all(audit.ctx, "ListGrants", "Grants", key_id, region=audit.region),
        "tags": lambda: list_all(
            audit.ctx, "ListResourceTags", "Tags", key_id, region=audit.region
        ),
    }
    if facts.rotatable:
        reads["rotation"] = lambda: kms.get_key_rotation_status(KeyId=key_id)
    operations = {
        "policy": "GetKeyPolicy",
        "grants": "ListGrants",
        "tags": "ListResourceTags",
        "rotation": "GetKeyRotationStatus",
    }
    for name, read in reads.items():
        try:
            _keep(
                audit, facts, name, audit.call("kms", operations[name], read, what=f"on {key_id}")
            )
        except Unavailable as exc:
            facts.unavailable[name] = exc
        except Exception as exc:  # a response shaped as kmsir did not expect (a policy that
            # is not JSON...): this key's checks of it cannot say, and the review goes on
            detail = f"{operations[name]} on {key_id}: unexpected response ({exc!r})"[:400]
            facts.unavailable[name] = Unavailable(None, type(exc).__name__, detail)
    return facts


def _keep(audit: AuditContext, facts: KeyFacts, name: str, response: Any) -> None:
    """Store one response on the key and as evidence."""
    import json

    prefix = f"{facts.key_id}/"
    if name == "policy":
        facts.evidence[name] = audit.evidence(prefix + "policy", response)
        facts.policy = json.loads(response["Policy"])
    elif name == "grants":
        facts.evidence[name] = audit.evidence(prefix + "grants", {"Grants": response})
        facts.grants = list(response)
    elif name == "tags":
        facts.evidence[name] = audit.evidence(prefix + "tags", {"Tags": response})
        facts.tags = {str(t["TagKey"]): str(t["TagValue"]) for t in response}
    else:
        facts.evidence[name] = audit.evidence(prefix + "rotation", response)
        facts.rotation = strip_metadata(response)

"""Does a CloudTrail event name a key? The one matching function every source uses.

An event names the key when its key id appears, as a key id or in a key ARN, in
``resources[]`` or in ``requestParameters.keyId``/``destinationKeyId``/``sourceKeyId``/
``targetKeyId``/``primaryKeyArn``/``aliasName``/``customKeyStoreId``,
``responseElements.keyId``, or ``responseElements.keyMetadata``/``replicaKeyMetadata``
(``keyId``/``arn``), whatever Region or account an ARN carries: key ARNs of other Regions of
the same multi-Region key share its id, and an event naming the key in one field is about it
even when ``resources[]`` list another key (a ReEncrypt, a grant, an alias moved between
keys). An alias is the same alias only in the key's account and Region: a bare alias name
counts when the event happened there, an alias ARN when it names them; and when
``resources[]`` list keys, they say which key an alias resolved to, so only an alias being
moved (``aliasName``) still counts.

CloudTrail's own events that can stop a trail logging KMS (``catalogue.TRAIL_EVENTS``) name
no key, yet every key keeps them: they say which of its events a trail may be missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from kmsir.trail.catalogue import TRAIL_SOURCE, is_trail_event

_REQUEST_FIELDS = (
    "keyId",
    "destinationKeyId",
    "sourceKeyId",
    "targetKeyId",
    "primaryKeyArn",
    "aliasName",
    "customKeyStoreId",
)
_RESPONSE_FIELDS = ("keyId",)
_RESPONSE_METADATA = ("keyMetadata", "replicaKeyMetadata")
_KEY_TYPE = "AWS::KMS::Key"
#: What a raw trail event is found by, besides the key's names: the service that logs the
#: trail events (``is_trail_event``), one search through a file where their three names
#: would be three.
_TRAIL_NEEDLES = (f'"{TRAIL_SOURCE}"'.encode(),)


def _key_id(reference: str) -> str | None:
    """The key id of a key id or key ARN; ``None`` for anything else."""
    if reference.startswith("arn:"):
        return reference.rsplit(":key/", 1)[1] if ":key/" in reference else None
    return None if reference.startswith("alias/") else reference


@dataclass(frozen=True)
class KeyMatcher:
    """The names one key goes by: its id, alias names, and where it lives (when known)."""

    ids: frozenset[str]
    aliases: frozenset[str]
    account: str | None = None
    region: str | None = None

    @classmethod
    def for_key(
        cls, key: str, aliases: Iterable[str] = (), *, extra: Iterable[str] = ()
    ) -> KeyMatcher:
        """A matcher for ``key`` (id or ARN), its ``aliases`` (names or ARNs) and ``extra``
        identifiers (a custom key store id)."""
        key = key.strip()
        parts = key.split(":")
        account = parts[4] if key.startswith("arn:") and len(parts) > 5 else None
        region = parts[3] if key.startswith("arn:") and len(parts) > 5 else None
        ids = {i for i in (_key_id(key), *extra) if i}
        names = set()
        for alias in aliases:
            alias = alias.strip()
            if ":alias/" in alias:
                names.add("alias/" + alias.rsplit(":alias/", 1)[1])
            elif alias.startswith("alias/"):
                names.add(alias)
        return cls(frozenset(ids), frozenset(names), account, region)

    @property
    def names(self) -> frozenset[str]:
        """Every name: key ids and alias names."""
        return self.ids | self.aliases

    @property
    def needles(self) -> tuple[bytes, ...]:
        """Byte strings, one of which every matching raw record contains (a fast pre-check):
        the key's names, and the service of the trail events."""
        return tuple(n.encode() for n in sorted(self.names)) + _TRAIL_NEEDLES

    def names_in(self, event: dict[str, Any]) -> Iterator[str]:
        """Every reference to a key, alias or key store the event carries outside resources."""
        request = event.get("requestParameters")
        if isinstance(request, dict):
            for field in _REQUEST_FIELDS:
                if isinstance(request.get(field), str):
                    yield request[field]
        response = event.get("responseElements")
        if isinstance(response, dict):
            for field in _RESPONSE_FIELDS:
                if isinstance(response.get(field), str):
                    yield response[field]
            for block in _RESPONSE_METADATA:
                metadata = response.get(block)
                if isinstance(metadata, dict):
                    for field in ("keyId", "arn"):
                        if isinstance(metadata.get(field), str):
                            yield metadata[field]

    def _alias_here(self, reference: str, event: dict[str, Any]) -> bool:
        if ":alias/" in reference:
            parts = reference.split(":")
            if not reference.startswith("arn:") or len(parts) < 6:
                return False  # no alias ARN (arn:PARTITION:kms:REGION:ACCOUNT:alias/NAME)
            name = "alias/" + reference.rsplit(":alias/", 1)[1]
            return name in self.aliases and (
                self.account in (None, parts[4]) and self.region in (None, parts[3])
            )
        if reference not in self.aliases:
            return False
        account, region = event.get("recipientAccountId"), event.get("awsRegion")
        return (account is None or self.account in (None, account)) and (
            region is None or self.region in (None, region)
        )

    def matches(self, event: dict[str, Any]) -> bool:
        """Whether the event names the key (or may hide its events from a trail)."""
        if is_trail_event(event):
            return True
        resources = event.get("resources")
        keys = (
            [
                r["ARN"]
                for r in resources or ()
                if isinstance(r, dict)
                and isinstance(r.get("ARN"), str)
                and r.get("type", _KEY_TYPE) == _KEY_TYPE
                and ":key/" in r["ARN"]
            ]
            if isinstance(resources, list)
            else []
        )
        if any(_key_id(arn) in self.ids for arn in keys):
            return True
        request = event.get("requestParameters")
        moved = request.get("aliasName") if keys and isinstance(request, dict) else None
        moved = moved.strip() if isinstance(moved, str) else None
        for reference in self.names_in(event):
            reference = reference.strip()
            if reference.startswith("alias/") or ":alias/" in reference:
                # the keys listed say which key an alias resolved to: only an alias being
                # moved (its name in aliasName) is about ours then
                if (not keys or reference == moved) and self._alias_here(reference, event):
                    return True
            elif _key_id(reference) in self.ids:
                return True
        return False

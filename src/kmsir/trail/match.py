"""Does a CloudTrail event name a key? The one matching function every source uses.

An event matches when any of these name the key (by key id, key ARN, alias name or alias ARN;
key ARNs of other Regions of the same multi-Region key count, since they share the key id):
``resources[].ARN``, ``requestParameters.keyId``/``destinationKeyId``/``sourceKeyId``/
``targetKeyId``/``primaryKeyArn``/``aliasName``, ``responseElements.keyId``,
``responseElements.keyMetadata.keyId``/``arn`` (CreateKey), and
``responseElements.replicaKeyMetadata.keyId``/``arn`` (ReplicateKey).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

_REQUEST_FIELDS = (
    "keyId",
    "destinationKeyId",
    "sourceKeyId",
    "targetKeyId",
    "primaryKeyArn",
    "aliasName",
)
_RESPONSE_FIELDS = ("keyId",)
_RESPONSE_METADATA = ("keyMetadata", "replicaKeyMetadata")


def _normalise(reference: str) -> str:
    """A key id for key ids and key ARNs, the alias name for alias names and alias ARNs."""
    reference = reference.strip()
    if reference.startswith("arn:") and ":key/" in reference:
        return reference.rsplit(":key/", 1)[1]
    if reference.startswith("arn:") and ":alias/" in reference:
        return "alias/" + reference.rsplit(":alias/", 1)[1]
    return reference


@dataclass(frozen=True)
class KeyMatcher:
    """The names one key goes by: its id(s) and alias names."""

    names: frozenset[str]

    @classmethod
    def for_key(cls, key: str, aliases: Iterable[str] = ()) -> KeyMatcher:
        """A matcher for ``key`` (id or ARN) and its known ``aliases`` (names or ARNs)."""
        names = {_normalise(key), *(_normalise(a) for a in aliases)}
        return cls(frozenset(n for n in names if n))

    @property
    def needles(self) -> tuple[bytes, ...]:
        """Byte strings, one of which every matching raw record contains (a fast pre-check)."""
        return tuple(n.encode() for n in sorted(self.names))

    def names_in(self, event: dict[str, Any]) -> Iterator[str]:
        """Every reference to a key or alias the event carries."""
        for resource in event.get("resources") or ():
            if isinstance(resource, dict) and isinstance(resource.get("ARN"), str):
                yield resource["ARN"]
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

    def matches(self, event: dict[str, Any]) -> bool:
        """Whether the event names the key."""
        return any(_normalise(name) in self.names for name in self.names_in(event))

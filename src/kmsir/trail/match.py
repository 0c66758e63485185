"""Does a CloudTrail event name a key? The one matching function every source uses.

An event names the key when ``resources[]`` list it (entries of type ``AWS::KMS::Key`` decide
alone when present: they say which key the call really used), or else when the key's id, ARN,
alias name or alias ARN appears in ``requestParameters.keyId``/``destinationKeyId``/
``sourceKeyId``/``targetKeyId``/``primaryKeyArn``/``aliasName``/``customKeyStoreId``,
``responseElements.keyId``, or ``responseElements.keyMetadata``/``replicaKeyMetadata``
(``keyId``/``arn``). Key ARNs of other Regions of the same multi-Region key count, since they
share the key id. An alias is the same alias only in the key's account and Region: a bare
alias name counts when the event happened there, an alias ARN when it names them.
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
    "customKeyStoreId",
)
_RESPONSE_FIELDS = ("keyId",)
_RESPONSE_METADATA = ("keyMetadata", "replicaKeyMetadata")
_KEY_TYPE = "AWS::KMS::Key"


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
        """Byte strings, one of which every matching raw record contains (a fast pre-check)."""
        return tuple(n.encode() for n in sorted(self.names))

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
        """Whether the event names the key."""
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
        if keys:  # the keys the call really used decide, but an alias of ours may be moved
            if any(_key_id(arn) in self.ids for arn in keys):
                return True
            request = event.get("requestParameters")
            alias = request.get("aliasName") if isinstance(request, dict) else None
            return isinstance(alias, str) and self._alias_here(alias.strip(), event)
        for reference in self.names_in(event):
            reference = reference.strip()
            if reference.startswith("alias/") or ":alias/" in reference:
                if self._alias_here(reference, event):
                    return True
            elif _key_id(reference) in self.ids:
                return True
        return False

"""Pseudonyms for a report shared outside the team (``kmsir report BUNDLE --redact``).

Account ids, IPv4 and IPv6 addresses, user, role and session names (inside ARNs and in
plain fields), key ids, key ARNs, aliases, access key ids and IAM unique ids are replaced
with typed pseudonyms (``account-1``, ``ip-1``, ``user-1``, ``role-1``, ``session-1``,
``principal-1`` (a name a principal field holds, of no known kind), ``key-1``, ``alias-1``,
``access-key-1``, ``principal-id-1``): the same value always gets
the same one within a report, so the story still reads ("role-2 created a grant for
account-2; account-2 then decrypted 43 times").

Redaction happens on what the report renders, never on the bundle: ``Redactor.of`` first
learns every value to hide from the whole template context (so a name mentioned in a
sentence before the ARN that names it is still hidden), ``context`` rewrites the context
before the template sees it (values are replaced before the Markdown and HTML filters
escape them), and ``scrub`` sweeps the rendered text once more for anything a template
made of its own (an ARN, an account id, an address, a known key id), never for plain
names, which could be markup words.

Values are found by shape (an ARN's parts, 12-digit account ids, also inside names such as
``aws-cloudtrail-logs-123456789012-3f2a``, addresses, ``alias/...``, ``AKIA...``/``AROA...``
ids, key ids (UUIDs and ``mrk-...``, in any case, wherever they stand: a UUID of another kind
is hidden as a key too, the safe side)) and by the field that holds them
(``userName``, ``roleName``, ``key_id``, ``aliases``, CloudTrail request parameters kept as
JSON text...). A plain name is replaced wherever it stands as a whole word of three
characters or more; the host, the local user and the evidence folder of the chain of
custody only in their own fields (a local user named ``root`` must not turn every "root"
of the text into a pseudonym).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Redactor"]

_ARN = r"arn:aws[a-z-]*:[a-z0-9-]+:[a-z0-9*-]*:(?:\d{12}|aws|\*)?:[\w+=,.@/:*-]*[\w+=@/*-]"
_ALIAS = r"(?<![\w/-])alias/[\w/+=,.@-]*[\w+=@-]"
#: IPv6 candidates: a run of hex digits, colons and dots with a "::" or seven colons, not
#: glued to a word (``iam::aws`` is no address); ``ipaddress`` decides.
_V6 = r"(?<![\w:.])(?=[0-9A-Fa-f:.]*::|(?:[0-9A-Fa-f]{1,4}:){7})[0-9A-Fa-f:.]{2,45}(?![\w:.])"
#: A word as IAM names, key ids and addresses are made of ("=" and "," end one: they join
#: ``RoleName=x`` and lists).
_WORD = r"[\w.@+-]+"
_SCAN = re.compile(f"(?P<arn>{_ARN})|(?P<alias>{_ALIAS})|(?P<v6>{_V6})|(?P<word>{_WORD})")

_ACCOUNT = re.compile(r"\d{12}")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_ACCESS_KEY = re.compile(r"(?:AKIA|ASIA)[A-Z0-9]{16}")
_UNIQUE_ID = re.compile(r"(?:AIDA|AROA|AGPA|ANPA|ANVA|AIPA|APKA|ASCA)[A-Z0-9]{16,124}")
#: A key id: a UUID or a multi-Region ``mrk-`` id, in any case (a person may write one in
#: capitals in a note; it is the same key).
_KEY_ID_TEXT = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32}"
_KEY_ID = re.compile(_KEY_ID_TEXT, re.IGNORECASE)
#: A key id or an account id inside a longer word (``kmsir-sandbox-trail-123456789012``,
#: ``aws-cloudtrail-logs-123456789012-3f2a``, ``deny-<key id>``): delimited by ``-``, ``_``,
#: ``.``, ``/``, ``:`` or the word's ends, never part of a longer run of letters, digits or
#: hex (``0x123456789012``, a 13-digit number). A UUID is tried first, so the digits of its
#: last group are never taken for an account.
_EMBEDDED = re.compile(
    rf"(?<![0-9A-Za-z])(?:(?P<key>{_KEY_ID_TEXT})|(?P<account>\d{{12}}))(?![0-9A-Za-z])",
    re.IGNORECASE,
)

#: Fields (lower case, without ``_`` and ``-``) whose plain values are names, by kind.
_FIELDS = {
    "username": "user",
    "user": "user",
    "users": "user",
    "rolename": "role",
    "role": "role",
    "roles": "role",
    "sessionname": "session",
    "rolesessionname": "session",
    "session": "session",
    "principal": "principal",
    "grantee": "principal",
    "granteeprincipal": "principal",
    "retiringprincipal": "principal",
    "aliasname": "alias",
    "alias": "alias",
    "aliases": "alias",
    "keyid": "key",
    "targetkeyid": "key",
    "key": "key",
    "keys": "key",
}
#: Fields whose mappings are keyed by names of their kind.
_NAMED_KEYS = frozenset({"roles", "users", "aliases"})
#: Fields replaced only where they stand (the chain of custody's machine and folder).
_FIELD_ONLY = {"host": "host", "hostname": "host", "localuser": "user", "location": "path"}
#: Fields templates compare with fixed words: never rewritten.
_STRUCTURAL = frozenset({"status", "action", "phase", "severity"})
#: Kinds ``scrub`` may replace in rendered text: none of them can be a markup word.
_SAFE_KINDS = ("account", "ip", "key", "access-key", "principal-id")
#: Shortest plain name replaced wherever it stands as a word.
_MIN_NAME = 3
#: JSON text (CloudTrail request parameters) longer than this is not parsed for fields.
_MAX_JSON = 1_000_000


def _field(name: object) -> str:
    return str(name).lower().replace("_", "").replace("-", "")


class Redactor:
    """The pseudonyms of one report: value -> pseudonym, numbered per kind in the order the
    values are first met."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}  # replaced wherever they stand
        self._kinds: dict[str, str] = {}  # value -> its kind
        self._fields: dict[str, str] = {}  # replaced in their own fields only
        self._counts: Counter[str] = Counter()
        self._issued: set[str] = set()  # the pseudonyms given out

    @classmethod
    def of(cls, context: Mapping[str, Any]) -> Redactor:
        """Learn every value of ``context`` to hide: shapes first (an ARN says what a name
        is), then fields."""
        redactor = cls()
        _walk(context, redactor._learn_shapes)
        _walk(context, redactor._learn_field)
        return redactor

    @property
    def pseudonyms(self) -> dict[str, str]:
        """Every value hidden -> its pseudonym."""
        return {**self._fields, **self._names}

    # -- naming ------------------------------------------------------------------------------

    def _assign(self, kind: str, value: str, *, field_only: bool = False) -> str:
        if kind == "key":
            value = value.lower()  # one key, however a note spells it
        table = self._fields if field_only else self._names
        known = table.get(value)
        if known is not None:
            return known
        if value in self._issued:  # met again in the rendered text: already hidden
            return value
        self._counts[kind] += 1
        table[value] = f"{kind}-{self._counts[kind]}"
        self._kinds.setdefault(value, kind)
        self._issued.add(table[value])
        return table[value]

    def _name(self, kind: str, value: str) -> str:
        """A name found by its place (an ARN's role part): hidden however short."""
        if not value or value == "*":
            return value
        return self._assign(kind, value)

    def _learn_shapes(self, text: str, key: str | None) -> str:
        self.sub(text)
        return text

    def _learn_field(self, text: str, key: str | None) -> str:
        field = _field(key) if key is not None else ""
        if field in _FIELD_ONLY:
            if text:
                self._assign(_FIELD_ONLY[field], text, field_only=True)
        elif field in _FIELDS:
            self._learn_name(_FIELDS[field], text)
        if text[:1] in "{[" and len(text) <= _MAX_JSON:
            try:
                parsed = json.loads(text)
            except ValueError:
                return text
            _walk(parsed, self._learn_field)
        return text

    def _learn_name(self, kind: str, value: str) -> None:
        if kind == "key":
            if _KEY_ID.fullmatch(value):
                self._assign("key", value)
            return
        if kind == "alias":
            value = value.removeprefix("alias/")
            if value and not value.startswith("aws/"):
                self._assign("alias", value)
            return
        service = value.endswith((".amazonaws.com", ".amazonaws.com.cn"))
        if len(value) >= _MIN_NAME and not service and re.fullmatch(r"[\w+=,.@-]+", value):
            self._assign(kind, value)

    # -- rewriting ---------------------------------------------------------------------------

    def context(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of the template context with every value learned replaced."""
        return dict(_walk(context, self._rewrite))

    def _rewrite(self, text: str, key: str | None) -> str:
        field = _field(key) if key is not None else ""
        if field in _STRUCTURAL:
            return text
        if field in _FIELD_ONLY and text in self._fields:
            return self._fields[text]
        return self.sub(text)

    def sub(self, text: str, *, names: bool = True) -> str:
        """``text`` with its ARNs, aliases, addresses, ids and (``names``) known plain names
        replaced; values found by their shape are learned on the way."""
        return _SCAN.sub(lambda m: self._one(m, names), text)

    def scrub(self, rendered: str) -> str:
        """The rendered report swept again: ARNs, account ids, addresses and ids, never plain
        names (in HTML a name could be a tag or attribute word)."""
        return self.sub(rendered, names=False)

    def _one(self, match: re.Match[str], names: bool) -> str:
        text = match[0]
        if match["arn"]:
            return self._arn(text)
        if match["alias"]:
            name = text[len("alias/") :]
            return text if name.startswith("aws/") else f"alias/{self._name('alias', name)}"
        if match["v6"]:
            core = text.rstrip(".")
            try:
                ipaddress.IPv6Address(core)
            except ValueError:
                return text
            if not any(c.isalnum() for c in core):
                return text
            return self._assign("ip", core) + text[len(core) :]
        core = text.rstrip(".")
        tail = text[len(core) :]
        known = self._names.get(core)
        if known is not None:
            safe = self._kinds.get(core) in _SAFE_KINDS
            if safe or (names and len(core) >= _MIN_NAME):
                return known + tail
        kind = _shape(core)
        return self._assign(kind, core) + tail if kind else self._embedded(text)

    def _embedded(self, word: str) -> str:
        """``word`` with the account ids and key ids inside it replaced."""
        return _EMBEDDED.sub(lambda m: self._assign("key" if m["key"] else "account", m[0]), word)

    def _arn(self, arn: str) -> str:
        parts = arn.split(":", 5)
        if _ACCOUNT.fullmatch(parts[4]):
            parts[4] = self._assign("account", parts[4])
        parts[5] = self._resource(parts[2], parts[5])
        return ":".join(parts)

    def _resource(self, service: str, resource: str) -> str:
        kind, _, rest = resource.partition("/")
        if service in ("iam", "sts"):
            if kind == "assumed-role" and rest:
                role, _, session = rest.partition("/")
                hidden = f"{kind}/{self._name('role', role)}"
                return f"{hidden}/{self._name('session', session)}" if session else hidden
            if kind in ("user", "role", "federated-user") and rest:
                path, _, name = rest.rpartition("/")
                named = self._name("role" if kind == "role" else "user", name)
                return f"{kind}/{path}/{named}" if path else f"{kind}/{named}"
        if service == "kms" and rest:
            if kind == "key":
                return f"key/{self._name('key', rest)}"
            if kind == "alias" and not rest.startswith("aws/"):
                return f"alias/{self._name('alias', rest)}"
        return _WORDS.sub(lambda m: self._names.get(m[0]) or self._embedded(m[0]), resource)


_WORDS = re.compile(_WORD)


def _shape(token: str) -> str | None:
    """The kind a word is by its shape alone, if any."""
    if _ACCOUNT.fullmatch(token):
        return "account"
    if _IPV4.fullmatch(token):
        try:
            ipaddress.IPv4Address(token)
        except ValueError:
            return None
        return "ip"
    if _ACCESS_KEY.fullmatch(token):
        return "access-key"
    if _UNIQUE_ID.fullmatch(token):
        return "principal-id"
    if _KEY_ID.fullmatch(token):  # by shape too: a key id met only in free text
        return "key"
    return None


Visit = Callable[[str, "str | None"], str]


def _walk(value: Any, visit: Visit, key: str | None = None) -> Any:
    """``value`` rebuilt with ``visit(text, field)`` applied to every string in it (mapping
    keys included); the report's ``ReportStep`` records are rebuilt field by field."""
    if isinstance(value, str):
        return visit(value, key)
    if isinstance(value, Mapping):
        # the keys of ``roles: {ci-deploy: {...}}`` are names of that kind
        named = key if key is not None and _field(key) in _NAMED_KEYS else None
        return {
            (visit(k, named) if isinstance(k, str) else k): _walk(v, visit, str(k))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_walk(v, visit, key) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changed = {
            f.name: _walk(getattr(value, f.name), visit, f.name) for f in dataclasses.fields(value)
        }
        return dataclasses.replace(value, **changed)
    return value

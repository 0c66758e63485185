"""Each finding rule, positive and negative."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from itertools import count
from typing import Any

import pytest

from kmsir.trail.finding import Context
from kmsir.trail.findings import findings

ACCOUNT = "111122223333"
OUTSIDE = "444455556666"
START = datetime(2026, 11, 20, tzinfo=timezone.utc)
WINDOW = Context(key_account=ACCOUNT, window_start=START + timedelta(days=5))
_ids = count()


def ev(
    name: str,
    *,
    at: timedelta = timedelta(days=6),
    who: str = "app",
    account: str = ACCOUNT,
    error: str | None = None,
    ip: str = "10.0.0.1",
    agent: str = "sdk",
    **request: Any,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "eventID": f"e{next(_ids)}",
        "eventName": name,
        "eventTime": (START + at).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "userIdentity": {
            "arn": f"arn:aws:sts::{account}:assumed-role/{who}/s",
            "accountId": account,
        },
        "sourceIPAddress": ip,
        "userAgent": agent,
        "requestParameters": request or None,
    }
    if error:
        event["errorCode"] = error
    return event


def rules(events: list[dict[str, Any]], ctx: Context = WINDOW) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for finding in findings(events, ctx):
        found.setdefault(finding.id.rsplit("-", 1)[0], []).append(finding)
    return found


@pytest.mark.parametrize(
    ("name", "severity"),
    [
        ("ScheduleKeyDeletion", "critical"),
        ("DeleteImportedKeyMaterial", "critical"),
        ("DisableKey", "high"),
    ],
)
def test_key_state(name: str, severity: str) -> None:
    found = rules([ev(name, pendingWindowInDays=7)])["key-state"]
    assert found[0].severity == severity and found[0].practice
    assert "EnableKey" not in json.dumps([f.event_name for f in found])


def test_key_state_failed_call_is_at_most_medium() -> None:
    assert (
        rules([ev("ScheduleKeyDeletion", error="AccessDenied")])["key-state"][0].severity
        == "medium"
    )
    assert "key-state" not in rules([ev("EnableKey")])


def test_policy_changed_names_risky_statements() -> None:
    policy = {
        "Statement": [
            {
                "Sid": "Open",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Sid": "Partner",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{OUTSIDE}:root"},
                "Action": "kms:Decrypt",
                "Resource": "*",
            },
        ]
    }
    found = rules([ev("PutKeyPolicy", policy=json.dumps(policy))])["policy-changed"][0]
    assert found.severity == "high"
    assert found.details["risky_statements"] == [
        "Open: Principal * without conditions",
        f"Partner: outside account {OUTSIDE}",
    ]
    benign = {
        "Statement": [
            {
                "Sid": "Own",
                "Effect": "Allow",
                "Principal": {"AWS": ACCOUNT},
                "Action": "kms:*",
                "Resource": "*",
            }
        ]
    }
    assert (
        rules([ev("PutKeyPolicy", policy=json.dumps(benign))])["policy-changed"][0].details[
            "risky_statements"
        ]
        == []
    )


def test_grants_outside_or_broad() -> None:
    outside = ev(
        "CreateGrant", granteePrincipal=f"arn:aws:iam::{OUTSIDE}:role/x", operations=["Decrypt"]
    )
    broad = ev(
        "CreateGrant",
        granteePrincipal=f"arn:aws:iam::{ACCOUNT}:role/y",
        operations=["Decrypt", "CreateGrant"],
    )
    normal = ev(
        "CreateGrant", granteePrincipal=f"arn:aws:iam::{ACCOUNT}:role/z", operations=["Decrypt"]
    )
    found = rules([outside, broad, normal])["grant-created"]
    assert [f.event_ids for f in found] == [[outside["eventID"]], [broad["eventID"]]]
    assert found[0].title == "Grant created for an outside account"


def test_rotation_alias_and_key_store() -> None:
    found = rules(
        [
            ev("DisableKeyRotation"),
            ev("UpdateAlias", aliasName="alias/pay", targetKeyId="evil"),
            ev("DeleteAlias", aliasName="alias/pay"),
            ev("DisconnectCustomKeyStore"),
            ev("EnableKeyRotation"),
            ev("CreateAlias", aliasName="alias/x"),
        ]
    )
    assert len(found["rotation-disabled"]) == 1
    assert [f.event_name for f in found["alias-changed"]] == ["UpdateAlias", "DeleteAlias"]
    assert len(found["key-store"]) == 1


def test_access_denied_burst() -> None:
    burst = [
        ev("Decrypt", at=timedelta(days=6, minutes=m), who="prober", error="AccessDenied")
        for m in range(5)
    ]
    spread = [
        ev("Decrypt", at=timedelta(days=6, hours=h), who="slow", error="AccessDenied")
        for h in range(5)
    ]
    found = rules(burst + spread)["access-denied-burst"]
    assert len(found) == 1 and found[0].severity == "medium"
    assert found[0].event_ids == [e["eventID"] for e in burst]


def test_new_data_principal_from_outside() -> None:
    baseline = [ev("Decrypt", at=timedelta(days=d), who="app") for d in range(4)]
    window = [
        ev("Decrypt", who="app"),
        ev("Decrypt", who="thief", account=OUTSIDE),
        ev("GenerateDataKey", who="batch"),
    ]
    found = rules(baseline + window)["new-data-principal"]
    by_principal = {f.principal: f.severity for f in found}
    assert by_principal == {
        f"arn:aws:sts::{OUTSIDE}:assumed-role/thief/s": "high",
        f"arn:aws:sts::{ACCOUNT}:assumed-role/batch/s": "medium",
    }
    assert "new-data-principal" not in rules(window, Context(ACCOUNT, None))


def test_volume_spike() -> None:
    baseline = [
        ev("Decrypt", at=timedelta(days=d, hours=h), who="app") for d in range(5) for h in (0, 12)
    ]  # 10 calls in 5 days
    window = [ev("Decrypt", at=timedelta(days=5, hours=1, minutes=m), who="app") for m in range(40)]
    found = rules(baseline + window)["volume-spike"]
    assert len(found) == 1 and found[0].details["factor"] > 10
    assert "volume-spike" not in rules(baseline + window[:5])


def test_new_source_ip_and_user_agent() -> None:
    baseline = [ev("Decrypt", at=timedelta(days=1))]
    window = [ev("Decrypt", ip="203.0.113.9", agent="curl/8.0")]
    found = rules(baseline + window)["new-source"]
    assert sorted(f.title for f in found) == ["New source IP", "New user agent"]
    assert all(f.severity == "low" for f in found)
    assert "new-source" not in rules([*baseline, ev("Decrypt")])


def test_findings_are_sorted_by_severity() -> None:
    found = findings([ev("DisableKeyRotation"), ev("ScheduleKeyDeletion")], WINDOW)
    assert [f.severity for f in found] == ["critical", "medium"]


def test_the_keys_account_comes_from_its_arn_not_the_first_event() -> None:
    from kmsir.trail.finding import context_for

    callers_copy = ev(
        "CreateGrant",
        account=OUTSIDE,
        granteePrincipal=f"arn:aws:iam::{OUTSIDE}:role/x",
        operations=["Decrypt"],
    )
    callers_copy["recipientAccountId"] = OUTSIDE
    ctx = context_for([callers_copy], f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/k", None)
    assert ctx.key_account == ACCOUNT
    assert [f.title for f in findings([callers_copy], ctx)] == [
        "Grant created for an outside account"
    ]


def test_a_cross_account_call_logged_twice_counts_once() -> None:
    burst = []
    for m in range(3):
        first = ev("Decrypt", at=timedelta(days=6, minutes=m), who="p", error="AccessDenied")
        second = dict(first, eventID=first["eventID"] + "-copy")
        first["sharedEventID"] = second["sharedEventID"] = f"s{m}"
        burst += [first, second]
    assert "access-denied-burst" not in rules(burst)  # 3 calls, not 6


def test_odd_events_do_not_crash_the_rules() -> None:
    odd = [
        {
            "eventID": "n",
            "eventName": "ScheduleKeyDeletion",
            "eventTime": "2026-11-26T00:00:00",
            "requestParameters": "not a mapping",
            "userIdentity": "weird",
        },
        {
            "eventID": "o",
            "eventName": "CreateGrant",
            "eventTime": "2026-11-26T01:00:00Z",
            "requestParameters": {"granteePrincipal": "x", "operations": "Decrypt,Encrypt"},
        },
        {"eventID": "p", "eventName": "PutKeyPolicy", "eventTime": None},
    ]
    found = rules(odd)
    assert [f.title for f in found["key-state"]] == ["Key scheduled for deletion"]
    assert "grant-created" not in found


def test_sessions_of_a_known_role_are_not_new_principals() -> None:
    def session(name: str, at: timedelta) -> dict[str, Any]:
        event = ev("Decrypt", at=at, who=f"app/{name}")
        event["userIdentity"]["sessionContext"] = {
            "sessionIssuer": {"arn": f"arn:aws:iam::{ACCOUNT}:role/app"}
        }
        return event

    events = [session("i-1", timedelta(days=1)), session("i-2", timedelta(days=6))]
    assert "new-data-principal" not in rules(events)


def test_alias_pointed_at_this_key_is_low_and_deletekey_is_critical() -> None:
    ctx = Context(ACCOUNT, WINDOW.window_start, frozenset({"k1"}))
    toward = ev("UpdateAlias", aliasName="alias/pay", targetKeyId="k1")
    found = findings([toward, ev("DeleteKey")], ctx)
    assert [(f.severity, f.title) for f in found] == [  # DeleteKey: KMS's own event
        ("critical", "KMS deleted the key at the end of its waiting period"),
        ("low", "Alias pointed at this key"),
    ]


def test_grants_aws_services_make_for_themselves_are_not_flagged() -> None:
    service = ev(
        "CreateGrant",
        granteePrincipal=f"arn:aws:iam::{ACCOUNT}:role/ebs",
        operations=["Decrypt", "ReEncryptFrom", "ReEncryptTo", "CreateGrant"],
    )
    service["userIdentity"]["invokedBy"] = "ec2.amazonaws.com"
    assert "grant-created" not in rules([service])


def test_actors_behind_findings_name_users_roles_and_their_access_keys() -> None:
    from kmsir.trail.actors import actors

    def user(**kwargs: Any) -> dict[str, Any]:
        event = ev("Decrypt", at=timedelta(days=5, hours=2), **kwargs)
        event["userIdentity"] = {
            "type": "IAMUser",
            "arn": f"arn:aws:iam::{ACCOUNT}:user/svc",
            "accountId": ACCOUNT,
            "userName": "svc",
            "accessKeyId": "AKIAEXAMPLEKEY000001",
        }
        return event

    def role_session(session: str) -> dict[str, Any]:
        event = ev("ScheduleKeyDeletion", at=timedelta(days=5, hours=3))
        event["userIdentity"] = {
            "type": "AssumedRole",
            "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/ci/{session}",
            "accountId": ACCOUNT,
            "accessKeyId": f"ASIA{session.upper():0>16}",
            "sessionContext": {"sessionIssuer": {"arn": f"arn:aws:iam::{ACCOUNT}:role/ci"}},
        }
        return event

    events = [
        ev("Decrypt", at=timedelta(days=1), ip="10.0.0.9"),
        *(user(ip="203.0.113.7") for _ in range(3)),
        role_session("a"),
        role_session("b"),
    ]
    found = findings(events, WINDOW)
    by_principal = {a["principal"]: a for a in actors(found, events)}
    role = by_principal[f"arn:aws:iam::{ACCOUNT}:role/ci"]  # one actor for both sessions
    assert (role["type"], role["role"], role["user"]) == ("AssumedRole", "ci", None)
    assert role["access_keys"] == ["ASIA000000000000000A", "ASIA000000000000000B"]
    assert role["severity"] == "critical" and role["findings"] == 3  # 2 deletions, a new IP
    svc = by_principal[f"arn:aws:iam::{ACCOUNT}:user/svc"]
    assert (svc["user"], svc["access_keys"]) == ("svc", ["AKIAEXAMPLEKEY000001"])
    assert next(iter(by_principal)) == role["principal"]  # the most severe first


# -- any JSON value in any field a rule reads ---------------------------------------------

#: Values a forged record may put where a rule expects something else.
ODD_VALUES: list[Any] = [
    [],
    {},
    None,
    1,
    True,
    "x" * 10_000,
    [[["x", [None]]], {"a": [1, {}]}],
    [None, 1, True, {}, [], "x"],
    "x:alias/pay",  # half an alias ARN
    "arn::key/",
]
_SELECTOR = ("requestParameters", "eventSelectors", 0)
_ADVANCED = ("requestParameters", "advancedEventSelectors", 0)
_CONDITION = (*_ADVANCED, "fieldSelectors", 0)
_STATEMENT = ("requestParameters", "policy", "Statement", 0)
_OPERATORS = ("equals", "notEquals", "startsWith", "notStartsWith", "endsWith", "notEndsWith")
#: Every field (a path of keys and list positions) a rule reads, and the blocks around them.
FUZZED: list[tuple[str | int, ...]] = [
    *[
        (f,)
        for f in (
            "eventSource", "eventTime", "errorCode", "eventID", "sharedEventID",
            "userIdentity", "resources", "requestParameters", "responseElements",
            "sourceIPAddress", "userAgent", "recipientAccountId", "awsRegion",
        )
    ],
    *[
        ("requestParameters", f)
        for f in (
            "keyId", "pendingWindowInDays", "policy", "bypassPolicyLockoutSafetyCheck",
            "granteePrincipal", "operations", "aliasName", "targetKeyId", "trailName", "name",
            "eventSelectors", "advancedEventSelectors", "destinationKeyId", "sourceKeyId",
            "primaryKeyArn", "customKeyStoreId",
        )
    ],
    *[("responseElements", f) for f in ("keyId", "keyMetadata", "replicaKeyMetadata")],
    *[("responseElements", "keyMetadata", f) for f in ("keyId", "arn")],
    ("requestParameters", "operations", 0),
    _STATEMENT[:-1],
    _STATEMENT,
    *[(*_STATEMENT, f) for f in ("Effect", "Principal", "Sid", "Condition")],
    (*_STATEMENT, "Principal", "AWS"),
    (*_STATEMENT, "Principal", "AWS", 0),
    _SELECTOR,
    *[
        (*_SELECTOR, f)
        for f in ("readWriteType", "includeManagementEvents", "excludeManagementEventSources")
    ],
    (*_SELECTOR, "excludeManagementEventSources", 0),
    _ADVANCED,
    (*_ADVANCED, "fieldSelectors"),
    _CONDITION,
    (*_CONDITION, "field"),
    *[(*_CONDITION, op) for op in _OPERATORS],
    (*_CONDITION, "equals", 0),
    *[
        ("userIdentity", f)
        for f in ("type", "arn", "invokedBy", "accountId", "accessKeyId", "sessionContext")
    ],
    ("userIdentity", "sessionContext", "sessionIssuer"),
    ("userIdentity", "sessionContext", "sessionIssuer", "arn"),
    ("resources", 0),
    *[("resources", 0, f) for f in ("ARN", "type", "accountId")],
]  # fmt: skip


def _fuzz_base(name: str, n: int, *, advanced: bool, error: bool) -> dict[str, Any]:
    """A well-formed event of ``name`` carrying every field ``FUZZED`` names, in the baseline
    (``n`` even) or the window (``n`` odd, a new role and IP); trail events with classic or
    advanced selectors."""
    from kmsir.trail.catalogue import TRAIL_EVENTS

    key = f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    kms = "kms.amazonaws.com"
    condition = {"field": "eventCategory", "equals": ["Management"], "notEquals": ["Data"]}
    selectors: dict[str, Any] = (
        {"advancedEventSelectors": [{"name": "m", "fieldSelectors": [condition]}]}
        if advanced
        else {
            "eventSelectors": [  # the first is read to its end: it keeps KMS, writes only
                {
                    "readWriteType": "WriteOnly",
                    "includeManagementEvents": True,
                    "excludeManagementEventSources": ["rdsdata.amazonaws.com"],
                },
                {"includeManagementEvents": True, "excludeManagementEventSources": [kms]},
            ]
        }
    )
    statement = {
        "Sid": "s",
        "Effect": "Allow",
        "Principal": {"AWS": [f"arn:aws:iam::{OUTSIDE}:root", "*"]},
        "Condition": {"StringEquals": {"kms:CallerAccount": OUTSIDE}},
    }
    event: dict[str, Any] = {
        "eventID": f"fuzz-{n}",
        "sharedEventID": f"shared-{n}",
        "eventName": name,
        "eventSource": "cloudtrail.amazonaws.com" if name in TRAIL_EVENTS else "kms.amazonaws.com",
        "eventTime": (START + timedelta(days=n % 2 * 6, minutes=n)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "userIdentity": {
            "type": "AssumedRole",
            "arn": f"arn:aws:sts::{OUTSIDE}:assumed-role/r/s{n % 3}",
            "invokedBy": "ebs.amazonaws.com",
            "accountId": OUTSIDE,
            "accessKeyId": "ASIAEXAMPLE",
            "sessionContext": {"sessionIssuer": {"arn": f"arn:aws:iam::{OUTSIDE}:role/r{n % 2}"}},
        },
        "sourceIPAddress": f"192.0.2.{n % 2}",  # odd: in the window, new
        "userAgent": "aws-cli",
        "recipientAccountId": ACCOUNT,
        "awsRegion": "eu-west-1",
        "requestParameters": {
            "keyId": key,
            "pendingWindowInDays": 7,
            "policy": {"Statement": [statement]},
            "bypassPolicyLockoutSafetyCheck": True,
            "granteePrincipal": f"arn:aws:iam::{OUTSIDE}:role/x",
            "operations": ["Decrypt", "CreateGrant"],
            "aliasName": "alias/pay",
            "targetKeyId": "other",
            "trailName": "main",
            "name": "main",
            **selectors,
        },
        "responseElements": {"keyId": key, "keyMetadata": {"keyId": "k", "arn": key}},
        "resources": [{"ARN": key, "type": "AWS::KMS::Key", "accountId": ACCOUNT}],
    }
    if error:
        event["errorCode"] = "AccessDenied"
    return event


def _with(node: Any, path: tuple[str | int, ...], value: Any) -> Any:
    """``node`` with ``value`` at ``path`` (a field added if need be): the blocks along the
    path copied, the rest shared (rules only read); unchanged when it has no such block
    (classic selectors in a trail event with advanced ones)."""
    if not path:
        return value
    step, rest = path[0], path[1:]
    if isinstance(node, dict) and isinstance(step, str) and (step in node or not rest):
        return {**node, step: _with(node.get(step), rest, value)}
    if isinstance(node, list) and isinstance(step, int) and step < len(node):
        return [*node[:step], _with(node[step], rest, value), *node[step + 1 :]]
    return node


def test_every_rule_takes_any_value_in_any_field_it_reads() -> None:
    """Every catalogue and trail event name, failed or not, with each field the rules (and
    the matcher) read replaced by each odd value: ``findings`` answers, never raises."""
    from kmsir.trail.catalogue import CATALOGUE, TRAIL_EVENTS
    from kmsir.trail.match import KeyMatcher

    matcher = KeyMatcher.for_key(
        f"arn:aws:kms:eu-west-1:{ACCOUNT}:key/k",
        ["alias/pay", f"arn:aws:kms:eu-west-1:{ACCOUNT}:alias/pay"],
    )

    names = [*sorted(CATALOGUE), *sorted(TRAIL_EVENTS), "FrobnicateKey"]
    kinds = [
        (name, advanced, error)
        for name in names
        for advanced in (False, True)
        for error in (False, True)
        if not advanced or name in TRAIL_EVENTS
    ]
    bases = [_fuzz_base(name, n, advanced=a, error=e) for n, (name, a, e) in enumerate(kinds)]
    # the well-formed events give findings: the rules got as far as the fields fuzzed
    rules = {f.id.rsplit("-", 1)[0] for f in findings(bases, WINDOW)}
    assert rules >= {
        "kms-event", "trail-blind-spot", "key-state", "policy-changed", "grant-created",
        "alias-changed", "key-store", "new-data-principal", "new-source",
    }  # fmt: skip
    marker = object()
    for path in FUZZED:
        assert any(_with(e, path, marker) != e for e in bases), f"no event has {path}"
        for value in ODD_VALUES:
            events = [_with(event, path, value) for event in bases]
            try:
                findings(events, WINDOW)
                for event in events:
                    matcher.matches(event)
            except Exception as exc:  # pragma: no cover - the failure says where
                raise AssertionError(f"{path} = {str(value)[:40]}: {exc!r}") from exc

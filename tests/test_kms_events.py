"""Every KMS event understood: the catalogue against botocore's KMS model, a finding for each
change (positive), none for reads, uses of a key or refused calls (negative), unknown names
reported, trails that stop logging KMS, and a key id matched wherever an event names it.

Events follow the shape of AWS's examples in the KMS Developer Guide
(https://docs.aws.amazon.com/kms/latest/developerguide/logging-using-cloudtrail.html and its
``ct-*`` pages: KMS's own events have ``eventType: AwsServiceEvent``, ``invokedBy: AWS
Internal`` and no request parameters, as in
https://docs.aws.amazon.com/kms/latest/developerguide/ct-deleteexpiredkeymaterial.html).
"""

from __future__ import annotations

import gzip
import json
from datetime import datetime, timezone
from itertools import count
from pathlib import Path
from typing import Any

import pytest

from kmsir.trail.catalogue import CATALOGUE, TRAIL_EVENTS, classify
from kmsir.trail.events import _RULES_READ_PARAMETERS, slim
from kmsir.trail.finding import Context
from kmsir.trail.findings import findings
from kmsir.trail.match import KeyMatcher

from .test_cli import assert_no_traceback, kmsir

ACCOUNT = "111122223333"
OUTSIDE = "444455556666"
KEY = "1234abcd-12ab-34cd-56ef-1234567890ab"
ARN = f"arn:aws:kms:us-west-2:{ACCOUNT}:key/{KEY}"
OTHER = ARN.replace("1234abcd", "0987dcba")
STORE = "cks-1234567890abcdef0"
CTX = Context(key_account=ACCOUNT, window_start=None, key_ids=frozenset({KEY}))
_ids = count()

#: Request parameters as AWS's examples log them, by event name (the rest: just ``keyId``).
REQUESTS: dict[str, dict[str, Any]] = {
    "CreateKey": {"description": "", "keySpec": "SYMMETRIC_DEFAULT", "origin": "AWS_KMS"},
    "ScheduleKeyDeletion": {"keyId": KEY, "pendingWindowInDays": 7},
    "PutKeyPolicy": {
        "keyId": KEY,
        "policyName": "default",
        "policy": json.dumps({"Statement": []}),
        "bypassPolicyLockoutSafetyCheck": False,
    },
    "CreateAlias": {"aliasName": "alias/pay", "targetKeyId": KEY},
    "UpdateAlias": {"aliasName": "alias/pay", "targetKeyId": OTHER},
    "DeleteAlias": {"aliasName": "alias/pay"},
    "CreateGrant": {
        "keyId": KEY,
        "granteePrincipal": f"arn:aws:iam::{OUTSIDE}:role/x",
        "operations": ["Decrypt"],
    },
    "RetireGrant": {
        "keyId": KEY,
        "grantId": "0c237476b39f8bc44e45212e08498fbe3151305030726c0590dd8d3e9f3d6a60",
    },
    "RevokeGrant": {
        "keyId": KEY,
        "grantId": "0c237476b39f8bc44e45212e08498fbe3151305030726c0590dd8d3e9f3d6a60",
    },
    "TagResource": {"keyId": KEY, "tags": [{"tagKey": "Project", "tagValue": "Alpha"}]},
    "UntagResource": {"keyId": KEY, "tagKeys": ["Project"]},
    "UpdateKeyDescription": {"keyId": KEY, "description": "new"},
    "GetParametersForImport": {
        "keyId": KEY,
        "wrappingAlgorithm": "RSAES_OAEP_SHA_256",
        "wrappingKeySpec": "RSA_4096",
    },
    "ImportKeyMaterial": {
        "keyId": KEY,
        "validTo": "Jan 1, 2021 8:00:00 PM",
        "expirationModel": "KEY_MATERIAL_EXPIRES",
    },
    "ReplicateKey": {
        "keyId": ARN,
        "replicaRegion": "us-east-1",
        "bypassPolicyLockoutSafetyCheck": False,
    },
    "UpdatePrimaryRegion": {"keyId": ARN, "primaryRegion": "ap-northeast-1"},
    "CreateCustomKeyStore": {
        "customKeyStoreName": "ExampleKeyStore",
        "trustAnchorCertificate": "<redacted>",
    },
    "ConnectCustomKeyStore": {"customKeyStoreId": STORE},
    "DisconnectCustomKeyStore": {"customKeyStoreId": STORE},
    "DeleteCustomKeyStore": {"customKeyStoreId": STORE},
    "UpdateCustomKeyStore": {"customKeyStoreId": STORE, "newCustomKeyStoreName": "new"},
    "ReEncrypt": {"sourceKeyId": KEY, "destinationKeyId": KEY},
    "GenerateRandom": {"numberOfBytes": 32},
    "ListKeys": {},
    "ListAliases": {},
    "DescribeCustomKeyStores": {},
}
#: Names whose realistic event names no key (the custom key stores are matched by their id).
KEYLESS = {
    "CreateCustomKeyStore",
    "ConnectCustomKeyStore",
    "DisconnectCustomKeyStore",
    "DeleteCustomKeyStore",
    "UpdateCustomKeyStore",
    "DescribeCustomKeyStores",
    "GenerateRandom",
    "ListKeys",
    "ListAliases",
}
#: Rules with their own wording for the catalogue's entry (a grant to an outside account...).
RULE_TITLES = {
    "CreateGrant": "Grant created for an outside account",
    "UpdateAlias": "Alias repointed or deleted",
    "DeleteAlias": "Alias repointed or deleted",
}
#: The severity of each change and service event, written out from the severity guide (not
#: read from ``CATALOGUE``): changing a severity in the catalogue fails a test here.
SEVERITY = {
    # data may be lost, or the key handed over
    "ScheduleKeyDeletion": "critical",
    "DeleteImportedKeyMaterial": "critical",
    "DeleteKey": "critical",
    "DeleteExpiredKeyMaterial": "critical",
    # the key stops working or changes hands
    "DisableKey": "high",
    "PutKeyPolicy": "high",
    "CreateGrant": "high",  # a risky one (here: to an outside account)
    "UpdateAlias": "high",
    "DeleteAlias": "high",
    "DisconnectCustomKeyStore": "high",
    "DeleteCustomKeyStore": "high",
    "UpdateCustomKeyStore": "high",
    "ImportKeyMaterial": "high",
    # access or its record changes
    "DisableKeyRotation": "medium",
    "TagResource": "medium",
    "UntagResource": "medium",
    "ReplicateKey": "medium",
    "UpdatePrimaryRegion": "medium",
    "RevokeGrant": "medium",
    "RetireGrant": "medium",  # by a person; by an AWS service: low
    # routine changes a responder still reads
    "CancelKeyDeletion": "low",
    "EnableKey": "low",
    "CreateAlias": "low",
    "GetParametersForImport": "low",
    "RotateKeyOnDemand": "low",
    "CreateCustomKeyStore": "low",
    "ConnectCustomKeyStore": "low",
    "UpdateKeyDescription": "low",
    # what KMS does itself, and a new key
    "CreateKey": "info",
    "EnableKeyRotation": "info",
    "RotateKey": "info",
    "SynchronizeMultiRegionKey": "info",
}
NAMES = sorted(CATALOGUE)
REPORTED = [n for n in NAMES if CATALOGUE[n][0] in ("change", "service")]
QUIET = [n for n in NAMES if CATALOGUE[n][0] in ("crypto", "read")]


def kms_event(name: str, *, error: str | None = None, **fields: Any) -> dict[str, Any]:
    """A CloudTrail record of ``name`` as AWS's examples show it: a call by Alice, or for
    KMS's own events, KMS itself."""
    kind = CATALOGUE[name][0] if name in CATALOGUE else "change"
    service = kind == "service"
    keyless = name in KEYLESS
    event: dict[str, Any] = {
        "eventVersion": "1.11",
        "userIdentity": (
            {"accountId": ACCOUNT, "invokedBy": "AWS Internal"}
            if service
            else {
                "type": "IAMUser",
                "principalId": "EX_PRINCIPAL_ID",
                "arn": f"arn:aws:iam::{ACCOUNT}:user/Alice",
                "accountId": ACCOUNT,
                "accessKeyId": "EXAMPLE_KEY_ID",
                "userName": "Alice",
            }
        ),
        "eventTime": f"2026-11-27T10:{next(_ids) % 60:02d}:00Z",
        "eventSource": "kms.amazonaws.com",
        "eventName": name,
        "awsRegion": "us-west-2",
        "sourceIPAddress": "AWS Internal" if service else "192.0.2.0",
        "userAgent": "AWS Internal" if service else "aws-cli/2.15",
        "requestParameters": None if service else REQUESTS.get(name, {"keyId": KEY}),
        "responseElements": None if keyless else {"keyId": ARN},
        "eventID": f"ev-{next(_ids)}",
        "readOnly": kind in ("read", "crypto"),
        "resources": []
        if keyless
        else [{"accountId": ACCOUNT, "type": "AWS::KMS::Key", "ARN": ARN}],
        "eventType": "AwsServiceEvent" if service else "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
    }
    if name == "CreateKey":
        event["responseElements"] = {"keyMetadata": {"keyId": KEY, "arn": ARN}}
    if service:
        event["serviceEventDetails"] = {"keyId": KEY}
    if error:
        event.update(errorCode=error, errorMessage="not authorized", responseElements=None)
    return event | fields


def titled(found: list[Any], name: str) -> list[tuple[str, str]]:
    return [(f.severity, f.title) for f in found if f.event_name == name]


# -- (a) the catalogue knows every KMS operation --------------------------------------------


def test_every_kms_operation_of_botocore_is_in_the_catalogue() -> None:
    import botocore.session

    operations = set(botocore.session.get_session().get_service_model("kms").operation_names)
    missing = sorted(operations - set(CATALOGUE))
    assert not missing, f"new KMS operations to classify: {missing}"
    # the rest are the events KMS logs for itself (the Developer Guide's internal operations)
    services = {n for n, entry in CATALOGUE.items() if entry[0] == "service"}
    assert (
        set(CATALOGUE) - operations
        == services
        == {
            "DeleteKey",
            "DeleteExpiredKeyMaterial",
            "RotateKey",
            "SynchronizeMultiRegionKey",
        }
    )


def test_the_scan_decodes_what_the_rules_read() -> None:
    assert TRAIL_EVENTS | {"CreateKey", "PutKeyPolicy", "ReplicateKey"} <= _RULES_READ_PARAMETERS
    raw = json.dumps(trail_event("PutEventSelectors", eventSelectors=[])).encode()
    kept = slim(raw)
    assert kept["eventSource"] == "cloudtrail.amazonaws.com"
    assert kept["eventType"] == "AwsApiCall"
    assert kept["requestParameters"] == {"trailName": "main", "eventSelectors": []}


# -- (b) every change is a finding ----------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_each_event_classifies_with_its_title_and_severity(name: str) -> None:
    kind, severity, title, _ = CATALOGUE[name]
    found = classify(kms_event(name))
    assert found is not None
    assert (found.kind, found.severity, found.title) == (kind, severity, title)
    assert title and title[0].isupper() and "_" not in title


def test_every_change_and_service_event_has_its_expected_severity() -> None:
    assert sorted(SEVERITY) == REPORTED  # a new change is given its severity here too
    assert all(CATALOGUE[n][0] in ("crypto", "read") for n in set(NAMES) - set(SEVERITY))


@pytest.mark.parametrize("name", REPORTED)
def test_each_change_and_service_event_is_a_finding(name: str) -> None:
    event = kms_event(name)
    kind = classify(event)
    assert kind is not None and kind.severity == SEVERITY.get(name)
    title = CATALOGUE[name][2]
    assert (SEVERITY[name], RULE_TITLES.get(name, title)) in titled(findings([event], CTX), name)


@pytest.mark.parametrize("name", ["DeleteKey", "DeleteExpiredKeyMaterial", "RotateKey"])
@pytest.mark.parametrize("caller", ["AWS Internal", "kms.amazonaws.com"])
def test_kms_own_events_have_plain_titles(name: str, caller: str) -> None:
    event = kms_event(name, userIdentity={"accountId": ACCOUNT, "invokedBy": caller})
    found = findings([event], CTX)
    assert [f.title for f in found] == [CATALOGUE[name][2]]
    assert found[0].principal == caller and event["requestParameters"] is None
    assert CATALOGUE["DeleteKey"][2] == "KMS deleted the key at the end of its waiting period"


def test_one_finding_per_event_name_and_actor() -> None:
    mine = [kms_event("ImportKeyMaterial") for _ in range(3)]
    theirs = kms_event("ImportKeyMaterial", userIdentity={"arn": "arn:aws:iam::1:user/Bob"})
    found = [f for f in findings([*mine, theirs], CTX) if f.id.startswith("kms-event")]
    assert sorted(len(f.event_ids) for f in found) == [1, 3]
    assert all((f.severity, f.title) == ("high", "Key material imported") for f in found)


def test_a_grant_retired_by_an_aws_service_is_routine() -> None:
    by_service = kms_event(
        "RetireGrant", userIdentity={"accountId": ACCOUNT, "invokedBy": "ebs.amazonaws.com"}
    )
    assert titled(findings([by_service], CTX), "RetireGrant") == [("low", "Grant retired")]
    assert titled(findings([kms_event("RetireGrant")], CTX), "RetireGrant") == [
        ("medium", "Grant retired")
    ]


def test_scan_reports_a_finding_for_every_change_in_a_trail_file(tmp_path: Path) -> None:
    bypassing = ("PutKeyPolicy", "CreateKey", "ReplicateKey")
    events = [kms_event(name) for name in NAMES] + [
        kms_event(n, requestParameters={**REQUESTS[n], "bypassPolicyLockoutSafetyCheck": True})
        for n in bypassing
    ]
    (tmp_path / "trail.json.gz").write_bytes(
        gzip.compress(json.dumps({"Records": events}, separators=(",", ":")).encode())
    )
    out, findings_out = tmp_path / "events.jsonl", tmp_path / "findings.json"
    ran = kmsir(
        "cloudtrail", "scan", str(tmp_path), "--key", ARN,
        "--out", str(out), "--findings-out", str(findings_out),
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert_no_traceback(ran)
    matched = {json.loads(line)["eventName"] for line in out.read_text().splitlines()}
    assert matched == set(NAMES) - KEYLESS
    found = json.loads(findings_out.read_text())
    for name in sorted(set(REPORTED) - KEYLESS - {"ReplicateKey"}):  # grouped: see below
        title = CATALOGUE[name][2]
        mine = [(f["severity"], f["title"]) for f in found if f["event_name"] == name]
        assert (SEVERITY[name], RULE_TITLES.get(name, title)) in mine, name
    assert not {f["event_name"] for f in found} & set(QUIET)
    bypassed = {f["event_name"] for f in found if "safety check bypassed" in f["title"]}
    assert bypassed == set(bypassing)  # the scan decodes the parameters the rules read
    # one finding per (name, actor): Alice's two ReplicateKey calls, the worst one's title
    (replicas,) = [f for f in found if f["event_name"] == "ReplicateKey"]
    assert (replicas["severity"], len(replicas["event_ids"])) == ("critical", 2)


# -- (c) reads, uses of a key and refused calls are no incidents ----------------------------


@pytest.mark.parametrize("name", QUIET)
def test_reads_and_uses_of_a_key_give_no_finding(name: str) -> None:
    assert findings([kms_event(name)], CTX) == []


@pytest.mark.parametrize("name", [n for n in NAMES if CATALOGUE[n][0] == "change"])
def test_a_refused_change_is_never_high_or_critical(name: str) -> None:
    refused = kms_event(name, error="AccessDenied")
    found = findings([refused], CTX)
    assert all(f.severity in ("info", "low", "medium") for f in found), found
    if SEVERITY[name] in ("info", "low"):
        assert found == []


# -- (d) unknown names are reported; other services are not KMS -----------------------------


def test_an_unknown_kms_event_is_one_info_finding() -> None:
    new = [kms_event("FrobnicateKey") for _ in range(2)]
    found = findings(new, CTX)
    assert [(f.severity, f.title, len(f.event_ids)) for f in found] == [
        ("info", "Unknown KMS event FrobnicateKey", 2)
    ]
    # a name no API has is only a forged record's: quoted in why, never in the title
    for forged in ("X" * 100_000, "<script>PWNED</script>", "# PWNED\n"):
        (finding,) = findings([kms_event(forged)], CTX)
        assert finding.title == "Unknown KMS event with a malformed name"
        assert "PWNED" not in finding.title and len(finding.why) < 300


def test_unknown_names_beyond_the_first_share_one_finding() -> None:
    from kmsir.trail.event_rules import MAX_UNKNOWN

    many = [kms_event(f"Forged{n}") for n in range(MAX_UNKNOWN + 5)]
    titles = [f.title for f in findings(many, CTX)]
    assert len(titles) == MAX_UNKNOWN + 1  # a forged trail cannot flood the findings
    assert "Unknown KMS events: 5 more name(s)" in titles


def test_events_of_other_services_are_not_kms_events() -> None:
    s3 = kms_event("DisableKey", eventSource="s3.amazonaws.com")
    assert classify(s3) is None
    assert findings([s3, kms_event("DeleteBucket", eventSource="s3.amazonaws.com")], CTX) == []


# -- (e) the lockout safety check bypassed ---------------------------------------------------


@pytest.mark.parametrize("name", ["PutKeyPolicy", "CreateKey", "ReplicateKey"])
def test_bypassing_the_lockout_safety_check_is_critical(name: str) -> None:
    bypassed = kms_event(
        name, requestParameters={**REQUESTS[name], "bypassPolicyLockoutSafetyCheck": True}
    )
    (finding,) = findings([bypassed], CTX)
    assert finding.severity == "critical" and "safety check bypassed" in finding.title
    refused = findings([{**bypassed, "errorCode": "AccessDenied"}], CTX)
    assert [f.severity for f in refused] == ["medium"]
    plain = findings([kms_event(name)], CTX)
    assert all("bypassed" not in f.title for f in plain)


# -- (f) a trail that stops logging KMS ------------------------------------------------------


def trail_event(name: str, trail: str = "main", **request: Any) -> dict[str, Any]:
    key = "trailName" if name == "PutEventSelectors" else "name"
    return {
        "eventVersion": "1.11",
        "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::{ACCOUNT}:user/Mallory"},
        "eventTime": "2026-11-27T09:00:00Z",
        "eventSource": "cloudtrail.amazonaws.com",
        "eventName": name,
        "awsRegion": "us-west-2",
        "requestParameters": {key: trail, **request},
        "responseElements": None,
        "eventID": f"trail-{next(_ids)}",
        "readOnly": False,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT,
        "eventCategory": "Management",
    }


def basic(**selector: Any) -> dict[str, Any]:
    default = {"readWriteType": "All", "includeManagementEvents": True, "dataResources": []}
    return {"eventSelectors": [default | selector]}


def advanced(*conditions: dict[str, Any]) -> dict[str, Any]:
    management = {"field": "eventCategory", "equals": ["Management"]}
    return {
        "advancedEventSelectors": [{"name": "mgmt", "fieldSelectors": [management, *conditions]}]
    }


BLINDING = {
    "excludes kms": basic(excludeManagementEventSources=["kms.amazonaws.com"]),
    "no management events": basic(includeManagementEvents=False),
    "reads only": basic(readWriteType="ReadOnly"),
    "advanced excludes kms": advanced({"field": "eventSource", "notEquals": ["kms.amazonaws.com"]}),
    "advanced reads only": advanced({"field": "readOnly", "equals": ["true"]}),
    "advanced data only": {
        "advancedEventSelectors": [
            {"fieldSelectors": [{"field": "eventCategory", "equals": ["Data"]}]}
        ]
    },
}
KEEPING = {
    "default": basic(excludeManagementEventSources=[]),
    "excludes rds data only": basic(excludeManagementEventSources=["rdsdata.amazonaws.com"]),
    "two selectors, one keeps kms": {
        "eventSelectors": [
            basic(excludeManagementEventSources=["kms.amazonaws.com"])["eventSelectors"][0],
            basic(readWriteType="All")["eventSelectors"][0],
        ]
    },
    "advanced management": advanced(),
    "advanced excludes rds data": advanced(
        {"field": "eventSource", "notEquals": ["rdsdata.amazonaws.com"]}
    ),
}


@pytest.mark.parametrize("case", sorted(BLINDING))
def test_selectors_that_leave_kms_out_are_critical(case: str) -> None:
    event = trail_event("PutEventSelectors", **BLINDING[case])
    assert KeyMatcher.for_key(ARN).matches(event)
    (finding,) = findings([event], CTX)
    assert (finding.severity, finding.title) == ("critical", "Trail stopped logging KMS events")
    assert finding.id.startswith("trail-blind-spot-") and "main" in finding.why


@pytest.mark.parametrize("case", sorted(KEEPING))
def test_selectors_that_keep_kms_give_no_finding(case: str) -> None:
    assert findings([trail_event("PutEventSelectors", **KEEPING[case])], CTX) == []


def test_a_trail_logging_writes_only_loses_kms_reads() -> None:
    event = trail_event("PutEventSelectors", **basic(readWriteType="WriteOnly"))
    assert [(f.severity, f.title) for f in findings([event], CTX)] == [
        ("high", "Trail stopped logging KMS read events")
    ]


@pytest.mark.parametrize("name", ["StopLogging", "DeleteTrail"])
def test_logging_stopped_or_the_trail_deleted_is_critical(name: str) -> None:
    event = trail_event(name, trail=f"arn:aws:cloudtrail:us-west-2:{ACCOUNT}:trail/main")
    (finding,) = findings([event], CTX)
    assert (finding.severity, finding.title) == ("critical", "Trail stopped logging KMS events")
    refused = findings([{**event, "errorCode": "AccessDenied"}], CTX)
    assert [f.severity for f in refused] == ["medium"]
    # the same name from another service is no trail event
    assert not KeyMatcher.for_key(ARN).matches({**event, "eventSource": "x.amazonaws.com"})


def test_scan_keeps_trail_events_and_reports_them(tmp_path: Path) -> None:
    records = [
        trail_event("StopLogging"),
        trail_event("PutEventSelectors", **BLINDING["excludes kms"]),
        {**trail_event("DescribeTrails"), "requestParameters": {"trailNameList": []}},
        other_key("Decrypt"),
    ]
    (tmp_path / "t.json").write_text(json.dumps({"Records": records}, separators=(",", ":")))
    out, findings_out = tmp_path / "e.jsonl", tmp_path / "f.json"
    ran = kmsir(
        "cloudtrail", "scan", str(tmp_path), "--key", KEY,
        "--out", str(out), "--findings-out", str(findings_out),
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    kept = [json.loads(line)["eventName"] for line in out.read_text().splitlines()]
    assert sorted(kept) == ["PutEventSelectors", "StopLogging"]
    found = json.loads(findings_out.read_text())
    assert [f["title"] for f in found] == ["Trail stopped logging KMS events"] * 2


def test_lookup_fetches_trail_events_by_name(moto_clients: Any) -> None:
    from kmsir.actions.cloudtrail import Collect, CollectParams
    from kmsir.sandbox import lookup

    from .fakes import context

    lookup.install()
    key = moto_clients.client("kms").create_key()["KeyMetadata"]
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    stop = {**trail_event("StopLogging"), "eventTime": now}
    lookup.add_events(key["AWSAccountId"], "eu-west-1", [stop])
    ctx, calls = context(moto_clients)
    outcome = Collect().run(ctx, CollectParams(key=key["Arn"], since="1d"))
    assert outcome.outputs["event_names"] == {"StopLogging": 1}
    asked = {
        (
            c.params["LookupAttributes"][0]["AttributeKey"],
            c.params["LookupAttributes"][0]["AttributeValue"],
        )
        for c in calls
        if c.operation == "LookupEvents"
    }
    assert {("EventName", n) for n in TRAIL_EVENTS} <= asked


def test_athena_and_lake_sql_select_trail_events() -> None:
    from kmsir.actions.trail_query import athena_sql, lake_sql

    start = datetime(2026, 11, 20, tzinfo=timezone.utc)
    end = datetime(2026, 11, 28, tzinfo=timezone.utc)
    trail_names = "('DeleteTrail', 'PutEventSelectors', 'StopLogging')"
    athena = athena_sql("d", "t", [KEY], start, end)
    assert f"(eventsource = 'cloudtrail.amazonaws.com' AND eventname IN {trail_names})" in athena
    lake = lake_sql("store", [KEY], start, end)
    assert f"(eventSource = 'cloudtrail.amazonaws.com' AND eventName IN {trail_names})" in lake


# -- (g) a key id matches wherever the event names it ----------------------------------------


def other_key(name: str, **request: Any) -> dict[str, Any]:
    """``name`` on another key, as resources say; ``request`` may name ours."""
    return kms_event(
        name,
        requestParameters=request or {"keyId": OTHER},
        responseElements=None,
        resources=[{"accountId": ACCOUNT, "type": "AWS::KMS::Key", "ARN": OTHER}],
    )


def test_a_key_id_in_the_request_matches_whatever_resources_list() -> None:
    reencrypt = other_key("ReEncrypt", sourceKeyId=OTHER, destinationKeyId=KEY)
    assert KeyMatcher.for_key(KEY).matches(reencrypt)
    assert KeyMatcher.for_key(ARN).matches(reencrypt)


@pytest.mark.parametrize("where", ["another Region", "another account"])
def test_a_key_arn_elsewhere_with_the_same_id_matches(where: str) -> None:
    arn = ARN.replace("us-west-2", "ap-south-1")
    arn = arn.replace(ACCOUNT, OUTSIDE) if where == "another account" else arn
    assert arn.endswith(KEY) and arn != ARN
    matcher = KeyMatcher.for_key(ARN)
    assert matcher.matches(other_key("Decrypt", keyId=arn))  # resources list another key
    assert matcher.matches({**other_key("Decrypt"), "resources": [{"ARN": arn}]})


def test_aliases_keep_their_rule_and_other_keys_do_not_match() -> None:
    matcher = KeyMatcher.for_key(ARN, ["alias/pay"])
    # the resources say which key the alias resolved to: another one
    assert not matcher.matches(other_key("Decrypt", keyId="alias/pay"))
    moved = other_key("UpdateAlias", aliasName="alias/pay", targetKeyId=OTHER)
    assert matcher.matches(moved)  # our alias moved away
    assert not matcher.matches(other_key("Decrypt"))
    assert not matcher.matches(other_key("Decrypt", bucketName=KEY))  # not a key field

"""The one matching function: an event names the key by id, ARN, alias, ReEncrypt, MRK."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kmsir.trail.catalogue import TRAIL_EVENTS
from kmsir.trail.match import KeyMatcher

KEY = "1234abcd-12ab-34cd-56ef-1234567890ab"
ARN = f"arn:aws:kms:eu-west-1:111122223333:key/{KEY}"
MRK = "mrk-1234abcd12ab34cd56ef1234567890ab"
MATCHER = KeyMatcher.for_key(ARN, aliases=["alias/payments"])


@pytest.mark.parametrize(
    "event",
    [
        {"resources": [{"ARN": ARN, "type": "AWS::KMS::Key"}]},
        {"requestParameters": {"keyId": KEY}},
        {"requestParameters": {"keyId": ARN}},
        {"requestParameters": {"keyId": "alias/payments"}},
        {"requestParameters": {"keyId": "arn:aws:kms:eu-west-1:111122223333:alias/payments"}},
        {"requestParameters": {"destinationKeyId": ARN, "sourceKeyId": "other"}},
        {"requestParameters": {"sourceKeyId": KEY}},
        {"requestParameters": {"targetKeyId": KEY, "aliasName": "alias/new"}},
        {"requestParameters": {"aliasName": "alias/payments", "targetKeyId": "other"}},
        {"responseElements": {"keyId": ARN}},
        {"responseElements": {"keyMetadata": {"keyId": KEY, "arn": ARN}}},
    ],
)
def test_matches(event: dict[str, Any]) -> None:
    assert MATCHER.matches(event)


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"resources": [{"ARN": ARN.replace("1234abcd", "99999999")}]},
        {"requestParameters": {"keyId": "alias/other"}},
        {"requestParameters": {"bucketName": KEY}},  # the id in an unrelated field
        {"requestParameters": None, "responseElements": "x", "resources": "y"},
    ],
)
def test_does_not_match(event: dict[str, Any]) -> None:
    assert not MATCHER.matches(event)


def test_multi_region_siblings_match_by_id() -> None:
    matcher = KeyMatcher.for_key(f"arn:aws:kms:eu-west-1:111122223333:key/{MRK}")
    replica = f"arn:aws:kms:us-east-1:111122223333:key/{MRK}"
    assert matcher.matches({"resources": [{"ARN": replica}]})
    assert matcher.matches({"requestParameters": {"primaryKeyArn": replica}})
    assert matcher.matches({"responseElements": {"replicaKeyMetadata": {"arn": replica}}})


def test_needles_cover_every_name_and_the_trail_events() -> None:
    # the trail events name no key: the service that logs them finds them in a raw file
    assert set(MATCHER.needles) == {KEY.encode(), b"alias/payments", b'"cloudtrail.amazonaws.com"'}
    for name in sorted(TRAIL_EVENTS):
        event = {"eventSource": "cloudtrail.amazonaws.com", "eventName": name}
        raw = json.dumps(event, separators=(",", ":")).encode()
        assert MATCHER.matches(event)
        assert any(needle in raw for needle in MATCHER.needles), name


def test_an_alias_is_ours_only_in_the_keys_account_and_region() -> None:
    here = {"recipientAccountId": "111122223333", "awsRegion": "eu-west-1"}
    other_account = {"recipientAccountId": "999988887777", "awsRegion": "eu-west-1"}
    by_alias = {"requestParameters": {"keyId": "alias/payments"}}
    assert MATCHER.matches({**by_alias, **here})
    assert not MATCHER.matches({**by_alias, **other_account})
    other_arn = "arn:aws:kms:eu-west-1:999988887777:alias/payments"
    assert not MATCHER.matches({"requestParameters": {"keyId": other_arn}})


def test_resources_say_which_key_was_really_used() -> None:
    other = ARN.replace("1234abcd", "99999999")
    event = {
        "requestParameters": {"keyId": "alias/payments"},
        "resources": [{"ARN": other, "type": "AWS::KMS::Key"}],
    }
    assert not MATCHER.matches(event)
    moved = {
        "eventName": "UpdateAlias",
        "requestParameters": {"aliasName": "alias/payments", "targetKeyId": other},
        "resources": [{"ARN": other, "type": "AWS::KMS::Key"}],
    }
    assert MATCHER.matches(moved)  # our alias was moved away: that is about our key


def test_custom_key_store_ids_can_be_matched() -> None:
    matcher = KeyMatcher.for_key(ARN, extra=["cks-1234567890abcdef0"])
    assert matcher.matches(
        {
            "eventName": "DisconnectCustomKeyStore",
            "requestParameters": {"customKeyStoreId": "cks-1234567890abcdef0"},
        }
    )

"""The one matching function: an event names the key by id, ARN, alias, ReEncrypt, MRK."""

from __future__ import annotations

from typing import Any

import pytest

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


def test_needles_cover_every_name() -> None:
    assert set(MATCHER.needles) == {KEY.encode(), b"alias/payments"}

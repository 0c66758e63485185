"""KMS findings over a key's CloudTrail events: the few that matter, surfaced first.

Rules are small functions over the events sorted by time, registered in ``RULES``: those about
changes to the key itself are in ``key_rules``, every other change KMS logged (by the event
catalogue, ``catalogue``) and trails that stopped logging KMS in ``event_rules``, those
comparing the incident window against the baseline before it (and bursts of AccessDenied) in
``activity_rules``. A finding, and the
``Context`` rules read besides the events, are defined in ``finding``; a failed call
(``errorCode``) never raises a finding above medium on its own.

Events are attacker-controlled: any field may be missing or of any type (``fields`` reads them
defensively), and text from them is cut (``clip``) before it goes into a finding, so a megabyte
of user agent stays in the event.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from kmsir.trail import activity_rules, event_rules, key_rules
from kmsir.trail.finding import SEVERITIES, Context, Finding, Rule

RULES: dict[str, Rule] = {
    "key-state": key_rules.deletion_and_disable,
    "policy-changed": key_rules.policy_changed,
    "grant-created": key_rules.grant_created,
    "rotation-disabled": key_rules.rotation_disabled,
    "alias-changed": key_rules.alias_changed,
    "key-store": key_rules.key_store_disconnected,
    "kms-event": event_rules.catalogue_events,
    "trail-blind-spot": event_rules.trail_blind_spots,
    "access-denied-burst": activity_rules.access_denied_bursts,
    "new-data-principal": activity_rules.new_data_principals,
    "volume-spike": activity_rules.volume_spikes,
    "new-source": activity_rules.new_sources,
}


def _one_per_call(events: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """A cross-account call is logged in both accounts (same ``sharedEventID``): once here."""
    seen: set[str] = set()
    for event in events:
        shared = event.get("sharedEventID")
        if isinstance(shared, str):
            if shared in seen:
                continue
            seen.add(shared)
        yield event


def findings(events: Iterable[dict[str, Any]], ctx: Context) -> list[Finding]:
    """Every finding over the events, most severe first, then by time."""
    ordered = sorted(_one_per_call(events), key=lambda e: str(e.get("eventTime", "")))
    found = [f for rule in RULES.values() for f in rule(ordered, ctx)]
    return sorted(found, key=lambda f: (-SEVERITIES.index(f.severity), f.event_time))

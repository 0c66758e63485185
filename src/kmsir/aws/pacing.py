"""Pacing: the requests of an operation with a known quota go at that quota, never faster.

``pace`` gives a client a ``before-send`` hook (``ClientFactory`` does it for every client it
makes) that waits its turn on the process's one schedule, ``PACING``: shared by every client
and every thread, so no caller paces by hand.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

#: Request quotas AWS documents, which kmsir sends at: requests per second per account and
#: Region, by (service, operation). botocore's adaptive retry mode only slows down after a
#: first throttle; a quota known in advance is kept from the first request on. CloudTrail's
#: LookupEvents: 2 a second (CloudTrail quotas, "LookupEvents API"). KMS: the calls kmsir
#: makes per key when it reads many keys at once (snapshot, blast radius, posture review), at
#: the defaults of the KMS Developer Guide's "Request quotas" table
#: (https://docs.aws.amazon.com/kms/latest/developerguide/requests-per-second.html).
QUOTAS: dict[tuple[str, str], float] = {
    ("cloudtrail", "LookupEvents"): 2.0,
    ("kms", "DescribeKey"): 2000.0,
    ("kms", "GetKeyPolicy"): 1000.0,
    ("kms", "GetKeyRotationStatus"): 1000.0,
    ("kms", "ListAliases"): 500.0,
    ("kms", "ListGrants"): 100.0,
    ("kms", "ListKeyPolicies"): 100.0,
    ("kms", "ListKeyRotations"): 100.0,
    ("kms", "ListKeys"): 500.0,
    ("kms", "ListResourceTags"): 2000.0,
    ("kms", "DescribeCustomKeyStores"): 5.0,
    ("kms", "RevokeGrant"): 50.0,
}


class Pacing:
    """Sends the requests of an operation with a known quota at that quota, never faster: one
    schedule per quota holder, shared by every client of the process and every thread.

    A quota is per account and Region: every caller with the same credentials in the same
    Region waits its turn on the same schedule, whichever factory made its client. The access
    key id stands for the account (two keys of one account are paced apart, as two processes
    would be).
    """

    def __init__(
        self,
        quotas: Mapping[tuple[str, str], float],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.quotas = quotas
        self._clock = clock
        self._sleep = sleep
        #: When the next request may go, by (service, operation, access key id, Region).
        self._next: dict[tuple[str, str, str, str], float] = {}
        self._lock = threading.Lock()

    def wait(self, service: str, operation: str, credential: str, region: str) -> None:
        """Block until this request may go: at once for an operation without a known quota,
        else at least ``1 / quota`` seconds after the previous one of the same holder."""
        rate = self.quotas.get((service, operation))
        if rate is None:
            return
        key = (service, operation, credential, region)
        with self._lock:
            now = self._clock()
            due = self._next.get(key, now)
            self._next[key] = max(now, due) + 1.0 / rate
        if due > now:
            self._sleep(due - now)


#: The process's pacing (the ``before-send`` hook of every client looks it up when it runs).
PACING = Pacing(QUOTAS)
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


def _credential(request: Any) -> str:
    """The access key id a signed request was signed with (SigV4 ``Authorization`` header),
    or ``""`` for an unsigned one."""
    header = request.headers.get("Authorization") or b""
    text = header.decode(errors="replace") if isinstance(header, bytes) else str(header)
    found = _CREDENTIAL.search(text)
    return found[1] if found else ""


def pace(client: Any) -> None:
    """Make every request ``client`` (a botocore client) sends wait its turn on ``PACING``."""
    meta = client.meta
    service = meta.service_model.service_name
    region = meta.region_name

    def wait(request: Any, event_name: str, **_: Any) -> None:
        # every attempt counts against a quota, botocore's retries too; on the service's
        # own event, so it runs before any handler on plain ``before-send`` answers
        PACING.wait(service, event_name.rsplit(".", 1)[-1], _credential(request), region)

    meta.events.register_first(f"before-send.{meta.service_model.service_id.hyphenize()}", wait)

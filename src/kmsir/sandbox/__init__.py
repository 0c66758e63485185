"""The embedded sandbox: moto in process, seeded from a scenario, unable to reach AWS.

``Sandbox`` forces dummy credentials (and hides every profile and credentials file), starts
moto's in-process mock with its random generator seeded (the same scenario always gets the
same key and grant ids), installs LookupEvents, seeds the scenario's world, and hands out a
``ClientFactory`` whose transport refuses anything moto did not answer.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Any

from kmsir import templating
from kmsir.actions.aws import ClientFactory, refuse_transport
from kmsir.evidence import canonical, sent_intents, sha256_hex, timestamp
from kmsir.sandbox import lookup, shim
from kmsir.sandbox.scenario import EventSpec, IdentitySpec, Scenario
from kmsir.values import duration_seconds

#: moto's default account: the dummy credentials below see this account.
ACCOUNT = "123456789012"
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7SANDBOX",
    "AWS_SECRET_ACCESS_KEY": "kmsir-sandbox-dummy-secret",
    "AWS_SESSION_TOKEN": "kmsir-sandbox-dummy-token",
}
#: Environment variables that could point a client at real credentials or endpoints.
_HIDDEN = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_KMS",
    "AWS_ENDPOINT_URL_CLOUDTRAIL",
    "AWS_ENDPOINT_URL_STS",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
)


class Sandbox:
    """A seeded moto world for one scenario; use as a context manager."""

    def __init__(self, scenario: Scenario, *, now: datetime | None = None) -> None:
        self.scenario = scenario
        self.region = scenario.region
        self.account = ACCOUNT
        self.now = now or datetime.now(timezone.utc)
        self.keys: dict[str, dict[str, str]] = {}
        self.grants: dict[str, dict[str, str]] = {}
        self._saved_env: dict[str, str | None] = {}
        self._mock: Any = None

    def __enter__(self) -> Sandbox:
        self._force_environment()
        try:
            from moto import mock_aws
            from moto.moto_api._internal import mock_random

            self._mock = mock_aws()
            self._mock.start()
            mock_random.seed(self.scenario.seed)
            lookup.install()
            shim.install()
            self._seed()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._mock is not None:
            self._mock.stop()
            self._mock = None
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()

    def _force_environment(self) -> None:
        forced = {
            **DUMMY_CREDENTIALS,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        for name in (*forced, *_HIDDEN):
            self._saved_env.setdefault(name, os.environ.get(name))
        for name in _HIDDEN:
            os.environ.pop(name, None)
        os.environ.update(forced)

    def session(self) -> Any:
        """A boto3 session with the sandbox's dummy credentials."""
        import boto3

        return boto3.Session(
            aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=DUMMY_CREDENTIALS["AWS_SESSION_TOKEN"],
            region_name=self.region,
        )

    def client_factory(self) -> ClientFactory:
        """Clients for this sandbox; a request moto does not answer is refused."""
        return ClientFactory(session_factory=self.session, region=self.region, guard_send=True)

    # -- serving other clients ------------------------------------------------------------

    def serve(self, port: int = 0) -> tuple[Any, str]:
        """This world as a moto server on 127.0.0.1 (never another address), for any other
        AWS client; the fidelity shim and LookupEvents apply to it too. Returns the server
        (``stop()`` it) and its endpoint URL."""
        import logging
        import socket

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per request
        if port == 0:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        return server, f"http://127.0.0.1:{port}"

    def client_environment(self, endpoint: str) -> dict[str, str]:
        """The variables that point any AWS client at this world served at ``endpoint``."""
        return {
            "AWS_ENDPOINT_URL": endpoint,
            **DUMMY_CREDENTIALS,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
        }

    # -- surviving a crash ----------------------------------------------------------------

    def record(self) -> dict[str, Any]:
        """What a resumed run needs to rebuild this same world: the clock and the scenario."""
        return {
            "now": timestamp(self.now),
            "seed": self.scenario.seed,
            "scenario_sha256": self.fingerprint,
        }

    @property
    def fingerprint(self) -> str:
        """sha256 of the scenario as loaded: a changed scenario would seed another world."""
        return sha256_hex(canonical(self.scenario.model_dump(mode="json")))

    def replay(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        """Re-apply the state-changing calls a journal records, in order, to this re-seeded
        world, so a resumed run continues where the interrupted one left the sandbox.

        A call whose intent was journaled but whose result was not (the process died in
        between) is re-applied as if it reached AWS; one that AWS refused is not.
        """
        from botocore import xform_name
        from botocore.exceptions import ClientError

        session = self.session()
        replayed, refused = 0, []
        for entry in sent_intents(entries):
            intent = entry["data"]
            client = session.client(intent["service"], region_name=intent["region"])
            refuse_transport(client)
            try:
                getattr(client, xform_name(intent["operation"]))(**intent["params"])
            except ClientError as exc:
                refused.append(f"{intent['operation']}: {exc.response['Error'].get('Code')}")
            except Exception as exc:  # moto may not implement it: say so and go on
                refused.append(f"{intent['operation']}: {type(exc).__name__}")
            else:
                replayed += 1
        return {"replayed": replayed, "refused": refused}

    # -- seeding --------------------------------------------------------------------------

    def _seed(self) -> None:
        kms = self.session().client("kms")
        for name, spec in self.scenario.keys.items():
            metadata = kms.create_key(
                Description=spec.description,
                Tags=[{"TagKey": k, "TagValue": v} for k, v in spec.tags.items()],
            )["KeyMetadata"]
            key_id = metadata["KeyId"]
            self.keys[name] = {"id": key_id, "arn": metadata["Arn"], "alias": spec.alias or ""}
            if spec.alias:
                kms.create_alias(AliasName=spec.alias, TargetKeyId=key_id)
            if spec.rotation:
                kms.enable_key_rotation(KeyId=key_id)
            if not spec.enabled:
                kms.disable_key(KeyId=key_id)
            if spec.policy is not None:
                policy = self._render(spec.policy)
                kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=json.dumps(policy))
            if spec.pending_deletion_days:
                kms.schedule_key_deletion(
                    KeyId=key_id, PendingWindowInDays=spec.pending_deletion_days
                )
        for name, grant in self.scenario.grants.items():
            key = self.keys[grant.key]
            created = kms.create_grant(
                KeyId=key["id"],
                GranteePrincipal=self._render(grant.grantee),
                Operations=grant.operations,
                Name=grant.name,
            )
            self.grants[name] = {"id": created["GrantId"], "key": key["id"], "name": grant.name}
            if grant.created:
                self._backdate_grant(key["id"], created["GrantId"], grant.created)
        history = list(self._history())
        lookup.add_events(self.account, self.region, history)
        self._write_trail_files(history)

    @property
    def trail_bucket(self) -> str:
        """The moto S3 bucket holding the history as CloudTrail log files."""
        return f"kmsir-sandbox-trail-{self.account}"

    def _write_trail_files(self, events: list[dict[str, Any]]) -> None:
        """The history as CloudTrail writes it: one gzipped file a day, AWSLogs layout."""
        import gzip
        import json
        from collections import defaultdict

        s3 = self.session().client("s3")
        config = (
            {}
            if self.region == "us-east-1"
            else {"CreateBucketConfiguration": {"LocationConstraint": self.region}}
        )
        s3.create_bucket(Bucket=self.trail_bucket, **config)
        by_day: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for event in events:
            by_day[event["eventTime"][:10]].append(event)
        for day, records in sorted(by_day.items()):
            year, month, date = day.split("-")
            key = (
                f"AWSLogs/{self.account}/CloudTrail/{self.region}/{year}/{month}/{date}/"
                f"{self.account}_CloudTrail_{self.region}_{year}{month}{date}T0000Z_sim.json.gz"
            )
            body = json.dumps({"Records": records}, separators=(",", ":")).encode()
            s3.put_object(Bucket=self.trail_bucket, Key=key, Body=gzip.compress(body, mtime=0))

    def _backdate_grant(self, key_id: str, grant_id: str, ago: str) -> None:
        """Give a seeded grant the creation time its story says (ListGrants reports it)."""
        from moto.kms.models import kms_backends

        moment = self.now - timedelta(seconds=duration_seconds(ago.removeprefix("-")))
        grant = kms_backends[self.account][self.region].keys[key_id].grants[grant_id]
        setattr(grant, "kmsir_created", moment.timestamp())  # noqa: B010 - read by the shim

    def template_context(self) -> dict[str, Any]:
        """What scenario strings may refer to."""
        return {
            "account": self.account,
            "region": self.region,
            "keys": self.keys,
            "grants": self.grants,
            "trail_bucket": self.trail_bucket,
        }

    def _render(self, value: Any) -> Any:
        return templating.render_value(value, self.template_context())

    def _history(self) -> Any:
        rng = random.Random(self.scenario.seed)  # noqa: S311 - ids, not secrets
        for spec in self.scenario.history:
            first = self.now - timedelta(seconds=duration_seconds(spec.at.removeprefix("-")))
            step = timedelta(seconds=duration_seconds(spec.every))
            for n in range(spec.count):
                yield self._event(spec, first + n * step, rng)

    def _identity(self, spec: IdentitySpec) -> dict[str, Any]:
        account = spec.account or self.account
        access_key = spec.access_key_id or "ASIA" + "".join(
            random.Random(spec.name).choices("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", k=16)  # noqa: S311
        )
        principal = (
            "AROA" + uuid.UUID(int=random.Random(spec.name).getrandbits(128)).hex[:17].upper()  # noqa: S311
        )
        if spec.type == "AssumedRole":
            session = spec.session or "session"
            return {
                "type": "AssumedRole",
                "principalId": f"{principal}:{session}",
                "arn": f"arn:aws:sts::{account}:assumed-role/{spec.name}/{session}",
                "accountId": account,
                "accessKeyId": access_key,
                "sessionContext": {
                    "sessionIssuer": {
                        "type": "Role",
                        "principalId": principal,
                        "arn": f"arn:aws:iam::{account}:role/{spec.name}",
                        "accountId": account,
                        "userName": spec.name,
                    },
                    "attributes": {"mfaAuthenticated": "false"},
                },
            }
        if spec.type == "IAMUser":
            return {
                "type": "IAMUser",
                "principalId": principal.replace("AROA", "AIDA"),
                "arn": f"arn:aws:iam::{account}:user/{spec.name}",
                "accountId": account,
                "accessKeyId": spec.access_key_id or access_key.replace("ASIA", "AKIA"),
                "userName": spec.name,
            }
        if spec.type == "Root":
            return {
                "type": "Root",
                "principalId": account,
                "arn": f"arn:aws:iam::{account}:root",
                "accountId": account,
            }
        return {"type": "AWSService", "invokedBy": spec.name}

    def _event(self, spec: EventSpec, moment: datetime, rng: random.Random) -> dict[str, Any]:
        identity = self._identity(self.scenario.identities[spec.identity])
        read_only = spec.read_only
        if read_only is None:
            read_only = spec.event.startswith(("Describe", "Get", "List"))
        event: dict[str, Any] = {
            "eventVersion": "1.10",
            "userIdentity": identity,
            "eventTime": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventSource": "kms.amazonaws.com",
            "eventName": spec.event,
            "awsRegion": self.region,
            "sourceIPAddress": self._render(spec.source_ip),
            "userAgent": self._render(spec.user_agent),
            "requestParameters": self._render(spec.request) or None,
            "responseElements": self._render(spec.response) if spec.response is not None else None,
            "requestID": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "eventID": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "readOnly": read_only,
            "eventType": "AwsApiCall",
            "managementEvent": True,
            "recipientAccountId": self.account,
            "eventCategory": "Management",
        }
        if spec.key is not None:
            key = self.keys[spec.key]
            event["resources"] = [
                {"accountId": self.account, "type": "AWS::KMS::Key", "ARN": key["arn"]}
            ]
        if identity.get("accountId") not in (None, self.account):
            event["sharedEventID"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if spec.error_code:
            event["errorCode"] = spec.error_code
            event["errorMessage"] = self._render(spec.error_message or spec.error_code)
        return event

"""The embedded sandbox: moto in process, seeded from a scenario, unable to reach AWS.

``Sandbox`` forces dummy credentials (and hides every profile, credentials file and other
``AWS_*`` setting of the shell), starts moto's in-process mock with its random generator
seeded (the same scenario always gets the same key, grant and access key ids), installs
LookupEvents and its CloudTrail recorder, seeds the scenario's world (with a trail delivering to
the trail bucket, which holds the scenario's history, unless the scenario has trails of its
own), then records every call that changes it or uses a key (``recorder``: in LookupEvents,
and in the bucket of each trail that logs it, whose digest files ``trail_digests`` writes and
signs), and hands out a ``ClientFactory``. Every client made
from the sandbox's session, its own seeding and injects included, refuses anything moto did
not answer, so nothing goes on the wire. After each step of a run, ``after_step`` fires the
scenario's injects for that step; before each, ``before_step`` fires its timed injects once
due (``hold``/``release`` pause them; ``fire_now`` is a facilitator's inject).
"""

from __future__ import annotations

import functools
import json
import os
import random
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Any, Literal

from kmsir.aws import ClientFactory, refuse_unanswered
from kmsir.errors import UsageError
from kmsir.evidence.bundle import canonical, sha256_hex, timestamp
from kmsir.evidence.view import RunView
from kmsir.playbook import templating
from kmsir.playbook.values import duration_seconds
from kmsir.sandbox import (
    containment,
    history,
    lookup,
    posture_seed,
    recorder,
    resources,
    second_identity,
    seed_kms,
    shim,
    trail_digests,
)
from kmsir.sandbox.injects import Injects
from kmsir.sandbox.scenario import ACCOUNT, trail_bucket
from kmsir.sandbox.scenario_model import Scenario
from kmsir.sandbox.second_identity import SecondIdentity

DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7SANDBOX",
    "AWS_SECRET_ACCESS_KEY": "kmsir-sandbox-dummy-secret",
    "AWS_SESSION_TOKEN": "kmsir-sandbox-dummy-token",
}
#: Every environment variable with this prefix is hidden while a sandbox is up (except those
#: it sets itself): besides profiles, credentials and ``AWS_ENDPOINT_URL``, the SDKs read
#: ``AWS_ENDPOINT_URL_<SERVICE>`` for any service, ``AWS_USE_DUALSTACK_ENDPOINT`` and
#: ``AWS_USE_FIPS_ENDPOINT`` (hosts moto does not answer: the request would go to AWS),
#: ``AWS_DATA_PATH`` (endpoint data of one's own)... and new ones with each release.
_HIDDEN_PREFIX = "AWS_"


class Sandbox:
    """A seeded moto world for one scenario; use as a context manager."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        now: datetime | None = None,
        clock: Callable[[], datetime] | None = None,
        second_person: bool = False,
    ) -> None:
        self.scenario = scenario
        #: The two-person rule applies (``run --require-approval``, or the scenario's
        #: ``approvals: required``): the world has a second identity to approve with.
        self.second_person = second_person or scenario.approvals == "required"
        self.second: SecondIdentity | None = None
        self.region = scenario.region
        self.account = ACCOUNT
        self.now = now or datetime.now(timezone.utc)
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.keys: dict[str, dict[str, Any]] = {}
        #: The scenario's custom key stores: name -> ``id``, ``name``, ``type``.
        self.key_stores: dict[str, dict[str, str]] = {}
        self.grants: dict[str, dict[str, str]] = {}
        self.users: dict[str, dict[str, Any]] = {}
        #: The scenario's resources: name -> the ARN AWS gives it (``resources.seed``).
        self.resources: dict[str, str] = {}
        self.injects = Injects(self)
        self._factories: list[ClientFactory] = []
        self._saved_env: dict[str, str | None] = {}
        self._mock: Any = None
        #: The sandbox's CloudTrail recording (``recorder``), from the end of seeding on.
        self.trail: recorder.Trail | None = None
        #: The trail the sandbox seeded (``None``: the scenario declares its own trails).
        self.trail_name: str | None = None

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
            recorder.install()
            trail_digests.install()
            self._seed()
            # from here on, what changes the world is recorded (seeding is the story's)
            self.trail = recorder.Trail(
                account=self.account,
                region=self.region,
                clock=self.clock,
                seed=str(self.scenario.seed),
            )
            recorder.attach(self.trail)
            trail_digests.attach(self.now, self.clock)  # digests by the world's clock
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
        if self.trail is not None:
            recorder.detach(self.trail)
            trail_digests.detach()
            self.trail = None
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
            # moto would give each Region's EC2 a thousand public AMIs with their snapshots
            # and volumes, which no account owns (and a review would list)
            "MOTO_EC2_LOAD_DEFAULT_AMIS": "false",
        }
        hidden = [name for name in os.environ if name.startswith(_HIDDEN_PREFIX)]
        for name in (*forced, *hidden):
            self._saved_env.setdefault(name, os.environ.get(name))
        for name in hidden:
            os.environ.pop(name, None)
        os.environ.update(forced)

    def session(self) -> Any:
        """A boto3 session with the sandbox's dummy credentials; every client made from it
        refuses to send what moto did not answer."""
        import boto3
        import botocore.session

        core = botocore.session.get_session()
        # every session of the sandbox reads the service models and endpoints once between them
        core.register_component("data_loader", _shared_loader())
        session = boto3.Session(
            botocore_session=core,
            aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            aws_session_token=DUMMY_CREDENTIALS["AWS_SESSION_TOKEN"],
            region_name=self.region,
        )
        refuse_unanswered(session.events)  # every client made from it, seeding and injects too
        return session

    def client_factory(self) -> ClientFactory:
        """Clients for this sandbox; a request moto does not answer is refused."""
        factory = ClientFactory(session_factory=self.session, region=self.region, guard_send=True)
        self._factories.append(factory)
        return factory

    # -- injects --------------------------------------------------------------------------

    def after_step(self, step_id: str) -> list[dict[str, Any]]:
        """Fire the scenario's injects waiting for step ``step_id`` (each at most once);
        records of what each did (``say``, ``calls``, ``events``) for the engine to journal.
        The engine calls this only after a step that was done (succeeded, or already so).

        Nothing fires while the run is in check mode: the responder changes nothing then,
        so the world has nothing to react to.
        """
        if self._checking():
            return []
        return self.injects.after(step_id, self.clock())

    def before_step(self, step_id: str | None) -> list[dict[str, Any]]:
        """Fire the timed injects due by the sandbox's clock (``after_minutes`` from its
        ``now``), unless held, at the boundary before step ``step_id`` (``None``: the run's
        end); records for the engine to journal, as ``after_step``'s (none in check mode)."""
        if self._checking():
            return []
        moment = self.clock()
        return [
            self.injects.fire(n, moment, trigger="timer", before=step_id)
            for n in self.injects.due(self.now, moment)
        ]

    def hold(self) -> None:
        """Hold the timed injects (a facilitator's ``hold``): none fires until ``release``."""
        self.injects.held = True

    def release(self) -> None:
        """Let the timed injects fire again; those due fire at the next step boundary."""
        self.injects.held = False

    def fire_now(
        self,
        index: int,
        *,
        before: str | None,
        command: int | None = None,
        trigger: Literal["facilitator", "timer"] = "facilitator",
    ) -> dict[str, Any]:
        """Fire inject ``index`` now, at the boundary before step ``before`` (a facilitator's
        ``fire``, ``command`` its number on the channel; a replay passes the journaled
        ``trigger``); its record. ``UsageError`` when it cannot: no such inject, fired
        already, or the run is in check mode."""
        injects = self.scenario.injects
        if not 0 <= index < len(injects):
            raise UsageError(f"scenario {self.scenario.id} has no inject {index}")
        if index in self.injects.fired:
            raise UsageError(f"inject {index} fired already")
        if self._checking():
            raise UsageError("nothing fires in check mode")
        return self.injects.fire(
            index, self.clock(), trigger=trigger, before=before, command=command
        )

    def _checking(self) -> bool:
        """Whether the run is in check mode: the responder changes nothing then, so the world
        has nothing to react to."""
        return any(factory.check_mode for factory in self._factories)

    # -- serving other clients ------------------------------------------------------------

    def serve(self, port: int = 0, *, start_seconds: float = 10.0) -> tuple[Any, str]:
        """This world as a moto server on 127.0.0.1 (never another address), for any other
        AWS client; the fidelity shim and LookupEvents apply to it too. Returns the server
        (``stop()`` it) and its endpoint URL. ``OSError`` when the port cannot be listened
        on (it is probed first: moto's server would wait forever for a bind that failed), or
        when the server has not started within ``start_seconds``."""
        import errno
        import logging
        import socket
        import threading

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per request
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", port))  # in use, or not allowed: OSError
            port = probe.getsockname()[1]
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        starting = threading.Thread(target=server.start, daemon=True)
        starting.start()
        starting.join(start_seconds)
        if starting.is_alive():  # the bind failed in moto's thread (taken meanwhile)
            raise OSError(errno.EADDRINUSE, f"no server started on port {port}")
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
        """sha256 of what of the scenario shapes the world (``Scenario.world_dump``): a
        changed world would seed another; a changed briefing or rubric would not."""
        return sha256_hex(canonical(self.scenario.world_dump()))

    def replay(self, view: RunView) -> dict[str, Any]:
        """Re-apply the state-changing calls and the injects a journal records to this
        re-seeded world (``kmsir.sandbox.replay``), so a resumed run continues where the
        interrupted one left the sandbox."""
        from kmsir.sandbox import replay

        return replay.replay(self, view)

    # -- seeding --------------------------------------------------------------------------

    def _seed(self) -> None:
        self._seed_users()  # first: key policies and grants may name the users
        kms = self.session().client("kms")
        self.key_stores = seed_kms.create_stores(kms, self.scenario)
        for name, spec in self.scenario.keys.items():
            metadata = kms.create_key(
                Description=spec.description,
                Tags=[{"TagKey": k, "TagValue": v} for k, v in spec.tags.items()],
                **({"MultiRegion": True} if spec.multi_region else {}),
                **resources.key_options(spec),
                **seed_kms.key_options(name, spec, self.scenario, self.key_stores),
            )["KeyMetadata"]
            key_id = metadata["KeyId"]
            seed_kms.import_material(kms, key_id, spec, self.scenario, self.now)
            if spec.alias:
                kms.create_alias(AliasName=spec.alias, TargetKeyId=key_id)
            if spec.rotation:
                period = spec.rotation_period_days
                kms.enable_key_rotation(
                    KeyId=key_id, **({"RotationPeriodInDays": period} if period else {})
                )
            # after rotation (shared by primary and replicas), before the state and policy
            # (each replica's own: Enabled, the default policy)
            replicas = [
                kms.replicate_key(KeyId=key_id, ReplicaRegion=region)["ReplicaKeyMetadata"]["Arn"]
                for region in spec.replicas
            ]
            self.keys[name] = {
                "id": key_id,
                "arn": metadata["Arn"],
                "alias": spec.alias or "",
                "replicas": replicas,
            }
            if not spec.enabled:
                kms.disable_key(KeyId=key_id)
            if spec.policy is not None:
                policy = self.render(spec.policy)
                kms.put_key_policy(KeyId=key_id, PolicyName="default", Policy=json.dumps(policy))
            seed_kms.delete_material(kms, key_id, spec)
            if spec.pending_deletion_days:
                kms.schedule_key_deletion(
                    KeyId=key_id, PendingWindowInDays=spec.pending_deletion_days
                )
        for name, grant in self.scenario.grants.items():
            key = self.keys[grant.key]
            created = kms.create_grant(
                KeyId=key["id"],
                GranteePrincipal=self.render(grant.grantee),
                Operations=grant.operations,
                Name=grant.name,
                **({"Constraints": grant.constraints} if grant.constraints else {}),
            )
            self.grants[name] = {"id": created["GrantId"], "key": key["id"], "name": grant.name}
            if grant.created:
                self._backdate_grant(key["id"], created["GrantId"], grant.created)
        seed_kms.disconnect_stores(kms, self.scenario, self.key_stores)
        rng = random.Random(self.scenario.seed)  # noqa: S311 - event ids, not secrets
        history_events = list(history.events(self, self.scenario.history, self.now, rng))
        lookup.add_events(self.account, self.region, history_events)
        s3 = self.session().client("s3")
        history.create_trail_bucket(s3, self.trail_bucket, self.region)
        history.write_trail_files(s3, self.trail_bucket, self.account, self.region, history_events)
        # the files the attacker deleted (their digests, written later, list them all the same)
        trail_digests.delete_log_files(
            self.account,
            self.region,
            self.trail_bucket,
            history.deleted_log_events(self.scenario.history, history_events),
        )
        # buckets, volumes, secrets... encrypted with the keys; IAM, trails, rules, stacks
        self.resources = resources.seed(self)
        self._seed_trail()
        containment.seed(self)  # it leaves moto's random generator as it found it
        if self.second_person:  # so does this
            self.second = second_identity.seed(self)

    def _seed_trail(self) -> None:
        """The trail that delivers to the trail bucket, unless the scenario has its own; moto's
        random generator is left as it found it (ids made after seeding stay what they were)."""
        from moto.moto_api._internal import mock_random

        state = mock_random.getstate()
        try:
            arn = posture_seed.sandbox_trail(
                self.session(), self, recorder.TRAIL_NAME, self.trail_bucket
            )
            self.trail_name = recorder.TRAIL_NAME if arn is not None else None
        finally:
            mock_random.setstate(state)

    def _seed_users(self) -> None:
        """The scenario's IAM users and their access keys (moto's seeded ids: stable)."""
        iam = self.session().client("iam")
        for name, spec in self.scenario.users.items():
            tags = [{"Key": k, "Value": v} for k, v in spec.tags.items()]
            user = iam.create_user(UserName=spec.name, **({"Tags": tags} if tags else {}))["User"]
            keys = [
                iam.create_access_key(UserName=spec.name)["AccessKey"]["AccessKeyId"]
                for _ in range(spec.access_keys)
            ]
            self.users[name] = {
                "name": spec.name,
                "arn": user["Arn"],
                "access_key_ids": keys,
                "access_key_id": keys[0] if keys else None,
            }

    @property
    def trail_bucket(self) -> str:
        """The moto S3 bucket holding the history as CloudTrail log files."""
        return trail_bucket(self.account)

    def _backdate_grant(self, key_id: str, grant_id: str, ago: str) -> None:
        """Give a seeded grant the creation time its story says (ListGrants reports it)."""
        from moto.kms.models import kms_backends

        moment = self.now - timedelta(seconds=duration_seconds(ago.removeprefix("-")))
        grant = kms_backends[self.account][self.region].keys[key_id].grants[grant_id]
        setattr(grant, "kmsir_created", moment.timestamp())  # noqa: B010 - read by the shim

    def template_context(self) -> dict[str, Any]:
        """What scenario strings may refer to (``scenario.stand_in_world`` mirrors it, to
        check a scenario's templates when it loads: keep the two alike)."""
        return {
            "account": self.account,
            "region": self.region,
            "keys": self.keys,
            "key_stores": self.key_stores,
            "grants": self.grants,
            "users": self.users,
            "trail_bucket": self.trail_bucket,
        }

    def render(self, value: Any) -> Any:
        """A scenario value with its templates rendered over the seeded world."""
        return templating.render_value(value, self.template_context())


@functools.cache
def _shared_loader() -> Any:
    """botocore's data loader, shared by the sandbox's sessions: each new session would
    otherwise parse the endpoints and each service model again (a third of a second each)."""
    from botocore.loaders import create_loader

    return create_loader()

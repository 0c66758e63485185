"""The least-privilege IAM policy that lets a role run one playbook (``kmsir permissions``).

Read without running anything and without any AWS call, from ``plan``: the union, over every
step (any ``when:`` branch may run), of the permissions of the path the step's parameters
select (``Action.permissions_for``), each on the narrowest resource the playbook names:

- KMS actions on the key of the ``kms-key`` input: its ARN; ``arn:aws:kms:*:*:key/ID`` for a
  bare key id; for an alias, ``key/*`` with a ``kms:ResourceAliases`` condition. A multi-Region
  key (``mrk-...``) in every Region: its replicas, which the snapshot reads and deletion acts
  on in their Regions, share its id. A step that reads every key (``all: true``), or a key
  decided at run time that is not the input key, gets ``key/*``;
- IAM users and roles, S3 buckets and objects, the Athena workgroup, the Glue database and
  table, the CloudTrail Lake event data store: by the names a step's parameters give, or every
  resource of that type when the name is decided at run time. A user or role keeps its path
  (``user/ops/alice``; a bare name is ``user/alice`` and ``user/*/alice``: names are unique in
  an account whatever the path) and its own ARN's account;
- attaching and detaching a managed policy only for AWS's ``AWSDenyAll`` (an ``iam:PolicyARN``
  condition: the only policy ``iam.attach-deny-policy`` attaches), so that the role cannot
  attach an admin policy to itself. No condition key restricts an inline policy's document:
  ``iam:PutRolePolicy`` on roles decided at run time stays on ``role/*``, in a statement whose
  Sid says it could let the role grant itself more (``warnings`` gives the CLI's warning);
- the trail logs' KMS key (SSE-KMS) of ``cloudtrail.collect`` from S3 or Athena: ``key/*``
  of the account, only through S3 (and Athena): a ``kms:ViaService`` condition;
- ``Resource: "*"`` only for actions that support no resource type (``List*``,
  ``LookupEvents``...), as the Service Authorization Reference says.

Statements are grouped by resource, in a fixed order, so that the same playbook and inputs
always give the same policy.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from kmsir.actions import Registry
from kmsir.actions.iam_containment import deny_all_arn
from kmsir.playbook.model import Playbook
from kmsir.run import plan as planning
from kmsir.run.iam_scopes import (
    EVERY,
    INLINE_POLICY_CHANGES,
    MANAGED_POLICY_CHANGES,
    ORG_POLICY,
    SCOPES,
    SCP_ONLY,
    STATEMENT_IDS,
)

POLICY_VERSION = "2012-10-17"

#: Authorized for every caller: AWS refuses no one these (an Allow grants nothing).
NEEDS_NO_PERMISSION = frozenset({"sts:GetCallerIdentity"})

_KEY_ARN = re.compile(r"^arn:(aws[a-z-]*):kms:([a-z0-9-]+):(\d{12}):(key|alias)/(.+)$")
#: A user's or role's ARN: partition, account, ``user``/``role``, its path and name.
_IAM_ARN = re.compile(r"^arn:(aws[a-z-]*):iam::(\d{12}):(user|role)(/.+)$")
#: An assumed-role session's ARN: partition, account, the role's name (its path is not in it).
_SESSION_ARN = re.compile(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([^/]+)/[^/]+$")
_STEP_REF = re.compile(r"\bsteps\.[A-Za-z0-9_-]+\.([A-Za-z0-9_]+)")
_INPUT_REF = re.compile(r"\binputs\.([A-Za-z0-9_]+)")
#: The outputs of a step that name the key it read (its id or ARN).
_KEY_OUTPUTS = frozenset({"key_id", "arn", "key_arn"})


@dataclass(frozen=True)
class Where:
    """The partition, Region and account the policy's ARNs name (``*``: any): the key's,
    when the key input is an ARN."""

    partition: str = "aws"
    region: str = "*"
    account: str = "*"

    def every(self, scope: str, *, region: bool = True) -> tuple[str, ...]:
        """Every resource of type ``scope`` (a value of ``SCOPES``) here (any Region unless
        ``region``)."""
        r = self.region if region else "*"
        return tuple(f.format(p=self.partition, r=r, a=self.account) for f in EVERY[scope])


@dataclass(frozen=True)
class Qualifier:
    """What sets a grant apart besides its resources: the suffix of its statement's Sid and,
    unless it only flags the statement, the condition that narrows it (one ``operator`` on one
    ``key``)."""

    sid: str
    operator: str = ""
    key: str = ""
    values: tuple[str, ...] = ()

    @property
    def condition(self) -> dict[str, Any] | None:
        """The statement's ``Condition``, if it has one."""
        if not self.operator:
            return None
        value: Any = self.values[0] if len(self.values) == 1 else list(self.values)
        return {self.operator: {self.key: value}}


#: An inline policy written on users or roles decided at run time: no condition key restricts
#: its document, so the role could write one on itself granting it anything.
RUN_TIME_INLINE = Qualifier("AnyInlinePolicyCanSelfEscalate")


#: Organizations policy actions for service control policies only (no other policy type).
SCPS = Qualifier("ScpOnly", "StringEquals", "organizations:PolicyType", ("SERVICE_CONTROL_POLICY",))


def _by_alias(alias: str) -> Qualifier:
    return Qualifier("ByAlias", "ForAnyValue:StringEquals", "kms:ResourceAliases", (alias,))


@dataclass(frozen=True)
class _KeyScope:
    """The key resources a step's KMS actions are granted on, and the alias condition."""

    resources: tuple[str, ...]
    qualifier: Qualifier | None = None


def policy(
    playbook: Playbook,
    actions: Registry,
    inputs: Mapping[str, Any],
    *,
    read_only: bool = False,
) -> dict[str, Any]:
    """The IAM policy (a JSON-ready dict) that lets a role run ``playbook`` with ``inputs``
    (partial is fine: what they do not give is granted on every resource of its type).
    ``read_only``: leave out the steps that change anything."""
    key_input = _key_input(playbook)
    given = inputs.get(key_input) if key_input else None
    input_key = str(given) if isinstance(given, str) and "{{" not in given else None
    where = _where(input_key)
    grants: dict[tuple[str, Qualifier | None], set[str]] = defaultdict(set)
    for step in planning.plan(playbook, actions, inputs):
        if read_only and step.mutating:
            continue
        keys = _key_scope(step.values, input_key, key_input, where)
        for permission in step.permissions:
            if permission in NEEDS_NO_PERMISSION:
                continue
            scope = SCOPES.get(permission, "*")
            if scope == "key":
                grants[(permission, keys.qualifier)].update(keys.resources)
                continue
            qualifier = _qualifier(permission, scope, step.values, where)
            grants[(permission, qualifier)].update(_resources(scope, step.values, where))
    return {"Version": POLICY_VERSION, "Statement": _statements(grants)}


def warnings(document: Mapping[str, Any]) -> list[str]:
    """One line per statement of ``document`` that lets the role write an inline policy on
    users or roles decided at run time (its own included): what the CLI warns about."""
    found = []
    for statement in document.get("Statement", []):
        if RUN_TIME_INLINE.sid in statement.get("Sid", ""):
            resources = statement["Resource"]
            on = resources if isinstance(resources, str) else ", ".join(resources)
            found.append(
                f"{', '.join(statement['Action'])} on {on}: the users or roles are decided at "
                "run time and no condition can restrict an inline policy, so this role could "
                "write one on itself and grant itself anything; name them (-i or with:) to "
                "scope it"
            )
    return found


def actions_of(document: Mapping[str, Any]) -> set[str]:
    """Every action a policy ``document`` allows, as written."""
    found: set[str] = set()
    for statement in document.get("Statement", []):
        named = statement.get("Action", [])
        found.update([named] if isinstance(named, str) else named)
    return found


def _key_input(playbook: Playbook) -> str | None:
    """The input naming the playbook's key: ``key``, else its only ``kms-key`` input."""
    kinds = [name for name, spec in playbook.inputs.items() if spec.type == "kms-key"]
    if "key" in kinds:
        return "key"
    return kinds[0] if len(kinds) == 1 else None


def _where(key: str | None) -> Where:
    found = _KEY_ARN.match(key or "")
    if found is None:
        return Where()
    return Where(partition=found[1], region=found[2], account=found[3])


def _qualifier(
    permission: str, scope: str, values: Mapping[str, Any], where: Where
) -> Qualifier | None:
    """The condition (or flag) a grant of ``permission`` (on ``scope``) gets."""
    if permission in MANAGED_POLICY_CHANGES:
        arn = deny_all_arn(where.partition)
        return Qualifier("AWSDenyAllOnly", "ArnEquals", "iam:PolicyARN", (arn,))
    if permission in SCP_ONLY:
        return SCPS
    if permission in INLINE_POLICY_CHANGES and _names(values.get(scope)) is None:
        return RUN_TIME_INLINE  # on every user or role: those named are decided at run time
    if scope == "log-key":
        # the bucket's Region is not in the playbook (an organization trail's bucket is often
        # in another Region than the key): any Region of the service
        domain = "amazonaws.com.cn" if where.partition == "aws-cn" else "amazonaws.com"
        via = ("athena", "s3") if values.get("source") == "athena" else ("s3",)
        return Qualifier(
            "Via" + "Or".join(s.title() for s in via),
            "StringLike",
            "kms:ViaService",
            tuple(f"{s}.*.{domain}" for s in via),
        )
    return None


def _key_scope(
    values: Mapping[str, Any], input_key: str | None, key_input: str | None, where: Where
) -> _KeyScope:
    """The keys a step acts on: the key it names, the input key when the key it names is
    decided at run time from the input key (a snapshot's ``key_id``...), else every key (as
    for a key store, whose keys are found by describing each key)."""
    every = _KeyScope(where.every("key"))
    if "store" in values:  # a key store's step describes every key to find the store's keys
        return every
    if values.get("all") is True or "keys" in values:
        named = values.get("keys")
        if isinstance(named, list) and named and all(_literal(k) for k in named):
            scopes = [_reference(str(k), where) for k in named]
            if all(s.qualifier is None for s in scopes):
                return _KeyScope(tuple(r for s in scopes for r in s.resources))
        return every
    key = values.get("key")
    if not isinstance(key, str):
        return every
    if _literal(key):
        return _reference(key, where)
    if input_key is not None and _same_key(key, key_input):
        return _reference(input_key, where)
    return every


def _same_key(template: str, key_input: str | None) -> bool:
    """Whether ``template`` names only the input key or a key an earlier step read."""
    outputs = set(_STEP_REF.findall(template))
    named_inputs = set(_INPUT_REF.findall(template))
    if not outputs and not named_inputs:
        return False
    return outputs <= _KEY_OUTPUTS and named_inputs <= {key_input}


def _reference(key: str, where: Where) -> _KeyScope:
    """The resources and alias condition of a key reference (id, ARN, alias, alias ARN)."""
    found = _KEY_ARN.match(key)
    if found is not None:
        if found[4] == "key":
            if found[5].startswith("mrk-"):  # its replicas, in their Regions, share its id
                return _KeyScope((f"arn:{found[1]}:kms:*:{found[3]}:key/{found[5]}",))
            return _KeyScope((key,))
        at = Where(partition=found[1], region=found[2], account=found[3])
        return _KeyScope(at.every("key"), _by_alias(f"alias/{found[5]}"))
    if key.startswith("alias/"):
        return _KeyScope(where.every("key"), _by_alias(key))
    region = "*" if key.startswith("mrk-") else where.region
    return _KeyScope((f"arn:{where.partition}:kms:{region}:{where.account}:key/{key}",))


def _literal(value: Any) -> bool:
    return isinstance(value, str) and "{{" not in value and "{%" not in value


def _names(value: Any) -> list[str] | None:
    """Literal names (one or a list); ``None`` when any is decided at run time."""
    names = value if isinstance(value, list) else [value]
    if not names or not all(_literal(n) for n in names):
        return None
    return [str(n) for n in names]


def _resources(scope: str, values: Mapping[str, Any], where: Where) -> set[str]:
    """The resources of ``scope`` a step with ``values`` touches."""
    p, a = where.partition, where.account
    if scope == "*":
        return {"*"}
    if scope in ("role", "user"):
        names = _names(values.get(scope))
        if names is None:
            return set(where.every(scope))
        return {arn for n in names for arn in _principal(scope, n.strip(), where)}
    if scope in ("bucket", "object"):
        return _s3(scope, values, where)
    if scope == "workgroup" and _literal(values.get("workgroup", "primary")):
        group = values.get("workgroup", "primary")
        return {f"arn:{p}:athena:*:{a}:workgroup/{group}"}
    db, table = values.get("database"), values.get("table")
    if scope.startswith("glue-") and _literal(db) and _literal(table):
        catalog = f"arn:{p}:glue:*:{a}:catalog"
        if scope == "glue-database":
            return {catalog, f"arn:{p}:glue:*:{a}:database/{db}"}
        return {
            catalog,
            f"arn:{p}:glue:*:{a}:database/{db}",
            f"arn:{p}:glue:*:{a}:table/{db}/{table}",
        }
    if scope in ("org-target", "org-attachment"):
        return _org_targets(scope, values, where)
    store = values.get("event_data_store")
    if scope == "event-data-store" and _literal(store):
        if str(store).startswith("arn:"):
            return {str(store)}
        return {f"arn:{p}:cloudtrail:*:{a}:eventdatastore/{store}"}
    return set(where.every(scope, region=False))


def _org_targets(scope: str, values: Mapping[str, Any], where: Where) -> set[str]:
    """The roots, OUs and accounts a step names (in any organisation: its id is not in the
    playbook), and any policy for an attachment; every one when decided at run time."""
    names = _names(values.get("targets"))
    if names is None:
        return set(where.every(scope, region=False))
    p = where.partition
    found = {f"arn:{p}:organizations::*:{_org_kind(n)}/o-*/{n}" for n in names}
    if scope == "org-attachment":
        found.add(ORG_POLICY.format(p=p))
    return found


def _org_kind(target: str) -> str:
    return "ou" if target.startswith("ou-") else "root" if target.startswith("r-") else "account"


def _principal(scope: str, name: str, where: Where) -> tuple[str, ...]:
    """The ARNs of the user or role (``scope``) a step names by ARN (in its own account), by
    assumed-role session ARN, by path and name (``/ops/alice``) or by name alone (any path)."""
    p, a = where.partition, where.account
    arn = _IAM_ARN.match(name)
    if arn is not None and arn[3] == scope:
        return (f"arn:{arn[1]}:iam::{arn[2]}:{scope}{arn[4]}",)
    session = _SESSION_ARN.match(name)
    if session is not None and scope == "role":
        p, a, name = session[1], session[2], session[3]
    elif name.startswith("/"):
        return (f"arn:{p}:iam::{a}:{scope}{name}",)
    name = name.rsplit("/", 1)[-1]
    return (f"arn:{p}:iam::{a}:{scope}/{name}", f"arn:{p}:iam::{a}:{scope}/*/{name}")


def _s3(scope: str, values: Mapping[str, Any], where: Where) -> set[str]:
    """A trail bucket and its prefix; for Athena, its output location and (the table's
    location being in Glue, not in the playbook) every bucket."""
    p = where.partition
    if values.get("source") == "s3" and _literal(values.get("bucket")):
        bucket, prefix = values["bucket"], values.get("prefix", "")
        if scope == "bucket":
            return {f"arn:{p}:s3:::{bucket}"}
        return {f"arn:{p}:s3:::{bucket}/{prefix if _literal(prefix) else ''}*"}
    return set(where.every(scope))


def _statements(grants: Mapping[tuple[str, Qualifier | None], set[str]]) -> list[dict[str, Any]]:
    """One statement per resource set and qualifier, in a fixed order."""
    kept: dict[tuple[str, Qualifier | None], tuple[str, ...]] = {}
    for (action, qualifier), granted in grants.items():
        narrowed = _narrowed(granted)
        if not _redundant(action, qualifier, narrowed, grants):
            kept[(action, qualifier)] = narrowed
    groups: dict[tuple[tuple[str, ...], Qualifier | None], list[str]] = defaultdict(list)
    for (action, qualifier), narrowed in kept.items():
        groups[(narrowed, qualifier)].append(action)
    statements = []
    used: dict[str, int] = defaultdict(int)
    for (resources, qualifier), names in sorted(groups.items(), key=_order):
        sid = STATEMENT_IDS[SCOPES.get(min(names), "*")] + (qualifier.sid if qualifier else "")
        used[sid] += 1
        statement: dict[str, Any] = {
            "Sid": sid + (str(used[sid]) if used[sid] > 1 else ""),
            "Effect": "Allow",
            "Action": sorted(names),
            "Resource": resources[0] if len(resources) == 1 else list(resources),
        }
        condition = qualifier.condition if qualifier else None
        if condition is not None:
            statement["Condition"] = condition
        statements.append(statement)
    return statements


def _redundant(
    action: str,
    qualifier: Qualifier | None,
    resources: tuple[str, ...],
    grants: Mapping[tuple[str, Qualifier | None], set[str]],
) -> bool:
    """Whether another grant of ``action`` already allows it on ``resources``: a conditioned
    grant the unconditioned one covers (these keys whatever their aliases), or an
    unconditioned grant a flagged one covers (a named role among every role)."""
    if qualifier is not None and qualifier.condition is not None:
        return _covered(resources, _narrowed(grants.get((action, None), set())))
    if qualifier is None:
        return any(
            _covered(resources, _narrowed(granted))
            for (other, flag), granted in grants.items()
            if other == action and flag is not None and flag.condition is None
        )
    return False


def _covered(resources: Iterable[str], by: Iterable[str]) -> bool:
    wildcards = tuple(by)
    return all(any(fnmatchcase(r, w) for w in wildcards) for r in resources)


def _order(
    group: tuple[tuple[tuple[str, ...], Qualifier | None], list[str]],
) -> tuple[Any, ...]:
    (resources, qualifier), names = group
    flag = (qualifier.sid, qualifier.key, qualifier.values) if qualifier else ()
    return (list(STATEMENT_IDS).index(SCOPES.get(min(names), "*")), resources, flag)


def _narrowed(resources: Iterable[str]) -> tuple[str, ...]:
    """``resources`` sorted, less those another of them already matches (``key/*`` covers
    ``key/1234``; ``*`` covers all)."""
    found = set(resources)
    return tuple(sorted(r for r in found if not any(w != r and fnmatchcase(r, w) for w in found)))

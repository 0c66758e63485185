"""The scope options of ``run`` and ``audit``: the accounts and Regions a run covers.

``--accounts A,B`` or ``--org`` (with ``--exclude A,B``), ``--role-name`` and
``--external-id`` for the accounts other than the caller's, ``--regions R1,R2|all``. Read into
an ``aws.targets.ScopeRequest`` and checked here, before anything else runs; the run layer
resolves it (``run.launch.scoped``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from kmsir.errors import UsageError

if TYPE_CHECKING:
    from kmsir.aws.targets import ScopeRequest

# The accounts and Regions a run covers (``run``, ``audit``): ``scope_request`` reads them.
Accounts = Annotated[
    str | None,
    typer.Option(
        "--accounts",
        metavar="A,B",
        help="Cover these accounts, e.g. --accounts 111122223333,444455556666 (any but "
        "yours needs --role-name).",
    ),
]
Org = Annotated[
    bool,
    typer.Option(
        "--org",
        help="Cover every active account of the organisation, e.g. --org --role-name "
        "KmsirResponder (run from the management account).",
    ),
]
Exclude = Annotated[
    str | None,
    typer.Option(
        "--exclude",
        metavar="A,B",
        help="With --org: leave these accounts out, e.g. --exclude 444455556666.",
    ),
]
RoleName = Annotated[
    str | None,
    typer.Option(
        "--role-name",
        metavar="ROLE",
        help="The role assumed in every other account, e.g. --role-name KmsirResponder.",
    ),
]
ExternalId = Annotated[
    str | None,
    typer.Option(
        "--external-id",
        metavar="ID",
        help="The ExternalId the role's trust policy asks for, e.g. --external-id ir-2026.",
    ),
]
Regions = Annotated[
    str | None,
    typer.Option(
        "--regions",
        metavar="R1,R2|all",
        help="Cover these Regions, e.g. --regions us-east-1,eu-west-1, or every enabled one "
        "with --regions all (default: the run's Region).",
    ),
]


def scope_request(
    *,
    accounts: str | None,
    org: bool,
    exclude: str | None,
    role_name: str | None,
    external_id: str | None,
    regions: str | None,
) -> ScopeRequest | None:
    """The scope options as given, checked without calling AWS (a bad value or options that
    conflict: one line, exit 2); None when none was given."""
    from kmsir.aws.targets import ScopeRequest

    request = ScopeRequest(
        accounts=_items("--accounts", accounts),
        org=org,
        exclude=_items("--exclude", exclude),
        role_name=role_name,
        external_id=external_id,
        regions=_items("--regions", regions),
    )
    if not request.given:
        return None
    request.check()
    return request


def _items(option: str, value: str | None) -> tuple[str, ...]:
    """A comma-separated value (``A,B``) as its items, without repeats; an empty item (or
    an empty value): ``UsageError``."""
    if value is None:
        return ()
    items = [item.strip() for item in value.split(",")]
    if not all(items):
        raise UsageError(f"{option} {value!r}: an empty item (expected A,B,...)")
    return tuple(dict.fromkeys(items))

"""The action registry: a plain mapping from action name to action.

Adding an action means writing it in its service's module and listing it in ``WHERE``. An
action's module is imported the first time the action is looked up, so a run imports the
actions its playbook uses and not the whole catalog (about a fifth of a run's start-up).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from kmsir.actions.base import Action

if TYPE_CHECKING:
    from pydantic import BaseModel

    from kmsir.playbook.model import Catalog

Registry = Mapping[str, Action[Any]]

#: Every action kmsir knows: its name -> (its module under ``kmsir.actions``, its class,
#: whether it changes AWS state). ``tests/test_actions_registry.py`` checks this table
#: against the classes themselves.
WHERE: dict[str, tuple[str, str, bool]] = {
    "kms.snapshot": ("kms_snapshot", "Snapshot", False),
    "kms.blast-radius": ("kms_blast", "BlastRadius", False),
    "kms.audit": ("audit", "Audit", False),
    "kms.disable-key": ("kms_lifecycle", "DisableKey", True),
    "kms.enable-key": ("kms_lifecycle", "EnableKey", True),
    "kms.schedule-deletion": ("kms_deletion", "ScheduleDeletion", True),
    "kms.cancel-deletion": ("kms_deletion", "CancelDeletion", True),
    "kms.delete-imported-material": ("kms_imported", "DeleteImportedMaterial", True),
    "kms.import-key-material": ("kms_imported", "ImportMaterial", True),
    "kms.disconnect-key-store": ("kms_key_stores", "DisconnectKeyStore", True),
    "kms.connect-key-store": ("kms_key_stores", "ConnectKeyStore", True),
    "kms.revoke-grants": ("kms_grants", "RevokeGrants", True),
    "kms.retire-grants": ("kms_grants", "RetireGrants", True),
    "kms.quarantine": ("kms_policy", "Quarantine", True),
    "kms.put-policy": ("kms_policy", "PutPolicy", True),
    "kms.restore-policy": ("kms_policy", "RestorePolicy", True),
    "kms.tag-key": ("kms_lifecycle", "TagKey", True),
    "kms.enable-rotation": ("kms_rotation", "EnableRotation", True),
    "kms.rotate-now": ("kms_rotation", "RotateNow", True),
    "iam.deactivate-access-key": ("iam", "DeactivateAccessKey", True),
    "iam.reactivate-access-key": ("iam", "ReactivateAccessKey", True),
    "iam.revoke-role-sessions": ("iam_sessions", "RevokeRoleSessions", True),
    "iam.restore-role-sessions": ("iam_sessions", "RestoreRoleSessions", True),
    "iam.attach-deny-policy": ("iam_containment", "AttachDenyPolicy", True),
    "iam.detach-deny-policy": ("iam_containment", "DetachDenyPolicy", True),
    "kms.deny-principals": ("kms_deny", "DenyPrincipals", True),
    "org.attach-scp": ("org_scp", "AttachScp", True),
    "org.detach-scp": ("org_detach", "DetachScp", True),
    "cloudtrail.collect": ("cloudtrail", "Collect", False),
    "cloudtrail.findings": ("cloudtrail_findings", "Findings", False),
    "ask": ("human", "Ask", False),
    "confirm": ("human", "Confirm", False),
    "note": ("human", "Note", False),
    "wait": ("human", "Wait", False),
    "checklist": ("human_lists", "Checklist", False),
    "evidence.attach": ("human_lists", "Attach", False),
}


class _Actions(Mapping[str, Action[Any]]):
    """Every action of ``WHERE``, each made (and its module imported) when first looked up."""

    def __init__(self) -> None:
        self._made: dict[str, Action[Any]] = {}

    def __getitem__(self, name: str) -> Action[Any]:
        made = self._made.get(name)
        if made is None:
            module, cls, _ = WHERE[name]
            made = getattr(importlib.import_module(f"kmsir.actions.{module}"), cls)()
            self._made[name] = made
        return made

    def __iter__(self) -> Iterator[str]:
        return iter(WHERE)

    def __len__(self) -> int:
        return len(WHERE)

    def __contains__(self, name: object) -> bool:
        return name in WHERE


class _Field(Mapping[str, Any]):
    """One field (``params``, ``outputs``) of each action of a registry, read when asked for."""

    def __init__(self, actions: Registry, field: str) -> None:
        self._actions, self._field = actions, field

    def __getitem__(self, name: str) -> Any:
        return getattr(self._actions[name], self._field)

    def __iter__(self) -> Iterator[str]:
        return iter(self._actions)

    def __len__(self) -> int:
        return len(self._actions)

    def __contains__(self, name: object) -> bool:
        return name in self._actions


def registry() -> Registry:
    """Every action kmsir knows, by name."""
    return _Actions()


def catalog(actions: Registry | None = None) -> Catalog:
    """Action name -> params model, with each action's declared outputs and whether it
    changes AWS state: what playbook validation and lint need (only the actions a playbook
    names are imported)."""
    from kmsir.playbook.model import Catalog

    found = actions if actions is not None else registry()
    if isinstance(found, _Actions):
        mutating = [name for name, (_, _, changes) in WHERE.items() if changes]
    else:
        mutating = [name for name, action in found.items() if action.mutating]
    params: Mapping[str, type[BaseModel]] = _Field(found, "params")
    return Catalog(params, outputs=_Field(found, "outputs"), mutating=mutating)

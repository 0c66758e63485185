"""CloudTrail evidence: matching events to a key, reading trail logs, KMS findings."""

"""Playbooks: safe YAML (``yamlsafe``), the validated models (``model``), inputs and their
checks (``inputs``), value kinds (``values``) and bounded templating (``templating``).
Nothing here asks a person or knows the action registry: validation that needs it takes it
as an argument.
"""

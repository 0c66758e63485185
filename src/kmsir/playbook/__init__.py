"""Playbooks: safe YAML (``yamlsafe``), the validated models (``model``), input values
(``values``) and bounded templating (``templating``). Nothing here asks a person or knows
the action registry: validation that needs it takes it as an argument.
"""

"""Running a playbook: the engine drives a run, ``steps`` runs one step (approve, attempt,
on-error), ``resume`` continues an unfinished run, ``plan`` says what a run would do.

Never imports typer or questionary, and opens files only through ``evidence``.
"""

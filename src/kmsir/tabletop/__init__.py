"""The tabletop exercise: a team (the players) runs a scenario's playbook against its served
sandbox world while a facilitator follows, steers and scores it.

A layer between ``cli`` and ``run``: it drives runs (``run``) and reads bundles (``evidence``),
never draws, prompts or imports moto itself. ``channel`` is the facilitator's command channel
to the players' process (files under ``<evidence-dir>/.tabletop/``), ``session`` the players'
process (the served world, the run, the commands applied at each step boundary), ``replay``
reruns a team's recorded decisions against a fresh world; ``exercise`` projects a players'
bundle into what the room and the facilitator see, ``score`` and ``debrief`` judge it,
``facilitation`` and ``room`` serve the facilitator and the room.
"""

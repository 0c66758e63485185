"""The evidence bundle.

- ``bundle``: its layout, canonical form and hashes, atomic writes, reading the journal;
- ``calls``: one AWS API call as it is planned, shown, journaled and reported;
- ``entries``: the journal's typed entries (``records``: one model per entry type);
- ``view``: the one reading of a journal, ``fold(entries) -> RunView`` (``stepview``: a step);
- ``journal``: the writer; ``manifest`` and ``derived``: the files derived from the journal;
- ``integrity``, ``leftovers``, ``anchoring``, ``signatures``: verification;
- ``export``, ``archive``: sealed exports; ``locks``: one run per incident and key.

Standard library and msgspec only: the report reads bundles without AWS or pydantic.
"""

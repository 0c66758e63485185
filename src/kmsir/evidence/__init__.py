"""The evidence bundle: its layout and canonical form (``bundle``), the journal's typed
entries (``entries``) and its one reading (``view.fold``), the writer (``journal``),
verification (``integrity``, ``anchoring``, ``signatures``), ``export`` and run ``locks``.

Standard library and msgspec only: the report reads bundles without AWS or pydantic.
"""

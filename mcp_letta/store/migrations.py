"""The numbered migration scripts an engine ships: ``NNN_name.sql`` files in its package's ``migrations``
folder, applied in order by the engine (each engine keeps its own numbering)."""

from __future__ import annotations

import re
from importlib import resources

_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


def scripts(package: str) -> list[tuple[int, str, str]]:
    """Every migration of ``package`` (e.g. ``mcp_letta.store.sqlite``): its number, file name and text, in order."""
    found = []
    for entry in (resources.files(package) / "migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)

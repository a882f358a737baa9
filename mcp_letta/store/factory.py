"""Which engine a database target means: a ``postgresql://`` URL opens the PostgreSQL engine (its driver is
the optional ``postgres`` extra), anything else is a SQLite file."""

from __future__ import annotations

from pathlib import Path

from mcp_letta.store.interface import Store
from mcp_letta.store.postgres.db import is_postgres_url, require_driver


def open_store(target: Path | str, *, watch_interval_s: float = 0.2, pool_size: int = 10) -> Store:
    """The store for ``target`` (not yet opened). A PostgreSQL URL without the driver installed raises
    ``RuntimeError`` naming the install command, before anything starts."""
    if is_postgres_url(target):
        require_driver()
        from mcp_letta.store.postgres import PostgresStore

        return PostgresStore(str(target), pool_size=pool_size, watch_interval_s=watch_interval_s)
    from mcp_letta.store.sqlite import SQLiteStore

    return SQLiteStore(target, watch_interval_s=watch_interval_s)


__all__ = ["is_postgres_url", "open_store"]

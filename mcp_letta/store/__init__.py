"""Persistence: one SQLite file (WAL) holding agents, blocks, history, archival and recall memory.

``Database`` owns connections and transactions; the modules ``agents``, ``blocks`` and ``memory``
hold the SQL for each idea as plain functions over a connection.
"""

from mcp_letta.store.db import Database

__all__ = ["Database"]

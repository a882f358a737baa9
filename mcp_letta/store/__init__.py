"""The store: everything mcp-letta keeps (agents, blocks, archival and recall memory, runs), behind one
boundary. ``interface`` says what the hub and the runtime may ask (``Store``, ``Tx``); an engine answers
(``sqlite``, the embedded default; ``postgres``, one database for many replicas; ``open_store`` picks by the
target). ``limits`` and ``names`` are the input rules every engine applies.
"""

from mcp_letta.store.factory import is_postgres_url, open_store
from mcp_letta.store.interface import (
    HOST,
    NO_RESPONSE,
    AgentRecord,
    Change,
    Claimed,
    ClaimOutcome,
    Edit,
    Owner,
    PromptBlock,
    Store,
    ToolAgent,
    Tx,
    appender,
)
from mcp_letta.store.postgres import server_status as postgres_status
from mcp_letta.store.postgres.db import FOLLOWER_CONNECTIONS as PG_FOLLOWER_CONNECTIONS
from mcp_letta.store.postgres.db import connection_hint as pg_connection_hint
from mcp_letta.store.postgres.db import redact as redact_url
from mcp_letta.store.sqlite import SQLiteStore
from mcp_letta.store.sqlite.db import file_schema_version, latest_schema_version
from mcp_letta.store.transfer import copy_sqlite_to_postgres

__all__ = [
    "HOST",
    "NO_RESPONSE",
    "PG_FOLLOWER_CONNECTIONS",
    "AgentRecord",
    "Change",
    "ClaimOutcome",
    "Claimed",
    "Edit",
    "Owner",
    "PromptBlock",
    "SQLiteStore",
    "Store",
    "ToolAgent",
    "Tx",
    "appender",
    "copy_sqlite_to_postgres",
    "file_schema_version",
    "is_postgres_url",
    "latest_schema_version",
    "open_store",
    "pg_connection_hint",
    "postgres_status",
    "redact_url",
]

"""The PostgreSQL engine: one database shared by any number of ``mcp-letta`` replicas.

``PostgresStore`` implements ``Store`` over a ``PgDatabase`` (a bounded psycopg 3 connection pool; the change
feed is LISTEN/NOTIFY over the change log). ``PostgresTx`` implements ``Tx``: the statements are the SQLite
engine's (``mcp_letta.store.sqlite``: standard SQL, respelled by ``db.translate``) except full-text search
(``memory``: tsvector, GIN, ``ts_rank_cd``). The schema has its own numbered migrations (``migrations/``).
The driver is an optional extra: ``pip install 'mcp-letta[postgres]'``.
"""

from __future__ import annotations

from typing import Any

from mcp_letta.errors import StorageUnavailable
from mcp_letta.models import Message, NewMessage, Page, Passage
from mcp_letta.store import failures
from mcp_letta.store.interface import Clock
from mcp_letta.store.postgres import memory as pg_memory
from mcp_letta.store.postgres.db import (
    DEFAULT_POOL_SIZE,
    UPGRADE,
    PgConn,
    PgDatabase,
    latest_schema_version,
    redact,
    schema_version,
)
from mcp_letta.store.sqlite import SQLiteStore, SQLiteTx
from mcp_letta.store.sqlite import memory as shared_memory

_SERVER_TIME = "SELECT extract(epoch FROM clock_timestamp())"  # the server's clock now, not its transaction's start


class PostgresTx(SQLiteTx):
    """``Tx`` over one PostgreSQL connection inside a transaction (see ``Tx`` for each method)."""

    def __init__(self, conn: PgConn) -> None:
        self.conn = conn  # type: ignore[assignment]  (the shared modules use the same connection interface)

    def server_time(self) -> float | None:
        """The PostgreSQL server's clock."""
        return float(self.conn.execute(_SERVER_TIME).fetchone()[0])

    def schema_version(self) -> int:
        """The newest migration applied (``mcp_letta_schema``)."""
        return int(self.conn.execute("SELECT coalesce(max(version), 0) FROM mcp_letta_schema").fetchone()[0])

    def search_passages(
        self, agent_id: str, query: str, *, tags: list[str], tag_match: str, limit: int, cursor: str | None = None
    ) -> Page[Passage]:
        """Full-text search of an agent's passages: tsvector match, ``ts_rank_cd`` order (see ``memory``)."""
        return pg_memory.search_passages(
            self.conn, agent_id, query, tags=tags, tag_match=tag_match, limit=limit, cursor=cursor,  # type: ignore[arg-type]
        )  # fmt: skip

    def search_messages(
        self, agent_id: str, query: str | None, *, roles: list[str], limit: int, start: str | None, end: str | None,
        cursor: str | None = None,
    ) -> Page[Message]:  # fmt: skip
        """Search an agent's whole history by text (tsvector, ranked), role and date range."""
        return pg_memory.search_messages(
            self.conn,
            agent_id,
            query,
            roles=roles,
            limit=limit,
            start=start,
            end=end,
            cursor=cursor,  # type: ignore[arg-type]
        )

    def append_messages(self, agent_id: str, messages: list[NewMessage]) -> list[Message]:
        """Append messages in order (the generated tsvector column indexes them; no per-transaction hook)."""
        added = shared_memory.append_messages(self.conn, agent_id, messages)
        self.conn.before_commit.pop("index_new_messages", None)  # the tsvector column indexes as rows arrive
        return added


class PostgresStore(SQLiteStore):
    """``Store`` over one PostgreSQL database; other replicas' commits arrive by LISTEN/NOTIFY. Its transactions
    and change feed are the SQLite engine's adapter over ``PgDatabase``, whose ``follow`` listens instead of
    polling (``watch_interval_s`` only paces its reconnects)."""

    tx_class = PostgresTx
    shares_queue = True  # replicas share the work: any of them starts any queued run

    def __init__(self, url: str, *, pool_size: int = DEFAULT_POOL_SIZE, watch_interval_s: float = 0.2) -> None:
        self._use(PgDatabase(url, pool_size=pool_size), watch_interval_s)

    def latest_schema_version(self) -> int:
        """The newest PostgreSQL migration this mcp-letta ships."""
        return latest_schema_version()

    def migrated_while_open(self, found: int, known: int) -> StorageUnavailable:
        """The refusal once a newer mcp-letta has migrated the database to ``found``."""
        return failures.migrated_while_open(redact(self.db.url), found, known, UPGRADE)


def server_status(url: str) -> dict[str, Any]:
    """For ``mcp-letta doctor``: the server version, this database's schema version against the newest this
    mcp-letta ships, the connections open to the server against its limit, and how far the server's clock is
    from this machine's (raises on no connection)."""
    from mcp_letta.store.postgres.db import conninfo, require_driver

    psycopg = require_driver()
    with psycopg.connect(conninfo(url), autocommit=True) as raw:
        clock = Clock()
        clock.follow(lambda: float(raw.execute(_SERVER_TIME).fetchone()[0]))
        return {
            "clock_offset_s": clock.offset,  # the server's clock less this machine's
            "server": raw.execute("SHOW server_version").fetchone()[0],
            "schema_version": schema_version(raw),
            "latest_schema_version": latest_schema_version(),
            "connections": int(raw.execute("SELECT count(*) FROM pg_stat_activity").fetchone()[0]),
            "max_connections": int(raw.execute("SHOW max_connections").fetchone()[0]),
        }


__all__ = ["PostgresStore", "PostgresTx", "server_status"]

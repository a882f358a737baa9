"""``mcp-letta migrate``: copy everything in a SQLite database into an empty PostgreSQL database, history and
all (agents, tags, blocks and their history, archival passages, messages, runs and their steps, agents
attached as tools), keeping every id, sequence number and version.

The copy is one PostgreSQL transaction: it lands whole or not at all. Processes and the change log are
not copied (they describe the processes running on the old file).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from mcp_letta.errors import Invalid
from mcp_letta.store.postgres.db import PgDatabase, redact, require_driver
from mcp_letta.store.sqlite.db import Database

# In foreign-key order; the key columns whose sequences must continue after the copied rows.
TABLES: tuple[tuple[str, str | None], ...] = (
    ("agents", None),
    ("agent_tags", None),
    ("blocks", None),
    ("agent_blocks", None),
    ("block_history", "id"),
    ("passages", "pk"),
    ("passage_tags", None),
    ("archival_counts", None),
    ("messages", "seq"),
    ("runs", "seq"),
    ("run_steps", None),
    ("agent_tools", None),
)
BATCH = 1000


def copy_sqlite_to_postgres(source: Path, target: str) -> dict[str, int]:
    """Copy ``source`` (a SQLite file, migrated to the current schema first) into the empty PostgreSQL
    database ``target``; the number of rows copied per table. ``Invalid`` when the source is missing or
    the target already holds data."""
    require_driver()
    source = Path(source).expanduser()
    if not source.exists():
        raise Invalid(f"{source} does not exist: pass the SQLite file to copy (--from agents.db)")
    lite = Database(source)
    lite.open()
    pg = PgDatabase(target, pool_size=1)
    try:
        pg.open()
        conn = lite._acquire()
        try:
            conn.execute("BEGIN")  # one snapshot of the source
            copied = _copy(conn, pg, target)
            conn.execute("COMMIT")
        finally:
            lite._release(conn)
    finally:
        pg.close()
        lite.close()
    return copied


def _copy(lite: sqlite3.Connection, pg: PgDatabase, target: str) -> dict[str, int]:
    copied: dict[str, int] = {}
    with pg._connection() as raw, raw.transaction():
        held = {t: raw.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("agents", "blocks", "runs")}
        if any(held.values()):
            listed = ", ".join(f"{n} {t}" for t, n in held.items() if n)
            raise Invalid(
                f"{redact(target)} already holds data ({listed}): migrate into an empty database "
                "(createdb a new one), so nothing is mixed or overwritten"
            )
        for table, key in TABLES:
            columns = [
                r[0] for r in raw.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                    "AND table_name = %s AND is_generated = 'NEVER' ORDER BY ordinal_position", (table,),
                ).fetchall()
            ]  # fmt: skip
            names = ", ".join(columns)
            insert = f"INSERT INTO {table} ({names}) VALUES ({', '.join(['%s'] * len(columns))})"
            cursor = lite.execute(f"SELECT {names} FROM {table}")
            count = 0
            while rows := cursor.fetchmany(BATCH):
                raw.cursor().executemany(insert, [tuple(row) for row in rows])
                count += len(rows)
            copied[table] = count
            if key is not None:
                raw.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', '{key}'), "
                    f"(SELECT coalesce(max({key}), 0) + 1 FROM {table}), false)"
                )
    return copied

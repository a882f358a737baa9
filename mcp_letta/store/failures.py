"""What a storage failure means to the person running mcp-letta: one message per cause, saying what happened
and what to do, the same at start-up, on a tool result and in ``mcp-letta doctor``. Every engine words its
failures with these; ``where`` is what names the database to its owner (a file path, a server address).
"""

from __future__ import annotations

from mcp_letta.errors import StorageUnavailable

SETTING = "MCP_LETTA_DB"


def disk_full(where: str, detail: str = "") -> StorageUnavailable:
    """The storage has no room for a write (nothing of it was written; ``detail``: the server's words)."""
    said = f" ({detail})" if detail else ""
    return StorageUnavailable(f"the disk holding {where} is full{said}", "nothing was written; free space and retry",
                              reason="disk_full")  # fmt: skip


def not_ours(where: str, why: str, hint: str = "move this file aside") -> StorageUnavailable:
    """The database exists but is not an mcp-letta database (``why``: what it is instead; ``hint``: the way
    out besides pointing elsewhere)."""
    return StorageUnavailable(f"{where} is not an mcp-letta database ({why})",
                              f"point {SETTING} (or --db) at an mcp-letta database, or {hint}",
                              reason="not_ours")  # fmt: skip


def newer_schema(where: str, found: int, known: int, upgrade: str = "pip install -U mcp-letta") -> StorageUnavailable:
    """The database was written by a newer mcp-letta: its schema is past every migration this one knows
    (``upgrade``: the command that installs a newer one)."""
    return StorageUnavailable(
        f"{where} has schema version {found}, from a newer mcp-letta; this one knows versions up to {known}",
        f"upgrade mcp-letta ({upgrade}) to open it (nothing was written to it)",
        reason="newer_schema",
    )


def migrated_while_open(
    where: str, found: int, known: int, upgrade: str = "pip install -U mcp-letta"
) -> StorageUnavailable:
    """A newer mcp-letta migrated the database while this one had it open: this one stops using it."""
    return StorageUnavailable(
        f"{where} was migrated to schema version {found} by a newer mcp-letta while this one (which knows versions "
        f"up to {known}) had it open",
        f"upgrade mcp-letta ({upgrade}) and restart this server; it no longer reads or writes the database",
        reason="newer_schema",
    )


def unreachable(where: str, detail: str) -> StorageUnavailable:
    """The database server cannot be reached, or broke the connection (``detail``: how)."""
    return StorageUnavailable(
        f"the connection to the database at {where} failed ({detail})",
        "retry once the server answers again: mcp-letta reconnects by itself, and runs it was executing resume "
        "from their last step",
        reason="unreachable",
    )


def busy(where: str, connections: int, waited_s: float) -> StorageUnavailable:
    """Every connection of this process to the database server stayed in use for ``waited_s``."""
    return StorageUnavailable(
        f"each of this server's {connections} connections to the database at {where} stayed busy for "
        f"{waited_s:.0f} s (long transactions, or rows another writer holds)",
        "retry; if it goes on, raise MCP_LETTA_PG_POOL_SIZE or look for sessions holding locks (pg_stat_activity)",
        reason="busy",
    )


def gave_up(where: str, detail: str) -> StorageUnavailable:
    """The database server gave up on a statement for a limit of its own: memory, connections, or a lock or
    statement timeout set on it (``detail``: its words). Nothing of the call was written."""
    return StorageUnavailable(
        f"{where} gave up on this call ({detail}); nothing was written",
        "retry; if it goes on, look at the server's limits and at the settings of mcp-letta's database user "
        "(statement_timeout, lock_timeout), and at sessions holding locks (pg_stat_activity)",
        reason="busy",
    )


def pooled(where: str, sign: str) -> StorageUnavailable:
    """The URL leads to a connection pooler that lends a server session per transaction (``sign``: what gave it
    away), while mcp-letta keeps state in its sessions: what it listens for, its prepared statements."""
    return StorageUnavailable(
        f"{where} goes through a connection pooler in transaction mode (such as PgBouncer's pool_mode = "
        f"transaction): {sign}",
        f"point {SETTING} at the PostgreSQL server itself, or at a pooler in session mode (pool_mode = session)",
        reason="pooled",
    )


def read_only(what: str, hint: str) -> StorageUnavailable:
    """The database, its folder or its file system cannot be written."""
    return StorageUnavailable(what, hint, reason="read_only")


def damaged(where: str, detail: str) -> StorageUnavailable:
    """The database's content is corrupt."""
    hint = "restore it from a backup, or move it aside to start a new one"
    return StorageUnavailable(f"{where} is damaged ({detail})", hint, reason="damaged")


def io_error(where: str, detail: str) -> StorageUnavailable:
    """Reading or writing the storage failed below the database (a disk or file system error)."""
    return StorageUnavailable(f"reading or writing {where} failed ({detail}); nothing was written",
                              "check the disk and the file system, then retry", reason="io_error")  # fmt: skip

"""Memory blocks in SQLite: create, resolve, atomic edits with history, attach/detach, delete.

Every function takes an open connection inside a transaction (see ``Database.read``/``write``); an
edit is a read-modify-write inside one ``BEGIN IMMEDIATE`` transaction, so concurrent writers in any
process never lose each other's work.
"""

from __future__ import annotations

import json
from typing import Any

from mcp_letta.errors import Conflict, Invalid, LimitExceeded, NotFound, ReadOnly, VersionConflict
from mcp_letta.models import Block, BlockChange, BlockSpec, Page
from mcp_letta.store import paging
from mcp_letta.store.interface import Edit, PromptBlock
from mcp_letta.store.limits import (
    MAX_BLOCK_LIMIT,
    MAX_CURSOR,
    MAX_DESCRIPTION,
    check_page,
    check_ref,
    check_text,
    clean_text,
    shown,
)
from mcp_letta.store.names import check_label, suggestion
from mcp_letta.store.sqlite.db import Conn, loads_json, new_id, now_iso

READ_ONLY_MESSAGE = "Error This block is read-only and cannot be edited."


def limit_message(limit: int, requested: int) -> str:
    """Letta's wording for an edit past a block's limit."""
    return (
        f"Edit failed: Exceeds {limit} character limit (requested {requested}). Nothing was changed: "
        "shorten the text, or raise the block's limit."
    )


def _agent_names(conn: Conn, block_ids: list[str]) -> dict[str, list[str]]:
    if not block_ids:
        return {}
    marks = ",".join("?" * len(block_ids))
    rows = conn.execute(
        f"SELECT ab.block_id, a.name FROM agent_blocks ab JOIN agents a ON a.id = ab.agent_id "
        f"WHERE ab.block_id IN ({marks}) ORDER BY a.name",
        block_ids,
    ).fetchall()
    names: dict[str, list[str]] = {}
    for row in rows:
        names.setdefault(row["block_id"], []).append(row["name"])
    return names


def attached_agents(conn: Conn, block_id: str) -> list[tuple[str, str]]:
    """``(id, name)`` of every agent a block is attached to."""
    rows = conn.execute(
        "SELECT a.id, a.name FROM agent_blocks ab JOIN agents a ON a.id = ab.agent_id WHERE ab.block_id = ?",
        (block_id,),
    ).fetchall()
    return [(r[0], r[1]) for r in rows]


def _to_block(row: Any, agents: list[str]) -> Block:
    return Block(
        id=row["id"],
        label=row["label"],
        value=row["value"],
        limit=row["char_limit"],
        description=row["description"],
        read_only=bool(row["read_only"]),
        metadata=loads_json(row["metadata"], {}),
        version=row["version"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        updated_by=row["updated_by"],
        agents=agents,
    )


def to_blocks(conn: Conn, rows: list[Any]) -> list[Block]:
    """Turn block rows into models, with the names of the agents each is attached to."""
    names = _agent_names(conn, [r["id"] for r in rows])
    return [_to_block(r, names.get(r["id"], [])) for r in rows]


def resolve_block_row(conn: Conn, ref: str, agent_id: str | None = None, agent_name: str | None = None) -> Any:
    """Find a block by id, or by label (within ``agent_id`` when given, else the one block with it)."""
    check_ref(ref, "block")
    if agent_id is not None:
        row = conn.execute(
            "SELECT b.* FROM blocks b JOIN agent_blocks ab ON ab.block_id = b.id "
            "WHERE ab.agent_id = ? AND (b.id = ? OR ab.label = ?)",
            (agent_id, ref, ref),
        ).fetchone()
        if row is not None:
            return row
        labels = [r[0] for r in conn.execute("SELECT label FROM agent_blocks WHERE agent_id = ?", (agent_id,))]
        raise NotFound(
            f"agent {agent_name or agent_id!r} has no block {shown(ref)}; "
            + suggestion(ref, labels).replace("none exist yet", "it has no blocks")
        )
    row = conn.execute("SELECT * FROM blocks WHERE id = ?", (ref,)).fetchone()
    if row is not None:
        return row
    rows = conn.execute("SELECT * FROM blocks WHERE label = ? ORDER BY created_at", (ref,)).fetchall()
    if len(rows) == 1:
        return rows[0]
    if len(rows) > 1:
        owners = _agent_names(conn, [r["id"] for r in rows])
        described = "; ".join(f"{r['id']} (agents: {', '.join(owners.get(r['id'], [])) or 'none'})" for r in rows)
        unused = [r["id"] for r in rows if not owners.get(r["id"])]
        tidy = f" (or delete the copy no agent uses: delete_block {unused[-1]})" if unused else ""
        raise Invalid(
            f"label {shown(ref)} matches {len(rows)} blocks: {described}. Pass the block id, or the agent "
            f"whose block you mean{tidy}"
        )
    labels = sorted({r[0] for r in conn.execute("SELECT label FROM blocks")})
    raise NotFound(f"block {shown(ref)} not found; " + suggestion(ref, labels), kind="block")


def insert_block(conn: Conn, spec: BlockSpec, *, writer: str | None, owner_agent_id: str | None = None) -> str:
    """Insert a new block row (validated) and return its id."""
    check_label(spec.label)
    value = clean_text(spec.value)
    _check_limit_value(spec.limit)
    description = spec.description
    if description is not None:
        description = clean_text(check_text(description, "block description", MAX_DESCRIPTION))
    if len(value) > spec.limit:
        raise LimitExceeded(limit_message(spec.limit, len(value)))
    block_id, now = new_id("block"), now_iso()
    conn.execute(
        "INSERT INTO blocks(id, label, value, char_limit, description, read_only, metadata, version, "
        "owner_agent_id, created_at, updated_at, updated_by) VALUES (?,?,?,?,?,?,?,1,?,?,?,?)",
        (
            block_id,
            spec.label,
            value,
            spec.limit,
            description,
            int(spec.read_only),
            json.dumps(spec.metadata),
            owner_agent_id,
            now,
            now,
            writer,
        ),
    )
    conn.execute(
        "INSERT INTO block_history(block_id, version, writer, op, old_value, new_value, at) "
        "VALUES (?, 1, ?, 'create', NULL, ?, ?)",
        (block_id, writer, value, now),
    )
    conn.log_change("block", block_id)
    return block_id


def _check_limit_value(limit: int) -> None:
    if not isinstance(limit, int) or limit < 1 or limit > MAX_BLOCK_LIMIT:
        raise Invalid(f"block limit must be between 1 and {MAX_BLOCK_LIMIT} characters (got {shown(limit)})")


def get_block(conn: Conn, block_id: str) -> Block:
    """The block with this exact id (it must exist)."""
    return to_blocks(conn, [conn.execute("SELECT * FROM blocks WHERE id = ?", (block_id,)).fetchone()])[0]


def agent_blocks(conn: Conn, agent_id: str) -> list[Block]:
    """Every block attached to an agent, in attachment (prompt) order."""
    rows = conn.execute(
        "SELECT b.* FROM blocks b JOIN agent_blocks ab ON ab.block_id = b.id WHERE ab.agent_id = ? "
        "ORDER BY ab.position, b.id",
        (agent_id,),
    ).fetchall()
    return to_blocks(conn, rows)


def list_blocks(
    conn: Conn, *, label: str | None = None, agent_id: str | None = None, limit: int = 20, cursor: str | None = None
) -> Page[Block]:
    """A page of blocks filtered by label and/or by the agent they are attached to: by label, creation time
    and id; in attachment order (position, id) for one agent."""
    check_page(limit)
    if label is not None:
        check_ref(label, "block label")
    scope = [label, agent_id]
    where, args = "", []
    if label is not None:
        where += " AND b.label = ?"
        args.append(label)
    if agent_id is not None:
        after = paging.decode(cursor, "blocks", scope, [int, str]) or [-1, ""]
        source = "blocks b JOIN agent_blocks ab ON ab.block_id = b.id WHERE ab.agent_id = ?"
        args.insert(0, agent_id)
        keyed, order = " AND (ab.position, b.id) > (?, ?)", " ORDER BY ab.position, b.id"
        select = "SELECT b.*, ab.position AS position FROM "

        def key(row: Any) -> paging.Key:
            return [row["position"], row["id"]]
    else:
        after = paging.decode(cursor, "blocks", scope, [str, str, str]) or ["", "", ""]
        source = "blocks b WHERE 1=1"
        keyed, order = " AND (b.label, b.created_at, b.id) > (?, ?, ?)", " ORDER BY b.label, b.created_at, b.id"
        select = "SELECT b.* FROM "

        def key(row: Any) -> paging.Key:
            return [row["label"], row["created_at"], row["id"]]

    def count_after(last: paging.Key) -> int:
        return conn.execute(f"SELECT count(*) FROM {source}{where}{keyed}", [*args, *last]).fetchone()[0]

    rows = conn.execute(f"{select}{source}{where}{keyed}{order} LIMIT ?", [*args, *after, limit]).fetchall()
    return paging.page_of(
        rows, to_blocks(conn, rows), limit, key=key, count_after=count_after, listing="blocks", scope=scope
    )


def blocks_in_prompts(conn: Conn, agent_ids: list[str]) -> dict[str, list[PromptBlock]]:
    """Each agent's blocks in attachment order, as its prompt shows them (every start and step renders this,
    for a hundred agents at once in a broadcast: plain tuples, not models)."""
    out: dict[str, list[PromptBlock]] = {agent_id: [] for agent_id in agent_ids}
    marks = ",".join("?" * len(agent_ids))
    for attached_to, label, description, value, limit, read_only in conn.execute(
        f"SELECT ab.agent_id, b.label, b.description, b.value, b.char_limit, b.read_only FROM blocks b "
        f"JOIN agent_blocks ab ON ab.block_id = b.id WHERE ab.agent_id IN ({marks}) ORDER BY ab.agent_id, ab.position",
        agent_ids,
    ):
        out[attached_to].append(PromptBlock(label, description, value, limit, bool(read_only)))
    return out


def edit_block(
    conn: Conn,
    row: Any,
    edit: Edit,
    *,
    op: str,
    writer: str | None,
    expected_version: int | None = None,
    enforce_read_only: bool = False,
) -> Block:
    """Apply ``edit(old_value) -> new_value`` atomically: checks, write, version bump, history, change log.

    ``row`` must have been read in this same transaction; it is read again with a row lock where writers
    run side by side (``locked``), so nobody can have changed it since.
    """
    row = locked(conn, row)
    if enforce_read_only and row["read_only"]:
        raise ReadOnly(READ_ONLY_MESSAGE)
    if expected_version is not None and expected_version != row["version"]:
        raise VersionConflict(
            f"block {row['label']!r} ({row['id']}) is at version {row['version']}, you wrote against "
            f"{expected_version}: read it again and retry",
            current_version=row["version"],
            current_value=row["value"],
        )
    old = row["value"]
    new = clean_text(edit(old))
    if len(new) > row["char_limit"]:
        raise LimitExceeded(limit_message(row["char_limit"], len(new)))
    version, now = row["version"] + 1, now_iso()
    conn.execute(
        "UPDATE blocks SET value = ?, version = ?, updated_at = ?, updated_by = ? WHERE id = ?",
        (new, version, now, writer, row["id"]),
    )
    conn.execute(
        "INSERT INTO block_history(block_id, version, writer, op, old_value, new_value, at) VALUES (?,?,?,?,?,?,?)",
        (row["id"], version, writer, op, old, new, now),
    )
    conn.log_change("block", row["id"])
    return get_block(conn, row["id"])


def locked(conn: Conn, row: Any) -> Any:
    """A block row read in this transaction, as it is now and locked until commit where write transactions
    run side by side (PostgreSQL): concurrent edits of one block then take turns, each on the value the
    previous one committed (versions stay contiguous). Under SQLite's single writer it is ``row`` itself."""
    if not conn.for_update:
        return row
    fresh = conn.execute("SELECT * FROM blocks WHERE id = ?" + conn.for_update, (row["id"],)).fetchone()
    if fresh is None:
        raise NotFound(f"block {row['label']!r} ({row['id']}) was deleted meanwhile", kind="block")
    return fresh


def replacer(old_text: str, new_text: str, *, replace_all: bool, label: str) -> Edit:
    """An edit that replaces ``old_text``; it must occur, and once unless ``replace_all``."""
    if not old_text:
        raise Invalid("the text to replace is empty: pass the exact substring to replace")
    check_text(old_text, "the text to replace", MAX_BLOCK_LIMIT)

    def edit(value: str) -> str:
        count = value.count(old_text)
        if count == 0:
            raise Invalid(
                f"{shown(old_text)} does not occur in block {label!r}: read the block and pass an exact substring"
            )
        if count > 1 and not replace_all:
            raise Invalid(
                f"{shown(old_text)} occurs {count} times in block {label!r}: include more surrounding text so it "
                "is unique, or pass replace_all=true"
            )
        return value.replace(old_text, new_text)

    return edit


def update_block_settings(
    conn: Conn,
    row: Any,
    *,
    limit: int | None = None,
    description: str | None = None,
    read_only: bool | None = None,
    metadata: dict[str, Any] | None = None,
    writer: str | None = None,
) -> Block:
    """Change a block's limit, description, read-only flag or metadata (not its value)."""
    row = locked(conn, row)
    if description is not None:
        description = clean_text(check_text(description, "block description", MAX_DESCRIPTION))
    if limit is not None:
        _check_limit_value(limit)
        if len(row["value"]) > limit:
            raise LimitExceeded(
                f"Limit ({limit}) cannot be less than current value length ({len(row['value'])} characters)"
            )
    conn.execute(
        "UPDATE blocks SET char_limit = coalesce(?, char_limit), description = coalesce(?, description), "
        "read_only = coalesce(?, read_only), metadata = coalesce(?, metadata), updated_at = ?, updated_by = ? "
        "WHERE id = ?",
        (
            limit,
            description,
            None if read_only is None else int(read_only),
            None if metadata is None else json.dumps(metadata),
            now_iso(),
            writer,
            row["id"],
        ),
    )
    conn.log_change("block", row["id"])
    return get_block(conn, row["id"])


def attach(conn: Conn, agent_id: str, agent_name: str, block_row: Any) -> bool:
    """Attach a block to an agent; False if it already was. A second block with the same label conflicts."""
    if conn.execute(
        "SELECT 1 FROM agent_blocks WHERE agent_id = ? AND block_id = ?", (agent_id, block_row["id"])
    ).fetchone():
        return False
    clash = conn.execute(
        "SELECT block_id FROM agent_blocks WHERE agent_id = ? AND label = ?", (agent_id, block_row["label"])
    ).fetchone()
    if clash is not None:
        raise Conflict(
            f"agent {agent_name!r} already has a block labelled {block_row['label']!r} ({clash[0]}): a label is "
            "unique per agent, so detach that block first or attach a block with another label"
        )
    position = conn.execute(
        "SELECT coalesce(max(position), -1) + 1 FROM agent_blocks WHERE agent_id = ?", (agent_id,)
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO agent_blocks(agent_id, block_id, label, position) VALUES (?,?,?,?)",
        (agent_id, block_row["id"], block_row["label"], position),
    )
    conn.log_change("agent", agent_id)
    conn.log_change("block", block_row["id"])
    return True


def detach(conn: Conn, agent_id: str, agent_name: str, block_row: Any) -> None:
    """Detach a block from an agent; an error if it was not attached."""
    cur = conn.execute("DELETE FROM agent_blocks WHERE agent_id = ? AND block_id = ?", (agent_id, block_row["id"]))
    if cur.rowcount == 0:
        raise NotFound(
            f"block {block_row['label']!r} ({block_row['id']}) is not attached to agent {agent_name!r}: "
            "get_agent lists the blocks it has"
        )
    conn.log_change("agent", agent_id)
    conn.log_change("block", block_row["id"])


def delete(conn: Conn, block_row: Any) -> list[str]:
    """Delete a block (and its history); returns the ids of the agents it was detached from."""
    agent_ids = [r[0] for r in conn.execute("SELECT agent_id FROM agent_blocks WHERE block_id = ?", (block_row["id"],))]
    conn.execute("DELETE FROM blocks WHERE id = ?", (block_row["id"],))
    conn.log_change("block", block_row["id"])
    for agent_id in agent_ids:
        conn.log_change("agent", agent_id)
    return agent_ids


def history(conn: Conn, block_id: str, *, limit: int = 20, cursor: str | None = None) -> Page[BlockChange]:
    """A page of a block's writes, newest first."""
    check_page(limit)
    after = paging.decode(cursor, "block history", [block_id], [int])
    before = after[0] if after else MAX_CURSOR

    def count_after(last: paging.Key) -> int:
        sql = "SELECT count(*) FROM block_history WHERE block_id = ? AND version < ?"
        return conn.execute(sql, (block_id, last[0])).fetchone()[0]

    rows = conn.execute(
        "SELECT * FROM block_history WHERE block_id = ? AND version < ? ORDER BY version DESC LIMIT ?",
        (block_id, before, limit),
    ).fetchall()
    items = [
        BlockChange(
            block_id=r["block_id"],
            version=r["version"],
            writer=r["writer"],
            op=r["op"],
            old_value=r["old_value"],
            new_value=r["new_value"],
            at=r["at"],
        )
        for r in rows
    ]
    return paging.page_of(
        rows, items, limit, key=lambda r: [r["version"]], count_after=count_after, listing="block history",
        scope=[block_id],
    )  # fmt: skip

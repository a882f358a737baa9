"""Agents in SQLite: create (with their blocks, in one transaction), resolve, list, update, delete.

Functions take a connection inside a transaction; see ``Database``.
"""

from __future__ import annotations

import json
from typing import Any

from mcp_letta.errors import Conflict, Invalid, NotFound
from mcp_letta.models import Agent, BlockSpec, ModelSettings, Page
from mcp_letta.store import paging
from mcp_letta.store.limits import (
    MAX_DESCRIPTION,
    MAX_QUERY,
    MAX_SYSTEM,
    check_page,
    check_ref,
    check_tags,
    check_text,
    clean_text,
    shown,
)
from mcp_letta.store.names import check_agent_name, suggestion
from mcp_letta.store.sqlite import blocks, tool_agents
from mcp_letta.store.sqlite.db import Conn, loads_json, new_id, now_iso


def resolve_agent_row(conn: Conn, ref: str) -> Any:
    """Find an agent by id or by name (case-insensitive); a clear error naming near matches otherwise."""
    check_ref(ref, "agent")
    row = conn.execute("SELECT * FROM agents WHERE id = ? OR name = ?", (ref, ref)).fetchone()
    if row is not None:
        return row
    names = [r[0] for r in conn.execute("SELECT name FROM agents ORDER BY name")]
    raise NotFound(f"agent {shown(ref)} not found; " + suggestion(ref, names), kind="agent")


def _tags(conn: Conn, agent_id: str) -> list[str]:
    return [r[0] for r in conn.execute("SELECT tag FROM agent_tags WHERE agent_id = ? ORDER BY tag", (agent_id,))]


def to_agent(conn: Conn, row: Any) -> Agent:
    """Build the full agent model (tags, blocks in attachment order) from its row."""
    return Agent(
        id=row["id"],
        name=row["name"],
        description=row["description"],
        system=row["system"],
        agent_type=row["agent_type"],
        tags=_tags(conn, row["id"]),
        model_settings=ModelSettings.model_validate(loads_json(row["model_settings"], {})),
        metadata=loads_json(row["metadata"], {}),
        blocks=blocks.agent_blocks(conn, row["id"]),
        agent_tools=tool_agents.listed(conn, row["id"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _check_texts(description: str | None, system: str | None) -> tuple[str | None, str | None]:
    """The description and system prompt, checked, without NUL (free text loses it: ``clean_text``)."""
    if description is not None:
        description = clean_text(check_text(description, "agent description", MAX_DESCRIPTION))
    if system is not None:
        system = clean_text(check_text(system, "system prompt", MAX_SYSTEM))
    return description, system


def _check_unique_name(conn: Conn, name: str, except_id: str | None = None) -> None:
    row = conn.execute("SELECT id, name FROM agents WHERE name = ?", (name,)).fetchone()
    if row is not None and row["id"] != except_id:
        raise Conflict(f"an agent named {row['name']!r} already exists ({row['id']}): pick another name")


def create(
    conn: Conn,
    *,
    name: str,
    system: str,
    description: str | None,
    block_specs: list[BlockSpec],
    shared_block_refs: list[str],
    tags: list[str],
    model_settings: ModelSettings,
    metadata: dict[str, Any],
    writer: str | None,
    tool_agent_refs: list[str] | None = None,
) -> Agent:
    """Create an agent, its own blocks, shared blocks and agents attached as tools; all or nothing."""
    check_agent_name(name)
    description, system = _check_texts(description, system)
    _check_unique_name(conn, name)
    tags = check_tags(tags)
    labels = [spec.label for spec in block_specs]
    shared_rows = [blocks.resolve_block_row(conn, ref) for ref in shared_block_refs]
    tool_rows = [resolve_agent_row(conn, ref) for ref in tool_agent_refs or []]
    labels += [row["label"] for row in shared_rows]
    dupes = sorted({label for label in labels if labels.count(label) > 1})
    if dupes:
        raise Conflict(
            f"two blocks for agent {name!r} share the label(s) {', '.join(dupes)}: a label is unique per agent"
        )
    agent_id, now = new_id("agent"), now_iso()
    conn.execute(
        "INSERT INTO agents(id, name, description, system, model_settings, metadata, created_at, updated_at) "
        "VALUES (?,?,?,?,?,?,?,?)",
        (
            agent_id,
            name,
            description,
            system,
            model_settings.model_dump_json(exclude_none=True),
            json.dumps(metadata),
            now,
            now,
        ),
    )
    conn.executemany("INSERT INTO agent_tags(agent_id, tag) VALUES (?, ?)", [(agent_id, t) for t in tags])
    for row in shared_rows:
        blocks.attach(conn, agent_id, name, row)
    for spec in block_specs:
        block_id = blocks.insert_block(conn, spec, writer=writer, owner_agent_id=agent_id)
        blocks.attach(conn, agent_id, name, conn.execute("SELECT * FROM blocks WHERE id = ?", (block_id,)).fetchone())
    row = conn.execute("SELECT * FROM agents WHERE id = ?", (agent_id,)).fetchone()
    for tool_row in tool_rows:
        tool_agents.attach(conn, row, tool_row)
    conn.log_change("agents", agent_id)
    return to_agent(conn, row)


def list_agents(
    conn: Conn,
    *,
    tags: list[str] | None = None,
    match_all_tags: bool = False,
    query: str | None = None,
    limit: int = 20,
    cursor: str | None = None,
) -> Page[Agent]:
    """A page of agents by name; ``tags`` filters any (or, with ``match_all_tags``, all); ``query`` searches
    text; ``cursor`` continues after the last name of a previous page."""
    check_page(limit)
    tags = check_tags(tags or [])
    scope = [sorted(tags), match_all_tags, query]
    after = paging.decode(cursor, "agents", scope, [str])
    where, args = _tag_filter(tags if match_all_tags else [], [] if match_all_tags else tags)
    if query:
        query = clean_text(check_text(query, "query", MAX_QUERY))  # (names and descriptions hold no NUL)
        like = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where += (
            " AND (a.name LIKE ? ESCAPE '\\' OR coalesce(a.description, '') LIKE ? ESCAPE '\\'"
            " OR a.system LIKE ? ESCAPE '\\')"
        )
        args += [like, like, like]

    def count_after(key: paging.Key) -> int:
        return conn.execute("SELECT count(*) FROM agents a WHERE a.name > ?" + where, [*key, *args]).fetchone()[0]

    rows = conn.execute(
        "SELECT * FROM agents a WHERE a.name > ?" + where + " ORDER BY a.name LIMIT ?",
        [after[0] if after else "", *args, limit],
    ).fetchall()
    items = [to_agent(conn, row) for row in rows]
    return paging.page_of(
        rows, items, limit, key=lambda r: [r["name"]], count_after=count_after, listing="agents", scope=scope
    )


def matching_tags(conn: Conn, match_all: list[str], match_some: list[str]) -> list[Any]:
    """Rows (id, name) of the agents with every tag of ``match_all`` and at least one of ``match_some``, by name.

    Letta's rule: an empty list does not filter, so with both empty every agent matches (including agents
    without tags, which match nothing else).
    """
    where, args = _tag_filter(check_tags(match_all), check_tags(match_some))
    return conn.execute("SELECT a.* FROM agents a WHERE 1=1" + where + " ORDER BY a.name", args).fetchall()


def _tag_filter(match_all: list[str], match_some: list[str]) -> tuple[str, list[Any]]:
    """SQL conditions on ``agents a``: has every tag of ``match_all`` and one of ``match_some`` (empty: any)."""
    sql, args = "", []
    if match_all:
        marks = ",".join("?" * len(match_all))
        sql += f" AND (SELECT count(*) FROM agent_tags t WHERE t.agent_id = a.id AND t.tag IN ({marks})) = ?"
        args += [*match_all, len(match_all)]
    if match_some:
        marks = ",".join("?" * len(match_some))
        sql += f" AND EXISTS (SELECT 1 FROM agent_tags t WHERE t.agent_id = a.id AND t.tag IN ({marks}))"
        args += match_some
    return sql, args


def update(
    conn: Conn,
    row: Any,
    *,
    name: str | None = None,
    description: str | None = None,
    system: str | None = None,
    tags: list[str] | None = None,
    model_settings: ModelSettings | None = None,
    metadata: dict[str, Any] | None = None,
) -> Agent:
    """Change the given fields of an agent (``None`` leaves a field as it is)."""
    agent_id = row["id"]
    if name is not None and name != row["name"]:
        check_agent_name(name)
        _check_unique_name(conn, name, except_id=agent_id)
    if system is not None and not system.strip():
        raise Invalid("system prompt cannot be empty: omit it to keep the current one")
    description, system = _check_texts(description, system)
    conn.execute(
        "UPDATE agents SET name = coalesce(?, name), description = coalesce(?, description), "
        "system = coalesce(?, system), model_settings = coalesce(?, model_settings), "
        "metadata = coalesce(?, metadata), updated_at = ? WHERE id = ?",
        (
            name,
            description,
            system,
            None if model_settings is None else model_settings.model_dump_json(exclude_none=True),
            None if metadata is None else json.dumps(metadata),
            now_iso(),
            agent_id,
        ),
    )
    if tags is not None:
        conn.execute("DELETE FROM agent_tags WHERE agent_id = ?", (agent_id,))
        conn.executemany(
            "INSERT INTO agent_tags(agent_id, tag) VALUES (?, ?)", [(agent_id, t) for t in check_tags(tags)]
        )
    conn.log_change("agent", agent_id)
    if (name is not None and name != row["name"]) or tags is not None or description is not None:
        conn.log_change("agents", agent_id)  # its tool's name, visibility or description may change
        for user in tool_agents.users_of(conn, agent_id):  # so do the ask_<name> tools of agents it is attached to
            conn.log_change("agent", user)
    return to_agent(conn, conn.execute("SELECT * FROM agents WHERE id = ?", (agent_id,)).fetchone())


def delete(conn: Conn, row: Any) -> list[str]:
    """Delete an agent with its history and passages, and the blocks only it used; returns deleted block ids."""
    agent_id = row["id"]
    own = [
        r[0]
        for r in conn.execute(
            "SELECT b.id FROM blocks b JOIN agent_blocks ab ON ab.block_id = b.id WHERE ab.agent_id = ? "
            "AND b.owner_agent_id = ? AND NOT EXISTS (SELECT 1 FROM agent_blocks o WHERE o.block_id = b.id "
            "AND o.agent_id != ?)",
            (agent_id, agent_id, agent_id),
        )
    ]
    shared = [
        r[0]
        for r in conn.execute("SELECT block_id FROM agent_blocks WHERE agent_id = ?", (agent_id,))
        if r[0] not in own
    ]
    users = tool_agents.users_of(conn, agent_id)
    conn.execute("DELETE FROM agents WHERE id = ?", (agent_id,))
    for user in users:  # their ask_<name> tool for this agent is gone
        conn.log_change("agent", user)
    conn.executemany("DELETE FROM blocks WHERE id = ?", [(b,) for b in own])
    for block_id in own + shared:
        conn.log_change("block", block_id)
    conn.log_change("agent", agent_id)
    conn.log_change("agents", agent_id)
    return own

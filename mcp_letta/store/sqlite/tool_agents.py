"""Agents attached to other agents as tools: agent A with agent B attached sees a tool ``ask_<B>``.

Attachments live in the ``agent_tools`` table (not in process memory), so every process offers the same
tools. Functions take a connection inside a transaction; see ``Database``.
"""

from __future__ import annotations

from typing import Any

from mcp_letta.errors import Invalid, NotFound
from mcp_letta.models import AgentTool
from mcp_letta.store.interface import ToolAgent
from mcp_letta.store.sqlite.db import Conn, now_iso


def _description(conn: Conn, row: Any) -> str:
    """The agent's description, else the first line of its persona (what the caller's LLM is told)."""
    text = (row["description"] or "").strip()
    if not text:
        persona = conn.execute(
            "SELECT b.value FROM blocks b JOIN agent_blocks ab ON ab.block_id = b.id "
            "WHERE ab.agent_id = ? AND ab.label = 'persona'",
            (row["id"],),
        ).fetchone()
        text = next((line.strip() for line in (persona[0] if persona else "").splitlines() if line.strip()), "")
    return text


def listed(conn: Conn, agent_id: str) -> list[AgentTool]:
    """The agents attached to ``agent_id`` as tools, in attachment order."""
    return [
        AgentTool(agent_id=r["id"], name=r["name"])
        for r in conn.execute(
            "SELECT a.id, a.name FROM agent_tools t JOIN agents a ON a.id = t.tool_agent_id "
            "WHERE t.agent_id = ? ORDER BY t.position",
            (agent_id,),
        )
    ]


def for_runtimes(conn: Conn, agent_ids: list[str]) -> dict[str, list[ToolAgent]]:
    """Each agent's attached agents with the description their tool shows, for runs that are starting."""
    out: dict[str, list[ToolAgent]] = {agent_id: [] for agent_id in agent_ids}
    marks = ",".join("?" * len(agent_ids))
    for row in conn.execute(
        f"SELECT t.agent_id AS owner_id, a.id, a.name, a.description FROM agent_tools t "
        f"JOIN agents a ON a.id = t.tool_agent_id WHERE t.agent_id IN ({marks}) ORDER BY t.agent_id, t.position",
        agent_ids,
    ):
        out[row["owner_id"]].append(ToolAgent(row["id"], row["name"], _description(conn, row)))
    return out


def attach(conn: Conn, agent: Any, tool_agent: Any) -> bool:
    """Attach agent row ``tool_agent`` to agent row ``agent``; False if it already was."""
    if agent["id"] == tool_agent["id"]:
        raise Invalid(
            f"agent {agent['name']!r} cannot be attached to itself: a run waiting on its own agent would never "
            "get an answer (it can send itself a note with send_message_to_agent_async)"
        )
    position = conn.execute(
        "SELECT coalesce(max(position), -1) + 1 FROM agent_tools WHERE agent_id = ?", (agent["id"],)
    ).fetchone()[0]
    added = conn.execute(
        "INSERT OR IGNORE INTO agent_tools(agent_id, tool_agent_id, position, created_at) VALUES (?,?,?,?)",
        (agent["id"], tool_agent["id"], position, now_iso()),
    ).rowcount
    if added:
        conn.log_change("agent", agent["id"])
    return bool(added)


def detach(conn: Conn, agent: Any, tool_agent: Any) -> None:
    """Detach agent row ``tool_agent`` from agent row ``agent``; an error naming what is attached if it was not."""
    removed = conn.execute(
        "DELETE FROM agent_tools WHERE agent_id = ? AND tool_agent_id = ?", (agent["id"], tool_agent["id"])
    ).rowcount
    if not removed:
        attached = ", ".join(repr(t.name) for t in listed(conn, agent["id"])) or "none"
        raise NotFound(
            f"agent {tool_agent['name']!r} is not attached to {agent['name']!r} as a tool (attached: {attached})"
        )
    conn.log_change("agent", agent["id"])


def users_of(conn: Conn, tool_agent_id: str) -> list[str]:
    """Ids of the agents that have ``tool_agent_id`` attached (their tools change if it is renamed or deleted)."""
    return [r[0] for r in conn.execute("SELECT agent_id FROM agent_tools WHERE tool_agent_id = ?", (tool_agent_id,))]

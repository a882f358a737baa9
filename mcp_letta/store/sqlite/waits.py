"""The wait-for graph, read from the runs table so every process sees the same one, and the checks that
refuse a synchronous wait that would deadlock or nest too deep.

An edge is a run with ``waited = 1`` whose parent run is running: the parent's agent is blocked until
that run ends. A run of agent B cannot start while B runs something else, so if agent A waits on B
while B (through any chain of waits) is blocked on A, neither ever moves. The check runs in the
transaction that would add the edge, holding the graph (``lock_wait_graph``: SQLite's ``BEGIN
IMMEDIATE`` holds everything; PostgreSQL takes a lock for the graph alone, until commit), so two
processes cannot both add half of a cycle: checks take turns, each seeing the edges added before it.
Functions take a connection inside a transaction; see ``Database``.
"""

from __future__ import annotations

from typing import Any

from mcp_letta.errors import Deadlock, NotFound


def _blocked_on(conn: Any, agents: list[str]) -> list[Any]:
    """Edges into ``agents``: (waiting agent, blocked-on agent) for each unfinished run of theirs waited on."""
    marks = ",".join("?" * len(agents))
    return conn.execute(
        "SELECT p.agent_id AS waiter, p.agent_name AS waiter_name, c.agent_id AS agent, c.agent_name AS agent_name "
        "FROM runs c JOIN runs p ON p.id = c.parent_run_id "
        f"WHERE c.agent_id IN ({marks}) AND c.status IN ('queued', 'running') AND c.waited = 1 "
        "AND p.status = 'running'",
        agents,
    ).fetchall()


def wait_chain(conn: Any, waiter_id: str, target_id: str) -> list[str] | None:
    """Names along a chain of waits from ``target`` back to ``waiter``, or None if ``target`` is not blocked on it.

    Walks up from the waiter: which agents are blocked on it, then which are blocked on those...
    """
    names: dict[str, str] = {}
    via: dict[str, str] = {}  # agent -> the agent it is blocked on, one step closer to the waiter
    frontier, seen = [waiter_id], {waiter_id}
    while frontier:
        next_frontier = []
        for edge in _blocked_on(conn, frontier):
            names[edge["waiter"]], names[edge["agent"]] = edge["waiter_name"], edge["agent_name"]
            if edge["waiter"] in seen:
                continue
            seen.add(edge["waiter"])
            via[edge["waiter"]] = edge["agent"]
            if edge["waiter"] == target_id:
                chain, at = [names[target_id]], target_id
                while at != waiter_id:
                    at = via[at]
                    chain.append(names[at])
                return chain
            next_frontier.append(edge["waiter"])
        frontier = next_frontier
    return None


def _ancestry(conn: Any, run_id: str) -> list[str]:
    """Agent names from the outermost run down to ``run_id``'s, following synchronous waits."""
    names = []
    row = conn.execute("SELECT agent_name, parent_run_id, waited FROM runs WHERE id = ?", (run_id,)).fetchone()
    while row is not None:
        names.append(row["agent_name"])
        if not row["waited"] or row["parent_run_id"] is None:
            break
        row = conn.execute(
            "SELECT agent_name, parent_run_id, waited FROM runs WHERE id = ?", (row["parent_run_id"],)
        ).fetchone()
    return names[::-1]


def check_wait(conn: Any, parent_run_id: str, target: Any, max_depth: int) -> int:
    """Refuse (``Deadlock``) a wait of run ``parent_run_id`` on a new run of agent row ``target`` that would
    deadlock or nest deeper than ``max_depth``; otherwise return the new run's depth.

    Only a running parent holds its agent's turn; a finished one cannot deadlock, so only depth applies.
    """
    parent = conn.execute(
        "SELECT id, agent_id, agent_name, status, depth FROM runs WHERE id = ?", (parent_run_id,)
    ).fetchone()
    if parent is None:
        raise NotFound(f"parent run {parent_run_id!r} not found: pass the id of an existing run, or none")
    depth = parent["depth"] + 1
    if depth > max_depth:
        chain = " -> ".join([*_ancestry(conn, parent_run_id), target["name"]])
        raise Deadlock(
            f"refused: {parent['agent_name']} waiting on {target['name']} would nest {depth} synchronous waits "
            f"({chain}), over the limit of {max_depth}",
            chain=chain,
            reason="depth",
        )
    if parent["status"] != "running":
        return depth
    if target["id"] == parent["agent_id"]:
        raise Deadlock(
            f"refused: {target['name']} cannot wait on itself: the message would queue behind the run that is "
            "waiting for it, so waiting would deadlock.",
            chain=[target["name"], target["name"]],
        )
    conn.lock_wait_graph()
    chain = wait_chain(conn, parent["agent_id"], target["id"])
    if chain is not None:
        path = ", which is waiting on ".join(chain)
        raise Deadlock(
            f"refused: {parent['agent_name']} is waiting on {path}; waiting would deadlock.",
            chain=[parent["agent_name"], *chain],
        )
    return depth


def stop_waiting(conn: Any, run_id: str, *, reply_to: str | None) -> bool:
    """The parent gave up waiting on an unfinished run: drop the edge and route the reply to ``reply_to``.

    False if the run had finished meanwhile (then its result is there to read instead).
    """
    updated = conn.execute(
        "UPDATE runs SET waited = 0, reply_to = ? WHERE id = ? AND status IN ('queued', 'running')",
        (reply_to, run_id),
    ).rowcount
    if updated:
        conn.log_change("run", run_id)
    return bool(updated)

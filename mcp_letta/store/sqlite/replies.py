"""Where the reply of an asynchronous message goes: the host inbox (unread replies, read once), or the
sending agent, which gets a notice as a new incoming message. ``runs.finish_run`` routes every reply in
the transaction that ends the run, so a reply is delivered exactly once whichever process ends it.

Functions take a connection inside a transaction; see ``Database``.
"""

from __future__ import annotations

from typing import Any

from mcp_letta.store.interface import HOST, NO_RESPONSE
from mcp_letta.store.limits import check_page


def reply_notice(row: Any) -> str:
    """The message a sending agent receives when the run it sent asynchronously ends (in Letta's style)."""
    head = f"agent '{row['agent_name']}' (ID '{row['agent_id']}') to your message (run {row['id']})"
    if row["status"] == "completed":
        return f"[Reply from {head}] {row['reply'] or NO_RESPONSE}"
    why = row["error"] or row["status"]
    return f"[No reply from {head}: its run {row['status']}: {why}]"


def unread_ids(conn: Any, limit: int) -> list[str]:
    """Ids of the finished runs the host sent asynchronously whose replies it has not read, oldest first."""
    check_page(limit)
    return [
        r[0]
        for r in conn.execute(
            "SELECT id FROM runs WHERE reply_to = ? AND reply_read = 0 AND finished_at IS NOT NULL "
            "ORDER BY finished_at, seq LIMIT ?" + conn.skip_locked,  # two readers at once take different ones
            (HOST, limit),
        )
    ]


def mark_read(conn: Any, run_ids: list[str]) -> None:
    """Take replies out of the host inbox (they stay on their runs)."""
    conn.executemany("UPDATE runs SET reply_read = 1 WHERE id = ?", [(run_id,) for run_id in run_ids])
    for run_id in run_ids:
        conn.log_change("inbox", run_id)


def unread_count(conn: Any) -> int:
    """How many replies wait in the host inbox."""
    row = conn.execute(
        "SELECT count(*) FROM runs WHERE reply_to = ? AND reply_read = 0 AND finished_at IS NOT NULL", (HOST,)
    ).fetchone()
    return int(row[0])

"""Archival memory (passages with tags, FTS5 BM25 search) and recall memory (every message, searchable).

Functions take a connection inside a transaction; see ``Database``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC
from typing import Any, Literal

from mcp_letta.errors import Invalid, NotFound
from mcp_letta.models import Message, NewMessage, Page, Passage, ToolCall, read_moment
from mcp_letta.store import paging
from mcp_letta.store.limits import (
    MAX_CURSOR,
    MAX_QUERY,
    MAX_TEXT,
    check_page,
    check_ref,
    check_tags,
    check_text,
    clean_text,
    shown,
)
from mcp_letta.store.sqlite.db import Conn, loads_json, new_id, new_ordered_id, now_iso

_WORD = re.compile(r"\w+", re.UNICODE)


def fts_query(text: str) -> str:
    """Turn free text into an FTS5 expression: every word quoted (no syntax errors), any word matches.

    BM25 then ranks passages that contain more of the words, and rarer ones, first.
    """
    check_text(text, "search query", MAX_QUERY)
    words = _WORD.findall(text)
    if not words:
        raise Invalid(f"search query {shown(text)} has no words to search for: pass one or more words")
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(words))


def _fts_phrase(text: str) -> str:
    """``text`` as one FTS5 phrase (quoted, its quotes doubled)."""
    return '"' + text.replace('"', '""') + '"'


# -- archival ---------------------------------------------------------------------------------------
def _to_passage(row: Any, score: float | None = None) -> Passage:
    return Passage(
        id=row["id"],
        agent_id=row["agent_id"],
        text=row["text"],
        tags=loads_json(row["tags"], []),
        created_at=row["created_at"],
        score=score,
    )


def _checked_passage(text: str, tags: list[str] | None) -> tuple[str, list[str]]:
    text = clean_text(check_text(text, "archival passage", MAX_TEXT))
    if not text.strip():
        raise Invalid("archival passage text is empty: pass the text to remember")
    return text, check_tags(tags)


def insert_passages(conn: Conn, agent_id: str, passages: Sequence[tuple[str, list[str]]]) -> int:
    """Store many ``(text, tags)`` passages for one agent in order, checked as ``insert_passage`` checks one
    (any bad one raises and, the transaction rolling back, stores none): three batched statements however
    many, for loading a large archival memory. Returns how many were stored."""
    rows, tag_rows = [], []
    now = now_iso()
    for text, tags in passages:
        text, tags = _checked_passage(text, tags)
        passage_id = new_id("passage")
        rows.append((passage_id, agent_id, text, json.dumps(tags), now))
        tag_rows += [(agent_id, tag, passage_id) for tag in tags]
    if not rows:
        return 0
    conn.executemany("INSERT INTO passages(id, agent_id, text, tags, created_at) VALUES (?,?,?,?,?)", rows)
    conn.executemany(
        "INSERT INTO passage_tags(passage_pk, agent_id, tag) SELECT pk, ?, ? FROM passages WHERE id = ?", tag_rows
    )
    conn.execute(
        "INSERT INTO archival_counts(agent_id, passages) VALUES (?, ?) "
        "ON CONFLICT (agent_id) DO UPDATE SET passages = archival_counts.passages + excluded.passages",
        (agent_id, len(rows)),
    )
    conn.log_change("agent", agent_id)
    return len(rows)


def insert_passage(conn: Conn, agent_id: str, text: str, tags: list[str] | None = None) -> Passage:
    """Store one archival passage for an agent."""
    text, tags = _checked_passage(text, tags)
    passage_id, now = new_id("passage"), now_iso()
    cur = conn.execute(
        "INSERT INTO passages(id, agent_id, text, tags, created_at) VALUES (?,?,?,?,?)",
        (passage_id, agent_id, text, json.dumps(tags), now),
    )
    conn.executemany(
        "INSERT INTO passage_tags(passage_pk, agent_id, tag) VALUES (?,?,?)",
        [(cur.lastrowid, agent_id, t) for t in tags],
    )
    conn.execute(
        "INSERT INTO archival_counts(agent_id, passages) VALUES (?, 1) "
        "ON CONFLICT (agent_id) DO UPDATE SET passages = archival_counts.passages + 1",
        (agent_id,),
    )
    conn.log_change("agent", agent_id)  # the archival count in its memory metadata changed
    return Passage(id=passage_id, agent_id=agent_id, text=text, tags=tags, created_at=now)


def tag_filter(tags: list[str], tag_match: Literal["any", "all"], args: list[Any]) -> str:
    """The condition on passage ``p`` for a search by ``tags`` (any or all of them; none: no condition), its
    parameters appended to ``args``. Both engines' searches use it."""
    if not tags:
        return ""
    marks = ",".join("?" * len(tags))
    if tag_match == "all":
        args += [*tags, len(tags)]
        return f" AND (SELECT count(*) FROM passage_tags t WHERE t.passage_pk = p.pk AND t.tag IN ({marks})) = ?"
    args += tags
    return f" AND EXISTS (SELECT 1 FROM passage_tags t WHERE t.passage_pk = p.pk AND t.tag IN ({marks}))"


def search_passages(
    conn: Conn,
    agent_id: str,
    query: str,
    *,
    tags: list[str] | None = None,
    tag_match: Literal["any", "all"] = "any",
    limit: int = 10,
    cursor: str | None = None,
) -> Page[Passage]:
    """A page of BM25-ranked passages of an agent matching any word of ``query``, optionally filtered by tags.

    The cursor holds the newest passage when the first page was read (later pages leave out passages stored
    since), how many results were shown, and the rank and passage of the last one.
    """
    check_page(limit)
    if tag_match not in ("any", "all"):
        raise Invalid(f"tag_match must be 'any' or 'all' (got {shown(tag_match)})")
    tags = check_tags(tags)
    scope = [agent_id, query, sorted(tags), tag_match]
    after = paging.decode(cursor, "archival search", scope, [int, int, float, int])
    newest = after[0] if after else conn.execute("SELECT coalesce(max(pk), 0) FROM passages").fetchone()[0]
    # The full-text index drives and the bound is on its rowid, applied while it scans its matches. Whether a
    # match is the agent's (and has the tags) is a lookup in the (agent, passage) index, not in the passages
    # table: most matches of a small agent among many passages are other agents', and the index rejects them
    # without reading their rows (with a million other passages, a fifth of the time). Only the page's rows are
    # read from the table. Led by the agent's passages instead, the count would run the MATCH once per passage.
    args: list[Any] = [fts_query(query), newest, agent_id]
    matches = (
        "FROM passages_fts WHERE passages_fts MATCH ? AND passages_fts.rowid <= ? AND EXISTS (SELECT 1 FROM "
        "passages p INDEXED BY passages_by_agent WHERE p.agent_id = ? AND p.pk = passages_fts.rowid"
        f"{tag_filter(tags, tag_match, args)})"
    )
    ranked = f"SELECT passages_fts.rowid AS pk, bm25(passages_fts) AS rank {matches}"
    if after:  # after the last result shown: a worse rank, or the same rank and a later passage
        page = f"SELECT * FROM ({ranked}) WHERE (rank, pk) > (?, ?) ORDER BY rank, pk LIMIT ?"
        page_args = [*args, *after[2:], limit]
    else:
        page, page_args = f"{ranked} ORDER BY rank, pk LIMIT ?", [*args, limit]
    rows = conn.execute(
        f"SELECT p.*, f.rank FROM ({page}) AS f CROSS JOIN passages p ON p.pk = f.pk ORDER BY f.rank, f.pk", page_args
    ).fetchall()
    shown_so_far = (after[1] if after else 0) + len(rows)

    def count_after(last: paging.Key) -> int:  # every match, unranked (cheaper), less those shown
        return conn.execute(f"SELECT count(*) {matches}", args).fetchone()[0] - last[1]

    # bm25() is lower-is-better; we report higher-is-better.
    items = [_to_passage(r, score=-r["rank"]) for r in rows]
    return paging.page_of(
        rows, items, limit, key=lambda r: [newest, shown_so_far, r["rank"], r["pk"]], count_after=count_after,
        listing="archival search", scope=scope,
    )  # fmt: skip


def list_passages(
    conn: Conn,
    agent_id: str,
    *,
    limit: int = 20,
    cursor: str | None = None,
    oldest_first: bool = False,
    after_id: str | None = None,
) -> Page[Passage]:
    """A page of an agent's passages, newest first (or ``oldest_first``). ``after_id`` starts the page after
    that passage, in the same order (Letta's cursors are ids)."""
    check_page(limit)
    scope: list[Any] = [agent_id, "oldest first"] if oldest_first else [agent_id]
    after = paging.decode(cursor, "archival memory", scope, [int])
    if after_id is not None:
        check_ref(after_id, "passage")
        found = conn.execute("SELECT pk FROM passages WHERE id = ? AND agent_id = ?", (after_id, agent_id)).fetchone()
        if found is None:
            raise NotFound(
                f"passage {shown(after_id)} not found for this agent: page after the id of a passage a previous "
                "page listed"
            )
        after = [found[0]]
    beyond, order = (">", "ASC") if oldest_first else ("<", "DESC")

    def count_after(last: paging.Key) -> int:
        sql = f"SELECT count(*) FROM passages WHERE agent_id = ? AND pk {beyond} ?"
        return conn.execute(sql, (agent_id, last[0])).fetchone()[0]

    start = after[0] if after else (-MAX_CURSOR if oldest_first else MAX_CURSOR)
    rows = conn.execute(
        f"SELECT * FROM passages WHERE agent_id = ? AND pk {beyond} ? ORDER BY pk {order} LIMIT ?",
        (agent_id, start, limit),
    ).fetchall()
    return paging.page_of(
        rows, [_to_passage(r) for r in rows], limit, key=lambda r: [r["pk"]], count_after=count_after,
        listing="archival memory", scope=scope,
    )  # fmt: skip


def delete_passage(conn: Conn, agent_id: str, passage_id: str) -> None:
    """Delete one passage of an agent."""
    check_ref(passage_id, "passage")
    cur = conn.execute("DELETE FROM passages WHERE id = ? AND agent_id = ?", (passage_id, agent_id))
    if cur.rowcount == 0:
        raise NotFound(f"passage {shown(passage_id)} not found for this agent: list its archival memory for ids")
    conn.execute("UPDATE archival_counts SET passages = passages - 1 WHERE agent_id = ?", (agent_id,))
    conn.log_change("agent", agent_id)


def archival_tags(conn: Conn, agent_id: str) -> list[str]:
    """The distinct tags on an agent's passages (for the memory metadata), in order.

    Read as a skip scan of the (agent, tag) index, one lookup per distinct tag: ``SELECT DISTINCT`` would read
    every tag row of the agent, and this runs for every prompt the agent is sent (with a million passages, the
    difference is a fraction of a millisecond against most of a second). Both engines run it.
    """
    rows = conn.execute(
        "WITH RECURSIVE found(tag) AS ("
        " SELECT min(tag) FROM passage_tags WHERE agent_id = ?"
        " UNION ALL"
        " SELECT (SELECT min(t.tag) FROM passage_tags t WHERE t.agent_id = ? AND t.tag > found.tag)"
        " FROM found WHERE found.tag IS NOT NULL"
        ") SELECT tag FROM found WHERE tag IS NOT NULL ORDER BY tag",
        (agent_id, agent_id),
    )
    return [r[0] for r in rows]


def archival_counts(conn: Conn, agent_ids: list[str]) -> dict[str, int]:
    """How many passages each agent has (0 for none): kept in ``archival_counts`` as passages are stored and
    deleted, so a prompt does not count an agent's whole archival memory. Both engines use it."""
    marks = ",".join("?" * len(agent_ids))
    found = dict(
        conn.execute(
            f"SELECT agent_id, passages FROM archival_counts WHERE agent_id IN ({marks})", agent_ids
        ).fetchall()
    )
    return {agent_id: int(found.get(agent_id, 0)) for agent_id in agent_ids}


def counts_by_agent(conn: Conn, table: str, agent_ids: list[str], where: str = "1") -> dict[str, int]:
    """``count(*)`` of ``table`` rows per agent (``where`` narrows them), 0 for agents with none."""
    marks = ",".join("?" * len(agent_ids))
    found = dict(
        conn.execute(
            f"SELECT agent_id, count(*) FROM {table} WHERE agent_id IN ({marks}) AND {where} GROUP BY agent_id",
            agent_ids,
        ).fetchall()
    )
    return {agent_id: int(found.get(agent_id, 0)) for agent_id in agent_ids}


# -- recall -----------------------------------------------------------------------------------------
def _to_message(row: Any) -> Message:
    return Message(
        id=row["id"],
        agent_id=row["agent_id"],
        seq=row["seq"],
        role=row["role"],
        content=row["content"],
        name=row["name"],
        tool_calls=[ToolCall.model_validate(tc) for tc in loads_json(row["tool_calls"], [])],
        tool_call_id=row["tool_call_id"],
        run_id=row["run_id"],
        sender=row["sender"],
        in_context=bool(row["in_context"]),
        created_at=row["created_at"],
    )


def index_new_messages(conn: Conn) -> None:
    """(Just before a transaction commits.) Add the messages it appended to the search index, in one go.

    One FTS5 insert per transaction, not per message: FTS5 writes an index segment at every savepoint,
    and the runtime's group commit puts each write in one (see migration 004).
    """
    mark = conn.execute("SELECT indexed_through FROM search_progress WHERE name = 'messages'").fetchone()[0]
    newest = conn.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0]
    if newest > mark:
        conn.execute(
            "INSERT INTO messages_fts(rowid, content, agent) SELECT seq, content, agent FROM messages_searched "
            "WHERE seq > ? ORDER BY seq",
            (mark,),
        )
        conn.execute("UPDATE search_progress SET indexed_through = ? WHERE name = 'messages'", (newest,))


def append_messages(conn: Conn, agent_id: str, messages: list[NewMessage]) -> list[Message]:
    """Append messages to an agent's history, in order (searchable once the transaction commits)."""
    conn.before_commit.setdefault("index_new_messages", index_new_messages)
    out = []
    for msg in messages:
        message_id, now, content = new_ordered_id("message"), now_iso(), clean_text(msg.content)
        cur = conn.execute(
            "INSERT INTO messages(id, agent_id, role, content, name, tool_calls, tool_call_id, run_id, sender, "
            "in_context, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                message_id,
                agent_id,
                msg.role,
                content,
                msg.name,
                json.dumps([tc.model_dump() for tc in msg.tool_calls]) if msg.tool_calls else None,
                msg.tool_call_id,
                msg.run_id,
                msg.sender,
                int(msg.in_context),
                now,
            ),
        )
        added = Message(
            id=message_id, agent_id=agent_id, seq=cur.lastrowid, role=msg.role, content=content, name=msg.name,
            tool_calls=list(msg.tool_calls), tool_call_id=msg.tool_call_id, run_id=msg.run_id, sender=msg.sender,
            in_context=msg.in_context, created_at=now,
        )  # fmt: skip
        out.append(added)
    return out


def list_messages(conn: Conn, agent_id: str, *, limit: int = 20, cursor: str | None = None) -> Page[Message]:
    """A page of an agent's history going back in time: the newest ``limit`` messages older than the cursor,
    oldest first within the page."""
    check_page(limit)
    after = paging.decode(cursor, "messages", [agent_id], [int])

    def count_after(last: paging.Key) -> int:
        sql = "SELECT count(*) FROM messages WHERE agent_id = ? AND seq < ?"
        return conn.execute(sql, (agent_id, last[0])).fetchone()[0]

    rows = conn.execute(
        "SELECT * FROM messages WHERE agent_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
        (agent_id, after[0] if after else MAX_CURSOR, limit),
    ).fetchall()
    return paging.page_of(
        rows, [_to_message(r) for r in reversed(rows)], limit, key=lambda r: [r["seq"]], count_after=count_after,
        listing="messages", scope=[agent_id],
    )  # fmt: skip


def in_context_messages(conn: Conn, agent_id: str) -> list[Message]:
    """Every message of an agent still in its context window, oldest first."""
    rows = conn.execute(
        "SELECT * FROM messages WHERE agent_id = ? AND in_context = 1 ORDER BY seq", (agent_id,)
    ).fetchall()
    return [_to_message(r) for r in rows]


def search_messages(
    conn: Conn,
    agent_id: str,
    query: str | None = None,
    *,
    roles: list[str] | None = None,
    limit: int = 5,
    start: str | None = None,
    end: str | None = None,
    cursor: str | None = None,
) -> Page[Message]:
    """A page of a recall search: BM25 over message text (or newest first without a query), by role and date
    range. Later pages leave out messages stored after the first page was read.

    ``start``/``end`` are ISO dates or datetimes; a date-only ``end`` covers the whole day. The cursor holds
    the newest message when the first page was read, how many results were shown, and the rank and
    ``-seq`` of the last one (best rank first, then newest first).
    """
    check_page(limit)
    text = query if query and query.strip() else None
    scope = [agent_id, text, sorted(roles or []), start, end]
    after = paging.decode(cursor, "conversation search", scope, [int, int, float, int])
    newest = after[0] if after else conn.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0]
    args: list[Any] = []
    if text is not None:
        # The index holds each message's agent too (as one token, see migration 008): it finds the agent's
        # matches itself (its token AND the words, in the content column only), so other agents' matches are
        # never read. That column weighs nothing in the rank; the rows' own agent is still checked.
        rank = "bm25(messages_fts, 1.0, 0.0)"
        matches = (
            "FROM messages_fts CROSS JOIN messages m ON m.seq = messages_fts.rowid "
            "WHERE messages_fts MATCH ? AND messages_fts.rowid <= ? AND m.agent_id = ?"
        )
        key = _fts_phrase(agent_id.replace("-", ""))  # as the view ``messages_searched`` spells it
        args += [f"agent : {key} AND content : ({fts_query(text)})", newest, agent_id]
    else:
        rank, matches = "0.0", "FROM messages m WHERE m.agent_id = ? AND m.seq <= ?"
        args += [agent_id, newest]
    filters, filter_args = message_filters(roles, start, end)
    matches += filters
    args += filter_args
    ranked = f"SELECT m.*, {rank} AS rank {matches}"
    if after:
        rows = conn.execute(
            f"SELECT * FROM ({ranked}) WHERE (rank, -seq) > (?, ?) ORDER BY rank, seq DESC LIMIT ?",
            [*args, *after[2:], limit],
        ).fetchall()
    else:
        rows = conn.execute(f"{ranked} ORDER BY rank, m.seq DESC LIMIT ?", [*args, limit]).fetchall()
    shown_so_far = (after[1] if after else 0) + len(rows)

    def count_after(last: paging.Key) -> int:  # every match, unranked (cheaper), less those shown
        return conn.execute(f"SELECT count(*) {matches}", args).fetchone()[0] - last[1]

    return paging.page_of(
        rows, [_to_message(r) for r in rows], limit, key=lambda r: [newest, shown_so_far, r["rank"], -r["seq"]],
        count_after=count_after, listing="conversation search", scope=scope,
    )  # fmt: skip


def message_filters(roles: list[str] | None, start: str | None, end: str | None) -> tuple[str, list[Any]]:
    """The ``AND ...`` conditions on ``m`` (a messages row) of a conversation search by roles and dates, and their
    arguments (both engines)."""
    sql, args = "", []
    if roles:
        bad = [r for r in roles if r not in ("system", "user", "assistant", "tool")]
        if bad:
            raise Invalid(f"unknown role(s) {shown(bad)}: use system, user, assistant or tool")
        sql += f" AND m.role IN ({','.join('?' * len(roles))})"
        args += roles
    if start:
        sql += " AND m.created_at >= ?"
        args.append(_date_bound(start, end=False))
    if end:
        sql += " AND m.created_at <= ?"
        args.append(_date_bound(end, end=True))
    return sql, args


def _date_bound(text: str, *, end: bool) -> str:
    try:
        if len(text) > 40:
            raise ValueError
        parsed = read_moment(text)
    except ValueError:
        raise Invalid(f"date {shown(text)} is not ISO format: use YYYY-MM-DD or YYYY-MM-DDTHH:MM") from None
    if len(text) <= 10 and end:  # a bare date covers the whole day
        return parsed.strftime("%Y-%m-%dT23:59:59.999999+00:00")
    return parsed.astimezone(UTC).isoformat(timespec="microseconds")


def recall_stats(conn: Conn, agent_id: str) -> int:
    """How many messages of an agent are out of its context window (stored in recall only)."""
    return counts_by_agent(conn, "messages", [agent_id], "in_context = 0")[agent_id]

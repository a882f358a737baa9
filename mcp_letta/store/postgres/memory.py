"""Full-text search of archival passages and of the message history on PostgreSQL.

Each table has a generated ``tsvector`` column (the ``english`` configuration: Snowball stemming, stop words
dropped) with a GIN index. A query matches passages holding any of its words, ranked by ``ts_rank_cd``
(cover density: how many query words occur and how close together) and newest first on ties.

How this differs from the SQLite engine's FTS5 BM25: BM25 weighs each word by how rare it is across all
passages and normalises by passage length, so one rare word beats several common ones; ``ts_rank_cd`` has
no corpus statistics, so it favours passages with more of the query's words, closer together, whatever their
rarity. English stop words ("the", "and") are not searchable here, while FTS5's porter tokenizer indexes
them. Scores are not comparable between engines; within one result list, higher is better on both.
"""

from __future__ import annotations

from typing import Any, Literal

from mcp_letta.errors import Invalid
from mcp_letta.models import Message, Page, Passage
from mcp_letta.store import paging
from mcp_letta.store.limits import MAX_CURSOR, check_page, check_tags, shown
from mcp_letta.store.postgres.db import PgConn
from mcp_letta.store.sqlite import memory as shared
from mcp_letta.store.sqlite.memory import _WORD


def ts_query(text: str) -> str:
    """A ``to_tsquery`` text matching any word of ``text`` (``Invalid`` when it has no word)."""
    shared.fts_query(text)  # the same checks and errors as the SQLite engine
    words = dict.fromkeys(w.lower() for w in _WORD.findall(text))
    return " | ".join("'" + w.replace("'", "") + "'" for w in words)


def search_passages(
    conn: PgConn,
    agent_id: str,
    query: str,
    *,
    tags: list[str] | None = None,
    tag_match: Literal["any", "all"] = "any",
    limit: int = 10,
    cursor: str | None = None,
) -> Page[Passage]:
    """A page of an agent's passages matching ``query``, best first (the SQLite engine's paging: the cursor
    holds the newest passage at the first page, and the rank and passage of the last result)."""
    check_page(limit)
    if tag_match not in ("any", "all"):
        raise Invalid(f"tag_match must be 'any' or 'all' (got {shown(tag_match)})")
    tags = check_tags(tags)
    scope = [agent_id, query, sorted(tags), tag_match]
    after = paging.decode(cursor, "archival search", scope, [int, float, int])
    tsquery = ts_query(query)
    newest = after[0] if after else conn.execute("SELECT coalesce(max(pk), 0) FROM passages").fetchone()[0]
    # rank is the negated ts_rank_cd, so that lower is better as with bm25() and the keys compare alike
    sql = (
        "SELECT p.*, -(ts_rank_cd(p.tsv, q))::float8 AS rank FROM passages p, to_tsquery('english', ?) q "
        "WHERE p.agent_id = ? AND p.tsv @@ q AND p.pk <= ?"
    )
    args: list[Any] = [tsquery, agent_id, newest]
    if tags:
        marks = ",".join("?" * len(tags))
        if tag_match == "all":
            sql += f" AND (SELECT count(*) FROM passage_tags t WHERE t.passage_pk = p.pk AND t.tag IN ({marks})) = ?"
            args += [*tags, len(tags)]
        else:
            sql += f" AND EXISTS (SELECT 1 FROM passage_tags t WHERE t.passage_pk = p.pk AND t.tag IN ({marks}))"
            args += tags
    ranked = f"SELECT * FROM ({sql}) AS found WHERE (rank, pk) > (?, ?)"
    start = after[1:] if after else [float("-inf"), 0]

    def count_after(last: paging.Key) -> int:
        return int(conn.execute(f"SELECT count(*) FROM ({ranked}) AS rest", [*args, *last[1:]]).fetchone()[0])

    rows = conn.execute(ranked + " ORDER BY rank, pk LIMIT ?", [*args, *start, limit]).fetchall()
    items = [shared._to_passage(r, score=-r["rank"]) for r in rows]
    return paging.page_of(
        rows, items, limit, key=lambda r: [newest, r["rank"], r["pk"]], count_after=count_after,
        listing="archival search", scope=scope,
    )  # fmt: skip


def search_messages(
    conn: PgConn,
    agent_id: str,
    query: str | None = None,
    *,
    roles: list[str] | None = None,
    limit: int = 5,
    start: str | None = None,
    end: str | None = None,
    cursor: str | None = None,
) -> Page[Message]:
    """A page of a recall search: ranked text match (or newest first without a query), by role and date
    range; later pages leave out messages stored after the first page was read."""
    check_page(limit)
    text = query if query and query.strip() else None
    scope = [agent_id, text, sorted(roles or []), start, end]
    after = paging.decode(cursor, "conversation search", scope, [int, float, int])
    args: list[Any] = []
    if text is not None:
        sql = (
            "SELECT m.*, -(ts_rank_cd(m.tsv, q))::float8 AS rank FROM messages m, to_tsquery('english', ?) q "
            "WHERE m.agent_id = ? AND m.tsv @@ q"
        )
        args += [ts_query(text), agent_id]
    else:
        sql = "SELECT m.*, 0.0::float8 AS rank FROM messages m WHERE m.agent_id = ?"
        args.append(agent_id)
    if roles:
        bad = [r for r in roles if r not in ("system", "user", "assistant", "tool")]
        if bad:
            raise Invalid(f"unknown role(s) {shown(bad)}: use system, user, assistant or tool")
        sql += f" AND m.role IN ({','.join('?' * len(roles))})"
        args += roles
    if start:
        sql += " AND m.created_at >= ?"
        args.append(shared._date_bound(start, end=False))
    if end:
        sql += " AND m.created_at <= ?"
        args.append(shared._date_bound(end, end=True))
    newest = after[0] if after else conn.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0]
    sql += " AND m.seq <= ?"
    args.append(newest)
    ranked = f"SELECT * FROM ({sql}) AS found WHERE (rank, -seq) > (?, ?)"
    begin = after[1:] if after else [float("-inf"), -MAX_CURSOR]

    def count_after(last: paging.Key) -> int:
        return int(conn.execute(f"SELECT count(*) FROM ({ranked}) AS rest", [*args, *last[1:]]).fetchone()[0])

    rows = conn.execute(ranked + " ORDER BY rank, seq DESC LIMIT ?", [*args, *begin, limit]).fetchall()
    return paging.page_of(
        rows, [shared._to_message(r) for r in rows], limit, key=lambda r: [newest, r["rank"], -r["seq"]],
        count_after=count_after, listing="conversation search", scope=scope,
    )  # fmt: skip

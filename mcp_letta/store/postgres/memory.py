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
from mcp_letta.store.limits import check_page, check_tags, shown
from mcp_letta.store.postgres.db import PgConn
from mcp_letta.store.sqlite import memory as shared
from mcp_letta.store.sqlite.memory import _WORD


def ts_query(text: str) -> str:
    """A ``to_tsquery`` text matching any word of ``text`` (``Invalid`` when it has no word)."""
    shared.fts_query(text)  # the same checks and errors as the SQLite engine
    words = dict.fromkeys(w.lower() for w in _WORD.findall(text))
    return " | ".join("'" + w.replace("'", "") + "'" for w in words)


def plan_for_these_values(conn: PgConn) -> None:
    """Plan the next statements of this transaction for their actual parameters. psycopg prepares a statement
    run often, and after a few runs PostgreSQL may keep one generic plan for every agent: planned while a big
    agent searched (the full-text index, then a filter on the agent), it makes a small agent's search go
    through every other agent's matches too (1M passages: 90 ms instead of 3 ms). A search costs far more
    than its planning, so it is planned each time."""
    conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")


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
    """A page of an agent's passages matching ``query``, best first. The cursor is the SQLite engine's: the
    newest passage when the first page was read, how many results were shown, the rank and passage of the
    last one (the rank negated, so lower is better as with ``bm25()``)."""
    check_page(limit)
    if tag_match not in ("any", "all"):
        raise Invalid(f"tag_match must be 'any' or 'all' (got {shown(tag_match)})")
    tags = check_tags(tags)
    scope = [agent_id, query, sorted(tags), tag_match]
    after = paging.decode(cursor, "archival search", scope, [int, int, float, int])
    tsquery = ts_query(query)
    plan_for_these_values(conn)
    newest = after[0] if after else conn.execute("SELECT coalesce(max(pk), 0) FROM passages").fetchone()[0]
    matches = "FROM passages p, to_tsquery('english', ?) q WHERE p.tsv @@ q AND p.pk <= ? AND p.agent_id = ?"
    args: list[Any] = [tsquery, newest, agent_id]
    matches += shared.tag_filter(tags, tag_match, args)
    ranked = f"SELECT p.*, -(ts_rank_cd(p.tsv, q))::float8 AS rank {matches}"
    if after:  # after the last result shown: a worse rank, or the same rank and a later passage
        rows = conn.execute(
            f"SELECT * FROM ({ranked}) AS found WHERE (rank, pk) > (?, ?) ORDER BY rank, pk LIMIT ?",
            [*args, *after[2:], limit],
        ).fetchall()
    else:
        rows = conn.execute(f"{ranked} ORDER BY rank, p.pk LIMIT ?", [*args, limit]).fetchall()
    shown_so_far = (after[1] if after else 0) + len(rows)

    def count_after(last: paging.Key) -> int:  # every match, unranked (cheaper), less those shown
        return int(conn.execute(f"SELECT count(*) {matches}", args).fetchone()[0]) - last[1]

    items = [shared._to_passage(r, score=-r["rank"]) for r in rows]
    return paging.page_of(
        rows, items, limit, key=lambda r: [newest, shown_so_far, r["rank"], r["pk"]], count_after=count_after,
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
    range; later pages leave out messages stored after the first page was read (the SQLite engine's cursor)."""
    check_page(limit)
    text = query if query and query.strip() else None
    scope = [agent_id, text, sorted(roles or []), start, end]
    after = paging.decode(cursor, "conversation search", scope, [int, int, float, int])
    plan_for_these_values(conn)
    newest = after[0] if after else conn.execute("SELECT coalesce(max(seq), 0) FROM messages").fetchone()[0]
    args: list[Any] = []
    if text is not None:
        rank = "-(ts_rank_cd(m.tsv, q))::float8"
        matches = "FROM messages m, to_tsquery('english', ?) q WHERE m.tsv @@ q AND m.seq <= ? AND m.agent_id = ?"
        args += [ts_query(text), newest, agent_id]
    else:
        rank, matches = "0.0::float8", "FROM messages m WHERE m.agent_id = ? AND m.seq <= ?"
        args += [agent_id, newest]
    filters, filter_args = shared.message_filters(roles, start, end)
    matches += filters
    args += filter_args
    ranked = f"SELECT m.*, {rank} AS rank {matches}"
    if after:
        rows = conn.execute(
            f"SELECT * FROM ({ranked}) AS found WHERE (rank, -seq) > (?, ?) ORDER BY rank, seq DESC LIMIT ?",
            [*args, *after[2:], limit],
        ).fetchall()
    else:
        rows = conn.execute(f"{ranked} ORDER BY rank, m.seq DESC LIMIT ?", [*args, limit]).fetchall()
    shown_so_far = (after[1] if after else 0) + len(rows)

    def count_after(last: paging.Key) -> int:
        return int(conn.execute(f"SELECT count(*) {matches}", args).fetchone()[0]) - last[1]

    return paging.page_of(
        rows, [shared._to_message(r) for r in rows], limit, key=lambda r: [newest, shown_so_far, r["rank"], -r["seq"]],
        count_after=count_after, listing="conversation search", scope=scope,
    )  # fmt: skip

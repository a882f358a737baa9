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
from mcp_letta.models import Message, Passage
from mcp_letta.store.limits import check_page, check_tags, shown
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
) -> list[Passage]:
    """An agent's passages matching ``query``, best first."""
    check_page(limit)
    if tag_match not in ("any", "all"):
        raise Invalid(f"tag_match must be 'any' or 'all' (got {shown(tag_match)})")
    sql = (
        "SELECT p.*, ts_rank_cd(p.tsv, q) AS rank FROM passages p, to_tsquery('english', ?) q "
        "WHERE p.agent_id = ? AND p.tsv @@ q"
    )
    args: list[Any] = [ts_query(query), agent_id]
    tags = check_tags(tags)
    if tags:
        marks = ",".join("?" * len(tags))
        if tag_match == "all":
            sql += f" AND (SELECT count(*) FROM passage_tags t WHERE t.passage_pk = p.pk AND t.tag IN ({marks})) = ?"
            args += [*tags, len(tags)]
        else:
            sql += f" AND EXISTS (SELECT 1 FROM passage_tags t WHERE t.passage_pk = p.pk AND t.tag IN ({marks}))"
            args += tags
    sql += " ORDER BY rank DESC, p.pk DESC LIMIT ?"
    args.append(limit)
    return [shared._to_passage(r, score=float(r["rank"])) for r in conn.execute(sql, args).fetchall()]


def search_messages(
    conn: PgConn,
    agent_id: str,
    query: str | None = None,
    *,
    roles: list[str] | None = None,
    limit: int = 5,
    start: str | None = None,
    end: str | None = None,
) -> list[Message]:
    """Search an agent's whole history by text (ranked), role and date range; newest first without text."""
    check_page(limit)
    args: list[Any] = []
    if query and query.strip():
        sql = (
            "SELECT m.*, ts_rank_cd(m.tsv, q) AS rank FROM messages m, to_tsquery('english', ?) q "
            "WHERE m.agent_id = ? AND m.tsv @@ q"
        )
        args += [ts_query(query), agent_id]
        order = " ORDER BY rank DESC, m.seq DESC"
    else:
        sql, order = "SELECT m.* FROM messages m WHERE m.agent_id = ?", " ORDER BY m.seq DESC"
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
    rows = conn.execute(sql + order + " LIMIT ?", [*args, limit]).fetchall()
    return [shared._to_message(r) for r in rows]

"""Archival search latency: ``AgentHub.archival_search`` against raw ``sqlite3`` running the identical query.

A deterministic corpus (seeded Zipf-distributed vocabulary, 20-60 words and 0-3 tags per passage) is
loaded once; the same queries then run through the hub and, as prepared (SQL, params) pairs, through
a plain connection. The raw SQL (a first page: the newest passage, the ranked page and, when it is full,
the count of every match) is rebuilt here from ``store/memory.py::search_passages`` and checked against the
store's by tracing both.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import time
import uuid
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any, Literal

import anyio

from mcp_letta.config import Settings
from mcp_letta.hub import AgentHub
from mcp_letta.store.sqlite.db import BUSY_TIMEOUT_S, Conn, Database

AGENT = "archivist"
VOCABULARY_SIZE = 5000
TAGS = [f"topic-{i:02d}" for i in range(20)]
LIMIT = 10  # AgentHub.archival_search's default
_WORD = re.compile(r"\w+", re.UNICODE)  # store/memory.py's word pattern


@dataclass(frozen=True)
class Query:
    """One archival search: free text, optional tag filter."""

    text: str
    tags: tuple[str, ...] = ()
    tag_match: Literal["any", "all"] = "any"


# -- corpus -------------------------------------------------------------------------------------------
def vocabulary(rng: random.Random, size: int = VOCABULARY_SIZE) -> list[str]:
    """``size`` distinct pronounceable pseudo-words, most frequent first."""
    onsets, vowels, codas = "bcdfghjklmnprstvwz", ["a", "e", "i", "o", "u", "ai", "ou"], ["", "", "n", "r", "s", "l"]
    words: dict[str, None] = {}
    while len(words) < size:
        syllables = rng.randint(1, 3) + (1 if len(words) > 200 else 0)  # frequent words are short
        words["".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas) for _ in range(syllables))] = None
    return list(words)


def passages(count: int, seed: int = 1) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """The vocabulary and ``count`` (text, tags) passages, the same for the same seed."""
    rng = random.Random(seed)
    words = vocabulary(rng)
    cumulative = list(accumulate(1.0 / rank for rank in range(1, len(words) + 1)))  # Zipf, s = 1
    out = []
    for _ in range(count):
        text = " ".join(rng.choices(words, cum_weights=cumulative, k=rng.randint(20, 60)))
        tags = rng.sample(TAGS, k=rng.choices((0, 1, 2, 3), weights=(2, 4, 3, 1))[0])
        out.append((text.capitalize() + ".", tags))
    return words, out


def queries(words: list[str], count: int, seed: int = 2) -> list[Query]:
    """``count`` searches of 1-3 words, a third of them filtered by tags ('any' or 'all')."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        text = " ".join(rng.sample(words, k=rng.randint(1, 3)))
        if i % 3 != 2:
            out.append(Query(text))
        elif i % 2:
            out.append(Query(text, tuple(rng.sample(TAGS, k=rng.randint(1, 2))), "any"))
        else:
            out.append(Query(text, tuple(rng.sample(TAGS, k=2)), "all"))
    return out


async def _create_agent(path: Path) -> str:
    async with AgentHub(Settings(db_path=path, watch_interval_s=3600)) as hub:
        return (await hub.create_agent(AGENT)).id


def _load(conn: Conn, agent_id: str, corpus: list[tuple[str, list[str]]], seed: int) -> None:
    rng = random.Random(seed)
    rows, tag_rows = [], []
    for pk, (text, tags) in enumerate(corpus, start=1):
        passage_id = f"passage-{uuid.UUID(int=rng.getrandbits(128), version=4)}"
        rows.append((pk, passage_id, agent_id, text, json.dumps(tags), f"2025-01-01T00:00:{pk % 60:02d}.000000+00:00"))
        tag_rows += [(pk, agent_id, tag) for tag in tags]
    # The same rows memory.insert_passage writes; the FTS trigger indexes each one.
    conn.executemany("INSERT INTO passages(pk, id, agent_id, text, tags, created_at) VALUES (?,?,?,?,?,?)", rows)
    conn.executemany("INSERT INTO passage_tags(passage_pk, agent_id, tag) VALUES (?,?,?)", tag_rows)


def create_corpus(path: Path, count: int, seed: int = 1) -> tuple[str, list[str]]:
    """A fresh database whose agent ``AGENT`` has ``count`` passages; returns its id and the vocabulary."""
    agent_id = anyio.run(_create_agent, path)
    words, corpus = passages(count, seed)
    db = Database(path)
    db.open()
    try:
        anyio.run(db.write, _load, agent_id, corpus, seed)
    finally:
        db.close()
    return agent_id, words


# -- the two sides ------------------------------------------------------------------------------------
def raw_search(conn: sqlite3.Connection, agent_id: str, query: Query) -> int:
    """Run the statements ``memory.search_passages`` runs for a first page of ``query`` (limit ``LIMIT``): the
    newest passage, the ranked page, and, when the page is full, the count of every match for ``more``.
    Returns how many passages the page holds."""
    newest = conn.execute("SELECT coalesce(max(pk), 0) FROM passages").fetchone()[0]
    expression = " OR ".join(f'"{w}"' for w in dict.fromkeys(_WORD.findall(query.text)))
    params: list[Any] = [expression, newest, agent_id]
    tag_condition = ""
    if query.tags:
        marks = ",".join("?" * len(query.tags))
        if query.tag_match == "all":
            tag_condition = (
                f" AND (SELECT count(*) FROM passage_tags t WHERE t.passage_pk = p.pk AND t.tag IN ({marks})) = ?"
            )
            params += [*query.tags, len(query.tags)]
        else:
            tag_condition = (
                f" AND EXISTS (SELECT 1 FROM passage_tags t WHERE t.passage_pk = p.pk AND t.tag IN ({marks}))"
            )
            params += query.tags
    matches = (
        "FROM passages_fts WHERE passages_fts MATCH ? AND passages_fts.rowid <= ? AND EXISTS (SELECT 1 FROM "
        "passages p INDEXED BY passages_by_agent WHERE p.agent_id = ? AND p.pk = passages_fts.rowid"
        f"{tag_condition})"
    )
    ranked = f"SELECT passages_fts.rowid AS pk, bm25(passages_fts) AS rank {matches}"
    page = f"{ranked} ORDER BY rank, pk LIMIT ?"
    sql = f"SELECT p.*, f.rank FROM ({page}) AS f CROSS JOIN passages p ON p.pk = f.pk ORDER BY f.rank, f.pk"
    found = len(conn.execute(sql, [*params, LIMIT]).fetchall())
    if found >= LIMIT:
        conn.execute(f"SELECT count(*) {matches}", params).fetchone()
    return found


def raw_connection(path: Path) -> sqlite3.Connection:
    """A plain connection with the store's pragmas (and no row factory)."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


async def _ours(hub: AgentHub, query: Query) -> int:
    found = await hub.archival_search(AGENT, query.text, tags=list(query.tags), tag_match=query.tag_match, limit=LIMIT)
    return len(found)


async def _measure(path: Path, agent_id: str, qs: list[Query], passes: int) -> dict[str, Any]:
    conn = raw_connection(path)
    ours: list[float] = []
    raw: list[float] = []
    hits = 0
    try:
        async with AgentHub(Settings(db_path=path)) as hub:
            for run in range(passes + 1):  # pass 0 warms the page caches of both connections
                for i, query in enumerate(qs):
                    # Alternate who goes first, so neither side always finds the other's pages hot.
                    for side in ("raw", "ours") if i % 2 else ("ours", "raw"):
                        start = time.perf_counter()
                        if side == "raw":
                            found = raw_search(conn, agent_id, query)
                        else:
                            found = await _ours(hub, query)
                        elapsed = (time.perf_counter() - start) * 1000
                        if run:
                            (raw if side == "raw" else ours).append(elapsed)
                            hits += found if side == "ours" else 0
    finally:
        conn.close()
    return {"ours_ms": ours, "raw_ms": raw, "mean_hits": hits / max(1, len(ours))}


def measure(path: Path, agent_id: str, qs: list[Query], passes: int = 2) -> dict[str, Any]:
    """Per-query latencies in ms of both sides over ``passes`` measured passes (after one warm-up pass)."""
    return anyio.run(_measure, path, agent_id, qs, passes)


# -- faithfulness of the raw side ---------------------------------------------------------------------
async def _trace_ours(path: Path, qs: list[Query]) -> list[list[str]]:
    per_query: list[list[str]] = []
    async with AgentHub(Settings(db_path=path, watch_interval_s=3600)) as hub:
        traced: list[str] = []
        # The pool hands out its most recently released connection and nothing else runs here.
        await hub._store.db.read(lambda c: c.set_trace_callback(traced.append))
        for query in qs:
            traced.clear()
            await _ours(hub, query)
            per_query.append(list(traced))
        await hub._store.db.read(lambda c: c.set_trace_callback(None))
    return per_query


def check_replica(path: Path, agent_id: str, qs: list[Query]) -> tuple[bool, list[str]]:
    """Do the store and the raw side run the same search statement, literally, for every query in ``qs``?

    Returns the verdict and every statement the store ran for the first query (for the report).
    """
    ours = anyio.run(_trace_ours, path, qs)
    conn = raw_connection(path)
    traced: list[str] = []
    conn.set_trace_callback(traced.append)
    for query in qs:
        raw_search(conn, agent_id, query)
    conn.close()
    ours_searches = [s for statements in ours for s in statements if _is_search(s)]
    return ours_searches == [s for s in traced if _is_search(s)], [s for s in ours[0] if _top_level(s)]


def _top_level(statement: str) -> bool:
    # The tracer also reports what FTS5 runs internally, as "-- ..." lines, and its own config reads.
    return not statement.startswith("--") and "'main'." not in statement


def _is_search(statement: str) -> bool:
    return _top_level(statement) and ("passages_fts MATCH" in statement or "max(pk) FROM passages" in statement)

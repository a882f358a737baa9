"""Where the store's overhead goes: the same append or search peeled one layer at a time.

Layers, each adding one thing to the one before: raw sqlite3 on the calling thread; raw sqlite3
on an anyio worker thread (the hop alone); for searches, the store's functions in ``Database.read_sync``
on the calling thread (no hop); ``Database.write`` / ``read`` (store + hop); the
public ``AgentHub`` call. All layers take turns in small chunks, so load on a shared machine hits
them alike; per-chunk medians are reported, with CPU time of the whole process (every thread).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from bench import appends, search
from bench.common import median, remove_database
from mcp_letta.config import Settings
from mcp_letta.hub import AgentHub
from mcp_letta.store import appender
from mcp_letta.store.sqlite import SQLiteTx
from mcp_letta.store.sqlite.db import Conn

APPEND_LAYERS = ("raw", "raw on a worker thread", "store via Database.write", "AgentHub")
SEARCH_LAYERS = ("raw", "raw on a worker thread", "store, calling thread", "store via Database.read", "AgentHub")
Step = Callable[[int], Awaitable[None]]


async def _take_turns(steps: dict[str, Step], count: int, chunk: int) -> dict[str, dict[str, float]]:
    """Run every step ``count`` times, layers taking turns every ``chunk``; median µs per op, wall and CPU."""
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for n, first in enumerate(range(0, count, chunk)):
        indexes = range(first, min(count, first + chunk))
        for name in names if n % 2 == 0 else names[::-1]:
            start, cpu_start = time.perf_counter(), time.process_time()
            for i in indexes:
                await steps[name](i)
            wall[name].append((time.perf_counter() - start) / len(indexes) * 1e6)
            cpu[name].append((time.process_time() - cpu_start) / len(indexes) * 1e6)
    return {name: {"wall_us": median(wall[name]), "cpu_us": median(cpu[name])} for name in names}


# -- appends ------------------------------------------------------------------------------------------
async def _append_layers(paths: dict[str, Path], count: int) -> dict[str, dict[str, float]]:
    blocks = {name: appends.block_ids(path) for name, path in paths.items()}
    raws = {name: appends.RawAppender(paths[name]) for name in APPEND_LAYERS[:2]}
    hubs = {name: AgentHub(Settings(db_path=paths[name])) for name in APPEND_LAYERS[2:]}

    def target(name: str, i: int) -> tuple[str, str]:
        return appends.block_for(i, blocks[name], 1), appends.append_text(0, i)

    def edit(conn: Conn, block: str, text: str) -> Any:
        # What AgentHub.append_to_block(block_id, text) runs inside the transaction.
        return SQLiteTx(conn).edit_block(block, appender(text), op="append", writer=appends.WRITER)

    async def raw(i: int) -> None:
        raws["raw"].append(*target("raw", i))

    async def raw_thread(i: int) -> None:
        await anyio.to_thread.run_sync(raws["raw on a worker thread"].append, *target("raw on a worker thread", i))

    async def store_write(i: int) -> None:
        await hubs["store via Database.write"]._store.db.write(edit, *target("store via Database.write", i))

    async def hub(i: int) -> None:
        await hubs["AgentHub"].append_to_block(*target("AgentHub", i))

    steps = dict(zip(APPEND_LAYERS, (raw, raw_thread, store_write, hub), strict=True))
    try:
        for opened in hubs.values():
            await opened.open()
        return await _take_turns(steps, count, chunk=50)
    finally:
        for opened in reversed(hubs.values()):  # the hubs' task groups must close in reverse order
            await opened.close()
        for conn in raws.values():
            conn.close()


def append_layers(folder: Path, count: int) -> dict[str, dict[str, float]]:
    """Median µs per append (wall and CPU) at each layer, ``count`` appends each on its own database."""
    paths = {name: folder / f"layer-append-{i}.db" for i, name in enumerate(APPEND_LAYERS)}
    for path in paths.values():
        remove_database(path)
        appends.create_database(path, count)
    try:
        return anyio.run(_append_layers, paths, count)
    finally:
        for path in paths.values():
            remove_database(path)


# -- search -------------------------------------------------------------------------------------------
async def _search_layers(path: Path, agent_id: str, qs: list[search.Query], passes: int) -> dict[str, Any]:
    conns = {name: search.raw_connection(path) for name in SEARCH_LAYERS[:2]}

    def find(conn: Conn, query: search.Query) -> Any:
        # What AgentHub.archival_search runs inside the read transaction.
        tx = SQLiteTx(conn)
        agent = tx.resolve_agent(search.AGENT).id
        return tx.search_passages(
            agent, query.text, tags=list(query.tags), tag_match=query.tag_match, limit=search.LIMIT
        )

    def raw_on(conn: sqlite3.Connection, i: int) -> None:
        search.raw_search(conn, agent_id, qs[i % len(qs)])

    async with AgentHub(Settings(db_path=path)) as hub:

        async def raw(i: int) -> None:
            raw_on(conns["raw"], i)

        async def raw_thread(i: int) -> None:
            await anyio.to_thread.run_sync(raw_on, conns["raw on a worker thread"], i)

        async def store_sync(i: int) -> None:
            hub._store.db.read_sync(find, qs[i % len(qs)])

        async def store_read(i: int) -> None:
            await hub._store.db.read(find, qs[i % len(qs)])

        async def public(i: int) -> None:
            query = qs[i % len(qs)]
            await hub.archival_search(
                search.AGENT, query.text, tags=list(query.tags), tag_match=query.tag_match, limit=search.LIMIT
            )

        steps = dict(zip(SEARCH_LAYERS, (raw, raw_thread, store_sync, store_read, public), strict=True))
        try:
            await _take_turns(steps, len(qs), chunk=len(qs))  # warm every connection's page cache
            return await _take_turns(steps, len(qs) * passes, chunk=20)
        finally:
            for conn in conns.values():
                conn.close()


def search_layers(folder: Path, passages: int, queries: int, passes: int = 2) -> dict[str, dict[str, float]]:
    """Median µs per archival search (wall and CPU) at each layer over a ``passages``-passage corpus."""
    path = folder / "layer-search.db"
    remove_database(path)
    try:
        agent_id, words = search.create_corpus(path, passages)
        return anyio.run(_search_layers, path, agent_id, search.queries(words, queries), passes)
    finally:
        remove_database(path)


def render(title: str, layers: dict[str, dict[str, float]]) -> str:
    """A small table: each layer's median wall and CPU µs per operation, and how much more than raw."""
    lines = [f"{title:<28}  {'wall us/op':>10}  {'vs raw':>7}  {'CPU us/op':>10}  {'vs raw':>7}"]
    raw = next(iter(layers.values()))
    for name, value in layers.items():
        wall, cpu = value["wall_us"], value["cpu_us"]
        extra = f"{wall - raw['wall_us']:>+7.0f}  {cpu:>10.0f}  {cpu - raw['cpu_us']:>+7.0f}"
        lines.append(f"  {name:<26}  {wall:>10.0f}  {extra}")
    return "\n".join(lines)

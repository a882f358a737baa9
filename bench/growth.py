"""How the cost grows: archival search and block appends at 10k, 100k and 1M passages, conversation search at
10k, 100k and 1M messages of all agents, ``ask_<agent>`` with 10, 1,000 and 10,000 agents and with 100 and 10,000
messages of history, and start-up with 10,000 agents, on the SQLite file engine and on PostgreSQL.

Passages: one agent (``archivist``) is given ``--passages`` passages in steps (10k, then up to 100k, then up to
1M), loaded through the store's bulk path (``Store.write`` with ``Tx.insert_passages``, ``--batch`` passages per
transaction; the loading rate is reported). A second agent (``neighbour``) holds 1,000 passages throughout: its
search shows what the other agents' passages cost a small one. At each step: ``AgentHub.archival_search`` p50
(limit 10, the corpus and queries of ``bench/search.py``: a Zipf vocabulary, a third of the queries filtered by
tags) for both agents, ``AgentHub.append_to_block`` appends/s (one writer, a fresh block per step, after 20
untimed appends), and ``ask_archivist`` p50 through a fresh stdio server (its prompt shows its archival count
and tags). On PostgreSQL each load is followed by ``VACUUM (ANALYZE)``, as autovacuum would do a little later
(the time it took is reported): searched straight after a bulk load, plans and the GIN pending list are stale.

Messages: every agent's history grows (``--messages`` steps, all agents' messages counted: ``crowd_<i>`` agents
of 10,000 messages each, written through ``AgentHub.append_messages``, ``--batch`` per call) while ``talker`` keeps
1,000. At each step: conversation search (``AgentHub.search_messages``, limit 5, the same queries) p50 of the
talker (what other agents' messages cost a small one) and of a 10,000-message crowd agent.

Agents: a fresh stdio server (``python -m mcp_letta``, the SDK's client) per step of ``--agents``; start-up is
spawn to the ``tools/list`` answer (median of ``--startups`` fresh servers), then ``ask_<agent>`` p50 over
``--asks`` calls each (after 3 warm-up calls, the agents interleaved) with the scripted LLM answering at once
in its own process. Three
asked agents: ``aa_asked`` (no history to start with), ``aa_hist_small`` and ``aa_hist_large`` (``--history``
messages each, written first). A history larger than a context window holds has been compacted in life, so of
a history over 100 messages only the newest 100 stay in the window and the rest are in recall only.

PostgreSQL is a throwaway server started from the installed binaries (``tests/pg_server.py`` through
``bench/replicas.py``'s ``Server``, ``fsync`` on), or ``--pg-url`` for yours (databases are created and
dropped on it). Ratios compare the largest step with the smallest. Nothing here asserts; results also go to
``bench/results/growth.json``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import accumulate
from pathlib import Path
from typing import IO, Any

import anyio
from mcp import Client
from mcp.client.stdio import stdio_client

from bench.common import environment, log, percentile, write_results
from bench.firstcall import server_params
from bench.loopback import REPO_ROOT, scripted_llm_process
from bench.search import TAGS, queries, vocabulary
from mcp_letta import AgentHub, NewMessage, Settings
from mcp_letta.store.factory import is_postgres_url, open_store
from mcp_letta.store.interface import Store, Tx

ARCHIVIST, NEIGHBOUR, NEIGHBOUR_PASSAGES = "archivist", "neighbour", 1000
TALKER, TALKER_MESSAGES, CROWD_MESSAGES = "talker", 1000, 10_000
ASKED, SMALL, LARGE = "aa_asked", "aa_hist_small", "aa_hist_large"  # sort before the fillers: tools are capped
WARM_APPENDS = 20
IN_WINDOW = 100  # messages of a long history left in the context window (the rest as after compaction)
QUESTION = "Quick check {i}: what is on your mind? One line."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``growth`` subcommand's options."""
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--engine", choices=("sqlite", "postgres", "both"), default="both", help="default both")
    parser.add_argument("--pg-url", help="an existing PostgreSQL server (postgresql://user@host:port/postgres)")
    parser.add_argument(
        "--part", choices=("passages", "messages", "agents", "all"), default="all", help="default all three"
    )
    parser.add_argument("--passages", type=int, nargs="+", help="passage steps (default 10000 100000 1000000)")
    parser.add_argument("--messages", type=int, nargs="+", help="message steps (default 10000 100000 1000000)")
    parser.add_argument("--agents", type=int, nargs="+", help="agent steps (default 10 1000 10000)")
    parser.add_argument("--history", type=int, nargs=2, help="small and large history (default 100 10000)")
    parser.add_argument(
        "--batch", type=int, default=2000, help="passages or messages per loading transaction (default 2000)"
    )
    parser.add_argument("--queries", type=int, default=60, help="searches per step and agent (default 60)")
    parser.add_argument("--appends", type=int, default=300, help="block appends per step (default 300)")
    parser.add_argument("--asks", type=int, default=30, help="timed ask_ calls per agent and step (default 30)")
    parser.add_argument("--startups", type=int, default=3, help="fresh servers timed per step (default 3)")


def _defaults(args: argparse.Namespace) -> None:
    quick = args.quick
    args.passages = args.passages or ([1000, 3000, 10000] if quick else [10_000, 100_000, 1_000_000])
    args.messages = args.messages or ([3000, 10_000, 30_000] if quick else [10_000, 100_000, 1_000_000])
    args.agents = args.agents or ([10, 50, 200] if quick else [10, 1000, 10_000])
    args.history = args.history or ([20, 300] if quick else [100, 10_000])
    if quick:
        args.queries, args.appends, args.asks, args.startups = min(args.queries, 12), min(args.appends, 50), 5, 1


# -- engines -------------------------------------------------------------------------------------------
@contextmanager
def databases(engine: str, pg_url: str | None, folder: Path) -> Iterator[Callable[[str], str]]:
    """Yields ``new(name) -> target``: a fresh empty database of ``engine`` (a file path or a URL)."""
    if engine == "sqlite":
        yield lambda name: str(folder / f"{name}.db")
        return
    from bench.replicas import Server  # the throwaway PostgreSQL server of tests/pg_server.py

    made: list[str] = []
    with Server(pg_url) as server:
        try:
            yield lambda name: made.append(server.database()) or made[-1]
        finally:
            for url in made:
                server.drop(url)


def settings(target: str, **more: Any) -> Settings:
    """A hub's settings for ``target`` without a change-feed poll in the way."""
    return Settings(db_path=target, log_level="WARNING", watch_interval_s=3600, **more)


# -- passages ------------------------------------------------------------------------------------------
class Corpus:
    """A stream of passages like ``bench/search.py``'s (Zipf vocabulary, 20-60 words, 0-3 tags)."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.words = vocabulary(self.rng)
        self.cumulative = list(accumulate(1.0 / rank for rank in range(1, len(self.words) + 1)))

    def take(self, count: int) -> list[tuple[str, list[str]]]:
        """The next ``count`` (text, tags) passages."""
        rng, out = self.rng, []
        for _ in range(count):
            text = " ".join(rng.choices(self.words, cum_weights=self.cumulative, k=rng.randint(20, 60)))
            tags = rng.sample(TAGS, k=rng.choices((0, 1, 2, 3), weights=(2, 4, 3, 1))[0])
            out.append((text.capitalize() + ".", tags))
        return out


async def load(store: Store, agent_id: str, corpus: Corpus, count: int, batch: int) -> float:
    """Store ``count`` passages for ``agent_id``, ``batch`` per transaction (``Tx.insert_passages``); seconds
    spent writing."""
    spent = 0.0
    done = 0
    while done < count:
        rows = corpus.take(min(batch, count - done))

        def insert(tx: Tx, rows: list[tuple[str, list[str]]] = rows) -> int:
            return tx.insert_passages(agent_id, rows)

        started = time.perf_counter()
        await store.write(insert)
        spent += time.perf_counter() - started
        done += len(rows)
        if done % (batch * 50) == 0:
            log(f"    {done:,}/{count:,} passages, {done / spent:,.0f}/s")
    return spent


def settle(target: str) -> float | None:
    """On PostgreSQL, ``VACUUM (ANALYZE)`` after a bulk load, as autovacuum would a little later: the planner
    needs the new statistics and the GIN index's pending list is merged. Seconds it took (None on SQLite)."""
    if not is_postgres_url(target):
        return None
    import psycopg

    started = time.perf_counter()
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    return time.perf_counter() - started


async def ms_per_query(search: Callable[[Any], Awaitable[Any]], qs: Sequence[Any]) -> list[float]:
    """Milliseconds per ``search(q)`` over the queries, after an untimed warm-up pass."""
    samples = []
    for timed in (False, True):
        for q in qs:
            started = time.perf_counter()
            await search(q)
            if timed:
                samples.append((time.perf_counter() - started) * 1000)
    return samples


async def search_ms(hub: AgentHub, agent: str, qs: Sequence[Any]) -> list[float]:
    """Milliseconds per ``archival_search`` (limit 10) of ``agent``."""
    return await ms_per_query(
        lambda q: hub.archival_search(agent, q.text, tags=list(q.tags), tag_match=q.tag_match, limit=10), qs
    )


async def appends_per_s(hub: AgentHub, agent: str, step: int, count: int) -> float:
    """``append_to_block`` calls per second, one after another, to a fresh block of ``agent`` (after
    ``WARM_APPENDS`` untimed ones)."""
    block = await hub.create_block(f"log_{step}", limit=(count + WARM_APPENDS) * 40 + 100, attach_to=[agent])
    for i in range(WARM_APPENDS):  # the first writes after a bulk load pay for its checkpoint: not counted
        await hub.append_to_block(block.id, f"warm-up {i:05d}")
    started = time.perf_counter()
    for i in range(count):
        await hub.append_to_block(block.id, f"entry {i:05d} noted")
    return count / (time.perf_counter() - started)


async def passages_part(target: str, args: argparse.Namespace, base_url: str, errlog: IO[str]) -> list[dict[str, Any]]:
    """The passage steps on one database; a row of figures per step."""
    async with AgentHub(settings(target)) as hub:
        archivist = (await hub.create_agent(ARCHIVIST)).id
        neighbour = (await hub.create_agent(NEIGHBOUR)).id
    corpus = Corpus()
    qs = queries(corpus.words, args.queries)
    store = open_store(target, watch_interval_s=3600)
    await store.open()
    rows: list[dict[str, Any]] = []
    try:
        await load(store, neighbour, corpus, NEIGHBOUR_PASSAGES, args.batch)
        loaded = 0
        for step in args.passages:
            log(f"  passages: loading up to {step:,}")
            spent = await load(store, archivist, corpus, step - loaded, args.batch)
            rate = (step - loaded) / spent
            loaded = step
            settled = await anyio.to_thread.run_sync(settle, target)
            async with AgentHub(settings(target)) as hub:
                big = await search_ms(hub, ARCHIVIST, qs)
                small = await search_ms(hub, NEIGHBOUR, qs)
                appends = await appends_per_s(hub, ARCHIVIST, step, args.appends)
            _, asked = await one_server(target, base_url, errlog, args.asks, [ARCHIVIST])
            row = {"passages": step, "load_per_s": rate, "search_p50_ms": percentile(big, 50),
                   "search_p90_ms": percentile(big, 90), "neighbour_p50_ms": percentile(small, 50),
                   "appends_per_s": appends, "settle_s": settled,
                   "ask_archivist_p50_ms": percentile(asked[ARCHIVIST], 50)}  # fmt: skip
            log(f"  {step:,} passages: " + ", ".join(f"{k} {_num(v)}" for k, v in row.items() if k != "passages"))
            rows.append(row)
    finally:
        await store.close()
    return rows


# -- messages ------------------------------------------------------------------------------------------
async def recall_ms(hub: AgentHub, agent: str, qs: Sequence[Any]) -> list[float]:
    """Milliseconds per conversation search (``search_messages``, limit 5) of ``agent``."""
    return await ms_per_query(lambda q: hub.search_messages(agent, q.text, limit=5), qs)


async def say(hub: AgentHub, agent: str, corpus: Corpus, count: int, batch: int) -> float:
    """Append ``count`` messages (out of the context window, as after compaction) to ``agent``, ``batch`` per
    call; seconds spent writing."""
    spent = 0.0
    for first in range(0, count, batch):
        said = [NewMessage(role="user" if i % 2 == 0 else "assistant", content=text, in_context=False)
                for i, (text, _) in enumerate(corpus.take(min(batch, count - first)))]  # fmt: skip
        started = time.perf_counter()
        await hub.append_messages(agent, said)
        spent += time.perf_counter() - started
    return spent


async def messages_part(target: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The message steps on one database: the history of every agent grows (crowds of ``CROWD_MESSAGES``
    messages each), the talker's stays at ``TALKER_MESSAGES``; a row of figures per step."""
    corpus = Corpus(seed=3)
    qs = queries(corpus.words, args.queries)
    rows: list[dict[str, Any]] = []
    async with AgentHub(settings(target)) as hub:
        await hub.create_agent(TALKER)
        await say(hub, TALKER, corpus, TALKER_MESSAGES, args.batch)
        stored, crowds = TALKER_MESSAGES, 0
        for step in args.messages:
            log(f"  messages: loading up to {step:,}")
            spent, added = 0.0, 0
            while stored < step:
                crowds += 1
                await hub.create_agent(f"crowd_{crowds:04d}")
                count = min(CROWD_MESSAGES, step - stored)
                spent += await say(hub, f"crowd_{crowds:04d}", corpus, count, args.batch)
                stored, added = stored + count, added + count
            settled = await anyio.to_thread.run_sync(settle, target)
            small = await recall_ms(hub, TALKER, qs)
            big = await recall_ms(hub, "crowd_0001", qs)
            row = {"messages": step, "load_per_s": added / spent if spent else None, "settle_s": settled,
                   "talker_p50_ms": percentile(small, 50), "talker_p90_ms": percentile(small, 90),
                   "crowd_p50_ms": percentile(big, 50)}  # fmt: skip
            log(f"  {step:,} messages: " + ", ".join(f"{k} {_num(v)}" for k, v in row.items() if k != "messages"))
            rows.append(row)
    return rows


# -- agents --------------------------------------------------------------------------------------------
def history(count: int) -> list[NewMessage]:
    """``count`` alternating user/assistant messages; all but the newest ``IN_WINDOW`` out of the window."""
    return [
        NewMessage(
            role="user" if j % 2 == 0 else "assistant",
            in_context=j >= count - IN_WINDOW,
            content=f"message {j}: the quarterly plan moves the launch; " + "notes " * 25,
        )
        for j in range(count)
    ]


async def grow_agents(target: str, start: int, stop: int) -> float:
    """Fillers ``agent_<i>`` for ``start <= i < stop``, 32 at a time; agents created per second."""
    async with AgentHub(settings(target)) as hub:
        started = time.perf_counter()
        limiter = anyio.CapacityLimiter(32)

        async def create(i: int) -> None:
            async with limiter:
                await hub.create_agent(f"agent_{i:05d}", description=f"Specialist {i}.", tags=["team"])

        async with anyio.create_task_group() as tg:
            for i in range(start, stop):
                tg.start_soon(create, i)
        return (stop - start) / max(time.perf_counter() - started, 1e-9)


async def seed_asked(target: str, sizes: Sequence[int]) -> None:
    """The three asked agents, two of them with history."""
    async with AgentHub(settings(target)) as hub:
        for name, size in ((ASKED, 0), (SMALL, sizes[0]), (LARGE, sizes[1])):
            await hub.create_agent(name, persona=f"I am {name}.")
            said = history(size)
            for first in range(0, len(said), 1000):
                await hub.append_messages(name, said[first : first + 1000])


async def message_counts(target: str) -> dict[str, int]:
    """How many messages each asked agent holds now."""
    async with AgentHub(settings(target)) as hub:
        out = {}
        for name in (ASKED, SMALL, LARGE):
            page = await hub.get_messages(name, limit=1)
            out[name] = len(page.items) + page.more
        return out


async def one_server(
    target: str, base_url: str, errlog: IO[str], asks: int, agents: Sequence[str] = (ASKED, SMALL, LARGE)
) -> tuple[float, dict[str, list[float]]]:
    """A fresh stdio server: seconds from spawn to its tool list, and ms per ``ask_<name>`` of each of ``agents``
    (after 3 warm-up calls each)."""
    params = server_params(target, base_url, REPO_ROOT, None)  # type: ignore[arg-type]  (a URL is fine too)
    started = time.perf_counter()
    async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:
        listed = await client.list_tools()
        startup = time.perf_counter() - started
        names = {t.name for t in listed.tools}
        samples: dict[str, list[float]] = {agent: [] for agent in agents}
        for agent in agents:
            if f"ask_{agent}" not in names:
                raise RuntimeError(f"ask_{agent} is not among the {len(names)} tools listed")
        for i in range(asks + 3):
            for agent in agents if i % 2 else reversed(agents):  # interleaved: drift hits every agent alike
                began = time.perf_counter()
                result = await client.call_tool(f"ask_{agent}", {"message": QUESTION.format(i=i), "timeout_s": 60})
                elapsed = (time.perf_counter() - began) * 1000
                if result.is_error:
                    raise RuntimeError(f"ask_{agent} failed: {str(result.content)[:300]}")
                if i >= 3:
                    samples[agent].append(elapsed)
    return startup, samples


async def startup_only(target: str, base_url: str, errlog: IO[str]) -> float:
    """Seconds from spawning a fresh stdio server to its ``tools/list`` answer."""
    params = server_params(target, base_url, REPO_ROOT, None)  # type: ignore[arg-type]
    started = time.perf_counter()
    async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:
        await client.list_tools()
        return time.perf_counter() - started


async def agents_part(target: str, args: argparse.Namespace, base_url: str, errlog: IO[str]) -> list[dict[str, Any]]:
    """The agent steps on one database; a row of figures per step."""
    log(f"  agents: seeding the asked agents ({args.history[0]:,} and {args.history[1]:,} messages of history)")
    await seed_asked(target, args.history)
    made = 3
    rows: list[dict[str, Any]] = []
    for step in args.agents:
        rate = await grow_agents(target, made, step) if step > made else None
        made = max(made, step)
        counts = await message_counts(target)
        startups = [await startup_only(target, base_url, errlog) for _ in range(args.startups - 1)]
        startup, samples = await one_server(target, base_url, errlog, args.asks)
        startups.append(startup)
        row = {"agents": step, "create_per_s": rate, "startup_ms": statistics.median(startups) * 1000,
               "ask_p50_ms": percentile(samples[ASKED], 50), "ask_small_history_p50_ms": percentile(samples[SMALL], 50),
               "ask_large_history_p50_ms": percentile(samples[LARGE], 50), "messages_before": counts}  # fmt: skip
        log(f"  {step:,} agents: " + ", ".join(f"{k} {v}" for k, v in row.items() if k != "agents"))
        rows.append(row)
    return rows


# -- report --------------------------------------------------------------------------------------------
def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def table(title: str, steps: Sequence[int], lines: Sequence[tuple[str, Sequence[float | None]]]) -> str:
    """Figures by step, with the last step's value over the first's."""
    header = [title, *(f"{s:,}" for s in steps), f"{steps[-1]:,} / {steps[0]:,}"]
    body = []
    for name, values in lines:
        ratio = f"{values[-1] / values[0]:.2f}x" if values[0] and values[-1] else "-"
        body.append([name, *(_num(v) for v in values), ratio])
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    out = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
           for r in [header, *body]]  # fmt: skip
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def report(engine: str, result: dict[str, Any], args: argparse.Namespace) -> str:
    """The tables of one engine."""
    parts = [f"== {engine} =="]
    if rows := result.get("passages"):
        parts.append(table("passages (archivist's)", [r["passages"] for r in rows], [
            ("archival search p50, ms", [r["search_p50_ms"] for r in rows]),
            ("archival search p90, ms", [r["search_p90_ms"] for r in rows]),
            (f"search p50 of a {NEIGHBOUR_PASSAGES:,}-passage agent, ms", [r["neighbour_p50_ms"] for r in rows]),
            ("block appends/s", [r["appends_per_s"] for r in rows]),
            ("VACUUM (ANALYZE) after the load, s", [r["settle_s"] for r in rows]),
            ("ask_archivist p50 (the agent holding them), ms", [r["ask_archivist_p50_ms"] for r in rows]),
            (f"loading passages/s (batches of {args.batch:,})", [r["load_per_s"] for r in rows]),
        ]))  # fmt: skip
    if rows := result.get("messages"):
        parts.append(table("messages (all agents')", [r["messages"] for r in rows], [
            (f"conversation search p50 of a {TALKER_MESSAGES:,}-message agent, ms", [r["talker_p50_ms"] for r in rows]),
            (f"conversation search p90 of a {TALKER_MESSAGES:,}-message agent, ms", [r["talker_p90_ms"] for r in rows]),
            (f"conversation search p50 of a {CROWD_MESSAGES:,}-message agent, ms", [r["crowd_p50_ms"] for r in rows]),
            ("VACUUM (ANALYZE) after the load, s", [r["settle_s"] for r in rows]),
            (f"loading messages/s (batches of {args.batch:,})", [r["load_per_s"] for r in rows]),
        ]))  # fmt: skip
    if rows := result.get("agents"):
        small, large = args.history
        parts.append(table("agents", [r["agents"] for r in rows], [
            ("start-up to tools/list, ms", [r["startup_ms"] for r in rows]),
            ("ask_ p50, ms (little history)", [r["ask_p50_ms"] for r in rows]),
            (f"ask_ p50, ms ({small:,} messages of history)", [r["ask_small_history_p50_ms"] for r in rows]),
            (f"ask_ p50, ms ({large:,} messages of history)", [r["ask_large_history_p50_ms"] for r in rows]),
            ("agents created/s (to reach the step)", [r["create_per_s"] for r in rows]),
        ]))  # fmt: skip
        first = rows[0]
        parts.append(
            f"history: ask_ p50 with {large:,} messages / with {small:,} messages at {first['agents']:,} agents = "
            f"{first['ask_large_history_p50_ms'] / first['ask_small_history_p50_ms']:.2f}x"
        )
    return "\n".join(parts)


async def run_engine(engine: str, args: argparse.Namespace, base_url: str, folder: Path) -> dict[str, Any]:
    """The chosen parts on one engine."""
    result: dict[str, Any] = {}
    with databases(engine, args.pg_url, folder) as new, (folder / f"{engine}-server.log").open("w") as errlog:
        if args.part in ("passages", "all"):
            log(f"{engine}: passages {args.passages}")
            result["passages"] = await passages_part(new("passages"), args, base_url, errlog)
        if args.part in ("messages", "all"):
            log(f"{engine}: messages {args.messages}")
            result["messages"] = await messages_part(new("messages"), args)
        if args.part in ("agents", "all"):
            log(f"{engine}: agents {args.agents}")
            result["agents"] = await agents_part(new("agents"), args, base_url, errlog)
    return result


def main(args: argparse.Namespace) -> int:
    """Measure each chosen engine, print its tables, write bench/results/growth.json."""
    _defaults(args)
    engines = ["sqlite", "postgres"] if args.engine == "both" else [args.engine]
    machine = environment()
    results: dict[str, Any] = {}
    with scripted_llm_process(reply="noted") as base_url, tempfile.TemporaryDirectory() as folder:
        for engine in engines:
            results[engine] = anyio.run(run_engine, engine, args, base_url, Path(folder))
            print(report(engine, results[engine], args), flush=True)
    name = "growth" + ("" if args.engine == "both" else f"-{args.engine}") + ("-quick" if args.quick else "")
    payload = {
        "benchmark": "growth",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "environment": machine,
        "options": {k: v for k, v in vars(args).items() if k != "benchmark"},
        "results": results,
    }
    print(f"written to {write_results(name, payload)}")
    return 0

"""PostgreSQL and replicas: per-message overhead on PostgreSQL as a ratio to SQLite, and messages/s of 1 vs 3
``mcp-letta serve --transport http`` replicas on one PostgreSQL database with a slow LLM.

PostgreSQL is a throwaway server started from the installed binaries on loopback (``tests/pg_server.py``:
initdb into a temporary folder; ``fsync`` stays on here, unlike the tests), or ``--pg-url`` to use yours
(the benchmark creates and drops databases on it).

- Overhead: ``AgentHub.send_message`` of single-step messages against the loopback LLM answering at once
  (``python -m mcp_letta.testing --echo`` in its own process), SQLite file vs PostgreSQL, p50 over the
  messages, in alternating rounds so drift in the machine's load hits both alike. Target: <= 2x.
- Replicas: 300 agents, every agent sent ``--per-agent`` messages one after another through the MCP
  ``send_message`` tool, the agents spread round-robin over the replicas' HTTP endpoints; the LLM takes
  ``--llm-delay-ms`` (100 ms). Each replica runs at most ``MCP_LETTA_MAX_CONCURRENCY`` (``--concurrency``,
  16) agents at once, so the LLM wait bounds one replica and replicas should add capacity. Target: 3
  replicas >= 2.5x one. Each rate is printed against its ceiling (replicas x concurrency / LLM time): on a
  machine with fewer cores than replicas the CPU, not the LLM, may bound them; a small ``--concurrency``
  keeps each replica within what it can run, which shows whether replicas add capacity or contend.
  Alongside, what the machine spent (on a small shared machine the CPU, not the LLM, may be what bounds
  the rate): CPU ms per message of the replicas and of PostgreSQL (from /proc, our own server only), of
  the benchmark's own MCP clients and of the scripted LLM (they share the machine here, not in use), how
  busy all CPUs were, and the lock-wait share: of the PostgreSQL backends seen working (sampled from
  ``pg_stat_activity`` every 20 ms), the share waiting on a lock (row, advisory or transaction locks), and
  how often the replicas read the change log to follow each other, per message (PostgreSQL's count of the
  ``changes`` table's scans, from the replicas' start to their end).
- Broadcast: ``--agents`` agents tagged ``crew``; through replica 0 one ``send_message`` (the median of 5), then
  one ``send_message_to_agents_matching_tags`` to all of them, with 1 and with 3 replicas. Reported: the
  broadcast's wall time as a ratio to one call, and how its runs spread over the replicas (the ``owner`` of
  each run is the replica that executed it). A broadcast keeps at most ``MCP_LETTA_FANOUT_CONCURRENCY``
  recipients unfinished at once (16 by default, as many as one replica runs at once): here it is raised to
  the number of agents, so the runs one replica cannot start at once are queued for the others to take.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bench.common import environment, log, percentile, write_results
from bench.loopback import MODEL, REPO_ROOT, child_cpu_s, scripted_llm_process
from mcp_letta import AgentHub, Settings

sys.path.insert(0, str(REPO_ROOT / "tests"))
from pg_server import PgServer

TOKEN = "bench-token"
MESSAGE = "message {i:05d}: please note that the weekly sync moved to Thursday"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``replicas`` subcommand's options."""
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--pg-url", help="an existing PostgreSQL server (postgresql://user@host:port/postgres)")
    parser.add_argument("--messages", type=int, default=300, help="timed messages per engine (default 300)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--agents", type=int, default=300, help="agents in the replica run (default 300)")
    parser.add_argument("--per-agent", type=int, default=3, help="messages per agent in the replica run")
    parser.add_argument("--llm-delay-ms", type=float, default=100.0, help="LLM latency in the replica run")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 3], help="replica counts (default 1 3)")
    parser.add_argument(
        "--concurrency", type=int, default=16,
        help="MCP_LETTA_MAX_CONCURRENCY of each replica in the replica run (16, the default of the server)",
    )  # fmt: skip
    parser.add_argument("--skip-overhead", action="store_true", help="only the replica and broadcast figures")
    parser.add_argument("--only-overhead", action="store_true", help="only the per-message overhead")


class Server:
    """A PostgreSQL server to create databases on: ours (started here) or the one ``--pg-url`` names."""

    def __init__(self, url: str | None) -> None:
        self.base = url
        self.own: PgServer | None = None
        self.count = 0

    def __enter__(self) -> Server:
        if self.base is None:
            self.own = PgServer()
            self.own.fsync = True
            self.own.start()
            self.base = self.own.url()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.own is not None:
            self.own.cleanup()

    def _admin(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute(statement)

    def database(self) -> str:
        """A new empty database's URL."""
        assert self.base is not None
        self.count += 1
        name = f"bench_replicas_{os.getpid()}_{self.count}"
        self._admin(f"DROP DATABASE IF EXISTS {name}")
        self._admin(f"CREATE DATABASE {name}")
        return self.base.rsplit("/", 1)[0] + "/" + name

    def drop(self, url: str) -> None:
        """Drop a database made by ``database``."""
        self._admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


# -- overhead per message --------------------------------------------------------------------------
async def per_message_ms(target: Path | str, base_url: str, messages: int, warmup: int) -> list[float]:
    """Milliseconds per ``send_message`` (instant LLM) on one engine."""
    settings = Settings(db_path=target, llm_base_url=base_url, model=MODEL, log_level="WARNING")
    samples = []
    async with AgentHub(settings) as hub:
        names = [f"agent{i}" for i in range(8)]
        for name in names:
            if not await hub.list_agents(query=name):
                await hub.create_agent(name)
        for i in range(warmup + messages):
            start = time.perf_counter()
            run = await hub.send_message(names[i % len(names)], MESSAGE.format(i=i), wait_s=60)
            if run.status != "completed":
                raise RuntimeError(f"run {run.id} ended {run.status}: {run.error}")
            if i >= warmup:
                samples.append((time.perf_counter() - start) * 1000)
    return samples


async def overhead(server: Server, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    samples: dict[str, list[float]] = {"sqlite": [], "postgres": []}
    pg_url = server.database()
    try:
        with scripted_llm_process(reply="noted") as base_url:
            for r in range(args.rounds):
                for engine in ("sqlite", "postgres") if r % 2 == 0 else ("postgres", "sqlite"):
                    target: Path | str = folder / "overhead.db" if engine == "sqlite" else pg_url
                    log(f"overhead: round {r + 1}, {engine}")
                    samples[engine] += await per_message_ms(target, base_url, args.messages // args.rounds, 20)
    finally:
        server.drop(pg_url)
    p50 = {engine: percentile(values, 50) for engine, values in samples.items()}
    p99 = {engine: percentile(values, 99) for engine, values in samples.items()}
    return {
        "p50_ms": p50,
        "p99_ms": p99,
        "ratio_p50": p50["postgres"] / p50["sqlite"],
        "samples": len(samples["sqlite"]),
    }


# -- replicas ------------------------------------------------------------------------------------------
@contextmanager
def replicas(
    count: int, url: str, base_url: str, folder: Path, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[list[int], list[int]]]:
    """``count`` HTTP replicas on ``url``; yields their ports and pids."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_LETTA_", "OPENAI_"))}
    env |= {"MCP_LETTA_DB": url, "MCP_LETTA_TOKEN": TOKEN, "MCP_LETTA_LLM_BASE_URL": base_url,
            "MCP_LETTA_MODEL": MODEL, "PYTHONPATH": str(REPO_ROOT)}  # fmt: skip
    env |= extra_env or {}
    procs, logs = [], []
    try:
        for i in range(count):
            log_path = folder / f"replica-{count}-{i}.log"
            logs.append(log_path)
            command = [sys.executable, "-m", "mcp_letta", "serve", "--transport", "http", "--port", "0"]
            procs.append(
                subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log_path.open("wb"), cwd=REPO_ROOT)
            )
        ports = []
        deadline = time.monotonic() + 120
        for proc, log_path in zip(procs, logs, strict=True):
            while True:
                found = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", log_path.read_text(errors="replace"))
                if found:
                    ports.append(int(found.group(1)))
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"a replica did not start: {log_path.read_text(errors='replace')[-1500:]}")
                time.sleep(0.05)
        yield ports, [proc.pid for proc in procs]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


@asynccontextmanager
async def client(port: int) -> AsyncIterator[Client]:
    """An MCP client of one replica with room for many calls at once."""
    # Idle connections are dropped before uvicorn's 5 s keep-alive closes them (a reuse racing that close
    # is a ReadError that ends the MCP session).
    limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=1000, keepalive_expiry=2.0)
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=600, limits=limits) as http:
        async with Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)) as c:
            yield c


def _cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes have used so far (those that still exist)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs so far."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def _postgres_pids(server: Server) -> list[int]:
    """Our PostgreSQL server's processes (none for a ``--pg-url`` server)."""
    if server.own is None:
        return []
    postmaster = int((server.own.data / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    pids.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return pids


def _change_log_reads(url: str) -> int:
    """How often the ``changes`` table was read so far (PostgreSQL's own count of its scans): the replicas'
    followers read it to learn what the others changed."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'changes'"
        ).fetchone()
    return int(row[0]) if row else 0


class LockSampler:
    """Samples ``pg_stat_activity`` of one database every 20 ms in a thread: backends working, and those of
    them waiting on a lock."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.active = self.waiting = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LockSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.wait(0.02):
                active, waiting = conn.execute(
                    "SELECT count(*) FILTER (WHERE state = 'active'), "
                    "count(*) FILTER (WHERE state = 'active' AND wait_event_type = 'Lock') "
                    "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchone()
                self.active += active
                self.waiting += waiting

    @property
    def share(self) -> float:
        """Of the backends seen working, the share waiting on a lock."""
        return self.waiting / self.active if self.active else 0.0


async def replica_rate(
    server: Server, count: int, args: argparse.Namespace, base_url: str, folder: Path
) -> dict[str, float]:
    """Messages/s of ``count`` replicas with ``args.agents`` agents each sent ``args.per_agent`` messages, and
    what it cost (see the module docstring)."""
    url = server.database()
    try:
        async with AgentHub(Settings(db_path=url, log_level="WARNING")) as hub:
            for i in range(args.agents):
                await hub.create_agent(f"a{i:04d}")
        extra = {"MCP_LETTA_MAX_CONCURRENCY": str(args.concurrency)}
        reads_before = _change_log_reads(url)
        with replicas(count, url, base_url, folder, extra) as (ports, pids):
            async with _clients(ports) as clients:
                failures: list[str] = []

                async def caller(index: int) -> None:
                    c = clients[index % len(clients)]
                    for m in range(args.per_agent):
                        result = await c.call_tool(
                            "send_message", {"agent": f"a{index:04d}", "message": MESSAGE.format(i=m), "timeout_s": 600}
                        )
                        reply = result.structured_content or {}
                        if result.is_error or reply.get("status") != "completed":
                            failures.append(str(reply or result.content)[:200])

                pg_pids = _postgres_pids(server)
                cpu_before, pg_before, busy_before = _cpu_s(pids), _cpu_s(pg_pids), _machine_busy()
                own_before, llm_before = time.process_time(), child_cpu_s(contains="mcp_letta.testing") or 0.0
                start = time.perf_counter()
                with LockSampler(url) as sampler:
                    async with anyio.create_task_group() as tg:
                        for index in range(args.agents):
                            tg.start_soon(caller, index)
                took = time.perf_counter() - start
                cpu, pg_cpu = _cpu_s(pids) - cpu_before, _cpu_s(pg_pids) - pg_before
                own = time.process_time() - own_before
                llm = (child_cpu_s(contains="mcp_letta.testing") or 0.0) - llm_before
                busy = [after - before for after, before in zip(_machine_busy(), busy_before, strict=True)]
        if failures:
            raise RuntimeError(f"{len(failures)} messages failed, e.g. {failures[0]}")
        await anyio.sleep(1.0)  # the stopped replicas' server processes report their counts as they exit
        feed_reads = _change_log_reads(url) - reads_before  # (from their start to their end)
        messages = args.agents * args.per_agent
        return {
            "messages_per_s": messages / took,
            "replica_cpu_ms_per_message": cpu * 1000 / messages,
            "postgres_cpu_ms_per_message": pg_cpu * 1000 / messages,
            "client_cpu_ms_per_message": own * 1000 / messages,
            "llm_cpu_ms_per_message": llm * 1000 / messages,
            "machine_busy": busy[0] / busy[1] if busy[1] else 0.0,
            "lock_wait_share": sampler.share,
            "change_log_reads_per_message": feed_reads / messages,
        }
    finally:
        server.drop(url)


async def broadcast(
    server: Server, count: int, args: argparse.Namespace, base_url: str, folder: Path
) -> dict[str, Any]:
    """One call vs one tag broadcast to ``args.agents`` agents through replica 0 of ``count`` replicas."""
    import psycopg

    url = server.database()
    try:
        async with AgentHub(Settings(db_path=url, log_level="WARNING")) as hub:
            for i in range(args.agents):
                await hub.create_agent(f"b{i:04d}", tags=["crew"])
        extra = {"MCP_LETTA_FANOUT_CONCURRENCY": str(args.agents)}
        with replicas(count, url, base_url, folder, extra) as (ports, _):
            async with _clients(ports[:1]) as [c]:
                singles = []
                for i in range(6):
                    start = time.perf_counter()
                    result = await c.call_tool("send_message", {"agent": "b0000", "message": MESSAGE.format(i=i)})
                    if result.is_error or (result.structured_content or {}).get("status") != "completed":
                        raise RuntimeError(f"a single call failed: {str(result.content)[:300]}")
                    if i:  # the first warms the replica up
                        singles.append(time.perf_counter() - start)
                start = time.perf_counter()
                result = await c.call_tool(
                    "send_message_to_agents_matching_tags",
                    {"message": MESSAGE.format(i=99), "match_all": ["crew"], "timeout_s": 600},
                )
                took = time.perf_counter() - start
                reply = result.structured_content or {}
                done = [r for r in reply.get("results", []) if r.get("status") == "completed"]
                if result.is_error or len(done) != args.agents:
                    raise RuntimeError(f"the broadcast did not complete: {str(reply or result.content)[:300]}")
        with psycopg.connect(url) as pg:
            spread = sorted(
                (n for (n,) in pg.execute(
                    "SELECT count(*) FROM runs WHERE agent_name LIKE 'b%%' AND input = %s GROUP BY owner",
                    (MESSAGE.format(i=99),),
                )),
                reverse=True,
            )  # fmt: skip
        one = percentile([s * 1000 for s in singles], 50) / 1000
        return {"one_call_s": one, "broadcast_s": took, "ratio": took / one, "runs_per_replica": spread}
    finally:
        server.drop(url)


@asynccontextmanager
async def _clients(ports: list[int]) -> AsyncIterator[list[Client]]:
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(client(port)) for port in ports]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"environment": environment()}
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp, Server(args.pg_url) as server:
        folder = Path(tmp)
        if not args.skip_overhead:
            results["overhead"] = await overhead(server, args, folder)
            o = results["overhead"]
            log(
                f"per-message p50: SQLite {o['p50_ms']['sqlite']:.2f} ms, PostgreSQL {o['p50_ms']['postgres']:.2f} "
                f"ms -> {o['ratio_p50']:.2f}x (target <= 2x)"
            )
        rates, casts, costs = {}, {}, {}
        if args.only_overhead:
            args.replicas = []
        with scripted_llm_process(delay_ms=args.llm_delay_ms, reply="noted") as base_url:
            for count in args.replicas:
                log(f"replicas: {count}, {args.agents} agents x {args.per_agent} messages, LLM {args.llm_delay_ms} ms")
                costs[count] = await replica_rate(server, count, args, base_url, folder)
                rates[count] = costs[count]["messages_per_s"]
                log(f"  {rates[count]:.1f} messages/s")
            for count in args.replicas:
                log(f"broadcast: {count} replica(s), {args.agents} agents")
                casts[count] = await broadcast(server, count, args, base_url, folder)
                b = casts[count]
                log(f"  one call {b['one_call_s']:.3f} s, broadcast {b['broadcast_s']:.2f} s: {b['ratio']:.1f}x")
        results["replicas"] = {"messages_per_s": rates, "agents": args.agents, "per_agent": args.per_agent,
                               "llm_delay_ms": args.llm_delay_ms, "concurrency": args.concurrency,
                               "costs": costs}  # fmt: skip
        results["broadcast"] = casts
    return results


def main(args: argparse.Namespace) -> int:
    """Run the benchmark, print the figures and write ``bench/results/replicas.json``."""
    if args.quick:
        args.messages, args.rounds, args.agents, args.per_agent = 60, 2, 60, 2
    results = anyio.run(run, args)
    rates = results["replicas"]["messages_per_s"]
    if "overhead" in results:
        o = results["overhead"]
        print(f"per-message p50, instant LLM ({o['samples']} messages each, hub.send_message):")
        print(f"  SQLite      {o['p50_ms']['sqlite']:8.2f} ms   (p99 {o['p99_ms']['sqlite']:.2f} ms)")
        print(f"  PostgreSQL  {o['p50_ms']['postgres']:8.2f} ms   (p99 {o['p99_ms']['postgres']:.2f} ms)")
        print(f"  ratio PostgreSQL/SQLite: {o['ratio_p50']:.2f}x (target <= 2x)")
    r = results["replicas"]
    if not rates:
        print(f"results: {write_results('replicas', results)}")
        return 0
    print(
        f"messages/s, {r['agents']} agents x {r['per_agent']} messages, LLM {r['llm_delay_ms']:g} ms, "
        f"{r['concurrency']} runs at once per replica, on PostgreSQL:"
    )
    for count, rate in rates.items():
        c = r["costs"][count]
        ceiling = count * r["concurrency"] * 1000 / r["llm_delay_ms"]  # every slot always waiting on the LLM
        print(
            f"  {count} replica(s): {rate:8.1f} messages/s ({rate / ceiling:.0%} of the LLM-bound {ceiling:.0f}); "
            "CPU per message: replicas "
            f"{c['replica_cpu_ms_per_message']:.1f} ms + PostgreSQL {c['postgres_cpu_ms_per_message']:.1f} ms "
            f"(the benchmark's client {c['client_cpu_ms_per_message']:.1f} ms, scripted LLM "
            f"{c['llm_cpu_ms_per_message']:.1f} ms); "
            f"all CPUs {c['machine_busy']:.0%} busy; lock-wait share {c['lock_wait_share']:.0%}; "
            f"change-log reads per message {c['change_log_reads_per_message']:.2f}"
        )
    if 1 in rates and len(rates) > 1:
        top = max(rates)
        print(f"  ratio {top} replicas / 1 replica: {rates[top] / rates[1]:.2f}x (target >= 2.5x for 3)")
    print(f"tag broadcast to {r['agents']} agents through replica 0, LLM {r['llm_delay_ms']:g} ms:")
    for count, b in results["broadcast"].items():
        print(
            f"  {count} replica(s): one call {b['one_call_s'] * 1000:.0f} ms, broadcast {b['broadcast_s']:.2f} s "
            f"= {b['ratio']:.1f}x one call; runs per replica {b['runs_per_replica']}"
        )
    path = write_results("replicas", results)
    print(f"results: {path}")
    return 0

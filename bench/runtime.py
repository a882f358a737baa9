"""Runtime overhead per message (MCP call to reply, minus the LLM's own round trip) and messages/s with 16 agents.

The LLM is ``python -m mcp_letta.testing --echo`` in its own process, answering at once. Each timed
message is one ``ask_<agent>`` call through an MCP client; right after it, the very request our stack
sent is posted to the same endpoint directly and timed, so every sample pairs "our stack" with "the LLM
alone" at the same request size. Overhead = the difference, p50/p99 over the pairs; CPU per message
too (steadier than wall time on a shared machine). Throughput: 16 agents, one caller each, all at once.
Modes run in rounds, in a rotating order, so drift in the machine's load hits every mode alike.

Modes: ``legacy`` (in-process client, 2025-11-25 handshake, as hosts speak), ``modern`` (in-process,
2026-07-28), ``hub`` (``AgentHub.send_message``, no MCP: the runtime's share) and ``stdio``
(``python -m mcp_letta`` as a subprocess; it replays the requests an in-process mode recorded).
Anchor: the retired Letta V1 server 0.16.8 added about 290 ms per single-step message and managed
about 3.9 messages/s. Targets: <= 5 ms p50 overhead, >= 200 messages/s.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import get_default_environment, stdio_client

from bench.common import environment, log, percentile, write_results
from bench.loopback import MODEL, REPO_ROOT, DirectLLM, child_cpu_s, record_requests, scripted_llm_process
from mcp_letta import AgentHub, Settings
from mcp_letta.llm import ChatRequest
from mcp_letta.llm.openai import request_body
from mcp_letta.server.app import build_server

MODES = ("legacy", "modern", "hub", "stdio")
ANCHOR_OVERHEAD_MS = 290.0  # Letta V1 0.16.8, per single-step message, same machine kind
ANCHOR_RATE = 3.9  # Letta V1 0.16.8, messages/s
TARGET_OVERHEAD_MS = 5.0
TARGET_RATE = 200.0
MESSAGE = "message {i:05d}: please note that the weekly sync moved to Thursday"
# Latency messages go round-robin to this many agents, so that no history nears its context window:
# single-step messages, never a summarization step (which is another cost, and another LLM call).
LATENCY_AGENTS = 8

Send = Callable[[str, str], Awaitable[None]]  # (agent name, message) -> returns once the reply is in


@dataclass(frozen=True)
class Sizes:
    """How much work each mode does; ``--quick`` shrinks it for a smoke run."""

    messages: int = 500
    warmup: int = 50
    agents: int = 16
    per_agent: int = 50
    rounds: int = 3


QUICK = Sizes(messages=60, warmup=10, agents=16, per_agent=10, rounds=2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``runtime`` subcommand's options."""
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="default: all")
    parser.add_argument("--messages", type=int, help=f"timed messages per mode (default {Sizes.messages})")
    parser.add_argument("--warmup", type=int, help=f"untimed messages first (default {Sizes.warmup})")
    parser.add_argument("--agents", type=int, help=f"agents in the throughput run (default {Sizes.agents})")
    parser.add_argument("--per-agent", type=int, help=f"messages per agent per round (default {Sizes.per_agent})")
    parser.add_argument("--rounds", type=int, help=f"rounds over the modes (default {Sizes.rounds})")
    parser.add_argument("--llm-delay-ms", type=float, default=0.0, help="LLM latency (default 0: answers at once)")
    parser.add_argument("--cprofile", type=Path, help="profile the in-process latency loops (event loop) to FILE")


# -- the senders, one per mode -------------------------------------------------------------------------
def hub_sender(hub: AgentHub) -> Send:
    """Send through ``AgentHub.send_message`` (no MCP)."""

    async def send(agent: str, message: str) -> None:
        run = await hub.send_message(agent, message, wait_s=60)
        if run.status != "completed":
            raise RuntimeError(f"run {run.id} of {agent} ended {run.status}: {run.error}")

    return send


def mcp_sender(client: Client) -> Send:
    """Send through the agent's own ``ask_<name>`` MCP tool."""

    async def send(agent: str, message: str) -> None:
        result = await client.call_tool(f"ask_{agent}", {"message": message})
        reply = result.structured_content or {}
        if result.is_error or reply.get("status") != "completed":
            raise RuntimeError(f"ask_{agent} failed: {reply or result.content}")

    return send


def stdio_params(db_path: Path, base_url: str) -> StdioServerParameters:
    """Our stdio server as a host launches it, on ``db_path`` and the scripted LLM."""
    env = {
        **get_default_environment(),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "MCP_LETTA_DB": str(db_path), "MCP_LETTA_LLM_BASE_URL": base_url, "MCP_LETTA_MODEL": MODEL,
        "MCP_LETTA_LOG_LEVEL": "WARNING",
    }  # fmt: skip
    return StdioServerParameters(command=sys.executable, args=["-m", "mcp_letta"], env=env, cwd=REPO_ROOT)


@asynccontextmanager
async def open_mode(mode: str, hub: AgentHub, stdio: StdioServerParameters, errlog: IO[str]) -> AsyncIterator[Send]:
    """A sender for ``mode``; the in-process server is built over ``hub`` (its agents must exist)."""
    if mode == "hub":
        yield hub_sender(hub)
    elif mode == "stdio":
        async with Client(stdio_client(stdio, errlog=errlog), mode="legacy") as client:
            yield mcp_sender(client)
    else:
        server = build_server(hub)
        async with server.running():
            await server.agent_tools.sync()
            async with Client(server.mcp, mode="legacy" if mode == "legacy" else "auto") as client:
                yield mcp_sender(client)


# -- measuring -----------------------------------------------------------------------------------------
@dataclass
class ModeRun:
    """Everything measured for one mode, over all rounds."""

    mode: str
    agents: list[str]
    sent_at: int = 0  # messages sent to the latency agent so far (warm-up included)
    bodies: list[dict[str, Any]] = field(default_factory=list)  # its requests, in order (in-process modes)
    samples: dict[str, list[float]] = field(default_factory=lambda: {"call_ms": [], "llm_ms": [], "overhead_ms": []})
    cpu_s: dict[str, float] = field(default_factory=lambda: {"call": 0.0, "llm": 0.0, "server": 0.0})
    rate_body: dict[str, Any] | None = None  # a request of the throughput run (in-process modes)
    rates: list[float] = field(default_factory=list)
    llm_rates: list[float] = field(default_factory=list)

    @property
    def latency_agents(self) -> list[str]:
        return [f"lat_{self.mode}_{n}" for n in range(LATENCY_AGENTS)]


async def measure_latency(
    send: Send, run: ModeRun, count: int, warmup: int, body_of: Callable[[int], dict[str, Any]], direct: DirectLLM
) -> None:
    """``count`` messages one at a time: each our call, then the LLM alone with the body that call sent."""
    server_cpu = child_cpu_s(contains="-m mcp_letta ") if run.mode == "stdio" else None
    for _ in range(count):
        i = run.sent_at
        run.sent_at += 1
        cpu, start = time.process_time(), time.perf_counter()
        await send(run.latency_agents[i % LATENCY_AGENTS], MESSAGE.format(i=i))
        call_s, call_cpu = time.perf_counter() - start, time.process_time() - cpu
        cpu = time.process_time()
        llm_s = await direct.round_trip(body_of(i))
        llm_cpu = time.process_time() - cpu
        if i >= warmup:
            run.samples["call_ms"].append(call_s * 1000)
            run.samples["llm_ms"].append(llm_s * 1000)
            run.samples["overhead_ms"].append((call_s - llm_s) * 1000)
            run.cpu_s["call"] += call_cpu
            run.cpu_s["llm"] += llm_cpu
    if server_cpu is not None:  # whole loop, warm-up included: /proc counts in 10 ms ticks
        run.cpu_s["server"] += (child_cpu_s(contains="-m mcp_letta ") or server_cpu) - server_cpu


async def measure_rate(send: Send, agents: list[str], per_agent: int) -> float:
    """Messages/s with one caller per agent, all at once, each sending ``per_agent`` messages in turn."""

    async def caller(agent: str) -> None:
        for i in range(per_agent):
            await send(agent, MESSAGE.format(i=i))

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for agent in agents:
            tg.start_soon(caller, agent)
    return len(agents) * per_agent / (time.perf_counter() - start)


@dataclass
class Bench:
    """What every mode shares: the in-process hub, the direct LLM client, the recorded requests."""

    hub: AgentHub
    direct: DirectLLM
    stdio: StdioServerParameters
    errlog: IO[str]
    sizes: Sizes
    sent: list[ChatRequest]
    profiler: cProfile.Profile | None
    runs: dict[str, ModeRun]

    def replayed(self) -> ModeRun:
        """The in-process mode whose requests the stdio mode replays (same messages, same history)."""
        return next(run for run in self.runs.values() if run.mode != "stdio")

    async def round(self, run: ModeRun, count: int, warmup: int) -> None:
        """One round of one mode: ``count`` messages one at a time, then the throughput run."""
        log(f"  {run.mode}: {count} messages one at a time, then {len(run.agents)} agents at once")
        async with open_mode(run.mode, self.hub, self.stdio, self.errlog) as send:
            first = len(self.sent)
            if run.mode == "stdio":
                body_of = self.replayed().bodies.__getitem__
            else:
                base = run.sent_at

                def body_of(i: int) -> dict[str, Any]:
                    return request_body(self.sent[first + i - base])

            if self.profiler is not None and run.mode != "stdio":
                self.profiler.enable()
            await measure_latency(send, run, count, warmup, body_of, self.direct)
            if self.profiler is not None:
                self.profiler.disable()
            if run.mode != "stdio":
                if len(self.sent) - first != count:  # e.g. a summarization step: pairs would no longer match
                    raise RuntimeError(f"{run.mode}: {len(self.sent) - first} LLM requests for {count} messages")
                run.bodies += [request_body(r) for r in self.sent[first:]]
            for agent in run.agents:  # warm each agent's context cache (first round) and connection
                await send(agent, "warm-up")
            run.rates.append(await measure_rate(send, run.agents, self.sizes.per_agent))
        # The LLM alone at the same concurrency, with a request of the size the throughput run sent.
        if run.mode != "stdio":
            run.rate_body = request_body(self.sent[-1])
        body = run.rate_body or self.replayed().rate_body or {}
        run.llm_rates.append(await self.direct.rate(body, len(run.agents), self.sizes.per_agent))


async def run_modes(base_url: str, folder: Path, sizes: Sizes, modes: list[str], profile: Path | None) -> dict:
    """Every mode in ``sizes.rounds`` rounds (rotating the in-process modes; stdio always replays, so last)."""
    settings = Settings(
        db_path=folder / "inprocess.db", llm_base_url=base_url, model=MODEL, log_level="WARNING", max_agent_tools=256
    )
    stdio_db = folder / "stdio.db"
    runs = {mode: ModeRun(mode, [f"tp_{mode}_{n:02d}" for n in range(sizes.agents)]) for mode in modes}
    async with AgentHub(settings.with_overrides(db_path=stdio_db)) as other:  # the stdio server's agents
        for run in [runs[m] for m in modes if m == "stdio"]:
            for name in [*run.latency_agents, *run.agents]:
                await other.create_agent(name)
    direct = DirectLLM(base_url)
    profiler = cProfile.Profile() if profile else None
    try:
        async with AgentHub(settings) as hub:
            for run in [runs[m] for m in modes if m != "stdio"]:
                for name in [*run.latency_agents, *run.agents]:
                    await hub.create_agent(name)
            with tempfile.TemporaryFile("w+") as errlog:
                bench = Bench(hub, direct, stdio_params(stdio_db, base_url), errlog, sizes, record_requests(hub),
                              profiler, runs)  # fmt: skip
                inprocess = [m for m in modes if m != "stdio"]
                for r in range(sizes.rounds):
                    log(f"round {r + 1} of {sizes.rounds}")
                    order = inprocess[r % len(inprocess) :] + inprocess[: r % len(inprocess)]
                    count = sizes.messages // sizes.rounds + (sizes.warmup if r == 0 else 0)
                    for mode in order + (["stdio"] if "stdio" in modes else []):
                        await bench.round(runs[mode], count, sizes.warmup)
    finally:
        await direct.aclose()
    if profiler is not None and profile is not None:
        profiler.dump_stats(profile)
        pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(30)
    return {mode: summarize(run) for mode, run in runs.items()}


def summarize(run: ModeRun) -> dict[str, Any]:
    """Percentiles, CPU per message and the median rate of one mode, with every sample."""
    n = len(run.samples["call_ms"])
    figures: dict[str, Any] = {f"{k}_p{q}": percentile(v, q) for k, v in run.samples.items() for q in (50, 99)}
    cpu_ms = {k: v / n * 1000 for k, v in run.cpu_s.items()}
    middle = run.bodies[len(run.bodies) // 2] if run.bodies else None
    figures.update(
        messages=n,
        rate=statistics.median(run.rates),
        llm_rate=statistics.median(run.llm_rates),
        rates=run.rates,
        llm_rates=run.llm_rates,
        cpu_ms_per_message=cpu_ms,
        cpu_overhead_ms=cpu_ms["call"] + cpu_ms["server"] - cpu_ms["llm"],
        request_bytes_median=None if middle is None else len(json.dumps(middle)),
        samples=run.samples,
    )
    return figures


# -- output --------------------------------------------------------------------------------------------
def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    return [lines[0], "  ".join("-" * w for w in widths), *lines[1:]]


def render(results: dict[str, Any], sizes: Sizes) -> str:
    """Two tables, per-message latency and throughput, each against the Letta anchor and our target."""
    latency = [
        (
            mode,
            f"{r['call_ms_p50']:.2f} / {r['call_ms_p99']:.2f}",
            f"{r['llm_ms_p50']:.2f} / {r['llm_ms_p99']:.2f}",
            f"{r['overhead_ms_p50']:.2f} / {r['overhead_ms_p99']:.2f}",
            f"{r['cpu_overhead_ms']:.2f}",
            f"{ANCHOR_OVERHEAD_MS / max(r['overhead_ms_p50'], 1e-3):.0f}x",
            "yes" if r["overhead_ms_p50"] <= TARGET_OVERHEAD_MS else "NO",
        )
        for mode, r in results.items()
    ]
    rate = [
        (
            mode,
            f"{r['rate']:.0f}",
            ", ".join(f"{x:.0f}" for x in r["rates"]),
            f"{r['llm_rate']:.0f}",
            f"{r['rate'] / ANCHOR_RATE:.0f}x",
            "yes" if r["rate"] >= TARGET_RATE else "NO",
        )
        for mode, r in results.items()
    ]
    head = ("mode", "MCP call -> reply", "LLM alone", "overhead", "CPU ms", "Letta 290 ms / ours", "<= 5 ms p50")
    n = next(iter(results.values()))["messages"]
    lines = [f"per message, ms p50 / p99 over {n} messages after {sizes.warmup} warm-up, one at a time"]
    lines += ["", *_table(head, latency), ""]
    lines.append(f"messages/s: {sizes.agents} agents, a caller each sending {sizes.per_agent}, all at once (median)")
    head = ("mode", "messages/s", "per round", "LLM alone", "ours / Letta 3.9/s", ">= 200/s")
    lines += ["", *_table(head, rate), ""]
    lines.append(
        "overhead = our call minus the LLM alone with the same request, paired per message; CPU ms = our CPU per "
        "message beyond the LLM client's (stdio: client + server process); hub = AgentHub.send_message, no MCP"
    )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Start the LLM, measure every chosen mode, print the tables, write bench/results/runtime.json."""
    base = QUICK if args.quick else Sizes()
    chosen = {"messages": args.messages, "warmup": args.warmup, "agents": args.agents, "per_agent": args.per_agent,
              "rounds": args.rounds}  # fmt: skip
    sizes = Sizes(**{**base.__dict__, **{k: v for k, v in chosen.items() if v is not None}})
    modes = [m for m in MODES if m in args.modes]
    if modes == ["stdio"]:
        modes = ["hub", "stdio"]  # stdio replays the requests an in-process mode recorded
    machine = environment()
    started = time.perf_counter()
    with scripted_llm_process(delay_ms=args.llm_delay_ms) as base_url, tempfile.TemporaryDirectory() as folder:
        results = anyio.run(run_modes, base_url, Path(folder), sizes, modes, args.cprofile)
    print(render(results, sizes))
    load = machine["load_average"]
    if load and load[0] > 0.5:
        print(f"(load average {load[0]:.2f} on {machine['cpus']} CPUs at the start: other work shares this machine)")
    for r in results.values():
        r.update(
            letta_overhead_over_ours=ANCHOR_OVERHEAD_MS / r["overhead_ms_p50"],
            ours_rate_over_letta=r["rate"] / ANCHOR_RATE,
            meets_overhead_target=r["overhead_ms_p50"] <= TARGET_OVERHEAD_MS,
            meets_rate_target=r["rate"] >= TARGET_RATE,
        )
    payload = {
        "benchmark": "runtime",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": machine,
        "load_average_end": os.getloadavg(),
        "sizes": sizes.__dict__,
        "llm_delay_ms": args.llm_delay_ms,
        "elapsed_s": time.perf_counter() - started,
        "anchor": {"letta_v1_overhead_ms": ANCHOR_OVERHEAD_MS, "letta_v1_messages_per_s": ANCHOR_RATE},
        "targets": {"overhead_ms_p50_at_most": TARGET_OVERHEAD_MS, "messages_per_s_at_least": TARGET_RATE},
        "modes": results,
    }
    print(f"written to {write_results('runtime', payload)}")
    return 0

"""Multi-agent: broadcast wall time to N = 10, 50, 100 agents as a ratio to one call, and async reply latency.

The LLM is ``python -m mcp_letta.testing`` in its own process, answering every request after a fixed
100 ms. One call is ``AgentHub.send_and_wait`` to one agent; a broadcast is ``AgentHub.broadcast`` to the
N agents carrying a tag, with ``max_concurrency`` and ``fanout_concurrency`` at 100. Both are timed in
the same rounds, the broadcast sizes in rotating order, and each ratio is median broadcast / median call
(1.0 = a broadcast to N agents costs no more than asking one). Async latency, one message at a time:
host ``send_async`` -> the reply read by ``check_replies`` (woken by the inbox change, as a host is by its
notification), and agent -> agent ``send_async(sender=...)`` -> the reply notice in the sender's history.
The process freezes its start-up heap once the agents exist, as ``mcp-letta serve`` does when it starts.
The first broadcast after start (new connections) is reported on its own. ``--delay-ms 1000`` runs it all
against a 1 s LLM.

Anchor: Letta V1 broadcasts sequentially (ratio = N) and each multi-agent call cost 5.5-6.9 s there.
Target: at N = 100 a broadcast takes at most 1.3x what the runtime's own HTTP client takes to post the same
100 requests at once ("client alone").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import ObjectReceiveStream

from bench.common import environment, log, percentile, write_results
from bench.loopback import MODEL, DirectLLM, record_requests, scripted_llm_process
from mcp_letta import AgentHub, Change, Settings
from mcp_letta.llm.openai import request_body
from mcp_letta.models import Run
from mcp_letta.server.app import freeze_startup_heap

TARGET_RATIO = 1.3  # at N = 100: broadcast / the client alone posting the same 100 requests at once
ANCHOR_CALL_S = (5.5, 6.9)  # Letta V1, one multi-agent call; its broadcast is sequential: ratio = N
MESSAGE = "Status report, please: what are you working on? One line."
WAIT_S = 120.0


@dataclass(frozen=True)
class Sizes:
    """How much each part does; ``--quick`` shrinks it for a smoke run."""

    ns: tuple[int, ...] = (10, 50, 100)
    rounds: int = 5
    async_messages: int = 100
    warmup: int = 5


QUICK = Sizes(rounds=2, async_messages=20, warmup=2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``multiagent`` subcommand's options."""
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--ns", type=int, nargs="+", help=f"broadcast sizes (default {' '.join(map(str, Sizes.ns))})")
    parser.add_argument("--rounds", type=int, help=f"rounds of one call + each broadcast (default {Sizes.rounds})")
    parser.add_argument("--async-messages", type=int, help=f"async messages each way (default {Sizes.async_messages})")
    parser.add_argument("--delay-ms", type=float, default=100.0, help="the LLM's fixed latency (default 100)")
    parser.add_argument("--concurrency", type=int, default=100, help="max_concurrency and fanout_concurrency (100)")


# -- broadcast -----------------------------------------------------------------------------------------
async def create_agents(hub: AgentHub, ns: tuple[int, ...]) -> None:
    """``solo`` (for one call and async replies), ``asker`` (an agent sender) and max(ns) tagged workers."""
    await hub.create_agent("solo", persona="I answer status questions.")
    await hub.create_agent("asker", persona="I ask other agents for their status.")
    for i in range(max(ns)):
        tags = [f"n{n}" for n in ns if i < n]
        await hub.create_agent(f"worker_{i:03d}", persona=f"I am worker {i}.", tags=tags)


async def one_call(hub: AgentHub) -> float:
    """Seconds for one send_and_wait to one agent."""
    start = time.perf_counter()
    run = await hub.send_and_wait("solo", MESSAGE, wait_s=WAIT_S)
    elapsed = time.perf_counter() - start
    if run.status != "completed":
        raise RuntimeError(f"one call ended {run.status}: {run.error}")
    return elapsed


async def one_broadcast(hub: AgentHub, n: int) -> tuple[float, list[float]]:
    """Seconds for a broadcast to the ``n`` agents tagged ``n<n>``, and each recipient's latency (ms)."""
    start = time.perf_counter()
    results = await hub.broadcast(MESSAGE, match_all=[f"n{n}"], wait_s=WAIT_S)
    elapsed = time.perf_counter() - start
    failed = [r for r in results if r.status != "completed"]
    if len(results) != n or failed:
        raise RuntimeError(f"broadcast to {n}: {len(results)} results, not completed: {failed[:3]}")
    return elapsed, [r.latency_ms or 0.0 for r in results]


async def measure_broadcasts(hub: AgentHub, direct: DirectLLM, sizes: Sizes) -> dict[str, Any]:
    """Rounds of one call and a broadcast of each size (rotating order), each beside the LLM alone doing
    the same (one request; N requests at once, with the very body our agents send); medians and ratios."""
    sent = record_requests(hub, keep=1)
    # The first broadcast warms every agent and the LLM client's connections; it is reported on its own: the
    # process has run none of the agents yet, so none of their first requests can go out early.
    first_s, _ = await one_broadcast(hub, max(sizes.ns))
    for _ in range(3):
        await one_call(hub)
    body = request_body(sent[-1])
    await direct.batch(body, max(sizes.ns))
    times: dict[str, list[float]] = {"call": [], "llm_call": []}
    spread: dict[int, list[float]] = {n: [] for n in sizes.ns}
    for r in range(sizes.rounds):
        order = list(sizes.ns[r % len(sizes.ns) :] + sizes.ns[: r % len(sizes.ns)])
        times["call"].append(await one_call(hub))
        times["llm_call"].append(await direct.round_trip(body))
        for n in order:
            wall, latencies = await one_broadcast(hub, n)
            times.setdefault(f"n{n}", []).append(wall)
            times.setdefault(f"llm_n{n}", []).append(await direct.batch(body, n))
            spread[n] += latencies
        log(f"  round {r + 1}: one call {times['call'][-1] * 1000:.0f} ms; " + ", ".join(
            f"N={n} {times[f'n{n}'][-1] * 1000:.0f} ms (LLM alone {times[f'llm_n{n}'][-1] * 1000:.0f})"
            for n in sizes.ns))  # fmt: skip
    call, llm_call = statistics.median(times["call"]), statistics.median(times["llm_call"])
    by_n = {}
    for n in sizes.ns:
        wall, llm = statistics.median(times[f"n{n}"]), statistics.median(times[f"llm_n{n}"])
        by_n[n] = {
            "wall_s": wall, "ratio": wall / call, "walls_s": times[f"n{n}"], "letta_ratio": float(n),
            "letta_over_ours": n / (wall / call), "letta_wall_s": [n * s for s in ANCHOR_CALL_S],
            "llm_alone_wall_s": llm, "llm_alone_ratio": llm / llm_call, "llm_alone_walls_s": times[f"llm_n{n}"],
            "recipient_latency_ms_p50": percentile(spread[n], 50), "recipient_latency_ms_max": max(spread[n]),
            "overhead_per_recipient_ms": (wall - call) / n * 1000,
        }  # fmt: skip
    return {
        "one_call_s": call, "one_calls_s": times["call"], "llm_alone_call_s": llm_call, "first_broadcast_s": first_s,
        "request_bytes": len(json.dumps(body)), "broadcasts": by_n,
    }  # fmt: skip


# -- async replies -------------------------------------------------------------------------------------
async def _next_change(changes: ObjectReceiveStream[Change], kind: str) -> Change:
    while True:
        change = await changes.receive()
        if change.kind == kind:
            return change


async def host_async(hub: AgentHub, changes: ObjectReceiveStream[Change]) -> float:
    """Seconds from ``send_async`` to ``check_replies`` returning the reply (woken by the inbox change)."""
    start = time.perf_counter()
    run = await hub.send_async("solo", MESSAGE)
    with anyio.fail_after(WAIT_S):
        while (await _next_change(changes, "inbox")).ref != run.id:
            pass
    replies = await hub.check_replies()
    elapsed = time.perf_counter() - start
    if [r.id for r in replies] != [run.id] or replies[0].status != "completed":
        raise RuntimeError(f"check_replies gave {[(r.id, r.status) for r in replies]}, expected {run.id}")
    return elapsed


async def agent_async(hub: AgentHub, changes: ObjectReceiveStream[Change]) -> tuple[float, Run]:
    """Seconds from an agent's ``send_async`` to the reply notice entering its history (its run claimed)."""
    start = time.perf_counter()
    sent = await hub.send_async("solo", MESSAGE, sender="asker")
    with anyio.fail_after(WAIT_S):
        while True:
            change = await _next_change(changes, "run")
            if change.ref == sent.id:
                continue
            run = await hub.get_run(change.ref)  # claimed = its input is in the history, same transaction
            if run.parent_run_id == sent.id and run.agent_name == "asker" and run.status != "queued":
                elapsed = time.perf_counter() - start
                break
    await hub.wait_run(run.id, wait_s=WAIT_S)  # the asker is idle again before the next message
    return elapsed, run


async def measure_async(hub: AgentHub, sizes: Sizes, llm_ms: float) -> dict[str, Any]:
    """p50/p99 of both async paths over ``sizes.async_messages`` messages each, one at a time."""
    out: dict[str, Any] = {}
    changes = hub.subscribe_changes(buffer=100_000)
    async with changes:
        host = [await host_async(hub, changes) for _ in range(sizes.warmup + sizes.async_messages)]
        agent: list[float] = []
        for _ in range(sizes.warmup + sizes.async_messages):
            elapsed, notice = await agent_async(hub, changes)
            agent.append(elapsed)
    history = await hub.get_messages("asker", limit=3)
    delivered = any(notice.input == m.content for m in history)
    for name, samples in (("host_send_async_to_check_replies", host), ("agent_send_async_to_sender_history", agent)):
        ms = [s * 1000 for s in samples[sizes.warmup :]]
        out[name] = {
            "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "minus_llm_p50_ms": percentile(ms, 50) - llm_ms,
            "samples_ms": ms,
        }  # fmt: skip
    out["agent_send_async_to_sender_history"]["notice_found_in_history"] = delivered
    return out


async def run_all(base_url: str, folder: Path, sizes: Sizes, concurrency: int) -> dict[str, Any]:
    """Create the agents, then the broadcast rounds and the async latencies."""
    settings = Settings(
        db_path=folder / "multiagent.db", llm_base_url=base_url, model=MODEL, log_level="WARNING",
        max_concurrency=concurrency, fanout_concurrency=concurrency,
    )  # fmt: skip
    direct = DirectLLM(base_url)
    try:
        async with AgentHub(settings) as hub:
            await create_agents(hub, sizes.ns)
            freeze_startup_heap()  # what `mcp-letta serve` does once it has started (see server/app.py)
            log(f"broadcasts to {', '.join(map(str, sizes.ns))}, {sizes.rounds} rounds ...")
            broadcasts = await measure_broadcasts(hub, direct, sizes)
            log(f"async replies: {sizes.async_messages} each way, one at a time ...")
            replies = await measure_async(hub, sizes, broadcasts["llm_alone_call_s"] * 1000)
    finally:
        await direct.aclose()
    return {**broadcasts, "async": replies}


# -- output --------------------------------------------------------------------------------------------
def render(result: dict[str, Any], delay_ms: float, concurrency: int) -> str:
    """The broadcast table (ratios against one call and against Letta V1) and the async latency table."""
    call_ms = result["one_call_s"] * 1000
    rows = [("N", "broadcast", "ratio to one call", "client alone: N at once", "broadcast / client alone",
             "Letta V1 ratio", "Letta / ours", "Letta V1 wall", f"<= {TARGET_RATIO}")]  # fmt: skip
    for n, b in result["broadcasts"].items():
        low, high = b["letta_wall_s"]
        over_client = b["wall_s"] / b["llm_alone_wall_s"]
        meets = ("yes" if over_client <= TARGET_RATIO else "NO") if n == 100 else "-"
        wall, ratio, letta = f"{b['wall_s'] * 1000:.0f} ms", f"{b['ratio']:.2f}", f"{b['letta_over_ours']:.0f}x"
        llm = f"{b['llm_alone_wall_s'] * 1000:.0f} ms = {b['llm_alone_ratio']:.2f}"
        rows.append((str(n), wall, ratio, llm, f"{over_client:.2f}", str(n), letta, f"{low:.0f}-{high:.0f} s", meets))
    a = result["async"]
    rows2 = [("async reply, one at a time", "p50", "p99", "p50 minus the LLM alone")]
    for key, label in (
        ("host_send_async_to_check_replies", "host send_async -> check_replies"),
        ("agent_send_async_to_sender_history", "agent -> agent: reply in the sender's history"),
    ):
        p50, p99, minus = (f"{a[key][k]:.1f} ms" for k in ("p50_ms", "p99_ms", "minus_llm_p50_ms"))
        rows2.append((label, p50, p99, minus))

    def table(rows: list[tuple[str, ...]]) -> list[str]:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        return [lines[0], "  ".join("-" * w for w in widths), *lines[1:]]

    llm_ms = result["llm_alone_call_s"] * 1000
    first_ms = result["first_broadcast_s"] * 1000
    first = (
        f"first broadcast to {max(result['broadcasts'])} after start (new connections): {first_ms:.0f} ms = "
        f"{first_ms / call_ms:.2f} x one call"
    )
    head = (f"broadcast, LLM answering after {delay_ms:g} ms, max_concurrency = fanout_concurrency = {concurrency}; "
            f"one call = {call_ms:.0f} ms, the LLM alone {llm_ms:.0f} ms (medians)")  # fmt: skip
    notes = (
        "ratio = median broadcast / median one call; client alone = the same request posted N times at once with "
        "the runtime's HTTP client, and its ratio to one; Letta V1 broadcasts sequentially, 5.5-6.9 s a call"
    )
    return "\n".join([head, "", *table(rows), notes, first, "", *table(rows2)])


def main(args: argparse.Namespace) -> int:
    """Start the LLM, measure, print the tables, write bench/results/multiagent.json."""
    base = QUICK if args.quick else Sizes()
    chosen = {"ns": tuple(args.ns) if args.ns else None, "rounds": args.rounds, "async_messages": args.async_messages}
    sizes = Sizes(**{**base.__dict__, **{k: v for k, v in chosen.items() if v is not None}})
    machine = environment()
    started = time.perf_counter()
    with scripted_llm_process(delay_ms=args.delay_ms) as base_url, tempfile.TemporaryDirectory() as folder:
        result = anyio.run(run_all, base_url, Path(folder), sizes, args.concurrency)
    print(render(result, args.delay_ms, args.concurrency))
    load = machine["load_average"]
    if load and load[0] > 0.5:
        print(f"(load average {load[0]:.2f} on {machine['cpus']} CPUs at the start: other work shares this machine)")
    payload = {
        "benchmark": "multiagent",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": machine,
        "load_average_end": os.getloadavg(),
        "sizes": {**sizes.__dict__, "ns": list(sizes.ns)},
        "llm_delay_ms": args.delay_ms,
        "concurrency": args.concurrency,
        "elapsed_s": time.perf_counter() - started,
        "anchor": {"letta_v1_call_s": ANCHOR_CALL_S, "letta_v1_broadcast": "sequential: ratio = N"},
        "target": {"broadcast_over_client_alone_at_100_at_most": TARGET_RATIO},
        **result,
    }
    print(f"written to {write_results('multiagent', payload)}")
    return 0

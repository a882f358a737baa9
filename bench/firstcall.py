"""First broadcast in a fresh process: a tag broadcast to 100 agents as the first call of a new stdio server,
as a ratio to the second one.

A host starts a fresh ``mcp-letta`` stdio server per window, so the first broadcast is the common case.
Each sample starts ``python -m mcp_letta`` (as a host does, through the SDK's stdio client), calls
``send_message_to_agents_matching_tags`` twice and times each call from the client; the LLM is
``python -m mcp_letta.testing`` answering at once, so what is timed is ours. The ratio is median first /
median second (1.0 = the first call costs no more than a warm one). ``--server-src DIR`` runs the server
from another source tree (an older checkout) against the same database kind, to compare in one sitting;
``--cprofile DIR`` runs every server under cProfile and writes one profile per sample there;
``--history N`` gives every agent N messages in its window first (a fresh process loads each window once).

Target: the first broadcast within 1.5x of the second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import get_default_environment, stdio_client

from bench.common import environment, log, write_results
from bench.loopback import MODEL, REPO_ROOT, scripted_llm_process
from mcp_letta import AgentHub, NewMessage, Settings

TARGET_RATIO = 1.5
TAG = "team"
MESSAGE = "Status report, please: what are you working on? One line."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``firstcall`` subcommand's options."""
    parser.add_argument("--samples", type=int, default=7, help="fresh server processes (default 7)")
    parser.add_argument("--agents", type=int, default=100, help="broadcast recipients (default 100)")
    parser.add_argument("--history", type=int, default=0, help="messages in each agent's window first (default 0)")
    parser.add_argument("--server-src", type=Path, help="run the server from this source tree (default: this one)")
    parser.add_argument("--cprofile", type=Path, help="profile each server process into this folder")


def server_params(db_path: Path, base_url: str, src: Path, profile: Path | None) -> StdioServerParameters:
    """Our stdio server as a host launches it, from ``src``, on ``db_path`` and the scripted LLM."""
    env = {
        **get_default_environment(),
        "PYTHONPATH": str(src),
        "MCP_LETTA_DB": str(db_path), "MCP_LETTA_LLM_BASE_URL": base_url, "MCP_LETTA_MODEL": MODEL,
        "MCP_LETTA_LOG_LEVEL": "WARNING", "MCP_LETTA_MAX_CONCURRENCY": "100", "MCP_LETTA_FANOUT_CONCURRENCY": "100",
    }  # fmt: skip
    args = ["-m", "mcp_letta"] if profile is None else ["-m", "cProfile", "-o", str(profile), "-m", "mcp_letta"]
    return StdioServerParameters(command=sys.executable, args=args, env=env, cwd=src)


async def create_agents(db_path: Path, n: int, history: int) -> None:
    """``n`` agents carrying the broadcast tag, each with ``history`` messages in its window."""
    async with AgentHub(Settings.from_env().with_overrides(db_path=db_path)) as hub:
        for i in range(n):
            await hub.create_agent(f"worker_{i:03d}", persona=f"I am worker {i}.", tags=[TAG])
            said = [
                NewMessage(role="user" if j % 2 == 0 else "assistant", content=f"message {j}: " + "words " * 30)
                for j in range(history)
            ]
            if said:
                await hub.append_messages(f"worker_{i:03d}", said)


async def broadcast(client: Client, n: int) -> float:
    """One tag broadcast through MCP; seconds from the call to its result."""
    started = time.perf_counter()
    result = await client.call_tool(
        "send_message_to_agents_matching_tags", {"message": MESSAGE, "match_all": [TAG], "timeout_s": 120}
    )
    elapsed = time.perf_counter() - started
    reply = result.structured_content or {}
    done = [r for r in reply.get("results", []) if r.get("status") == "completed"]
    if result.is_error or len(done) != n:
        raise RuntimeError(f"the broadcast did not complete for all {n} agents: {str(reply)[:300]}")
    return elapsed


async def sample(params: StdioServerParameters, n: int, errlog: Any) -> tuple[float, float, float]:
    """A fresh server: its start-up (to the tool list a host asks for when it connects), its first and its
    second broadcast."""
    started = time.perf_counter()
    async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:
        await client.list_tools()
        startup = time.perf_counter() - started
        first = await broadcast(client, n)
        second = await broadcast(client, n)
    return startup, first, second


async def run_all(base_url: str, folder: Path, args: argparse.Namespace, errlog: IO[str]) -> dict[str, Any]:
    """Seed the database, then ``args.samples`` fresh servers."""
    db_path = folder / "agents.db"
    await create_agents(db_path, args.agents, args.history)
    src = (args.server_src or REPO_ROOT).resolve()
    startups, firsts, seconds = [], [], []
    for i in range(args.samples):
        profile = None if args.cprofile is None else args.cprofile.resolve() / f"server-{i}.prof"
        params = server_params(db_path, base_url, src, profile)
        startup, first, second = await sample(params, args.agents, errlog)
        log(
            f"sample {i + 1}/{args.samples}: start-up {startup * 1000:.0f} ms, first {first * 1000:.0f} ms, "
            f"second {second * 1000:.0f} ms"
        )
        startups.append(startup)
        firsts.append(first)
        seconds.append(second)
    return {"server_src": str(src), "startup_s": startups, "first_s": firsts, "second_s": seconds}


def main(args: argparse.Namespace) -> int:
    """Start the LLM, measure, print the figures, write bench/results/firstcall.json."""
    if args.cprofile is not None:
        args.cprofile.mkdir(parents=True, exist_ok=True)
    machine = environment()
    with scripted_llm_process() as base_url, tempfile.TemporaryDirectory() as folder:
        with open(Path(folder) / "server.log", "w") as errlog:  # the servers' stderr
            result = anyio.run(run_all, base_url, Path(folder), args, errlog)
    first, second = statistics.median(result["first_s"]), statistics.median(result["second_s"])
    ratio = first / second
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print(
        f"tag broadcast to {args.agents} agents ({args.history} messages of history each) in a fresh stdio "
        f"server ({result['server_src']}), "
        f"{args.samples} samples, LLM answering at once:\n"
        f"  first  median {first * 1000:.0f} ms (min {min(result['first_s']) * 1000:.0f})\n"
        f"  second median {second * 1000:.0f} ms (min {min(result['second_s']) * 1000:.0f})\n"
        f"  first / second = {ratio:.2f}x ({verdict} the target of {TARGET_RATIO}x); "
        f"min first / min second = {min(result['first_s']) / min(result['second_s']):.2f}x\n"
        f"  start-up to the tool list: median {statistics.median(result['startup_s']) * 1000:.0f} ms"
    )
    payload = {
        "benchmark": "firstcall",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "environment": machine,
        "load_average_end": os.getloadavg(),
        "agents": args.agents,
        "history": args.history,
        "samples": args.samples,
        "ratio": ratio,
        "target": {"first_over_second_at_most": TARGET_RATIO},
        **result,
    }
    print(f"written to {write_results('firstcall', payload)}")
    return 0

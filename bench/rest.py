"""Per-message cost of the Letta REST API (letta-client -> /v1 -> reply) as a ratio to the same message over MCP.

One ``mcp-letta serve --transport http`` subprocess (SQLite, bearer token) answers both doors; the LLM is
``python -m mcp_letta.testing --echo`` in its own process, answering at once. Each round sends one message
through ``letta-client`` (``agents.messages.create``), one through an MCP client over streamable HTTP
(``ask_<agent>``) and posts one chat body straight to the LLM; the order rotates per round so drift in the
machine's load hits each alike. Overhead = a door's p50 minus the LLM's p50. Anchor: the retired Letta V1
server 0.16.8 added about 290 ms per single-step message on this kind of machine with an instant LLM.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx2
from letta_client import AsyncLetta
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from bench.common import environment, free_port, log, percentile, wait_healthy, write_results
from bench.loopback import MODEL, REPO_ROOT, DirectLLM, scripted_llm_process

ANCHOR_OVERHEAD_MS = 290.0  # Letta V1 0.16.8, per single-step message
MESSAGE = "message {i:05d}: please note that the weekly sync moved to Thursday"
AGENTS = 4  # messages go round-robin, so no history nears its context window


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--messages``: timed messages per door; ``--warmup``: untimed ones first."""
    parser.add_argument("--messages", type=int, default=200, help="timed messages per door (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed messages per door first (default 20)")


def start_server(llm_url: str, db: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """``mcp-letta serve --transport http`` on a free loopback port: the process, its base URL and token."""
    token, port = secrets.token_urlsafe(24), free_port()
    env = {**os.environ, "MCP_LETTA_TOKEN": token, "MCP_LETTA_DB": str(db), "MCP_LETTA_LLM_BASE_URL": llm_url,
           "MCP_LETTA_MODEL": MODEL, "MCP_LETTA_LOG_LEVEL": "WARNING"}  # fmt: skip
    command = [sys.executable, "-m", "mcp_letta", "serve", "--transport", "http", "--port", str(port)]
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}", token


async def run(args: argparse.Namespace, llm_url: str, proc: subprocess.Popen[bytes], base: str, token: str
              ) -> dict[str, Any]:  # fmt: skip
    """Time the three paths round by round against the running server; return the figures."""
    await wait_healthy(base, proc)
    direct = DirectLLM(llm_url)
    body = {"model": MODEL, "messages": [{"role": "user", "content": MESSAGE.format(i=0)}]}
    async with (
        AsyncLetta(base_url=base, api_key=token, max_retries=0) as letta,
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http,
        Client(streamable_http_client(f"{base}/mcp", http_client=http), mode="legacy") as mcp,
    ):
        agents = [(await letta.agents.create(name=f"bench{i}")) for i in range(AGENTS)]
        with anyio.fail_after(30):  # the MCP tools appear once the server hears of the new agents
            wanted = {f"ask_bench{i}" for i in range(AGENTS)}
            while not wanted <= {t.name for t in (await mcp.list_tools()).tools}:  # noqa: ASYNC110
                await anyio.sleep(0.1)  # set-up only: list_changed needs a listener, this is simpler

        async def rest(i: int) -> None:
            reply = await letta.agents.messages.create(agents[i % AGENTS].id, input=MESSAGE.format(i=i))
            assert reply.stop_reason.stop_reason == "end_turn", reply

        async def over_mcp(i: int) -> None:
            result = await mcp.call_tool(f"ask_bench{i % AGENTS}", {"message": MESSAGE.format(i=i)})
            assert not result.is_error, result.content

        async def llm(i: int) -> None:
            await direct.round_trip(body)

        paths: dict[str, Callable[[int], Awaitable[None]]] = {"rest": rest, "mcp": over_mcp, "llm": llm}
        times: dict[str, list[float]] = {name: [] for name in paths}
        order = list(paths)
        for i in range(args.warmup + args.messages):
            order = order[1:] + order[:1]
            for name in order:
                start = time.perf_counter()
                await paths[name](i)
                if i >= args.warmup:
                    times[name].append((time.perf_counter() - start) * 1000)
            if i and i % 50 == 0:
                log(f"  {i} rounds")
        await direct.http.aclose()
    p50 = {name: statistics.median(values) for name, values in times.items()}
    p99 = {name: percentile(values, 99) for name, values in times.items()}
    return {
        "messages": args.messages,
        "p50_ms": p50,
        "p99_ms": p99,
        "overhead_p50_ms": {"rest": p50["rest"] - p50["llm"], "mcp": p50["mcp"] - p50["llm"]},
        "rest_to_mcp_ratio": p50["rest"] / p50["mcp"],
        "overhead_ratio": (p50["rest"] - p50["llm"]) / max(p50["mcp"] - p50["llm"], 1e-9),
    }


def main(args: argparse.Namespace) -> int:
    """Run the benchmark and print the figures."""
    with tempfile.TemporaryDirectory() as tmp, scripted_llm_process() as llm_url:
        proc, base, token = start_server(llm_url, Path(tmp) / "bench.db")
        try:
            result = anyio.run(run, args, llm_url, proc, base, token)
        finally:
            proc.terminate()
            proc.wait(10)
    p50, over = result["p50_ms"], result["overhead_p50_ms"]
    print(f"per message, p50 over {result['messages']} rounds (p99 in brackets):")
    for name, label in (("rest", "letta-client -> /v1"), ("mcp", "MCP client -> /mcp"), ("llm", "LLM alone")):
        print(f"  {label:22} {p50[name]:8.2f} ms  [{result['p99_ms'][name]:.2f}]")
    print(f"  overhead over the LLM: REST {over['rest']:.2f} ms, MCP {over['mcp']:.2f} ms")
    print(f"  REST / MCP: {result['rest_to_mcp_ratio']:.2f}x end to end, {result['overhead_ratio']:.2f}x in overhead")
    print(f"  Letta V1 0.16.8 added ~{ANCHOR_OVERHEAD_MS:.0f} ms per single-step message: REST here is "
          f"{ANCHOR_OVERHEAD_MS / max(over['rest'], 1e-9):.0f}x less")  # fmt: skip
    path = write_results("rest", {"environment": environment(), **result})
    log(f"results written to {path}")
    return 0

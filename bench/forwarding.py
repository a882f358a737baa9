"""Passing a session's requests on between replicas: what the extra hop costs one MCP request.

Two ``mcp-letta serve --transport http`` processes on one SQLite file, each started with
``MCP_LETTA_REPLICA_URL``. A session begun on the first; the same ``tools/call`` (``list_agents``) sent
``--requests`` times straight to it and as many times to the second, which passes it on, in alternating
rounds so drift in the machine's load hits both alike. Printed: the p50 and p90 of each and their ratio.
Behind a balancer that spreads requests over N replicas, (N-1)/N of a session's requests take the hop.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import httpx2

from bench.common import environment, free_port, log, percentile, wait_healthy, write_results
from bench.loopback import REPO_ROOT

TOKEN = "bench-forwarding-token"
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json, text/event-stream",
           "Mcp-Protocol-Version": "2025-11-25"}  # fmt: skip
CALL = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "list_agents", "arguments": {}}}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``forwarding`` subcommand's options."""
    parser.add_argument("--requests", type=int, default=600, help="timed requests each way (default 600)")
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds (default 6)")


def _start(db: Path, port: int, folder: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_LETTA_", "OPENAI_"))}
    env |= {"MCP_LETTA_DB": str(db), "MCP_LETTA_TOKEN": TOKEN, "MCP_LETTA_REPLICA_URL": f"http://127.0.0.1:{port}",
            "MCP_LETTA_LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO_ROOT)}  # fmt: skip
    command = [sys.executable, "-m", "mcp_letta", "serve", "--transport", "http", "--port", str(port)]
    log_file = (folder / f"replica-{port}.log").open("wb")
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log_file, cwd=REPO_ROOT)


async def measure(args: argparse.Namespace, folder: Path) -> dict[str, list[float]]:
    """Milliseconds per request, straight to the session's replica and passed on by the other."""
    ports = [free_port(), free_port()]
    procs = [_start(folder / "agents.db", port, folder) for port in ports]
    try:
        for port, proc in zip(ports, procs, strict=True):
            await wait_healthy(f"http://127.0.0.1:{port}", proc)
        own, other = (f"http://127.0.0.1:{port}/mcp" for port in ports)
        samples: dict[str, list[float]] = {"direct": [], "passed on": []}
        async with httpx2.AsyncClient(timeout=30) as http:
            hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "b", "version": "1"}}
            began = await http.post(own, headers=HEADERS, json={"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                                                "params": hello})  # fmt: skip
            headers = HEADERS | {"Mcp-Session-Id": began.headers["mcp-session-id"]}
            await http.post(own, headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
            per_round = args.requests // args.rounds
            for r in range(args.rounds):
                ways = [("direct", own), ("passed on", other)]
                for kind, url in ways if r % 2 == 0 else ways[::-1]:
                    log(f"forwarding: round {r + 1}, {kind}")
                    for _ in range(per_round + 5):
                        start = time.perf_counter()
                        answer = await http.post(url, headers=headers, json=CALL)
                        if answer.status_code != 200:
                            raise RuntimeError(f"{kind}: {answer.status_code} {answer.text[:300]}")
                        samples[kind].append((time.perf_counter() - start) * 1000)
                    del samples[kind][-per_round - 5 : -per_round]  # the first five of each round warm up
        return samples
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)


def main(args: argparse.Namespace) -> int:
    """Run the measurement and print it."""
    with tempfile.TemporaryDirectory(prefix="mcp-letta-bench-forwarding-") as folder:
        samples = anyio.run(measure, args, Path(folder))
    p50 = {kind: percentile(values, 50) for kind, values in samples.items()}
    p90 = {kind: percentile(values, 90) for kind, values in samples.items()}
    print(f"one tools/call over HTTP ({len(samples['direct'])} each way, two replicas on one machine):")
    for kind in samples:
        print(f"  {kind:10} p50 {p50[kind]:6.2f} ms   p90 {p90[kind]:6.2f} ms")
    print(f"  passed on / direct, p50: {p50['passed on'] / p50['direct']:.2f}x "
          f"(+{p50['passed on'] - p50['direct']:.2f} ms)")  # fmt: skip
    path = write_results("forwarding", {"environment": environment(), "p50_ms": p50, "p90_ms": p90,
                                        "ratio_p50": p50["passed on"] / p50["direct"]})  # fmt: skip
    print(f"results: {path}")
    return 0

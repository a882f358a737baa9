"""Console: how fast a write by another process shows on the open page, and time to interactive at scale.

The console runs alone (``mcp-letta console``) in its own process on a fresh database, as a user runs it
beside their hosts' stdio servers; headless Chromium (Debian's ``chromium``, through Playwright) keeps a
page open. Figures:

- *block write to page*: this process writes a block (``AgentHub.write_block``, at a random moment); the
  time until the open block page shows the new value (the console hears the commit through the store's
  change feed, pushes it over Server-Sent Events, the page re-reads the block). Reported next to the
  store's watch interval, which bounds how soon another process's commit can be noticed (half of it on
  average).
- *time to interactive*: with 1,000 agents and 10,000 finished runs (run through the loopback LLM), from
  navigation to the agents table holding every agent, and to the traffic diagram drawn (its newest 300 runs).

Nothing is asserted; the figures are printed and written to ``bench/results/console.json``.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from bench.common import environment, log, percentile, write_results
from mcp_letta import AgentHub, Settings
from mcp_letta.testing import ScriptedLLM

WATCH_INTERVAL_S = 0.2  # the default MCP_LETTA_WATCH_INTERVAL


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``console`` subcommand's options."""
    parser.add_argument("--quick", action="store_true", help="100 agents, 1,000 runs, 5 writes: a smoke run")
    parser.add_argument("--agents", type=int, default=1_000, help="agents to create (default 1,000)")
    parser.add_argument("--runs", type=int, default=10_000, help="runs to complete (default 10,000)")
    parser.add_argument("--writes", type=int, default=20, help="block writes timed (default 20)")
    parser.add_argument("--loads", type=int, default=3, help="page loads timed per page (default 3)")
    parser.add_argument("--db", type=Path, help="keep the seeded database here; reuse it if it exists")


async def seed(settings: Settings, agents: int, runs: int) -> None:
    """``agents`` agents, then ``runs`` messages spread over them, each answered by the loopback LLM."""
    async with AgentHub(settings) as hub:
        names = [f"agent-{i:04d}" for i in range(agents)]
        for name in names:
            await hub.create_agent(name, description=f"bench agent {name}", tags=[f"team-{hash(name) % 10}"])
        log(f"{agents} agents created; running {runs} messages")
        started = time.perf_counter()
        sent = 0
        while sent < runs:
            batch = [names[(sent + i) % agents] for i in range(min(200, runs - sent))]
            made = []
            for name in batch:
                made.append(await hub.send_message(name, f"message {sent}"))
                sent += 1
            for run in made:
                await hub.wait_run(run.id, wait_s=120)
            if sent % 2000 == 0:
                log(f"  {sent} runs done ({sent / (time.perf_counter() - started):.0f}/s)")


async def measure(url: str, settings: Settings, writes: int, loads: int) -> dict[str, Any]:
    """Block-write latency on the open page, then time to interactive of the agents and traffic pages."""
    from playwright.async_api import async_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("install Debian's chromium first: apt-get install -y chromium")
    result: dict[str, Any] = {}
    async with AgentHub(settings) as hub, async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium)
        # wait_for_function evaluates its text, which the page's Content-Security-Policy forbids
        browser = await launched.new_context(bypass_csp=True, viewport={"width": 1400, "height": 900})
        page = await browser.new_page()
        block = await hub.create_block(f"bench_block_{int(time.time())}", "v0")
        await page.goto(f"{url}#/block/{block.id}")
        await page.wait_for_function("document.querySelector('#live')?.textContent === 'live'")
        await page.wait_for_function("document.querySelector('#block-editor')?.value === 'v0'")
        latencies = []
        for i in range(1, writes + 1):
            value = f"v{i}"
            # At a random moment: a write right after the page caught up would always land just after the
            # console's last look at the store, and so always wait a whole watch interval.
            await anyio.sleep(random.uniform(0, 2 * WATCH_INTERVAL_S))
            started = time.perf_counter()
            await hub.write_block(block.id, value, writer="bench")
            await page.wait_for_function(f"document.querySelector('#block-editor')?.value === '{value}'", polling=5)
            latencies.append((time.perf_counter() - started) * 1000)
        result["block_write_to_page_ms"] = {"median": statistics.median(latencies), "p95": percentile(latencies, 95),
                                            "samples": latencies}  # fmt: skip
        for name, path, ready in (
            ("agents", "#/agents", "document.querySelectorAll('tr[data-agent]').length >= {agents}"),
            ("traffic", "#/traffic", "document.querySelectorAll('#traffic g.msg').length > 0"),
        ):
            agents = await hub.count_agents()
            times = []
            for _ in range(loads):
                fresh = await browser.new_page()
                started = time.perf_counter()
                await fresh.goto(f"{url}{path}")
                await fresh.wait_for_function(ready.format(agents=agents), polling=10, timeout=120_000)
                times.append((time.perf_counter() - started) * 1000)
                await fresh.close()
            result[f"{name}_time_to_interactive_ms"] = {"median": statistics.median(times), "samples": times}
        sizes = await page.evaluate(
            "performance.getEntriesByType('resource').map(e => [e.name, e.encodedBodySize || e.transferSize])"
        )
        result["page_files_bytes"] = {n.rsplit("/", 1)[-1]: b for n, b in sizes if "/static/" in n}
        await launched.close()
    return result


def main(args: argparse.Namespace) -> int:
    """Seed a database, start the console on it in another process, measure, print the figures."""
    agents, runs, writes = (100, 1_000, 5) if args.quick else (args.agents, args.runs, args.writes)
    with tempfile.TemporaryDirectory() as folder, ScriptedLLM() as llm:
        llm.echo()
        db = args.db or Path(folder) / "console.db"
        settings = Settings(db_path=db).with_overrides(llm_base_url=llm.base_url, model="scripted-model")
        if args.db is not None and args.db.exists():
            log(f"reusing {db}")
        else:
            started = time.perf_counter()
            anyio.run(seed, settings, agents, runs)
            log(f"seeded {agents} agents and {runs} runs in {time.perf_counter() - started:.0f} s")
        env = {**os.environ, "MCP_LETTA_DB": str(db)}
        env.pop("MCP_LETTA_TOKEN", None)
        command = [sys.executable, "-m", "mcp_letta", "console", "--port", "0"]
        console = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert console.stdout is not None
            found = re.search(r"http://\S+/", console.stdout.readline())
            if found is None:
                raise SystemExit("the console did not print its URL")
            result = anyio.run(measure, found.group(0), settings, writes, args.loads)
        finally:
            console.terminate()
            console.wait(timeout=10)
    write = result["block_write_to_page_ms"]
    print(f"console benchmark: {agents} agents, {runs} runs, console in its own process")
    print(f"  block write (this process) to the open page: median {write['median']:.0f} ms, "
          f"p95 {write['p95']:.0f} ms over {writes} writes "
          f"(store watch interval {WATCH_INTERVAL_S * 1000:.0f} ms)")  # fmt: skip
    for name in ("agents", "traffic"):
        tti = result[f"{name}_time_to_interactive_ms"]
        print(f"  {name} page, time to interactive: median {tti['median']:.0f} ms "
              f"({', '.join(f'{t:.0f}' for t in tti['samples'])})")  # fmt: skip
    files = result["page_files_bytes"]
    print(f"  page files: {', '.join(f'{n} {b / 1024:.1f} KiB' for n, b in sorted(files.items()))}")
    path = write_results("console", {"environment": environment(), "agents": agents, "runs": runs, **result})
    print(f"  written to {path}")
    return 0

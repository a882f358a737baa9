"""What a listing costs a host's context: the bytes of one ``list_agents`` result with 1,000 agents.

The agents are created here (each with a one-line description, a tag, persona and human blocks); a fresh
stdio server then answers ``list_agents {}`` (its default page) to the SDK's client, and the bytes of the
result's text and structured content are printed. ``--server-src DIR`` runs the server from another
source tree (an older checkout) on the same database, to compare.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import IO

import anyio
from mcp import Client
from mcp.client.stdio import stdio_client

from bench.firstcall import server_params
from bench.loopback import REPO_ROOT
from mcp_letta import AgentHub, Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``listing`` subcommand's options."""
    parser.add_argument("--agents", type=int, default=1000, help="agents (default 1000)")
    parser.add_argument("--server-src", type=Path, help="run the server from this source tree (default: this one)")


async def create_agents(db_path: Path, n: int) -> None:
    """``n`` agents, created concurrently (their writes share transactions)."""
    async with AgentHub(Settings.from_env().with_overrides(db_path=db_path)) as hub:

        async def create(i: int) -> None:
            description = f"Specialist number {i}: answers questions about its area."
            await hub.create_agent(f"agent_{i:04d}", description=description, tags=["team"])

        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(create, i)


async def measure(folder: Path, args: argparse.Namespace, errlog: IO[str]) -> dict[str, int]:
    """Bytes of the default ``list_agents`` result from a fresh stdio server."""
    db_path = folder / "agents.db"
    await create_agents(db_path, args.agents)
    src = (args.server_src or REPO_ROOT).resolve()
    async with Client(stdio_client(server_params(db_path, "", src, None), errlog=errlog), mode="legacy") as c:
        result = await c.call_tool("list_agents", {})
    structured = result.structured_content or {}
    return {
        "agents_listed": len(structured.get("agents", [])),
        "more": int(structured.get("more", 0)),
        "text_bytes": sum(len(block.text.encode()) for block in result.content if hasattr(block, "text")),
        "structured_bytes": len(json.dumps(structured, separators=(",", ":")).encode()),
    }


def main(args: argparse.Namespace) -> int:
    """Create the agents, ask a fresh server, print the sizes."""
    with tempfile.TemporaryDirectory() as folder, open(Path(folder) / "server.log", "w") as errlog:
        found = anyio.run(measure, Path(folder), args, errlog)
    total = found["text_bytes"] + found["structured_bytes"]
    print(
        f"list_agents with {args.agents:,} agents ({(args.server_src or REPO_ROOT).resolve()}): "
        f"{found['agents_listed']} listed, more = {found['more']}; text {found['text_bytes']:,} B + structured "
        f"{found['structured_bytes']:,} B = {total:,} B"
    )
    return 0

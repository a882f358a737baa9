"""Start-up of the stdio server: spawn, ``initialize`` and ``tools/list``, against a bare ``MCPServer``.

Each sample is one fresh process, timed by the SDK's own client (handshake era, as real hosts
speak) from spawn to the ``tools/list`` result; shutdown is not counted. Runs alternate between our
server and ``bench/bare_server.py`` so that drift in the machine's load hits both alike.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import anyio
from mcp import Client, StdioServerParameters
from mcp.client.stdio import get_default_environment, stdio_client

from bench.common import log, remove_database

REPO_ROOT = Path(__file__).resolve().parent.parent
BARE_SERVER = [sys.executable, str(Path(__file__).resolve().parent / "bare_server.py")]
OUR_SERVER = [sys.executable, "-m", "mcp_letta"]
TIMEOUT_S = 60.0


def _env(db_path: Path) -> dict[str, str]:
    # The SDK gives the child only HOME, PATH, SHELL, TERM...: add what both servers need to run here.
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**get_default_environment(), "MCP_LETTA_DB": str(db_path), "PYTHONPATH": path}


async def time_start(command: list[str], env: dict[str, str], errlog: IO[str]) -> tuple[float, int]:
    """Seconds from spawning ``command`` to its ``tools/list`` result, and how many tools it listed."""
    params = StdioServerParameters(command=command[0], args=command[1:], env=env, cwd=REPO_ROOT)
    with anyio.fail_after(TIMEOUT_S):
        start = time.perf_counter()
        async with Client(stdio_client(params, errlog=errlog), mode="legacy") as client:
            tools = await client.list_tools()
            elapsed = time.perf_counter() - start
    return elapsed, len(tools.tools)


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups, which is what a reader needs to see."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _tail(errlog: IO[str], lines: int = 8) -> str:
    errlog.seek(0)
    return " | ".join(errlog.read().strip().splitlines()[-lines:])


async def _measure(repeats: int, our_command: list[str], db_path: Path) -> dict[str, Any]:
    env = _env(db_path)
    samples: dict[str, list[float]] = {"ours": [], "bare": []}
    tools: dict[str, int] = {}
    errors: dict[str, str] = {}
    commands = {"ours": our_command, "bare": BARE_SERVER}
    with tempfile.TemporaryFile("w+") as errlog:
        for run in range(repeats + 1):  # run 0 creates the database and warms the OS file cache
            for side in ("ours", "bare") if run % 2 else ("bare", "ours"):
                if side in errors:
                    continue
                errlog.seek(0)
                errlog.truncate()
                try:
                    elapsed, tools[side] = await time_start(commands[side], env, errlog)
                except Exception as exc:  # report, and go on measuring the other side
                    errors[side] = f"{' '.join(commands[side])} failed: {_leaf(exc)!r}; stderr: {_tail(errlog)!r}"
                    log(f"  start-up: {errors[side]}")
                    continue
                if run:
                    samples[side].append(elapsed)
    return {"samples_s": samples, "tools": tools, "errors": errors, "commands": commands}


def measure(repeats: int, our_command: list[str] | None = None) -> dict[str, Any]:
    """``repeats`` timed start-ups of each server (after one warm-up each) on a fresh database file."""
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as folder:
        db_path = Path(folder) / "agents.db"
        try:
            return anyio.run(_measure, repeats, our_command or OUR_SERVER, db_path)
        finally:
            remove_database(db_path)

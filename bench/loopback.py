"""The scripted loopback LLM in its own process, and the reference side that talks to it directly.

Benchmarks run ``python -m mcp_letta.testing`` as a subprocess so that it does not share our GIL,
and time the LLM alone with ``DirectLLM``: the same endpoint, the same request bodies, nothing of ours
in between. ``record_requests`` captures the very requests an ``AgentHub`` sends, for replaying them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, MutableSequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2

from mcp_letta import AgentHub
from mcp_letta.llm import ChatRequest

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL = "scripted-model"


@contextmanager
def scripted_llm_process(*, delay_ms: float = 0.0, reply: str | None = None) -> Iterator[str]:
    """Run ``python -m mcp_letta.testing`` (echoing, or answering ``reply``) and yield its base URL."""
    command = [sys.executable, "-m", "mcp_letta.testing", "--delay-ms", str(delay_ms)]
    command += ["--echo"] if reply is None else ["--reply", reply]
    proc = subprocess.Popen(command, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # "ScriptedLLM ready at http://127.0.0.1:PORT/v1"
        if "ready at " not in line:
            raise RuntimeError(f"the scripted LLM did not start (exit {proc.wait(10)}): {line.strip()!r}")
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep its pipe from filling up
        yield line.rsplit("ready at ", 1)[1].strip()
    finally:
        proc.terminate()
        proc.wait(10)


class DirectLLM:
    """Posts a chat body straight to the endpoint with httpx2 (the runtime's HTTP client) and parses the JSON
    answer: what any client of that endpoint must pay, with nothing of the runtime in between."""

    def __init__(self, base_url: str) -> None:
        self.url = httpx2.URL(f"{base_url}/chat/completions")
        self.http = httpx2.AsyncClient(
            timeout=60, limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
        )

    async def round_trip(self, body: dict[str, Any]) -> float:
        """Seconds for one request and its parsed answer."""
        start = time.perf_counter()
        response = await self.http.post(
            self.url, content=json.dumps(body).encode(), headers={"content-type": "application/json"}
        )
        if response.status_code != 200:
            raise RuntimeError(f"the LLM answered HTTP {response.status_code}: {response.text[:200]}")
        response.json()
        return time.perf_counter() - start

    async def batch(self, body: dict[str, Any], n: int) -> float:
        """Seconds for ``n`` requests sent at once, until the last answer is in."""
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(self.round_trip, body)
        return time.perf_counter() - start

    async def rate(self, body: dict[str, Any], callers: int, per_caller: int) -> float:
        """Requests/s with ``callers`` concurrent callers each sending ``per_caller`` requests in turn."""

        async def caller() -> None:
            for _ in range(per_caller):
                await self.round_trip(body)

        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(callers):
                tg.start_soon(caller)
        return callers * per_caller / (time.perf_counter() - start)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()


def record_requests(hub: AgentHub, keep: int | None = None) -> MutableSequence[ChatRequest]:
    """Every ``ChatRequest`` the hub's runtime sends from now on, in order (the very objects it sends); with
    ``keep``, only the newest ``keep`` (a benchmark holding every request would make our garbage collector
    walk them all, which no real process pays)."""
    client, _model = hub._llm.client_for(None)
    original = client.chat
    sent: MutableSequence[ChatRequest] = [] if keep is None else deque(maxlen=keep)

    async def chat(request: ChatRequest) -> Any:
        sent.append(request)
        return await original(request)

    client.chat = chat  # type: ignore[method-assign]
    return sent


def child_cpu_s(*, contains: str) -> float | None:
    """CPU seconds used so far by our child process whose command line (arguments joined by spaces, with a
    trailing one) has ``contains`` (Linux only)."""
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat[1]) == os.getpid() and contains in cmdline:
            return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return None

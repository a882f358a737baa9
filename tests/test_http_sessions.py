"""HTTP sessions are bounded: past MCP_LETTA_HTTP_MAX_SESSIONS a new session gets a clear 503, abandoned ones
end after MCP_LETTA_HTTP_SESSION_IDLE_S, and memory returns to its baseline once they have.
"""

from __future__ import annotations

import gc
import json
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx2
import pytest
from mcp.server.streamable_http import StreamableHTTPServerTransport

from mcp_letta import AgentHub, Invalid, Settings
from mcp_letta.server.app import build_server
from mcp_letta.server.http import HttpOptions, http_app, options_from, running_app

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::UserWarning")]

IDLE_S = 2.0
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}  # fmt: skip


@asynccontextmanager
async def serving(hub: AgentHub, **options: object) -> AsyncIterator[str]:
    app = http_app(build_server(hub), HttpOptions(port=0, **options))  # type: ignore[arg-type]
    async with running_app(app) as port:
        yield f"http://127.0.0.1:{port}/mcp"


async def open_session(http: httpx2.AsyncClient, url: str) -> httpx2.Response:
    return await http.post(url, content=json.dumps(INITIALIZE), headers=HEADERS)


def live_sessions() -> int:
    gc.collect()
    return sum(isinstance(o, StreamableHTTPServerTransport) and not o.is_terminated for o in gc.get_objects())


def test_session_settings_are_read_from_the_environment() -> None:
    settings = Settings.from_env({"MCP_LETTA_HTTP_MAX_SESSIONS": "7", "MCP_LETTA_HTTP_SESSION_IDLE_S": "30"})
    options = options_from(settings, "127.0.0.1", 0, [])
    assert (options.max_sessions, options.session_idle_s) == (7, 30.0)
    defaults = options_from(Settings.from_env({}), "127.0.0.1", 0, [])
    assert (defaults.max_sessions, defaults.session_idle_s) == (100, 600.0)
    with pytest.raises(Invalid, match="MCP_LETTA_HTTP_MAX_SESSIONS"):
        Settings.from_env({"MCP_LETTA_HTTP_MAX_SESSIONS": "0"})
    with pytest.raises(Invalid, match="MCP_LETTA_HTTP_SESSION_IDLE_S"):
        HttpOptions(session_idle_s=0)


async def test_a_session_past_the_limit_gets_a_clear_503_and_open_ones_keep_working(hub: AgentHub) -> None:
    async with serving(hub, max_sessions=3) as url, httpx2.AsyncClient(timeout=30) as http:
        opened = [await open_session(http, url) for _ in range(3)]
        assert [r.status_code for r in opened] == [200, 200, 200]
        refused = await open_session(http, url)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "60"
        message = refused.json()["error"]["message"]
        assert message == (
            "too many open MCP sessions (3, the MCP_LETTA_HTTP_MAX_SESSIONS limit): end unused sessions (HTTP "
            "DELETE), wait for idle ones to expire (after 600 s), or raise the limit"
        )
        session = opened[0].headers["mcp-session-id"]
        listed = await http.post(
            url,
            content=json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
            headers={**HEADERS, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25"},
        )
        assert listed.status_code == 200 and "write_block" in listed.text
        ended = await http.delete(url, headers={"mcp-session-id": session, "mcp-protocol-version": "2025-11-25"})
        assert ended.status_code == 200
        assert (await open_session(http, url)).status_code == 200  # room again


async def abandon(url: str, sessions: int) -> list[int]:
    """Open ``sessions`` sessions at once and walk away from them; the status each opening got."""
    statuses: list[int] = []
    # A fresh client per wave: a kept-alive connection the server closed while idle would fail the next wave.
    async with httpx2.AsyncClient(timeout=60, limits=httpx2.Limits(max_connections=50)) as http:

        async def one() -> None:
            statuses.append((await open_session(http, url)).status_code)

        async with anyio.create_task_group() as tg:
            for _ in range(sessions):
                tg.start_soon(one)
    return statuses


async def idled_out() -> None:
    await anyio.sleep(IDLE_S)
    for _ in range(120):  # a safety net of a minute
        if not live_sessions():
            return
        await anyio.sleep(0.5)
    raise AssertionError(f"{live_sessions()} abandoned sessions were never ended")


async def test_abandoned_sessions_end_and_memory_returns_to_its_baseline(hub: AgentHub) -> None:
    abandoned = 200
    async with serving(hub, max_sessions=abandoned + 10, session_idle_s=IDLE_S) as url:
        assert await abandon(url, 5) == [200] * 5  # warm up: first-use allocations are not a leak
        await idled_out()
        tracemalloc.start()
        try:
            baseline = tracemalloc.get_traced_memory()[0]
            peaks, residues = [], []
            for _ in range(2):  # a leak grows with every wave; caches and free lists do not
                assert await abandon(url, abandoned) == [200] * abandoned
                peaks.append((live_sessions(), tracemalloc.get_traced_memory()[0] - baseline))
                await idled_out()
                gc.collect()
                residues.append(tracemalloc.get_traced_memory()[0] - baseline)
        finally:
            tracemalloc.stop()
        assert await abandon(url, 1) == [200]  # still serving
    (alive, held), _ = peaks
    print(f"\n{alive} sessions open at once held {held / 1e6:.1f} MB; after {abandoned} idled out: "
          f"{residues[0] / 1e6:.2f} MB above baseline, after {2 * abandoned}: {residues[1] / 1e6:.2f} MB")  # fmt: skip
    assert alive >= 20  # enough were open at once to weigh something
    assert residues[0] < held / 2
    per_session = held / alive
    assert residues[1] - residues[0] < per_session * abandoned / 20, (peaks, residues)

"""MCP over streamable HTTP: a real uvicorn server on a loopback port, real SDK clients in both protocol eras."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp.types as types
import pytest
from conftest import bump_schema
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from mcp_letta import AgentHub, Invalid, StorageUnavailable
from mcp_letta.server.app import LettaServer, build_server
from mcp_letta.server.http import HttpOptions, http_app, is_loopback, running_app, transport_security

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::UserWarning")]

TOKEN = "test-token-8c1d"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SCRIPT = Path(sys.executable).parent / "mcp-letta"
INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}  # fmt: skip
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


class Served:
    """A running HTTP server: the LettaServer behind it and its URLs."""

    def __init__(self, server: LettaServer | None, port: int) -> None:
        self._server = server
        self.base = f"http://127.0.0.1:{port}"
        self.url = f"{self.base}/mcp"

    @property
    def server(self) -> LettaServer:
        assert self._server is not None, "this server runs in another process"
        return self._server

    @asynccontextmanager
    async def client(self, mode: str, *, token: str | None = TOKEN, **kwargs: Any) -> AsyncIterator[Client]:
        """An SDK client over HTTP; ``mode`` is 'legacy' (2025-11-25 handshake) or 'modern' (2026-07-28)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            transport = streamable_http_client(self.url, http_client=http)
            async with Client(transport, mode="legacy" if mode == "legacy" else "auto", **kwargs) as c:
                yield c


@asynccontextmanager
async def serve(hub: AgentHub, **options: Any) -> AsyncIterator[Served]:
    server = build_server(hub)
    async with running_app(http_app(server, HttpOptions(port=0, **options))) as port:
        yield Served(server, port)


@pytest.fixture
async def served(hub: AgentHub) -> AsyncIterator[Served]:
    async with serve(hub, token=TOKEN) as running:
        yield running


@pytest.fixture(params=["legacy", "modern"])
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


async def test_health_answers_without_a_token(served: Served) -> None:
    async with httpx2.AsyncClient() as http:
        response = await http.get(f"{served.base}/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["db"] == "ok" and body["agents"] == 0
    from mcp_letta import __version__

    assert body["version"] == __version__


async def test_health_turns_503_once_a_newer_mcp_letta_migrates_the_database(
    served: Served, hub: AgentHub, db_path: Path
) -> None:
    # A rolling upgrade: the balancer's health check drains a replica a newer one has made obsolete.
    bump_schema(db_path, +1)
    with anyio.fail_after(60):
        while True:
            try:
                await hub.create_block(f"probe_{uuid.uuid4().hex[:8]}", "")
            except StorageUnavailable:
                break
            await anyio.sleep(0.1)
    async with httpx2.AsyncClient() as http:
        response = await http.get(f"{served.base}/health")
    assert response.status_code == 503
    assert response.json()["status"] == "degraded" and response.json()["db"] == "error: newer_schema"


async def test_mcp_without_the_right_token_is_401(served: Served) -> None:
    async with httpx2.AsyncClient() as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            response = await http.post(served.url, json=INITIALIZE, headers={**MCP_HEADERS, **headers})
            assert response.status_code == 401, headers
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert TOKEN not in response.text
        accepted = await http.post(served.url, json=INITIALIZE, headers={**MCP_HEADERS, **AUTH})
    assert accepted.status_code == 200


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (possibly nested) exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


async def test_sdk_client_without_token_cannot_connect(served: Served) -> None:
    with pytest.raises(BaseException) as caught:  # the SDK raises its MCPError inside task-group groups
        async with served.client("legacy", token=None):
            pass
    assert any(isinstance(leaf, MCPError) for leaf in leaves(caught.value)), caught.value


async def test_foreign_host_header_is_421(served: Served) -> None:
    async with httpx2.AsyncClient() as http:
        response = await http.post(served.url, json=INITIALIZE, headers={**MCP_HEADERS, **AUTH, "Host": "evil.example"})
        assert response.status_code == 421
        origin = await http.post(
            served.url, json=INITIALIZE, headers={**MCP_HEADERS, **AUTH, "Origin": "http://evil.example"}
        )
        assert origin.status_code == 403


async def test_health_refuses_a_foreign_host_header_as_mcp_does(served: Served) -> None:
    async with httpx2.AsyncClient() as http:
        foreign = await http.get(f"{served.base}/health", headers={"Host": "evil.example"})
        origin = await http.get(f"{served.base}/health", headers={"Origin": "http://evil.example"})
        local = await http.get(f"{served.base}/health", headers={"Host": "localhost"})
    assert foreign.status_code == 421 and "agents" not in foreign.text
    assert origin.status_code == 403
    assert local.status_code == 200 and local.json()["status"] == "ok"


async def test_oversized_body_is_413(hub: AgentHub) -> None:
    async with serve(hub, token=TOKEN, max_body_bytes=64 * 1024) as running, httpx2.AsyncClient() as http:
        big = {**INITIALIZE, "params": {**INITIALIZE["params"], "padding": "x" * (65 * 1024)}}
        response = await http.post(running.url, json=big, headers={**MCP_HEADERS, **AUTH})
        assert response.status_code == 413
        assert (await http.post(running.url, json=INITIALIZE, headers={**MCP_HEADERS, **AUTH})).status_code == 200


async def test_default_body_limit_refuses_ten_megabytes(served: Served) -> None:
    async with httpx2.AsyncClient(timeout=60) as http:
        body = b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"x":"' + b"y" * (10 * 1024 * 1024) + b'"}}'
        response = await http.post(served.url, content=body, headers={**MCP_HEADERS, **AUTH})
    assert response.status_code == 413


async def test_tools_and_resources_work_over_http_in_both_eras(served: Served, mode: str) -> None:
    async with served.client(mode) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert {"list_agents", "create_agent", "write_block"} <= names
        created = await c.call_tool("create_agent", {"name": "web", "persona": "over http"})
        assert not created.is_error, created.content
        memory = await c.read_resource("letta://agents/web/memory")
        assert "over http" in memory.contents[0].text
        bad = await c.call_tool("get_agent", {"agent": "nobody"})
        assert bad.is_error and "not found" in bad.content[0].text


async def test_legacy_http_client_hears_list_changed_and_block_updates(served: Served) -> None:
    await served.server.hub.create_block("board", "start")
    tools_changed, block_updated = anyio.Event(), anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            tools_changed.set()
        if isinstance(message, types.ResourceUpdatedNotification) and message.params.uri == "letta://blocks/board":
            block_updated.set()

    async with served.client("legacy", message_handler=on_message) as c:
        assert c.server_capabilities.tools.list_changed is True
        assert c.server_capabilities.resources.subscribe is True
        await c.subscribe_resource("letta://blocks/board")
        await served.server.notifier.tools_changed()
        await served.server.hub.append_to_block("board", "written through the hub")
        with anyio.fail_after(10):
            await tools_changed.wait()
            await block_updated.wait()


async def test_modern_http_client_hears_list_changed_and_block_updates(served: Served) -> None:
    block = await served.server.hub.create_block("board", "start")
    uri = f"letta://blocks/{block.id}"
    async with served.client("modern") as c:
        async with c.listen(tools_list_changed=True, resource_subscriptions=[uri]) as events:
            await served.server.notifier.tools_changed()
            await served.server.hub.append_to_block("board", "written through the hub")
            seen: list[Any] = []
            with anyio.fail_after(10):
                async for event in events:
                    seen.append(event)
                    kinds = {type(e).__name__ for e in seen}
                    if {"ToolsListChanged", "ResourceUpdated"} <= kinds:
                        break
    assert uri in {e.uri for e in seen if type(e).__name__ == "ResourceUpdated"}


async def test_completion_offers_agent_names_and_block_labels(served: Served) -> None:
    await served.server.hub.create_agent("researcher")
    await served.server.hub.create_agent("reviewer")
    await served.server.hub.create_block("roadmap", "")
    async with served.client("legacy") as c:
        agents = await c.complete(
            types.ResourceTemplateReference(type="ref/resource", uri="letta://agents/{agent}/memory"),
            {"name": "agent", "value": "re"},
        )
        assert agents.completion.values == ["researcher", "reviewer"]
        blocks = await c.complete(
            types.ResourceTemplateReference(type="ref/resource", uri="letta://blocks/{block}"),
            {"name": "block", "value": "road"},
        )
        assert blocks.completion.values == ["roadmap"]
        unknown = await c.complete(types.PromptReference(type="ref/prompt", name="nope"), {"name": "x", "value": ""})
        assert unknown.completion.values == []


def test_non_loopback_bind_needs_a_token() -> None:
    for host in ("0.0.0.0", "192.168.1.20", "::", "example.com"):
        assert not is_loopback(host)
        with pytest.raises(Invalid, match="MCP_LETTA_TOKEN"):
            HttpOptions(host=host)
        HttpOptions(host=host, token="t")  # with a token it is allowed
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"):
        assert is_loopback(host)
        HttpOptions(host=host)


def test_rebinding_protection_is_on_for_every_bind() -> None:
    wide = transport_security("10.0.0.5", ["agents.example.com"])
    assert wide.enable_dns_rebinding_protection
    assert {"10.0.0.5:*", "agents.example.com", "agents.example.com:*", "localhost:*"} <= set(wide.allowed_hosts)
    assert "evil.example" not in wide.allowed_hosts
    assert transport_security("127.0.0.1").enable_dns_rebinding_protection


def cli_env(db_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_LETTA_", "OPENAI_"))}
    return {**env, "MCP_LETTA_DB": str(db_path), **extra}


def test_cli_refuses_a_public_bind_without_a_token(db_path: Path) -> None:
    done = subprocess.run(
        [str(SCRIPT), "serve", "--transport", "http", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, env=cli_env(db_path), timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "MCP_LETTA_TOKEN" in done.stderr and "secrets.token_urlsafe" in done.stderr
    assert done.stdout == ""


def test_cli_refuses_a_replica_url_without_a_token_or_that_is_no_address(tmp_path: Path) -> None:
    db_path = tmp_path / "agents.db"
    serve = [str(SCRIPT), "serve", "--transport", "http", "--host", "127.0.0.1", "--port", "0"]
    cases = [
        ({"MCP_LETTA_REPLICA_URL": "http://10.0.0.11:8000"}, "MCP_LETTA_REPLICA_URL needs MCP_LETTA_TOKEN: the"),
        *[({"MCP_LETTA_REPLICA_URL": url, "MCP_LETTA_TOKEN": "t" * 20},
           f"MCP_LETTA_REPLICA_URL={url!r} is not a replica's address")
          for url in ("10.0.0.11:8000", "http://10.0.0.11", "http://10.0.0.11:8000/mcp", "ftp://h:1", "http://h:99999")],
    ]  # fmt: skip
    for env, words in cases:
        done = subprocess.run(serve, capture_output=True, text=True, env=cli_env(db_path, **env), timeout=60)
        assert done.returncode == 2, done.stderr
        assert words in done.stderr and ("e.g. http://10.0.0.11:8000" in done.stderr or "MCP_LETTA_TOKEN" not in env)
        assert done.stdout == ""
    assert not db_path.exists()  # refused before anything was opened


async def test_cli_serves_http_and_logs_only_to_stderr(db_path: Path) -> None:
    env = cli_env(db_path, MCP_LETTA_TOKEN=TOKEN)
    command = [str(SCRIPT), "serve", "--transport", "http", "--host", "127.0.0.1", "--port", "0"]
    async with await anyio.open_process(command, env=env) as proc:
        assert proc.stderr is not None and proc.stdout is not None
        stderr = b""
        with anyio.fail_after(30):
            async for chunk in proc.stderr:
                stderr += chunk
                if b"Uvicorn running on" in stderr:
                    break
        port = int(stderr.decode().split("Uvicorn running on http://127.0.0.1:")[1].split()[0])
        async with httpx2.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/health")).json()["db"] == "ok"
        async with Served(None, port).client("legacy") as c:
            assert not (await c.call_tool("create_agent", {"name": "from_cli"})).is_error
        proc.terminate()
        stdout = b""
        async for chunk in proc.stdout:
            stdout += chunk
        async for chunk in proc.stderr:
            stderr += chunk
        await proc.wait()
    assert stdout == b"", "the HTTP server printed to stdout"
    assert b"Shutting down" in stderr
    assert TOKEN.encode() not in stderr

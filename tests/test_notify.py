"""Notifier: change notifications reach handshake-era and 2026-07-28 clients, from outside any request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import mcp.types as types
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp import Client, MCPError
from mcp.client.subscriptions import ResourceUpdated, ToolsListChanged
from mcp.server.mcpserver import MCPServer
from mcp.shared.memory import create_client_server_memory_streams
from mcp.shared.message import SessionMessage

from mcp_letta.server.notify import Notifier

pytestmark = [
    pytest.mark.anyio,
    # resources/subscribe and logging/setLevel are deprecated at 2026-07-28, but handshake hosts use them.
    pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning"),
]

BLOCK = "letta://blocks/persona"
OTHER_BLOCK = "letta://blocks/human"
WAIT = 5  # seconds; a safety net against hangs, never an assertion of speed


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Toy:
    server: MCPServer
    notifier: Notifier


@pytest.fixture
def toy() -> Toy:
    async def known_blocks_only(uri: str) -> None:
        if not uri.startswith("letta://blocks/"):
            raise MCPError(types.INVALID_PARAMS, f"unknown resource {uri!r}: expected letta://blocks/<label>")

    notifier = Notifier(on_subscribe=known_blocks_only)
    server = notifier.create_server("toy")

    @server.tool()
    async def echo(text: str) -> str:
        """Echo the text back."""
        return text

    @server.resource("letta://blocks/{block}", mime_type="text/plain")
    async def block(block: str) -> str:
        """A memory block."""
        return f"value of {block}"

    return Toy(server, notifier)


class Inbox:
    """Collects server notifications a legacy client receives, in arrival order."""

    def __init__(self) -> None:
        self._send: MemoryObjectSendStream[types.ServerNotification]
        self._recv: MemoryObjectReceiveStream[types.ServerNotification]
        self._send, self._recv = anyio.create_memory_object_stream[types.ServerNotification](100)

    async def handler(self, message: object) -> None:
        if isinstance(message, types.ToolListChangedNotification | types.ResourceUpdatedNotification):
            await self._send.send(message)

    async def next(self) -> types.ServerNotification:
        with anyio.fail_after(WAIT):
            return await self._recv.receive()


async def add_tool_in_background(toy: Toy, name: str) -> None:
    """Change the tool list and notify from a task that is not serving any request."""

    async def added() -> str:
        """A tool added at runtime."""
        return "added"

    async def change() -> None:
        toy.server.add_tool(added, name=name)
        await toy.notifier.tools_changed()

    async with anyio.create_task_group() as tg:
        tg.start_soon(change)


@pytest.fixture
async def legacy_inbox(toy: Toy) -> AsyncIterator[tuple[Client, Inbox]]:
    inbox = Inbox()
    async with Client(toy.server, mode="legacy", message_handler=inbox.handler) as client:
        yield client, inbox


async def test_legacy_initialize_advertises_list_changed_and_subscribe(legacy_inbox: tuple[Client, Inbox]) -> None:
    client, _ = legacy_inbox
    caps = client.server_capabilities
    assert client.protocol_version == "2025-11-25"
    assert caps.tools is not None and caps.tools.list_changed is True
    assert caps.resources is not None and caps.resources.subscribe is True and caps.resources.list_changed
    assert caps.prompts is not None and caps.prompts.list_changed is True


async def test_modern_discover_advertises_list_changed_and_subscribe(toy: Toy) -> None:
    async with Client(toy.server) as client:
        caps = client.server_capabilities
        assert client.protocol_version == "2026-07-28"
        assert caps.tools is not None and caps.tools.list_changed is True
        assert caps.resources is not None and caps.resources.subscribe is True


async def test_legacy_client_hears_tool_added_outside_a_request(toy: Toy, legacy_inbox: tuple[Client, Inbox]) -> None:
    client, inbox = legacy_inbox
    await client.list_tools()  # the connection is known once it has made a request
    await add_tool_in_background(toy, "agent_bg")
    assert isinstance(await inbox.next(), types.ToolListChangedNotification)
    assert "agent_bg" in {tool.name for tool in (await client.list_tools()).tools}


async def test_modern_listener_hears_tools_changed(toy: Toy) -> None:
    async with Client(toy.server) as client, client.listen(tools_list_changed=True) as sub:
        await add_tool_in_background(toy, "agent_modern")
        with anyio.fail_after(WAIT):
            event = await sub.__anext__()
        assert isinstance(event, ToolsListChanged)
        assert "agent_modern" in {tool.name for tool in (await client.list_tools()).tools}


async def test_legacy_resource_updates_follow_subscriptions(toy: Toy, legacy_inbox: tuple[Client, Inbox]) -> None:
    client, inbox = legacy_inbox
    await client.subscribe_resource(BLOCK)

    # A single ordered stream: if the unsubscribed uri had been sent, it would arrive first.
    await toy.notifier.resource_updated(OTHER_BLOCK)
    await toy.notifier.resource_updated(BLOCK)
    first = await inbox.next()
    assert isinstance(first, types.ResourceUpdatedNotification) and first.params.uri == BLOCK

    await client.unsubscribe_resource(BLOCK)
    await toy.notifier.resource_updated(BLOCK)
    await toy.notifier.tools_changed()  # sentinel
    assert isinstance(await inbox.next(), types.ToolListChangedNotification)


async def test_subscribe_hook_refuses_unknown_uri(legacy_inbox: tuple[Client, Inbox]) -> None:
    client, _ = legacy_inbox
    with pytest.raises(MCPError) as refused:
        await client.subscribe_resource("file:///etc/passwd")
    assert refused.value.error.code == types.INVALID_PARAMS
    assert "unknown resource" in refused.value.error.message


async def test_modern_listener_hears_resource_updated(toy: Toy) -> None:
    async with Client(toy.server) as client, client.listen(resource_subscriptions=[BLOCK]) as sub:
        await toy.notifier.resource_updated(OTHER_BLOCK)
        await toy.notifier.resource_updated(BLOCK)
        with anyio.fail_after(WAIT):
            event = await sub.__anext__()
        assert event == ResourceUpdated(uri=BLOCK)


async def test_two_legacy_clients_both_hear_tools_changed(toy: Toy) -> None:
    first, second = Inbox(), Inbox()
    async with (
        Client(toy.server, mode="legacy", message_handler=first.handler) as a,
        Client(toy.server, mode="legacy", message_handler=second.handler) as b,
    ):
        await a.list_tools()
        await b.list_tools()
        await add_tool_in_background(toy, "agent_both")
        assert isinstance(await first.next(), types.ToolListChangedNotification)
        assert isinstance(await second.next(), types.ToolListChangedNotification)


async def test_disconnected_client_does_not_break_broadcast(toy: Toy) -> None:
    inbox = Inbox()
    async with Client(toy.server, mode="legacy") as gone:
        await gone.subscribe_resource(BLOCK)
    async with Client(toy.server, mode="legacy", message_handler=inbox.handler) as live:
        await live.subscribe_resource(BLOCK)
        await toy.notifier.tools_changed()
        await toy.notifier.resource_updated(BLOCK)
        assert isinstance(await inbox.next(), types.ToolListChangedNotification)
        assert isinstance(await inbox.next(), types.ResourceUpdatedNotification)


@asynccontextmanager
async def client_that_stops_reading(server: MCPServer) -> AsyncIterator[None]:
    """A handshake-era client that completes initialize, then never reads again."""

    def request(request_id: int, method: str, params: dict[str, Any] | None = None) -> SessionMessage:
        return SessionMessage(types.JSONRPCRequest(jsonrpc="2.0", id=request_id, method=method, params=params))

    hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "stuck", "version": "0"}}
    async with create_client_server_memory_streams() as ((read, write), (server_read, server_write)):
        async with anyio.create_task_group() as tg:
            # Private: serving a raw stream pair needs the lowlevel server; `Client` always reads everything.
            lowlevel = server._lowlevel_server
            tg.start_soon(lowlevel.run, server_read, server_write, lowlevel.create_initialization_options())
            with anyio.fail_after(WAIT):
                await write.send(request(1, "initialize", hello))
                await read.receive()
                initialized = types.JSONRPCNotification(jsonrpc="2.0", method="notifications/initialized")
                await write.send(SessionMessage(initialized))
                # The ping's answer proves `initialized` was processed, so broadcasts do target this client.
                await write.send(request(2, "ping"))
                await read.receive()
            yield
            tg.cancel_scope.cancel()


async def test_client_that_stopped_reading_does_not_starve_others() -> None:
    notifier = Notifier(send_timeout=0.2)
    server = notifier.create_server("toy")
    healthy = Inbox()
    async with (
        client_that_stops_reading(server),
        Client(server, mode="legacy", message_handler=healthy.handler) as client,
    ):
        await client.list_tools()
        with anyio.fail_after(WAIT):  # without the send timeout the stuck client would hang this forever
            for _ in range(3):
                await notifier.tools_changed()
        for _ in range(3):
            assert isinstance(await healthy.next(), types.ToolListChangedNotification)


async def test_set_logging_level_is_accepted(legacy_inbox: tuple[Client, Inbox]) -> None:
    client, _ = legacy_inbox
    assert client.server_capabilities.logging is not None
    assert isinstance(await client.set_logging_level("warning"), types.EmptyResult)


def test_create_server_owns_the_bus() -> None:
    with pytest.raises(TypeError, match="subscriptions"):
        Notifier().create_server("toy", subscriptions=False)

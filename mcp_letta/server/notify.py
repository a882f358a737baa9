"""Change notifications to every MCP client, in both protocol eras.

Owns list_changed / resource-updated delivery (2026-07-28 listen streams via the SubscriptionBus, and
handshake-era connections directly), resource subscriptions, logging/setLevel and the capability flags.

Wiring: the bus must be shared with the server, so create the `Notifier` first and let it build the server:

    notifier = Notifier(on_subscribe=check_uri)        # optional URI validation hook
    mcp = notifier.create_server("mcp-letta", lifespan=...)
    ...
    await notifier.tools_changed()                      # from a tool, a background task, anywhere

`notifier.install(mcp)` is the same wiring for a server you built yourself with `subscriptions=notifier.bus`.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import mcp.types as types
from mcp.server.connection import Connection
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    SubscriptionBus,
    ToolsListChanged,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

__all__ = ["Notifier"]

logger = logging.getLogger(__name__)

SubscribeHook = Callable[[str], Awaitable[None]]
Send = Callable[[Connection], Awaitable[None]]

# Keys in `Connection.state`: per-connection data dies with the connection, no bookkeeping needed.
_SUBSCRIPTIONS_KEY = "mcp_letta.notify.subscriptions"
_LOG_LEVEL_KEY = "mcp_letta.notify.log_level"
_TEARDOWN_KEY = "mcp_letta.notify.teardown_registered"

# Capability flags set at `initialize`. MCPServer derives them as false for handshake clients because the
# transports call create_initialization_options() without NotificationOptions (SDK notes §1.2 pitfall 1).
_PUSH_FLAGS: dict[str, tuple[str, ...]] = {
    "tools": ("listChanged",),
    "resources": ("listChanged", "subscribe"),
    "prompts": ("listChanged",),
}


def connection_of(ctx: ServerRequestContext[Any, Any]) -> Connection:
    """The long-lived connection behind a request context."""
    # Private: `ctx.session` is a per-request proxy and dies with its request, and 2.3.0 has no public
    # accessor for the connection it wraps (SDK notes §1.2 pitfall 2).
    return ctx.session._connection


class Notifier:
    """Delivers change notifications for one MCPServer to every connected client, in both eras.

    Modern (2026-07-28) clients get events through `subscriptions/listen` streams fed by `bus`;
    handshake-era clients are remembered per connection and sent the notification directly.
    """

    def __init__(
        self,
        bus: SubscriptionBus | None = None,
        *,
        on_subscribe: SubscribeHook | None = None,
        send_timeout: float = 1.0,
    ) -> None:
        """Create a notifier.

        `bus` defaults to a fresh in-process bus; pass your own to fan out across replicas.
        `on_subscribe(uri)` runs before a `resources/subscribe` is recorded; raise
        `MCPError(INVALID_PARAMS, ...)` in it to refuse an unknown URI.
        `send_timeout` bounds how long one handshake-era client may hold up a broadcast; a client that
        exceeds it stops getting direct notifications until its next request.
        """
        self.bus: SubscriptionBus = bus if bus is not None else InMemorySubscriptionBus()
        self.on_subscribe = on_subscribe
        self.send_timeout = send_timeout
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._installed = False

    def create_server(self, *args: Any, **kwargs: Any) -> MCPServer:
        """Build an `MCPServer` that publishes on this notifier's bus, with the notifier installed.

        Takes the same arguments as `MCPServer`, except `subscriptions`, which the notifier supplies.
        """
        if "subscriptions" in kwargs:
            raise TypeError("create_server() supplies subscriptions=notifier.bus itself; do not pass it")
        mcp: MCPServer = MCPServer(*args, subscriptions=self.bus, **kwargs)
        self.install(mcp)
        return mcp

    def install(self, mcp: MCPServer) -> None:
        """Hook this notifier into `mcp`, which must have been built with `subscriptions=self.bus`.

        Adds a middleware (remembers handshake-era connections, advertises listChanged/subscribe
        at `initialize`) and handlers for resources/subscribe, resources/unsubscribe and logging/setLevel.
        """
        if self._installed:
            raise RuntimeError("this Notifier is already installed on a server; create one per MCPServer")
        self._installed = True
        mcp.middleware.append(self._middleware)
        # Private but sanctioned: the migration guide names `_lowlevel_server` as the way to add
        # lowlevel handlers, and MCPServer registers none of these three (SDK notes §1.7).
        add_handler = mcp._lowlevel_server.add_request_handler
        add_handler("resources/subscribe", types.SubscribeRequestParams, self._on_subscribe)
        add_handler("resources/unsubscribe", types.UnsubscribeRequestParams, self._on_unsubscribe)
        add_handler("logging/setLevel", types.SetLevelRequestParams, self._on_set_level)

    async def tools_changed(self) -> None:
        """Tell every client that the tool list changed."""
        await self._publish(ToolsListChanged(), Connection.send_tool_list_changed)

    async def prompts_changed(self) -> None:
        """Tell every client that the prompt list changed."""
        await self._publish(PromptsListChanged(), Connection.send_prompt_list_changed)

    async def resources_list_changed(self) -> None:
        """Tell every client that the resource list changed."""
        await self._publish(ResourcesListChanged(), Connection.send_resource_list_changed)

    async def resource_updated(self, uri: str) -> None:
        """Tell the clients subscribed to `uri` that it changed.

        Modern listeners are filtered by the listen handler (their `resource_subscriptions`);
        handshake-era connections by what they sent in `resources/subscribe`.
        """
        await self.bus.publish(ResourceUpdated(uri=uri))
        targets = [c for c in self._live_connections() if uri in c.state.get(_SUBSCRIPTIONS_KEY, ())]
        await self._deliver(targets, lambda conn: conn.send_resource_updated(uri))

    async def _publish(self, event: ServerEvent, send: Send) -> None:
        await self.bus.publish(event)
        await self._deliver(self._live_connections(), send)

    def _live_connections(self) -> list[Connection]:
        # A snapshot: the WeakSet may shrink (GC, teardown) or grow (middleware) while we await sends.
        # Skipping not-yet-initialized clients keeps to the handshake order; their next list sees the change.
        return [c for c in list(self._connections) if c.initialized.is_set()]

    async def _deliver(self, targets: list[Connection], send: Send) -> None:
        if len(targets) == 1:  # the stdio case: skip the task group
            await self._send_one(targets[0], send)
        elif targets:
            # Concurrent so that one slow client costs the broadcast at most `send_timeout`, not N of them.
            async with anyio.create_task_group() as tg:
                for conn in targets:
                    tg.start_soon(self._send_one, conn, send)

    async def _send_one(self, conn: Connection, send: Send) -> None:
        # Cancelling a stuck send is safe: every SDK transport takes outbound messages through a memory
        # object stream, and a cancelled send enqueues nothing, so no half message reaches the wire.
        with anyio.move_on_after(self.send_timeout) as scope:
            try:
                await send(conn)
            except Exception:
                # Connection.notify already swallows closed streams; anything else means the connection
                # is unusable, and one bad client must not fail the broadcast or the caller.
                logger.debug("dropping connection after a failed notification", exc_info=True)
                self._connections.discard(conn)
        if scope.cancelled_caught:
            # A client that stopped reading would otherwise cost every later broadcast `send_timeout`.
            # Dropping is not final: its next request re-admits it (see `_remember`), like a re-listen.
            logger.debug("client took no notification within %.1fs; dropped until it calls again", self.send_timeout)
            self._connections.discard(conn)

    def _remember(self, conn: Connection) -> None:
        # Only handshake-era connections with a channel can take a direct notification: modern ones get
        # events through listen streams (and are per-request objects), stateless HTTP ones have no channel.
        if (
            conn in self._connections
            or not conn.has_standalone_channel
            or conn.protocol_version in MODERN_PROTOCOL_VERSIONS
        ):
            return
        self._connections.add(conn)
        if not conn.state.get(_TEARDOWN_KEY):
            # Deterministic removal at teardown; the WeakSet alone would wait for the garbage collector.
            # Registered once even if a stalled connection is re-admitted.
            conn.state[_TEARDOWN_KEY] = True
            conn.exit_stack.callback(self._connections.discard, conn)

    async def _middleware(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        conn = connection_of(ctx)
        self._remember(conn)
        result = await call_next(ctx)
        # The initialize result reaches middleware already serialized as a wire (camelCase) dict.
        if ctx.method == "initialize" and isinstance(result, dict):
            # Promise pushes only where they can be kept: stateless HTTP gives a handshake client no
            # channel for them, so there the flags (subscribe included) are honestly false.
            can_push = conn.has_standalone_channel
            capabilities = result.setdefault("capabilities", {})
            for name, flags in _PUSH_FLAGS.items():
                section = capabilities.get(name)
                if not isinstance(section, dict):
                    section = capabilities[name] = {}
                section.update(dict.fromkeys(flags, can_push))
        return result

    async def _on_subscribe(
        self, ctx: ServerRequestContext[Any, Any], params: types.SubscribeRequestParams
    ) -> types.EmptyResult:
        if self.on_subscribe is not None:
            await self.on_subscribe(params.uri)
        conn = connection_of(ctx)
        conn.state.setdefault(_SUBSCRIPTIONS_KEY, set()).add(params.uri)
        return types.EmptyResult()

    async def _on_unsubscribe(
        self, ctx: ServerRequestContext[Any, Any], params: types.UnsubscribeRequestParams
    ) -> types.EmptyResult:
        connection_of(ctx).state.get(_SUBSCRIPTIONS_KEY, set()).discard(params.uri)
        return types.EmptyResult()

    async def _on_set_level(
        self, ctx: ServerRequestContext[Any, Any], params: types.SetLevelRequestParams
    ) -> types.EmptyResult:
        # Stored for whoever logs to this client later; nothing here filters on it yet.
        connection_of(ctx).state[_LOG_LEVEL_KEY] = params.level
        return types.EmptyResult()

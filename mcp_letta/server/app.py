"""The MCP server: builds the ``MCPServer`` over an ``AgentHub`` and runs it over stdio.

``build_server(hub)`` wires tools (built-in, messaging, one per agent), resources and notifications;
``server.running()`` owns the background work: keeping agent tools in sync with the registry and turning
store changes, from this process or another, into notifications.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.request_state import RequestStateSecurity

from mcp_letta import __version__
from mcp_letta.config import Settings
from mcp_letta.hub import AgentHub, Change
from mcp_letta.server import arguments
from mcp_letta.server.apps import register_apps
from mcp_letta.server.collaboration import register_multiagent_tools
from mcp_letta.server.compact import compact_tool_list
from mcp_letta.server.forwarding import NamedStateCodec
from mcp_letta.server.messaging import ask, register_messaging_tools
from mcp_letta.server.notify import Notifier
from mcp_letta.server.per_agent_tools import AgentTools
from mcp_letta.server.prompts import register_prompts
from mcp_letta.server.resources import ResourceFanout, check_subscription, register_completions, register_resources
from mcp_letta.server.sampling import lend_connections
from mcp_letta.server.stdio import HostLink, answering_stdio_server
from mcp_letta.server.tools import register_builtin_tools

ANSWER_WAIT_S = 5.0  # stopping: how long the answers to calls in flight may take to be written, runs handed back

log = logging.getLogger("mcp_letta.server")

INSTRUCTIONS = (
    "mcp-letta runs stateful agents with persistent memory. Each agent keeps core memory blocks (shown in "
    "its prompt), archival memory and its full message history. Use list_agents to see agents, blocks tools "
    "to read and edit shared memory, and the letta:// resources to follow memory as it changes."
)


class LettaServer:
    """An ``MCPServer`` bound to one ``AgentHub``, with the background work that keeps clients informed."""

    def __init__(self, hub: AgentHub, settings: Settings | None = None) -> None:
        self.hub = hub
        self.settings = settings or hub.settings
        self.notifier = Notifier(on_subscribe=partial(check_subscription, hub))
        # How a 2026-era call that asks the host for more is sealed: as the SDK does, plus the replica's name
        # once ``http_app`` passes requests on between replicas (``forwarding``).
        self.request_states = NamedStateCodec()
        self.mcp: MCPServer = self.notifier.create_server(
            "mcp-letta",
            request_state_security=RequestStateSecurity(codec=self.request_states),
            title="Letta agents",
            version=__version__,
            instructions=INSTRUCTIONS,
            log_level=self.settings.log_level,  # type: ignore[arg-type]
        )
        arguments.install(self.mcp)  # before any tool: every tool refuses undeclared arguments
        self.mcp.middleware.append(compact_tool_list)
        if hub.host_models is not None:  # agents think with the host's model: connected hosts lend it
            self.mcp.middleware.append(lend_connections(hub.host_models))
        self.builtin_tools = register_builtin_tools(self.mcp, hub, tools=self.settings.tools)
        self.builtin_tools += register_messaging_tools(self.mcp, hub, tools=self.settings.tools)
        self.builtin_tools += register_multiagent_tools(self.mcp, hub, tools=self.settings.tools)
        self.builtin_tools += register_apps(self.mcp, hub)  # the views (MCP Apps), in both tiers
        register_prompts(self.mcp, self.builtin_tools)
        register_resources(self.mcp, hub)
        register_completions(self.mcp, hub)
        self._fanout = ResourceFanout(hub, self.notifier)
        self.agent_tools = AgentTools(
            self.mcp,
            hub,
            self.settings,
            self.notifier,
            ask=lambda agent_id, message, timeout_s, ctx: ask(hub, agent_id, message, timeout_s, ctx),
            reserved=set(self.builtin_tools),
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[LettaServer]:
        """Run the background work (change notifications) while the server is in use."""
        async with anyio.create_task_group() as tg:
            changes = self.hub.subscribe_changes()
            await self.agent_tools.sync()
            tg.start_soon(self._pump_changes, changes)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()

    async def _pump_changes(self, changes: anyio.abc.ObjectReceiveStream[Change]) -> None:
        async with changes:
            async for first in changes:
                batch = [first]
                while True:  # take everything already queued, so a burst of writes notifies once per URI
                    try:
                        batch.append(changes.receive_nowait())
                    except anyio.WouldBlock:
                        break
                try:
                    if any(change.kind == "agents" for change in batch):
                        await self.agent_tools.sync()
                    await self._fanout.handle(batch)
                except Exception:  # one failed notification must not stop all later ones
                    log.exception("sending change notifications failed")

    async def serve_stdio(self, host: HostLink | None = None) -> None:
        """Serve MCP over this process's stdin/stdout until the client closes stdin (or ``host`` stops reading
        it); a line that cannot be read gets a JSON-RPC error instead of silence."""
        lowlevel = self.mcp._lowlevel_server  # what run_stdio_async drives, over our answering transport
        host = host or HostLink()

        async def input_ended() -> None:
            """The host closed our input (its window closed, or a piped batch ended): start nothing new, and give
            the calls in flight the grace period to be answered (a batch's last call is then answered, not cut off
            by the end of its input); the runs of those still waiting go back to the queue, and they are
            answered with their runs as they stand."""
            self.hub.stopping()
            if host.stopped_reading:  # (SIGTERM has answered them already)
                return
            if not await host.answers_sent(within_s=self.settings.shutdown_grace_s):
                await self.hub.hand_back()
                await host.answers_sent(within_s=ANSWER_WAIT_S)

        stdio = answering_stdio_server(input_ended, host)
        async with self.running(), stdio as (read_stream, write_stream):
            await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


def freeze_startup_heap() -> int:
    """Move every object made so far (modules, classes, the server's tables, the hub's warm state) out of
    the garbage collector's reach, so full collections stop walking them; returns how many are frozen.
    Call it once, when start-up is done."""
    gc.collect()  # what is garbage already goes first, so nothing collectable is frozen
    gc.freeze()
    return gc.get_freeze_count()


def build_server(hub: AgentHub, settings: Settings | None = None) -> LettaServer:
    """The mcp-letta MCP server over ``hub`` (its ``.mcp`` is the ``MCPServer``)."""
    return LettaServer(hub, settings)


async def serve_stdio(settings: Settings) -> None:
    """Open the store named by ``settings`` and serve MCP over stdio.

    When the host closes our input (its window closed, or a piped batch ended) no new run starts, the runs in
    flight get ``settings.shutdown_grace_s`` to finish, and the rest go back to the queue for the next process
    on the same database to resume; every call read before is answered (with ``pending`` and its run for a run
    handed back). SIGTERM (a host that will not wait) ends the grace period at once, or, with the
    input still open, hands the runs back, answers the calls waiting on them, and ends the server.
    """
    async with AgentHub(settings) as hub:
        server, host = build_server(hub, settings), HostLink()
        freeze_startup_heap()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_stop_on_sigterm, hub, host)
            try:
                await server.serve_stdio(host)
            except* BrokenPipeError:  # it went away without closing our input: as if it had
                log.info("the host stopped reading our output")
            if not host.stopped_reading:  # (else SIGTERM has handed the runs back)
                grace = settings.shutdown_grace_s
                if host.input_closed_at is not None:  # (part of it went to answering the calls in flight)
                    grace = max(0.0, host.input_closed_at + grace - anyio.current_time())
                log.info("input closed: finishing the runs in flight (up to %gs)", round(grace, 1))
                await hub.wind_down(grace)
            tg.cancel_scope.cancel()


async def _stop_on_sigterm(hub: AgentHub, host: HostLink) -> None:
    """At SIGTERM, hand the runs in flight back to the queue, answer the calls that wait on them (each with its
    run as it is then), and stop reading the input: the server ends as when its window closes, though the host
    may keep that input open (not on Windows)."""
    if sys.platform == "win32":
        return
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            log.info("SIGTERM: handing the runs in flight back to the queue")
            with anyio.CancelScope(shield=True):  # (from its first step on, cancelled waits hand runs back)
                await hub.hand_back()
                await host.answers_sent(within_s=ANSWER_WAIT_S)
            host.stop_reading()
            return

"""The host's model, lent by the tool call that sends a message: ``Sampler``s for both protocol eras.

Handshake-era hosts (2025-11-25 and older) take ``sampling/createMessage`` requests while the tool call is
in flight: ``SessionSampler`` sends them on the call's stream; between calls, on the connection's own
channel (``ConnectionSampler``, lent by ``lend_connections`` while the host stays connected). A 2026-07-28
host takes none outside a call: the tool call answers with an ``InputRequiredResult`` carrying the run's
sampling requests, and the host calls the tool again with the answers (``Desk``, one per sent message, kept
between those rounds). ``ask_with_host`` is the one place a message-sending tool lends its host's model to
the run it starts.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from mcp.server.connection import Connection
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp.shared.message import ServerMessageMetadata
from mcp_types import (
    CreateMessageRequest,
    CreateMessageRequestParams,
    CreateMessageResult,
    CreateMessageResultWithTools,
    InputRequiredResult,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mcp_letta.errors import LLMUnavailable
from mcp_letta.hub import AgentHub
from mcp_letta.llm.sampling import WAYS_OUT, HostModels
from mcp_letta.models import Run, StepEvent
from mcp_letta.server.notify import connection_of

Result = CreateMessageResult | CreateMessageResultWithTools
Middleware = Callable[[ServerRequestContext[Any, Any], CallNext], Awaitable[HandlerResult]]
_CONNECTION_KEY = "mcp_letta.sampling.connection"  # in Connection.state: the host's ConnectionSampler


def _capabilities(ctx: Context) -> tuple[bool, bool]:
    """Whether the client declared ``sampling``, and ``sampling.tools``."""
    sampling = ctx.client_capabilities.sampling if ctx.client_capabilities is not None else None
    return sampling is not None, sampling is not None and sampling.tools is not None


def refused(exc: Exception) -> LLMUnavailable:
    """The error a run fails with when the host does not answer a sampling request."""
    reason = exc.error.message if isinstance(exc, MCPError) else f"{type(exc).__name__}: {exc}"
    return LLMUnavailable(f"the host refused to answer the agent's sampling request: {reason}")


def _result_type(params: CreateMessageRequestParams) -> type[Result]:
    # With tools offered the answer may hold tool_use blocks (a list of content), which only this type reads.
    return CreateMessageResultWithTools if params.tools else CreateMessageResult


class SessionSampler:
    """A handshake-era tool call's session: sampling requests travel on the call's own stream."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.can_sample, self.tools = _capabilities(ctx)
        self.alive = True

    async def create_message(self, params: CreateMessageRequestParams) -> Result:
        """Ask the host's model; a refusal (or a lost session) raises ``LLMUnavailable`` with the host's reason."""
        on_this_call = ServerMessageMetadata(related_request_id=self._ctx.request_id)
        try:
            return await self._ctx.session.send_request(
                CreateMessageRequest(params=params), _result_type(params), metadata=on_this_call
            )
        except (MCPError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise refused(exc) from None


class ConnectionSampler:
    """A connected handshake-era host, asked on its connection's own channel when no tool call is in flight
    (VS Code then asks its user whether the server may use the model outside of chat)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        sampling = connection.client_capabilities.sampling if connection.client_capabilities else None
        self.can_sample, self.tools = sampling is not None, sampling is not None and sampling.tools is not None
        self.alive = True

    async def create_message(self, params: CreateMessageRequestParams) -> Result:
        """Ask the host's model; a refusal (or a closed connection) raises ``LLMUnavailable``."""
        try:
            return await self._connection.send_request(
                CreateMessageRequest(params=params), result_type=_result_type(params)
            )
        except (MCPError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise refused(exc) from None


def lend_connections(hosts: HostModels) -> Middleware:
    """A server middleware lending every connected handshake-era host that declared ``sampling`` (once it
    has initialized) until it disconnects."""

    async def lend(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        connection = connection_of(ctx)
        if (
            _CONNECTION_KEY not in connection.state
            and connection.initialized.is_set()
            and connection.has_standalone_channel
            and connection.protocol_version not in MODERN_PROTOCOL_VERSIONS
            and connection.client_capabilities is not None
            and connection.client_capabilities.sampling is not None
        ):
            sampler = connection.state[_CONNECTION_KEY] = ConnectionSampler(connection)
            hosts.lend(sampler, idle=True)

            def withdraw() -> None:
                sampler.alive = False
                hosts.withdraw(sampler)

            connection.exit_stack.callback(withdraw)
        return await call_next(ctx)

    return lend


class _Pending:
    __slots__ = ("answered", "params", "result", "sent")

    def __init__(self, params: CreateMessageRequestParams) -> None:
        self.params = params
        self.sent = False
        self.answered = anyio.Event()
        self.result: Result | None = None


class Desk:
    """A 2026-era message's sampling requests, handed to the host between tool-call rounds.

    The run asks (``create_message``); the tool call, waiting on the run, returns the requests not yet sent
    as an ``InputRequiredResult`` whose ``request_state`` names this desk and the run; the host's next round of the
    same call brings the answers (``answer``). A request the host does not answer within ``answer_s`` (it
    refused, and its SDK gave up the call, or it went away) fails the run.
    """

    def __init__(self, ctx: Context, hosts: HostModels, deadline: float, answer_s: float) -> None:
        self.id = secrets.token_urlsafe(16)
        self.run_id = ""  # set once the message is stored
        self._hosts = hosts
        self.deadline = deadline
        self.answer_s = answer_s
        self.can_sample, self.tools = _capabilities(ctx)
        self.alive = True
        self._pending: dict[str, _Pending] = {}
        self._asked = anyio.Event()
        self._count = 0

    async def create_message(self, params: CreateMessageRequestParams) -> Result:
        """Queue a request for the host's next round and wait for its answer."""
        self._count += 1
        key = f"sample-{self._count}"
        pending = self._pending[key] = _Pending(params)
        self._asked.set()
        with anyio.move_on_after(self.answer_s):
            await pending.answered.wait()
        self._pending.pop(key, None)
        if pending.result is None:
            self.close()
            raise LLMUnavailable(
                f"the host did not answer the agent's sampling request within {self.answer_s:g}s (it refused it "
                f"or disconnected): {WAYS_OUT}"
            )
        return pending.result

    def open(self) -> None:
        """Lend the host's model from now on, and be found by the host's next round."""
        self._hosts.lend(self)
        _DESKS[self.id] = self

    def close(self) -> None:
        """The message's tool call is over: its requests still waiting fail, and no run samples through it."""
        self.alive = False
        self._hosts.withdraw(self)
        _DESKS.pop(self.id, None)
        for pending in self._pending.values():
            pending.answered.set()

    def answer(self, responses: dict[str, Any] | None) -> None:
        """Hand the host's answers of this round to the requests waiting for them."""
        for key, response in (responses or {}).items():
            pending = self._pending.get(key)
            if pending is None:
                continue
            data = response.model_dump(by_alias=True) if hasattr(response, "model_dump") else response
            pending.result = _result_type(pending.params).model_validate(data)
            pending.answered.set()

    def unsent(self) -> dict[str, CreateMessageRequest]:
        """The requests the host has not been given yet (marked given)."""
        self._asked = anyio.Event()
        out = {}
        for key, pending in self._pending.items():
            if not pending.sent and not pending.answered.is_set():
                pending.sent = True
                out[key] = CreateMessageRequest(params=pending.params)
        return out

    async def next_round(self, hub: AgentHub) -> Run | dict[str, CreateMessageRequest]:
        """Wait until the run asks the host something (its requests), or ends or the call's time is up (the
        run as it is then)."""
        run: Run | None = None
        if not self._has_unsent():
            async with anyio.create_task_group() as tg:

                async def wait_run() -> None:
                    nonlocal run
                    run = await hub.get_run(self.run_id, wait_s=max(0.0, self.deadline - anyio.current_time()))
                    tg.cancel_scope.cancel()

                async def wait_asked() -> None:
                    await self._asked.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(wait_run)
                tg.start_soon(wait_asked)
        if self._has_unsent():
            return self.unsent()
        return run if run is not None else await hub.get_run(self.run_id)

    def _has_unsent(self) -> bool:
        return any(not p.sent and not p.answered.is_set() for p in self._pending.values())


_DESKS: dict[str, Desk] = {}  # open 2026-era messages of this process, by the id their request_state carries


async def ask_with_host(
    hub: AgentHub,
    hosts: HostModels,
    agent: str,
    message: str,
    timeout_s: float,
    ctx: Context,
    on_step: Callable[[StepEvent], Awaitable[None]] | None,
) -> Run | InputRequiredResult:
    """Send ``message`` to ``agent`` lending the calling host's model to the run (see the module docstring):
    the finished run, the run as it is when ``timeout_s`` passes, or (2026 era) the host's next round."""
    if (ctx.protocol_version or "") not in MODERN_PROTOCOL_VERSIONS:
        sampler = SessionSampler(ctx)
        try:
            async with hosts.lending(sampler):
                return await hub.send_message(
                    agent, message, wait_s=timeout_s, on_step=on_step, cancel_on_abort=True, host=sampler
                )
        finally:
            sampler.alive = False
    desk_id, _, run_id = (ctx.request_state or "").partition(" ")
    desk = _DESKS.get(desk_id)
    if desk is None and run_id:  # a round that came too late: the message was sent; it went on without it
        return await hub.get_run(run_id)
    if desk is None:
        desk = Desk(ctx, hosts, anyio.current_time() + timeout_s, hub.settings.llm_timeout_s)
        desk.run_id = (await hub.send_message(agent, message, wait_s=None, host=desk)).id
        desk.open()
    else:
        desk.answer(ctx.input_responses)
    try:
        outcome = await desk.next_round(hub)
    except BaseException:  # the host cancelled the call (or went away): the message is withdrawn
        with anyio.CancelScope(shield=True):
            desk.close()
            await hub.cancel_run(desk.run_id)
        raise
    if isinstance(outcome, Run):
        desk.close()
        return outcome
    # The run's id rides along so that a round arriving after the desk closed never sends the message again.
    state = f"{desk.id} {desk.run_id}"
    return InputRequiredResult(input_requests=outcome, request_state=state)  # type: ignore[arg-type]

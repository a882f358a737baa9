"""The MCP tools that talk to agents and follow their runs: send_message, get_run, list_runs, cancel_run.

``ask`` is the one implementation behind ``send_message`` and every per-agent ``ask_<name>`` tool: a
bounded wait, progress at every step, and a client cancellation that cancels the run. ``outcome_result``
turns its reply into the tool result, an error when the run failed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, InputRequiredResult, TextContent, ToolAnnotations
from pydantic import Field

from mcp_letta.hub import PAGE, AgentHub
from mcp_letta.models import Run, StepEvent
from mcp_letta.server.sampling import ask_with_host
from mcp_letta.server.shapes import AgentReply, Paged, ToolCallOutcome
from mcp_letta.server.tools import READ, AgentRef, Cursor, Limit, call

SEND = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
CANCEL = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)

MESSAGING_TOOLS = ("send_message", "get_run", "list_runs", "cancel_run")
CORE_MESSAGING_TOOLS = frozenset({"send_message", "get_run"})

TimeoutS = Annotated[float, Field(ge=0, le=3600, description="max wait (s); then 'pending' + run_id")]
# A message's outcome that the host's model must read as an error; 'pending' (still running) and
# 'completed' are not errors.
TOOL_ERROR_STATUSES = frozenset({"failed", "cancelled", "interrupted"})
# What a tool returning ``outcome_result`` declares: AgentReply's output schema, sent as a CallToolResult.
AgentOutcome = Annotated[CallToolResult, AgentReply]


def reply_of(run: Run) -> AgentReply:
    """A run as the host sees it: ``pending`` while it is still queued or running."""
    calls = [ToolCallOutcome(name=c.name, ok=c.ok) for step in run.steps for c in step.tool_calls]
    return AgentReply(
        agent=run.agent_name,
        run_id=run.id,
        status=run.status if run.done else "pending",
        reply=run.reply,
        error=run.error,
        stop_reason=run.stop_reason,
        steps=len(run.steps),
        tool_calls=calls,
        usage=run.usage.model_dump(),
    )


def outcome_result(reply: AgentReply | InputRequiredResult) -> CallToolResult | InputRequiredResult:
    """The tool result of a message's outcome: ``isError`` when the run failed, was cancelled or was
    interrupted, and the reply as structured content (and as JSON text) either way. A request for the host's
    next round (its model's answers, see ``ask``) goes out as it is.
    """
    if isinstance(reply, InputRequiredResult):
        return reply
    return CallToolResult(
        content=[TextContent(type="text", text=reply.model_dump_json(indent=2))],
        structured_content=reply.model_dump(mode="json"),
        is_error=reply.status in TOOL_ERROR_STATUSES,
    )


def step_progress(ctx: Context, max_steps: int) -> Callable[[StepEvent], Awaitable[None]]:
    """An ``on_step`` callback that reports each step to the client: "<agent>: <tools it called>"."""

    async def report(event: StepEvent) -> None:
        tools = ", ".join(c.name for c in event.step.tool_calls) or "replying"
        await ctx.report_progress(event.step.index + 1, max_steps, f"{event.agent_name}: {tools}")

    return report


async def ask(
    hub: AgentHub, agent: str, message: str, timeout_s: float, ctx: Context | None
) -> AgentReply | InputRequiredResult:
    """Send ``message`` to ``agent`` and wait up to ``timeout_s`` for the reply, reporting each step.

    When agents think with the host's model, the calling host lends it to the run (``ask_with_host``); a
    2026-era host then gets the run's sampling requests as an ``InputRequiredResult`` and calls again."""
    on_step = None if ctx is None else step_progress(ctx, hub.settings.max_steps)
    hosts = hub.host_models
    if ctx is not None and hosts is not None:
        outcome = await call(ask_with_host(hub, hosts, agent, message, timeout_s, ctx, on_step))
        return outcome if isinstance(outcome, InputRequiredResult) else reply_of(outcome)
    run = await call(hub.send_message(agent, message, wait_s=timeout_s, on_step=on_step, cancel_on_abort=True))
    return reply_of(run)


class RunList(Paged):
    """A page of runs: newest first for list_runs, oldest first for check_replies."""

    runs: list[AgentReply]


def register_messaging_tools(mcp: MCPServer, hub: AgentHub, *, tools: str = "full") -> list[str]:
    """Add send_message, get_run, list_runs and cancel_run to ``mcp``; returns the names registered."""
    wanted = set(MESSAGING_TOOLS) if tools == "full" else set(CORE_MESSAGING_TOOLS)

    async def send_message(
        ctx: Context,
        agent: AgentRef,
        message: str,
        timeout_s: TimeoutS = 50,
    ) -> AgentOutcome:
        """Send a message to any agent and wait for its reply (status 'pending' + run_id if it takes longer)."""
        return outcome_result(await ask(hub, agent, message, timeout_s, ctx))

    async def get_run(
        run_id: str,
        wait_s: Annotated[float, Field(ge=0, le=3600, description="wait up to this long for it to finish")] = 0,
    ) -> AgentReply:
        """Get a run's status and reply by run_id, optionally waiting for it to finish."""
        return reply_of(await call(hub.get_run(run_id, wait_s=wait_s)))

    async def list_runs(
        agent: Annotated[str | None, Field(description="only this agent's runs")] = None,
        status: Annotated[
            Literal["pending", "queued", "running", "completed", "failed", "cancelled", "interrupted"] | None,
            Field(description="'pending' (as runs are shown until they end) is queued or running"),
        ] = None,
        limit: Limit = PAGE,
        cursor: Cursor = None,
    ) -> RunList:
        """List runs, newest first, by agent and status, a page at a time."""
        statuses = ["queued", "running"] if status == "pending" else status
        page = await call(hub.list_runs(agent, status=statuses, limit=limit, cursor=cursor))
        return RunList(**Paged.fields_of(page), runs=[reply_of(r) for r in page])

    async def cancel_run(run_id: str) -> AgentReply:
        """Cancel a queued or running run (a running one stops at its next step)."""
        return reply_of(await call(hub.cancel_run(run_id)))

    registered = []
    for fn, title, hints in (
        (send_message, "Send message", SEND),
        (get_run, "Get run", READ),
        (list_runs, "List runs", READ),
        (cancel_run, "Cancel run", CANCEL),
    ):
        if fn.__name__ in wanted:
            mcp.tool(title=title, annotations=hints)(fn)
            registered.append(fn.__name__)
    return registered

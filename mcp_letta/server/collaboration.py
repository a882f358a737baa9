"""The multi-agent MCP tools: Letta's three messaging primitives, the host inbox, agents as tools,
pipelines and metrics. Thin adapters over ``AgentHub``'s multi-agent section.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from mcp_letta.hub import PAGE, AgentHub
from mcp_letta.models import Agent, BroadcastResult, Metrics, PipelineResult, StageResult
from mcp_letta.server.messaging import AgentOutcome, RunList, TimeoutS, outcome_result, reply_of, step_progress
from mcp_letta.server.shapes import Paged
from mcp_letta.server.tools import CREATE, LINK, READ, AgentRef, Limit, call

SEND = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True)
UNLINK = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)

CORE_MULTIAGENT_TOOLS = frozenset(
    {
        "send_message_to_agent_and_wait_for_reply",
        "send_message_to_agent_async",
        "send_message_to_agents_matching_tags",
        "check_replies",
    }
)
Message = Annotated[str, Field(description="what to say")]
Tags = Annotated[list[str] | None, Field(description="tags a recipient must have")]


class AsyncSent(BaseModel):
    """A message accepted for an agent; its reply arrives later (check_replies, get_run, letta://inbox)."""

    agent: str
    run_id: str
    status: str
    detail: str


class BroadcastReply(BaseModel):
    """One result per recipient of a tag broadcast (the sender excluded)."""

    count: int
    pending: int = Field(description="recipients still working when the timeout passed (see their run_id)")
    results: list[BroadcastResult]


def register_multiagent_tools(mcp: MCPServer, hub: AgentHub, *, tools: str = "full") -> list[str]:
    """Add the multi-agent tools to ``mcp``; returns the names registered."""
    registered: list[str] = []

    def add(fn: Callable[..., Awaitable[BaseModel]], title: str, hints: ToolAnnotations) -> None:
        if tools == "full" or fn.__name__ in CORE_MULTIAGENT_TOOLS:
            mcp.tool(title=title, annotations=hints)(fn)
            registered.append(fn.__name__)

    async def send_message_to_agent_and_wait_for_reply(
        ctx: Context, agent: AgentRef, message: Message, timeout_s: TimeoutS = 50
    ) -> AgentOutcome:
        """Send a message to an agent and wait for its reply; after timeout_s you get status 'pending' + run_id."""
        run = await call(
            hub.send_and_wait(
                agent,
                message,
                wait_s=timeout_s,
                on_step=step_progress(ctx, hub.settings.max_steps),
                cancel_on_abort=True,
            )
        )
        return outcome_result(reply_of(run))

    async def send_message_to_agent_async(agent: AgentRef, message: Message) -> AsyncSent:
        """Send a message without waiting: returns a run_id at once; the reply arrives in check_replies."""
        run = await call(hub.send_async(agent, message))
        return AsyncSent(
            agent=run.agent_name,
            run_id=run.id,
            status=run.status,
            detail="the reply will be in check_replies and get_run(run_id); letta://inbox announces it",
        )

    async def _broadcast(
        ctx: Context, message: str, match_all: list[str], match_some: list[str], timeout_s: float
    ) -> BroadcastReply:
        finished = 0

        async def on_result(result: BroadcastResult) -> None:
            nonlocal finished
            finished += 1
            await ctx.report_progress(finished, None, f"{result.agent}: {result.status}")

        results = await call(
            hub.broadcast(message, match_all=match_all, match_some=match_some, wait_s=timeout_s, on_result=on_result)
        )
        pending = sum(1 for r in results if r.status == "pending")
        return BroadcastReply(count=len(results), pending=pending, results=results)

    async def send_message_to_agents_matching_tags(
        ctx: Context,
        message: Message,
        match_all: Tags = None,
        match_some: Annotated[list[str] | None, Field(description="a recipient needs at least one of these")] = None,
        timeout_s: TimeoutS = 50,
    ) -> BroadcastReply:
        """Send a message to every agent matching the tags (no tags: every agent), all at once; one reply or
        error per agent."""
        return await _broadcast(ctx, message, match_all or [], match_some or [], timeout_s)

    async def send_message_to_agents_matching_all_tags(
        ctx: Context, message: Message, tags: list[str], timeout_s: TimeoutS = 50
    ) -> BroadcastReply:
        """Send a message to every agent having all the tags (Letta's older name for the tag broadcast); with no
        tags, to every agent."""
        return await _broadcast(ctx, message, tags, [], timeout_s)

    async def check_replies(limit: Limit = PAGE) -> RunList:
        """Fetch replies to your async messages that you have not read yet (oldest first) and mark them read;
        'more' says how many further replies wait (call again for them)."""
        page = await call(hub.check_replies(limit=limit))
        return RunList(**Paged.fields_of(page), runs=[reply_of(r) for r in page])

    async def run_pipeline(
        ctx: Context,
        stages: Annotated[list[str], Field(min_length=1, description="agents in order, e.g. researcher, writer")],
        message: Annotated[str, Field(description="the input of the first stage")],
        timeout_s: Annotated[float, Field(ge=0, le=3600, description="for the whole pipeline")] = 300,
    ) -> PipelineResult:
        """Run agents in sequence, each getting the previous stage's reply; returns every stage's output."""

        done = 0

        async def on_stage(stage: StageResult) -> None:
            nonlocal done
            done += 1
            await ctx.report_progress(done, len(stages), f"{stage.agent}: {stage.status}")

        return await call(hub.run_pipeline(stages, message, wait_s=timeout_s, on_stage=on_stage))

    async def get_metrics(
        agent: Annotated[str | None, Field(description="only runs of this agent")] = None,
        limit: Limit = PAGE,
    ) -> Metrics:
        """Messages, errors, latency p50/p95 and tokens per agent and per sender->receiver pair, the `limit`
        slowest of each (more_agents and more_pairs count the rest)."""
        return await call(hub.get_metrics(agent=agent, limit=limit))

    async def attach_agent_tool(agent: AgentRef, tool_agent: AgentRef) -> Agent:
        """Give an agent another agent as a tool: its LLM can then call ask_<tool_agent>(message)."""
        return await call(hub.attach_agent_tool(agent, tool_agent))

    async def detach_agent_tool(agent: AgentRef, tool_agent: AgentRef) -> Agent:
        """Take another agent away from an agent's tools."""
        return await call(hub.detach_agent_tool(agent, tool_agent))

    add(send_message_to_agent_and_wait_for_reply, "Send to agent and wait", SEND)
    add(send_message_to_agent_async, "Send to agent (async)", SEND)
    add(send_message_to_agents_matching_tags, "Broadcast to tagged agents", SEND)
    add(send_message_to_agents_matching_all_tags, "Broadcast to agents with all tags", SEND)
    add(check_replies, "Check replies", CREATE)
    add(run_pipeline, "Run pipeline", SEND)
    add(get_metrics, "Multi-agent metrics", READ)
    add(attach_agent_tool, "Attach agent as tool", LINK)
    add(detach_agent_tool, "Detach agent tool", UNLINK)
    return registered

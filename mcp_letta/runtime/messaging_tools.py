"""Letta's multi-agent tools for agents (same names and arguments), and the ``ask_<name>`` tool of an agent
attached to another as a tool. They are awaited tools: they wait on other agents' runs outside the step's
transaction, through ``MultiAgentOps`` (the hub), exactly as the host would.

What the calling LLM sees follows Letta: a reply is ``{'agent_id': ..., 'response': [...]}`` (a Python
repr, ``['<no response>']`` when empty); a broadcast is a list of those, one per recipient. Anything that
went wrong (unknown agent, refused deadlock, failed or slow sub-agent) is a Failed result saying what
happened and what to do, never a hang.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from mcp_letta.errors import Deadlock
from mcp_letta.models import BroadcastResult, Run
from mcp_letta.runtime.toolbox import Tool, ToolContext, ToolFailure, object_params, string_param
from mcp_letta.store import NO_RESPONSE, ToolAgent

WAIT_FOR_REPLY = "send_message_to_agent_and_wait_for_reply"
SEND_ASYNC = "send_message_to_agent_async"
MATCHING_TAGS = "send_message_to_agents_matching_tags"
MATCHING_ALL_TAGS = "send_message_to_agents_matching_all_tags"  # Letta <= 0.6.3x name, used by the seeds
MULTI_AGENT_TOOL_NAMES = (WAIT_FOR_REPLY, SEND_ASYNC, MATCHING_TAGS, MATCHING_ALL_TAGS)


class MultiAgentOps(Protocol):
    """What the tools need from the hub (``AgentHub`` implements it)."""

    agent_wait_s: float

    async def send_and_wait(
        self, agent: str, message: str, *, sender: str | None = None, parent_run_id: str | None = None,
        wait_s: float = 50.0, call_id: str | None = None,
    ) -> Run:  # fmt: skip
        """Send and wait (``AgentHub.send_and_wait``)."""
        ...

    async def send_async(
        self, agent: str, message: str, *, sender: str | None = None, parent_run_id: str | None = None,
        call_id: str | None = None,
    ) -> Run:  # fmt: skip
        """Send without waiting, the reply routed back (``AgentHub.send_async``)."""
        ...

    async def broadcast(
        self, message: str, *, match_all: Sequence[str] = (), match_some: Sequence[str] = (),
        sender: str | None = None, parent_run_id: str | None = None, wait_s: float = 50.0,
        on_result: Callable[[BroadcastResult], Awaitable[None]] | None = None, call_id: str | None = None,
    ) -> list[BroadcastResult]:  # fmt: skip
        """Tag broadcast (``AgentHub.broadcast``)."""
        ...


ASYNC_HINT = "Use send_message_to_agent_async instead: the reply then comes back to you as a new message."


def refusal(exc: Deadlock) -> str:
    """A refused wait as the waiting agent reads it: why, and what to do instead."""
    if exc.details.get("reason") == "depth":
        instead = ASYNC_HINT[0].lower() + ASYNC_HINT[1:]
        return f"{exc.message} (MCP_LETTA_MAX_DEPTH). Answer with what you have, or {instead}"
    return f"{exc.message} {ASYNC_HINT}"


def letta_reply(agent_id: str, reply: str | None) -> dict[str, Any]:
    """Letta's shape of one agent's answer."""
    return {"agent_id": agent_id, "response": [reply or NO_RESPONSE]}


def _outcome_error(run: Run, waited_s: float) -> str:
    """Why a run the caller waited on gave no reply, and what happens next."""
    who = f"agent {run.agent_name!r}"
    if run.status in ("failed", "interrupted"):
        return f"{who} could not answer: its run {run.id} {run.status}: {run.error or 'no error recorded'}"
    if run.status == "cancelled":
        return f"{who} could not answer: its run {run.id} was cancelled"
    return (
        f"{who} did not answer within {waited_s:g}s; its run {run.id} goes on and its reply will be delivered to "
        "you as a new message when it finishes"
    )


async def wait_for_reply(ops: MultiAgentOps, ctx: ToolContext, target: str, message: str) -> str:
    """Send ``message`` to ``target`` as the calling agent and wait for the reply (Letta's return shape)."""
    try:
        run = await ops.send_and_wait(
            target, message, sender=ctx.agent_id, parent_run_id=ctx.run_id, wait_s=ops.agent_wait_s,
            call_id=ctx.call_id,
        )  # fmt: skip
    except Deadlock as exc:
        raise ToolFailure(refusal(exc)) from None
    if run.status != "completed":
        raise ToolFailure(_outcome_error(run, ops.agent_wait_s))
    return str(letta_reply(run.agent_id, run.reply))


def _tags(description: str) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "string"}, "description": description}


MESSAGE = string_param("The content of the message to be sent to the target agent.")
OTHER_AGENT = string_param("The id (agent-...) or the name of the agent to message.")


def _broadcast_entry(result: BroadcastResult) -> dict[str, Any]:
    entry: dict[str, Any] = {"agent_id": result.agent_id, "agent": result.agent, "status": result.status}
    if result.status == "completed":
        entry["response"] = [result.reply or NO_RESPONSE]
    elif result.status == "pending":
        entry["run_id"] = result.run_id
        entry["response"] = ["<pending: the reply will be delivered to you as a new message when it finishes>"]
    else:
        entry["response"] = [f"<error: {result.error or result.status}>"]
    return entry


async def _broadcast(ops: MultiAgentOps, ctx: ToolContext, message: str, match_all: list[str], match_some: list[str]):
    results = await ops.broadcast(
        message, match_all=match_all, match_some=match_some, sender=ctx.agent_id, parent_run_id=ctx.run_id,
        wait_s=ops.agent_wait_s, call_id=ctx.call_id,
    )  # fmt: skip
    if not results:
        return (
            f"No agent matches match_all={match_all} and match_some={match_some} (you are excluded); nothing was sent."
        )
    return str([_broadcast_entry(r) for r in results])


def multi_agent_tools(ops: MultiAgentOps) -> list[Tool]:
    """Letta's multi-agent tools, acting through ``ops`` as the calling agent within its current run."""

    async def and_wait(ctx: ToolContext, args: dict[str, Any]) -> str:
        return await wait_for_reply(ops, ctx, args["other_agent_id"], args["message"])

    async def send_async(ctx: ToolContext, args: dict[str, Any]) -> str:
        target, message = args["other_agent_id"], args["message"]
        run = await ops.send_async(target, message, sender=ctx.agent_id, parent_run_id=ctx.run_id, call_id=ctx.call_id)
        return (
            f"Message sent (run {run.id}); the reply will be delivered to you as a new message when "
            f"{run.agent_name} answers."
        )

    async def matching_tags(ctx: ToolContext, args: dict[str, Any]) -> str:
        return await _broadcast(ops, ctx, args["message"], args.get("match_all") or [], args.get("match_some") or [])

    async def matching_all_tags(ctx: ToolContext, args: dict[str, Any]) -> str:
        return await _broadcast(ops, ctx, args["message"], args.get("tags") or [], [])

    return [
        Tool(
            WAIT_FOR_REPLY,
            "Sends a message to another agent and waits for its reply. Use it whenever another agent knows "
            "something you need or should do part of the work: ask it instead of guessing. Your identity is "
            "included automatically, so no introduction is needed.",
            object_params(["message", "other_agent_id"], message=MESSAGE, other_agent_id=OTHER_AGENT),
            awaited=and_wait,
        ),
        Tool(
            SEND_ASYNC,
            "Sends a message to another agent and returns at once, without waiting. Your identity is included "
            "automatically. The agent's reply is delivered to you later as a new message.",
            object_params(["message", "other_agent_id"], message=MESSAGE, other_agent_id=OTHER_AGENT),
            awaited=send_async,
        ),
        Tool(
            MATCHING_TAGS,
            "Sends a message to every other agent that has all of the tags in match_all and at least one of the "
            "tags in match_some (an empty list does not filter), all at once, and waits for their replies.",
            object_params(
                ["message", "match_all", "match_some"],
                message=string_param("The content of the message to be sent to each matching agent."),
                match_all=_tags("Tags that every recipient must have."),
                match_some=_tags("Tags of which every recipient must have at least one."),
            ),
            awaited=matching_tags,
        ),
        Tool(
            MATCHING_ALL_TAGS,
            "Sends a message to every other agent that has all of the given tags, all at once, and waits for "
            "their replies.",
            object_params(
                ["message", "tags"],
                message=string_param("The content of the message to be sent to each matching agent."),
                tags=_tags("Tags that every recipient must have."),
            ),
            awaited=matching_all_tags,
        ),
    ]


def ask_description(name: str, description: str | None) -> str:
    """An ``ask_<name>`` tool's description, on one line (JSON tool mode shows a tool's first line): what the
    agent is for first, which small models match against the question far more often than a description
    that comes after what the tool does (see the README on delegation with a small model)."""
    about = " ".join((description or "").split()).rstrip(".")
    if not about:
        return f"Ask the agent '{name}' and wait for its reply."
    return f"The agent '{name}': {about}. Ask it and wait for its reply."


def agent_tool_factory(ops: MultiAgentOps, template: str) -> Callable[[ToolAgent], Tool]:
    """Builds the tool for an agent attached to another: ``template`` (e.g. ``ask_{name}``), one ``message``."""

    def build(tool_agent: ToolAgent) -> Tool:
        target = tool_agent.agent_id  # by id: the call reaches it even if it is renamed meanwhile

        async def ask(ctx: ToolContext, args: dict[str, Any]) -> str:
            return await wait_for_reply(ops, ctx, target, args["message"])

        return Tool(
            template.replace("{name}", tool_agent.name),
            ask_description(tool_agent.name, tool_agent.description),
            object_params(["message"], message=string_param(f"What to say to {tool_agent.name}.")),
            awaited=ask,
        )

    return build

"""Agents as tools: attach one agent to another, whose LLM then calls it like any tool.

The seed's "Pattern 3: Agents as Tools", without writing a wrapper function: ``create_agent(...,
agent_tools=["rag_researcher"])`` or ``attach_agent_tool(agent, tool_agent)`` gives the agent a tool
``ask_rag_researcher(message)``. Calling it sends the message to that agent and waits for its reply, which
comes back as the tool's result, in Letta's shape ``{'agent_id': ..., 'response': [...]}``. The call is a
real run of the other agent (its own history, its own memory), recorded with the caller as sender and
the caller's run as parent; waits that would form a cycle are refused, not deadlocked.

Run: ``MCP_LETTA_LLM_BASE_URL=... MCP_LETTA_MODEL=... python examples/agents_as_tools.py``
(the guide writer needs a model that calls tools).
"""

from __future__ import annotations

from dataclasses import dataclass

from launch import run_example, section, show, show_steps

from mcp_letta import AgentHub
from mcp_letta.models import Run

TASK = "Create a comprehensive guide on RAG pipelines. Use your tools: research first, then check your facts."
RESEARCHER = (
    "rag_researcher",
    "Investigate the topic you are asked about and reply with a structured research summary.",
    "I am the RAG researcher: I know retrieval, chunking, embeddings and reranking inside out.",
    "Researches a topic and returns a structured summary",
)
FACT_CHECKER = (
    "fact_checker",
    "Check the claims you are given. Reply with each claim marked OK or WRONG, with a one-line reason.",
    "I am the fact checker: I verify technical claims before they are published.",
    "Checks technical claims and marks each OK or WRONG",
)
WRITER_SYSTEM = (
    "You write technical guides. Use ask_rag_researcher to gather material and ask_fact_checker to verify "
    "your key claims before you answer. Reply with the finished guide."
)


@dataclass
class Outcome:
    """The writer's run and the runs its tool calls caused in the other agents."""

    run: Run
    delegated: list[Run]

    def completed(self) -> bool:
        """Whether the writer's run completed."""
        return self.run.status == "completed"


async def build_team(hub: AgentHub) -> None:
    """Two specialists and a writer with the researcher attached at creation and the checker afterwards."""
    existing = {agent.name for agent in await hub.list_agents()}
    for name, system, persona, description in (RESEARCHER, FACT_CHECKER):
        if name not in existing:
            await hub.create_agent(name, system=system, persona=persona, description=description)
    if "guide_writer" not in existing:
        await hub.create_agent(
            "guide_writer",
            system=WRITER_SYSTEM,
            persona="I am a technical writer who produces practical guides.",
            agent_tools=["rag_researcher"],  # attached at creation...
        )
    await hub.attach_agent_tool("guide_writer", "fact_checker")  # ...or later (attaching twice is a no-op)


async def main(hub: AgentHub, task: str = TASK) -> Outcome:
    """Ask the writer for a guide; show each agent it called as a tool, and its answer."""
    await build_team(hub)
    writer = await hub.get_agent("guide_writer")
    section("guide_writer's agent tools")
    print(", ".join(f"ask_{tool.name}" for tool in writer.agent_tools))

    section(f"task: {task}")
    run = await hub.send_and_wait("guide_writer", task, wait_s=900)
    delegated = []
    for name in (RESEARCHER[0], FACT_CHECKER[0]):
        delegated += [r for r in await hub.list_runs(name) if r.parent_run_id == run.id]
    show_steps(run)
    for sub in sorted(delegated, key=lambda r: r.created_at):
        show(f"{sub.agent_name} (called as a tool), {sub.status}", sub.reply or sub.error, width=200)
    section(f"guide_writer, {run.status}")
    show("guide_writer", run.reply or run.error, width=2000)
    return Outcome(run=run, delegated=delegated)


if __name__ == "__main__":
    run_example(main, Outcome.completed)

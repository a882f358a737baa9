"""Orchestrator and specialists sharing a project block: one agent routes the work, all see the same state.

The seed's "Pattern 1: Orchestrator + Specialist Agents" with "Pattern 2: Shared Memory Blocks". A
``project_memory`` block is attached to the orchestrator, the researcher and the writer. The orchestrator
has Letta's multi-agent tools (``include_multi_agent_tools``) and delegates with
``send_message_to_agent_and_wait_for_reply``; each specialist records what it finished in the shared
block with its memory tools. Every agent's next prompt shows the block as it is now, so the writer sees
the researcher's entry without anyone passing it along, and the block's history says who wrote what.

Run: ``MCP_LETTA_LLM_BASE_URL=... MCP_LETTA_MODEL=... python examples/orchestrator.py``
(the orchestrator needs a model that calls tools; small local models may answer without delegating).
"""

from __future__ import annotations

from dataclasses import dataclass

from launch import run_example, section, show, show_steps

from mcp_letta import AgentHub
from mcp_letta.models import Block, BlockChange, Run

TASK = "Create an article about LLM memory management techniques."
PROJECT = """# Project: AI Agent Cookbook Articles
## Assigned Topics
- LLM memory management: ASSIGNED to researcher
## Research Complete
(none yet)
## Articles Written
(none yet)"""
PROJECT_DESCRIPTION = (
    "The team's shared project status: topics, research complete, articles written. Every agent on the team "
    "sees it. Record what you finish here (memory_replace on the '(none yet)' line of your section)."
)
SPECIALISTS = {
    "researcher": (
        "You are a specialized research agent. When asked to research a topic, summarize the key findings in "
        "a short structured brief. When done, record the topic and a one-line summary under '## Research "
        "Complete' in the project_memory block, then reply with the brief.",
        "I am a research specialist with deep knowledge of LLM systems.",
    ),
    "writer": (
        "You are a specialized content writer. Turn research findings (see the project_memory block) into a "
        "clear, engaging article. When done, record the title under '## Articles Written' in the "
        "project_memory block, then reply with the article.",
        "I am a professional technical writer with a clear, direct style.",
    ),
}
ORCHESTRATOR = (
    "You are the task orchestrator. You coordinate the agents 'researcher' and 'writer' with the tool "
    "send_message_to_agent_and_wait_for_reply. For any content creation task:\n"
    "1. First send the research task to the researcher.\n"
    "2. Once research is done, send the findings to the writer.\n"
    "3. Compile the final output and reply with it."
)


@dataclass
class Outcome:
    """What the orchestrator did and what the shared block went through."""

    run: Run
    project_before: str
    project: Block
    history: list[BlockChange]

    def completed(self) -> bool:
        """Whether the orchestrator's run completed."""
        return self.run.status == "completed"


async def build_team(hub: AgentHub) -> None:
    """The shared block and the three agents, unless they exist already."""
    if not await hub.list_blocks(label="project_memory"):
        await hub.create_block("project_memory", PROJECT, limit=5000, description=PROJECT_DESCRIPTION)
    existing = {agent.name for agent in await hub.list_agents()}
    for name, (system, persona) in SPECIALISTS.items():
        if name not in existing:
            await hub.create_agent(name, system=system, persona=persona, shared_blocks=["project_memory"])
    if "orchestrator" not in existing:
        await hub.create_agent(
            "orchestrator",
            system=ORCHESTRATOR,
            persona="I am an orchestrator who manages a team of specialized agents.",
            shared_blocks=["project_memory"],
            include_multi_agent_tools=True,
        )


async def main(hub: AgentHub, task: str = TASK) -> Outcome:
    """Give the orchestrator a task; show its delegations, its answer and the shared block before/after."""
    await build_team(hub)
    before = (await hub.read_block("project_memory")).value
    section("project_memory before")
    print(before)

    section(f"task for the orchestrator: {task}")
    run = await hub.send_and_wait("orchestrator", task, wait_s=900)
    show_steps(run)
    show(f"orchestrator, {run.status}", run.reply or run.error)

    project = await hub.read_block("project_memory")
    history = await hub.block_history("project_memory")
    section(f"project_memory after (version {project.version})")
    print(project.value)
    names = {agent.id: agent.name for agent in await hub.list_agents()}
    for change in reversed(history):
        print(f"  v{change.version} {change.op} by {names.get(change.writer or '', change.writer)}")
    return Outcome(run=run, project_before=before, project=project, history=history)


if __name__ == "__main__":
    run_example(main, Outcome.completed)

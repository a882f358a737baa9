"""Editorial pipeline: a researcher, a writer and an editor, each stage fed the previous stage's reply.

The seed's "Practical Example: Editorial Team": research -> write -> edit. ``AgentHub.run_pipeline`` sends
the topic to the first agent and each reply on to the next agent, and returns every stage's run, reply
and latency; it stops at the first stage that fails or stays silent. Each agent keeps its own persistent
history, so a second article by the same team builds on the first (the researcher's archival memory too).

Run: ``MCP_LETTA_LLM_BASE_URL=... MCP_LETTA_MODEL=... python examples/editorial_pipeline.py [topic]``
"""

from __future__ import annotations

import sys

from launch import run_example, section, show

from mcp_letta import AgentHub
from mcp_letta.models import PipelineResult, StageResult

TOPIC = "Letta memory architecture for production AI agents"

TEAM = {
    "editorial_researcher": (
        "Research topics thoroughly. Store key findings in archival memory. Reply with a research brief.",
        "I am the editorial researcher: I dig up facts and summarize them as short research briefs.",
    ),
    "editorial_writer": (
        "Write clear technical articles from research briefs. Reply with the article only.",
        "I am the editorial writer: I turn research briefs into clear, engaging articles.",
    ),
    "editorial_editor": (
        "Review articles for accuracy, clarity, and completeness. Return the edited version only.",
        "I am the editorial editor: I tighten prose and check every claim against the brief.",
    ),
}
STAGES = list(TEAM)


async def build_team(hub: AgentHub) -> None:
    """Create the three agents (system prompt and persona each), unless they exist already."""
    existing = {agent.name for agent in await hub.list_agents()}
    for name, (system, persona) in TEAM.items():
        if name not in existing:
            await hub.create_agent(name, system=system, persona=persona, tags=["editorial"])


async def main(hub: AgentHub, topic: str = TOPIC) -> PipelineResult:
    """Build the team and run the topic through research -> write -> edit; returns every stage."""
    await build_team(hub)
    section(f"pipeline: {' -> '.join(STAGES)}")

    async def progress(stage: StageResult) -> None:
        show(f"{stage.agent}, {stage.status}, {stage.latency_ms or 0:.0f} ms", stage.reply)

    result = await hub.run_pipeline(STAGES, f"Research: {topic}", wait_s=600, on_stage=progress)
    section("final article" if result.status == "completed" else f"pipeline {result.status}")
    print(result.output if result.status == "completed" else result.error)
    return result


if __name__ == "__main__":
    run_example(lambda hub: main(hub, " ".join(sys.argv[1:]) or TOPIC), lambda result: result.status == "completed")

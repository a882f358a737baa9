"""Tag broadcast: a supervisor sends one message to every worker with given tags and gets every reply.

Letta's ``send_message_to_agents_matching_all_tags`` (supervisor -> workers) and the seed's
``broadcast_to_group``. Agents carry tags; a broadcast goes to every agent that has all tags of
``match_all`` and at least one of ``match_some``, all at once (up to ``MCP_LETTA_FANOUT_CONCURRENCY``
in flight), and returns one result per recipient: its reply, its error, or ``pending`` with a run id
if it did not finish in time. First the host broadcasts to a group with ``AgentHub.broadcast``, printing
each reply as it arrives; then a supervisor agent does the same from its own tool call.

Run: ``MCP_LETTA_LLM_BASE_URL=... MCP_LETTA_MODEL=... python examples/tag_broadcast.py``
(the supervisor needs a model that calls tools).
"""

from __future__ import annotations

from dataclasses import dataclass

from launch import run_example, section, show, show_steps

from mcp_letta import AgentHub
from mcp_letta.models import BroadcastResult, Run

WORKERS = {
    "research_worker": (["worker", "research"], "I am the research worker: I find sources and summarize them."),
    "writing_worker": (["worker", "content"], "I am the writing worker: I draft articles from briefs."),
    "review_worker": (["worker", "content"], "I am the review worker: I edit drafts for clarity and accuracy."),
}
WORKER_SYSTEM = "You are a worker on a small content team. Answer messages briefly: what you did and what you need."
SUPERVISOR_SYSTEM = (
    "You supervise the workers (the agents tagged 'worker'). To talk to all of them at once use "
    "send_message_to_agents_matching_tags with match_all=['worker']. Then reply with a short summary of "
    "every worker's answer, naming each worker."
)
ANNOUNCEMENT = "New style guide released: use sentence case for headings. Reply with one change you will make."
TASK = "Start the weekly review: ask every worker for its status, then summarize."


@dataclass
class Outcome:
    """The host's broadcast to the content group, and the supervisor's run with the runs it fanned out."""

    group: list[BroadcastResult]
    run: Run
    fanned_out: list[Run]

    def completed(self) -> bool:
        """Whether every recipient of the host's broadcast answered and the supervisor's run completed."""
        return all(result.status == "completed" for result in self.group) and self.run.status == "completed"


async def build_team(hub: AgentHub) -> None:
    """Three tagged workers and a supervisor with the multi-agent tools, unless they exist already."""
    existing = {agent.name for agent in await hub.list_agents()}
    for name, (tags, persona) in WORKERS.items():
        if name not in existing:
            await hub.create_agent(name, system=WORKER_SYSTEM, persona=persona, tags=tags)
    if "supervisor" not in existing:
        await hub.create_agent(
            "supervisor",
            system=SUPERVISOR_SYSTEM,
            persona="I am the supervisor: I keep the team's work moving.",
            tags=["supervisor"],
            include_multi_agent_tools=True,
        )


async def main(hub: AgentHub) -> Outcome:
    """Broadcast to the 'content' group from the host, then let the supervisor broadcast to all workers."""
    await build_team(hub)

    section(f"host -> agents tagged 'content': {ANNOUNCEMENT}")

    async def arrived(result: BroadcastResult) -> None:
        show(f"{result.agent}, {result.status}, {result.latency_ms or 0:.0f} ms", result.reply or result.error)

    group = await hub.broadcast(ANNOUNCEMENT, match_all=["content"], wait_s=300, on_result=arrived)

    section(f"host -> supervisor: {TASK}")
    run = await hub.send_and_wait("supervisor", TASK, wait_s=900)
    fanned_out = []
    for name in WORKERS:
        fanned_out += [r for r in await hub.list_runs(name) if r.parent_run_id == run.id]
    show_steps(run)
    for sub in sorted(fanned_out, key=lambda r: r.agent_name):
        show(f"{sub.agent_name} (from the supervisor), {sub.status}", sub.reply or sub.error, width=200)
    show(f"supervisor, {run.status}", run.reply or run.error, width=1000)
    return Outcome(group=group, run=run, fanned_out=fanned_out)


if __name__ == "__main__":
    run_example(main, Outcome.completed)

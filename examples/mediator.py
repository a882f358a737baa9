"""Mediator: a neutral agent hears two agents who disagree and proposes a compromise they both answer.

The seed's ``ConflictResolver``. The developer and the designer are asked for their views at the same
time; each view is then delivered to the mediator as a message *from that agent* (``send_and_wait`` with
``sender``), so the mediator's history says who said what. The mediator proposes a compromise, which
the host sends to both parties with ``send_async``: it returns at once, and the replies land in the host
inbox, read with ``check_replies``. ``get_metrics`` then shows the traffic per sender -> receiver pair.

Run: ``MCP_LETTA_LLM_BASE_URL=... MCP_LETTA_MODEL=... python examples/mediator.py [issue]``
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import anyio
from launch import counted, run_example, section, show

from mcp_letta import AgentHub
from mcp_letta.models import Metrics, Run

ISSUE = "where the primary 'Save' button goes on the settings page"
PARTIES = {
    "developer_agent": "I am a software developer: I want the button where it is cheapest to build and test.",
    "designer_agent": "I am a UX designer: I want the button where users look for it first.",
}
MEDIATOR_SYSTEM = (
    "You are a neutral mediator. Listen to both sides, identify common ground, propose one fair solution. "
    "Reply with the proposal only, in two or three sentences."
)


@dataclass
class Outcome:
    """Each party's view, the mediator's proposal, and each party's answer to it (from the host inbox)."""

    views: dict[str, Run]
    proposal: Run
    answers: list[Run]
    metrics: Metrics

    def completed(self) -> bool:
        """Whether every view, the proposal and every answer came from a completed run."""
        runs = [*self.views.values(), self.proposal, *self.answers]
        return all(run.status == "completed" for run in runs)


async def build_team(hub: AgentHub) -> None:
    """The two parties and the mediator, unless they exist already."""
    existing = {agent.name for agent in await hub.list_agents()}
    for name, persona in PARTIES.items():
        if name not in existing:
            await hub.create_agent(name, persona=persona, tags=["party"])
    if "mediator" not in existing:
        await hub.create_agent(
            "mediator", system=MEDIATOR_SYSTEM, persona="I am a neutral mediator who helps find compromise."
        )


async def main(hub: AgentHub, issue: str = ISSUE) -> Outcome:
    """Gather both views, have the mediator propose, and collect both parties' answers asynchronously."""
    await build_team(hub)
    section(f"the issue: {issue}")
    views: dict[str, Run] = {}

    async def ask_view(name: str) -> None:
        views[name] = await hub.send_and_wait(name, f"What's your view on: {issue}? Two sentences.", wait_s=300)
        show(name, views[name].reply or views[name].error)

    async with anyio.create_task_group() as tg:  # both at once: they are independent agents
        for name in PARTIES:
            tg.start_soon(ask_view, name)

    section("each view goes to the mediator, from the agent that holds it")
    for name, view in views.items():
        heard = await hub.send_and_wait("mediator", f"My view on {issue}: {view.reply}", sender=name, wait_s=300)
        show(f"mediator to {name}", heard.reply or heard.error, width=200)
    proposal = await hub.send_and_wait("mediator", "You have heard both sides. Propose the compromise now.", wait_s=300)
    show("mediator's proposal", proposal.reply or proposal.error)

    section("the proposal goes to both parties (send_async); answers arrive in the host inbox")
    sent = [
        await hub.send_async(name, f"The mediator proposes: {proposal.reply}\nDo you accept? Answer in one sentence.")
        for name in PARTIES
    ]
    for run in sent:
        await hub.wait_run(run.id, wait_s=300)
    answers = await hub.check_replies()
    for answer in answers:
        show(f"{answer.agent_name} (from the inbox)", answer.reply or answer.error)

    metrics = await hub.get_metrics()
    section("traffic (get_metrics)")
    for pair in metrics.pairs:
        print(f"  {pair.sender} -> {pair.receiver}: {counted(pair.messages, 'message')}, "
              f"{counted(pair.errors, 'error')}, p50 {pair.latency_p50_ms or 0:.0f} ms, "
              f"{counted(pair.tokens, 'token')}")  # fmt: skip
    return Outcome(views=views, proposal=proposal, answers=answers, metrics=metrics)


if __name__ == "__main__":
    run_example(lambda hub: main(hub, " ".join(sys.argv[1:]) or ISSUE), Outcome.completed)

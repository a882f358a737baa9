"""MCP prompts that teach a host the multi-agent patterns: orchestrator with specialists, pipeline,
supervisor broadcast, and a mediator between two agents. Each names the exact tools to call.
"""

from __future__ import annotations

from collections.abc import Collection

from mcp.server.mcpserver import MCPServer

from mcp_letta.config import comma_list

# The tools each prompt tells the host to call: a prompt is offered only where they all are (not every one is
# with MCP_LETTA_TOOLS=core, and a host following the prompt would call tools it does not have).
NEEDS = {
    "orchestrator_with_specialists": {"create_block", "list_agents", "create_agent", "send_message", "get_run",
                                      "read_block"},
    "pipeline": {"list_agents", "create_agent", "run_pipeline"},
    "supervisor_broadcast": {"list_agents", "send_message_to_agents_matching_tags", "get_run"},
    "mediator": {"send_message", "list_blocks", "read_block"},
}  # fmt: skip


def register_prompts(mcp: MCPServer, offered: Collection[str]) -> list[str]:
    """Add to ``mcp`` the pattern prompts whose tools are all ``offered``; returns their names."""

    def orchestrator_with_specialists(goal: str, specialists: str = "researcher, writer") -> str:
        """Set up an orchestrator agent that delegates to specialist agents sharing a project block."""
        names = comma_list(specialists)
        listed = ", ".join(names)
        return (
            f"Goal: {goal}\n\n"
            "Build an orchestrator with specialists in mcp-letta, then let it work:\n"
            "1. create_block(label='project_memory', value='Goal: ...\\nAssigned:\\nDone:', description='shared "
            "project state: assignments and results') so every agent sees the same state.\n"
            f"2. For each specialist ({listed}) that list_agents does not show yet: create_agent(name=..., "
            "description=<what it is good at>, persona=<its role>, shared_blocks=['project_memory']).\n"
            f"3. create_agent(name='orchestrator', persona='I plan the work, delegate to {listed} and compile the "
            f"result.', shared_blocks=['project_memory'], agent_tools={names!r}): its LLM can now call "
            "ask_<specialist> itself.\n"
            "4. send_message(agent='orchestrator', message=<the goal>) and relay its reply. If the status is "
            "'pending', call get_run(run_id, wait_s=50) until it completes.\n"
            "5. read_block('project_memory') to show what the team recorded."
        )

    def pipeline(topic: str, stages: str = "researcher, writer, editor") -> str:
        """Run agents as a pipeline (research, write, edit): each stage gets the previous stage's reply."""
        names = comma_list(stages)
        return (
            f"Topic: {topic}\n\n"
            f"Run the pipeline {' -> '.join(names)} without ferrying text yourself:\n"
            "1. Check with list_agents that every stage exists; create missing ones with create_agent (a clear "
            "persona per stage: what it receives and what it must return).\n"
            f"2. run_pipeline(stages={names!r}, message=<the task about the topic>). Each stage receives the "
            "previous stage's reply.\n"
            "3. Show the final stage's output, and summarise what each earlier stage contributed (the result "
            "holds every stage's output)."
        )

    def supervisor_broadcast(task: str, tags: str = "worker") -> str:
        """Broadcast a task to every agent with the given tags, in parallel, and collect their answers."""
        tag_list = comma_list(tags)
        return (
            f"Task: {task}\n\n"
            f"1. list_agents(tags={tag_list!r}, match_all_tags=true) to see who will receive it.\n"
            f"2. send_message_to_agents_matching_tags(message=<the task>, match_all={tag_list!r}, match_some=[]). "
            "All recipients work at the same time; you get one result per agent with its reply or error.\n"
            "3. For results still 'pending', call get_run(run_id, wait_s=50).\n"
            "4. Compare the answers, point out disagreements, and give a combined answer."
        )

    def mediator(agent_a: str, agent_b: str, topic: str, rounds: str = "3") -> str:
        """Mediate a discussion between two agents for a few rounds and summarise where they agree."""
        return (
            f"Mediate between '{agent_a}' and '{agent_b}' on: {topic}\n\n"
            f"1. send_message(agent='{agent_a}', message=<the topic and a request for their position>).\n"
            f"2. For {rounds} rounds: send the latest reply of one agent to the other with send_message, asking "
            "for a response that addresses it point by point. Quote faithfully; do not add your own opinion.\n"
            "3. If they share a block (list_blocks(agent=...)), ask each to record agreed points there with "
            "its memory tools; read_block shows the result.\n"
            "4. Summarise: points of agreement, remaining disagreements, and a proposed compromise."
        )

    titled = (
        (orchestrator_with_specialists, "Orchestrator with specialists"), (pipeline, "Pipeline"),
        (supervisor_broadcast, "Supervisor broadcast"), (mediator, "Mediator"),
    )  # fmt: skip
    names = []
    for fn, title in titled:
        if NEEDS[fn.__name__] <= set(offered):
            mcp.prompt(title=title)(fn)
            names.append(fn.__name__)
    return names

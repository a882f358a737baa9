"""Every example in examples/ run against the scripted loopback LLM (real HTTP), each agent scripted by its persona.

The assertions are on what the pattern is for: replies passed between stages, a shared block changed
by one agent and seen in another's prompt, tool calls that reached other agents and came back as tool
results, one broadcast result per recipient, replies read from the host inbox.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from mcp_letta import AgentHub
from mcp_letta.runtime.messaging_tools import MATCHING_TAGS, WAIT_FOR_REPLY
from mcp_letta.testing import RecordedRequest, ScriptedLLM

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if p.stem != "launch")
CHECKOUT = str(EXAMPLES.parent)  # a script imports this checkout's mcp_letta, whatever is installed


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """Import an example module the way ``python examples/<name>.py`` finds its neighbours."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module


def sent_to(llm: ScriptedLLM, persona: str) -> list[RecordedRequest]:
    """The LLM requests made for the agent whose system prompt (persona) contains ``persona``."""
    return [r for r in llm.requests if persona in r.system]


def last_input(request: RecordedRequest) -> str:
    """The newest user/system message (after the system prompt) of a request: what the agent was told."""
    messages = [m for m in request.body["messages"][1:] if m["role"] in ("user", "system")]
    return messages[-1]["content"]


def tool_results(request: RecordedRequest) -> list[str]:
    """The tool results a request carries back to the LLM."""
    return [m["content"] for m in request.body["messages"] if m["role"] == "tool"]


async def test_editorial_pipeline_feeds_each_reply_to_the_next_stage(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM, example: Callable[[str], ModuleType]
) -> None:
    pipeline = example("editorial_pipeline")
    brief = "BRIEF: Letta keeps labelled core memory blocks in every prompt; archival memory is searched."
    draft = "DRAFT: Production agents need memory that survives restarts. Letta keeps core blocks in the prompt."
    final = "FINAL: Production agents need memory that survives restarts; Letta keeps core blocks in the prompt."
    scripted_llm.on("I am the editorial researcher", brief)
    scripted_llm.on("I am the editorial writer", draft)
    scripted_llm.on("I am the editorial editor", final)

    result = await pipeline.main(llm_hub, "memory for agents")

    assert result.status == "completed", result.error
    assert [(s.agent, s.status, s.reply) for s in result.stages] == [
        ("editorial_researcher", "completed", brief),
        ("editorial_writer", "completed", draft),
        ("editorial_editor", "completed", final),
    ]
    assert result.output == final
    assert last_input(sent_to(scripted_llm, "I am the editorial researcher")[0]) == "Research: memory for agents"
    assert last_input(sent_to(scripted_llm, "I am the editorial writer")[0]) == brief
    assert last_input(sent_to(scripted_llm, "I am the editorial editor")[0]) == draft


async def test_orchestrator_delegates_and_specialists_share_the_project_block(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM, example: Callable[[str], ModuleType]
) -> None:
    orchestrator = example("orchestrator")
    research_entry = "## Research Complete\n- LLM memory management: core blocks, recall, archival"
    article_entry = "## Articles Written\n- Memory management for LLM agents"
    scripted_llm.on("I am an orchestrator who manages").tool_call(
        WAIT_FOR_REPLY, {"other_agent_id": "researcher", "message": "Research LLM memory management techniques."}
    ).tool_call(
        WAIT_FOR_REPLY, {"other_agent_id": "writer", "message": "Write the article; the research is in project_memory."}
    ).reply("FINAL: Memory management for LLM agents, researched and written.")
    scripted_llm.on("I am a research specialist").tool_call(
        "memory_replace",
        {"label": "project_memory", "old_string": "## Research Complete\n(none yet)", "new_string": research_entry},
    ).reply("BRIEF: core blocks stay in the prompt; recall and archival memory are searched.")
    scripted_llm.on("I am a professional technical writer").tool_call(
        "memory_replace",
        {"label": "project_memory", "old_string": "## Articles Written\n(none yet)", "new_string": article_entry},
    ).reply("ARTICLE: Memory management for LLM agents.")

    outcome = await orchestrator.main(llm_hub)

    assert (outcome.run.status, outcome.run.reply) == (
        "completed", "FINAL: Memory management for LLM agents, researched and written."
    )  # fmt: skip
    calls = [c for step in outcome.run.steps for c in step.tool_calls]
    assert [(c.name, c.ok) for c in calls] == [(WAIT_FOR_REPLY, True), (WAIT_FOR_REPLY, True)]
    assert "(none yet)" in outcome.project_before
    assert research_entry in outcome.project.value and article_entry in outcome.project.value
    assert "(none yet)" not in outcome.project.value
    researcher, writer = await llm_hub.get_agent("researcher"), await llm_hub.get_agent("writer")
    assert [(c.version, c.writer, c.op) for c in outcome.history] == [
        (3, writer.id, "memory_replace"), (2, researcher.id, "memory_replace"), (1, "api", "create")
    ]  # fmt: skip
    # The writer's very first prompt already shows the researcher's entry: shared memory, not message passing.
    assert research_entry in sent_to(scripted_llm, "I am a professional technical writer")[0].system
    # The researcher's reply came back to the orchestrator as its tool's result.
    orchestrator_requests = sent_to(scripted_llm, "I am an orchestrator who manages")
    assert "BRIEF: core blocks stay in the prompt" in tool_results(orchestrator_requests[1])[0]
    assert "ARTICLE: Memory management" in tool_results(orchestrator_requests[2])[1]


async def test_agents_attached_as_tools_answer_the_callers_tool_calls(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM, example: Callable[[str], ModuleType]
) -> None:
    agents_as_tools = example("agents_as_tools")
    summary = "SUMMARY: chunk the corpus, embed, retrieve top-k, rerank, then generate."
    verdict = "OK: reranking improves precision."
    scripted_llm.on("I am a technical writer who produces practical guides").tool_call(
        "ask_rag_researcher", {"message": "Research RAG pipelines end to end."}
    ).tool_call("ask_fact_checker", {"message": "Check: reranking improves precision."}).reply(
        "GUIDE: 1. Chunk 2. Embed 3. Retrieve 4. Rerank 5. Generate."
    )
    scripted_llm.on("I am the RAG researcher", summary)
    scripted_llm.on("I am the fact checker", verdict)

    outcome = await agents_as_tools.main(llm_hub)

    assert (outcome.run.status, outcome.run.reply) == (
        "completed",
        "GUIDE: 1. Chunk 2. Embed 3. Retrieve 4. Rerank 5. Generate.",
    )
    writer = await llm_hub.get_agent("guide_writer")
    assert {t.name for t in writer.agent_tools} == {"rag_researcher", "fact_checker"}
    first = sent_to(scripted_llm, "I am a technical writer who produces practical guides")
    assert {"ask_rag_researcher", "ask_fact_checker"} <= set(first[0].tool_names)
    by_agent = {run.agent_name: run for run in outcome.delegated}
    assert {name: (r.status, r.reply, r.sender) for name, r in by_agent.items()} == {
        "rag_researcher": ("completed", summary, writer.id),
        "fact_checker": ("completed", verdict, writer.id),
    }
    assert last_input(sent_to(scripted_llm, "I am the RAG researcher")[0]).endswith(
        "Research RAG pipelines end to end."
    )
    results = tool_results(first[-1])
    assert summary in results[0] and "'response'" in results[0]  # Letta's {'agent_id': ..., 'response': [...]}
    assert verdict in results[1]


async def test_tag_broadcast_reaches_each_tagged_agent_once_and_returns_every_reply(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM, example: Callable[[str], ModuleType]
) -> None:
    tag_broadcast = example("tag_broadcast")
    scripted_llm.on("I am the research worker", "research: 4 sources summarized")
    scripted_llm.on("I am the writing worker", "writing: switching headings to sentence case", "writing: draft 2/3")
    scripted_llm.on("I am the review worker", "review: I will check heading case", "review: 1 draft waiting")
    scripted_llm.on("I am the supervisor").tool_call(
        MATCHING_TAGS, {"message": "Status, please.", "match_all": ["worker"], "match_some": []}
    ).reply("SUMMARY: research 4 sources; writing draft 2/3; review 1 draft waiting.")

    outcome = await tag_broadcast.main(llm_hub)

    assert {(r.agent, r.status, r.reply) for r in outcome.group} == {
        ("writing_worker", "completed", "writing: switching headings to sentence case"),
        ("review_worker", "completed", "review: I will check heading case"),
    }
    assert all(r.latency_ms is not None and r.run_id for r in outcome.group)
    assert outcome.run.status == "completed"
    assert outcome.run.reply == "SUMMARY: research 4 sources; writing draft 2/3; review 1 draft waiting."
    supervisor = await llm_hub.get_agent("supervisor")
    assert {(r.agent_name, r.status, r.reply, r.sender) for r in outcome.fanned_out} == {
        ("research_worker", "completed", "research: 4 sources summarized", supervisor.id),
        ("writing_worker", "completed", "writing: draft 2/3", supervisor.id),
        ("review_worker", "completed", "review: 1 draft waiting", supervisor.id),
    }
    [result] = tool_results(sent_to(scripted_llm, "I am the supervisor")[-1])
    for reply in ("research: 4 sources summarized", "writing: draft 2/3", "review: 1 draft waiting"):
        assert reply in result
    assert "supervisor" not in result  # the sender is never among the recipients


async def test_mediator_hears_both_parties_and_their_answers_arrive_in_the_host_inbox(
    llm_hub: AgentHub,
    scripted_llm: ScriptedLLM,
    example: Callable[[str], ModuleType],
    capsys: pytest.CaptureFixture[str],
) -> None:
    mediator = example("mediator")
    proposal = "Proposal: a sticky footer bar, Save on the right, built from the existing form component."
    scripted_llm.on("I am a software developer", "Footer: it reuses the form component.", "Accepted: it reuses it.")
    scripted_llm.on("I am a UX designer", "Top right: users look there first.", "Accepted if it stays visible.")
    scripted_llm.on("I am a neutral mediator", "Noted.", "Noted.", proposal)

    outcome = await mediator.main(llm_hub, "the Save button")

    assert {n: v.reply for n, v in outcome.views.items()} == {
        "developer_agent": "Footer: it reuses the form component.",
        "designer_agent": "Top right: users look there first.",
    }
    assert outcome.proposal.reply == proposal
    developer = await llm_hub.get_agent("developer_agent")
    heard = [last_input(request) for request in sent_to(scripted_llm, "I am a neutral mediator")]
    [view] = [text for text in heard if "Footer: it reuses the form component." in text]  # (the two views race)
    assert f"agent with ID '{developer.id}'" in view  # delivered as from the developer
    assert {(a.agent_name, a.reply) for a in outcome.answers} == {
        ("developer_agent", "Accepted: it reuses it."),
        ("designer_agent", "Accepted if it stays visible."),
    }
    assert all(a.reply_to == "host" for a in outcome.answers)
    assert proposal in last_input(sent_to(scripted_llm, "I am a UX designer")[-1])
    assert (await llm_hub.check_replies()).items == []  # read once
    pairs = {(p.sender, p.receiver): p.messages for p in outcome.metrics.pairs}
    assert pairs == {
        ("host", "developer_agent"): 2, ("host", "designer_agent"): 2, ("host", "mediator"): 1,
        ("developer_agent", "mediator"): 1, ("designer_agent", "mediator"): 1,
    }  # fmt: skip
    traffic = capsys.readouterr().out
    assert "  host -> mediator: 1 message, 0 errors, p50 " in traffic
    assert "  host -> developer_agent: 2 messages, 0 errors, p50 " in traffic
    assert " 1 messages" not in traffic


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_each_example_explains_its_pattern_and_runs_on_a_hub(script: Path) -> None:
    tree = ast.parse(script.read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree) or ""
    assert len(doc.splitlines()) >= 3 and "Run:" in doc
    mains = [n for n in tree.body if isinstance(n, ast.AsyncFunctionDef) and n.name == "main"]
    assert mains and mains[0].args.args[0].arg == "hub"


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_without_an_llm_configured_an_example_says_what_to_set(script: Path, tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "PYTHONPATH": CHECKOUT}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "set MCP_LETTA_LLM_BASE_URL and MCP_LETTA_MODEL" in done.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_an_example_whose_runs_failed_exits_non_zero(script: Path, scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    scripted_llm.down()  # connection refused: every run fails
    env = {
        "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "MCP_LETTA_LLM_BASE_URL": scripted_llm.base_url,
        "MCP_LETTA_MODEL": "scripted-model", "MCP_LETTA_LLM_MAX_RETRIES": "0", "MCP_LETTA_LOG_LEVEL": "WARNING",
        "PYTHONPATH": CHECKOUT,
    }  # fmt: skip
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout
    assert "error: the example did not complete" in done.stderr
    assert "failed" in done.stdout


def test_the_pipeline_runs_as_a_script_on_a_throwaway_database(scripted_llm: ScriptedLLM, tmp_path: Path) -> None:
    scripted_llm.on("I am the editorial researcher", "BRIEF: blocks.")
    scripted_llm.on("I am the editorial writer", "DRAFT: blocks.")
    scripted_llm.on("I am the editorial editor", "FINAL: blocks, edited.")
    env = {
        "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "MCP_LETTA_LLM_BASE_URL": scripted_llm.base_url,
        "MCP_LETTA_MODEL": "scripted-model", "MCP_LETTA_LOG_LEVEL": "WARNING", "PYTHONPATH": CHECKOUT,
    }  # fmt: skip
    script = EXAMPLES / "editorial_pipeline.py"
    done = subprocess.run([sys.executable, str(script), "blocks"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("FINAL: blocks, edited.")
    assert "example.db" in done.stdout and not list(tmp_path.rglob("example.db"))  # deleted with its folder

"""How every example starts: an ``AgentHub`` from the environment, a throwaway database unless told otherwise.

``MCP_LETTA_LLM_BASE_URL``, ``MCP_LETTA_MODEL`` and ``MCP_LETTA_LLM_API_KEY`` pick the LLM (any
OpenAI-compatible endpoint: OpenAI, Ollama, vLLM, llama.cpp). ``MCP_LETTA_DB`` keeps the agents in that
file; without it they live in a temporary file that is deleted at the end, so an example can be run
again and again from scratch.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import anyio

from mcp_letta import AgentHub, LettaError, Settings
from mcp_letta.models import Run

ExampleOutcome = TypeVar("ExampleOutcome")


def example_settings(folder: Path) -> Settings:
    """Settings from the environment, with the database in ``folder`` unless ``MCP_LETTA_DB`` is set."""
    settings = Settings.from_env()
    if not os.environ.get("MCP_LETTA_DB"):
        settings = settings.with_overrides(db_path=folder / "example.db")
    return settings


def run_example(
    main: Callable[[AgentHub], Awaitable[ExampleOutcome]], completed: Callable[[ExampleOutcome], bool]
) -> None:
    """Open a hub from the environment and run ``main(hub)``; exit with status 1 and a readable error if it
    raises or if ``completed(outcome)`` says a run in it did not complete (failed, or still pending).
    """

    async def run(settings: Settings) -> ExampleOutcome:
        async with AgentHub(settings) as hub:
            return await main(hub)

    with tempfile.TemporaryDirectory(prefix="mcp-letta-example-") as folder:
        settings = example_settings(Path(folder))
        if not (settings.llm_base_url or settings.llm_api_key) or not settings.model:
            sys.exit(
                "set MCP_LETTA_LLM_BASE_URL and MCP_LETTA_MODEL (and MCP_LETTA_LLM_API_KEY if the endpoint needs "
                "one), e.g. MCP_LETTA_LLM_BASE_URL=http://localhost:11434/v1 MCP_LETTA_MODEL=qwen2.5:7b"
            )
        print(f"LLM {settings.model} at {settings.llm_base_url or 'OpenAI'}; agents in {settings.db_path}")
        try:
            outcome = anyio.run(run, settings)
        except LettaError as exc:
            sys.exit(f"error: {exc}")
    if not completed(outcome):
        sys.exit("error: the example did not complete; what failed is shown above")


def counted(n: int, noun: str) -> str:
    """``n`` and the noun, plural unless ``n`` is 1: ``counted(1, "message")`` is "1 message"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def section(title: str) -> None:
    """Print a heading between the steps of an example."""
    print(f"\n== {title} " + "=" * max(0, 70 - len(title)))


def show(who: str, text: str | None, width: int = 400) -> None:
    """Print what an agent said, shortened to ``width`` characters."""
    text = (text or "(no reply)").strip()
    print(f"[{who}] {text if len(text) <= width else text[: width - 1] + '…'}")


def show_steps(run: Run) -> None:
    """Print the tool calls of a run, step by step, or say that the model made none."""
    calls = [(step.index, call) for step in run.steps for call in step.tool_calls]
    for index, call in calls:
        print(f"  step {index}: {call.name}({call.arguments}) -> {call.result_preview[:120]!r}")
    if not calls:
        print(f"  ({run.agent_name} called no tool: this pattern needs a model that calls tools)")

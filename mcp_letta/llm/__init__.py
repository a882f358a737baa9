"""The LLM layer: the ``LLMClient`` protocol, the OpenAI-compatible client and the per-agent client pool.

``mcp_letta.testing.ScriptedLLM`` is an OpenAI-compatible stand-in to point these clients at in tests.
"""

from mcp_letta.llm.base import ChatRequest, ChatResponse, LLMClient, ToolChoice, Usage
from mcp_letta.llm.factory import LLMPool
from mcp_letta.llm.openai import OpenAIClient

__all__ = [
    "ChatRequest",
    "ChatResponse",
    "LLMClient",
    "LLMPool",
    "OpenAIClient",
    "ToolChoice",
    "Usage",
]

"""The LLM layer: the ``LLMClient`` protocol, the OpenAI-compatible client and the per-agent client pool.

``mcp_letta.llm.scripted`` (a loopback server for tests and benchmarks) is imported on its own.
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

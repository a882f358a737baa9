"""The LLM contract the runtime depends on: one chat request in, one response (text and tool calls) out.

Requests and responses use OpenAI chat-completion shapes because every server we target speaks them.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from mcp_letta.models import ToolCall

ToolChoice = Literal["auto", "required", "none"]

compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False).encode
"""JSON as request bodies carry it: no spaces, non-ASCII as is (the runtime encodes pieces with it once)."""


def new_call_id() -> str:
    """An id for a tool call the server sent without one."""
    return f"call_{uuid.uuid4().hex[:24]}"


def arguments_json(arguments: Any) -> str:
    """Tool arguments as a JSON string: some servers send an object instead of a string."""
    if arguments is None or arguments == "":
        return "{}"
    if isinstance(arguments, str):
        return arguments
    return json.dumps(arguments, ensure_ascii=False)


class ChatRequest(BaseModel):
    """One chat-completion call: messages and tool schemas in OpenAI format."""

    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[dict[str, Any]] = Field(description="OpenAI chat messages, system prompt first")
    messages_json: str | None = Field(
        default=None,
        description="``messages`` already encoded as a JSON array (the runtime keeps each agent's history encoded)",
    )
    tools: list[dict[str, Any]] = Field(default_factory=list, description="OpenAI function-tool schemas")
    tools_json: str | None = Field(
        default=None, description="``tools`` already encoded as a JSON array (the runtime encodes each tool once)"
    )
    tool_choice: ToolChoice = "auto"
    response_format: dict[str, Any] | None = Field(
        default=None, description="OpenAI's response_format, e.g. a JSON schema the answer must follow"
    )
    temperature: float | None = None
    max_tokens: int | None = None
    # Letta sends parallel_tool_calls=false: one tool per step keeps memory edits ordered.
    parallel_tool_calls: bool = False

    def tool_names(self) -> set[str]:
        """Names of the function tools offered in this request."""
        names: set[str] = set()
        for tool in self.tools:
            function = tool.get("function")
            if isinstance(function, dict) and isinstance(function.get("name"), str):
                names.add(function["name"])
        return names


class Usage(BaseModel):
    """Token counts the server reported for one call (zero when it reported none)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = Field(default=0, description="prompt tokens the server reused from its prompt cache")


class ChatResponse(BaseModel):
    """The assistant's answer: text, tool calls, or both."""

    content: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    finish_reason: str | None = None
    model: str | None = None


@runtime_checkable
class LLMClient(Protocol):
    """Anything that can answer a chat request; ``OpenAIClient`` is the one we ship."""

    prints_calls: bool
    """Whether the model answered a request offering tools by printing its calls as text instead of sending
    native ``tool_calls`` (the runtime's ``auto`` tool mode then switches to JSON answers)."""

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """Send one request and return the parsed answer; raise ``LLMUnavailable`` on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections; the client is unusable afterwards."""
        ...

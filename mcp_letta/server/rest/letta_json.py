"""Our models in Letta's JSON: ``AgentState``, ``Block``, ``Passage``, ``Run`` and the typed Letta messages.

Field names and defaults follow Letta V1 (server 0.16.8, ``letta-client`` 1.x). Pure functions: the
endpoints fetch from ``AgentHub`` and hand the models here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from mcp_letta.models import Agent, Block, Message, Passage, Run
from mcp_letta.runtime.memory_tools import INCLUDE_MULTI_AGENT_TOOLS
from mcp_letta.runtime.messaging_tools import MULTI_AGENT_TOOL_NAMES

# Metadata keys the runtime keeps for itself; Letta keeps the same facts in other fields (``tools``).
INTERNAL_METADATA = (INCLUDE_MULTI_AGENT_TOOLS, "tools")
# Run statuses in Letta's words (``interrupted``, a run whose process died, is a failure to a Letta client).
RUN_STATUS = {"queued": "created", "running": "running", "completed": "completed", "failed": "failed",
              "cancelled": "cancelled", "interrupted": "failed"}  # fmt: skip
STOP_REASONS = {"end_turn", "error", "llm_api_error", "invalid_llm_response", "invalid_tool_call", "max_steps",
                "max_tokens_exceeded", "no_tool_call", "tool_rule", "cancelled", "requires_approval",
                "context_window_overflow_in_system_prompt"}  # fmt: skip
_TOOL_NAMESPACE = uuid.UUID("6c6e7f0e-8d5a-4f0b-9a43-2f1d0c7a5e11")


def iso(moment: datetime | None) -> str | None:
    """A timestamp as ISO 8601 text (Letta's form), or None."""
    return None if moment is None else moment.isoformat()


def tool_id(name: str) -> str:
    """A stable Letta-style id for a built-in tool (``tool-<uuid>``, the same in every process)."""
    return f"tool-{uuid.uuid5(_TOOL_NAMESPACE, name)}"


def tool_json(name: str) -> dict[str, Any]:
    """A built-in tool as Letta's ``Tool``."""
    kind = "letta_multi_agent_core" if name in MULTI_AGENT_TOOL_NAMES else "letta_memory_core"
    return {"id": tool_id(name), "name": name, "tool_type": kind, "source_type": "python", "tags": [],
            "description": None, "json_schema": None}  # fmt: skip


def block_json(block: Block) -> dict[str, Any]:
    """A block as Letta's ``Block`` (``BlockResponse``)."""
    return {
        "id": block.id,
        "label": block.label,
        "value": block.value,
        "limit": block.limit,
        "description": block.description,
        "read_only": block.read_only,
        "metadata": block.metadata,
        "tags": [],
        "is_template": False,
        "template_name": None,
        "hidden": None,
        "preserve_on_migration": False,
        "created_by_id": None,
        "last_updated_by_id": block.updated_by,
    }


def user_metadata(agent: Agent) -> dict[str, Any]:
    """The agent's metadata without the keys the runtime keeps for itself."""
    return {k: v for k, v in agent.metadata.items() if k not in INTERNAL_METADATA}


def agent_json(agent: Agent, tools: Iterable[str], default_model: str) -> dict[str, Any]:
    """An agent as Letta's ``AgentState``; ``tools`` are the names its LLM is offered."""
    settings = agent.model_settings
    model = settings.model or default_model
    llm_config = {
        "model": model,
        "model_endpoint_type": "openai",
        "model_endpoint": settings.base_url,
        "context_window": settings.context_window,
        "temperature": settings.temperature,
        "max_tokens": settings.max_tokens,
        "handle": model,
        "put_inner_thoughts_in_kwargs": False,
        "parallel_tool_calls": False,
    }
    blocks = [block_json(b) for b in agent.blocks]
    return {
        "id": agent.id,
        "name": agent.name,
        "system": agent.system,
        "agent_type": agent.agent_type,
        "description": agent.description,
        "tags": agent.tags,
        "metadata": user_metadata(agent),
        "blocks": blocks,
        "memory": {"blocks": blocks, "agent_type": agent.agent_type, "file_blocks": []},
        "tools": [tool_json(name) for name in tools],
        "tool_rules": [],
        "sources": [],
        "llm_config": llm_config,
        "embedding_config": None,
        "model": model,
        "embedding": None,
        "model_settings": None,
        "timezone": "UTC",
        "identities": [],
        "secrets": [],
        "created_at": iso(agent.created_at),
        "updated_at": iso(agent.updated_at),
    }


def passage_json(passage: Passage) -> dict[str, Any]:
    """An archival passage as Letta's ``Passage``."""
    return {
        "id": passage.id,
        "text": passage.text,
        "tags": passage.tags,
        "metadata": {},
        "archive_id": None,
        "agent_id": passage.agent_id,
        "created_at": iso(passage.created_at),
        "updated_at": iso(passage.created_at),
        "is_deleted": False,
        "embedding": None,
        "embedding_config": None,
        "source_id": None,
        "file_id": None,
        "file_name": None,
    }


def search_result_json(passage: Passage) -> dict[str, Any]:
    """One hit of an archival search, as Letta returns it (``id, timestamp, content, tags``)."""
    return {"id": passage.id, "timestamp": iso(passage.created_at), "content": passage.text, "tags": passage.tags}


def stop_reason(run: Run) -> str:
    """The run's stop reason in Letta's vocabulary (``interrupted`` becomes ``error``)."""
    if run.stop_reason in STOP_REASONS:
        return run.stop_reason
    if run.status == "completed":
        return "end_turn"
    return "cancelled" if run.status == "cancelled" else "error"


def run_json(run: Run) -> dict[str, Any]:
    """A run as Letta's ``Run`` (``created`` while it waits in the queue)."""
    duration = None
    if run.finished_at is not None:
        duration = int((run.finished_at - run.created_at).total_seconds() * 1e9)
    return {
        "id": run.id,
        "agent_id": run.agent_id,
        "status": RUN_STATUS[run.status],
        "stop_reason": stop_reason(run) if run.done else None,
        "background": None,
        "metadata": {"error": run.error} if run.error else {},
        "request_config": None,
        "callback_url": None,
        "created_at": iso(run.created_at),
        "completed_at": iso(run.finished_at),
        "total_duration_ns": duration,
        "ttft_ns": None,
    }


def usage_json(run: Run) -> dict[str, Any]:
    """A run's token usage as Letta's ``usage_statistics``."""
    return {
        "message_type": "usage_statistics",
        "completion_tokens": run.usage.completion_tokens,
        "prompt_tokens": run.usage.prompt_tokens,
        "total_tokens": run.usage.total_tokens,
        "step_count": len(run.steps),
        "run_ids": [run.id],
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "context_tokens": None,
    }


def stop_reason_json(run: Run) -> dict[str, Any]:
    """Letta's ``stop_reason`` message for a finished run."""
    return {"message_type": "stop_reason", "stop_reason": stop_reason(run)}


def _common(message: Message, message_type: str) -> dict[str, Any]:
    return {
        "id": message.id,
        "date": iso(message.created_at),
        "name": None,
        "message_type": message_type,
        "otid": None,
        "sender_id": message.sender,
        "step_id": None,
        "is_err": None,
        "seq_id": message.seq,
        "run_id": message.run_id,
    }


def _tool_outcome(content: str) -> tuple[str, str]:
    """``(status, text)`` of a stored tool result: Letta's ``{"status": "OK"|"Failed", "message"}`` JSON."""
    try:
        payload = json.loads(content)
    except ValueError:
        return "success", content
    if not isinstance(payload, dict) or "status" not in payload:
        return "success", content
    status = "success" if payload.get("status") == "OK" else "error"
    text = payload.get("message")
    return status, text if isinstance(text, str) else json.dumps(text)


def letta_messages(message: Message) -> list[dict[str, Any]]:
    """One stored message as Letta's typed messages: an assistant turn with tool calls becomes an optional
    ``reasoning_message`` (its text) and one ``tool_call_message`` per call; a tool result becomes a
    ``tool_return_message``; a plain assistant turn an ``assistant_message``."""
    if message.role == "user":
        return [{**_common(message, "user_message"), "content": message.content}]
    if message.role == "system":
        return [{**_common(message, "system_message"), "content": message.content}]
    if message.role == "tool":
        status, text = _tool_outcome(message.content)
        return [{
            **_common(message, "tool_return_message"), "name": message.name, "tool_return": text, "status": status,
            "tool_call_id": message.tool_call_id or "", "stdout": None,
            "stderr": [text] if status == "error" else None,
        }]  # fmt: skip
    if not message.tool_calls:
        return [{**_common(message, "assistant_message"), "content": message.content}]
    shown: list[dict[str, Any]] = []
    if message.content.strip():
        shown.append({**_common(message, "reasoning_message"), "reasoning": message.content,
                      "source": "non_reasoner_model", "signature": None})  # fmt: skip
    for call in message.tool_calls:
        body = {"name": call.name, "arguments": call.arguments, "tool_call_id": call.id}
        shown.append({**_common(message, "tool_call_message"), "tool_call": body, "tool_calls": [body]})
    return shown


def run_output(messages: Iterable[Message]) -> list[dict[str, Any]]:
    """What a run said, as Letta's response lists it: every message but the input."""
    return [shown for m in messages if m.role not in ("user", "system") for shown in letta_messages(m)]

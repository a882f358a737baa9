"""Letta's V1 REST endpoints over ``AgentHub``: one table (``ENDPOINTS``) of thin handlers, each naming the
``letta-client`` method that calls it; the OpenAPI document and the Starlette routes are both made from it.

Every handler calls hub methods and shapes the result with ``letta_json``; errors become Letta's
``{"detail": ...}`` with its status codes (404 unknown id, 409 conflict, 422 bad input).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, TypeVar

import anyio
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from mcp_letta import __version__
from mcp_letta.config import comma_list
from mcp_letta.errors import (
    Conflict,
    Deadlock,
    Invalid,
    LettaError,
    LimitExceeded,
    NotFound,
    StorageUnavailable,
    Timeout,
    validation_problems,
)
from mcp_letta.hub import MAX_WAIT_S, AgentHub, every_page
from mcp_letta.models import (
    Agent,
    BlockSpec,
    Message,
    ModelSettings,
    Page,
    Passage,
    Run,
    StepEvent,
    read_moment,
)
from mcp_letta.runtime.memory_tools import DEFAULT_TOOL_NAMES
from mcp_letta.runtime.messaging_tools import MULTI_AGENT_TOOL_NAMES
from mcp_letta.server.rest import letta_json as lj
from mcp_letta.server.rest.agent_file import AgentFileError, export_agent, file_from_multipart, import_agent_file
from mcp_letta.store.limits import MAX_PAGE

log = logging.getLogger("mcp_letta.rest")

# Letta's CORE_MEMORY_BLOCK_CHAR_LIMIT: the default limit of a block made over REST.
LETTA_BLOCK_LIMIT = 100_000
DEFAULT_PAGE = 50
MESSAGES_PAGE = 100
KEEPALIVE_S = 20.0  # Letta's stream sends a ping this often while a step runs


T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class RestError(Exception):
    """An HTTP error with Letta's body ``{"detail": ...}``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


# -- request bodies ------------------------------------------------------------------------------------
class Body(BaseModel):
    """A request body: the fields we act on are declared; ``IGNORED`` fields (Letta settings that have no
    meaning here, e.g. embedding models) are accepted and dropped; any other field is refused by name."""

    model_config = ConfigDict(extra="allow")
    IGNORED: ClassVar[tuple[str, ...]] = ()

    def check_fields(self) -> None:
        """Refuse the fields we do not serve, naming them (a silent drop would change the program's meaning)."""
        unknown = sorted(set(self.model_extra or {}) - set(self.IGNORED))
        if unknown:
            raise RestError(422, f"mcp-letta does not support the field(s) {', '.join(unknown)} on this endpoint: "
                                 "remove them (see /v1/openapi.json for what is served)")  # fmt: skip


class BlockIn(Body):
    """A block in ``memory_blocks`` or ``POST /v1/blocks/``."""

    IGNORED = ("is_template", "template_name", "template_id", "base_template_id", "deployment_id", "entity_id",
               "hidden", "preserve_on_migration", "project_id", "tags")  # fmt: skip
    label: str
    value: str = ""
    limit: int = LETTA_BLOCK_LIMIT
    description: str | None = None
    read_only: bool = False
    metadata: dict[str, Any] | None = None

    def spec(self) -> BlockSpec:
        """As the hub's ``BlockSpec``."""
        self.check_fields()
        try:
            return BlockSpec(label=self.label, value=self.value, limit=self.limit, description=self.description,
                             read_only=self.read_only, metadata=self.metadata or {})  # fmt: skip
        except ValidationError as exc:  # (a limit below 1: a 422, not a 500 letta-client would send again)
            raise RestError(422, f"block {self.label!r}: {validation_problems(exc)}") from None


class BlockPatch(Body):
    """``PATCH`` of a block (by id, or by label within an agent)."""

    IGNORED = BlockIn.IGNORED
    value: str | None = None
    limit: int | None = None
    description: str | None = None
    read_only: bool | None = None
    metadata: dict[str, Any] | None = None
    label: str | None = None


class LLMConfigIn(BaseModel):
    """The parts of Letta's ``llm_config`` that map onto our model settings."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    model_endpoint: str | None = None
    context_window: int | None = None
    temperature: float | None = None
    max_tokens: int | None = None


class AgentSettingsIn(Body):
    """Fields shared by agent create and update."""

    IGNORED = ("agent_type", "embedding", "embedding_config", "embedding_chunk_size", "include_base_tools",
               "include_base_tool_rules", "include_default_source", "timezone", "project", "project_id",
               "hidden", "base_template_id", "template_id", "template", "enable_sleeptime",
               "message_buffer_autoclear", "parallel_tool_calls", "max_files_open",
               "per_file_view_window_char_limit", "compaction_settings", "reasoning", "enable_reasoner",
               "max_reasoning_tokens", "identity_ids", "source_ids", "folder_ids", "last_run_completion",
               "last_run_duration_ms", "last_stop_reason")  # fmt: skip
    name: str | None = None
    description: str | None = None
    system: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, Any] | None = None
    block_ids: list[str] | None = None
    tools: list[str] | None = None
    tool_ids: list[str] | None = None
    tool_rules: list[Any] | None = None
    include_multi_agent_tools: bool | None = None
    model: str | None = None
    context_window_limit: int | None = None
    max_tokens: int | None = None
    llm_config: LLMConfigIn | None = None
    model_settings: dict[str, Any] | None = None

    def settings(self) -> ModelSettings | None:
        """Our model settings from ``model``, ``llm_config``, ``context_window_limit`` and ``model_settings``."""
        values: dict[str, Any] = {}
        if self.llm_config is not None:
            values = {"model": self.llm_config.model, "base_url": self.llm_config.model_endpoint,
                      "context_window": self.llm_config.context_window,
                      "temperature": self.llm_config.temperature, "max_tokens": self.llm_config.max_tokens}  # fmt: skip
        if self.model is not None:
            values["model"] = self.model.split("/", 1)[-1]  # a Letta handle is "<provider>/<model>"
        if self.context_window_limit is not None:
            values["context_window"] = self.context_window_limit
        if self.max_tokens is not None:
            values["max_tokens"] = self.max_tokens
        if self.model_settings:
            if "temperature" in self.model_settings:
                values["temperature"] = self.model_settings["temperature"]
            if "max_output_tokens" in self.model_settings:
                values["max_tokens"] = self.model_settings["max_output_tokens"]
        values = {k: v for k, v in values.items() if v is not None}
        if not values:
            return None
        try:
            return ModelSettings(**values)
        except ValidationError as exc:
            raise RestError(422, validation_problems(exc)) from None

    def tool_choice(self, hub: AgentHub) -> tuple[list[str] | None, bool | None]:
        """``(built-in tool list for metadata["tools"] or None for the defaults, multi-agent flag)``.

        Letta adds ``tools`` to its base tools; an unknown name is refused (we run no custom code).
        """
        if self.tool_rules:
            raise RestError(422, "tool_rules are not supported by mcp-letta: agents run Letta V1's loop "
                                 "(tools until a turn has no tool call); remove tool_rules")  # fmt: skip
        by_id = _builtins_by_id(hub)
        names = list(self.tools or [])
        missing_ids = [i for i in self.tool_ids or [] if i not in by_id]
        if missing_ids:
            raise RestError(404, f"Tools not found by id: {missing_ids}")
        names += [by_id[i] for i in self.tool_ids or []]
        known = set(hub.known_tool_names())
        missing = [n for n in names if n not in known]
        if missing:
            raise RestError(422, f"Tools not found by name: {missing}. mcp-letta runs Letta's built-in memory, "
                                 f"search and multi-agent tools only ({', '.join(sorted(known))}); custom Python "
                                 "tools are not run: remove them or use an MCP client for your own tools")  # fmt: skip
        multi = any(n in MULTI_AGENT_TOOL_NAMES for n in names) or None
        if self.include_multi_agent_tools is not None:
            multi = self.include_multi_agent_tools or multi
        extra = [n for n in names if n not in MULTI_AGENT_TOOL_NAMES and n not in DEFAULT_TOOL_NAMES]
        chosen = [*DEFAULT_TOOL_NAMES, *dict.fromkeys(extra)] if extra else None
        return chosen, multi


class AgentCreate(AgentSettingsIn):
    """``POST /v1/agents/``."""

    IGNORED = (*AgentSettingsIn.IGNORED, "memory_variables", "secrets", "tool_exec_environment_variables")
    memory_blocks: list[BlockIn] = []
    initial_message_sequence: list[Any] | None = None


class AgentPatch(AgentSettingsIn):
    """``PATCH /v1/agents/{agent_id}``."""

    IGNORED = (*AgentSettingsIn.IGNORED, "secrets", "tool_exec_environment_variables")
    message_ids: list[str] | None = None


class MessageIn(BaseModel):
    """One input message: role ``user`` or ``system``, text or a list of text parts."""

    model_config = ConfigDict(extra="ignore")
    role: str = "user"
    content: str | list[dict[str, Any]]


class MessagesIn(Body):
    """``POST /v1/agents/{agent_id}/messages`` (and ``/stream``, ``/async``)."""

    IGNORED = ("max_steps", "use_assistant_message", "assistant_message_tool_name", "assistant_message_tool_kwarg",
               "enable_thinking", "stream_tokens", "include_pings", "background",
               "return_logprobs", "top_logprobs", "return_token_ids", "include_compaction_messages")  # fmt: skip
    messages: list[MessageIn] | None = None
    input: str | list[dict[str, Any]] | None = None
    include_return_message_types: list[str] | None = None
    streaming: bool = False

    def one_input(self) -> tuple[str, str]:
        """``(role, text)`` of the one message a run takes."""
        if self.input is not None:
            return "user", text_of(self.input)
        if not self.messages:
            raise RestError(422, "send 'messages' (a list with one message) or 'input' (the text to send)")
        if len(self.messages) != 1:
            raise RestError(422, f"{len(self.messages)} messages given; mcp-letta takes one message per request "
                                 "(a run answers one input): send them one at a time")  # fmt: skip
        message = self.messages[0]
        if message.role not in ("user", "system"):
            raise RestError(422, f"role {message.role!r} is not accepted: send role 'user' or 'system'")
        return message.role, text_of(message.content)


def text_of(content: str | list[dict[str, Any]]) -> str:
    """The text of Letta message content: a string, or a list of ``{"type": "text", "text": ...}`` parts."""
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise RestError(422, f"content part of type {part.get('type')!r} is not supported: send text parts")
        texts.append(part["text"])
    return "\n".join(texts)


class PassageIn(Body):
    """``POST /v1/agents/{agent_id}/archival-memory``."""

    IGNORED = ("created_at",)
    text: str
    tags: list[str] | None = None


class CancelIn(Body):
    """``POST /v1/agents/{agent_id}/messages/cancel``."""

    run_ids: list[str] | None = None


class ResetIn(Body):
    """``PATCH /v1/agents/{agent_id}/reset-messages``."""

    add_default_initial_messages: bool = False


# -- a call: the request, its parsed parts and the hub -----------------------------------------------------
@dataclass
class Call:
    """One request to an endpoint: path parameters, query, body (size-checked) and the hub."""

    request: Request
    hub: AgentHub
    max_body_bytes: int
    keepalive_s: float = KEEPALIVE_S

    @property
    def path(self) -> dict[str, str]:
        """The path parameters."""
        return self.request.path_params

    def query(self, name: str, default: Any = None) -> Any:
        """A single query parameter (text), or ``default``."""
        return self.request.query_params.get(name, default)

    def query_list(self, name: str) -> list[str]:
        """A repeated query parameter (``tags=a&tags=b``)."""
        return self.request.query_params.getlist(name)

    def query_int(self, name: str, default: int | None) -> int | None:
        """An integer query parameter."""
        raw = self.query(name)
        if raw is None or raw == "":
            return default
        try:
            return int(raw)
        except ValueError:
            raise RestError(422, f"{name} must be a whole number (got {raw[:40]!r})") from None

    def query_bool(self, name: str, default: bool) -> bool:
        """A boolean query parameter (``true``/``false``)."""
        raw = self.query(name)
        if raw is None:
            return default
        if raw.lower() in ("true", "1"):
            return True
        if raw.lower() in ("false", "0"):
            return False
        raise RestError(422, f"{name} must be true or false (got {raw[:40]!r})")

    async def raw_body(self) -> bytes:
        """The body, refused with 413 past ``max_body_bytes`` (checked as it arrives, not only by header)."""
        declared = self.request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise RestError(413, f"the request body is {declared} bytes; at most {self.max_body_bytes} are accepted")
        chunks, size = [], 0
        async for chunk in self.request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise RestError(413, f"the request body is over {self.max_body_bytes} bytes, the most accepted")
            chunks.append(chunk)
        return b"".join(chunks)

    async def json(self) -> Any:
        """The JSON body (``{}`` when empty)."""
        raw = await self.raw_body()
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise RestError(422, "the request body is not valid JSON") from None

    async def body(self, model: type[M]) -> M:
        """The JSON body validated as ``model`` (422 naming each problem)."""
        data = await self.json()
        try:
            parsed = model.model_validate(data)
        except ValidationError as exc:
            raise RestError(422, validation_problems(exc)) from None
        if isinstance(parsed, Body):
            parsed.check_fields()
        return parsed

    def agent_state(self, agent: Agent) -> dict[str, Any]:
        """An agent as Letta's ``AgentState``."""
        return lj.agent_json(agent, self.hub.tool_names(agent), self.hub.settings.model)


Handler = Callable[[Call], Awaitable[Any]]


@dataclass(frozen=True)
class Endpoint:
    """One served route: method, path under ``/v1``, handler, and the ``letta-client`` method that calls it."""

    method: str
    path: str
    handler: Handler
    sdk: str
    summary: str
    query: tuple[str, ...] = ()
    body: type[BaseModel] | None = None
    status: int = 200
    tags: tuple[str, ...] = field(default=())


def page_limit(call: Call, default: int) -> int:
    """The ``limit`` the caller asked for (``default`` without one); 422 below 1."""
    limit = call.query_int("limit", default) or default
    if limit < 1:
        raise RestError(422, f"limit must be at least 1 (got {limit})")
    return limit


def page(items: Sequence[T], call: Call, key: Callable[[T], str], *, default_limit: int = DEFAULT_PAGE) -> list[T]:
    """Letta's cursor pagination over an ordered list: items after ``after`` / before ``before`` (ids), at
    most ``limit`` (when ``before`` is given, the ones just before it)."""
    limit = page_limit(call, default_limit)
    ids = [key(item) for item in items]
    after, before = call.query("after"), call.query("before")
    start, end = 0, len(items)
    if after:
        start = ids.index(after) + 1 if after in ids else len(items)
    if before:
        end = ids.index(before) if before in ids else 0
    chosen = list(items[start:end])
    return chosen[-limit:] if before and not after else chosen[:limit]


Fetch = Callable[[bool, str | None, int], Awaitable[Page[T]]]  # (oldest_first, after_id, limit) -> a page


async def stored_page(call: Call, fetch: Fetch[T], key: Callable[[T], str], *, default_order: str) -> list[T]:
    """``page`` done by the store for a listing too long to hold (``fetch`` reads one page of it, in either
    order, after an id): at most ``limit`` items in ``order`` after ``after``, or (``before`` alone) the ones
    just before ``before``. At most ``MAX_PAGE`` a page."""
    limit = min(page_limit(call, MESSAGES_PAGE), MAX_PAGE)
    oldest_first = order_of(call, default_order) == "asc"
    after, before = call.query("after"), call.query("before")
    if before and not after:  # the ones just before it: the first ones after it the other way round
        return list(reversed((await fetch(not oldest_first, before, limit)).items))
    items = (await fetch(oldest_first, after or None, limit)).items
    ids = [key(item) for item in items]
    return items[: ids.index(before)] if before in ids else items


def order_of(call: Call, default: str) -> str:
    """The ``order`` the caller asked for: "asc" or "desc" (also as ``ascending``)."""
    order = call.query("order", default)
    if call.query("ascending") is not None:
        order = "asc" if call.query_bool("ascending", True) else "desc"
    if order not in ("asc", "desc"):
        raise RestError(422, f"order must be 'asc' or 'desc' (got {order[:20]!r})")
    return order


def ordered(items: Sequence[T], call: Call, *, default: str = "desc") -> list[T]:
    """``items`` (oldest first) in the ``order`` the caller asked for (``asc``/``desc``, or ``ascending``)."""
    return list(items) if order_of(call, default) == "asc" else list(reversed(items))


# -- agents ------------------------------------------------------------------------------------------------
def _new_agent_name() -> str:
    return f"agent-{uuid.uuid4().hex[:8]}"


async def create_agent(call: Call) -> Any:
    """POST /v1/agents/"""
    body = await call.body(AgentCreate)
    if body.initial_message_sequence:
        raise RestError(422, "initial_message_sequence is not supported: send the messages after creating the agent")
    specs = [b.spec() for b in body.memory_blocks]
    tools, multi = body.tool_choice(call.hub)
    metadata = dict(body.metadata or {})
    if tools is not None:
        metadata["tools"] = tools
    agent = await call.hub.create_agent(
        body.name or _new_agent_name(), system=body.system, description=body.description, blocks=specs,
        shared_blocks=body.block_ids or [], tags=body.tags or [], model_settings=body.settings(),
        metadata=metadata, include_multi_agent_tools=bool(multi), default_limit=LETTA_BLOCK_LIMIT,
    )  # fmt: skip
    return call.agent_state(agent)


async def list_agents(call: Call) -> Any:
    """GET /v1/agents/"""
    agents = await every_page(
        call.hub.list_agents, tags=call.query_list("tags"), match_all_tags=call.query_bool("match_all_tags", False),
        query=call.query("query_text") or None,
    )  # fmt: skip
    name = call.query("name")
    if name is not None:
        agents = [a for a in agents if a.name == name]
    agents.sort(key=lambda a: (a.created_at, a.id))
    return [call.agent_state(a) for a in page(ordered(agents, call), call, key=lambda a: a.id)]


async def retrieve_agent(call: Call) -> Any:
    """GET /v1/agents/{agent_id}"""
    return call.agent_state(await call.hub.get_agent(call.path["agent_id"]))


async def update_agent(call: Call) -> Any:
    """PATCH /v1/agents/{agent_id}"""
    body = await call.body(AgentPatch)
    if body.message_ids is not None:
        raise RestError(422, "setting message_ids is not supported: use reset-messages to empty the context window")
    hub, ref = call.hub, call.path["agent_id"]
    agent = await hub.get_agent(ref)
    tools, multi = body.tool_choice(hub) if body.tools or body.tool_ids or body.tool_rules else (None, None)
    metadata = body.metadata
    if tools is not None:
        metadata = {**(agent.metadata if metadata is None else metadata), "tools": tools}
    agent = await hub.update_agent(
        agent.id, name=body.name, description=body.description, system=body.system, tags=body.tags,
        model_settings=body.settings(), metadata=metadata,
        include_multi_agent_tools=multi if multi is not None else body.include_multi_agent_tools,
    )  # fmt: skip
    if body.block_ids is not None:
        wanted, current = set(body.block_ids), {b.id for b in agent.blocks}
        for block_id in current - wanted:
            await hub.detach_block(agent.id, block_id)
        for block_id in [b for b in body.block_ids if b not in current]:
            await hub.attach_block(agent.id, block_id)
        agent = await hub.get_agent(agent.id)
    return call.agent_state(agent)


async def delete_agent(call: Call) -> Any:
    """DELETE /v1/agents/{agent_id}"""
    await call.hub.delete_agent(call.path["agent_id"])
    return None


# -- blocks ------------------------------------------------------------------------------------------------
async def _patch_block(call: Call, block: str, agent: str | None) -> Any:
    body = await call.body(BlockPatch)
    hub = call.hub
    current = await hub.read_block(block, agent=agent)
    if body.label is not None and body.label != current.label:
        raise RestError(422, f"renaming a block is not supported (label {current.label!r} -> {body.label!r}): "
                             "create a block with the new label and attach it instead")  # fmt: skip
    meta = {"limit": body.limit, "description": body.description, "read_only": body.read_only,
            "metadata": body.metadata}  # fmt: skip
    change_meta = any(v is not None for v in meta.values())
    # The order keeps every step valid: a value that fits the current limit goes first (then the limit may
    # shrink to it); otherwise the limit is raised first.
    value_first = body.value is not None and len(body.value) <= current.limit
    if body.value is not None and value_first:
        current = await hub.write_block(current.id, body.value)
    if change_meta:
        current = await hub.update_block(current.id, **meta)
    if body.value is not None and not value_first:
        current = await hub.write_block(current.id, body.value)
    return lj.block_json(current)


async def list_agent_blocks(call: Call) -> Any:
    """GET /v1/agents/{agent_id}/core-memory/blocks"""
    agent = await call.hub.get_agent(call.path["agent_id"])
    return [lj.block_json(b) for b in page(agent.blocks, call, key=lambda b: b.id)]


async def retrieve_agent_block(call: Call) -> Any:
    """GET /v1/agents/{agent_id}/core-memory/blocks/{block_label}"""
    agent = await call.hub.get_agent(call.path["agent_id"])
    return lj.block_json(_block_by_label(agent, call.path["block_label"]))


def _block_by_label(agent: Agent, label: str) -> Any:
    for block in agent.blocks:
        if block.label == label:
            return block
    raise RestError(404, f"No block with label '{label}' found for agent '{agent.id}'")


async def update_agent_block(call: Call) -> Any:
    """PATCH /v1/agents/{agent_id}/core-memory/blocks/{block_label}"""
    agent = await call.hub.get_agent(call.path["agent_id"])
    block = _block_by_label(agent, call.path["block_label"])
    return await _patch_block(call, block.id, None)


async def attach_block(call: Call) -> Any:
    """PATCH /v1/agents/{agent_id}/core-memory/blocks/attach/{block_id}"""
    await call.hub.attach_block(call.path["agent_id"], call.path["block_id"])
    return call.agent_state(await call.hub.get_agent(call.path["agent_id"]))


async def detach_block(call: Call) -> Any:
    """PATCH /v1/agents/{agent_id}/core-memory/blocks/detach/{block_id}"""
    await call.hub.detach_block(call.path["agent_id"], call.path["block_id"])
    return call.agent_state(await call.hub.get_agent(call.path["agent_id"]))


# -- tools: Letta's built-in tools, the only ones agents here run -------------------------------------------
TOOL_QUERY = ("name", "names", "search", "tool_ids", "tool_types", "exclude_tool_types", "return_only_letta_tools",
              "limit", "after", "before", "order", "order_by")  # fmt: skip


def _builtins_by_id(hub: AgentHub) -> dict[str, str]:
    """Letta's built-in tools, name by tool id."""
    return {lj.tool_id(name): name for name in hub.known_tool_names()}


def _builtin_tool(call: Call, tool_id: str) -> str:
    """The name of the built-in tool with this id (404 as Letta words it)."""
    name = _builtins_by_id(call.hub).get(tool_id)
    if name is None:
        raise RestError(404, f"Tool with id {tool_id} not found")
    return name


def _agent_builtins(hub: AgentHub, agent: Agent) -> list[str]:
    """The built-in tools an agent is offered, in order (its ``ask_<name>`` tools are not Letta tools)."""
    known = set(hub.known_tool_names())
    return [name for name in hub.tool_names(agent) if name in known]


async def list_tools(call: Call) -> Any:
    """GET /v1/tools/"""
    tools = [lj.tool_json(name) for name in sorted(call.hub.known_tool_names())]
    names = set(call.query_list("names")) | ({call.query("name")} if call.query("name") else set())
    wanted_ids = set(_comma_list(call, "tool_ids"))
    types, excluded = set(_comma_list(call, "tool_types")), set(_comma_list(call, "exclude_tool_types"))
    search = (call.query("search") or "").lower()
    tools = [t for t in tools if (not names or t["name"] in names) and (not wanted_ids or t["id"] in wanted_ids)
             and (not types or t["tool_type"] in types) and t["tool_type"] not in excluded
             and search in t["name"].lower()]  # fmt: skip
    return page(ordered(tools, call, default="asc"), call, key=lambda t: t["id"])


def _comma_list(call: Call, name: str) -> list[str]:
    """A list query parameter given repeated or comma-separated (both are Letta's)."""
    return [part for value in call.query_list(name) for part in comma_list(value)]


async def retrieve_tool(call: Call) -> Any:
    """GET /v1/tools/{tool_id}"""
    return lj.tool_json(_builtin_tool(call, call.path["tool_id"]))


async def list_agent_tools(call: Call) -> Any:
    """GET /v1/agents/{agent_id}/tools"""
    agent = await call.hub.get_agent(call.path["agent_id"])
    tools = [lj.tool_json(name) for name in _agent_builtins(call.hub, agent)]
    return page(ordered(tools, call, default="asc"), call, key=lambda t: t["id"])


async def attach_tool(call: Call) -> Any:
    """PATCH /v1/agents/{agent_id}/tools/attach/{tool_id}"""
    name = _builtin_tool(call, call.path["tool_id"])
    agent = await call.hub.get_agent(call.path["agent_id"])
    offered = _agent_builtins(call.hub, agent)
    if name not in offered:
        await call.hub.update_agent(agent.id, metadata={**agent.metadata, "tools": [*offered, name]})
    return call.agent_state(await call.hub.get_agent(agent.id))


async def detach_tool(call: Call) -> Any:
    """PATCH /v1/agents/{agent_id}/tools/detach/{tool_id}"""
    name = _builtin_tool(call, call.path["tool_id"])
    agent = await call.hub.get_agent(call.path["agent_id"])
    offered = _agent_builtins(call.hub, agent)
    if name in offered:  # the list says it all: the multi-agent flag would add the tool back
        kept = {**agent.metadata, "tools": [n for n in offered if n != name]}
        await call.hub.update_agent(agent.id, metadata=kept, include_multi_agent_tools=False)
    return call.agent_state(await call.hub.get_agent(agent.id))


async def create_block(call: Call) -> Any:
    """POST /v1/blocks/"""
    spec = (await call.body(BlockIn)).spec()
    block = await call.hub.create_block(spec.label, spec.value, limit=spec.limit, description=spec.description,
                                        read_only=spec.read_only, metadata=spec.metadata)  # fmt: skip
    return lj.block_json(block)


async def list_blocks(call: Call) -> Any:
    """GET /v1/blocks/"""
    blocks = await every_page(call.hub.list_blocks, label=call.query("label") or None)
    label_search, value_search = call.query("label_search"), call.query("value_search")
    if label_search:
        blocks = [b for b in blocks if label_search.lower() in b.label.lower()]
    if value_search:
        blocks = [b for b in blocks if value_search.lower() in b.value.lower()]
    blocks.sort(key=lambda b: (b.created_at, b.id))
    return [lj.block_json(b) for b in page(ordered(blocks, call, default="asc"), call, key=lambda b: b.id)]


async def retrieve_block(call: Call) -> Any:
    """GET /v1/blocks/{block_id}"""
    return lj.block_json(await call.hub.read_block(call.path["block_id"]))


async def update_block(call: Call) -> Any:
    """PATCH /v1/blocks/{block_id}"""
    return await _patch_block(call, call.path["block_id"], None)


async def delete_block(call: Call) -> Any:
    """DELETE /v1/blocks/{block_id}"""
    await call.hub.delete_block(call.path["block_id"])
    return None


async def list_block_agents(call: Call) -> Any:
    """GET /v1/blocks/{block_id}/agents"""
    block = await call.hub.read_block(call.path["block_id"])
    agents = [await call.hub.get_agent(agent_id) for agent_id, _ in await call.hub.block_agents(block.id)]
    return [call.agent_state(a) for a in page(agents, call, key=lambda a: a.id)]


# -- archival memory (passages) ------------------------------------------------------------------------------
async def create_passage(call: Call) -> Any:
    """POST /v1/agents/{agent_id}/archival-memory"""
    body = await call.body(PassageIn)
    passage = await call.hub.archival_insert(call.path["agent_id"], body.text, tags=body.tags)
    return [lj.passage_json(passage)]


async def list_passages(call: Call) -> Any:
    """GET /v1/agents/{agent_id}/archival-memory"""
    ref = call.path["agent_id"]
    search = call.query("search")
    if search:  # the best MAX_PAGE matches, in time order
        found = await call.hub.archival_search(ref, search, limit=MAX_PAGE)
        chosen = ordered(sorted(found, key=lambda p: (p.created_at, p.id)), call, default="asc")
        return [lj.passage_json(p) for p in page(chosen, call, key=lambda p: p.id, default_limit=MESSAGES_PAGE)]

    def fetch(oldest_first: bool, after_id: str | None, limit: int) -> Awaitable[Page[Passage]]:
        return call.hub.archival_list(ref, limit=limit, oldest_first=oldest_first, after_id=after_id)

    return [lj.passage_json(p) for p in await stored_page(call, fetch, lambda p: p.id, default_order="asc")]


def _moment(call: Call, name: str) -> datetime | None:
    """A date or time query parameter (ISO 8601; one without a zone is UTC), compared as a moment, not as text."""
    text = call.query(name)
    if not text:
        return None
    try:
        return read_moment(text)
    except ValueError:
        example = "2026-12-01T09:30:00Z"
        raise RestError(422, f"{name} must be an ISO 8601 date or time, e.g. {example} (got {text[:40]!r})") from None


async def search_passages(call: Call) -> Any:
    """GET /v1/agents/{agent_id}/archival-memory/search"""
    query = call.query("query")
    if not query:
        raise RestError(422, "query is required: pass the text to search archival memory for")
    mode = call.query("tag_match_mode", "any")
    if mode not in ("any", "all"):
        raise RestError(422, f"tag_match_mode must be 'any' or 'all' (got {mode[:20]!r})")
    top_k = call.query_int("top_k", 10) or 10
    hits = await call.hub.archival_search(call.path["agent_id"], query, tags=call.query_list("tags"),
                                          tag_match=mode, limit=top_k)  # fmt: skip
    start, end = _moment(call, "start_datetime"), _moment(call, "end_datetime")
    hits = [p for p in hits if (start is None or p.created_at >= start) and (end is None or p.created_at <= end)]
    return {"results": [lj.search_result_json(p) for p in hits], "count": len(hits)}


async def delete_passage(call: Call) -> Any:
    """DELETE /v1/agents/{agent_id}/archival-memory/{memory_id}"""
    await call.hub.archival_delete(call.path["agent_id"], call.path["memory_id"])
    return None


# -- messages -----------------------------------------------------------------------------------------------
def _filtered(messages: list[dict[str, Any]], types: list[str] | None) -> list[dict[str, Any]]:
    return messages if not types else [m for m in messages if m["message_type"] in types]


async def letta_response(hub: AgentHub, run: Run, types: list[str] | None) -> dict[str, Any]:
    """Letta's ``LettaResponse`` for a finished run: its messages, ``stop_reason`` and ``usage``."""
    messages = lj.run_output(await hub.run_messages(run.id))
    response = {"messages": _filtered(messages, types), "stop_reason": lj.stop_reason_json(run),
                "usage": lj.usage_json(run), "logprobs": None, "turns": None}  # fmt: skip
    if run.status == "failed":  # why, beside the stop reason (not Letta's field: letta-client keeps it in model_extra)
        response["error"] = _run_error(run)
    return response


def _run_error(run: Run) -> dict[str, Any]:
    """Letta's ``error_message`` for a run that failed: its stop reason and why (the LLM endpoint down, ...)."""
    return {"message_type": "error_message", "error_type": run.stop_reason or "error", "run_id": run.id,
            "message": run.error or "the run failed", "detail": None}  # fmt: skip


async def create_message(call: Call) -> Any:
    """POST /v1/agents/{agent_id}/messages"""
    body = await call.body(MessagesIn)
    role, text = body.one_input()
    if body.streaming:  # letta-client 1.x: create(..., streaming=True) is the stream endpoint's successor
        agent = await call.hub.get_agent(call.path["agent_id"])
        return SSE(call.hub, agent.id, role, text, body.include_return_message_types, call.keepalive_s)
    run = await call.hub.send_message(call.path["agent_id"], text, role=role, wait_s=MAX_WAIT_S)  # type: ignore[arg-type]
    return await letta_response(call.hub, run, body.include_return_message_types)


async def create_message_async(call: Call) -> Any:
    """POST /v1/agents/{agent_id}/messages/async"""
    body = await call.body(MessagesIn)
    role, text = body.one_input()
    run = await call.hub.send_message(call.path["agent_id"], text, role=role)  # type: ignore[arg-type]
    shown = lj.run_json(run)
    shown["background"] = True
    shown["metadata"] = {**shown["metadata"], "run_type": "send_message_async"}
    return shown


class SSE:
    """Letta's message stream: ``data: {json}`` events (a ping, each message as its step commits, then
    ``stop_reason`` and ``usage_statistics``) and ``data: [DONE]``."""

    def __init__(
        self, hub: AgentHub, agent: str, role: str, text: str, types: list[str] | None, keepalive_s: float
    ) -> None:
        self.hub, self.agent, self.role, self.text, self.types = hub, agent, role, text, types
        self.keepalive_s = keepalive_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the message and send its events as they happen."""
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no")]})  # fmt: skip

        async def event(payload: Any) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            await send({"type": "http.response.body", "body": f"data: {data}\n\n".encode(), "more_body": True})

        await event({"message_type": "ping"})
        progress_send, progress = anyio.create_memory_object_stream[str | Run | LettaError](100)
        sent: set[tuple[str, str, str | None]] = set()

        async def new_messages(run_id: str) -> None:
            for shown in lj.run_output(await self.hub.run_messages(run_id)):
                ident = (shown["id"], shown["message_type"], (shown.get("tool_call") or {}).get("tool_call_id"))
                if ident in sent:
                    continue
                sent.add(ident)
                if not self.types or shown["message_type"] in self.types:
                    await event(shown)

        async def on_step(step: StepEvent) -> None:
            await progress_send.send(step.run_id)

        async def run_it() -> None:
            async with progress_send:
                try:
                    run = await self.hub.send_message(self.agent, self.text, role=self.role,  # type: ignore[arg-type]
                                                      wait_s=MAX_WAIT_S, on_step=on_step)  # fmt: skip
                except LettaError as exc:  # e.g. the agent was deleted meanwhile: the stream says so and ends
                    await progress_send.send(exc)
                    return
                await progress_send.send(run)

        async with anyio.create_task_group() as tg:
            tg.start_soon(run_it)
            async with progress:
                while True:
                    item: str | Run | LettaError | None = None
                    with anyio.move_on_after(self.keepalive_s):  # a long step: keep proxies from closing us
                        try:
                            item = await progress.receive()
                        except anyio.EndOfStream:
                            break
                    if item is None:
                        await event({"message_type": "ping"})
                        continue
                    if isinstance(item, str):
                        await new_messages(item)
                        continue
                    if isinstance(item, LettaError):
                        await event({"message_type": "error_message", "error_type": item.code,
                                     "message": item.message, "run_id": None, "detail": None})  # fmt: skip
                        break
                    await new_messages(item.id)
                    if not item.done:  # this server is stopping: the run goes on in another
                        await event({"message_type": "error_message", "error_type": "pending", "run_id": item.id,
                                     "message": _handed_back(item.id), "detail": None})  # fmt: skip
                        break
                    await event(lj.stop_reason_json(item))
                    if item.status == "failed":
                        await event(_run_error(item))
                    await event(lj.usage_json(item))
                    break
        await event("[DONE]")
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _handed_back(run_id: str) -> str:
    """What a caller waiting on a run hears when this server stops before the run ends."""
    return (
        f"this server is stopping and handed run {run_id} back to the queue before it finished: the run goes on in "
        f"another server; GET /v1/runs/{run_id} gives its status, and GET /v1/runs/{run_id}/messages its messages"
    )


async def stream_message(call: Call) -> Any:
    """POST /v1/agents/{agent_id}/messages/stream"""
    body = await call.body(MessagesIn)
    role, text = body.one_input()
    agent = await call.hub.get_agent(call.path["agent_id"])  # a 404 before the stream starts
    return SSE(call.hub, agent.id, role, text, body.include_return_message_types, call.keepalive_s)


async def cancel_messages(call: Call) -> Any:
    """POST /v1/agents/{agent_id}/messages/cancel"""
    body = await call.body(CancelIn)
    agent = await call.hub.get_agent(call.path["agent_id"])
    run_ids = body.run_ids
    if run_ids is None:
        active = await every_page(call.hub.list_runs, agent.id, status="running")
        active += await every_page(call.hub.list_runs, agent.id, status="queued")
        run_ids = [r.id for r in active]
    result: dict[str, Any] = {}
    for run_id in run_ids:
        run = await call.hub.get_run(run_id)
        if run.agent_id != agent.id:
            raise RestError(404, f"Run with ID {run_id} not found for agent {agent.id}")
        run = await call.hub.cancel_run(run_id)
        result[run_id] = lj.RUN_STATUS[run.status] if run.done else "cancelling"
    return result


def message_page(history: list[Message], call: Call, *, default_order: str) -> list[dict[str, Any]]:
    """A page of stored messages (Letta pages rows: one row may show as a reasoning and a tool call message,
    which share its id), as Letta's typed messages, optionally only the ``include_return_message_types``."""
    types = call.query_list("include_return_message_types") or None
    if types:
        history = [m for m in history if any(shown["message_type"] in types for shown in lj.letta_messages(m))]
    rows = page(ordered(history, call, default=default_order), call, key=lambda m: m.id, default_limit=MESSAGES_PAGE)
    return _filtered([shown for m in rows for shown in lj.letta_messages(m)], types)


async def history_for_page(call: Call, agent: str) -> list[Message]:
    """As much of an agent's history (oldest first) as the requested page needs: the hub pages back from the
    newest, so older pages are loaded until the cursor and ``limit`` rows beyond it (or the start) are in."""
    limit = call.query_int("limit", MESSAGES_PAGE) or MESSAGES_PAGE
    cursor = call.query("after") or call.query("before")
    oldest_first = call.query("order", "desc") == "asc"
    history: list[Message] = []
    older: str | None = None
    while True:
        chunk = await call.hub.get_messages(agent, limit=MAX_PAGE, cursor=older)  # oldest first in a page
        history = chunk.items + history
        if chunk.next_cursor is None:
            return history
        older = chunk.next_cursor
        ids = [m.id for m in history]
        if cursor is None and not oldest_first:
            return history  # the newest rows are in
        if cursor is not None and cursor in ids and ids.index(cursor) >= limit:
            return history  # the cursor and a page beyond it either way


async def list_messages(call: Call) -> Any:
    """GET /v1/agents/{agent_id}/messages"""
    agent = await call.hub.get_agent(call.path["agent_id"])
    return message_page(await history_for_page(call, agent.id), call, default_order="desc")


async def reset_messages(call: Call) -> Any:
    """PATCH /v1/agents/{agent_id}/reset-messages"""
    body = await call.body(ResetIn)
    del body  # Letta's default initial messages belong to its memgpt agents; ours start empty
    await call.hub.reset_messages(call.path["agent_id"])
    return call.agent_state(await call.hub.get_agent(call.path["agent_id"]))


# -- Agent File ------------------------------------------------------------------------------------------------
async def export_agent_file(call: Call) -> Any:
    """GET /v1/agents/{agent_id}/export"""
    agent = await call.hub.get_agent(call.path["agent_id"])
    history: list[Any] = []
    older: str | None = None
    while True:  # the whole history, a page at a time, going back
        chunk = await call.hub.get_messages(agent.id, limit=MAX_PAGE, cursor=older)
        history = chunk.items + history
        if chunk.next_cursor is None:
            break
        older = chunk.next_cursor
    return export_agent(agent, call.hub.tool_names(agent), history)


async def import_agent_file_endpoint(call: Call) -> Any:
    """POST /v1/agents/import (multipart form: ``file`` plus Letta's options)"""
    body = await call.raw_body()
    try:
        data, fields = file_from_multipart(call.request.headers.get("content-type", ""), body)
        return await import_agent_file(call.hub, data, fields)
    except AgentFileError as exc:
        raise RestError(422, str(exc)) from None


# -- runs and tags -------------------------------------------------------------------------------------------
LETTA_TO_OURS = {"created": ["queued"], "running": ["running"], "completed": ["completed"],
                 "failed": ["failed", "interrupted"], "cancelled": ["cancelled"]}  # fmt: skip


async def list_runs(call: Call) -> Any:
    """GET /v1/runs/"""
    agent = call.query("agent_id")
    statuses = call.query_list("statuses")
    if call.query_bool("active", False):
        statuses = ["created", "running"]
    unknown = [s for s in statuses if s not in LETTA_TO_OURS]
    if unknown:
        raise RestError(422, f"unknown run status(es) {unknown}: use {', '.join(LETTA_TO_OURS)}")
    ours = [one for status in statuses for one in LETTA_TO_OURS[status]]

    def fetch(oldest_first: bool, after_id: str | None, limit: int) -> Awaitable[Page[Run]]:
        return call.hub.list_runs(agent, status=ours, limit=limit, oldest_first=oldest_first, after_id=after_id)

    return [lj.run_json(r) for r in await stored_page(call, fetch, lambda r: r.id, default_order="desc")]


async def retrieve_run(call: Call) -> Any:
    """GET /v1/runs/{run_id}"""
    return lj.run_json(await call.hub.get_run(call.path["run_id"]))


async def list_run_messages(call: Call) -> Any:
    """GET /v1/runs/{run_id}/messages"""
    return message_page(await call.hub.run_messages(call.path["run_id"]), call, default_order="asc")


async def health(call: Call) -> Any:
    """GET /v1/health/ (a 503 saying why when the database does not answer)"""
    await call.hub.count_agents()
    return {"status": "ok", "version": __version__}


async def list_tags(call: Call) -> Any:
    """GET /v1/tags/"""
    tags = sorted({tag for agent in await every_page(call.hub.list_agents) for tag in agent.tags})
    text = call.query("query_text") or call.query("name")
    if text:
        tags = [t for t in tags if text.lower() in t.lower()]
    return page(ordered(tags, call, default="asc"), call, key=lambda t: t)


# -- the table ------------------------------------------------------------------------------------------------
A = "/agents/{agent_id}"
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("POST", "/agents/", create_agent, "agents.create", "Create an agent", body=AgentCreate),
    Endpoint(
        "GET",
        "/agents/",
        list_agents,
        "agents.list",
        "List agents",
        query=("name", "tags", "match_all_tags", "query_text", "limit", "after", "before", "order"),
    ),
    Endpoint("GET", A, retrieve_agent, "agents.retrieve", "Retrieve an agent"),
    Endpoint("PATCH", A, update_agent, "agents.update", "Update an agent", body=AgentPatch),
    Endpoint("DELETE", A, delete_agent, "agents.delete", "Delete an agent"),
    Endpoint(
        "GET",
        A + "/core-memory/blocks",
        list_agent_blocks,
        "agents.blocks.list",
        "List an agent's blocks",
        query=("limit", "after", "before"),
    ),
    Endpoint(
        "GET",
        A + "/core-memory/blocks/{block_label}",
        retrieve_agent_block,
        "agents.blocks.retrieve",
        "Retrieve an agent's block by label",
    ),
    Endpoint(
        "PATCH",
        A + "/core-memory/blocks/{block_label}",
        update_agent_block,
        "agents.blocks.update",
        "Update an agent's block by label",
        body=BlockPatch,
    ),
    Endpoint(
        "PATCH",
        A + "/core-memory/blocks/attach/{block_id}",
        attach_block,
        "agents.blocks.attach",
        "Attach a block to an agent",
    ),
    Endpoint(
        "PATCH",
        A + "/core-memory/blocks/detach/{block_id}",
        detach_block,
        "agents.blocks.detach",
        "Detach a block from an agent",
    ),
    Endpoint(
        "POST", A + "/archival-memory", create_passage, "agents.passages.create", "Insert a passage", body=PassageIn
    ),
    Endpoint(
        "GET",
        A + "/archival-memory",
        list_passages,
        "agents.passages.list",
        "List passages",
        query=("limit", "after", "before", "search", "ascending"),
    ),
    Endpoint(
        "GET",
        A + "/archival-memory/search",
        search_passages,
        "agents.passages.search",
        "Search archival memory",
        query=("query", "tags", "tag_match_mode", "top_k", "start_datetime", "end_datetime"),
    ),
    Endpoint(
        "DELETE", A + "/archival-memory/{memory_id}", delete_passage, "agents.passages.delete", "Delete a passage"
    ),
    Endpoint(
        "POST", A + "/messages", create_message, "agents.messages.create", "Send a message and wait", body=MessagesIn
    ),
    Endpoint(
        "POST",
        A + "/messages/stream",
        stream_message,
        "agents.messages.stream",
        "Send a message; Server-Sent Events of its messages",
        body=MessagesIn,
    ),
    Endpoint(
        "POST",
        A + "/messages/async",
        create_message_async,
        "agents.messages.create_async",
        "Send a message; returns the run at once",
        body=MessagesIn,
    ),
    Endpoint(
        "POST",
        A + "/messages/cancel",
        cancel_messages,
        "agents.messages.cancel",
        "Cancel an agent's runs",
        body=CancelIn,
    ),
    Endpoint(
        "GET",
        A + "/messages",
        list_messages,
        "agents.messages.list",
        "List an agent's messages",
        query=("limit", "after", "before", "order", "include_return_message_types"),
    ),
    Endpoint(
        "PATCH",
        A + "/reset-messages",
        reset_messages,
        "agents.messages.reset",
        "Empty the context window (history stays in recall)",
        body=ResetIn,
    ),
    Endpoint("GET", A + "/export", export_agent_file, "agents.export_file", "Export an agent as an Agent File"),
    Endpoint(
        "POST",
        "/agents/import",
        import_agent_file_endpoint,
        "agents.import_file",
        "Import an Agent File (tools we cannot run are listed in skipped_tools)",
    ),
    Endpoint("POST", "/blocks/", create_block, "blocks.create", "Create a block", body=BlockIn),
    Endpoint(
        "GET",
        "/blocks/",
        list_blocks,
        "blocks.list",
        "List blocks",
        query=("label", "label_search", "value_search", "limit", "after", "before", "order"),
    ),
    Endpoint("GET", "/blocks/{block_id}", retrieve_block, "blocks.retrieve", "Retrieve a block"),
    Endpoint("PATCH", "/blocks/{block_id}", update_block, "blocks.update", "Update a block", body=BlockPatch),
    Endpoint("DELETE", "/blocks/{block_id}", delete_block, "blocks.delete", "Delete a block"),
    Endpoint(
        "GET",
        "/blocks/{block_id}/agents",
        list_block_agents,
        "blocks.agents.list",
        "List the agents a block is attached to",
        query=("limit", "after", "before"),
    ),
    Endpoint(
        "GET",
        "/runs/",
        list_runs,
        "runs.list",
        "List runs",
        query=("agent_id", "statuses", "active", "limit", "after", "before", "order"),
    ),
    Endpoint("GET", "/runs/{run_id}", retrieve_run, "runs.retrieve", "Retrieve a run"),
    Endpoint(
        "GET",
        "/runs/{run_id}/messages",
        list_run_messages,
        "runs.messages.list",
        "List a run's messages",
        query=("limit", "after", "before", "order"),
    ),
    Endpoint(
        "GET",
        "/tags/",
        list_tags,
        "tags.list",
        "List the tags of all agents",
        query=("query_text", "name", "limit", "after", "before", "order"),
    ),
    Endpoint("GET", "/health/", health, "health", "Whether the server and its database answer"),
    Endpoint(
        "GET",
        "/tools/",
        list_tools,
        "tools.list",
        "List the tools agents can be given (Letta's built-in tools)",
        query=TOOL_QUERY,
    ),
    Endpoint("GET", "/tools/{tool_id}", retrieve_tool, "tools.retrieve", "Get a tool"),
    Endpoint(
        "GET",
        A + "/tools",
        list_agent_tools,
        "agents.tools.list",
        "List an agent's tools",
        query=("limit", "after", "before", "order", "order_by"),
    ),
    Endpoint("PATCH", A + "/tools/attach/{tool_id}", attach_tool, "agents.tools.attach", "Give an agent a tool"),
    Endpoint("PATCH", A + "/tools/detach/{tool_id}", detach_tool, "agents.tools.detach", "Take a tool from an agent"),
)


# Query parameters that change nothing here: which relations to include (we always include all), the sort
# field (always creation time), projects, and message-display switches whose default is what we do.
IGNORED_QUERY = frozenset({"include", "include_relationships", "order_by", "project_id", "use_assistant_message",
                           "assistant_message_tool_name", "assistant_message_tool_kwarg", "include_err"})  # fmt: skip


# -- errors -----------------------------------------------------------------------------------------------------
def detail_for(exc: LettaError, call: Call) -> tuple[int, str]:
    """The HTTP status and Letta-style ``detail`` for one of our errors."""
    if isinstance(exc, NotFound):
        kind, path = exc.details.get("kind"), call.path
        if kind == "agent" and "agent_id" in path:
            return 404, f"Agent with ID {path['agent_id']} not found"
        if kind == "block" and "block_id" in path:
            return 404, f"Block with id '{path['block_id']}' not found"
        return 404, exc.message
    if isinstance(exc, Conflict | Deadlock):
        return 409, exc.message
    if isinstance(exc, Invalid | LimitExceeded):
        return 422, exc.message
    if isinstance(exc, Timeout):
        return 408, exc.message
    if isinstance(exc, StorageUnavailable):  # the database's trouble, not the request's (clients retry a 5xx)
        return 503, exc.message
    return 400, exc.message


def route_app(
    endpoint: Endpoint, hub: AgentHub, max_body_bytes: int, keepalive_s: float = KEEPALIVE_S
) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette handler of one endpoint: run it, shape its result or error as Letta does."""

    async def handle(request: Request) -> Response:
        call = Call(request, hub, max_body_bytes, keepalive_s)
        try:
            unknown = sorted(set(request.query_params) - set(endpoint.query) - IGNORED_QUERY)
            if unknown:
                where = f"{endpoint.method} /v1{endpoint.path}"
                raise RestError(422, f"mcp-letta does not support the query parameter(s) {', '.join(unknown)} on "
                                     f"{where}: remove them (see /v1/openapi.json)")  # fmt: skip
            result = await endpoint.handler(call)
        except RestError as exc:
            return JSONResponse({"detail": exc.detail}, status_code=exc.status)
        except LettaError as exc:
            status, detail = detail_for(exc, call)
            return JSONResponse({"detail": detail}, status_code=status)
        except Exception:
            log.exception("%s %s failed", endpoint.method, endpoint.path)
            return JSONResponse({"detail": "An unknown error occurred"}, status_code=500)
        if isinstance(result, SSE):
            return _AsgiResponse(result)
        return JSONResponse(result, status_code=endpoint.status)

    return handle


class _AsgiResponse(Response):
    """A response that is any ASGI callable (the message stream)."""

    def __init__(self, app: SSE) -> None:
        super().__init__()
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Hand the connection to the wrapped app."""
        await self._app(scope, receive, send)


def path_params(path: str) -> list[str]:
    """The ``{name}`` parameters of a path template."""
    return re.findall(r"{(\w+)}", path)

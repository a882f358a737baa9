"""MCP over stdio, where every line gets an answer: a line that is not JSON, or not a JSON-RPC message, gets
JSON-RPC's parse error (-32700) or invalid request error (-32600), with the request's id when it can be read,
and the server goes on serving. (The SDK's stdio transport drops such lines, so the client waits forever.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp.types as types
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

log = logging.getLogger("mcp_letta.server")

PARSE_ERROR = -32700
INVALID_REQUEST = -32600


def wire_error(problem: Exception) -> types.JSONRPCError:
    """The JSON-RPC error answering a line the transport could not read as a message."""
    line, errors = _unread_line(problem)
    if errors and errors[0]["type"] == "json_invalid":
        readable, parsed = _python_json(line)
        return _error(_id_of(parsed), PARSE_ERROR, f"Parse error: {_json_problem(errors[0]['msg'], readable)}")
    message = _message_of(errors)
    return _error(_id_of(message), INVALID_REQUEST,
                  f"Invalid Request: {_request_problem(errors, message)}")  # fmt: skip


@asynccontextmanager
async def answering_stdio_server(on_end: Callable[[], None] = lambda: None) -> AsyncIterator[tuple[Any, Any]]:
    """The SDK's ``stdio_server`` (which keeps stray output off the wire), with unreadable lines answered
    here instead of being passed on as exceptions. ``on_end`` is called when the input ends, before the
    SDK hears of it (and cancels the requests in flight)."""
    async with stdio_server() as (read_stream, write_stream):
        send, receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)

        async def pump() -> None:
            async with send, read_stream:
                async for item in read_stream:
                    if not isinstance(item, Exception):
                        await send.send(item)
                        continue
                    error = wire_error(item)
                    log.info("answered an unreadable line on stdin: %s", error.error.message)
                    try:
                        await write_stream.send(SessionMessage(error))
                    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                        return
                on_end()

        async with anyio.create_task_group() as tg:
            tg.start_soon(pump)
            try:
                yield receive, write_stream
            finally:
                tg.cancel_scope.cancel()


def _error(request_id: Any, code: int, message: str) -> types.JSONRPCError:
    return types.JSONRPCError(jsonrpc="2.0", id=request_id, error=types.ErrorData(code=code, message=message))


def _unread_line(problem: Exception) -> tuple[str | None, list[Any]]:
    if not isinstance(problem, ValidationError):
        return None, []
    errors = problem.errors(include_url=False)
    raw = errors[0].get("input") if errors and errors[0]["type"] == "json_invalid" else None
    return (raw if isinstance(raw, str) else None), errors


def _python_json(line: str | None) -> tuple[bool, Any]:
    """Whether Python's JSON reader reads a line the SDK's strict one refused, and what it read. It accepts
    lone surrogates and nesting up to its recursion limit, so the request's id can often still be read."""
    if line is None:
        return False, None
    try:
        return True, json.loads(line)
    except (ValueError, RecursionError):
        return False, None


def _id_of(message: Any) -> Any:
    request_id = message.get("id") if isinstance(message, dict) else None
    valid = isinstance(request_id, str) or (isinstance(request_id, int) and not isinstance(request_id, bool))
    return request_id if valid else None


def _message_of(errors: list[Any]) -> Any:
    """The parsed message the validation errors were about: a ``missing`` error carries the whole object."""
    for err in errors:
        if err["type"] == "missing" and isinstance(err.get("input"), dict):
            return err["input"]
    for err in errors:
        if len(err["loc"]) <= 1:
            return err.get("input")
    return None


def _json_problem(msg: str, readable_elsewhere: bool) -> str:
    if "recursion limit" in msg:
        return "JSON nested too deeply to read (at most 200 levels)"
    if readable_elsewhere:  # valid JSON text that holds no valid Unicode: only a lone surrogate does that
        return "a lone UTF-16 surrogate (\\ud800-\\udfff) is not text; send valid Unicode"
    return f"the line is not valid JSON ({msg.removeprefix('Invalid JSON: ')})"


_JSON_KINDS = {list: "a list", int: "a number", float: "a number", str: "a string", bool: "true or false",
               type(None): "null"}  # fmt: skip


def _request_problem(errors: list[Any], message: Any) -> str:
    if not isinstance(message, dict):
        return f"a JSON-RPC message is an object, this is {_JSON_KINDS.get(type(message), 'something else')}"
    if message.get("jsonrpc") != "2.0":
        return 'a JSON-RPC 2.0 message needs "jsonrpc": "2.0"'
    for err in errors:
        field = err["loc"][-1] if err["loc"] else None
        if field == "params":
            return '"params" must be an object'
        if field in ("method", "id") and err["type"] != "missing":
            return f'"{field}" is not valid ({err["msg"].lower()})'
    return "not a JSON-RPC request, notification or response"

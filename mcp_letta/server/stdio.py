"""MCP over stdio, where every line gets an answer: a line that is not JSON, or not a JSON-RPC message, gets
JSON-RPC's parse error (-32700) or invalid request error (-32600), with the request's id when it can be read,
and the server goes on serving. (The SDK's stdio transport drops such lines, so the client waits forever.)

A server told to stop (SIGTERM) can answer the calls in flight, then stop reading its input and end, though
the host keeps that input open (``HostLink``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
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


class HostLink:
    """What a stdio server knows of its host's side: the requests it has not answered yet, and the input it
    reads them from, which a server told to stop can stop reading though the host keeps it open."""

    def __init__(self) -> None:
        self._ids: set[str | int] = set()
        self._none_left = anyio.Event()
        self._none_left.set()
        self._input: _HostInput | None = None
        self.stopped_reading = False  # whether ``stop_reading`` ended the input (not the host)
        self.input_closed_at: float | None = None  # when the input ended (``anyio.current_time()``)

    def asked(self, message: Any) -> None:
        """Note a message read from the host: a request awaits its answer; one the host cancels gets none."""
        if isinstance(message, types.JSONRPCRequest):
            self._ids.add(message.id)
            if self._none_left.is_set():  # else someone may be waiting on it: it is set once none is left
                self._none_left = anyio.Event()
        elif isinstance(message, types.JSONRPCNotification) and message.method == "notifications/cancelled":
            self._answered((message.params or {}).get("requestId"))

    def answered(self, message: Any) -> None:
        """Note a message on its way to the host (a response or error answers its request)."""
        if isinstance(message, types.JSONRPCResponse | types.JSONRPCError):
            self._answered(message.id)

    def _answered(self, request_id: Any) -> None:
        if isinstance(request_id, str | int) and request_id in self._ids:
            self._ids.discard(request_id)
            if not self._ids:
                self._none_left.set()

    async def answers_sent(self, within_s: float) -> bool:
        """Return once every request read so far has its answer on its way (True), or after ``within_s``
        seconds (False: some have none yet)."""
        with anyio.move_on_after(within_s):
            await self._none_left.wait()
        return self._none_left.is_set()

    def claim_input(self) -> _HostInput:
        """Take the host's input (fd 0) to read it; see ``_HostInput``."""
        self._input = _HostInput()
        return self._input

    def stop_reading(self) -> None:
        """Read nothing more from the host: the server then ends as when the host closes our input, and what
        is on its way to the host is written first."""
        self.stopped_reading = True
        if self._input is not None:
            self._input.close()


class _HostInput:
    """The host's input, line by line, read by a daemon thread: unlike the SDK's reader (a worker thread that
    nothing interrupts), this can stop while the host keeps the pipe open, and the thread, blocked on the
    pipe, does not keep the process from ending. While we serve, fd 0 points at the null device (as the
    SDK's reader arranges), so nothing else reads the host's messages; ``restore`` points it back."""

    def __init__(self) -> None:
        try:
            self._wire = os.dup(0)  # never closed: the thread may be blocked on it until the process ends
        except OSError:
            raise RuntimeError(
                "standard input is closed, and the stdio transport reads the host's messages there: start mcp-letta "
                "from an MCP host, or serve it with --transport http"
            ) from None
        null = os.open(os.devnull, os.O_RDONLY)
        try:
            os.dup2(null, 0)
        finally:
            os.close(null)
        self._send, self._lines = anyio.create_memory_object_stream[str](0)

    def start(self) -> None:
        """Start reading, for the event loop this is called in."""
        token = anyio.lowlevel.current_token()
        threading.Thread(target=self._read, args=(token,), name="mcp-letta stdin", daemon=True).start()

    def _read(self, token: Any) -> None:
        wire = os.fdopen(self._wire, "rb", closefd=False)
        try:
            for line in wire:
                anyio.from_thread.run(self._send.send, line.decode("utf-8", errors="replace"), token=token)
            anyio.from_thread.run_sync(self._send.close, token=token)  # the host closed our input
        except Exception:  # we stopped reading first, or the event loop ended: nobody waits for a line
            pass

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines.__aiter__()

    def close(self) -> None:
        """Stop reading: whoever waits for a line gets ``ClosedResourceError`` (the SDK's reader ends)."""
        self._lines.close()

    def restore(self) -> None:
        """Point fd 0 at the host's input again."""
        self.close()
        os.dup2(self._wire, 0)


@asynccontextmanager
async def answering_stdio_server(
    on_end: Callable[[], Awaitable[None]] | None = None, host: HostLink | None = None
) -> AsyncIterator[tuple[Any, Any]]:
    """The SDK's ``stdio_server`` (which keeps stray output off the wire) over ``_HostInput``, with unreadable
    lines answered here instead of being passed on as exceptions. ``on_end`` is awaited when the input ends,
    before the SDK hears of it (and cancels the requests still in flight): it may wait for their answers.
    ``host`` follows the requests and their answers, and can stop the reading."""
    host = host or HostLink()
    host_input = host.claim_input()
    try:
        async with stdio_server(stdin=host_input) as (read_stream, write_stream):  # type: ignore[arg-type]
            host_input.start()
            send, receive = anyio.create_memory_object_stream[SessionMessage | Exception](0)
            answers, answer_stream = anyio.create_memory_object_stream[SessionMessage](0)

            async def pump() -> None:
                async with send, read_stream:
                    async for item in read_stream:
                        if not isinstance(item, Exception):
                            host.asked(item.message)
                            await send.send(item)
                            continue
                        error = wire_error(item)
                        log.info("answered an unreadable line on stdin: %s", error.error.message)
                        try:
                            await write_stream.send(SessionMessage(error))
                        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                            return
                    host.input_closed_at = anyio.current_time()
                    if on_end is not None:
                        await on_end()

            async def write() -> None:
                async with answer_stream, write_stream:
                    async for item in answer_stream:
                        await write_stream.send(item)
                        host.answered(item.message)

            async with anyio.create_task_group() as tg:
                tg.start_soon(pump)
                tg.start_soon(write)
                try:
                    yield receive, answers
                finally:
                    tg.cancel_scope.cancel()
    finally:
        host_input.restore()


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

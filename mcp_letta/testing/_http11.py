"""The HTTP/1.1 server under ``ScriptedLLM``: an asyncio protocol that parses requests and writes answers.

Each connection parses in ``data_received`` and holds a delayed answer with ``call_later``, with no task
per connection or request: the benchmarks' stand-in LLM shares the machine with what they measure.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

MAX_HEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class Request:
    """One parsed request."""

    method: str
    path: str
    version: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        """Whether the connection stays open after the answer."""
        return self.version == "HTTP/1.1" and self.headers.get("connection", "").lower() != "close"


@dataclass(frozen=True)
class Answer:
    """What to send back, after how long, and what to call when it is sent."""

    status: int
    headers: dict[str, str]
    payload: Any
    delay_s: float = 0.0
    on_sent: Callable[[], None] | None = None


Respond = Callable[[Request, int | None], Answer]  # (request, the client's port) -> answer


class ServerProtocol(asyncio.Protocol):
    """One client connection: requests are answered one at a time, in order."""

    def __init__(self, respond: Respond, connections: set[ServerProtocol]) -> None:
        self._respond = respond
        self._connections = connections
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._client_port: int | None = None
        self._answering = False
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Remember the transport and the client's port."""
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self._client_port = peer[1] if peer else None
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the connection; an answer still waiting for its delay is dropped."""
        self._connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()

    def abort(self) -> None:
        """Drop the connection at once (the client sees it die)."""
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        """Buffer what arrived and answer every complete request in it."""
        self._buffer += data
        self._answer_next()

    def _answer_next(self) -> None:
        while not self._answering and self._transport is not None and not self._transport.is_closing():
            try:
                request = parse_request(self._buffer)
            except ValueError:
                self._transport.close()  # garbage: only this client's connection is lost
                return
            if request is None:
                return
            self._answering = True
            answer = self._respond(request, self._client_port)
            data = encode_answer(answer.status, answer.headers, answer.payload, request.keep_alive)
            if answer.delay_s > 0:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(answer.delay_s, self._send, data, request.keep_alive, answer.on_sent)
            else:
                self._send(data, request.keep_alive, answer.on_sent)

    def _send(self, data: bytes, keep_alive: bool, on_sent: Callable[[], None] | None) -> None:
        self._timer = None
        if self._transport is None or self._transport.is_closing():
            return
        if on_sent is not None:
            on_sent()
        self._transport.write(data)
        self._answering = False
        if not keep_alive:
            self._transport.close()
            return
        self._answer_next()


def parse_request(buffer: bytearray) -> Request | None:
    """The first complete request in ``buffer`` (removed from it), or None until one has arrived."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD_BYTES:
            raise ValueError("request head too long")
        return None
    request_line, *header_lines = buffer[:end].decode("latin-1").split("\r\n")
    method, path, version = request_line.split(" ", 2)
    headers: dict[str, str] = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    start = end + 4
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parsed = _chunked(buffer, start)
        if parsed is None:
            return None
        body, consumed = parsed
    else:
        length = int(headers.get("content-length") or 0)
        if len(buffer) < start + length:
            return None
        body, consumed = bytes(buffer[start : start + length]), start + length
    del buffer[:consumed]
    return Request(method, path, version, headers, body)


def _chunked(buffer: bytearray, at: int) -> tuple[bytes, int] | None:
    chunks = []
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None
        size = int(bytes(buffer[at:line_end]).split(b";")[0], 16)
        at = line_end + 2
        if size == 0:
            trailer_end = buffer.find(b"\r\n", at)  # no trailer fields are expected: the empty line
            if trailer_end < 0:
                return None
            return b"".join(chunks), trailer_end + 2
        if len(buffer) < at + size + 2:
            return None
        chunks.append(bytes(buffer[at : at + size]))
        at += size + 2


def encode_answer(status: int, extra: dict[str, str], payload: Any, keep_alive: bool) -> bytes:
    """An HTTP/1.1 response: a dict or list as JSON, a str or bytes as text."""
    if isinstance(payload, str | bytes):
        data, content_type = (payload.encode() if isinstance(payload, str) else payload), "text/plain"
    else:
        data, content_type = json.dumps(payload).encode(), "application/json"
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Scripted"
    lines = [
        f"HTTP/1.1 {status} {reason}",
        f"content-type: {content_type}",
        f"content-length: {len(data)}",
        f"connection: {'keep-alive' if keep_alive else 'close'}",
        *(f"{name}: {value}" for name, value in extra.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data

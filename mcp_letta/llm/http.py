"""``HTTPClient``: a lean HTTP/1.1 client for one LLM endpoint (keep-alive connections, TLS, JSON bodies).

A broadcast sends one LLM request per recipient at once. httpx2 spends 0.7-1.3 ms of CPU on each (its pool
re-checks connections, h11 events, request and response models), about 0.1 ms is spent here, and at 100
recipients that difference was most of a broadcast's cost. This client does what an LLM API call needs and
no more: a request with a body, keep-alive reuse, content-length / chunked / read-to-close bodies, gzip,
deadlines and TLS with httpx2's trust settings. Proxies stay httpx2's job (see ``transport.py``).

On asyncio the bytes come through a protocol (``Wire``): a stream's receive pauses and resumes the
socket's reader around every read, and 100 concurrent requests spent twice the CPU that way. Other
event loops (trio) get anyio's streams.
"""

from __future__ import annotations

import asyncio
import json
import select
import ssl
import time
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.abc
import httpx2
from anyio.abc import SocketAttribute

from mcp_letta.llm.wire import Wire

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_IDLE_CONNECTIONS = 256
IDLE_S = 60.0  # how long an idle connection is kept when the server does not say (Keep-Alive: timeout=N)
DEFAULT_PORTS = {"http": 80, "https": 443}


class HTTPError(Exception):
    """No complete HTTP response arrived: the connection, TLS, the deadline or the server's framing failed."""


class ConnectFailed(HTTPError):
    """The endpoint could not be reached: refused, unresolvable, or its TLS certificate was not accepted."""


class TimedOut(HTTPError):
    """Connecting, or the whole exchange, took longer than its deadline."""


class ProtocolError(HTTPError):
    """The server broke the connection mid-answer or answered with something that is not HTTP/1.x."""


@dataclass(frozen=True, slots=True)
class HTTPResponse:
    """A complete response: status, headers (lower-case names, repeats joined by ", ") and decoded body."""

    status_code: int
    headers: dict[str, str]
    content: bytes

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` when it is not)."""
        return json.loads(self.content)

    @property
    def text(self) -> str:
        """The body as text, in the charset the server named (UTF-8 otherwise); bad bytes are replaced."""
        charset = "utf-8"
        for param in self.headers.get("content-type", "").split(";")[1:]:
            name, _, value = param.partition("=")
            if name.strip().lower() == "charset" and value.strip():
                charset = value.strip().strip('"')
        try:
            return self.content.decode(charset, errors="replace")
        except LookupError:
            return self.content.decode("utf-8", errors="replace")


class _Connection:
    """One socket (TLS or not) with its read buffer."""

    __slots__ = ("answered", "buffer", "expires", "socket", "stream")

    def __init__(self, stream: anyio.abc.ByteStream | Wire) -> None:
        self.stream = stream
        # Looked up once: anyio builds every extra attribute (a getpeername call among them) on each lookup.
        self.socket = None if isinstance(stream, Wire) else stream.extra(SocketAttribute.raw_socket, None)
        self.buffer = bytearray()
        self.expires = 0.0
        self.answered = False  # any byte of the current answer has arrived

    def looks_closed(self) -> bool:
        """True when an idle connection has something to read: the server closed it (or misbehaved)."""
        if self.buffer:
            return True
        if isinstance(self.stream, Wire):
            return self.stream.unsolicited()
        if self.socket is None:
            return False
        try:
            readable, _, _ = select.select([self.socket], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    async def close(self) -> None:
        """Close the socket, even inside a cancelled scope."""
        with anyio.CancelScope(shield=True):
            try:
                await self.stream.aclose()
            except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass

    async def _fill(self, limit: int) -> None:
        if len(self.buffer) >= limit:
            raise ProtocolError(f"the server's answer passed {limit} bytes without ending where it should")
        self.buffer += await self.stream.receive(65536)
        self.answered = True

    async def read_until(self, delimiter: bytes, limit: int) -> bytes:
        """Bytes up to ``delimiter`` (consumed, not returned)."""
        start = 0
        while (end := self.buffer.find(delimiter, start)) < 0:
            start = max(0, len(self.buffer) - len(delimiter) + 1)
            await self._fill(limit)
        data = bytes(self.buffer[:end])
        del self.buffer[: end + len(delimiter)]
        return data

    async def read_exactly(self, size: int) -> bytes:
        """Exactly ``size`` bytes."""
        while len(self.buffer) < size:
            self.buffer += await self.stream.receive(max(65536, size - len(self.buffer)))
            self.answered = True
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def read_to_eof(self) -> bytes:
        """Everything until the server closes the connection."""
        try:
            while True:
                await self._fill(MAX_BODY_BYTES)
        except anyio.EndOfStream:
            pass
        data, self.buffer = bytes(self.buffer), bytearray()
        return data

    async def exchange(self, request: bytes, method: str) -> tuple[HTTPResponse, float | None]:
        """Send one request, read its response; the seconds it may idle before reuse, or None: close it."""
        self.answered = False
        await self.stream.send(request)
        while True:
            status, version, headers = _parse_head(await self.read_until(b"\r\n\r\n", MAX_HEAD_BYTES))
            if not (100 <= status < 200) or status == 101:
                break  # 1xx interim answers (100 Continue, 103 Early Hints) precede the real one
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        reusable = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
        if method == "HEAD" or status in (204, 304):
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked()
        elif (length := headers.get("content-length")) is not None:
            size = _content_length(length)
            body = await self.read_exactly(size)
        else:
            body, reusable = await self.read_to_eof(), False
        body = _decode(body, headers.get("content-encoding", ""))
        return HTTPResponse(status, headers, body), (_keep_alive_s(headers) if reusable else None)

    async def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = await self.read_until(b"\r\n", 4096)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size {line[:40]!r} in a chunked answer") from None
            if size == 0:
                while await self.read_until(b"\r\n", MAX_HEAD_BYTES):
                    pass  # trailer fields, up to the empty line
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                raise ProtocolError(f"the server's answer passed {MAX_BODY_BYTES} bytes")
            parts.append(await self.read_exactly(size))
            if await self.read_exactly(2) != b"\r\n":
                raise ProtocolError("a chunk of a chunked answer did not end with CRLF")


def _parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise ProtocolError(f"the server did not answer in HTTP/1.x: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise ProtocolError(f"bad header line {line[:80]!r}")
        name, value = name.strip().lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return int(code), version, headers


def _content_length(value: str) -> int:
    # Repeated Content-Length headers arrive joined ("12, 12"); they must agree.
    sizes = {v.strip() for v in value.split(",")}
    if len(sizes) != 1 or not (size := sizes.pop()).isdigit():
        raise ProtocolError(f"bad Content-Length {value[:40]!r}")
    if int(size) > MAX_BODY_BYTES:
        raise ProtocolError(f"the server's answer is {size} bytes, over the {MAX_BODY_BYTES} this client reads")
    return int(size)


def _decode(body: bytes, encoding: str) -> bytes:
    for coding in reversed([c.strip().lower() for c in encoding.split(",") if c.strip()]):
        try:
            if coding in ("gzip", "x-gzip"):
                body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
            elif coding == "deflate":
                try:
                    body = zlib.decompress(body)
                except zlib.error:
                    body = zlib.decompress(body, -zlib.MAX_WBITS)  # raw deflate, as some servers send
            elif coding != "identity":
                raise ProtocolError(f"the server sent Content-Encoding {coding!r}, which was not asked for")
        except zlib.error as exc:
            raise ProtocolError(f"the {coding} body did not decompress: {exc}") from None
    return body


def _keep_alive_s(headers: Mapping[str, str]) -> float:
    for param in headers.get("keep-alive", "").split(","):
        name, _, value = param.partition("=")
        if name.strip().lower() == "timeout":
            try:
                return max(0.0, min(float(value) - 1.0, IDLE_S))  # a second early: never race its close
            except ValueError:
                break
    return IDLE_S


def host_and_port(url: str) -> str:
    """``host[:port]`` of a URL without its credentials, which must never reach a message or a log."""
    return urlsplit(url).netloc.rpartition("@")[2]


class HTTPClient:
    """Keep-alive HTTP/1.1 connections to one origin, taken most-recently-used first and safe to share."""

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 120.0,
        connect_timeout_s: float = 10.0,
        user_agent: str = "mcp-letta",
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
        self.host = parts.hostname
        self.port = parts.port or DEFAULT_PORTS[parts.scheme]
        self.origin = f"{parts.scheme}://{host_and_port(url)}"
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._tls = parts.scheme == "https"
        self._ssl_context: ssl.SSLContext | None = None
        host = f"[{self.host}]" if ":" in self.host else self.host
        fixed = {
            "host": host if self.port == DEFAULT_PORTS[parts.scheme] else f"{host}:{self.port}",
            "user-agent": user_agent,
            "accept": "application/json",
            "accept-encoding": "gzip, deflate",
            **{name.lower(): value for name, value in (headers or {}).items()},
        }
        lines = []
        for name, value in fixed.items():
            if any(c in name + value for c in "\r\n\0") or not name.isascii():
                raise ValueError(f"header {name!r} holds a line break or a non-ASCII name: it cannot be sent")
            lines.append(f"{name}: {value}\r\n")
        try:
            self._fixed = "".join(lines).encode("latin-1")
        except UnicodeEncodeError as exc:
            raise ValueError(f"a header value holds a character HTTP cannot carry ({exc.reason})") from None
        self.asyncio_protocol = True  # False: anyio's streams on asyncio too, as on other event loops
        self._idle: deque[_Connection] = deque()
        self._closed = False

    async def request(
        self, method: str, target: str, body: bytes | None = None, content_type: str = "application/json"
    ) -> HTTPResponse:
        """Send ``method target`` (a path, with its query) and return the complete response.

        A reused connection that the server closed while idle is replaced once, at no cost to the caller.
        Raises ``ConnectFailed``, ``TimedOut`` or ``ProtocolError``; any status is a response, not an error.
        """
        if self._closed:
            raise HTTPError(f"the HTTP client for {self.origin} is closed")
        head = f"{method} {target} HTTP/1.1\r\n".encode("latin-1") + self._fixed
        if body is not None:
            head += f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n".encode("latin-1")
        request = head + b"\r\n" + (body or b"")
        reuse = True
        while True:
            connection = await self._take_idle() if reuse else None
            reused = connection is not None
            if connection is None:
                connection = await self._connect()
            done = False
            try:
                with anyio.fail_after(self.timeout_s):
                    response, keep_s = await connection.exchange(request, method)
                done = True
            except TimeoutError:
                raise TimedOut(f"{self.origin} did not answer within {self.timeout_s:g} s") from None
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError) as exc:
                if reused and not connection.answered:
                    # The server closed it while idle and we wrote into the close: once more, on a new one.
                    reuse = False
                    continue
                raise ProtocolError(f"{self.origin} closed the connection before a complete answer ({exc!r})") from None
            finally:
                if not done:
                    await connection.close()
            await self._give_back(connection, keep_s)
            return response

    async def _take_idle(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if connection.expires > now and not connection.looks_closed():
                return connection
            await connection.close()
        return None

    async def _give_back(self, connection: _Connection, keep_s: float | None) -> None:
        now = time.monotonic()
        while self._idle and self._idle[0].expires <= now:
            await self._idle.popleft().close()
        if keep_s is None or keep_s <= 0 or self._closed or len(self._idle) >= MAX_IDLE_CONNECTIONS:
            await connection.close()
            return
        connection.expires = now + keep_s
        self._idle.append(connection)

    async def _connect(self) -> _Connection:
        try:
            loop = asyncio.get_running_loop() if self.asyncio_protocol else None
        except RuntimeError:  # another event loop (trio): anyio's streams
            loop = None
        try:
            with anyio.fail_after(self.connect_timeout_s):
                if loop is not None:
                    tls = {"ssl": self._context(), "server_hostname": self.host} if self._tls else {}
                    _, wire = await loop.create_connection(Wire, self.host, self.port, **tls)  # type: ignore[arg-type]
                    return _Connection(wire)
                if self._tls:
                    stream: anyio.abc.ByteStream = await anyio.connect_tcp(
                        self.host,
                        self.port,
                        ssl_context=self._context(),
                        tls_hostname=self.host,
                        tls_standard_compatible=False,
                    )
                else:
                    stream = await anyio.connect_tcp(self.host, self.port)
        except TimeoutError:
            raise TimedOut(f"connecting to {self.origin} took over {self.connect_timeout_s:g} s") from None
        except ssl.SSLCertVerificationError as exc:
            raise ConnectFailed(
                f"the TLS certificate of {self.origin} was not accepted ({exc.verify_message}): if it is signed "
                "by your own CA, point SSL_CERT_FILE at a bundle that holds it"
            ) from None
        except (OSError, anyio.BrokenResourceError) as exc:
            raise ConnectFailed(f"cannot connect to {self.origin}: {exc}") from None
        return _Connection(stream)

    def _context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            # httpx2's own trust settings (SSL_CERT_FILE / SSL_CERT_DIR, the OS store on macOS and Windows),
            # so switching clients changes no one's certificate handling.
            context = httpx2.create_ssl_context()
            context.set_alpn_protocols(["http/1.1"])
            self._ssl_context = context
        return self._ssl_context

    async def aclose(self) -> None:
        """Close the idle connections; connections in use close when their request ends."""
        self._closed = True
        while self._idle:
            await self._idle.pop().close()

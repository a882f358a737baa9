"""``ScriptedLLM``: a real OpenAI-compatible HTTP server on 127.0.0.1 that answers what a test scripted.

Tests, benchmarks and examples point agents at ``llm.base_url`` and queue replies, tool calls and HTTP
errors. It runs on its own thread and event loop, answers concurrent requests concurrently and records them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Self

from mcp_letta.testing._http11 import Answer, Request, ServerProtocol

NOT_SCRIPTED = (
    "ScriptedLLM has no scripted response for this request and no default: queue one with "
    "llm.reply(...)/llm.tool_call(...)/llm.on(...), or set llm.echo() or llm.default"
)


@dataclass(frozen=True)
class Response:
    """One scripted answer: a completion (text and/or tool calls), an HTTP error, or a verbatim body.

    E.g. ``Response(content="hi")``, ``Response(calls=[("memory_insert", {"label": "human"})])``,
    ``Response(status=503, retry_after=1)``. The ``_Script`` verbs build these for you.
    """

    content: str | None = None
    calls: Sequence[tuple[str, dict[str, Any]]] = ()  # (tool name, arguments) for message.tool_calls
    status: int = 200
    body: Any = None  # sent verbatim (a dict as JSON, a str as text) instead of a completion or error
    retry_after: float | str | None = None
    delay_s: float = 0.0


Scriptable = Response | str
Responder = Callable[[dict[str, Any]], Scriptable]


def _response(item: Scriptable) -> Response:
    if isinstance(item, Response):
        return item
    if isinstance(item, str):
        return Response(content=item)
    raise TypeError(f"a scripted response must be a Response or a str, not {type(item).__name__}")


def message_text(message: dict[str, Any]) -> str:
    """The text of one chat message (string content or a list of text parts)."""
    content = message.get("content")
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def echo(request: dict[str, Any]) -> Response:
    """Default responder for ``llm.echo()``: repeat the last user or system message."""
    for message in reversed(request.get("messages", [])):
        if message.get("role") in ("user", "system"):
            return Response(content=f"echo: {message_text(message)}")
    return Response(content="echo: ")


@dataclass
class RecordedRequest:
    """A chat-completion request the server received, with ``time.monotonic()`` timestamps."""

    body: dict[str, Any]
    headers: dict[str, str]
    path: str
    arrived: float
    completed: float | None = None
    status: int | None = None
    client_port: int | None = None  # the client's side of the connection: which requests shared one

    @property
    def system(self) -> str:
        """The text of every system message, joined by newlines."""
        return "\n".join(message_text(m) for m in self.body.get("messages", []) if m.get("role") == "system")

    @property
    def tool_names(self) -> list[str]:
        """Names of the tools offered."""
        return [t.get("function", {}).get("name", "") for t in self.body.get("tools", [])]


class _Script:
    """A FIFO of scripted responses and the verbs that fill it: the server's global queue, or a ``Route``."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self._queue: deque[Response] = deque()

    def _push(self, response: Response) -> Self:
        with self._lock:
            self._queue.append(response)
        return self

    def reply(self, text: str, delay_s: float = 0.0) -> Self:
        """Queue a plain text reply."""
        return self._push(Response(content=text, delay_s=delay_s))

    def tool_call(self, name: str, args: dict[str, Any] | None = None, delay_s: float = 0.0) -> Self:
        """Queue a reply holding one tool call."""
        return self._push(Response(calls=((name, args or {}),), delay_s=delay_s))

    def tool_calls(self, calls: Iterable[tuple[str, dict[str, Any]]], delay_s: float = 0.0) -> Self:
        """Queue one reply holding several tool calls."""
        return self._push(Response(calls=tuple(calls), delay_s=delay_s))

    def content_json_tool_call(self, name: str, args: dict[str, Any] | None = None, delay_s: float = 0.0) -> Self:
        """Queue a tool call printed as JSON in ``content``, the way small local models often answer."""
        return self._push(Response(content=json.dumps({"name": name, "arguments": args or {}}), delay_s=delay_s))

    def error(self, status: int, body: Any = None, retry_after: float | str | None = None) -> Self:
        """Queue an HTTP error; ``body`` defaults to an OpenAI-style ``{"error": {...}}``."""
        return self._push(Response(status=status, body=body, retry_after=retry_after))

    def raw(self, body: Any, status: int = 200, delay_s: float = 0.0) -> Self:
        """Queue a verbatim body, e.g. a completion with object arguments or without tool-call ids."""
        return self._push(Response(status=status, body=body, delay_s=delay_s))


class Route(_Script):
    """A queue used only by requests whose messages contain ``match`` (see ``ScriptedLLM.on``)."""

    def __init__(self, match: str | Callable[[dict[str, Any]], bool], where: str, lock: threading.Lock):
        super().__init__(lock)
        self.match = match
        self.where = where

    def matches(self, request: dict[str, Any]) -> bool:
        """Whether a request belongs to this route."""
        if callable(self.match):
            return bool(self.match(request))
        messages = request.get("messages", [])
        if self.where == "system":
            messages = [m for m in messages if m.get("role") == "system"]
        return any(self.match in message_text(m) for m in messages)


class ScriptedLLM(_Script):
    """The loopback server. ``with ScriptedLLM() as llm:`` then use ``llm.base_url`` and the verbs."""

    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        model: str = "scripted-model",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        record: bool = True,
    ) -> None:
        self.delay_s = delay_s
        self.model = model
        self.ssl_context = ssl_context  # serve HTTPS with it
        self.record = record  # keep every request for ``requests`` (a long benchmark would rather not)
        self.default: Response | Responder | None = None
        super().__init__(threading.Lock())
        self._port = port
        self._arrivals = threading.Condition(self._lock)
        self._routes: list[Route] = []
        self._requests: list[RecordedRequest] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[ServerProtocol] = set()

    # -- scripting ---------------------------------------------------------------------------------

    def on(self, match: str | Callable[[dict[str, Any]], bool], *responses: Scriptable, where: str = "system") -> Route:
        """A queue for requests whose system message (``where="any"``: any message) contains ``match``.

        Routes are tried in the order they were made; an empty or unmatched route falls through to the
        global queue, then to ``default``. Returns the route, which has the same verbs as the server.
        """
        if where not in ("system", "any"):
            raise ValueError("where must be 'system' or 'any'")
        route = Route(match, where, self._lock)
        for item in responses:
            route._push(_response(item))
        with self._lock:
            self._routes.append(route)
        return route

    def echo(self) -> Self:
        """Answer every unscripted request with ``echo: <last user/system message>``."""
        self.default = echo
        return self

    @property
    def pending(self) -> int:
        """Scripted responses not yet consumed, over the global queue and every route."""
        with self._lock:
            return len(self._queue) + sum(len(r._queue) for r in self._routes)

    def _next(self, request: dict[str, Any]) -> Response | None:
        with self._lock:
            for route in self._routes:
                if route._queue and route.matches(request):
                    return route._queue.popleft()
            if self._queue:
                return self._queue.popleft()
            default = self.default
        if default is None or isinstance(default, Response):
            return default
        return _response(default(request))

    # -- what was received -------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the chat requests received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until ``n`` requests have arrived; raise ``TimeoutError`` otherwise. Not for event loops."""
        with self._arrivals:
            if not self._arrivals.wait_for(lambda: len(self._requests) >= n, timeout):
                raise TimeoutError(f"ScriptedLLM received {len(self._requests)} request(s), expected {n}")
            return list(self._requests)

    async def wait_for_requests_async(self, n: int, within_s: float = 5.0) -> list[RecordedRequest]:
        """``wait_for_requests`` for async code: waits in a worker thread so the event loop keeps going."""
        import anyio.to_thread  # imported here so the server itself needs only the standard library

        return await anyio.to_thread.run_sync(self.wait_for_requests, n, within_s)

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port (fixed after the first start, so ``up()`` comes back on it)."""
        return self._port

    @property
    def base_url(self) -> str:
        """What to use as the LLM base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        scheme = "https" if self.ssl_context is not None else "http"
        host = "localhost" if self.ssl_context is not None else "127.0.0.1"  # a certificate names a host
        return f"{scheme}://{host}:{self._port}/v1"

    def start(self) -> Self:
        """Start the server thread and listen."""
        if self._loop is not None:
            return self
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="scripted-llm", daemon=True)
        self._thread.start()
        self.up()
        return self

    def up(self) -> None:
        """Listen again (on the same port) after ``down()``."""
        self._call(self._listen())

    def down(self) -> None:
        """Stop listening and drop every connection: clients now get 'connection refused'."""
        self._call(self._unlisten())

    def stop(self) -> None:
        """Shut the server down and end its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        self._call(self._unlisten())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()
        self._loop = self._thread = None

    close = stop

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _call(self, coro: Any) -> Any:
        if self._loop is None:
            coro.close()
            raise RuntimeError("ScriptedLLM is not started: use `with ScriptedLLM() as llm:` or llm.start()")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        if self._server is None:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(
                lambda: ServerProtocol(self._respond, self._connections),
                "127.0.0.1",
                self._port,
                backlog=1024,
                reuse_address=True,
                ssl=self.ssl_context,
            )
            self._port = self._server.sockets[0].getsockname()[1]

    async def _unlisten(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for connection in list(self._connections):
            connection.abort()  # the client must see the connection die
        await asyncio.sleep(0)  # let the transports finish closing

    # -- HTTP --------------------------------------------------------------------------------------

    def _respond(self, request: Request, client_port: int | None) -> Answer:
        method, headers, raw = request.method, request.headers, request.body
        path = request.path.split("?", 1)[0].rstrip("/")
        if method == "GET" and path.endswith("/models"):
            return Answer(200, {}, {"object": "list", "data": [{"id": self.model, "object": "model"}]})
        if method != "POST" or not path.endswith("/chat/completions"):
            error = f"ScriptedLLM serves POST /v1/chat/completions, not {method} {path}"
            return Answer(404, {}, {"error": {"message": error}})
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            return Answer(400, {}, {"error": {"message": f"request body is not a JSON object: {exc}"}})
        record = RecordedRequest(
            body=body, headers=headers, path=path, arrived=time.monotonic(), client_port=client_port
        )
        if self.record:
            with self._arrivals:
                self._requests.append(record)
                self._arrivals.notify_all()
        try:
            response = self._next(body)
        except Exception as exc:  # a broken default responder is a test bug: show it in the body
            response = Response(status=500, body={"error": {"message": f"ScriptedLLM default raised {exc!r}"}})
        if response is None:
            response = Response(status=500, body={"error": {"message": NOT_SCRIPTED, "type": "not_scripted"}})
        extra = {"retry-after": str(response.retry_after)} if response.retry_after is not None else {}
        if response.body is not None:
            payload = response.body
        elif response.status != 200:
            payload = {"error": {"message": f"scripted HTTP {response.status}", "code": response.status}}
        else:
            payload = self._completion(response, body, len(raw))

        def sent(status: int = response.status) -> None:
            record.status, record.completed = status, time.monotonic()

        return Answer(response.status, extra, payload, self.delay_s + response.delay_s, sent)

    def _completion(self, response: Response, request: dict[str, Any], request_bytes: int) -> dict[str, Any]:
        calls = [
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            for name, args in response.calls
        ]
        message: dict[str, Any] = {"role": "assistant", "content": response.content}
        if calls:
            message["tool_calls"] = calls
        # Realistic enough for accounting tests: about four characters (of the request's JSON) per token.
        prompt_chars = request_bytes
        completion_chars = len(response.content or "") + (len(json.dumps(calls)) if calls else 0)
        prompt_tokens, completion_tokens = max(1, prompt_chars // 4), max(1, completion_chars // 4)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model") or self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


def main(argv: list[str] | None = None) -> int:
    """``python -m mcp_letta.testing``: serve until SIGINT/SIGTERM, for benchmarks and subprocess tests."""
    parser = argparse.ArgumentParser(prog="python -m mcp_letta.testing", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (default: any free one)")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="latency added to every response")
    parser.add_argument("--echo", action="store_true", help="reply 'echo: <last user/system message>'")
    parser.add_argument("--reply", help="reply this text to every request")
    parser.add_argument("--model", default="scripted-model", help="model name in /v1/models")
    args = parser.parse_args(argv)
    # Nobody can read a subprocess's records, and a benchmark's hundred thousand requests would pile up.
    llm = ScriptedLLM(port=args.port, delay_s=args.delay_ms / 1000, model=args.model, record=False)
    if args.echo:
        llm.echo()
    elif args.reply is not None:
        llm.default = Response(content=args.reply)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    with llm:
        print(f"ScriptedLLM ready at {llm.base_url}", file=sys.stderr, flush=True)
        stopping.wait()
    return 0

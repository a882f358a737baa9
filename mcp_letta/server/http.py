"""MCP over streamable HTTP: the Starlette app, its guards (bearer token, Host checks, body limit) and uvicorn.

``http_app(server, options)`` serves stateful streamable HTTP at ``/mcp``, an auth-free ``/health`` and the web
console at ``/`` (``mcp_letta.console``), all behind the same Host checks;
``serve_http(settings, options)`` opens the store and runs it under uvicorn, logging to stderr only.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import math
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import FrameType

import anyio
import uvicorn
from anyio.abc import TaskStatus
from mcp.server.transport_security import (
    RequestBodyLimitMiddleware,
    TransportSecurityMiddleware,
    TransportSecuritySettings,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_letta import __version__
from mcp_letta.config import Settings
from mcp_letta.console import console_for
from mcp_letta.errors import Invalid, StorageUnavailable
from mcp_letta.hub import AgentHub
from mcp_letta.server.app import ANSWER_WAIT_S, LettaServer, build_server, freeze_startup_heap
from mcp_letta.server.forwarding import ReplicaNames, ReplicaSessions, check_replica_url
from mcp_letta.server.rest import rest_app

log = logging.getLogger("mcp_letta.http")

MCP_PATH = "/mcp"
HEALTH_PATH = "/health"
REST_PATH = "/v1"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# Tool arguments are text a model writes (block values default to 5,000 characters): 1 MiB is far above
# any useful call, and a cap below the SDK's 4 MiB limits what one client can make us buffer and parse.
MAX_BODY_BYTES = 1024 * 1024
# Live MCP sessions: each holds a task and its buffers until the client ends it or it idles out. A machine's
# hosts and scripts open a handful; 100 leaves room and bounds what abandoned sessions can pile up.
MAX_SESSIONS = 100
SESSION_IDLE_S = 600.0  # a connected host keeps its GET stream open, so only abandoned sessions idle this long
MAX_WAIT_S = 86_400
MIN_TOKEN_CHARS = 16
TOKEN_HINT = (
    "set a bearer token first, e.g.\n"
    "  export MCP_LETTA_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')\n"
    "and give clients the header 'Authorization: Bearer <that token>'"
)


@dataclass(frozen=True)
class HttpOptions:
    """Where and how the HTTP transport listens. ``token=None`` means no auth (loopback binds only)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    token: str | None = field(default=None, repr=False)
    allowed_hosts: tuple[str, ...] = ()
    max_body_bytes: int = MAX_BODY_BYTES
    max_sessions: int = MAX_SESSIONS
    session_idle_s: float = SESSION_IDLE_S
    replica_url: str | None = None  # where the other replicas reach this one (``forwarding``)

    def __post_init__(self) -> None:
        check_bind(self.host, self.token)
        if self.replica_url is not None:
            check_replica_url(self.replica_url)
            if not self.token:
                raise Invalid(
                    "MCP_LETTA_REPLICA_URL needs MCP_LETTA_TOKEN: the replicas name each other in session ids "
                    "with a key derived from the token they share; " + TOKEN_HINT
                )
        if self.max_body_bytes <= 0:
            raise Invalid(f"max_body_bytes={self.max_body_bytes} must be a positive number of bytes")
        if self.max_sessions < 1:
            raise Invalid(f"MCP_LETTA_HTTP_MAX_SESSIONS={self.max_sessions} must be at least 1")
        if not 0 < self.session_idle_s <= MAX_WAIT_S:
            raise Invalid(f"MCP_LETTA_HTTP_SESSION_IDLE_S={self.session_idle_s} must be between 0 and {MAX_WAIT_S} s")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address or name) only accepts connections from this machine."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a bearer token; raise ``Invalid`` saying how to set one."""
    if not is_loopback(host) and not token:
        raise Invalid(f"refusing to serve MCP over HTTP on {host} without a token: anyone who can reach it could "
                      f"drive your agents. Bind 127.0.0.1, or {TOKEN_HINT}")  # fmt: skip


def transport_security(host: str, extra_hosts: Iterable[str] = ()) -> TransportSecuritySettings:
    """DNS-rebinding protection for every bind: the Host header must name this server, or we answer 421.

    Loopback names are always allowed; a non-loopback bind also allows its own address (and, for a
    wildcard bind, this machine's host name) plus ``extra_hosts`` (a proxy's public name, say). Any port
    is accepted: a rebinding attack changes the host name, and proxies may rewrite the port.
    """
    names: list[str] = ["127.0.0.1", "localhost", "[::1]"]
    bind = host.strip("[]")
    if not is_loopback(bind):
        if bind in ("0.0.0.0", "::"):
            names += [socket.gethostname(), socket.getfqdn()]
        else:
            names.append(f"[{bind}]" if ":" in bind else bind)
    names += list(extra_hosts)
    allowed_hosts: list[str] = []
    allowed_origins: list[str] = []
    for name in dict.fromkeys(n for n in names if n):
        if _has_port(name):
            allowed_hosts.append(name)
            allowed_origins += [f"http://{name}", f"https://{name}"]
        else:
            # Without a port the Host header is bare (default port, e.g. behind a TLS proxy) or host:port.
            allowed_hosts += [name, f"{name}:*"]
            allowed_origins += [f"http://{name}", f"https://{name}", f"http://{name}:*", f"https://{name}:*"]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=allowed_hosts, allowed_origins=allowed_origins
    )


def _has_port(name: str) -> bool:
    return name.rsplit("]", 1)[-1].count(":") == 1 if name.startswith("[") else name.count(":") == 1


class BearerTokenMiddleware:
    """Answers 401 to any HTTP request that lacks ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass authorized requests (and non-HTTP scopes) through; refuse the rest."""
        if scope["type"] == "http" and not self._authorized(scope):
            response = JSONResponse(
                {"error": "unauthorized", "hint": "send the header 'Authorization: Bearer <MCP_LETTA_TOKEN>'"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="mcp-letta"'},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        for key, value in scope["headers"]:
            if key == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                # compare_digest: the time taken must not reveal how much of a guess was right.
                return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self._token)
        return False


class SessionLimitMessage:
    """Words the SDK's 503 for a session past ``max_sessions``: how many are open, which setting caps them,
    when idle ones end, and ``Retry-After``."""

    def __init__(self, app: ASGIApp, max_sessions: int, idle_s: float) -> None:
        self.app = app
        self._body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": -32000, "message": (
            f"too many open MCP sessions ({max_sessions}, the MCP_LETTA_HTTP_MAX_SESSIONS limit): end unused "
            f"sessions (HTTP DELETE), wait for idle ones to expire (after {idle_s:g} s), or raise the limit")}}
        ).encode()  # fmt: skip
        self._retry_after = str(max(1, math.ceil(min(idle_s, 60))))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass every request through; replace the body of a 503 refusal."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = False

        async def reword(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start" and message["status"] == 503:
                refused = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"content-length"]
                headers += [(b"content-length", str(len(self._body)).encode()),
                            (b"retry-after", self._retry_after.encode())]  # fmt: skip
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and refused:
                if message.get("more_body"):
                    return
                message = {"type": "http.response.body", "body": self._body}
            await send(message)

        await self.app(scope, receive, reword)


class HostCheckMiddleware:
    """Applies the SDK's Host/Origin check (DNS-rebinding protection) to a non-MCP app, as ``/mcp`` has it."""

    def __init__(self, app: ASGIApp, check: TransportSecurityMiddleware) -> None:
        self.app = app
        self._check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a foreign Host (421) or Origin (403); pass the rest through."""
        if scope["type"] == "http":
            refused = await self._check.validate_request(Request(scope, receive))
            if refused is not None:
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


def http_app(server: LettaServer, options: HttpOptions) -> Starlette:
    """The ASGI app: ``/health`` (no auth), stateful streamable HTTP MCP at ``/mcp`` and Letta's REST API at
    ``/v1`` (both behind the token if set), and the console at ``/`` (a login form takes the token if set).

    A foreign ``Host`` header gets 421 (and a foreign ``Origin`` 403) on every path.
    """
    security = transport_security(options.host, options.allowed_hosts)
    host_check = TransportSecurityMiddleware(security)  # the SDK's own check, as /mcp applies it
    mcp_app: ASGIApp = server.mcp.streamable_http_app(
        streamable_http_path=MCP_PATH,
        stateless_http=False,  # stateful: handshake clients need a session to receive list_changed pushes
        transport_security=security,
        max_request_body_size=options.max_body_bytes,
        max_sessions=options.max_sessions,
        session_idle_timeout=options.session_idle_s,
        host=options.host,
    )
    mcp_app = SessionLimitMessage(mcp_app, options.max_sessions, options.session_idle_s)
    forwarding = None
    if options.replica_url and options.token:  # sessions begun elsewhere are passed on to their replica
        names = ReplicaNames(options.replica_url, options.token)
        server.request_states.names = names  # a call's next round, too, must come back to this replica
        forwarding = ReplicaSessions(mcp_app, names, options.token)
        mcp_app = RequestBodyLimitMiddleware(forwarding, options.max_body_bytes)  # (it reads bodies whole)
    rest: ASGIApp = HostCheckMiddleware(rest_app(server.hub, options.max_body_bytes), host_check)
    if options.token:
        mcp_app = BearerTokenMiddleware(mcp_app, options.token)
        rest = BearerTokenMiddleware(rest, options.token)

    async def health(request: Request) -> Response:
        """Liveness for load balancers and `curl`: version, whether the database answers (else 503), and
        whether this process hears other processes' changes (``feed``)."""
        refused = await host_check.validate_request(request)
        if refused is not None:
            return refused
        try:
            agents: int | None = await server.hub.count_agents()
            db = "ok"
        except Exception as exc:  # a probe reports a broken store; it must not crash or leak paths and details
            cause = exc.reason if isinstance(exc, StorageUnavailable) else type(exc).__name__  # e.g. disk_full
            log.warning("health check: the database did not answer (%s)", cause)
            agents, db = None, f"error: {cause}"
        status = 200 if db == "ok" else 503
        trouble = server.hub.feed_trouble()  # (still serving: only other replicas' changes are late)
        feed = "ok" if trouble is None else f"reconnecting: {trouble}"
        body = {"status": "ok" if db == "ok" else "degraded", "name": "mcp-letta", "version": __version__,
                "db": db, "agents": agents, "feed": feed}  # fmt: skip
        return JSONResponse(body, status_code=status)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # A mounted app's own lifespan never runs, so the session manager is started here (SDK notes §2.2).
        async with server.mcp.session_manager.run(), server.running(), anyio.create_task_group() as tg:
            if forwarding is not None:
                tg.start_soon(forwarding.check_address)  # once this server listens
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
                if forwarding is not None:
                    await forwarding.aclose()

    return Starlette(
        routes=[
            Route(HEALTH_PATH, health, methods=["GET"]),
            *console_for(server, options.token, options.host, options.allowed_hosts).routes(),
            Mount(REST_PATH, app=rest),
            Mount("/", app=mcp_app),
        ],
        lifespan=lifespan,
    )


class Answering:
    """ASGI middleware that knows when the answers in flight are written: every request but the GET streams
    clients hold open for notifications (a stopping server ends those last)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.in_flight = 0
        self._idle: anyio.Event | None = None  # set when the last answer in flight is written

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "GET":
            await self.app(scope, receive, send)
            return
        if not self.in_flight:
            self._idle = anyio.Event()
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            if not self.in_flight and self._idle is not None:
                self._idle.set()

    async def written(self, within_s: float) -> None:
        """Return once no answer is in flight, or after ``within_s`` seconds."""
        if self.in_flight and self._idle is not None:
            with anyio.move_on_after(within_s):
                await self._idle.wait()


class _Uvicorn(uvicorn.Server):
    """uvicorn that reports the port it bound (port 0 picks a free one) once it accepts connections, and that
    can finish its work before it ends its connections (``before_stopping``, see ``handle_exit``)."""

    def __init__(
        self, app: ASGIApp, host: str, port: int, before_stopping: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        super().__init__(
            uvicorn.Config(
                app,
                host=host,
                port=port,
                log_config=None,  # keep our stderr logging: uvicorn's own config sends access logs to stdout
                lifespan="on",
                server_header=False,
                timeout_graceful_shutdown=5,  # an open SSE stream would otherwise hold shutdown forever
                ws="none",
            )
        )
        self._task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED
        self._before_stopping = before_stopping
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Task[None] | None = None

    async def serve_reporting(self, *, task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED) -> None:
        """``serve()``, calling ``task_status.started(port)`` once the socket accepts connections."""
        self._task_status = task_status
        await self.serve()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Start listening, then report the bound port."""
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)
        if self.started:
            self._task_status.started(self.servers[0].sockets[0].getsockname()[1] if self.servers else self.config.port)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """SIGTERM or SIGINT. With ``before_stopping``, the first one closes the listening socket (the balancer
        sends new connections elsewhere) and runs it, then lets uvicorn end the connections: their streams
        would otherwise end at once (``sse-starlette`` ends every stream at the signal), cutting the answers
        of the calls in flight. A second signal stops at once."""
        if self._before_stopping is None or self._stopping is not None or self._loop is None:
            super().handle_exit(sig, frame)
            return
        self._loop.call_soon_threadsafe(self._stop_after_work, sig)

    def _stop_after_work(self, sig: int) -> None:
        async def stop() -> None:
            for server in self.servers:
                server.close()
            try:
                await self._before_stopping()  # type: ignore[misc]
            except Exception:
                log.exception("could not finish the work in flight before stopping")
            super(_Uvicorn, self).handle_exit(sig, None)  # now the connections end, and the server

        if self._stopping is None:
            self._stopping = asyncio.ensure_future(stop())


async def serve_app(
    app: ASGIApp,
    host: str,
    port: int,
    *,
    before_stopping: Callable[[], Awaitable[None]] | None = None,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``app`` under uvicorn until SIGINT/SIGTERM (uvicorn handles both and shuts down gracefully; with
    ``before_stopping``, that runs first, with no new connection accepted, see ``_Uvicorn.handle_exit``).

    Started with ``task_group.start``, it reports the bound port once it accepts connections."""
    await _Uvicorn(app, host, port, before_stopping).serve_reporting(task_status=task_status)


@asynccontextmanager
async def running_app(app: ASGIApp, host: str = DEFAULT_HOST, port: int = 0) -> AsyncIterator[int]:
    """Serve ``app`` in the background while the block runs; yields the bound port, then shuts down cleanly."""
    server = _Uvicorn(app, host, port)
    async with anyio.create_task_group() as tg:
        bound = await tg.start(server.serve_reporting)
        try:
            yield bound
        finally:
            server.should_exit = True  # graceful: lifespan shutdown runs, unlike cancelling the task


async def serve_http(settings: Settings, options: HttpOptions) -> None:
    """Open the store named by ``settings`` and serve MCP over HTTP until interrupted."""
    async with AgentHub(settings) as hub:
        app = Answering(http_app(build_server(hub, settings), options))

        async def before_stopping() -> None:  # a rolling upgrade: the calls in flight get their answers
            log.info("stopping: no new run starts here, the runs in flight get up to %gs to finish, then go back "
                     "to the queue and the calls waiting on them are answered 'pending' (signal again to stop at "
                     "once)", settings.shutdown_grace_s)  # fmt: skip
            await hub.wind_down(settings.shutdown_grace_s)
            await hub.hand_back()
            await app.written(within_s=ANSWER_WAIT_S)

        freeze_startup_heap()
        auth = "bearer token required" if options.token else "no token (loopback only)"
        if options.token and len(options.token) < MIN_TOKEN_CHARS:
            log.warning(
                "MCP_LETTA_TOKEN has only %d characters; a guessable token protects nothing: make one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'",
                len(options.token),
            )
        hosts = ", ".join(transport_security(options.host, options.allowed_hosts).allowed_hosts)
        log.info("serving MCP at http://%s:%d%s (%s), Letta's REST API at %s, the console at /; Host headers "
                 "allowed: %s", _url_host(options.host), options.port, MCP_PATH, auth, REST_PATH, hosts)  # fmt: skip
        await serve_app(app, options.host, options.port, before_stopping=before_stopping)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def options_from(settings: Settings, host: str, port: int, allowed_hosts: Iterable[str]) -> HttpOptions:
    """The HTTP options for the CLI: ``--allowed-host`` flags plus ``MCP_LETTA_ALLOWED_HOSTS``, the token."""
    extra = tuple(allowed_hosts) + settings.allowed_hosts
    return HttpOptions(
        host=host,
        port=port,
        token=settings.token,
        allowed_hosts=extra,
        max_sessions=settings.http_max_sessions,
        session_idle_s=settings.http_session_idle_s,
        replica_url=settings.replica_url,
    )

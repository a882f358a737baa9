"""Who may use the console: the Host and Origin checks of ``/mcp``, a session cookie and a CSRF token.

Without ``MCP_LETTA_TOKEN`` (loopback binds only) opening the page starts a session; with a token a login
form takes it and sets an ``HttpOnly``, ``SameSite=Strict`` cookie. Every request under ``/api`` and
``/events`` needs the cookie; every write also needs the session's CSRF token in ``X-CSRF-Token`` and a JSON
body (which a cross-site form cannot send).

A session is a signed cookie, not a record kept in memory: the key is derived from the token, so every
server holding the same token accepts it. Replicas behind a load balancer that spreads the page's requests
share the sessions, a session survives a restart or a rolling upgrade, and changing the token ends them all.
Without a token the key is this process's own, and the cookie's name carries the port: two consoles on one
machine (``serve --transport http`` and ``mcp-letta console``) would otherwise replace each other's cookie,
as browsers keep cookies by host, not by port.

The cookie is marked ``Secure`` when the page came over HTTPS: to this server, or to a load balancer that
ends TLS and says so (``X-Forwarded-Proto: https``, or ``Forwarded: proto=https``). That header is taken from
anyone, as it can only add the flag: a client that sends it over plain HTTP gets a cookie its own browser
will not send back, and a page cannot make a browser send it to another site.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

COOKIE = "mcp_letta_console"
CSRF_HEADER = "x-csrf-token"
SESSION_MAX_AGE_S = 7 * 24 * 3600  # a session older than this asks for the token again
CLOCK_SLACK_S = 300  # a session issued by a replica whose clock runs this much ahead is still good


def _mac(key: bytes, *parts: str) -> str:
    digest = hmac.new(key, "\x00".join(parts).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def came_over_https(request: Request) -> bool:
    """Whether the browser sent ``request`` over HTTPS: to this server, or to a balancer that ended TLS and
    says so (``X-Forwarded-Proto``, else ``Forwarded``; the first hop's, the one nearest the browser)."""
    if request.url.scheme == "https":
        return True
    told = request.headers.get("x-forwarded-proto", "")
    if not told:  # RFC 7239: "Forwarded: for=192.0.2.1;proto=https, for=..."
        first_hop = request.headers.get("forwarded", "").split(",")[0]
        pairs = (pair.strip().partition("=") for pair in first_hop.split(";"))
        told = next((value for name, _, value in pairs if name.lower() == "proto"), "")
    return told.split(",")[0].strip().strip('"').lower() == "https"


class ConsoleAuth:
    """Sessions of the console (signed cookies, see the module's docstring) and its request checks."""

    def __init__(self, token: str | None, security: TransportSecuritySettings) -> None:
        self.token_required = bool(token)
        self._token = (token or "").encode()
        self._key = (
            hmac.new(self._token, b"mcp-letta console sessions", hashlib.sha256).digest()
            if token
            else secrets.token_bytes(32)
        )
        self._host_check = TransportSecurityMiddleware(security)

    def token_matches(self, given: str) -> bool:
        """Whether ``given`` is the token (in constant time: the time taken must not reveal a partial match)."""
        return self.token_required and hmac.compare_digest(given.encode(), self._token)

    def cookie_name(self, request: Request) -> str:
        """The session cookie's name: one name wherever the token is shared; per port without a token."""
        port = request.url.port
        return COOKIE if self.token_required or port is None else f"{COOKIE}_{port}"

    def start_session(self, response: Response, request: Request) -> None:
        """Start a session and set its cookie on ``response``."""
        body = f"{int(time.time())}.{secrets.token_urlsafe(16)}"
        response.set_cookie(
            self.cookie_name(request),
            f"{body}.{_mac(self._key, 'session', body)}",
            httponly=True,
            samesite="strict",
            path="/",
            secure=came_over_https(request),
        )

    def end_session(self, request: Request, response: Response) -> None:
        """Forget the session: clear its cookie in the browser (every session ends when the token changes)."""
        response.delete_cookie(self.cookie_name(request), path="/")

    def csrf(self, request: Request) -> str | None:
        """The CSRF token of the request's session; None without a valid session cookie (missing, altered,
        signed with another key, or older than ``SESSION_MAX_AGE_S``)."""
        issued, _, rest = request.cookies.get(self.cookie_name(request), "").partition(".")
        nonce, _, mac = rest.partition(".")
        if not issued.isdigit() or not nonce or not mac:
            return None
        if not hmac.compare_digest(mac.encode(), _mac(self._key, "session", f"{issued}.{nonce}").encode()):
            return None
        if not -CLOCK_SLACK_S <= time.time() - int(issued) <= SESSION_MAX_AGE_S:
            return None
        return _mac(self._key, "csrf", nonce)

    async def host_refused(self, request: Request) -> Response | None:
        """421 for a foreign Host header, 403 for a foreign Origin (the checks ``/mcp`` applies); else None."""
        return await self._host_check.validate_request(request)

    async def refused(self, request: Request, *, write: bool = False) -> Response | None:
        """Why this API request may not proceed (a response to send), or None if it may."""
        refused = await self._host_check.validate_request(request, is_post=write)
        if refused is not None:
            return refused
        csrf = self.csrf(request)
        if csrf is None:
            hint = "log in with MCP_LETTA_TOKEN at /" if self.token_required else "open the console at / first"
            return JSONResponse({"error": f"no console session: {hint}", "code": "unauthorized"}, status_code=401)
        if write and not hmac.compare_digest(request.headers.get(CSRF_HEADER, "").encode(), csrf.encode()):
            return JSONResponse(
                {"error": "missing or wrong CSRF token: reload the page and try again", "code": "csrf"},
                status_code=403,
            )
        return None

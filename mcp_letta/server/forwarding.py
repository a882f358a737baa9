"""Sessions and calls begun on another replica, so that any load balancer will do.

A streamable-HTTP MCP session lives in the process that answered its ``initialize``, and its id comes back on
every later request. A balancer that cannot learn which replica issued an id (one that hashes the header, or
sticks by cookie) sends those requests to the wrong replica. With ``MCP_LETTA_REPLICA_URL`` (the address the
other replicas reach this one at), the replica is named in what it hands out (``ReplicaNames``):
``<owner>.<mac>.<rest>``, the owner's URL in base64url, an HMAC of it under a key derived from
``MCP_LETTA_TOKEN``, then the SDK's own session id, or the sealed ``requestState`` of a 2026-era call that
asks the host for more (``NamedStateCodec``: the next round of the call must reach the replica where the
call waits). ``ReplicaSessions`` hands a request of this replica's to the SDK (with the bare id) and passes
one of another's on to it, streaming the answer back. Only owners named with the token's key are followed: a
client cannot make a replica call an address of its choosing. A session whose owner does not answer (it
stopped) gets ``404 Session not found``, on which MCP clients begin a new session, as when a replica behind
a learning balancer stops.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Callable
from urllib.parse import urlsplit

import anyio
import httpx2
from mcp.server.request_state import AESGCMRequestStateCodec, InvalidRequestState
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_letta.errors import Invalid

log = logging.getLogger(__name__)

SESSION_HEADER = b"mcp-session-id"
FORWARDED_HEADER = b"x-mcp-letta-forwarded"  # a request passed on once is never passed on again
PROBE_HEADER = b"x-mcp-letta-replica-probe"  # "which process are you?", asked of our own address at start
# Headers about one connection, not the request: each hop sets its own.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
     b"transfer-encoding", b"upgrade", b"content-length"}
)  # fmt: skip
CONNECT_TIMEOUT_S = 5.0
CHECK_TRIES = 20  # the address check at start, half a second apart: the server may take a moment to listen
PROBES = 5  # answers it takes from this process before the address counts as its own


def check_replica_url(url: str) -> str:
    """``url`` as the address other replicas reach this one at (``http(s)://host:port``, no path), or
    ``Invalid`` with an example."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None or parts.path not in ("", "/") \
            or parts.query or parts.fragment or parts.username or parts.password:  # fmt: skip
        raise Invalid(
            f"MCP_LETTA_REPLICA_URL={url!r} is not a replica's address: give the scheme, host and port the other "
            "replicas reach this one at, with nothing after them, e.g. http://10.0.0.11:8000"
        )
    return f"{parts.scheme}://{parts.netloc}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class ReplicaNames:
    """This replica's name, put in front of what it hands out, and the replica a name points to."""

    def __init__(self, own_url: str, token: str) -> None:
        self.own_url = check_replica_url(own_url)
        self._key = hmac.new(token.encode(), b"mcp-letta session owner", hashlib.sha256).digest()
        self.prefix = f"{self._name(self.own_url)}."

    def _name(self, url: str) -> str:
        mac = hmac.new(self._key, url.encode(), hashlib.sha256).digest()[:12]
        return f"{_b64(url.encode())}.{_b64(mac)}"

    def owner(self, named: str) -> tuple[str, str] | None:
        """The replica ``named`` names and what follows the name, or None where no replica named it."""
        parts = named.split(".", 2)
        if len(parts) != 3:
            return None
        try:
            url = base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return None
        if not hmac.compare_digest(self._name(url).encode(), f"{parts[0]}.{parts[1]}".encode()):
            return None
        return url, parts[2]


class NamedStateCodec:
    """The SDK's own sealing of ``requestState`` (AES-GCM under a key of this process, as by default), with this
    replica's name in front once it has one (``names``, set where replicas pass requests on)."""

    def __init__(self) -> None:
        self._sealed = AESGCMRequestStateCodec([os.urandom(32)])
        self.names: ReplicaNames | None = None

    def seal(self, payload: bytes) -> str:
        """Seal ``payload`` and name this replica in front."""
        token = self._sealed.seal(payload)
        return token if self.names is None else self.names.prefix + token

    def unseal(self, token: str) -> bytes:
        """The payload of a token this replica sealed; ``InvalidRequestState`` for any other."""
        if self.names is not None:
            named = self.names.owner(token)
            if named is None or named[0] != self.names.own_url:
                raise InvalidRequestState("not sealed by this replica")
            token = named[1]
        return self._sealed.unseal(token)


class ReplicaSessions:
    """ASGI middleware before the SDK's ``/mcp`` app: names this replica in the session ids it hands out,
    and passes requests of sessions (or calls) named for another replica on to it (see the module
    docstring)."""

    def __init__(self, app: ASGIApp, names: ReplicaNames, token: str) -> None:
        self.app = app
        self.names = names
        self.own_url = names.own_url
        self._token = token
        self._instance = secrets.token_hex(8)  # which process answers a probe of our address
        self._prefix = names.prefix.encode()
        self._client = httpx2.AsyncClient(
            timeout=httpx2.Timeout(30.0, connect=CONNECT_TIMEOUT_S, read=None),  # a stream may be quiet for long
            follow_redirects=False,
            limits=httpx2.Limits(max_connections=None),  # one per stream passed on; sessions are bounded
            trust_env=False,  # replicas reach each other directly, never through the machine's proxy
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Hand the request to the SDK (with the bare id of a session of this replica), or to its owner."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if any(key == PROBE_HEADER for key, _ in scope["headers"]):
            await JSONResponse({"instance": self._instance})(scope, receive, send)
            return
        passed_on = any(key == FORWARDED_HEADER for key, _ in scope["headers"])
        given = next((value for key, value in scope["headers"] if key == SESSION_HEADER), None)
        if given is not None:
            named = self.names.owner(given.decode("latin-1"))
            if named is not None and named[0] != self.own_url:
                if passed_on:
                    why = (f"another replica passed it on to {self.own_url}, which did not begin it (each replica's "
                           "MCP_LETTA_REPLICA_URL must reach that replica itself)")  # fmt: skip
                    await _session_gone(why)(scope, receive, send)
                    return
                await self._forward(named[0], scope, await _body(receive), receive, send, _session_gone)
                return
            if named is not None:
                bare = named[1].encode("latin-1")
                scope = dict(scope, headers=[(k, bare if k == SESSION_HEADER else v) for k, v in scope["headers"]])
            await self.app(scope, receive, self._naming(send))
            return
        if scope["method"] != "POST":
            await self.app(scope, receive, self._naming(send))
            return
        body = await _body(receive)  # a 2026-era call: its next round must reach the replica where it waits
        owner = None if body is None or passed_on else self._state_owner(body)
        if owner is not None and owner != self.own_url:
            await self._forward(owner, scope, body, receive, send, _call_gone(body))
            return
        await self.app(scope, _replay(body, receive), self._naming(send))

    def _state_owner(self, body: bytes) -> str | None:
        """The replica named in the request's ``params.requestState``, if any."""
        try:
            message = json.loads(body)
        except ValueError:
            return None
        params = message.get("params") if isinstance(message, dict) else None
        state = params.get("requestState") if isinstance(params, dict) else None
        named = self.names.owner(state) if isinstance(state, str) else None
        return None if named is None else named[0]

    def _naming(self, send: Send) -> Send:
        """``send``, with this replica named in the session id the SDK hands out."""

        async def naming(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, self._prefix + v if k == SESSION_HEADER else v) for k, v in message["headers"]]
                message = dict(message, headers=headers)
            await send(message)

        return naming

    async def _forward(
        self,
        owner: str,
        scope: Scope,
        body: bytes | None,
        receive: Receive,
        send: Send,
        gone: Callable[[str], Response],
    ) -> None:
        """Pass the request on to ``owner`` and stream its answer back until it ends or the client leaves;
        ``gone`` answers when ``owner`` does not."""
        if body is None:  # the client left
            return
        query = scope.get("query_string") or b""
        url = owner + scope["path"] + (f"?{query.decode('latin-1')}" if query else "")
        headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP] + [(FORWARDED_HEADER, b"1")]
        request = self._client.build_request(scope["method"], url, headers=headers, content=body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx2.HTTPError as exc:
            log.warning("the replica at %s, which began an MCP session or call, does not answer (%s)", owner, exc)
            await gone(f"the replica that began it ({owner}) does not answer")(scope, receive, send)
            return
        try:
            headers = [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP - {b"content-length"}]
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            async with anyio.create_task_group() as tg:

                async def until_the_client_leaves() -> None:
                    while (await receive())["type"] != "http.disconnect":
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(until_the_client_leaves)
                try:
                    async for chunk in response.aiter_raw():
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                except httpx2.HTTPError as exc:  # the owner went away mid-answer: end it here
                    log.warning("lost the answer of the replica at %s (%s)", owner, exc)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                tg.cancel_scope.cancel()
        finally:
            await response.aclose()

    async def check_address(self) -> None:
        """Log whether ``MCP_LETTA_REPLICA_URL`` reaches this process (a warning saying what to fix if not): a
        wrong one shows otherwise only when another replica passes a request on to it. Asked ``PROBES`` times,
        each on a connection of its own, so that a balancer's address is caught even when it first happens
        to send the probe here."""
        setting = f"MCP_LETTA_REPLICA_URL={self.own_url}"
        headers = {"Authorization": f"Bearer {self._token}", PROBE_HEADER.decode(): "1", "Connection": "close"}
        answers: list[str | None] = []
        reason = ""
        for _ in range(CHECK_TRIES):
            try:
                answer = await self._client.get(self.own_url + "/mcp", headers=headers, timeout=CONNECT_TIMEOUT_S)
            except httpx2.HTTPError as exc:
                reason = str(exc) or type(exc).__name__
                await anyio.sleep(0.5)
                continue
            try:
                answers.append(answer.json().get("instance") if answer.status_code == 200 else None)
            except ValueError:
                answers.append(None)
            if answers[-1] != self._instance or len(answers) == PROBES:
                break
        if not answers:
            log.warning("%s does not reach this replica (%s): give the address the other replicas reach it at, or "
                        "its sessions' requests will fail with 404 Session not found", setting, reason)  # fmt: skip
        elif answers[-1] == self._instance:
            log.info("%s reaches this replica: the others pass its sessions' requests on to it", setting)
        elif answers[-1] is not None:
            log.warning("%s reaches another mcp-letta replica, not this one (the balancer's address, or one "
                        "copied from another replica): give each replica the address the others reach it at, or "
                        "its sessions' requests will fail with 404 Session not found", setting)  # fmt: skip
        else:
            log.warning("%s answers HTTP %d, not as an mcp-letta replica with this token: give the address the "
                        "other replicas reach this one at", setting, answer.status_code)  # fmt: skip

    async def aclose(self) -> None:
        """Close the connections to the other replicas."""
        await self._client.aclose()


def _session_gone(why: str) -> Response:
    """404 ``Session not found`` (the SDK's words, on which clients begin a new session), and why."""
    error = {"code": -32600, "message": f"Session not found: {why}; begin a new session"}
    return JSONResponse({"jsonrpc": "2.0", "id": None, "error": error}, status_code=404)


async def _body(receive: Receive) -> bytes | None:
    """The whole request body (bounded by the SDK's limit middleware outside), or None if the client left."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if not message.get("more_body"):
            return bytes(body)


def _replay(body: bytes | None, receive: Receive) -> Receive:
    """``receive``, giving ``body`` (already read) first."""
    pending: list[Message] = [{"type": "http.request", "body": body or b"", "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def _call_gone(body: bytes | None) -> Callable[[str], Response]:
    """The SDK's answer to a ``requestState`` it cannot take, and why, for the call in ``body``."""

    def refuse(why: str) -> Response:
        try:
            request_id = json.loads(body or b"{}").get("id")
        except (ValueError, AttributeError):
            request_id = None
        error = {"code": -32602, "message": f"Invalid or expired requestState: {why}; make the call again"}
        return JSONResponse({"jsonrpc": "2.0", "id": request_id, "error": error})

    return refuse

"""``OpenAIClient``'s HTTP behaviour against real loopback servers: the scripted LLM (HTTP and HTTPS) and a raw
socket server that answers the ways real servers do (chunked, gzip, close, going away): connection reuse,
timeouts, framing, TLS trust, proxies and credentials."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import anyio
import conftest_llm
import pytest

from mcp_letta import __version__
from mcp_letta.errors import Invalid, LLMUnavailable
from mcp_letta.llm import ChatRequest, OpenAIClient
from mcp_letta.testing import Response, ScriptedLLM

pytestmark = pytest.mark.anyio
scripted_llm = conftest_llm.scripted_llm


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def chat(text: str = "hello") -> ChatRequest:
    return ChatRequest(model="test-model", messages=[{"role": "user", "content": text}])


def completion(text: str) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": text}}]}).encode()


# -- a raw HTTP/1.1 server whose answers the test writes byte for byte --------------------------------
Handler = Callable[[int, int, bytes], bytes | None]  # (connection no., request no. on it, request) -> answer


class RawServer:
    """A loopback server on its own thread; ``handler`` returns the bytes to answer, or None to hang up."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[tuple[int, bytes]] = []  # (connection no., request head)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._tasks: set[asyncio.Task[None]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        number, count = self.connections, 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                sizes = [
                    line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
                ]
                await reader.readexactly(int(sizes[0]) if sizes else 0)
                count += 1
                self.requests.append((number, head))
                answer = self.handler(number, count, head)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _stop(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def __enter__(self) -> str:
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    lines = [f"HTTP/1.1 {status}", *headers]
    if not any(h.lower().startswith(("content-length", "transfer-encoding", "connection: close")) for h in headers):
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
async def client_of() -> AsyncIterator[Callable[..., OpenAIClient]]:
    """``OpenAIClient``s for a server's ``/v1``, without retries unless asked, closed after the test."""
    made: list[OpenAIClient] = []

    def make(url: str, *, max_retries: int = 0, **options: float) -> OpenAIClient:
        made.append(OpenAIClient(f"{url}/v1", max_retries=max_retries, **options))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for client in made:
        await client.aclose()


# -- connections ---------------------------------------------------------------------------------------
async def test_requests_in_turn_share_one_connection_and_concurrent_ones_each_get_one(
    scripted_llm: ScriptedLLM,
) -> None:
    scripted_llm.echo()
    client = OpenAIClient(scripted_llm.base_url, max_retries=0)
    try:
        for i in range(3):
            assert (await client.chat(chat(f"turn {i}"))).content == f"echo: turn {i}"
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(client.chat, chat(f"together {i}"))
        for i in range(20):  # the twenty connections stay open and are taken again
            await client.chat(chat(f"again {i}"))
    finally:
        await client.aclose()
    ports = [r.client_port for r in scripted_llm.requests]
    assert len(set(ports[:3])) == 1
    assert len(set(ports[3:23])) == 20
    assert set(ports[23:]) <= set(ports[:23])


async def test_a_connection_the_server_dropped_while_idle_is_replaced_without_a_retry(
    scripted_llm: ScriptedLLM,
) -> None:
    scripted_llm.echo()
    client = OpenAIClient(scripted_llm.base_url, max_retries=0)  # a retry would fail the test
    try:
        await client.chat(chat("before"))
        scripted_llm.down()  # drops every connection, as a server's idle timeout does
        scripted_llm.up()
        assert (await client.chat(chat("after"))).content == "echo: after"
    finally:
        await client.aclose()
    first, second = scripted_llm.requests
    assert first.client_port != second.client_port


async def test_a_reused_connection_closed_as_the_request_arrives_is_retried_once_on_a_new_one(
    client_of: Callable[..., OpenAIClient],
) -> None:
    # The race a server's idle timeout makes: it closes the connection just as our request reaches it.
    def handler(connection: int, request: int, head: bytes) -> bytes | None:
        return None if request == 2 else answer(completion(f"connection {connection}"))

    server = RawServer(handler)
    with server as url:
        client = client_of(url)  # no retries: the second send must not need one
        first = await client.chat(chat())
        second = await client.chat(chat())
    assert (first.content, second.content) == ("connection 1", "connection 2")
    assert [number for number, _ in server.requests] == [1, 1, 2]


async def test_a_server_that_hangs_up_mid_answer_is_a_protocol_error_not_a_retry(
    client_of: Callable[..., OpenAIClient],
) -> None:
    def handler(connection: int, request: int, head: bytes) -> bytes | None:
        if request == 1:
            return answer(completion("whole"))
        return b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\nconnection: close\r\n\r\n{"partial'

    server = RawServer(handler)
    with server as url:
        client = client_of(url)
        await client.chat(chat())
        with pytest.raises(LLMUnavailable, match=r"RemoteProtocolError: .*without sending complete message body"):
            await client.chat(chat())
    # The hang-up came after part of the answer: the request may have been processed, so it is not re-sent.
    assert len(server.requests) == 2


# -- bodies --------------------------------------------------------------------------------------------
async def test_chunked_gzip_and_read_until_close_bodies_are_decoded(
    client_of: Callable[..., OpenAIClient],
) -> None:
    payload = completion("x" * 5000)
    packed = gzip.compress(payload)

    def chunked() -> bytes:
        chunks = [payload[i : i + 1000] for i in range(0, len(payload), 1000)]
        body = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\nx-trailer: yes\r\n\r\n"
        return answer(body, "transfer-encoding: chunked")

    framings = [
        chunked(),
        answer(packed, "content-encoding: gzip"),
        b"HTTP/1.1 100 Continue\r\n\r\n" + answer(payload),
        answer(payload, "connection: close"),  # no length: the body ends when the connection does
        chunked(),
    ]
    server = RawServer(lambda *_: framings[len(server.requests) - 1])
    with server as url:
        client = client_of(url)
        for framing in ("chunked", "gzip", "interim", "close", "chunked"):
            assert (await client.chat(chat())).content == "x" * 5000, framing
    # The first four shared a connection (each answer was read to its end); the close ended it.
    assert [number for number, _ in server.requests] == [1, 1, 1, 1, 2]


async def test_a_connection_that_timed_out_is_never_given_to_the_next_request(scripted_llm: ScriptedLLM) -> None:
    # Reusing it would hand the next caller the late answer to the request that timed out.
    scripted_llm.reply("warm").reply("late answer", delay_s=1.0).reply("right answer")
    client = OpenAIClient(scripted_llm.base_url, timeout_s=0.3, max_retries=0)
    try:
        await client.chat(chat("warm"))  # so the request that times out goes over a kept-alive connection
        with pytest.raises(LLMUnavailable, match=r"ReadTimeout: .* did not answer within 0.3 s"):
            await client.chat(chat("first"))
        assert (await client.chat(chat("second"))).content == "right answer"
    finally:
        await client.aclose()
    warm, first, second = scripted_llm.requests
    assert warm.client_port == first.client_port != second.client_port


async def test_a_cancelled_request_closes_its_connection(scripted_llm: ScriptedLLM) -> None:
    scripted_llm.reply("warm").reply("too late", delay_s=1.0).reply("fresh")
    client = OpenAIClient(scripted_llm.base_url, max_retries=0)
    try:
        await client.chat(chat("warm"))
        with anyio.move_on_after(0.2):
            await client.chat(chat("cancelled"))
        assert (await client.chat(chat("next"))).content == "fresh"
    finally:
        await client.aclose()
    warm, first, second = scripted_llm.requests
    assert warm.client_port == first.client_port != second.client_port


async def test_an_answer_that_is_not_http_is_a_clear_llm_error(client_of: Callable[..., OpenAIClient]) -> None:
    with RawServer(lambda *_: b"SSH-2.0-OpenSSH_9.2\r\n\r\n") as url:
        client = client_of(url)
        pattern = r"RemoteProtocolError: the HTTP exchange with http://127\.0\.0\.1:\d+ failed: illegal status line"
        with pytest.raises(LLMUnavailable, match=pattern):
            await client.chat(chat())


async def test_nothing_listening_is_connect_failed(client_of: Callable[..., OpenAIClient]) -> None:
    with RawServer(lambda *_: None) as url:
        pass  # closed again: the port is free now
    with pytest.raises(LLMUnavailable, match=r"ConnectError: cannot connect to http://127\.0\.0\.1:\d+"):
        await client_of(url).chat(chat())


async def test_a_connect_that_hangs_is_timed_out(client_of: Callable[..., OpenAIClient]) -> None:
    # A listening socket whose accept queue is full drops new connection attempts: connect() hangs.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        try:
            await anyio.sleep(0.05)
            pattern = r"ConnectTimeout: connecting to http://127\.0\.0\.1:\d+ took over 0\.2 s"
            with pytest.raises(LLMUnavailable, match=pattern):
                await client_of(f"http://127.0.0.1:{port}", timeout_s=0.2).chat(chat())
        finally:
            for filler in fillers:
                filler.close()


def test_a_key_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(Invalid, match="line break") as caught:
        OpenAIClient("http://127.0.0.1:9/v1", "sk-abc\r\nx-injected: 1")
    assert "sk-abc" not in str(caught.value)


async def test_credentials_in_the_url_become_basic_auth(scripted_llm: ScriptedLLM) -> None:
    scripted_llm.reply("ok")
    client = OpenAIClient(scripted_llm.base_url.replace("http://", "http://ann:s%40cret@"), max_retries=0)
    try:
        await client.chat(chat())
        assert "s%40cret" not in client.url and "ann:***@" in client.url
    finally:
        await client.aclose()
    [request] = scripted_llm.requests
    assert request.headers["authorization"] == "Basic YW5uOnNAY3JldA=="  # ann:s@cret


async def test_requests_name_mcp_letta_and_its_version_as_the_user_agent(scripted_llm: ScriptedLLM) -> None:
    scripted_llm.reply("ok")
    client = OpenAIClient(scripted_llm.base_url, max_retries=0)
    try:
        await client.chat(chat())
    finally:
        await client.aclose()
    [request] = scripted_llm.requests
    assert request.headers["user-agent"] == f"mcp-letta/{__version__}"
    assert request.headers["content-type"] == "application/json"


async def test_no_secret_reaches_a_retry_log_or_the_final_error(
    scripted_llm: ScriptedLLM, caplog: pytest.LogCaptureFixture
) -> None:
    key, password = "sk-log-secret-9876", "pw-log-secret-5432"
    echoed = {"error": {"message": f"overloaded; you sent {key} and {password}"}}
    scripted_llm.error(503, echoed).error(503, echoed)
    caplog.set_level(logging.DEBUG)  # httpx2's and httpcore2's own logs too
    url = scripted_llm.base_url.replace("http://", f"http://ann:{password}@")
    client = OpenAIClient(url, key, max_retries=1, backoff_s=0.01)
    try:
        with pytest.raises(LLMUnavailable, match=r"failed 2 times, last with HTTP 503: overloaded") as caught:
            await client.chat(chat())
    finally:
        await client.aclose()
    assert "retry 1 of 1" in caplog.text and "ann:***@" in caplog.text
    for secret in (key, password):
        assert secret not in caplog.text and secret not in str(caught.value) and secret not in repr(client)


# -- TLS and proxies -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    """A private CA and a certificate it signed for localhost: (ca.pem, cert.pem, key.pem)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=mcp-letta test CA",
            "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "req.csr")
    (folder / "ext.cnf").write_text("subjectAltName=DNS:localhost\n")
    openssl("x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-extfile", "ext.cnf", "-out", "cert.pem")  # fmt: skip
    yield folder / "ca.pem", folder / "cert.pem", folder / "key.pem"


async def test_https_is_verified_against_the_trust_settings(
    certificates: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    ca, cert, key = certificates
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with ScriptedLLM(ssl_context=context) as llm:
        llm.reply("over TLS")
        untrusting = OpenAIClient(llm.base_url, max_retries=0)
        try:
            with pytest.raises(LLMUnavailable, match=r"certificate .* was not accepted.*SSL_CERT_FILE"):
                await untrusting.chat(chat())
        finally:
            await untrusting.aclose()
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # what a user with a private CA sets
        trusting = OpenAIClient(llm.base_url, max_retries=0)
        try:
            assert (await trusting.chat(chat())).content == "over TLS"
        finally:
            await trusting.aclose()


async def test_a_proxy_named_by_the_environment_carries_the_requests(
    scripted_llm: ScriptedLLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The scripted LLM plays the proxy: it receives the absolute-form request a proxy gets.
    scripted_llm.default = Response(content="via the proxy")
    monkeypatch.setenv("HTTP_PROXY", scripted_llm.base_url.removesuffix("/v1"))
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = OpenAIClient("http://llm.example.invalid:8080/v1", max_retries=0)
    try:
        assert (await client.chat(chat())).content == "via the proxy"
    finally:
        await client.aclose()
    [request] = scripted_llm.requests
    assert request.path == "http://llm.example.invalid:8080/v1/chat/completions"
    monkeypatch.setenv("NO_PROXY", "llm.example.invalid")
    direct = OpenAIClient("http://llm.example.invalid:8080/v1", max_retries=0)
    try:
        with pytest.raises(LLMUnavailable, match=r"cannot connect to http://llm\.example\.invalid:8080"):
            await direct.chat(chat())
    finally:
        await direct.aclose()

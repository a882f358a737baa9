"""Three real ``mcp-letta serve --transport http`` processes on one PostgreSQL database, driven by real MCP
clients: what one replica changes reaches the others' clients (tools/list_changed, block updates, the host
inbox), a wait cycle spread over replicas is refused, concurrent appends through all three lose nothing,
one agent runs one message at a time whichever replicas its messages came through, and after a replica
is killed with SIGKILL every run it held is reported truthfully. The replicas share the queue: runs
stored through a busy replica are executed by the others (the ``owner`` of a run is the replica that
executed it), in each agent's order and one at a time, and the caller waiting on them hears of their end.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp.types as types
import psycopg
import pytest
from conftest import most_at_once
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CreateMessageResult, TextContent
from pg_server import free_port
from test_http import AUTH, TOKEN
from test_multiagent import Agents, role, tool_result

from mcp_letta import AgentHub, Settings
from mcp_letta.server.forwarding import ReplicaNames
from mcp_letta.testing import Response, ScriptedLLM

pytestmark = [pytest.mark.anyio, pytest.mark.postgres_only, pytest.mark.filterwarnings("ignore::UserWarning")]

SCRIPT = Path(sys.executable).parent / "mcp-letta"
WAIT = "send_message_to_agent_and_wait_for_reply"


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until something accepts connections on ``port``; ``RuntimeError`` with ``proc``'s ``log`` if it exits
    first."""
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"{proc.args} did not start: {log.read_text(errors='replace')}") from None
            time.sleep(0.05)


def readme_block(language: str) -> str:
    """The README's ``language`` code block (a balancer's configuration), unindented."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    block = re.search(rf"```{language}\n(.*?)```", readme, re.S)
    assert block, f"the README's Scale out section gives a {language} configuration"
    return textwrap.dedent(block.group(1))


@asynccontextmanager
async def client_of(
    base: str, mode: str = "legacy", verify: ssl.SSLContext | bool = True, **kwargs: Any
) -> AsyncIterator[Client]:
    """An MCP client of the server at ``base`` (2025-11-25 era, which hears notifications over its GET
    stream), with room for 300 requests at once."""
    limits = httpx2.Limits(max_connections=400, max_keepalive_connections=400)
    async with httpx2.AsyncClient(headers=AUTH, timeout=300, limits=limits, verify=verify) as http:
        async with Client(streamable_http_client(base + "/mcp", http_client=http), mode=mode, **kwargs) as c:
            yield c


class Replica:
    """One ``mcp-letta serve --transport http`` process; its log goes to a file (a pipe could fill up)."""

    verify = True  # (plain HTTP: nothing to verify)

    def __init__(self, url: str, llm: ScriptedLLM, log: Path, port: int = 0, **settings: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MCP_LETTA_", "OPENAI_"))}
        env |= {
            "MCP_LETTA_DB": url, "MCP_LETTA_TOKEN": TOKEN, "MCP_LETTA_LLM_BASE_URL": llm.base_url,
            "MCP_LETTA_MODEL": "scripted-model", "MCP_LETTA_LLM_MAX_RETRIES": "0", "MCP_LETTA_PG_POOL_SIZE": "8",
        }  # fmt: skip
        env |= {f"MCP_LETTA_{name.upper()}": value for name, value in settings.items()}
        self.log = log
        self._log_file = log.open("wb")
        command = [str(SCRIPT), "serve", "--transport", "http", "--host", "127.0.0.1", "--port", str(port)]
        self.proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=self._log_file)
        self.port = 0

    async def ready(self) -> Replica:
        """Wait until it listens (its port is in its log)."""
        with anyio.fail_after(60):
            while not self.port:
                match = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", self.log.read_text(errors="replace"))
                if match:
                    self.port = int(match.group(1))
                elif self.proc.poll() is not None:
                    raise RuntimeError(f"replica exited: {self.log.read_text(errors='replace')[-2000:]}")
                else:
                    await anyio.sleep(0.05)
        return self

    @property
    def base(self) -> str:
        """Its URL."""
        return f"http://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> AbstractAsyncContextManager[Client]:
        """An MCP client of this replica (see ``client_of``)."""
        return client_of(self.base, **kwargs)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


@asynccontextmanager
async def three(
    db_path: str, llm: ScriptedLLM, folder: Path, *, named: bool = False, **settings: str
) -> AsyncIterator[list[Replica]]:
    """Three replicas on one database, with these settings (``MCP_LETTA_<NAME>``); ``named``: each on a port
    chosen here, given as its ``MCP_LETTA_REPLICA_URL``."""
    ports = [free_port() if named else 0 for _ in range(3)]
    started = [
        Replica(db_path, llm, folder / f"replica-{i}.log", port,
                **settings, **({"replica_url": f"http://127.0.0.1:{port}"} if named else {}))
        for i, port in enumerate(ports)
    ]  # fmt: skip
    try:
        for replica in started:
            await replica.ready()
        yield started
    finally:
        for replica in started:
            replica.stop()


@pytest.fixture
async def replicas(db_path: str, scripted_llm: ScriptedLLM, tmp_path: Path) -> AsyncIterator[list[Replica]]:
    """Three replicas on one fresh database."""
    async with three(db_path, scripted_llm, tmp_path) as started:
        yield started


@pytest.fixture
async def narrow_replicas(db_path: str, scripted_llm: ScriptedLLM, tmp_path: Path) -> AsyncIterator[list[Replica]]:
    """Three replicas that each run at most two agents at once, and broadcast to up to 50 at once."""
    async with three(db_path, scripted_llm, tmp_path, max_concurrency="2", fanout_concurrency="50") as started:
        yield started


def run_rows(db_path: str, where: str, *params: Any) -> list[dict[str, Any]]:
    """Rows of ``runs`` (as dicts) matching ``where``, oldest first."""
    with psycopg.connect(db_path, row_factory=psycopg.rows.dict_row) as pg:
        return pg.execute(f"SELECT * FROM runs WHERE {where} ORDER BY seq", params).fetchall()


TOOLS_LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


async def initialize(replica: Replica | Balancer) -> dict[str, str]:
    """A session begun on ``replica`` (or through the balancer) by hand: the headers its next requests carry."""
    headers = AUTH | {"Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": "2025-11-25"}
    hello = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}
    async with httpx2.AsyncClient(timeout=30, verify=replica.verify) as http:
        began = await http.post(replica.base + "/mcp", headers=headers,
                                json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": hello})  # fmt: skip
        assert began.status_code == 200, began.text
        return headers | {"Mcp-Session-Id": began.headers["mcp-session-id"]}


async def answered_through(http: httpx2.AsyncClient, balancer: Balancer, session: dict[str, str]) -> None:
    """Four requests of ``session`` through ``balancer``, each answered (none lost to another replica)."""
    for _ in range(4):
        listed = await http.post(balancer.base + "/mcp", headers=session, json=TOOLS_LIST)
        assert listed.status_code == 200, listed.text


async def holder(http: httpx2.AsyncClient, replicas: list[Replica], session: dict[str, str]) -> int:
    """Which replica holds ``session``: asked of each directly, exactly one answers, the others 404."""
    answers = [await http.post(f"http://127.0.0.1:{r.port}/mcp", headers=session, json=TOOLS_LIST) for r in replicas]
    assert sorted(a.status_code for a in answers) == [200, 404, 404]
    return next(i for i, a in enumerate(answers) if a.status_code == 200)


def hears_list_changed() -> tuple[anyio.Event, Callable[[Any], Awaitable[None]]]:
    """An event, and a client message handler that sets it on ``tools/list_changed``."""
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    return changed, on_message


async def rows_soon(db_path: str, where: str) -> list[dict[str, Any]]:
    """The runs matching ``where`` once there are any."""
    with anyio.fail_after(20):
        while True:
            rows = run_rows(db_path, where)
            if rows:
                return rows
            await anyio.sleep(0.05)


async def logged(replica: Replica, words: str) -> str:
    """The line of ``replica``'s log that holds ``words``, once it is there."""
    with anyio.fail_after(30):
        while True:
            line = next((x for x in replica.log.read_text(errors="replace").splitlines() if words in x), None)
            if line is not None:
                return line
            await anyio.sleep(0.1)


async def ok(c: Any, tool: str, **args: Any) -> dict[str, Any]:
    result = await c.call_tool(tool, args)
    assert not result.is_error, result.content
    return result.structured_content


async def test_an_agent_created_through_one_replica_is_a_tool_on_another_with_list_changed(
    replicas: list[Replica],
) -> None:
    a, b, _ = replicas
    changed, on_message = hears_list_changed()
    async with b.client(message_handler=on_message) as cb, a.client() as ca:
        assert "ask_scout" not in {t.name for t in (await cb.list_tools()).tools}
        await ok(ca, "create_agent", name="scout", description="scouts ahead")
        with anyio.fail_after(20):
            await changed.wait()
        assert "ask_scout" in {t.name for t in (await cb.list_tools()).tools}


async def test_a_block_written_through_one_replica_notifies_subscribers_on_another(replicas: list[Replica]) -> None:
    a, b, _ = replicas
    updated = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification) and message.params.uri == "letta://blocks/board":
            updated.set()

    async with a.client() as ca, b.client(message_handler=on_message) as cb:
        await ok(ca, "create_block", label="board", value="start")
        await cb.subscribe_resource("letta://blocks/board")
        await ok(ca, "append_to_block", block="board", text="written through replica A")
        with anyio.fail_after(20):
            await updated.wait()
        text = (await cb.read_resource("letta://blocks/board")).contents[0].text
        assert "written through replica A" in text


async def test_the_console_works_through_a_balancer_that_spreads_its_requests(replicas: list[Replica]) -> None:
    """A console session begun on one replica holds on the others (the balancer sticks MCP sessions by
    header, but spreads the page's requests), and a block written through one reaches the page's live
    feed on another."""
    a, b, c = replicas
    async with httpx2.AsyncClient(timeout=30) as http:
        login = await http.post(f"http://127.0.0.1:{a.port}/login", data={"token": TOKEN})
        assert login.status_code == 303
        jar = {"mcp_letta_console": login.cookies["mcp_letta_console"]}
        csrf = (await http.get(f"http://127.0.0.1:{b.port}/api/session", cookies=jar)).json()["csrf"]
        assert csrf
        async with c.client() as cc:
            block = await ok(cc, "create_block", label="wall", value="start")
        events = f"http://127.0.0.1:{b.port}/events"
        async with http.stream("GET", events, cookies=jar) as stream:
            assert stream.status_code == 200
            wrote = await http.post(f"http://127.0.0.1:{c.port}/api/blocks/{block['id']}", cookies=jar,
                                    json={"value": "from the console", "expected_version": block["version"]},
                                    headers={"X-CSRF-Token": csrf})  # fmt: skip
            assert wrote.status_code == 200, wrote.text
            with anyio.fail_after(20):
                async for line in stream.aiter_lines():
                    if line.startswith("data:") and block["id"] in line:
                        break


class Certificate:
    """A self-signed certificate for agents.example.com and 127.0.0.1, made by ``openssl`` (``.ci/run``
    installs it where missing): what the balancer ends TLS with, and what its clients trust."""

    def __init__(self, folder: Path) -> None:
        self.crt, self.key, self.pem = folder / "agents.crt", folder / "agents.key", folder / "agents.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-days", "1", "-subj", "/CN=agents.example.com", "-keyout", str(self.key), "-out", str(self.crt),
             "-addext", "subjectAltName=DNS:agents.example.com,IP:127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
        self.pem.write_text(self.crt.read_text() + self.key.read_text())  # HAProxy's: both in one file
        self.verify = ssl.create_default_context(cafile=str(self.crt))


class Balancer:
    """A real load balancer process in front of the replicas, on a free loopback port, ending TLS as the
    README's configurations do (``https://``, with a certificate of the test's own)."""

    port: int
    proc: subprocess.Popen[bytes]

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.certificate = Certificate(folder)
        self.verify = self.certificate.verify
        self.base = f"https://127.0.0.1:{self.port}"

    def _start(self, command: list[str], log: Path) -> None:
        with log.open("wb") as errors:  # a file, not a pipe that could fill up and stop it
            self.proc = subprocess.Popen(command, stderr=errors)
        wait_for_port(self.port, self.proc, log)

    def client(self, **kwargs: Any) -> AbstractAsyncContextManager[Client]:
        """An MCP client of the balancer, as a host would be (see ``client_of``)."""
        return client_of(self.base, verify=self.verify, **kwargs)

    def stop(self) -> None:
        """Stop it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


class HAProxy(Balancer):
    """A real HAProxy (Debian's ``haproxy``; ``.ci/run`` installs it) in front of ``replicas``, configured by
    the README's own ``haproxy`` block, listening on loopback instead of 443. Its admin socket tells how its
    health checks of the replicas went."""

    def __init__(self, replicas: list[Replica], folder: Path) -> None:
        super().__init__(folder)
        self.socket = folder / "haproxy.sock"
        lines = [f"global\n    stats socket {self.socket} mode 600 level admin\n"]
        servers = iter(replicas)
        for line in readme_block("haproxy").splitlines():
            if line.strip().startswith("bind "):
                assert " ssl crt " in line, "TLS ends at the balancer"
                line = f"    bind 127.0.0.1:{self.port} ssl crt {self.certificate.pem}"
            elif line.strip().startswith("server "):
                name, replica = line.split()[1], next(servers)
                line = f"    server {name} 127.0.0.1:{replica.port} check inter 500ms"
            lines.append(line)
        assert next(servers, None) is None, "one server line per replica"
        self.config = folder / "haproxy.cfg"
        self.config.write_text("\n".join(lines) + "\n")
        self._start(["haproxy", "-db", "-f", str(self.config)], folder / "haproxy.log")

    def checks(self) -> dict[str, str]:
        """Each server's health-check status (``L7OK`` when ``/health`` answered 200)."""
        with socket.socket(socket.AF_UNIX) as admin:
            admin.connect(str(self.socket))
            admin.sendall(b"show stat\n")
            data = b""
            while chunk := admin.recv(65536):
                data += chunk
        header, *rows = data.decode().strip().splitlines()
        names = header.lstrip("# ").split(",")
        stats = [dict(zip(names, row.split(","), strict=False)) for row in rows]
        return {r["svname"]: r["check_status"] for r in stats if r["svname"] not in ("FRONTEND", "BACKEND")}


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="install Debian's haproxy (.ci/run does)")
async def test_behind_the_readmes_haproxy_sessions_stick_and_new_ones_spread(
    db_path: str, scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    async with three(db_path, scripted_llm, tmp_path, allowed_hosts="agents.example.com") as started:
        balancer = HAProxy(started, tmp_path)
        try:
            for _ in range(150):  # the checks send the Host the README names, which the replicas allow
                if set(balancer.checks().values()) == {"L7OK"}:
                    break
                await anyio.sleep(0.2)
            else:
                raise AssertionError(f"HAProxy's checks of the replicas: {balancer.checks()}")
            sessions = [await initialize(balancer) for _ in range(6)]  # one after another: round robin
            async with httpx2.AsyncClient(timeout=30, verify=balancer.verify) as http:
                for session in sessions:  # every request of a session reaches the replica that began it
                    await answered_through(http, balancer, session)
                holders = {await holder(http, started, session) for session in sessions}
                assert holders == {0, 1, 2}  # new sessions spread over the replicas

                changed, on_message = hears_list_changed()
                async with (
                    balancer.client(message_handler=on_message) as watcher,
                    balancer.client() as other,
                ):  # MCP clients of the balancer, as hosts would be
                    await ok(other, "create_agent", name="scout")
                    with anyio.fail_after(20):  # over the watcher's stream, through the balancer
                        await changed.wait()
                    assert "ask_scout" in {t.name for t in (await watcher.list_tools()).tools}

                login = await http.post(balancer.base + "/login", data={"token": TOKEN})
                assert "Secure" in login.headers["set-cookie"]  # the balancer said TLS ended there
                jar = {"mcp_letta_console": login.cookies["mcp_letta_console"]}
                for _ in range(6):  # the console's requests go round robin
                    agents = await http.get(balancer.base + "/api/agents", cookies=jar)
                    assert agents.status_code == 200 and [a["name"] for a in agents.json()] == ["scout"]
        finally:
            balancer.stop()


class Nginx(Balancer):
    """A real nginx (Debian's ``nginx-light``; ``.ci/run`` installs it) in front of ``replicas``, configured by
    the README's own ``nginx`` block, listening on loopback instead of 443."""

    def __init__(self, replicas: list[Replica], folder: Path) -> None:
        super().__init__(folder)
        servers = iter(replicas)
        lines = []
        for line in readme_block("nginx").splitlines():
            if line.strip().startswith("listen "):
                assert line.strip().endswith(" ssl;"), "TLS ends at the balancer"
                line = f"    listen 127.0.0.1:{self.port} ssl;"
            elif line.strip().startswith("ssl_certificate "):
                line = f"    ssl_certificate {self.certificate.crt};"
            elif line.strip().startswith("ssl_certificate_key "):
                line = f"    ssl_certificate_key {self.certificate.key};"
            elif re.match(r"\s*server\s+[\d.]+:\d+;", line):  # an upstream, not the server block
                line = f"    server 127.0.0.1:{next(servers).port};"
            lines.append(line)
        assert next(servers, None) is None, "one server line per replica"
        temp = " ".join(
            f"{kind}_temp_path {folder}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        config = folder / "nginx.conf"
        config.write_text(
            f"daemon off; worker_processes 1; error_log stderr; pid {folder}/nginx.pid;"
            + (" user root;" if os.geteuid() == 0 else "")
            + f"\nevents {{}}\nhttp {{\naccess_log off; {temp}\n" + "\n".join(lines) + "\n}\n"
        )  # fmt: skip
        self._start(["nginx", "-c", str(config), "-p", str(folder), "-e", "stderr"], folder / "nginx.log")


@pytest.mark.skipif(shutil.which("nginx") is None, reason="install Debian's nginx-light (.ci/run does)")
async def test_behind_the_readmes_nginx_the_replicas_pass_requests_on_to_the_session_they_belong_to(
    db_path: str, scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    """nginx spreads every request round robin; replicas started with MCP_LETTA_REPLICA_URL pass a session's
    requests on to the replica that began it, streams included."""

    async def host_model(context: Any, params: Any) -> CreateMessageResult:  # the host lends its model
        return CreateMessageResult(role="assistant", content=TextContent(type="text", text="seen"), model="host")

    async with three(db_path, scripted_llm, tmp_path, named=True, LLM="sampling") as started:
        balancer = Nginx(started, tmp_path)
        try:
            sessions = [await initialize(balancer) for _ in range(6)]
            async with httpx2.AsyncClient(timeout=30, verify=balancer.verify) as http:
                for session in sessions:  # most of these reach a replica that did not begin the session
                    await answered_through(http, balancer, session)
                login = await http.post(balancer.base + "/login", data={"token": TOKEN})  # the console's cookie
                assert login.status_code == 303 and "Secure" in login.headers["set-cookie"]  # TLS ended at nginx
                # A request passed on once is not passed on again: only the replica that holds it answers.
                holders = [await holder(http, started, s | {"X-MCP-Letta-Forwarded": "1"}) for s in sessions]
                assert set(holders) == {0, 1, 2}  # new sessions spread over the replicas

                changed, on_message = hears_list_changed()
                async with (
                    balancer.client(message_handler=on_message, sampling_callback=host_model) as watcher,
                    balancer.client() as other,
                ):  # MCP clients of the balancer, as hosts would be
                    for _ in range(3):  # whichever replica each request reaches
                        assert "ask_scout" not in {t.name for t in (await watcher.list_tools()).tools}
                    await ok(other, "create_agent", name="scout")
                    with anyio.fail_after(20):  # over the watcher's stream, through the balancer
                        await changed.wait()
                    assert "ask_scout" in {t.name for t in (await watcher.list_tools()).tools}
                    # The agent thinks with the watcher's model: the request and its answer pass on too.
                    for _ in range(3):
                        asked = await ok(watcher, "ask_scout", message="what do you see?")
                        assert (asked["status"], asked["reply"]) == ("completed", "seen"), asked
                async with balancer.client(mode="auto", sampling_callback=host_model) as modern:
                    for _ in range(3):  # 2026-07-28: the rounds of one call may reach any replica
                        asked = await ok(modern, "ask_scout", message="what do you see now?")
                        assert (asked["status"], asked["reply"]) == ("completed", "seen"), asked

                # An id naming a replica without the token's key is not followed: no call to that address.
                bait = socket.socket()
                bait.bind(("127.0.0.1", 0))
                bait.listen()
                bait.settimeout(0.5)
                named = base64.urlsafe_b64encode(f"http://127.0.0.1:{bait.getsockname()[1]}".encode()).decode()
                forged = sessions[0] | {"Mcp-Session-Id": f"{named.rstrip('=')}.AAAAAAAAAAAAAAAA.0123abcd"}
                refused = await http.post(f"http://127.0.0.1:{started[0].port}/mcp", headers=forged, json=TOOLS_LIST)
                assert refused.status_code == 404
                with pytest.raises(TimeoutError):
                    bait.accept()
                bait.close()

                victim = started[2]
                victim.proc.kill()  # its sessions end with it; the balancer sends their requests elsewhere
                victim.proc.wait()
                orphan = sessions[holders.index(2)]
                gone = await http.post(balancer.base + "/mcp", headers=orphan, json=TOOLS_LIST)
                assert gone.status_code == 404, gone.text
                assert f"the replica that began it (http://127.0.0.1:{victim.port}) does not answer" in gone.text
                # A 2026-era call's next round, sealed by the replica that is gone: the answer says to call again.
                sealed = ReplicaNames(f"http://127.0.0.1:{victim.port}", TOKEN).prefix + "v1.sealed"
                params = {"name": "ask_scout", "arguments": {"message": "hi"}, "requestState": sealed}
                round_two = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params}
                late = await http.post(balancer.base + "/mcp", json=round_two, headers=AUTH | {
                    "Accept": "application/json, text/event-stream", "Mcp-Protocol-Version": "2026-07-28"})  # fmt: skip
                assert late.json()["id"] == 7 and late.json()["error"]["code"] == -32602
                assert "does not answer; make the call again" in late.json()["error"]["message"]
                await answered_through(http, balancer, await initialize(balancer))  # as MCP clients do on a 404
        finally:
            balancer.stop()


async def test_a_replica_says_at_start_whether_its_replica_url_reaches_it(
    db_path: str, scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    """A wrong MCP_LETTA_REPLICA_URL would show only as 404s when requests are passed on: each replica checks
    at start that its address reaches itself, and says what to fix if not."""
    own, nobody = free_port(), free_port()
    right = Replica(db_path, scripted_llm, tmp_path / "right.log", own, replica_url=f"http://127.0.0.1:{own}")
    copied = Replica(db_path, scripted_llm, tmp_path / "copied.log", replica_url=f"http://127.0.0.1:{own}")
    dead = Replica(db_path, scripted_llm, tmp_path / "dead.log", replica_url=f"http://127.0.0.1:{nobody}")
    expected = {
        right: f"MCP_LETTA_REPLICA_URL=http://127.0.0.1:{own} reaches this replica",
        copied: f"MCP_LETTA_REPLICA_URL=http://127.0.0.1:{own} reaches another mcp-letta replica, not this one",
        dead: f"MCP_LETTA_REPLICA_URL=http://127.0.0.1:{nobody} does not reach this replica",
    }
    try:
        for replica in expected:
            await replica.ready()
        lines = {replica: await logged(replica, words) for replica, words in expected.items()}
        assert " INFO " in lines[right]
        for wrong in (copied, dead):  # a warning that says what to fix
            assert " WARNING " in lines[wrong] and "give" in lines[wrong] and "404 Session not found" in lines[wrong]
    finally:
        for replica in expected:
            replica.stop()


async def test_a_message_that_thinks_with_its_hosts_model_waits_for_a_slot_where_that_host_is(
    db_path: str, scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    """Agents think with the host's model (MCP sampling): a message sent while its replica's slots are busy
    waits there, and is not started by another replica, whose connected hosts are other people's."""
    release = anyio.Event()

    def host(name: str) -> Any:
        async def model(context: Any, params: Any) -> CreateMessageResult:
            if "the slow one" in (params.system_prompt or ""):
                await release.wait()
            return CreateMessageResult(role="assistant", content=TextContent(type="text", text=f"from {name}"),
                                       model=name)  # fmt: skip

        return model

    settings = {"LLM": "sampling", "max_concurrency": "1", "sampling_wait_s": "5"}
    async with three(db_path, scripted_llm, tmp_path, **settings) as (a, b, _):
        async with a.client(sampling_callback=host("x")) as x, b.client(sampling_callback=host("y")) as y:
            await ok(x, "create_agent", name="slow", persona="the slow one")
            await ok(x, "create_agent", name="quick", persona="quick")
            await ok(y, "list_agents")  # y is connected to B, lending its model there
            of_quick = "agent_id = (SELECT id FROM agents WHERE name = 'quick')"
            async with anyio.create_task_group() as tg:
                try:
                    tg.start_soon(partial(ok, x, "ask_slow", message="take your time"))
                    await rows_soon(db_path, "status = 'running'")
                    tg.start_soon(partial(ok, x, "ask_quick", message="and you?"))  # A's one slot is taken
                    await rows_soon(db_path, of_quick)
                    await anyio.sleep(1.0)  # room for another replica to take it, as it would with an endpoint
                    quick = run_rows(db_path, of_quick)
                    assert [(r["status"], r["reply"]) for r in quick] == [("queued", None)], quick
                finally:
                    release.set()
            quick = run_rows(db_path, of_quick)
            assert [(r["status"], r["reply"]) for r in quick] == [("completed", "from x")]
            slow = run_rows(db_path, "agent_id = (SELECT id FROM agents WHERE name = 'slow')")
            assert quick[0]["owner"] == slow[0]["owner"]  # where the host that sent both is


async def test_an_async_reply_sent_through_one_replica_is_read_through_another(
    replicas: list[Replica], scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.default = lambda request: Response(content="answer from the helper")
    a, b, _ = replicas
    async with a.client() as ca, b.client() as cb:
        await ok(ca, "create_agent", name="helper")
        sent = await ok(ca, "send_message_to_agent_async", agent="helper", message="please help")
        done = await ok(cb, "get_run", run_id=sent["run_id"], wait_s=30)
        assert done["status"] == "completed"
        replies = await ok(cb, "check_replies")
        assert [(r["run_id"], r["reply"]) for r in replies["runs"]] == [(sent["run_id"], "answer from the helper")]
        assert (await ok(ca, "check_replies"))["count"] == 0  # read once, whichever replica reads it


async def test_a_wait_cycle_spread_over_two_replicas_is_refused(
    replicas: list[Replica], scripted_llm: ScriptedLLM
) -> None:
    agents = Agents(scripted_llm)

    def relay(to: str) -> Any:
        def handle(request: dict[str, Any]) -> Response:
            result = tool_result(request)
            if result is not None:
                return Response(content=f"{result['status']}: {result['message']}")
            # both agents are running (one per replica) before either asks the other
            return Response(calls=[(WAIT, {"message": "over to you", "other_agent_id": to})], delay_s=1.0)

        return handle

    agents.on("alice", relay("bob"))
    agents.on("bob", relay("alice"))
    a, b, _ = replicas
    async with a.client() as ca, b.client() as cb:
        for name in ("alice", "bob"):
            await ok(ca, "create_agent", name=name, system=role(name), include_multi_agent_tools=True)
        first = await ok(ca, "send_message_to_agent_async", agent="alice", message="start")
        second = await ok(cb, "send_message_to_agent_async", agent="bob", message="start")
        ends = [await ok(c, "get_run", run_id=s["run_id"], wait_s=60) for c, s in ((ca, first), (cb, second))]
    assert [e["status"] for e in ends] == ["completed", "completed"]
    results = [tool_result(r.body) for r in scripted_llm.requests]
    refused = [r["message"] for r in results if r is not None and "deadlock" in r["message"]]
    assert refused and all("waiting would deadlock" in m for m in refused), results


async def test_three_replicas_times_300_concurrent_appends_lose_nothing(replicas: list[Replica], db_path: str) -> None:
    async with replicas[0].client() as first:
        block = await ok(first, "create_block", label="tally", value="", limit=100_000)

    async def append_through(replica: Replica, index: int) -> None:
        async def append(c: Any, i: int) -> None:
            await ok(c, "append_to_block", block="tally", text=f"r{index}-{i}")

        async with replica.client() as c, anyio.create_task_group() as tg:
            for i in range(300):
                tg.start_soon(append, c, i)

    async with anyio.create_task_group() as tg:
        for index, replica in enumerate(replicas):
            tg.start_soon(append_through, replica, index)

    with psycopg.connect(db_path) as pg:
        versions = [r[0] for r in pg.execute(
            "SELECT version FROM block_history WHERE block_id = %s ORDER BY version", (block["id"],)
        )]  # fmt: skip
        [(value, version)] = pg.execute("SELECT value, version FROM blocks WHERE id = %s", (block["id"],)).fetchall()
    assert versions == list(range(1, 902))
    assert version == 901
    assert sorted(value.split("\n")) == sorted(f"r{r}-{i}" for r in range(3) for i in range(300))


async def test_after_kill_9_of_a_replica_every_run_it_held_is_resumed_and_reported_truthfully(
    replicas: list[Replica], scripted_llm: ScriptedLLM
) -> None:
    slow_asked: list[str] = []

    def answer(request: dict[str, Any]) -> Response:
        text = json.dumps(request["messages"][-1])  # the message this run is about, not the history
        if "slow job" not in text:
            return Response(content="quick done")
        slow_asked.append(text)  # the first three are held until the replica dies; resumed runs ask again
        return Response(content="slow done", delay_s=120 if len(slow_asked) <= 3 else 0)

    scripted_llm.default = answer
    a, _, victim = replicas
    async with victim.client() as cv:
        for name in ("w1", "w2", "w3"):
            await ok(cv, "create_agent", name=name)
        running = [(await ok(cv, "send_message_to_agent_async", agent=n, message="slow job"))["run_id"]
                   for n in ("w1", "w2", "w3")]  # fmt: skip
        queued = (await ok(cv, "send_message_to_agent_async", agent="w1", message="quick one"))["run_id"]
        await scripted_llm.wait_for_requests_async(3)  # all three runs are in their LLM call
    session = await initialize(victim)
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()  # reaped: its pid is gone, as a dead replica's is
    async with httpx2.AsyncClient(timeout=30) as http:  # the balancer sends the session's next request elsewhere
        gone = await http.post(f"http://127.0.0.1:{a.port}/mcp", headers=session, json=TOOLS_LIST)
    assert gone.status_code == 404 and gone.json()["error"]["message"] == "Session not found"  # MCP: start anew
    async with a.client() as ca:
        ends = {run_id: await ok(ca, "get_run", run_id=run_id, wait_s=60) for run_id in [*running, queued]}
        listed = {r["run_id"]: r for r in (await ok(ca, "list_runs", limit=50))["runs"]}
    for run_id in running:  # resumed by a survivor from their last committed step: the LLM is asked again
        assert (ends[run_id]["status"], ends[run_id]["reply"]) == ("completed", "slow done"), ends[run_id]
        assert listed[run_id]["status"] == "completed"
    assert len(slow_asked) == 6  # each running run asked once by the victim, once after its resumption
    assert ends[queued]["status"] == "completed" and ends[queued]["reply"] == "quick done"  # adopted by a survivor
    assert listed[queued]["status"] == "completed"
    assert not [r for r in listed.values() if r["status"] in ("queued", "running")]


async def test_a_replica_stopped_for_an_upgrade_answers_the_calls_waiting_on_its_runs(
    db_path: str, scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    """SIGTERM (a rolling upgrade): the replica takes no new connection, gives the runs in flight its grace
    period, and answers every call waiting on one before its connections end, in both protocol eras: the
    reply of a run that finished, or 'pending' and the run id of one handed back. No run is cancelled; the
    one handed back is finished by another replica."""

    def answer(request: dict[str, Any]) -> Response:
        text = json.dumps(request["messages"][-1])
        if "slow job" in text:  # held past the grace period, until another replica asks again
            held = sum("slow job" in json.dumps(r.body["messages"][-1]) for r in scripted_llm.requests) <= 1
            return Response(content="slow done", delay_s=120 if held else 0)
        return Response(content="quick done", delay_s=1.0)  # within the grace period

    scripted_llm.default = answer
    async with three(db_path, scripted_llm, tmp_path, shutdown_grace_s="4") as (victim, other, _):
        async with victim.client() as c:
            for name in ("slow", "quick"):
                await ok(c, "create_agent", name=name)
        outcomes: dict[str, Any] = {}

        async def ask(mode: str, agent: str, message: str) -> None:
            async with victim.client(mode=mode) as c:
                await c.list_tools()  # (else the client lists them after the call, to check its result's shape)
                result = await c.call_tool("send_message", {"agent": agent, "message": message, "timeout_s": 300})
                outcomes[agent] = (result.is_error, result.structured_content)

        def asked(words: str) -> bool:
            return any(words in json.dumps(r.body["messages"][-1]) for r in scripted_llm.requests)

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, "legacy", "slow", "slow job")
            tg.start_soon(ask, "auto", "quick", "quick job")
            with anyio.fail_after(30):
                while not (asked("slow job") and asked("quick job")):  # noqa: ASYNC110 (both runs ask the LLM)
                    await anyio.sleep(0.05)
            victim.proc.send_signal(signal.SIGTERM)
        await anyio.to_thread.run_sync(victim.proc.wait, 30)
        assert outcomes["quick"] == (False, outcomes["quick"][1]) and outcomes["quick"][1]["reply"] == "quick done"
        slow_error, slow = outcomes["slow"]
        assert not slow_error and slow["status"] == "pending", slow  # answered before its stream ended
        async with other.client() as c:
            done = await ok(c, "get_run", run_id=slow["run_id"], wait_s=60)
        assert (done["status"], done["reply"]) == ("completed", "slow done")
        [row] = run_rows(db_path, "id = %s", slow["run_id"])
        assert row["resumes"] == 1  # handed back by the replica that stopped, resumed by another
        assert "stopping: no new run starts here" in victim.log.read_text()


async def test_one_agent_runs_one_message_at_a_time_across_three_replicas(
    replicas: list[Replica], scripted_llm: ScriptedLLM, db_path: str
) -> None:
    scripted_llm.default = lambda request: Response(content="noted", delay_s=0.1)
    async with replicas[0].client() as first:
        await ok(first, "create_agent", name="solo")
    sent: list[str] = []

    async def send_through(replica: Replica, index: int) -> None:
        async with replica.client() as c:
            for i in range(4):
                sent.append(
                    (await ok(c, "send_message_to_agent_async", agent="solo", message=f"r{index}-{i}"))["run_id"]
                )

    async with anyio.create_task_group() as tg:
        for index, replica in enumerate(replicas):
            tg.start_soon(send_through, replica, index)
    async with replicas[0].client() as first:  # (a hub opened here would take queued runs too: it has no LLM)
        ends = [await ok(first, "get_run", run_id=run_id, wait_s=60) for run_id in sent]
    async with AgentHub(Settings(db_path=db_path)) as hub:
        runs = [await hub.get_run(run_id) for run_id in sent]
    assert [e["status"] for e in ends] == ["completed"] * 12
    assert most_at_once(runs) == 1  # never two runs of the agent at once, whichever replica ran them


async def test_a_broadcast_through_one_replica_is_executed_by_all_three(
    narrow_replicas: list[Replica], scripted_llm: ScriptedLLM, db_path: str
) -> None:
    scripted_llm.default = lambda request: Response(content="on it", delay_s=0.4)
    a = narrow_replicas[0]
    async with a.client() as ca:
        for i in range(12):
            await ok(ca, "create_agent", name=f"crew{i:02d}", tags=["crew"])
        reply = await ok(ca, "send_message_to_agents_matching_tags", message="report in", match_all=["crew"],
                         timeout_s=120)  # fmt: skip
    # Replica A runs two agents at once; the other ten runs it stored were taken by B and C, and A's
    # broadcast heard of each end (it waits on all twelve) wherever the run was executed.
    assert sorted((r["agent"], r["status"], r["reply"]) for r in reply["results"]) == [
        (f"crew{i:02d}", "completed", "on it") for i in range(12)
    ]
    owners = [r["owner"] for r in run_rows(db_path, "input = %s", "report in")]
    assert len(owners) == 12 and len(set(owners)) == 3, owners


def hold_or_note(request: dict[str, Any]) -> Response:
    """The scripted LLM's answer: a minute's wait for "hold on", else "noted" after 0.2 s."""
    if "hold on" in json.dumps(request["messages"][-1]):
        return Response(content="held", delay_s=60)
    return Response(content="noted", delay_s=0.2)


async def take_both_slots(c: Any, scripted_llm: ScriptedLLM, prefix: str = "hog") -> list[str]:
    """Keep both of a narrow replica's slots busy (agents ``<prefix>1`` and ``<prefix>2`` held by
    ``hold_or_note``): the ids of the two runs, to cancel at the end."""
    hogs = []
    before = len(scripted_llm.requests)
    for name in (f"{prefix}1", f"{prefix}2"):
        await ok(c, "create_agent", name=name)
        hogs.append((await ok(c, "send_message_to_agent_async", agent=name, message="hold on"))["run_id"])
    await scripted_llm.wait_for_requests_async(before + 2)
    return hogs


async def test_an_agents_queue_stored_through_a_busy_replica_runs_elsewhere_in_order_one_at_a_time(
    narrow_replicas: list[Replica], scripted_llm: ScriptedLLM, db_path: str
) -> None:
    scripted_llm.default = hold_or_note
    a, _, c = narrow_replicas
    async with a.client() as ca, c.client() as cc:
        await ok(ca, "create_agent", name="solo")
        hogs = await take_both_slots(ca, scripted_llm)
        sent = [
            (await ok(ca, "send_message_to_agent_async", agent="solo", message=f"m{i}"))["run_id"] for i in range(8)
        ]
        ends = [await ok(cc, "get_run", run_id=run_id, wait_s=60) for run_id in sent]
        rows = {r["id"]: r for r in run_rows(db_path, "agent_name IN ('hog1', 'hog2', 'solo')")}
        for run_id in hogs:
            await ok(cc, "cancel_run", run_id=run_id)
    assert [e["status"] for e in ends] == ["completed"] * 8
    busy = {rows[run_id]["owner"] for run_id in hogs}
    assert len(busy) == 1  # replica A's, busy all along
    assert not busy & {rows[run_id]["owner"] for run_id in sent}  # so B and C executed solo's runs
    started = [rows[run_id]["started_at"] for run_id in sent]
    assert started == sorted(started)  # in the order they were sent
    async with AgentHub(Settings(db_path=db_path)) as hub:
        runs = [await hub.get_run(run_id) for run_id in sent]
    assert most_at_once(runs) == 1  # never two of solo's runs at once, though two replicas took them


async def test_runs_queued_while_every_replica_was_busy_run_where_a_slot_goes_idle(
    narrow_replicas: list[Replica], scripted_llm: ScriptedLLM, db_path: str
) -> None:
    # A busy replica does not line up for another's queued runs; it notes them, and takes them once a slot
    # of its goes idle.
    scripted_llm.default = hold_or_note
    a, b, c = narrow_replicas
    async with a.client() as ca, b.client() as cb, c.client() as cc:
        hogs = {name: await take_both_slots(client, scripted_llm, name) for name, client in
                (("a", ca), ("b", cb), ("c", cc))}  # fmt: skip
        for i in range(4):
            await ok(ca, "create_agent", name=f"w{i}")
        sent = [(await ok(ca, "send_message_to_agent_async", agent=f"w{i}", message="m"))["run_id"] for i in range(4)]
        for run_id in hogs["b"]:
            await ok(cb, "cancel_run", run_id=run_id)
        ends = [await ok(cb, "get_run", run_id=run_id, wait_s=30) for run_id in sent]
        for run_id in hogs["a"] + hogs["c"]:
            await ok(ca, "cancel_run", run_id=run_id)
    assert [e["status"] for e in ends] == ["completed"] * 4
    [b_owner] = {r["owner"] for r in run_rows(db_path, "id = ANY(%s)", hogs["b"])}
    assert {r["owner"] for r in run_rows(db_path, "id = ANY(%s)", sent)} == {b_owner}


async def test_a_replica_started_while_runs_wait_in_a_busy_replicas_queue_takes_them(
    db_path: str, scripted_llm: ScriptedLLM, tmp_path: Path
) -> None:
    # The runs were queued before replica B existed, so no change told B of them: it looks when it starts.
    scripted_llm.default = hold_or_note
    a = await Replica(db_path, scripted_llm, tmp_path / "a.log", max_concurrency="2").ready()
    b = None
    try:
        async with a.client() as ca:
            hogs = await take_both_slots(ca, scripted_llm)
            for i in range(4):
                await ok(ca, "create_agent", name=f"w{i}")
            sent = [
                (await ok(ca, "send_message_to_agent_async", agent=f"w{i}", message="m"))["run_id"] for i in range(4)
            ]
            b = await Replica(db_path, scripted_llm, tmp_path / "b.log", max_concurrency="2").ready()
            ends = [await ok(ca, "get_run", run_id=run_id, wait_s=30) for run_id in sent]
            for run_id in hogs:
                await ok(ca, "cancel_run", run_id=run_id)
    finally:
        a.stop()
        if b is not None:
            b.stop()
    assert [e["status"] for e in ends] == ["completed"] * 4
    [a_owner] = {r["owner"] for r in run_rows(db_path, "id = ANY(%s)", hogs)}
    owners = {r["owner"] for r in run_rows(db_path, "id = ANY(%s)", sent)}
    assert len(owners) == 1 and a_owner not in owners  # all four executed by B


async def test_a_caller_hears_each_step_of_its_run_executed_by_another_replica(
    narrow_replicas: list[Replica], scripted_llm: ScriptedLLM, db_path: str
) -> None:
    # Replica A is busy, so B or C executes the message A stored; A's caller still hears of each step.
    scripted_llm.default = hold_or_note
    scripted_llm.on("solo persona").tool_call(
        "memory_insert", {"label": "human", "new_string": "likes tea"}, delay_s=0.2
    ).tool_call("conversation_search", {"query": "tea"}, delay_s=0.2).reply("noted, you like tea", delay_s=1.0)
    a, _, _ = narrow_replicas
    progress: list[str | None] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(message)

    async with a.client() as ca:
        await ok(ca, "create_agent", name="solo", persona="solo persona")
        hogs = await take_both_slots(ca, scripted_llm)
        result = await ca.call_tool(
            "send_message", {"agent": "solo", "message": "I like tea"}, progress_callback=on_progress
        )
        for run_id in hogs:
            await ok(ca, "cancel_run", run_id=run_id)
    reply = result.structured_content
    assert reply["status"] == "completed" and reply["reply"] == "noted, you like tea"
    [row] = run_rows(db_path, "agent_name = 'solo'")
    assert row["owner"] != run_rows(db_path, "id = %s", hogs[0])[0]["owner"]  # not A: another replica ran it
    assert progress == ["solo: memory_insert", "solo: conversation_search"]


async def test_replies_read_through_two_replicas_at_once_are_each_read_once(
    replicas: list[Replica], scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.default = lambda request: Response(content="done")
    a, b, c = replicas
    async with a.client() as ca, b.client() as cb, c.client() as cc:
        await ok(ca, "create_agent", name="helper")
        sent = [(await ok(ca, "send_message_to_agent_async", agent="helper", message=f"job {i}"))["run_id"]
                for i in range(12)]  # fmt: skip
        for run_id in sent:
            await ok(cc, "get_run", run_id=run_id, wait_s=60)
        read: list[str] = []

        async def check(client: Any) -> None:
            for _ in range(4):
                read.extend(r["run_id"] for r in (await ok(client, "check_replies", limit=2))["runs"])

        async with anyio.create_task_group() as tg:  # two readers at once take different replies
            tg.start_soon(check, ca)
            tg.start_soon(check, cb)
        read.extend(r["run_id"] for r in (await ok(cc, "check_replies", limit=50))["runs"])
    assert sorted(read) == sorted(sent)  # every reply read, none twice

"""The web console in a real headless Chromium (Debian's ``chromium``, driven by Playwright), against a real
HTTP server, real MCP clients and the scripted loopback LLM. Each test saves a screenshot of the page it
checked under ``tests/screenshots/`` (git-ignored) for a reviewer to look at.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from playwright.async_api import Browser, Page, async_playwright, expect

from mcp_letta import AgentHub, Settings
from mcp_letta.server.app import LettaServer, build_server
from mcp_letta.server.http import HttpOptions, http_app, running_app
from mcp_letta.testing import Response, ScriptedLLM

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::UserWarning")]

SCREENSHOTS = Path(__file__).parent / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "console-test-token-5f2a9c"
XSS_NAME = "<img src=x onerror=alert(1)>"
XSS_BLOCK = "<script>window.pwned = 1</script>"
TIMEOUT_MS = 15_000


class Served:
    """A running HTTP server (console at /, MCP at /mcp) and the hub behind it."""

    def __init__(self, server: LettaServer, port: int) -> None:
        self.server = server
        self.hub = server.hub
        self.base = f"http://127.0.0.1:{port}"

    @asynccontextmanager
    async def mcp_client(self, token: str | None = None) -> AsyncIterator[Client]:
        """A real MCP client over streamable HTTP (the handshake era most hosts speak)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
            async with Client(streamable_http_client(f"{self.base}/mcp", http_client=http), mode="legacy") as c:
                yield c


@asynccontextmanager
async def serve(hub: AgentHub, **options: Any) -> AsyncIterator[Served]:
    server = build_server(hub)
    async with running_app(http_app(server, HttpOptions(port=0, **options))) as port:
        yield Served(server, port)


@asynccontextmanager
async def browser() -> AsyncIterator[Browser]:
    assert CHROMIUM, "install Debian's chromium (apt-get install -y chromium); .ci/run does"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield launched
        finally:
            await launched.close()  # before the server stops: an open event stream would hold its shutdown


@asynccontextmanager
async def page_at(base: str, path: str = "/") -> AsyncIterator[Page]:
    """A fresh browser page on ``base + path``, with every dialog recorded on ``page.dialogs``."""
    async with browser() as b:
        page = await b.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        dialogs: list[str] = []

        async def record(dialog: Any) -> None:
            dialogs.append(dialog.message)
            await dialog.dismiss()

        page.on("dialog", record)
        page.dialogs = dialogs  # type: ignore[attr-defined]
        await page.goto(base + path)
        await expect(page.locator("#live")).to_have_text("live")
        yield page


async def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
async def served(llm_hub: AgentHub) -> AsyncIterator[Served]:
    async with serve(llm_hub) as running:
        yield running


async def test_an_agent_created_through_an_mcp_client_appears_without_a_reload(served: Served) -> None:
    async with page_at(served.base) as page:
        await expect(page.get_by_role("status").filter(has_text="agents")).to_have_text("0 agents")
        async with served.mcp_client() as c:
            result = await c.call_tool("create_agent", {"name": "researcher", "description": "finds facts",
                                                        "tags": ["team"]})  # fmt: skip
            assert not result.is_error
        row = page.locator('tr[data-agent="researcher"]')
        await expect(row).to_contain_text("finds facts")
        await expect(row).to_contain_text("ask_researcher")
        await page.get_by_placeholder("tag").fill("nobody-has-this-tag")
        await expect(row).to_have_count(0)
        await page.get_by_placeholder("tag").fill("team")
        await expect(row).to_have_count(1)
        await shot(page, "agents")


async def test_a_chat_message_runs_and_its_tool_call_and_reply_appear(
    served: Served, scripted_llm: ScriptedLLM
) -> None:
    agent = await served.hub.create_agent("helper", persona="helper persona")
    scripted_llm.on("helper persona").tool_call("archival_memory_insert", {"content": "the sky is blue"})
    scripted_llm.on("helper persona", "noted: the sky is blue")
    async with page_at(served.base, f"/#/agent/{agent.id}") as page:
        await expect(page.locator("h1")).to_have_text("helper")
        await page.get_by_label("Message to the agent").fill("remember the sky")
        await page.get_by_role("button", name="Send").click()
        run = page.locator("article.run").last
        await expect(run.locator('[data-tool="archival_memory_insert"]')).to_contain_text('"the sky is blue"')
        await expect(run.locator("[data-reply]")).to_have_text("noted: the sky is blue")
        await expect(run.locator(".status")).to_have_text("completed")
        await shot(page, "agent-chat")
        await page.get_by_role("link", name="Context window").click()
        await expect(page.locator("#context-sections")).to_contain_text("Tool definitions")
        await expect(page.get_by_text("archival_memory_insert").first).to_be_visible()
        await expect(page.locator("main")).to_contain_text("remember the sky")
        await shot(page, "agent-context")
        await page.get_by_role("link", name="Archival").click()
        await expect(page.locator("main")).to_contain_text("the sky is blue")
    passages = await served.hub.archival_list("helper")
    assert [p.text for p in passages] == ["the sky is blue"]


async def test_a_running_chat_message_can_be_cancelled(served: Served, gate: Any) -> None:
    agent = await served.hub.create_agent("slow", persona="slow persona")
    async with page_at(served.base, f"/#/agent/{agent.id}") as page:
        await page.get_by_label("Message to the agent").fill("take your time")
        await page.get_by_role("button", name="Send").click()
        run = page.locator("article.run").last
        await expect(run.locator(".status")).to_have_text("running")
        await page.get_by_role("link", name="Traffic").click()
        await expect(page.locator('#traffic g.msg[data-kind="send"]')).to_contain_text("ask (pending)")
        await shot(page, "traffic-pending")
        await page.go_back()
        await expect(run.locator(".status")).to_have_text("running")
        await run.get_by_role("button", name="Cancel").click()
        await expect(run.locator(".status")).to_have_text("cancelled")  # while the LLM still holds its answer
        await expect(run.get_by_role("button", name="Cancel")).to_have_count(0)
        await page.get_by_role("link", name="Runs", exact=True).click()
        await expect(page.locator("tr[data-run] .status").first).to_have_text("cancelled")
        await shot(page, "runs")
        gate.open()
    runs = await served.hub.list_runs("slow")
    assert [r.status for r in runs] == ["cancelled"]


async def test_a_stale_block_edit_shows_the_conflict_and_changes_nothing(served: Served) -> None:
    block = await served.hub.create_block("plan", "step 1")
    async with page_at(served.base, f"/#/block/{block.id}") as page:
        await expect(page.locator("#block-version")).to_have_text("1")
        await page.locator("#block-editor").fill("step 1\nmy step")
        await served.hub.write_block("plan", "step 1\ntheir step", writer="someone-else")
        await expect(page.get_by_text("Someone wrote version 2")).to_be_visible()
        await page.get_by_role("button", name="Save").click()
        conflict = page.locator("#block-conflict")
        await expect(conflict).to_contain_text("version 2")
        await expect(conflict).to_contain_text("their step")
        await expect(page.locator("#block-editor")).to_have_value("step 1\nmy step")  # the user's text is kept
        await shot(page, "block-conflict")
        now = await served.hub.read_block("plan")
        assert (now.version, now.value) == (2, "step 1\ntheir step")
        await conflict.get_by_role("button", name="Discard my edit").click()
        await expect(page.locator("#block-editor")).to_have_value("step 1\ntheir step")
        await page.locator("#block-editor").fill("step 1\ntheir step\nmy step")
        await page.get_by_role("button", name="Save").click()
        await expect(page.locator("#block-version")).to_have_text("3")
        await expect(page.locator(".diff-add").first).to_contain_text("my step")
        await shot(page, "block-history")
    saved = await served.hub.read_block("plan")
    assert (saved.version, saved.value, saved.updated_by) == (3, "step 1\ntheir step\nmy step", "console")


async def test_database_values_render_as_text(served: Served) -> None:
    # Agent names are restricted to [A-Za-z0-9_-], so the markup goes where free text is allowed.
    agent = await served.hub.create_agent("xss", description=XSS_NAME, tags=[XSS_NAME], persona=XSS_BLOCK)
    block = await served.hub.create_block("markup", XSS_BLOCK, attach_to=["xss"])
    async with page_at(served.base) as page:
        await expect(page.locator('tr[data-agent="xss"]')).to_contain_text(XSS_NAME)
        await shot(page, "xss-agents")
        await page.goto(f"{served.base}/#/block/{block.id}")
        await expect(page.locator("#block-editor")).to_have_value(XSS_BLOCK)
        await page.goto(f"{served.base}/#/blocks")
        await expect(page.locator('tr[data-block="markup"]')).to_contain_text(XSS_BLOCK)
        await shot(page, "xss-blocks")
        await page.goto(f"{served.base}/#/agent/{agent.id}/context")
        await expect(page.locator("#context-sections")).to_be_visible()
        await expect(page.locator("main pre").filter(has_text=XSS_BLOCK).first).to_be_visible()
        await shot(page, "xss-context")
        assert await page.locator("main img").count() == 0
        assert await page.locator("main script").count() == 0
        assert await page.evaluate("window.pwned") is None
        assert page.dialogs == []  # type: ignore[attr-defined]


async def test_an_agent_to_agent_call_draws_its_arrow(served: Served, scripted_llm: ScriptedLLM) -> None:
    await served.hub.create_agent("researcher", persona="researcher persona")
    await served.hub.create_agent("lead", persona="lead persona", agent_tools=["researcher"])
    scripted_llm.on("lead persona").tool_call("ask_researcher", {"message": "find facts"})
    scripted_llm.on("lead persona", "the team says: facts found")
    scripted_llm.on("researcher persona", "facts found")
    async with page_at(served.base, "/#/traffic") as page:
        lead_run = await served.hub.send_message("lead", "go", wait_s=30)
        assert lead_run.status == "completed"
        child = (await served.hub.list_runs("researcher"))[0]
        assert child.parent_run_id == lead_run.id
        arrow = page.locator(f'#traffic g.msg[data-kind="send"][data-run="{child.id}"]')
        await expect(arrow).to_contain_text("send_and_wait")
        await expect(page.locator(f'#traffic g.msg[data-kind="reply"][data-run="{child.id}"]')).to_have_count(1)
        await shot(page, "traffic")
        await arrow.click()
        await expect(page.locator("h1")).to_have_text(f"Run {child.id}")
        await expect(page.locator("main")).to_contain_text("facts found")


async def test_a_broadcast_to_many_is_one_grouped_arrow(served: Served, scripted_llm: ScriptedLLM) -> None:
    for i in range(12):
        await served.hub.create_agent(f"worker-{i:02d}", tags=["crew"], persona="worker persona")
    await served.hub.create_agent("worker-fragile", tags=["crew"], persona="fragile persona")
    scripted_llm.on("worker persona", *["done"] * 12)
    scripted_llm.on("fragile persona", *[Response(status=500)] * 5)
    results = await served.hub.broadcast("status?", match_all=["crew"], wait_s=30)
    assert sorted(r.status for r in results) == ["completed"] * 12 + ["failed"]
    async with page_at(served.base, "/#/traffic") as page:
        fanout = page.locator('#traffic g.msg[data-kind="fanout"]')
        await expect(fanout).to_contain_text("broadcast → 13 agents")
        await expect(page.locator('#traffic g.msg[data-kind="fanin"]')).to_contain_text("13/13 replies, ✕ 1 failed")
        assert await page.locator('#traffic g.msg[data-kind="send"]').count() == 0
        await shot(page, "traffic-broadcast")
        await fanout.focus()
        await page.keyboard.press("Enter")  # keyboard: expand the group
        await expect(page.locator('#traffic g.msg[data-kind="send"]')).to_have_count(13)
        failed = next(r for r in results if r.status == "failed")
        await expect(page.locator(f'#traffic g.msg[data-kind="reply"][data-run="{failed.run_id}"]')).to_contain_text(
            "✕ failed"
        )
        await shot(page, "traffic-broadcast-expanded")


async def test_a_refused_cycle_is_marked_in_the_diagram(served: Served, scripted_llm: ScriptedLLM) -> None:
    await served.hub.create_agent("ping", persona="ping persona", include_multi_agent_tools=True)
    await served.hub.create_agent("pong", persona="pong persona", include_multi_agent_tools=True)
    wait = "send_message_to_agent_and_wait_for_reply"
    scripted_llm.on("ping persona").tool_call(wait, {"message": "hi pong", "other_agent_id": "pong"})
    scripted_llm.on("pong persona").tool_call(wait, {"message": "hi ping", "other_agent_id": "ping"})
    scripted_llm.on("pong persona", "pong could not ask back")
    scripted_llm.on("ping persona", "ping done")
    run = await served.hub.send_message("ping", "start", wait_s=30)
    assert run.status == "completed"
    pong_run = (await served.hub.list_runs("pong"))[0]
    async with page_at(served.base, "/#/traffic") as page:
        refused = page.locator(f'#traffic g.msg[data-kind="refused"][data-run="{pong_run.id}"]')
        await expect(refused).to_contain_text("✕ cycle refused")
        assert "deadlock" in (await refused.get_attribute("aria-label") or "").lower()
        await expect(page.locator(f'#traffic g.msg[data-kind="send"][data-run="{pong_run.id}"]')).to_contain_text(
            "send_and_wait"
        )
        await shot(page, "traffic-cycle")


async def test_a_block_written_by_another_process_shows_on_the_open_page(llm_hub: AgentHub, settings: Settings) -> None:
    block = await llm_hub.create_block("shared", "v1")
    env = {**os.environ, "MCP_LETTA_DB": str(settings.db_path), "MCP_LETTA_WATCH_INTERVAL": "0.05"}
    command = [sys.executable, "-m", "mcp_letta", "console", "--port", "0"]
    async with await anyio.open_process(command, env=env, stderr=subprocess.DEVNULL) as console:
        try:
            assert console.stdout is not None
            printed = b""
            with anyio.fail_after(30):
                while b"\n" not in printed:
                    printed += await console.stdout.receive()
            url = re.search(r"http://\S+/", printed.decode())
            assert url, printed
            async with page_at(url.group(0).rstrip("/"), f"/#/block/{block.id}") as page:
                await expect(page.locator("#block-editor")).to_have_value("v1")
                await llm_hub.write_block("shared", "v2 from another process", writer="other")
                await expect(page.locator("#block-editor")).to_have_value("v2 from another process")
                await expect(page.locator("#block-version")).to_have_text("2")
                await shot(page, "console-alone")
        finally:
            console.terminate()


async def test_requests_without_the_cookie_or_with_a_foreign_host_are_refused(hub: AgentHub) -> None:
    await hub.create_agent("guarded")
    async with serve(hub, token=TOKEN) as running, httpx2.AsyncClient(base_url=running.base) as http:
        assert (await http.get("/api/agents")).status_code == 401
        assert (await http.get("/events")).status_code == 401
        login_page = await http.get("/")
        assert login_page.status_code == 200 and 'name="token"' in login_page.text and "guarded" not in login_page.text
        wrong = await http.post("/login", data={"token": "wrong"})
        assert wrong.status_code == 401 and "not the token" in wrong.text and "set-cookie" not in wrong.headers
        async with browser() as b:
            page = await b.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            await page.goto(running.base + "/")
            await shot(page, "login")
            await page.get_by_label("Token").fill(TOKEN)
            await page.get_by_role("button", name="Log in").click()
            await expect(page.locator('tr[data-agent="guarded"]')).to_be_visible()
            cookie = next(c for c in await page.context.cookies() if c["name"] == "mcp_letta_console")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            assert await page.evaluate("document.cookie") == ""  # a script cannot read the session
            await shot(page, "logged-in")
            jar = {"mcp_letta_console": cookie["value"]}
            csrf = (await http.get("/api/session", cookies=jar)).json()["csrf"]
            agent = (await http.get("/api/agents", cookies=jar)).json()[0]
            send = f"/api/agents/{agent['id']}/messages"
            no_csrf = await http.post(send, json={"message": "hi"}, cookies=jar)
            assert no_csrf.status_code == 403 and "CSRF" in no_csrf.json()["error"]
            no_cookie = await http.post(send, json={"message": "hi"}, headers={"X-CSRF-Token": csrf})
            assert no_cookie.status_code == 401
            as_form = await http.post(send, data={"message": "hi"}, cookies=jar, headers={"X-CSRF-Token": csrf})
            assert as_form.status_code == 400  # a cross-site form cannot post JSON
            foreign = await http.get("/api/agents", cookies=jar, headers={"Host": "evil.example"})
            assert foreign.status_code == 421
            assert (await http.get("/", headers={"Host": "evil.example"})).status_code == 421
            origin = await http.post(send, json={"message": "hi"}, cookies=jar,
                                     headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"})  # fmt: skip
            assert origin.status_code == 403
            assert (await hub.list_runs("guarded")).items == []  # nothing refused was sent
            accepted = await http.post(send, json={"message": "hi"}, cookies=jar, headers={"X-CSRF-Token": csrf})
            assert accepted.status_code == 200 and accepted.json()["status"] in ("queued", "running", "failed")


async def test_without_a_token_opening_the_page_starts_the_session_the_api_needs(hub: AgentHub) -> None:
    await hub.create_agent("local")
    async with serve(hub) as running, httpx2.AsyncClient(base_url=running.base) as http:
        assert (await http.get("/api/agents")).status_code == 401
        page = await http.get("/")
        assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
        cookie = page.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert [a["name"] for a in (await http.get("/api/agents")).json()] == ["local"]
        csrf = (await http.get("/api/session")).json()["csrf"]
        block = await hub.create_block("notes", "a")
        stale = await http.post(f"/api/blocks/{block.id}", json={"value": "b", "expected_version": 0},
                                headers={"X-CSRF-Token": csrf})  # fmt: skip
        assert stale.status_code == 409
        assert stale.json()["current_value"] == "a" and stale.json()["current_version"] == 1
        assert "is at version 1, you wrote against 0" in stale.json()["error"]
        assert (await hub.read_block("notes")).value == "a"


async def test_servers_sharing_the_token_share_console_sessions(hub: AgentHub) -> None:
    """Replicas behind a balancer that spreads the page's requests: a session begun on one server holds on
    another with the same token, and on one started later (a restart); a server with another token, or an
    altered cookie, is refused."""
    block = await hub.create_block("shared", "v1")
    async with serve(hub, token=TOKEN) as a, serve(hub, token=TOKEN) as b, httpx2.AsyncClient() as http:
        login = await http.post(a.base + "/login", data={"token": TOKEN})
        assert login.status_code == 303
        jar = {"mcp_letta_console": login.cookies["mcp_letta_console"]}
        csrf = (await http.get(a.base + "/api/session", cookies=jar)).json()["csrf"]
        assert csrf and (await http.get(b.base + "/api/session", cookies=jar)).json()["csrf"] == csrf
        wrote = await http.post(b.base + f"/api/blocks/{block.id}", json={"value": "v2", "expected_version": 1},
                                cookies=jar, headers={"X-CSRF-Token": csrf})  # fmt: skip
        assert wrote.status_code == 200 and (await hub.read_block("shared")).value == "v2"
        async with http.stream("GET", b.base + "/events", cookies=jar) as events:
            assert events.status_code == 200
    async with serve(hub, token=TOKEN) as later, serve(hub, token="another-token-7c1e") as other:
        async with httpx2.AsyncClient() as http:
            assert [x["name"] for x in (await http.get(later.base + "/api/agents", cookies=jar)).json()] == []
            assert (await http.get(other.base + "/api/agents", cookies=jar)).status_code == 401
            issued, nonce, mac = jar["mcp_letta_console"].split(".")
            for forged in (f"{int(issued) - 1}.{nonce}.{mac}", f"{issued}.{nonce}x.{mac}", f"{issued}.{nonce}.", "x"):
                refused = await http.get(later.base + "/api/agents", cookies={"mcp_letta_console": forged})
                assert refused.status_code == 401 and "log in with MCP_LETTA_TOKEN" in refused.json()["error"]


async def test_behind_a_balancer_that_ends_tls_the_session_cookie_is_secure(
    hub: AgentHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TLS ends at a balancer on another machine, which says so in a header (the server trusts no proxy
    there: uvicorn's own proxy handling is for loopback only). The cookie is marked Secure, so a browser
    never sends it over plain HTTP; without that word from the balancer it is not (a page over plain HTTP
    could not keep it)."""
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "192.0.2.10")  # the balancer's address, not loopback
    told_https = [{"X-Forwarded-Proto": "https"}, {"X-Forwarded-Proto": "HTTPS, http"},
                  {"Forwarded": 'for=198.51.100.7;proto="https", for=192.0.2.10;proto=http'}]  # fmt: skip
    plain = [{}, {"X-Forwarded-Proto": "http"}, {"Forwarded": "for=198.51.100.7;proto=http"}]
    async with serve(hub, token=TOKEN) as running, httpx2.AsyncClient(base_url=running.base) as http:
        for headers in told_https + plain:
            login = await http.post("/login", data={"token": TOKEN}, headers=headers)
            assert login.status_code == 303
            flags = [flag.strip().lower() for flag in login.headers["set-cookie"].split(";")]
            assert ("secure" in flags) == (headers in told_https), (headers, flags)
            jar = {"mcp_letta_console": login.cookies["mcp_letta_console"]}
            assert (await http.get("/api/agents", cookies=jar)).status_code == 200


async def test_two_consoles_without_a_token_on_one_machine_keep_their_own_sessions(hub: AgentHub) -> None:
    """Browsers keep cookies by host, not port: ``serve --transport http`` on one port and ``mcp-letta
    console`` on another must not replace each other's session."""
    await hub.create_agent("local")
    async with serve(hub) as a, serve(hub) as b, httpx2.AsyncClient() as http:  # one cookie jar, as a browser
        assert (await http.get(a.base + "/")).status_code == 200
        assert (await http.get(b.base + "/")).status_code == 200
        assert len({cookie.name for cookie in http.cookies.jar}) == 2
        for running in (a, b, a):
            agents = await http.get(running.base + "/api/agents")
            assert agents.status_code == 200 and [x["name"] for x in agents.json()] == ["local"]
        assert (await http.get(b.base + "/api/session")).json()["csrf"] != (
            await http.get(a.base + "/api/session")
        ).json()["csrf"]


async def test_closed_pages_leave_no_subscription_behind(served: Served) -> None:
    before = len(served.hub._subscribers)
    async with browser() as b:
        for _ in range(3):
            page = await b.new_page()
            await page.goto(served.base + "/")
            await expect(page.locator("#live")).to_have_text("live", timeout=TIMEOUT_MS)
            await page.close()
    block = await served.hub.create_block("nudge", "")
    with anyio.fail_after(10):
        while len(served.hub._subscribers) > before:
            await served.hub.append_to_block(block.id, "x")  # the next change prunes closed streams
            await anyio.sleep(0.05)
    assert len(served.hub._subscribers) == before


def test_the_console_refuses_to_listen_beyond_loopback_without_a_token(
    db_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from mcp_letta.cli import main

    monkeypatch.delenv("MCP_LETTA_TOKEN", raising=False)
    assert main(["--db", str(db_path), "console", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "refusing to serve" in capsys.readouterr().err

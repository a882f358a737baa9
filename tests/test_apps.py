"""MCP Apps: the views inside a host (``server/apps.py``).

Two halves. Real MCP clients in both protocol eras, with and without the ``io.modelcontextprotocol/ui``
extension: who sees the ``ui://`` documents, ``_meta.ui.resourceUri`` and the tool only views use, and what a
client without the extension reads instead (words). Then the real host side: ext-apps' ``AppBridge`` (npm,
built by ``.ci/apps-host.sh``) in a test host page in Debian's headless Chromium loads each document as a
host does (sandboxed ``srcdoc`` iframe), hands it a real tool result from a running HTTP server, and carries
the view's own ``tools/call`` requests to a real MCP client session of that server. Screenshots go to
``tests/screenshots/apps/`` (git-ignored).
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from conftest import Gate, client
from mcp import Client
from mcp.client.extension import advertise
from mcp.client.streamable_http import streamable_http_client
from playwright.async_api import FrameLocator, Page, async_playwright, expect

from mcp_letta import AgentHub
from mcp_letta.server.app import LettaServer, build_server
from mcp_letta.server.apps import APP_MIME_TYPE, EXTENSION_ID, VIEWS, view_sizes
from mcp_letta.server.http import HttpOptions, http_app, running_app
from mcp_letta.testing import ScriptedLLM

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::UserWarning")]

HOST = Path(__file__).parent / "apps_host"
BRIDGE = HOST / "dist" / "app-bridge.js"
SCREENSHOTS = Path(__file__).parent / "screenshots" / "apps"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
XSS = "<script>window.pwned = 1</script>"
TIMEOUT_MS = 15_000
APPS = advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})
SHOW = {"show_traffic", "show_agent", "show_run"}


async def two_agent_exchange(hub: AgentHub, llm: ScriptedLLM) -> tuple[str, str]:
    """lead asks researcher (through its ask_researcher tool) and replies; the ids of both runs."""
    await hub.create_agent("researcher", persona="researcher persona")
    await hub.create_agent("lead", persona="lead persona", agent_tools=["researcher"])
    llm.on("lead persona").tool_call("ask_researcher", {"message": "find facts"})
    llm.on("lead persona", "the team says: facts found")
    llm.on("researcher persona", "facts found")
    lead_run = await hub.send_message("lead", "go", wait_s=30)
    assert lead_run.status == "completed", lead_run.error
    child = (await hub.list_runs("researcher"))[0]
    assert child.parent_run_id == lead_run.id
    return lead_run.id, child.id


# -- MCP clients with and without the extension ------------------------------------------------------------
async def test_a_client_with_the_apps_extension_is_offered_the_views(server: LettaServer, mode: str) -> None:
    await server.hub.create_agent("lead", persona="lead persona")
    async with client(server, mode, extensions=[APPS]) as c:
        # The server advertises the extension; the SDK sends capabilities.extensions only in the 2026-07-28
        # era (2025-11-25 hosts go by the tools' _meta.ui, which both eras carry).
        advertised = EXTENSION_ID in (c.server_capabilities.extensions or {})
        assert advertised == (mode == "modern")
        tools = {t.name: t for t in (await c.list_tools()).tools}
        for view in VIEWS.values():
            assert tools[view.tool].meta == {"ui": {"resourceUri": view.uri}}
        assert tools["refresh_view"].meta["ui"]["visibility"] == ["app"]
        listed = {r.uri: r for r in (await c.list_resources()).resources}
        sizes = view_sizes()
        for key, view in VIEWS.items():
            assert listed[view.uri].mime_type == APP_MIME_TYPE
            assert f"({sizes[key]} bytes" in (listed[view.uri].description or "")
            (doc,) = (await c.read_resource(view.uri)).contents
            assert doc.mime_type == APP_MIME_TYPE
            html = doc.text  # type: ignore[union-attr]
            assert len(html.encode()) == sizes[key]
            # One self-contained file: nothing loaded from elsewhere, no connection allowed, no domain declared.
            assert not re.search(r"""<(script|link|img|iframe)[^>]*\s(src|href)=""", html)
            assert "default-src 'none'" in html and "connect-src" not in html
            assert "csp" not in ((doc.meta or {}).get("ui") or {})
        result = await c.call_tool("show_agent", {"agent": "lead"})
        assert not result.is_error
        assert result.structured_content is not None and result.structured_content["view"] == "agent"
        assert [b["label"] for b in result.structured_content["blocks"]] == ["persona", "human"]
        assert result.content[0].text.startswith("Agent lead: 2 memory blocks, 0 recent runs.")  # type: ignore[union-attr]


async def test_a_client_without_the_extension_reads_the_picture_in_words(
    llm_server: LettaServer, scripted_llm: ScriptedLLM, mode: str
) -> None:
    hub = llm_server.hub
    lead_run, _ = await two_agent_exchange(hub, scripted_llm)
    await hub.write_block("persona", "lead persona, nearly full " + "x" * 4_000, agent="lead", writer="test")
    await hub.update_block("persona", limit=4_100, agent="lead")
    async with client(llm_server, mode) as c:
        names = {t.name for t in (await c.list_tools()).tools}
        assert names >= SHOW and "refresh_view" not in names
        traffic = await c.call_tool("show_traffic", {"run_id": lead_run})
        agent = await c.call_tool("show_agent", {"agent": "lead"})
        run = await c.call_tool("show_run", {"run_id": lead_run})
        recent = await c.call_tool("show_traffic", {"minutes": 5})
    for result in (traffic, agent, run, recent):
        assert not result.is_error and result.structured_content is None and len(result.content) == 1
    seconds = r"\d+\.\d s"
    text = traffic.content[0].text  # type: ignore[union-attr]
    assert re.fullmatch(
        rf"Run {lead_run} of lead and the 1 run it waited on: "
        r"2 messages among host, lead, researcher \(2 completed\)\.\n"
        rf'host → lead: "go" \(ask, completed, {seconds}\): "the team says: facts found"\n'
        rf'lead → researcher: "find facts" \(send_and_wait, completed, {seconds}\): "facts found"',
        text,
    ), text
    assert recent.content[0].text.startswith(  # type: ignore[union-attr]
        "Traffic in the last 5 minutes: 2 messages among host, lead, researcher (2 completed)."
    )
    text = agent.content[0].text  # type: ignore[union-attr]
    lines = text.split("\n")
    assert lines[:2] == [
        "Agent lead: 2 memory blocks, 1 recent run.",
        "Blocks: persona 4026/4100 chars (98%), nearly full; human 0/5000 chars (0%).",
    ], text
    assert lines[2] == f'Run {lead_run} completed: "go" → "the team says: facts found"'
    text = run.content[0].text  # type: ignore[union-attr]
    assert re.fullmatch(
        rf"Run {lead_run} of lead: completed in {seconds}, 2 steps, 1 tool call, \d+ tokens\.\n"
        r'Input: "go"\n'
        r'Step 1: ask_researcher\(\{"message": "find facts"\}\) → ok: "\{\'agent_id\': \'agent-[^"]*…"\n'
        r'Reply: "the team says: facts found"',
        text,
    ), text


async def test_bad_input_gets_an_error_that_says_what_to_do(server: LettaServer, mode: str) -> None:
    async with client(server, mode, extensions=[APPS]) as c:
        missing = await c.call_tool("show_run", {"run_id": "run-nope"})
        unknown = await c.call_tool("show_agent", {"agent": "nobody"})
        incomplete = await c.call_tool("refresh_view", {"view": "agent"})
        too_far = await c.call_tool("show_traffic", {"minutes": 0})
    assert missing.is_error and "list_runs shows them" in missing.content[0].text  # type: ignore[union-attr]
    assert unknown.is_error and "list_agents shows them" in unknown.content[0].text  # type: ignore[union-attr]
    assert incomplete.is_error
    assert incomplete.content[0].text.endswith("the agent view needs agent (its name or id)")  # type: ignore[union-attr]
    assert too_far.is_error and "minutes" in too_far.content[0].text  # type: ignore[union-attr]


async def test_the_core_tier_keeps_the_views_and_hides_the_view_only_tool(llm_hub: AgentHub, mode: str) -> None:
    server = build_server(llm_hub, llm_hub.settings.with_overrides(tools="core"))
    async with server.running():
        async with client(server, mode) as c:
            plain = {t.name: t for t in (await c.list_tools()).tools}
        async with client(server, mode, extensions=[APPS]) as c:
            apps = {t.name for t in (await c.list_tools()).tools}
    assert SHOW <= set(plain) and "refresh_view" not in plain and "refresh_view" in apps
    for name in SHOW:  # one short sentence each: the views cost the model little
        assert len(plain[name].description or "") < 160, plain[name].description


# -- the real host side: ext-apps' AppBridge in Chromium --------------------------------------------------
class Host:
    """A running mcp-letta HTTP server, an MCP client of it that negotiated MCP Apps, and a browser page on
    the test host with ext-apps' AppBridge; ``show`` puts a tool's picture in the page's iframe."""

    def __init__(self, hub: AgentHub, mcp: Client, page: Page) -> None:
        self.hub = hub
        self.mcp = mcp
        self.page = page
        self.calls: list[dict[str, Any]] = []  # the view's tools/call requests, as the bridge forwarded them

    async def call_tool(self, params: dict[str, Any]) -> dict[str, Any]:
        """The bridge's tools/call, answered by the real server through the real client session."""
        self.calls.append(params)
        result = await self.mcp.call_tool(params["name"], params.get("arguments") or {})
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)

    async def show(self, tool: str, args: dict[str, Any]) -> FrameLocator:
        """Call ``tool`` as a host's model would, read its ``ui://`` document, and show both in the iframe."""
        listed = {t.name: t for t in (await self.mcp.list_tools()).tools}
        uri = listed[tool].meta["ui"]["resourceUri"]  # type: ignore[index]
        (doc,) = (await self.mcp.read_resource(uri)).contents
        result = await self.mcp.call_tool(tool, args)
        assert not result.is_error, result.content
        wire = result.model_dump(by_alias=True, mode="json", exclude_none=True)
        shown = await self.page.evaluate("([html, args, result]) => showView(html, args, result)",
                                         [doc.text, args, wire])  # type: ignore[union-attr]  # fmt: skip
        assert shown == "shown"
        return self.page.frame_locator("#view")

    async def view_eval(self, expression: str) -> Any:
        """Evaluate ``expression`` inside the view's frame."""
        frame = await (await self.page.query_selector("#view")).content_frame()  # type: ignore[union-attr]
        assert frame is not None
        return await frame.evaluate(expression)

    async def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def host_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The test host page and the bundled AppBridge, served over HTTP from a temporary directory."""
    assert BRIDGE.is_file(), (
        f"{BRIDGE} is missing: the MCP Apps test host is not installed. Run `bash .ci/apps-host.sh` "
        "(npm installs @modelcontextprotocol/ext-apps and esbuild bundles its AppBridge; .ci/run does this)"
    )
    assert CHROMIUM, "install Debian's chromium (apt-get install -y chromium); .ci/run does"
    site = tmp_path_factory.mktemp("apps-host")
    shutil.copy(HOST / "host.html", site / "host.html")
    shutil.copy(BRIDGE, site / "app-bridge.js")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/host.html"
    finally:
        httpd.shutdown()
        thread.join()


@asynccontextmanager
async def hosting(hub: AgentHub, site: str) -> AsyncIterator[Host]:
    server = build_server(hub)
    async with running_app(http_app(server, HttpOptions(port=0))) as port:
        async with httpx2.AsyncClient(timeout=30) as http:
            transport = streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)
            async with Client(transport, mode="legacy", extensions=[APPS]) as mcp:
                async with async_playwright() as playwright:
                    browser = await playwright.chromium.launch(executable_path=CHROMIUM)
                    try:
                        page = await browser.new_page(viewport={"width": 1280, "height": 800})
                        page.set_default_timeout(TIMEOUT_MS)
                        host = Host(hub, mcp, page)
                        # Playwright exposes it to every frame; the view never calls it (it asks AppBridge)
                        await page.expose_function("hostCallTool", host.call_tool)
                        await page.goto(site)
                        yield host
                    finally:
                        await browser.close()


async def test_the_traffic_view_draws_lifelines_and_arrows_and_opens_a_run_through_the_bridge(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM, host_site: str
) -> None:
    lead_run, child_run = await two_agent_exchange(llm_hub, scripted_llm)
    async with hosting(llm_hub, host_site) as host:
        view = await host.show("show_traffic", {"run_id": lead_run})
        participants = view.locator("#traffic g.participant text")
        await expect(participants).to_have_text(["host", "lead", "researcher"])
        await expect(view.locator("#traffic line.lifeline")).to_have_count(3)
        await expect(view.locator(f'#traffic g.msg[data-kind="send"][data-run="{lead_run}"]')).to_contain_text("ask")
        arrow = view.locator(f'#traffic g.msg[data-kind="send"][data-run="{child_run}"]')
        await expect(arrow).to_contain_text("send_and_wait")
        await expect(view.locator(f'#traffic g.msg[data-kind="reply"][data-run="{child_run}"]')).to_have_count(1)
        await expect(view.locator(f'#traffic g.msg[data-kind="reply"][data-run="{lead_run}"]')).to_have_count(1)
        await host.shot("traffic")
        await arrow.click()  # the view asks the server for the run through the host
        await expect(view.locator("h1")).to_have_text(f"Run {child_run}")
        await expect(view.locator("[data-reply]")).to_have_text("facts found")
        assert host.calls[-1] == {"name": "refresh_view", "arguments": {"view": "run", "run_id": child_run}}
        await view.get_by_role("button", name="Back").click()
        await expect(view.locator("#traffic line.lifeline")).to_have_count(3)
        view = await host.show("show_traffic", {"minutes": 5})
        await expect(view.locator("main p").first).to_have_text("The last 5 minutes: 2 messages.")
        await expect(view.locator("#traffic g.msg")).to_have_count(4)


async def test_the_agent_view_shows_block_values_and_sizes_and_a_script_as_text(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM, host_site: str
) -> None:
    await llm_hub.create_agent("helper", persona="helper persona", description="<b>bold</b> helper")
    await llm_hub.create_block("notes", XSS, limit=100, attach_to=["helper"])
    scripted_llm.on("helper persona", "done")
    run = await llm_hub.send_message("helper", f"hello {XSS}", wait_s=30)
    async with hosting(llm_hub, host_site) as host:
        view = await host.show("show_agent", {"agent": "helper"})
        await expect(view.locator("h1")).to_have_text("helper")
        await expect(view.locator('tr[data-block="persona"] pre')).to_have_text("helper persona")
        notes = view.locator('tr[data-block="notes"]')
        await expect(notes.locator("pre")).to_have_text(XSS)  # the markup, shown as characters
        await expect(notes).to_contain_text(f"{len(XSS)} / 100")
        assert await notes.get_by_role("meter").get_attribute("aria-valuenow") == str(len(XSS))
        await expect(view.locator("main")).to_contain_text("<b>bold</b> helper")
        await expect(view.locator(f'tr[data-run="{run.id}"]')).to_contain_text(f"hello {XSS}")
        await expect(view.locator(f'tr[data-run="{run.id}"]')).to_contain_text("done")
        await host.shot("agent")
        assert await view.locator("main script, main b").count() == 0
        assert await view.locator("script").count() == 2  # ours: draw.js and views.js
        assert await host.view_eval("window.pwned") is None
        await view.locator(f'tr[data-run="{run.id}"] a').click()  # the whole run, asked through the host
        await expect(view.locator("h1")).to_have_text(f"Run {run.id}")
        await expect(view.locator(".bubble.user")).to_have_text(f"you: hello {XSS}")
        assert await host.view_eval("window.pwned") is None


async def test_the_run_view_follows_a_run_through_the_bridge_until_it_replies(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM, gate: Gate, host_site: str
) -> None:
    await llm_hub.create_agent("helper", persona="helper persona")
    scripted_llm.on("helper persona").tool_call("archival_memory_insert", {"content": "the sky is blue"})
    # the second step's answer is held by the gate (unscripted): the run stays running until the test opens it
    run = await llm_hub.send_message("helper", "remember the sky")
    async with hosting(llm_hub, host_site) as host:
        for _ in range(300):
            if (await llm_hub.get_run(run.id)).steps:
                break
            await host.page.wait_for_timeout(50)
        view = await host.show("show_run", {"run_id": run.id})
        await expect(view.locator("h1")).to_have_text(f"Run {run.id}")
        await expect(view.locator("tr", has_text="Status")).to_contain_text("running")
        await expect(view.locator("#steps li")).to_have_count(1)
        await expect(view.locator('[data-tool="archival_memory_insert"]')).to_contain_text('"the sky is blue"')
        await expect(view.get_by_role("status")).to_contain_text("following")
        await host.shot("run-live")
        gate.open()
        await expect(view.locator("tr", has_text="Status")).to_contain_text("completed")
        await expect(view.locator("#steps li")).to_have_count(2)
        await expect(view.locator("[data-reply]")).to_have_text("released")
        await host.shot("run")
    polls = [c for c in host.calls if c["arguments"].get("view") == "run"]
    assert polls and all(c == {"name": "refresh_view", "arguments": {"view": "run", "run_id": run.id}} for c in polls)

"""Pictures inside the host (MCP Apps, the ``io.modelcontextprotocol/ui`` extension).

Three views, each a tool bound to a ``ui://`` document that a host renders in a sandboxed iframe:
``show_traffic`` (the console's sequence diagram of messages between the host and agents, for the last N
minutes or for one run and the runs it waited on), ``show_agent`` (memory blocks against their limits and
recent runs) and ``show_run`` (steps, tool calls and reply, followed while the run goes on). A view asks for
fresh data through the host (the Apps bridge: ``tools/call`` of ``refresh_view``, a tool only views see),
never over the network: each document is one HTML file with its CSS and scripts inline, built here from the
console's own drawing code (``console/static/draw.js`` and ``console.css``) and the views' script
(``views/views.js``), and its Content-Security-Policy allows no connection at all.

A client that did not negotiate the extension gets the same three tools with a text result saying in words
what the picture shows, no structured data, and does not see ``refresh_view`` in ``tools/list``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Annotated, Any, Literal

from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID, Apps, client_supports_apps
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from mcp_letta import __version__
from mcp_letta.errors import NotFound
from mcp_letta.hub import AgentHub, incoming
from mcp_letta.models import Run
from mcp_letta.server.tools import call

__all__ = [
    "APP_MIME_TYPE",
    "EXTENSION_ID",
    "VIEWS",
    "Picture",
    "agent_picture",
    "build_apps",
    "hide_app_only_tools",
    "register_apps",
    "run_picture",
    "traffic_picture",
    "view_html",
]

READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

DRAWING = resources.files("mcp_letta") / "console" / "static"  # the console's files (not its module: it imports ours)
VIEW_FILES = resources.files("mcp_letta") / "server" / "views"

TRAFFIC_CAP = 300  # runs one traffic picture shows (as the console's traffic page)
RECENT_RUNS = 10  # runs the agent picture lists
TEXT_LINES = 20  # lines of a text result's listing; the rest is counted
QUOTE = 80  # characters of an input, reply or result a text result quotes
VIEW_TEXT = 200  # characters of a run's input or reply the traffic picture carries per run


@dataclass(frozen=True)
class View:
    """One picture: its ``ui://`` document and the tool a host's model calls to show it."""

    key: Literal["traffic", "agent", "run"]
    uri: str
    tool: str
    title: str


VIEWS = {
    view.key: view
    for view in (
        View("traffic", "ui://mcp-letta/traffic.html", "show_traffic", "Traffic between agents"),
        View("agent", "ui://mcp-letta/agent.html", "show_agent", "Agent memory and runs"),
        View("run", "ui://mcp-letta/run.html", "show_run", "Run steps"),
    )
}
REFRESH_TOOL = "refresh_view"


# -- the documents ------------------------------------------------------------------------------------
# The view's own policy: inline script and style, no fetch, no frame, no form, nothing loaded from anywhere.
DOCUMENT_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
    "form-action 'none'; base-uri 'none'"
)


def _inline(text: str, tag: str) -> str:
    """A file's text safe to place inside ``<tag>``: it must not close the element early."""
    if f"</{tag}" in text.lower():
        raise ValueError(f"an inlined file contains '</{tag}'; it would end the <{tag}> element")
    return text


@functools.cache
def view_html(key: str) -> str:
    """The self-contained HTML document of view ``key`` ("traffic", "agent" or "run"): the console's style sheet
    and drawing script and the views' script inline, built once per process from the package's files."""
    view = VIEWS[key]
    style = _inline(
        (DRAWING / "console.css").read_text("utf-8") + (VIEW_FILES / "views.css").read_text("utf-8"), "style"
    )
    scripts = [_inline((DRAWING / "draw.js").read_text("utf-8"), "script"),
               _inline((VIEW_FILES / "views.js").read_text("utf-8"), "script")]  # fmt: skip
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{DOCUMENT_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{view.title}</title>\n<style>\n{style}</style>\n</head>\n"
        f'<body data-view="{view.key}" data-version="{__version__}">\n'
        '<main id="main"><p class="muted" role="status">Waiting for the host…</p></main>\n'
        + "".join(f"<script>\n{script}</script>\n" for script in scripts)
        + "</body>\n</html>\n"
    )


def view_sizes() -> dict[str, int]:
    """Each view's document size in bytes (UTF-8)."""
    return {key: len(view_html(key).encode()) for key in VIEWS}


# -- what a picture holds ---------------------------------------------------------------------------------
class Picture(BaseModel):
    """A view's data (``data``, for the document) and the same in words (``text``, for the model and for
    clients without the Apps extension)."""

    text: str
    data: dict[str, Any]


def _short(text: str, n: int = QUOTE) -> str:
    """``text`` on one line, at most ``n`` characters."""
    flat = " ".join(text.split())
    return f"{flat[: n - 1]}…" if len(flat) > n else flat


def _quote(text: str | None, n: int = QUOTE) -> str:
    return "" if text is None else f'"{_short(text, n)}"'


def _said(run: Run) -> str:
    """What the sender said: a message from an agent without Letta's wrapper around it."""
    wrapper = incoming(run.sender, "") if run.sender else None
    return run.input[len(wrapper) :] if wrapper and run.input.startswith(wrapper) else run.input


def _seconds(run: Run) -> str:
    end = run.finished_at
    start = run.started_at or run.created_at
    if end is None:
        return ""
    return f"{(end - start).total_seconds():.1f} s"


def _listing(lines: list[str]) -> list[str]:
    more = len(lines) - TEXT_LINES
    return lines[:TEXT_LINES] + ([f"… and {more} more"] if more > 0 else [])


def _run_json(run: Run, *, brief: bool = False) -> dict[str, Any]:
    """A run as the drawing code reads it (``Run`` in JSON); ``brief`` keeps only what the traffic diagram and
    the agent's run table use: shortened input and reply, and of its tool calls only the failed messaging ones."""
    data = run.model_dump(mode="json")
    if brief:
        for key in ("input", "reply"):
            if data[key] is not None and len(data[key]) > VIEW_TEXT:
                data[key] = data[key][: VIEW_TEXT - 1] + "…"
        for step in data["steps"]:
            step["tool_calls"] = [c for c in step["tool_calls"] if not c["ok"] and _messaging(c["name"])]
    return data


def _messaging(tool: str) -> bool:
    return tool.startswith(("send_message_to_agent", "ask_"))


async def _names(hub: AgentHub, runs: Iterable[Run]) -> dict[str, str]:
    """Agent id -> name for every agent the runs name (receivers, senders, reply targets)."""
    runs = list(runs)
    names = {r.agent_id: r.agent_name for r in runs}
    for other in {r.sender for r in runs} | {r.reply_to for r in runs}:
        if other and other != "host" and other not in names:
            try:
                names[other] = (await hub.get_agent(other)).name
            except NotFound:  # a deleted sender keeps its id
                names[other] = other
    return names


async def _runs_since(hub: AgentHub, since: datetime, cap: int) -> tuple[list[Run], bool]:
    """Runs created at or after ``since``, newest first, at most ``cap`` (and whether more were left out)."""
    found: list[Run] = []
    cursor: str | None = None
    while True:
        page = await call(hub.list_runs(limit=min(cap + 1, 1_000), cursor=cursor))
        for run in page:
            if run.created_at < since:
                return found, False
            if len(found) == cap:
                return found, True
            found.append(run)
        if page.next_cursor is None:
            return found, False
        cursor = page.next_cursor


async def traffic_picture(hub: AgentHub, *, minutes: float = 10, run_id: str | None = None) -> Picture:
    """The messages between the host and agents in the last ``minutes``, or those of run ``run_id`` and every
    run it sent (and they sent), oldest first."""
    if run_id is not None:
        root = await call(hub.get_run(run_id))
        later, cut = await _runs_since(hub, root.created_at, TRAFFIC_CAP * 10)
        family, ids = [root], {root.id}
        for run in sorted(later, key=lambda r: r.created_at):  # a child is always created after its parent
            if run.parent_run_id in ids and run.id not in ids:
                family.append(run)
                ids.add(run.id)
        runs, cut = family[:TRAFFIC_CAP], cut or len(family) > TRAFFIC_CAP
        scope = f"Run {root.id} of {root.agent_name} and the {len(runs) - 1} run{'s' * (len(runs) != 2)} it waited on"
    else:
        since = datetime.now(UTC) - timedelta(minutes=minutes)
        newest, cut = await _runs_since(hub, since, TRAFFIC_CAP)
        runs = sorted(newest, key=lambda r: r.created_at)
        scope = f"Traffic in the last {minutes:g} minute{'s' * (minutes != 1)}"
    names = await _names(hub, runs)
    who = lambda ref: "host" if ref in (None, "host") else names.get(ref, ref)  # noqa: E731
    lines = []
    for run in runs:
        kind = "ask" if run.sender is None else ("send_and_wait" if run.depth > 0 else "async")
        ended = f", {_seconds(run)}" if run.finished_at else ""
        outcome = f": {_quote(run.reply)}" if run.reply else (f": {_quote(run.error)}" if run.error else "")
        lines.append(
            f"{who(run.sender)} → {run.agent_name}: {_quote(_said(run))} ({kind}, {run.status}{ended}){outcome}"
        )
        for step in run.steps:
            for c in step.tool_calls:
                if not c.ok and _messaging(c.name):
                    lines.append(f"  ✕ {run.agent_name}: {c.name} failed: {_quote(c.result_preview)}")
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    parties = sorted({"host", *(who(r.sender) for r in runs), *(r.agent_name for r in runs)} - {"host"})
    among = ", ".join(["host", *parties])
    states = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    head = (
        f"{scope}: {len(runs)} message{'s' * (len(runs) != 1)} among {among} ({states})."
        if runs
        else f"{scope}: no messages."
    )
    if cut:
        head += f" Only the first {TRAFFIC_CAP} are shown."
    data = {
        "view": "traffic",
        "minutes": minutes if run_id is None else None,
        "run_id": run_id,
        "names": names,
        "runs": [_run_json(r, brief=True) for r in runs],
        "truncated": cut,
        "live": any(not r.done for r in runs),
    }
    return Picture(text="\n".join([head, *_listing(lines)]), data=data)


async def agent_picture(hub: AgentHub, agent: str) -> Picture:
    """One agent: its memory blocks with their sizes against their limits, and its newest runs."""
    record = await call(hub.get_agent(agent))
    runs = (await call(hub.list_runs(record.id, limit=RECENT_RUNS))).items
    blocks = [
        {"id": b.id, "label": b.label, "value": b.value, "chars": len(b.value), "limit": b.limit,
         "version": b.version, "read_only": b.read_only, "description": b.description, "agents": b.agents}
        for b in record.blocks
    ]  # fmt: skip
    sizes = []
    for b in blocks:
        share = round(100 * b["chars"] / b["limit"]) if b["limit"] else 0
        sizes.append(
            f"{b['label']} {b['chars']}/{b['limit']} chars ({share}%)" + (", nearly full" if share >= 90 else "")
        )
    head = (
        f"Agent {record.name}: {len(blocks)} memory block{'s' * (len(blocks) != 1)}, "
        f"{len(runs)} recent run{'s' * (len(runs) != 1)}."
    )
    lines = [head, "Blocks: " + ("; ".join(sizes) if sizes else "none") + "."]
    lines += _listing(
        [f"Run {r.id} {r.status}: {_quote(_said(r))}" + (f" → {_quote(r.reply)}" if r.reply else "") for r in runs]
    )
    data = {
        "view": "agent",
        "agent": {"id": record.id, "name": record.name, "description": record.description, "tags": record.tags},
        "blocks": blocks,
        "runs": [_run_json(r, brief=True) for r in runs],  # the table; a click fetches the whole run
        "names": await _names(hub, runs),
        "live": any(not r.done for r in runs),
    }
    return Picture(text="\n".join(lines), data=data)


async def run_picture(hub: AgentHub, run_id: str) -> Picture:
    """One run: its input, each step's tool calls with their results, and its reply or error."""
    run = await call(hub.get_run(run_id))
    took = f" in {_seconds(run)}" if run.finished_at else ""
    calls = sum(len(step.tool_calls) for step in run.steps)
    lines = [
        f"Run {run.id} of {run.agent_name}: {run.status}{took}, {len(run.steps)} step{'s' * (len(run.steps) != 1)}, "
        f"{calls} tool call{'s' * (calls != 1)}, {run.usage.total_tokens} tokens.",
        f"Input: {_quote(_said(run))}" + (f" (from {(await _names(hub, [run]))[run.sender]})" if run.sender else ""),
    ]
    steps = []
    for step in run.steps:
        for c in step.tool_calls:
            verdict = "ok" if c.ok else "failed"
            steps.append(
                f"Step {step.index + 1}: {c.name}({_short(c.arguments)}) → {verdict}: {_quote(c.result_preview)}"
            )
    lines += _listing(steps)
    if run.reply is not None:
        lines.append(f"Reply: {_quote(run.reply, 4 * QUOTE)}")
    if run.error:
        lines.append(f"Error: {_quote(run.error, 4 * QUOTE)}")
    if not run.done:
        lines.append("Still going: show_run again (or the picture, which follows it) for the next steps.")
    data = {"view": "run", "run": _run_json(run), "names": await _names(hub, [run]), "live": not run.done}
    return Picture(text="\n".join(lines), data=data)


# -- the tools ------------------------------------------------------------------------------------------
def _result(picture: Picture, ctx: Context, *, for_view: bool = False) -> CallToolResult:
    """The picture for this client: words, plus the view's data when the client renders Apps (a view's own
    refresh gets the data alone)."""
    if for_view:
        return CallToolResult(content=[], structured_content=picture.data)
    if client_supports_apps(ctx):
        return CallToolResult(content=[TextContent(type="text", text=picture.text)], structured_content=picture.data)
    return CallToolResult(content=[TextContent(type="text", text=picture.text)])


# The view tools' schemas are kept short: a host sends them to its model with every request (the core tier too).
Minutes = Annotated[float, Field(gt=0, le=7 * 24 * 60)]


def build_apps(hub: AgentHub) -> Apps:
    """The MCP Apps extension over ``hub``: the three view tools, ``refresh_view`` (for views only) and the
    three ``ui://`` documents."""
    apps = Apps()
    sizes = view_sizes()
    for key, view in VIEWS.items():
        apps.add_html_resource(
            view.uri, view_html(key), name=f"{key}-view", title=view.title,
            description=f"{view.title}: a self-contained picture ({sizes[key]} bytes, no network)",
            prefers_border=True,
        )  # fmt: skip

    @apps.tool(resource_uri=VIEWS["traffic"].uri, title="Show traffic", annotations=READ)
    async def show_traffic(ctx: Context, minutes: Minutes = 10, run_id: str | None = None) -> CallToolResult:
        """Picture messages between host and agents: the last `minutes`, or run_id and the runs it waited on."""
        return _result(await traffic_picture(hub, minutes=minutes, run_id=run_id), ctx)

    @apps.tool(resource_uri=VIEWS["agent"].uri, title="Show agent", annotations=READ)
    async def show_agent(ctx: Context, agent: str) -> CallToolResult:
        """Picture an agent's memory blocks (size against limit) and its recent runs."""
        return _result(await agent_picture(hub, agent), ctx)

    @apps.tool(resource_uri=VIEWS["run"].uri, title="Show run", annotations=READ)
    async def show_run(ctx: Context, run_id: str) -> CallToolResult:
        """Picture a run's steps, tool calls and reply, live while it runs."""
        return _result(await run_picture(hub, run_id), ctx)

    @apps.tool(resource_uri=VIEWS["run"].uri, visibility=["app"], title="Refresh view", annotations=READ)
    async def refresh_view(
        ctx: Context,
        view: Literal["traffic", "agent", "run"],
        minutes: Minutes = 10,
        run_id: str | None = None,
        agent: str | None = None,
    ) -> CallToolResult:
        """A view's current data (views call it through the host to refresh and follow a run)."""
        if view == "agent" and agent is None:
            raise ToolError("the agent view needs agent (its name or id)")
        if view == "run" and run_id is None:
            raise ToolError("the run view needs run_id")
        pictures: dict[str, Callable[[], Any]] = {
            "traffic": lambda: traffic_picture(hub, minutes=minutes, run_id=run_id),
            "agent": lambda: agent_picture(hub, agent or ""),
            "run": lambda: run_picture(hub, run_id or ""),
        }
        return _result(await pictures[view](), ctx, for_view=True)

    return apps


def register_apps(mcp: MCPServer, hub: AgentHub) -> list[str]:
    """Add the views (``build_apps``) to ``mcp`` and advertise the extension; returns the tool names."""
    return apply_apps(mcp, build_apps(hub))


def apply_apps(mcp: MCPServer, apps: Apps) -> list[str]:
    """Add the extension's tools and documents to ``mcp`` after it was built, and advertise the extension;
    returns the tool names. Hides ``refresh_view`` from clients without the extension."""
    # Private, as MCPServer applies extensions only from its constructor, and our tools must be added after the
    # argument checks are installed (server/arguments.py): this is the constructor's own step, run later.
    mcp._apply_extension(apps)
    mcp.middleware.append(hide_app_only_tools)
    return [binding.kwargs.get("name") or binding.fn.__name__ for binding in apps.tools()]


def _app_only(tool: Any) -> bool:
    meta = tool.get("_meta") if isinstance(tool, dict) else getattr(tool, "meta", None)
    ui = (meta or {}).get("ui") or {}
    return ui.get("visibility") == ["app"]


async def hide_app_only_tools(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Server middleware: a client that did not negotiate MCP Apps is not shown tools meant only for views."""
    result = await call_next(ctx)
    if ctx.method != "tools/list" or client_supports_apps(ctx):
        return result
    if isinstance(result, dict):
        result["tools"] = [t for t in result.get("tools", []) if not _app_only(t)]
        return result
    if isinstance(result, BaseModel) and hasattr(result, "tools"):
        return result.model_copy(update={"tools": [t for t in result.tools if not _app_only(t)]})
    return result

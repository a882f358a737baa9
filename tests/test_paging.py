"""Every listing and search comes in pages: a small default, ``more`` = how many follow, and an opaque
cursor that pages by key, so rows written between two pages are never shown twice or skipped."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import client, dump, ok

from mcp_letta import AgentHub, Invalid, NewMessage, NotFound, Page
from mcp_letta.server.app import LettaServer
from mcp_letta.testing import Response, ScriptedLLM

pytestmark = pytest.mark.anyio


async def every_page(listing: Callable[..., Awaitable[Page[Any]]], *args: Any, **filters: Any) -> list[Page[Any]]:
    """Follow a hub listing's cursors to its end, checking ``more`` against what the next pages hold."""
    pages = [await listing(*args, **filters)]
    while pages[-1].next_cursor is not None:
        pages.append(await listing(*args, **filters, cursor=pages[-1].next_cursor))
    for i, page in enumerate(pages):
        assert page.more == sum(len(later) for later in pages[i + 1 :])
    assert pages[-1].more == 0
    return pages


def flat(pages: list[Page[Any]]) -> list[Any]:
    return [item for page in pages for item in page]


async def create_agents(hub: AgentHub, names: list[str], **kwargs: Any) -> None:
    """Create agents concurrently (their writes share transactions)."""
    async with anyio.create_task_group() as tg:
        for name in names:
            tg.start_soon(lambda n=name: hub.create_agent(n, **kwargs))


async def test_each_listing_pages_through_everything_once_with_the_right_counts(hub: AgentHub) -> None:
    await create_agents(hub, [f"a{i:02d}" for i in range(7)], tags=["crew"])
    await hub.create_agent("loner")
    pages = await every_page(hub.list_agents, tags=["crew"], limit=3)
    assert [len(p) for p in pages] == [3, 3, 1] and [p.more for p in pages] == [4, 1, 0]
    assert [a.name for a in flat(pages)] == [f"a{i:02d}" for i in range(7)]
    assert [a.name for a in await hub.list_agents()] == [*(f"a{i:02d}" for i in range(7)), "loner"]

    for i in range(5):
        await hub.create_block("notes", f"note {i}")
        await hub.create_block(f"extra_{i}", attach_to=["loner"])
    assert [b.value for b in flat(await every_page(hub.list_blocks, label="notes", limit=2))] == [
        f"note {i}" for i in range(5)
    ]
    mine = flat(await every_page(hub.list_blocks, agent="loner", limit=2))
    assert [b.label for b in mine] == ["persona", "human", *(f"extra_{i}" for i in range(5))]
    everything = flat(await every_page(hub.list_blocks, limit=4))
    assert len(everything) == len({b.id for b in everything}) == 2 * 8 + 10

    for i in range(6):
        await hub.append_to_block("persona", f"line {i}", agent="loner")
    versions = [c.version for c in flat(await every_page(hub.block_history, "persona", agent="loner", limit=4))]
    assert versions == list(range(7, 0, -1))

    await hub.append_messages("loner", [NewMessage(role="user", content=f"message {i}") for i in range(9)])
    pages = await every_page(hub.get_messages, "loner", limit=4)
    assert [[m.content[-1] for m in p] for p in pages] == [list("5678"), list("1234"), ["0"]]

    for i in range(5):
        await hub.archival_insert("loner", f"passage {i} about deploy keys" + " filler" * i)
    assert [p.text[:9] for p in flat(await every_page(hub.archival_list, "loner", limit=2))] == [
        f"passage {i}" for i in range(4, -1, -1)
    ]
    found = flat(await every_page(hub.archival_search, "loner", "deploy", limit=2))
    best_first = [p.text for p in (await hub.archival_search("loner", "deploy", limit=100))]
    assert [p.text for p in found] == best_first and len(found) == 5
    assert [m.content for m in flat(await every_page(hub.search_messages, "loner", "message", limit=4))] == [
        m.content for m in await hub.search_messages("loner", "message", limit=100)
    ]
    newest_first = flat(await every_page(hub.search_messages, "loner", limit=4))
    assert [m.content for m in newest_first] == [f"message {i}" for i in range(8, -1, -1)]


async def test_rows_written_between_pages_are_never_repeated_or_skipped(hub: AgentHub) -> None:
    await hub.create_agent("r")
    await hub.append_messages("r", [NewMessage(role="user", content=f"old {i}") for i in range(6)])
    for i in range(6):
        await hub.archival_insert("r", f"old passage {i} on the release plan")
    first = await hub.get_messages("r", limit=3)
    searched = await hub.archival_search("r", "release", limit=3)
    listed = await hub.archival_list("r", limit=3)
    await hub.append_messages("r", [NewMessage(role="user", content=f"new {i}") for i in range(4)])
    for i in range(4):
        await hub.archival_insert("r", f"new passage {i} on the release plan")
    rest = await hub.get_messages("r", limit=100, cursor=first.next_cursor)
    assert [m.content for m in [*rest, *first]] == [f"old {i}" for i in range(6)]
    more = await hub.archival_search("r", "release", limit=100, cursor=searched.next_cursor)
    assert sorted(p.text for p in [*searched, *more]) == [f"old passage {i} on the release plan" for i in range(6)]
    older = await hub.archival_list("r", limit=100, cursor=listed.next_cursor)
    assert [p.text[:13] for p in [*listed, *older]] == [f"old passage {i}" for i in range(5, -1, -1)]


async def test_a_bad_cursor_is_refused_with_what_to_do(hub: AgentHub, db_path: Path) -> None:
    await create_agents(hub, ["a", "b", "c"], tags=["t"])
    await hub.append_messages("a", [NewMessage(role="user", content=f"hello {i}") for i in range(2)])
    page = await hub.list_agents(limit=1)
    runs_cursor = "eyJsIjoicnVucyIsInMiOiJ4IiwiayI6WzFdfQ"  # a runs cursor
    before = dump(db_path)
    for cursor, expected in [
        ("not a cursor", "is not a cursor from this listing: pass next_cursor from the previous page unchanged"),
        ("x" * 5000, "is not a cursor from this listing"),
        (page.next_cursor[:-2], "is not a cursor from this listing"),
        (runs_cursor, "this cursor is from a listing of runs, not of agents"),
    ]:
        with pytest.raises(Invalid, match=expected):
            await hub.list_agents(cursor=cursor)
    with pytest.raises(Invalid, match="made with other filters: pass the same filters as for the first page"):
        await hub.list_agents(tags=["t"], cursor=page.next_cursor)
    with pytest.raises(Invalid, match="this cursor is from a listing of agents, not of blocks"):
        await hub.list_blocks(cursor=page.next_cursor)
    with pytest.raises(Invalid, match="made with other filters"):
        await hub.get_messages("b", cursor=(await hub.get_messages("a", limit=1)).next_cursor)
    assert dump(db_path) == before


async def test_check_replies_says_how_many_more_wait(llm_hub: AgentHub) -> None:
    await llm_hub.create_agent("echo")
    runs = [await llm_hub.send_async("echo", f"question {i}") for i in range(3)]
    for run in runs:
        await llm_hub.wait_run(run.id, wait_s=30)
    first = await llm_hub.check_replies(limit=2)
    assert (len(first), first.more, first.next_cursor) == (2, 1, None)
    rest = await llm_hub.check_replies(limit=2)
    assert (len(rest), rest.more) == (1, 0)
    assert {r.id for r in [*first, *rest]} == {r.id for r in runs}
    listed = flat(await every_page(llm_hub.list_runs, "echo", limit=2))
    assert [r.id for r in listed] == [r.id for r in reversed(runs)]


async def test_runs_and_passages_page_either_way_from_a_cursor_or_an_id(
    llm_hub: AgentHub, scripted_llm: ScriptedLLM
) -> None:
    scripted_llm.default = Response(content="done")
    await llm_hub.create_agent("echo")
    await llm_hub.create_agent("other")
    ids = [(await llm_hub.send_message("echo", f"question {i}", wait_s=30)).id for i in range(5)]
    await llm_hub.send_message("other", "not listed", wait_s=30)
    oldest_first = flat(await every_page(llm_hub.list_runs, "echo", limit=2, oldest_first=True))
    assert [r.id for r in oldest_first] == ids
    older = await llm_hub.list_runs("echo", limit=2, after_id=ids[3])  # newest first: the ones sent before it
    assert ([r.id for r in older], older.more) == ([ids[2], ids[1]], 1)
    later = await llm_hub.list_runs("echo", oldest_first=True, after_id=ids[1], limit=2)
    assert ([r.id for r in later], later.more) == (ids[2:4], 1)
    assert [r.id for r in await llm_hub.list_runs("echo", oldest_first=True, cursor=later.next_cursor)] == ids[4:]
    either = await llm_hub.list_runs("echo", status=["completed", "failed"], limit=10)
    assert [r.id for r in either] == ids[::-1]
    assert len(await llm_hub.list_runs("echo", status=["failed", "cancelled"])) == 0
    with pytest.raises(Invalid, match="other filters"):  # a cursor of the newest-first listing
        await llm_hub.list_runs("echo", oldest_first=True, cursor=older.next_cursor)
    with pytest.raises(Invalid, match="unknown run status 'done'"):
        await llm_hub.list_runs(status=["completed", "done"])
    with pytest.raises(NotFound, match="not found"):
        await llm_hub.list_runs(after_id="run-nope")

    for i in range(5):
        await llm_hub.archival_insert("echo", f"fact {i}")
    [elsewhere] = [await llm_hub.archival_insert("other", "not listed")]
    facts = flat(await every_page(llm_hub.archival_list, "echo", limit=2, oldest_first=True))
    assert [p.text for p in facts] == [f"fact {i}" for i in range(5)]
    after = await llm_hub.archival_list("echo", after_id=facts[3].id, limit=10)
    assert [p.text for p in after] == ["fact 2", "fact 1", "fact 0"]
    after = await llm_hub.archival_list("echo", after_id=facts[3].id, oldest_first=True)
    assert [p.text for p in after] == ["fact 4"]
    with pytest.raises(NotFound, match="not found for this agent"):  # another agent's passage
        await llm_hub.archival_list("echo", after_id=elsewhere.id)


def result_bytes(result: Any) -> int:
    """What a tool result costs a host: its text content and its structured content."""
    return sum(len(c.text) for c in result.content) + len(json.dumps(result.structured_content))


async def test_a_thousand_agents_page_exactly_once_while_more_are_created(
    server: LettaServer, mode: str, hub: AgentHub
) -> None:
    names = [f"agent_{i:04d}" for i in range(1000)]
    for start in range(0, 1000, 250):
        await create_agents(hub, names[start : start + 250], description="does one thing well", tags=["team"])
    created: list[str] = []

    async def create_more() -> None:
        for i in range(60):  # names sort before, between and after the pages already read
            name = f"{'agent_' if i % 2 else 'zz_'}{i * 17 % 1000:04d}_new"
            await hub.create_agent(name, description="joined while the host was paging")
            created.append(name)

    async with client(server, mode) as c:
        first = await ok(c, "list_agents")
        assert (first["count"], first["more"], len(first["agents"])) == (20, 980, 20)
        assert [a["name"] for a in first["agents"]] == names[:20]
        raw = await c.call_tool("list_agents", {})
        assert result_bytes(raw) < 10_000
        seen = [a["name"] for a in first["agents"]]
        async with anyio.create_task_group() as tg:
            tg.start_soon(create_more)
            page = first
            while page["next_cursor"] is not None:
                page = await ok(c, "list_agents", limit=37, cursor=page["next_cursor"])
                assert page["count"] == len(page["agents"]) <= 37
                seen += [a["name"] for a in page["agents"]]
        assert page["more"] == 0
    counts = Counter(seen)
    assert [name for name, n in counts.items() if n > 1] == []
    assert set(names) <= set(seen)
    assert set(seen) - set(names) <= set(created)
    assert seen == sorted(seen, key=str.lower)
    assert any(name.startswith("zz_") for name in seen)  # created after the cursor passed: shown once


async def test_every_list_tool_pages_over_mcp(server: LettaServer, mode: str, hub: AgentHub) -> None:
    await hub.create_agent("r")
    await hub.append_messages("r", [NewMessage(role="user", content=f"note {i} on the door") for i in range(5)])
    for i in range(5):
        await hub.archival_insert("r", f"the door code {i}")
        await hub.append_to_block("persona", f"line {i}", agent="r")
    calls = {
        "list_blocks": {},
        "block_history": {"block": "persona", "agent": "r"},
        "get_messages": {"agent": "r"},
        "archival_memory_list": {"agent": "r"},
        "archival_memory_search": {"agent": "r", "query": "door"},
        "conversation_search": {"agent": "r", "query": "door"},
        "list_runs": {},
    }
    fields = {
        "list_blocks": "blocks", "block_history": "changes", "get_messages": "messages",
        "archival_memory_list": "passages", "archival_memory_search": "passages", "conversation_search": "messages",
        "list_runs": "runs",
    }  # fmt: skip
    async with client(server, mode) as c:
        for tool, args in calls.items():
            whole = await ok(c, tool, **args, limit=100)
            items, page = [], await ok(c, tool, **args, limit=2)
            while True:
                assert page["count"] == len(page[fields[tool]])
                # get_messages pages back in time, each page oldest first
                items = page[fields[tool]] + items if tool == "get_messages" else items + page[fields[tool]]
                if page["next_cursor"] is None:
                    break
                page = await ok(c, tool, **args, limit=2, cursor=page["next_cursor"])
            assert items == whole[fields[tool]] and whole["more"] == 0, tool
        failed = await c.call_tool("get_messages", {"agent": "r", "cursor": "garbage"})
        assert failed.is_error and "is not a cursor from this listing" in failed.content[0].text


async def test_metrics_list_the_slowest_and_count_the_rest(llm_hub: AgentHub) -> None:
    await create_agents(llm_hub, ["one", "two", "three"])
    for name in ["one", "two", "three"]:
        await llm_hub.send_message(name, "hello", wait_s=30)
    everything = await llm_hub.get_metrics()
    top = await llm_hub.get_metrics(limit=1)
    assert (len(everything.agents), everything.more_agents, everything.more_pairs) == (3, 0, 0)
    assert top.agents == everything.agents[:1] and top.pairs == everything.pairs[:1]
    assert (top.more_agents, top.more_pairs) == (2, 2)
    with pytest.raises(Invalid, match="limit must be between 1 and 1000"):
        await llm_hub.get_metrics(limit=0)

"""AgentHub over a real SQLite file: blocks, compare-and-set, limits, agents, archival and recall memory."""

from __future__ import annotations

import re
import sqlite3
import sys
import textwrap
import uuid
from pathlib import Path

import anyio
import pytest
from conftest import bump_schema, dump

from mcp_letta import (
    AgentHub,
    Conflict,
    Invalid,
    LimitExceeded,
    NotFound,
    Settings,
    StorageUnavailable,
    VersionConflict,
)
from mcp_letta.models import NewMessage
from mcp_letta.store import latest_schema_version as sqlite_schema_version
from mcp_letta.store.postgres.db import latest_schema_version as pg_schema_version

pytestmark = pytest.mark.anyio


async def test_stale_compare_and_set_write_fails_and_reports_current_version(hub: AgentHub) -> None:
    block = await hub.create_block("plan", "v1")
    await hub.write_block("plan", "v2 by someone else", expected_version=block.version)
    with pytest.raises(VersionConflict) as caught:
        await hub.write_block("plan", "my stale edit", expected_version=block.version)
    assert caught.value.current_version == 2
    assert caught.value.current_value == "v2 by someone else"
    assert "version 2" in str(caught.value) and "read it again" in str(caught.value)
    assert (await hub.read_block("plan")).value == "v2 by someone else"


async def test_every_write_bumps_version_and_keeps_history(hub: AgentHub) -> None:
    await hub.create_block("notes", "a")
    await hub.append_to_block("notes", "b", writer="alice")
    await hub.replace_in_block("notes", "b", "c", writer="bob")
    final = await hub.write_block("notes", "z")
    assert final.version == 4
    history = await hub.block_history("notes")
    assert [(h.version, h.op, h.writer, h.old_value, h.new_value) for h in history] == [
        (4, "write", "api", "a\nc", "z"),
        (3, "replace", "bob", "a\nb", "a\nc"),
        (2, "append", "alice", "a", "a\nb"),
        (1, "create", "api", None, "a"),
    ]


async def test_edit_past_the_limit_changes_nothing(hub: AgentHub, db_path: Path) -> None:
    await hub.create_block("small", "x" * 4990, limit=5000)
    before = dump(db_path)
    with pytest.raises(LimitExceeded) as caught:
        await hub.append_to_block("small", "y" * 219)
    assert "Edit failed: Exceeds 5000 character limit (requested 5210)" in str(caught.value)
    assert dump(db_path) == before
    with pytest.raises(LimitExceeded):
        await hub.create_block("big", "x" * 11, limit=10)
    assert dump(db_path) == before


async def test_replace_requires_the_text_to_occur_and_be_unique(hub: AgentHub) -> None:
    await hub.create_block("todo", "buy milk\nbuy eggs")
    with pytest.raises(Invalid, match="does not occur"):
        await hub.replace_in_block("todo", "bread", "rice")
    with pytest.raises(Invalid, match="occurs 2 times"):
        await hub.replace_in_block("todo", "buy", "get")
    done = await hub.replace_in_block("todo", "buy", "get", replace_all=True)
    assert done.value == "get milk\nget eggs"
    assert done.version == 2


async def test_a_label_is_unique_per_agent(hub: AgentHub) -> None:
    await hub.create_agent("alice")
    other_persona = await hub.create_block("persona", "someone else")
    with pytest.raises(Conflict, match="already has a block labelled 'persona'"):
        await hub.attach_block("alice", other_persona.id)
    again = await hub.create_block("team", "shared")
    await hub.attach_block("alice", "team")
    assert (await hub.attach_block("alice", again.id)).agents == ["alice"]  # attaching twice is a no-op


async def test_shared_block_edit_is_seen_by_every_agent(hub: AgentHub) -> None:
    team = await hub.create_block("team", "Team notes.", description="Shared team notes")
    await hub.create_agent("alice", shared_blocks=["team"])
    await hub.create_agent("bob", shared_blocks=[team.id])
    await hub.append_to_block("team", "Alice was here", agent="alice")
    assert "Alice was here" in await hub.core_memory("bob")
    detached = await hub.detach_block("bob", "team")
    assert detached.agents == ["alice"]
    assert "Alice was here" not in await hub.core_memory("bob")
    with pytest.raises(NotFound, match="has no block"):
        await hub.detach_block("bob", team.id)


async def test_bad_references_name_near_matches(hub: AgentHub) -> None:
    await hub.create_agent("researcher")
    await hub.create_agent("writer")
    await hub.create_block("project_memory", "")
    with pytest.raises(NotFound, match="did you mean 'researcher'"):
        await hub.get_agent("reserch")
    with pytest.raises(NotFound, match="did you mean 'project_memory'"):
        await hub.read_block("project_memroy")
    with pytest.raises(Invalid, match="matches 2 blocks") as persona:
        await hub.read_block("persona")
    assert "delete the copy" not in str(persona.value)  # (each is some agent's own)
    assert (await hub.read_block("persona", agent="writer")).agents == ["writer"]
    await hub.create_block("team", "first", attach_to=["writer"])
    copy = await hub.create_block("team", "made again by a script run twice")
    with pytest.raises(Invalid, match="matches 2 blocks") as team:
        await hub.read_block("team")
    assert str(team.value).endswith(f"(or delete the copy no agent uses: delete_block {copy.id})")


async def test_agent_names_are_unique_and_tool_safe(hub: AgentHub, db_path: Path) -> None:
    await hub.create_agent("alice")
    before = dump(db_path)
    with pytest.raises(Conflict, match="already exists"):
        await hub.create_agent("Alice")
    for bad in ["", "has space", "dots.are.bad", "x" * 65, "ünïcode"]:
        with pytest.raises(Invalid, match="not allowed"):
            await hub.create_agent(bad)
    with pytest.raises(NotFound):  # a missing shared block aborts the whole create
        await hub.create_agent("bob", shared_blocks=["nope"])
    assert dump(db_path) == before


async def test_list_agents_by_tags_and_text(hub: AgentHub) -> None:
    await hub.create_agent("a1", tags=["worker", "eu"], description="writes reports")
    await hub.create_agent("a2", tags=["worker"])
    await hub.create_agent("a3", tags=["boss"])
    names = lambda agents: [a.name for a in agents]  # noqa: E731
    assert names(await hub.list_agents(tags=["worker", "eu"], match_all_tags=True)) == ["a1"]
    assert names(await hub.list_agents(tags=["eu", "boss"])) == ["a1", "a3"]
    assert names(await hub.list_agents(query="reports")) == ["a1"]
    assert names(await hub.list_agents()) == ["a1", "a2", "a3"]


async def test_update_and_delete_agent_keeps_shared_blocks(hub: AgentHub) -> None:
    await hub.create_block("team", "shared")
    await hub.create_agent("alice", persona="I am Alice", shared_blocks=["team"])
    updated = await hub.update_agent("alice", name="alice2", tags=["x"], model_settings={"model": "m1"})
    assert (updated.name, updated.tags, updated.model_settings.model) == ("alice2", ["x"], "m1")
    await hub.archival_insert("alice2", "remember this")
    await hub.delete_agent("alice2")
    assert [b.label for b in await hub.list_blocks()] == ["team"]
    with pytest.raises(NotFound):
        await hub.get_agent("alice2")


async def test_a_shared_block_labelled_human_or_persona_takes_the_default_ones_place(hub: AgentHub) -> None:
    # Letta's way to give agents one person's block: create it, then pass it in block_ids (a 409 before).
    sam = await hub.create_block("human", "Name: Sam")
    agent = await hub.create_agent("helper", shared_blocks=[sam.id])
    assert [(b.label, b.value) for b in agent.blocks] == [("human", "Name: Sam"), ("persona", "")]
    with pytest.raises(Invalid, match="human is given twice, as human= and as a block: give it once"):
        await hub.create_agent("other", human="Kim", shared_blocks=[sam.id])


async def test_updating_model_settings_changes_the_ones_given(hub: AgentHub) -> None:
    await hub.create_agent("alice", model_settings={"model": "m1", "temperature": 0.2, "context_window": 8000})
    warmer = await hub.update_agent("alice", model_settings={"temperature": 0.5})  # (it dropped the model)
    assert (warmer.model_settings.model, warmer.model_settings.temperature) == ("m1", 0.5)
    assert warmer.model_settings.context_window == 8000
    cleared = await hub.update_agent("alice", model_settings={"model": None})  # None, given, clears one
    assert (cleared.model_settings.model, cleared.model_settings.temperature) == (None, 0.5)
    assert (await hub.get_agent("alice")).model_settings == cleared.model_settings


async def test_the_default_system_prompt_names_the_agent_and_follows_a_rename(hub: AgentHub) -> None:
    # Each agent's prompt differs from its first words (a llama.cpp server then keeps each agent on its own
    # slot); a prompt the caller wrote is theirs and a rename leaves it alone.
    await hub.create_agent("alice")
    await hub.create_agent("bob", system="You answer in haiku.")
    alice = await hub.get_agent("alice")
    assert alice.system.startswith("You are 'alice', a helpful agent with persistent memory.")
    renamed = await hub.update_agent("alice", name="alice2")
    assert renamed.system == alice.system.replace("'alice'", "'alice2'", 1)
    assert (await hub.update_agent("bob", name="robert")).system == "You answer in haiku."
    kept = await hub.update_agent("alice2", system="Custom.")
    assert (await hub.update_agent(kept.id, name="alice3")).system == "Custom."


async def test_archival_search_ranks_by_bm25_and_filters_tags(hub: AgentHub) -> None:
    await hub.create_agent("r")
    await hub.archival_insert("r", "The cat sat on the mat", tags=["pets"])
    await hub.archival_insert("r", "Dogs bark at cats", tags=["pets", "noise"])
    await hub.archival_insert("r", "Quarterly revenue grew", tags=["finance"])
    for i in range(20):
        await hub.archival_insert("r", f"unrelated filler passage number {i}")
    best = await hub.archival_search("r", "cat on a mat")
    assert best[0].text == "The cat sat on the mat"
    assert {p.text for p in best} == {"The cat sat on the mat", "Dogs bark at cats"}
    assert [p.text for p in await hub.archival_search("r", "cats", tags=["noise"])] == ["Dogs bark at cats"]
    assert (await hub.archival_search("r", "cats", tags=["pets", "finance"], tag_match="all")).items == []
    assert len(await hub.archival_search("r", "filler", limit=3)) == 3
    with pytest.raises(Invalid, match="no words"):
        await hub.archival_search("r", "  ?!  ")
    with pytest.raises(Invalid, match="limit"):
        await hub.archival_search("r", "cat", limit=-1)


async def test_archival_search_sees_only_the_agents_own_passages_among_many_others(hub: AgentHub) -> None:
    await hub.create_agent("small")
    await hub.create_agent("big")
    for i in range(60):  # most matches are another agent's
        await hub.archival_insert("big", f"release plan note {i} for the launch", tags=["plan", "big"][: 1 + i % 2])
    mine = {}
    for i in range(7):
        tags = [["plan"], ["plan", "ops"], []][i % 3]
        mine[f"release plan {i} of the small agent" + " launch" * (i % 2)] = tags
        await hub.archival_insert("small", list(mine)[-1], tags=tags)
    first = await hub.archival_search("small", "release launch", limit=3)
    assert first.more == 4
    rest = await hub.archival_search("small", "release launch", limit=3, cursor=first.next_cursor)
    last = await hub.archival_search("small", "release launch", limit=3, cursor=rest.next_cursor)
    paged = [p.text for p in [*first, *rest, *last]]
    assert paged == [p.text for p in await hub.archival_search("small", "release launch", limit=100)]
    assert sorted(paged) == sorted(mine) and (rest.more, last.more, last.next_cursor) == (1, 0, None)
    assert set(paged[:3]) == {t for t in mine if t.endswith("launch")}  # both words rank first
    tagged = await hub.archival_search("small", "release", tags=["ops", "plan"], tag_match="all", limit=100)
    assert sorted(p.text for p in tagged) == sorted(t for t, tags in mine.items() if {"ops", "plan"} <= set(tags))
    anyone = await hub.archival_search("small", "release", tags=["ops", "big"], limit=100)
    assert sorted(p.text for p in anyone) == sorted(t for t, tags in mine.items() if "ops" in tags)
    small_id = (await hub.get_agent("small")).id
    assert {p.agent_id for p in [*first, *rest, *last, *tagged, *anyone]} == {small_id}


async def test_memory_rendering_matches_letta(hub: AgentHub) -> None:
    await hub.create_block("team", "Team notes.", limit=200, description="Shared team notes", read_only=True)
    agent = await hub.create_agent("alice", persona="I am Alice", shared_blocks=["team"])
    await hub.archival_insert("alice", "fact one", tags=["b", "a"])
    memory = await hub.core_memory("alice")
    expected_blocks = textwrap.dedent(
        """\
        <memory_blocks>
        The following memory blocks are currently engaged in your core memory unit:

        <team>
        <description>
        Shared team notes
        </description>
        <metadata>
        - read_only=true
        - chars_current=11
        - chars_limit=200
        </metadata>
        <value>
        Team notes.
        </value>
        </team>

        <persona>
        """
    )
    assert memory.startswith(expected_blocks)
    assert "<human>\n<description>\nThe human block: Stores key details" in memory
    assert memory.split("</memory_blocks>")[1].startswith("\n\n<memory_metadata>\n")
    assert f"- AGENT_ID: {agent.id}\n- CONVERSATION_ID: default\n- System prompt last recompiled: " in memory
    assert "- 0 previous messages between you and the user are stored in recall memory\n" in memory
    assert "- 1 total memories you created are stored in archival memory (use tools to access them)" in memory
    assert memory.endswith("- Available archival memory tags: a, b\n</memory_metadata>")
    system = await hub.system_prompt("alice")
    assert system.startswith(agent.system + "\n\n<memory_blocks>\n")
    assert system.endswith("</memory_metadata>")


async def test_memory_lists_each_archival_tag_of_the_agent_once_in_order(hub: AgentHub) -> None:
    await hub.create_agent("alice")
    await hub.create_agent("bob")
    await hub.create_agent("carol")
    zetas = []
    for i in range(30):
        tags = [["zeta", "alpha"], ["mid"], ["alpha"], []][i % 4]
        passage = await hub.archival_insert("alice", f"fact {i}", tags=tags)
        if "zeta" in tags:
            zetas.append(passage.id)
    await hub.archival_insert("bob", "bob's fact", tags=["bob-only", "alpha"])
    await hub.archival_insert("carol", "carol's untagged fact")
    assert (await hub.core_memory("alice")).endswith(
        "- Available archival memory tags: alpha, mid, zeta\n</memory_metadata>"
    )
    assert (await hub.core_memory("bob")).endswith(
        "- Available archival memory tags: alpha, bob-only\n</memory_metadata>"
    )
    assert "archival memory tags" not in await hub.core_memory("carol")
    for passage_id in zetas:
        await hub.archival_delete("alice", passage_id)
    assert (await hub.core_memory("alice")).endswith("- Available archival memory tags: alpha, mid\n</memory_metadata>")


def archival_count_shown(memory: str) -> int:
    """The archival count a prompt's memory metadata states (it leaves the line out for none)."""
    assert "</memory_metadata>" in memory
    found = re.search(r"- (\d+) total memories you created are stored in archival memory", memory)
    return int(found.group(1)) if found else 0


async def test_the_archival_count_follows_inserts_deletes_and_concurrent_writers(hub: AgentHub) -> None:
    await hub.create_agent("counted")
    await hub.create_agent("bystander")
    assert archival_count_shown(await hub.core_memory("counted")) == 0

    async with anyio.create_task_group() as tg:
        for i in range(40):
            tg.start_soon(hub.archival_insert, "counted" if i % 4 else "bystander", f"fact {i}")
    assert archival_count_shown(await hub.core_memory("counted")) == 30
    assert archival_count_shown(await hub.core_memory("bystander")) == 10

    listed = await hub.archival_list("counted", limit=5)
    for passage in listed:
        await hub.archival_delete("counted", passage.id)
    with pytest.raises(NotFound):  # a failed delete changes nothing
        await hub.archival_delete("counted", listed[0].id)
    assert archival_count_shown(await hub.core_memory("counted")) == 25
    assert listed.more == 25

    await hub.delete_agent("counted")  # a new agent of the same name starts from nothing
    await hub.create_agent("counted")
    assert archival_count_shown(await hub.core_memory("counted")) == 0
    await hub.archival_insert("counted", "a fresh start")
    assert archival_count_shown(await hub.core_memory("counted")) == 1
    assert archival_count_shown(await hub.core_memory("bystander")) == 10


async def test_a_bulk_load_stores_every_passage_searchable_and_counted_or_none(hub: AgentHub) -> None:
    agent_id = (await hub.create_agent("loaded")).id
    await hub.archival_insert("loaded", "written one by one first", tags=["single"])
    batch = [(f"bulk passage {i} about the harbour", ["bulk", f"group-{i % 3}"][: 1 + i % 2]) for i in range(50)]
    stored = await hub._store.write(lambda tx: tx.insert_passages(agent_id, batch))
    assert stored == 50
    assert archival_count_shown(await hub.core_memory("loaded")) == 51
    assert "tags: bulk, group-0, group-1, group-2, single" in await hub.core_memory("loaded")
    newest_first = [p.text for p in await hub.archival_list("loaded", limit=100)]
    assert newest_first == [text for text, _ in reversed(batch)] + ["written one by one first"]
    found = await hub.archival_search("loaded", "harbour", tags=["group-1"], limit=100)
    assert sorted(p.text for p in found) == sorted(text for text, tags in batch if "group-1" in tags)

    bad = [("fine", []), ("   ", []), ("also fine", [])]
    with pytest.raises(Invalid, match="archival passage text is empty"):
        await hub._store.write(lambda tx: tx.insert_passages(agent_id, bad))
    assert archival_count_shown(await hub.core_memory("loaded")) == 51
    assert len(await hub.archival_list("loaded", limit=100)) == 51


OLD_WHEN = "2026-01-01T00:00:00+00:00"


def older_file(path: Path | str, schema: int, agents: list[str]) -> sqlite3.Connection:
    """A SQLite file as mcp-letta at ``schema`` made it (its migrations applied by hand), holding ``agents`` (ids;
    each named as its id with ``_`` for ``-``); the open connection, for the test to add rows, commit and close."""
    migrations = Path(__file__).parent.parent / "mcp_letta" / "store" / "sqlite" / "migrations"
    old = sqlite3.connect(path)
    for script in sorted(migrations.glob("*.sql"))[:schema]:
        old.executescript(script.read_text())
    for agent in agents:
        old.execute("INSERT INTO agents(id, name, system, created_at, updated_at) VALUES (?, ?, 'sys', ?, ?)",
                    (agent, agent.replace("-", "_"), OLD_WHEN, OLD_WHEN))  # fmt: skip
    old.execute(f"PRAGMA user_version = {schema}")
    return old


@pytest.mark.sqlite_only  # upgrades a SQLite file made by an older schema
async def test_an_older_file_gets_its_archival_counts_on_upgrade(settings: Settings) -> None:
    counts = {"agent-a": 3, "agent-b": 0, "agent-c": 2}
    old = older_file(settings.db_path, 6, list(counts))
    for agent, passages in counts.items():
        for i in range(passages):
            old.execute("INSERT INTO passages(id, agent_id, text, created_at) VALUES (?, ?, ?, ?)",
                        (f"passage-{agent}-{i}", agent, f"old fact {i}", OLD_WHEN))  # fmt: skip
    old.commit()
    old.close()

    async with AgentHub(settings) as hub:
        shown = [archival_count_shown(await hub.core_memory(name)) for name in ("agent_a", "agent_b", "agent_c")]
        assert shown == [3, 0, 2]
        await hub.archival_insert("agent_b", "new fact")
        assert archival_count_shown(await hub.core_memory("agent_b")) == 1


@pytest.mark.sqlite_only  # upgrades a SQLite file made by an older schema
async def test_an_older_files_messages_stay_searchable_per_agent_after_the_index_is_rebuilt(settings: Settings) -> None:
    said = {"agent-a": ["the launch moved to May", "budget is fine"], "agent-b": ["the launch is on hold"]}
    old = older_file(settings.db_path, 7, list(said))
    for agent, contents in said.items():
        for content in contents:
            old.execute("INSERT INTO messages(id, agent_id, role, content, created_at) VALUES (?, ?, 'user', ?, ?)",
                        (f"message-{uuid.uuid4()}", agent, content, OLD_WHEN))  # fmt: skip
    # As the schema-7 code indexed them: the content alone, just before the commit.
    old.execute("INSERT INTO messages_fts(rowid, content) SELECT seq, content FROM messages")
    old.execute("UPDATE search_progress SET indexed_through = (SELECT max(seq) FROM messages)")
    old.commit()
    old.close()

    async with AgentHub(settings) as hub:
        assert [m.content for m in await hub.search_messages("agent_a", "launch")] == ["the launch moved to May"]
        assert [m.content for m in await hub.search_messages("agent_b", "launch")] == ["the launch is on hold"]
        assert [m.content for m in await hub.search_messages("agent_a", "agent")] == []  # ids are not content
        await hub.append_messages("agent_b", [NewMessage(role="user", content="the launch budget doubled")])
        found = await hub.search_messages("agent_b", "launch budget")
        assert [m.content for m in found] == ["the launch budget doubled", "the launch is on hold"]
        await hub.delete_agent("agent_a")  # its messages leave the index with it
        assert [m.content for m in await hub.search_messages("agent_b", "budget")] == ["the launch budget doubled"]
    checked = sqlite3.connect(settings.db_path)
    try:  # the index agrees with the messages, row by row (raises if not)
        checked.execute("INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 1)")
    finally:
        checked.close()


async def test_messages_are_stored_and_searchable(hub: AgentHub) -> None:
    await hub.create_agent("a")
    await hub.append_messages(
        "a",
        [
            NewMessage(role="user", content="I love hiking in the Alps"),
            NewMessage(role="assistant", content="Hiking sounds great"),
            NewMessage(role="user", content="My cat is called Tom"),
        ],
    )
    recent = await hub.get_messages("a", limit=2)
    assert [m.content for m in recent] == ["Hiking sounds great", "My cat is called Tom"]
    found = await hub.search_messages("a", "hiking", roles=["user"])
    assert [m.content for m in found] == ["I love hiking in the Alps"]
    assert len(await hub.search_messages("a", limit=10)) == 3


APPENDER = """
import sys, anyio
from mcp_letta import AgentHub, Settings

async def main(db, proc):
    async with AgentHub(Settings(db_path=db)) as hub:
        async with anyio.create_task_group() as tg:
            for i in range(250):
                tg.start_soon(hub.append_to_block, "shared", f"p{proc}-{i}")

anyio.run(main, sys.argv[1], sys.argv[2])
"""


async def test_concurrent_appends_from_four_processes_lose_nothing(hub: AgentHub, db_path: Path) -> None:
    await hub.create_block("shared", "", limit=100_000)
    results: list[int] = []

    async def run(proc: int) -> None:
        done = await anyio.run_process([sys.executable, "-c", APPENDER, str(db_path), str(proc)], check=False)
        results.append(done.returncode)

    async with anyio.create_task_group() as tg:
        for proc in range(4):
            tg.start_soon(run, proc)
    assert results == [0, 0, 0, 0]
    block = await hub.read_block("shared")
    lines = block.value.split("\n")
    assert len(lines) == 1000
    assert set(lines) == {f"p{p}-{i}" for p in range(4) for i in range(250)}
    assert block.version == 1001
    versions = [h.version for h in await hub.block_history("shared", limit=1000)]
    assert sorted(versions) == list(range(2, 1002))


async def test_changes_made_by_another_process_reach_the_change_feed(hub: AgentHub, db_path: Path) -> None:
    block = await hub.create_block("feed", "")
    changes = hub.subscribe_changes()
    script = (
        "import anyio, sys\nfrom mcp_letta import AgentHub, Settings\n"
        "async def main():\n    async with AgentHub(Settings(db_path=sys.argv[1])) as h:\n"
        "        await h.append_to_block('feed', 'from afar')\nanyio.run(main)\n"
    )
    done = await anyio.run_process([sys.executable, "-c", script, str(db_path)], check=False)
    assert done.returncode == 0
    with anyio.fail_after(10):
        async for change in changes:
            if change.kind == "block" and change.ref == block.id and not change.local:
                break


async def test_a_reopened_database_keeps_everything(settings: Settings) -> None:
    async with AgentHub(settings) as first:
        await first.create_agent("keeper", persona="persistent")
        await first.archival_insert("keeper", "long term fact")
    async with AgentHub(settings) as second:
        assert (await second.read_block("persona", agent="keeper")).value == "persistent"
        assert (await second.archival_search("keeper", "fact"))[0].text == "long term fact"


async def test_a_process_stops_using_a_database_a_newer_mcp_letta_migrates_under_it(
    llm_settings: Settings, db_path: Path | str
) -> None:
    # A rolling upgrade: a newer mcp-letta starts on the same database and migrates it while this one runs.
    postgres = isinstance(db_path, str)
    latest = (pg_schema_version if postgres else sqlite_schema_version)()
    async with AgentHub(llm_settings) as hub:
        await hub.create_block("log", "")
        newer = latest + 1
        bump_schema(db_path, +1)
        with anyio.fail_after(60):  # within a few seconds, at the first write that checks
            while True:
                try:
                    await hub.append_to_block("log", "written")
                except StorageUnavailable as exc:
                    refused = exc
                    break
                await anyio.sleep(0.1)
        where = str(db_path)
        upgrade = "pip install -U 'mcp-letta[postgres]' on every replica" if postgres else "pip install -U mcp-letta"
        assert (refused.reason, str(refused)) == ("newer_schema", (
            f"{where} was migrated to schema version {newer} by a newer mcp-letta while this one (which knows "
            f"versions up to {latest}) had it open: upgrade mcp-letta ({upgrade}) and restart this server; it no "
            "longer reads or writes the database"))  # fmt: skip
        before = dump(db_path)
        for attempt in (
            hub.create_agent("bob"), hub.send_message("log", "hello", wait_s=5), hub.append_to_block("log", "x"),
            hub.read_block("log"), hub.count_agents(),
        ):  # fmt: skip
            with pytest.raises(StorageUnavailable) as again:
                await attempt
            assert str(again.value) == str(refused)
        assert hub._store.refusal is not None
    assert dump(db_path) == before  # nothing was written, the hand-back at close included


@pytest.mark.sqlite_only  # upgrades a SQLite file made by an older schema
async def test_message_search_covers_old_new_batched_and_deleted_messages(settings: Settings) -> None:
    # A file made before messages were indexed per transaction (schema 3, indexed by a trigger per row).
    migrations = Path(__file__).parent.parent / "mcp_letta" / "store" / "sqlite" / "migrations"
    old = sqlite3.connect(settings.db_path)
    for name in ("001_init.sql", "002_runs.sql", "003_multiagent.sql"):
        old.executescript((migrations / name).read_text())
    when = "2026-01-01T00:00:00+00:00"
    old.execute("INSERT INTO agents(id, name, system, created_at, updated_at) "
                "VALUES ('agent-old', 'veteran', 'sys', ?, ?)",
                (when, when))  # fmt: skip
    old.execute("INSERT INTO messages(id, agent_id, role, content, created_at) "
                "VALUES ('message-old', 'agent-old', 'user', 'the old lighthouse keeper', ?)", (when,))  # fmt: skip
    old.execute("PRAGMA user_version = 3")
    old.commit()
    old.close()

    async with AgentHub(settings) as hub:
        assert [m.content for m in await hub.search_messages("veteran", "lighthouse")] == ["the old lighthouse keeper"]
        await hub.create_agent("newcomer")
        await hub.append_messages("veteran", [NewMessage(role="user", content="a new lighthouse lamp")])

        # Many writers at once: the store's group commit puts each in a savepoint of one transaction.
        newcomer_id = (await hub.get_agent("newcomer")).id

        async def beacon(i: int) -> None:
            agent_id = "agent-old" if i % 2 else newcomer_id
            beacon = [NewMessage(role="user", content=f"beacon number {i}")]
            await hub._store.write(lambda tx: tx.append_messages(agent_id, beacon))

        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(beacon, i)
        assert len(await hub.search_messages("veteran", "beacon", limit=50)) == 20
        assert len(await hub.search_messages("newcomer", "beacon", limit=50)) == 20
        assert len(await hub.search_messages("veteran", "lighthouse", limit=50)) == 2

        await hub.delete_agent("veteran")  # its messages leave the index with it
        # FTS5 compares its index with the messages table and raises if they disagree.
        await hub._store.db.write(
            lambda c: c.execute("INSERT INTO messages_fts(messages_fts) VALUES ('integrity-check')")
        )
    check = sqlite3.connect(settings.db_path)
    hits = check.execute("SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'beacon'").fetchone()[0]
    check.close()
    assert hits == 20


async def test_ids_are_letta_shaped_and_runs_and_messages_sort_by_creation(hub: AgentHub) -> None:
    agent = await hub.create_agent("a")
    block_id = (await hub.list_blocks(agent="a"))[0].id
    added = await hub.append_messages("a", [NewMessage(role="user", content=f"note {i}") for i in range(50)])
    for value, kind, version in ((agent.id, "agent", 4), (block_id, "block", 4), (added[0].id, "message", 7)):
        prefix, _, rest = value.partition("-")
        assert prefix == kind and uuid.UUID(rest).version == version, value
    # Time-ordered: new rows land at the end of the id index (see db.new_ordered_id), in creation order.
    assert [m.id for m in added] == sorted(m.id for m in added)

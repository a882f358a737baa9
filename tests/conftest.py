"""Shared fixtures: a real temporary SQLite file, an open AgentHub, the anyio backend, and an AgentHub
whose agents talk to the real loopback ``ScriptedLLM`` (``llm_hub``), with a ``gate`` to hold its answers.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest_llm import scripted_llm  # noqa: F401  (the fixture, shared with every test module)
from mcp import Client
from pg_server import PgServer

from mcp_letta import AgentHub, Run, Settings
from mcp_letta.server.app import LettaServer, build_server
from mcp_letta.testing import Response, ScriptedLLM


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- engines: every test that uses the database runs on SQLite, and (in PG_MODULES) on PostgreSQL too -----
PG_MODULES = {
    "test_store", "test_runtime", "test_multiagent", "test_multiagent_broadcast", "test_multiagent_commits",
    "test_multiagent_safety", "test_run_recovery", "test_run_scheduling", "test_run_tools", "test_notify",
    "test_agent_tools", "test_mcp_multiagent", "test_mcp_server", "test_postgres", "test_replicas", "test_paging",
    "test_hostile_input", "test_arguments", "test_rest", "test_run_resume", "test_context_window", "test_http",
    "test_http_sessions", "test_console", "test_apps", "test_host_sampling", "test_server_json", "test_stdio",
    "test_faults_wire", "test_examples",
}  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sqlite_only: the test reads or writes the SQLite file itself")
    config.addinivalue_line("markers", "postgres_only: the test is about the PostgreSQL engine")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "engine" not in metafunc.fixturenames:
        return
    engines = ["sqlite"]
    if metafunc.module.__name__.rsplit(".", 1)[-1] in PG_MODULES and not metafunc.definition.get_closest_marker(
        "sqlite_only"
    ):
        engines.append("postgres")
    if metafunc.definition.get_closest_marker("postgres_only"):
        engines = ["postgres"]
    metafunc.parametrize("engine", engines, indirect=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the whole run, with a migrated template database."""
    server = PgServer().start()
    try:
        server.prepare_template()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    """'sqlite' or 'postgres': which engine this run of the test uses."""
    return str(request.param)


@pytest.fixture
def db_path(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path | str]:
    """The database target: a SQLite file path, or the URL of a fresh PostgreSQL database."""
    if engine == "sqlite":
        yield tmp_path / "agents.db"
        return
    server: PgServer = request.getfixturevalue("pg_server")
    url = server.fresh_database()
    try:
        yield url
    finally:
        server.drop(url)


@pytest.fixture
def settings(db_path: Path) -> Settings:
    return Settings(db_path=db_path, watch_interval_s=0.05)


@pytest.fixture
async def hub(settings: Settings) -> AsyncIterator[AgentHub]:
    async with AgentHub(settings) as opened:
        yield opened


@pytest.fixture
def llm_settings(settings: Settings, scripted_llm: ScriptedLLM) -> Settings:  # noqa: F811
    """Settings whose LLM is the scripted loopback server (one quick retry)."""
    return settings.with_overrides(llm_base_url=scripted_llm.base_url, model="scripted-model", llm_max_retries=1)


@pytest.fixture
async def llm_hub(llm_settings: Settings) -> AsyncIterator[AgentHub]:
    """An open hub whose agents call the scripted LLM."""
    async with AgentHub(llm_settings) as opened:
        yield opened


class Gate:
    """Holds every unscripted answer of the scripted LLM until ``open()``: the test decides when a slow call ends.

    While closed it blocks the server's event loop, so use it with one LLM call in flight at a time.
    """

    def __init__(self, llm: ScriptedLLM, text: str) -> None:
        self.text = text
        self._opened = threading.Event()
        llm.default = self._answer

    def _answer(self, _request: dict[str, Any]) -> Response:
        self._opened.wait(timeout=30)  # a safety net: a forgotten gate must not hang the suite
        return Response(content=self.text)

    def open(self) -> None:
        """Let held and future calls answer."""
        self._opened.set()


@pytest.fixture
def gate(scripted_llm: ScriptedLLM) -> Iterator[Gate]:  # noqa: F811
    """A closed ``Gate`` answering "released" once opened (opened at teardown in any case)."""
    held = Gate(scripted_llm, "released")
    try:
        yield held
    finally:
        held.open()


# Bookkeeping that moves on its own: the process heartbeat (every few seconds) and the change log's pruning.
CLOCKWORK = ('INSERT INTO "processes"', 'INSERT INTO "changes"', "INSERT INTO \"sqlite_sequence\" VALUES('changes'")


PG_TABLES = ("agents", "agent_tags", "blocks", "agent_blocks", "block_history", "passages", "passage_tags",
             "messages", "runs", "run_steps", "agent_tools")  # fmt: skip


def dump(path: Path | str) -> list[str]:
    """The whole database as text, to compare before and after (bookkeeping left out)."""
    if isinstance(path, str):  # PostgreSQL: every row of every table but the bookkeeping ones
        import psycopg

        with psycopg.connect(path) as pg:
            return [f"{table}: {row!r}" for table in PG_TABLES
                    for row in pg.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()]  # fmt: skip
    conn = sqlite3.connect(path)
    try:
        return [line for line in conn.iterdump() if not line.startswith(CLOCKWORK)]
    finally:
        conn.close()


def execute_sql(target: Path | str, *statements_and_params: Any) -> None:
    """Run statements (``?`` placeholders, each followed by its parameters) in one transaction on either
    engine's database: for tests that plant what another process would have left."""
    pairs = list(zip(statements_and_params[::2], statements_and_params[1::2], strict=True))
    if isinstance(target, str):
        import psycopg

        with psycopg.connect(target) as pg, pg.transaction():
            for statement, params in pairs:
                pg.execute(statement.replace("?", "%s"), params)
        return
    conn = sqlite3.connect(target)
    with conn:
        for statement, params in pairs:
            conn.execute(statement, params)
    conn.close()


def fetch_sql(target: Path | str, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """The rows of one query (``?`` placeholders) on either engine's database, read outside any server."""
    if isinstance(target, str):
        import psycopg

        with psycopg.connect(target) as pg:
            return pg.execute(statement.replace("?", "%s"), params).fetchall()
    conn = sqlite3.connect(target)
    try:
        return conn.execute(statement, params).fetchall()
    finally:
        conn.close()


def bump_schema(db_path: Path | str, by: int) -> None:
    """Move the database's schema version, as a newer mcp-letta's migration would (and back)."""
    if isinstance(db_path, str):
        if by > 0:
            execute_sql(db_path, "INSERT INTO mcp_letta_schema(version, applied_at) "
                        "SELECT max(version) + 1, 'newer' FROM mcp_letta_schema", ())  # fmt: skip
        else:
            execute_sql(db_path, "DELETE FROM mcp_letta_schema WHERE applied_at = 'newer'", ())
        return
    with sqlite3.connect(db_path) as conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        conn.execute(f"PRAGMA user_version = {version + by}")


# -- MCP: a server over a hub, and clients in both protocol eras --------------------------------------
@pytest.fixture
async def server(hub: AgentHub) -> AsyncIterator[LettaServer]:
    """The MCP server over ``hub``, with its background work running."""
    built = build_server(hub)
    async with built.running():
        yield built


@pytest.fixture
async def llm_server(llm_hub: AgentHub) -> AsyncIterator[LettaServer]:
    """The MCP server over ``llm_hub`` (agents think with the scripted LLM)."""
    built = build_server(llm_hub)
    async with built.running():
        yield built


@pytest.fixture(params=["legacy", "modern"])
def mode(request: pytest.FixtureRequest) -> str:
    """Each MCP test runs in both eras: the 2025-11-25 handshake (hosts) and 2026-07-28 (the SDK's client)."""
    return request.param


def client(server: LettaServer, mode: str, **kwargs: Any) -> Client:
    """An in-process MCP client of ``server`` speaking the era ``mode`` names."""
    return Client(server.mcp, mode="legacy", **kwargs) if mode == "legacy" else Client(server.mcp, **kwargs)


async def ok(c: Client, tool: str, **args: Any) -> dict[str, Any]:
    """Call a tool that must succeed; its structured result."""
    result = await c.call_tool(tool, args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def most_at_once(runs: list[Run]) -> int:
    """The largest number of runs that were running at the same moment (from their recorded intervals)."""
    edges = []
    for run in runs:
        assert run.started_at and run.finished_at
        edges += [(run.started_at, 1), (run.finished_at, -1)]
    running = peak = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):  # an end before a start at the same instant
        running += step
        peak = max(peak, running)
    return peak

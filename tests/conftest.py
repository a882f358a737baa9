"""Shared fixtures: a real temporary SQLite file, an open AgentHub, the anyio backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mcp_letta import AgentHub, Settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "agents.db"


@pytest.fixture
def settings(db_path: Path) -> Settings:
    return Settings(db_path=db_path, watch_interval_s=0.05)


@pytest.fixture
async def hub(settings: Settings) -> AsyncIterator[AgentHub]:
    async with AgentHub(settings) as opened:
        yield opened

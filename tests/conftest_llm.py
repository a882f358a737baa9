"""The ``scripted_llm`` fixture: a started loopback ``ScriptedLLM`` per test.

Import it into a conftest or test module (``from conftest_llm import scripted_llm``) to use it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mcp_letta.testing import ScriptedLLM


@pytest.fixture
def scripted_llm() -> Iterator[ScriptedLLM]:
    """A running ScriptedLLM; nothing is scripted, so an unscripted request fails with HTTP 500."""
    with ScriptedLLM() as llm:
        yield llm

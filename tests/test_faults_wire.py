"""Faults on the wire: a fixed, seeded fuzz corpus (wrong types, missing and unknown arguments, 10 MB strings,
lone surrogates, JSON nested 200 deep, SQL and path metacharacters, huge numbers, NaN, lines that are not
JSON) over stdio's raw pipe and over HTTP. Every request gets an answer carrying its id, the database dump is
unchanged, and the server goes on serving.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from conftest import dump
from faults import GARBAGE, RawStdio, corpus, server_env, stdio_command

from mcp_letta import AgentHub, Settings
from mcp_letta.server.app import build_server
from mcp_letta.server.http import HttpOptions, http_app, running_app

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]

STDIO_CASES, STDIO_BIG = 250, 3
HTTP_CASES, HTTP_BIG = 150, 2


async def seed(hub: AgentHub) -> None:
    """What the corpus's valid-looking parts refer to: agent alice and block notes."""
    await hub.create_agent("alice", persona="I am Alice.")
    await hub.create_block("notes", "shared notes", attach_to=["alice"])


def seed_world(db_path: Path) -> None:
    async def make() -> None:
        async with AgentHub(Settings(db_path=db_path)) as hub:
            await seed(hub)

    anyio.run(make)


@pytest.fixture
def stdio(db_path: Path) -> Iterator[RawStdio]:
    seed_world(db_path)
    server = RawStdio(stdio_command(), server_env(db_path))
    server.handshake()
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.kill()


def failed(answer: dict[str, Any]) -> bool:
    return "error" in answer or answer.get("result", {}).get("isError") is True


def test_stdio_answers_each_unreadable_line_with_its_id_and_keeps_serving(stdio: RawStdio) -> None:
    stdio.send_lines([
        "this is not json",
        '{"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "list_agents", '
        '"arguments": {"query": "\\ud800"}}}',
        '{"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "list_agents", '
        '"arguments": {"query": ' + "[" * 200 + "]" * 200 + "}}}",
        '{"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": "str"}',
        '{"jsonrpc": "1.0", "id": "ten", "method": "ping"}',
        "[1, 2]",
    ])  # fmt: skip
    stdio.wait_for({7, 8, 9, "ten"}, nulls=2)
    errors = {key: (a["error"]["code"], a["error"]["message"]) for key, a in stdio.answers.items() if key != "init"}
    assert errors == {
        7: (-32700, "Parse error: a lone UTF-16 surrogate (\\ud800-\\udfff) is not text; send valid Unicode"),
        8: (-32700, "Parse error: JSON nested too deeply to read (at most 200 levels)"),
        9: (-32600, 'Invalid Request: "params" must be an object'),
        "ten": (-32600, 'Invalid Request: a JSON-RPC 2.0 message needs "jsonrpc": "2.0"'),
    }
    assert sorted((a["error"]["code"], a["error"]["message"]) for a in stdio.unmatched) == [
        (-32700, "Parse error: the line is not valid JSON (expected ident at line 1 column 2)"),
        (-32600, "Invalid Request: a JSON-RPC message is an object, this is a list"),
    ]
    listed = stdio.call(11, "list_agents", {})
    assert listed["result"]["isError"] is False and "alice" in json.dumps(listed["result"])
    code, stderr = stdio.close()
    assert code == 0, stderr


def test_the_fuzz_corpus_over_stdio_changes_nothing(stdio: RawStdio, db_path: Path) -> None:
    before = dump(db_path)
    stdio.send({"jsonrpc": "2.0", "id": "tools", "method": "tools/list"})
    stdio.wait_for({"tools"})
    tools = stdio.answers["tools"]["result"]["tools"]
    faults = corpus(tools, STDIO_CASES, big=STDIO_BIG)
    writer = stdio.send_in_background([f.line for f in faults] + GARBAGE)
    stdio.wait_for({f.request_id for f in faults}, nulls=len(GARBAGE))
    writer.join()
    accepted = [f.label for f in faults if not failed(stdio.answers[f.request_id])]
    assert not accepted, accepted
    assert all(a["error"]["code"] in (-32700, -32600) for a in stdio.unmatched)
    assert stdio.call("after", "list_agents", {})["result"]["isError"] is False
    assert dump(db_path) == before
    code, stderr = stdio.close()
    assert code == 0, stderr[-2000:]
    assert "Traceback" not in stderr


@pytest.mark.anyio
async def test_the_fuzz_corpus_over_http_changes_nothing(db_path: Path, anyio_backend: str) -> None:
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    async with AgentHub(Settings(db_path=db_path, llm_base_url="http://127.0.0.1:9/v1", model="m")) as hub:
        await seed(hub)
        before = dump(db_path)
        app = http_app(build_server(hub), HttpOptions(port=0))
        async with running_app(app) as port, httpx2.AsyncClient(timeout=60) as http:
            url = f"http://127.0.0.1:{port}/mcp"
            opened = await http.post(url, content=json.dumps({**INIT}), headers=headers)
            session = {**headers, "mcp-session-id": opened.headers["mcp-session-id"],
                       "mcp-protocol-version": "2025-11-25"}  # fmt: skip
            await http.post(url, content=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                            headers=session)  # fmt: skip
            listed = await http.post(url, content=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}),
                                     headers=session)  # fmt: skip
            tools = _jsonrpc(listed)["result"]["tools"]
            problems: dict[str, str] = {}
            for fault in [*corpus(tools, HTTP_CASES, big=HTTP_BIG), *GARBAGE_FAULTS]:
                response = await http.post(url, content=fault.line.encode(), headers=session)
                if response.status_code == 413:
                    continue  # bodies over 1 MiB are refused before they are read
                if response.status_code >= 500:
                    problems[fault.label] = f"HTTP {response.status_code}"
                    continue
                answer = _jsonrpc(response)
                if not failed(answer):
                    problems[fault.label] = "accepted"
                elif answer.get("id") not in (fault.request_id, None):
                    problems[fault.label] = f"answered with id {answer.get('id')}"
            assert not problems, problems
            again = await http.post(url, content=json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                    "params": {"name": "list_agents", "arguments": {}}}), headers=session)  # fmt: skip
            assert _jsonrpc(again)["result"]["isError"] is False
    assert dump(db_path) == before


INIT = {
    "jsonrpc": "2.0", "id": 0, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "faults", "version": "1"}},
}  # fmt: skip


class _Garbage:
    def __init__(self, line: str) -> None:
        self.label, self.line, self.request_id = f"garbage {line!r}", line, None


GARBAGE_FAULTS = [_Garbage(line) for line in GARBAGE]


def _jsonrpc(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC message of an HTTP answer, plain JSON or one SSE event."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
        return json.loads(next(d for d in data if d))
    return response.json()  # type: ignore[no-any-return]

"""The LLM layer end to end: ``OpenAIClient`` and ``LLMPool`` against the real loopback ``ScriptedLLM``."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import conftest_llm
import pytest

from mcp_letta.config import Settings
from mcp_letta.errors import LLMUnavailable
from mcp_letta.llm import ChatRequest, LLMPool, OpenAIClient
from mcp_letta.models import ModelSettings
from mcp_letta.testing import ScriptedLLM

pytestmark = pytest.mark.anyio
# Exposes the fixture here whether or not tests/conftest.py also does (the same function either way).
scripted_llm = conftest_llm.scripted_llm

KEY = "sk-test-very-secret-4242"
MEMORY_INSERT = {
    "type": "function",
    "function": {
        "name": "memory_insert",
        "description": "Insert text into a memory block.",
        "parameters": {
            "type": "object",
            "properties": {"label": {"type": "string"}, "new_str": {"type": "string"}},
            "required": ["label", "new_str"],
        },
    },
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def client(scripted_llm: ScriptedLLM) -> AsyncIterator[OpenAIClient]:
    llm_client = OpenAIClient(scripted_llm.base_url, KEY, timeout_s=5, max_retries=3, backoff_s=0.01)
    yield llm_client
    await llm_client.aclose()


def chat(text: str = "hello", *, tools: bool = False, system: str = "You are agent-a.") -> ChatRequest:
    return ChatRequest(
        model="test-model",
        messages=[{"role": "system", "content": system}, {"role": "user", "content": text}],
        tools=[MEMORY_INSERT] if tools else [],
    )


async def test_plain_reply_returns_text_usage_and_sends_no_tool_fields(
    scripted_llm: ScriptedLLM,
    client: OpenAIClient,
) -> None:
    scripted_llm.reply("Hi there!")
    response = await client.chat(chat("hello"))
    assert response.content == "Hi there!"
    assert response.tool_calls == []
    assert response.finish_reason == "stop"
    assert response.model == "test-model"
    assert response.usage.prompt_tokens > 0
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
    [sent] = scripted_llm.requests
    assert sent.body["messages"][1] == {"role": "user", "content": "hello"}
    assert not {"tools", "tool_choice", "parallel_tool_calls", "temperature", "max_tokens"} & set(sent.body)


async def test_tool_call_is_parsed_and_request_offers_tools_one_at_a_time(
    scripted_llm: ScriptedLLM,
    client: OpenAIClient,
) -> None:
    scripted_llm.tool_call("memory_insert", {"label": "human", "new_str": "likes tea"})
    request = chat("remember I like tea", tools=True).model_copy(update={"temperature": 0.2, "max_tokens": 64})
    response = await client.chat(request)
    [call] = response.tool_calls
    assert call.name == "memory_insert"
    assert json.loads(call.arguments) == {"label": "human", "new_str": "likes tea"}
    assert call.id.startswith("call_")
    assert response.finish_reason == "tool_calls"
    body = scripted_llm.requests[0].body
    assert body["tools"] == [MEMORY_INSERT]
    assert (body["tool_choice"], body["parallel_tool_calls"]) == ("auto", False)
    assert (body["temperature"], body["max_tokens"]) == (0.2, 64)


async def test_object_arguments_and_missing_ids_are_normalised(
    scripted_llm: ScriptedLLM,
    client: OpenAIClient,
) -> None:
    call = {"function": {"name": "memory_insert", "arguments": {"label": "human"}}}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    scripted_llm.raw({"choices": [{"message": message, "finish_reason": "tool_calls"}]})
    response = await client.chat(chat(tools=True))
    [parsed] = response.tool_calls
    assert json.loads(parsed.arguments) == {"label": "human"}
    assert parsed.id.startswith("call_") and len(parsed.id) > 10
    assert response.usage.total_tokens == 0


@pytest.mark.parametrize(
    "content",
    [
        '{"name": "memory_insert", "arguments": {"label": "human", "new_str": "x"}}',
        '```json\n{"tool": "memory_insert", "parameters": {"label": "human", "new_str": "x"}}\n```',
        '[{"function": {"name": "memory_insert", "arguments": "{\\"label\\": \\"human\\", \\"new_str\\": \\"x\\"}"}}]',
        '<tool_call>\n{"name": "memory_insert", "arguments": {"label": "human", "new_str": "x"}}\n</tool_call>',
        # what Qwen2.5-Coder-1.5B printed: doubled braces, a call then prose, prose then a fenced call
        '{{"name": "memory_insert", "arguments": {"label": "human", "new_str": "x"}}}',
        '{"name": "memory_insert", "arguments": {"label": "human", "new_str": "x"}}\nI have saved that for you.',
        'Let me save that.\n```json\n{"name": "memory_insert", "arguments": {"label": "human", "new_str": "x"}}\n```',
    ],
)
async def test_tool_call_printed_as_json_in_content_is_accepted_for_offered_tools(
    scripted_llm: ScriptedLLM,
    client: OpenAIClient,
    content: str,
) -> None:
    scripted_llm.reply(content)
    response = await client.chat(chat(tools=True))
    assert response.content is None
    [call] = response.tool_calls
    assert (call.name, json.loads(call.arguments)) == ("memory_insert", {"label": "human", "new_str": "x"})


async def test_printed_calls_are_calls_only_when_tools_are_offered_and_unknown_names_need_arguments(
    scripted_llm: ScriptedLLM,
    client: OpenAIClient,
) -> None:
    scripted_llm.content_json_tool_call("memory_search", {"query": "name"})  # a tool that does not exist
    scripted_llm.content_json_tool_call("memory_insert", {"label": "human", "new_str": "x"})
    scripted_llm.reply('{"name": "Ada", "age": 36}')  # JSON, but not a call: an answer
    scripted_llm.reply('Here is an example:\n```json\n{"name": "memory_search", "arguments": {}}\n```')
    unknown = await client.chat(chat(tools=True))
    assert [c.name for c in unknown.tool_calls] == ["memory_search"] and unknown.content is None
    not_offered = await client.chat(chat(tools=False))
    assert not_offered.tool_calls == [] and "memory_insert" in (not_offered.content or "")
    answer = await client.chat(chat(tools=True))
    assert answer.tool_calls == [] and answer.content == '{"name": "Ada", "age": 36}'
    example = await client.chat(chat(tools=True))  # after prose, only a call to an offered tool counts
    assert example.tool_calls == [] and "memory_search" in (example.content or "")


async def test_429_waits_for_retry_after_then_succeeds(
    scripted_llm: ScriptedLLM,
    client: OpenAIClient,
) -> None:
    scripted_llm.error(429, retry_after=0.2).reply("after the pause")
    response = await client.chat(chat())
    assert response.content == "after the pause"
    first, second = scripted_llm.requests
    # backoff_s is 0.01, so only honouring Retry-After explains a 0.2 s gap.
    assert second.arrived - first.arrived >= 0.2


async def test_503_twice_then_success(
    scripted_llm: ScriptedLLM,
    client: OpenAIClient,
) -> None:
    scripted_llm.error(503).error(503).reply("third time lucky")
    response = await client.chat(chat())
    assert response.content == "third time lucky"
    assert [r.status for r in scripted_llm.requests] == [503, 503, 200]


async def test_endpoint_down_raises_llm_unavailable_naming_the_url_not_the_key(
    scripted_llm: ScriptedLLM,
    client: OpenAIClient,
) -> None:
    scripted_llm.down()
    with pytest.raises(LLMUnavailable) as caught:
        await client.chat(chat())
    message = str(caught.value)
    assert scripted_llm.base_url in message
    assert "MCP_LETTA_LLM_BASE_URL" in message and "failed 4 times, last with" in message
    assert KEY not in message and KEY not in repr(client)
    scripted_llm.up()
    scripted_llm.reply("back")
    assert (await client.chat(chat())).content == "back"


async def test_refused_api_key_is_not_retried_and_is_never_echoed(
    scripted_llm: ScriptedLLM,
    client: OpenAIClient,
) -> None:
    scripted_llm.error(401, {"error": {"message": f"Incorrect API key provided: {KEY}"}})
    with pytest.raises(LLMUnavailable, match=r"refused the API key.*set MCP_LETTA_LLM_API_KEY") as caught:
        await client.chat(chat())
    assert KEY not in str(caught.value)
    assert len(scripted_llm.requests) == 1


async def test_404_names_the_model_and_base_url(
    scripted_llm: ScriptedLLM,
    client: OpenAIClient,
) -> None:
    scripted_llm.error(404, {"error": {"message": "model 'test-model' not found"}})
    with pytest.raises(LLMUnavailable) as caught:
        await client.chat(chat())
    assert "'test-model'" in str(caught.value) and scripted_llm.base_url in str(caught.value)
    assert "MCP_LETTA_MODEL" in str(caught.value)


async def test_other_client_errors_carry_the_servers_text_truncated(
    scripted_llm: ScriptedLLM,
    client: OpenAIClient,
) -> None:
    scripted_llm.error(400, {"error": {"message": "context length exceeded " + "x" * 2000}})
    with pytest.raises(LLMUnavailable, match=r"HTTP 400.*context length exceeded") as caught:
        await client.chat(chat())
    assert len(str(caught.value)) < 800
    assert len(scripted_llm.requests) == 1


async def test_a_body_that_is_not_a_completion_is_llm_unavailable(
    scripted_llm: ScriptedLLM,
    client: OpenAIClient,
) -> None:
    scripted_llm.raw("<html>proxy login</html>")
    with pytest.raises(LLMUnavailable, match="not an OpenAI chat completion"):
        await client.chat(chat())


async def test_an_unscripted_request_fails_loudly(
    scripted_llm: ScriptedLLM,
    client: OpenAIClient,
) -> None:
    with pytest.raises(LLMUnavailable, match="no scripted response"):
        await client.chat(chat())


async def test_api_key_is_sent_as_bearer_only_when_set(scripted_llm: ScriptedLLM) -> None:
    scripted_llm.echo()
    for key in (KEY, None):
        keyed = OpenAIClient(scripted_llm.base_url, key)
        await keyed.chat(chat())
        await keyed.aclose()
    with_key, without_key = scripted_llm.requests
    assert with_key.headers["authorization"] == f"Bearer {KEY}"
    assert "authorization" not in without_key.headers


async def test_echo_default_repeats_the_last_user_message(
    scripted_llm: ScriptedLLM,
    client: OpenAIClient,
) -> None:
    scripted_llm.echo()
    assert (await client.chat(chat("ping"))).content == "echo: ping"


async def test_routes_answer_concurrent_agents_each_their_own_script_without_serialising(
    scripted_llm: ScriptedLLM,
    client: OpenAIClient,
) -> None:
    agents = [f"agent-{i}" for i in range(60)]
    for name in agents:
        scripted_llm.on(f"You are {name}.").reply(f"{name} here", delay_s=0.3)
    answers: dict[str, str | None] = {}

    async def ask(name: str) -> None:
        answers[name] = (await client.chat(chat(system=f"You are {name}."))).content

    async with anyio.create_task_group() as group:
        for name in reversed(agents):
            group.start_soon(ask, name)
    assert answers == {name: f"{name} here" for name in agents}
    received = scripted_llm.requests
    # Every request arrived before the first answer left: the server held all 60 delays at once.
    assert max(r.arrived for r in received) < min(r.completed or 0 for r in received)
    assert scripted_llm.pending == 0


async def test_routes_fall_through_to_the_global_queue_then_the_default(
    scripted_llm: ScriptedLLM,
    client: OpenAIClient,
) -> None:
    scripted_llm.on("You are planner.", "plan step 1", "plan step 2")
    scripted_llm.on("urgent", where="any").tool_calls([("memory_insert", {"label": "a"}), ("memory_insert", {})])
    scripted_llm.on(lambda body: body["model"] == "tiny").reply("tiny model")
    scripted_llm.reply("from the global queue")
    scripted_llm.default = lambda body: f"default for {len(body['messages'])} messages"

    async def content(text: str, system: str = "You are writer.", model: str = "test-model") -> str | None:
        return (await client.chat(chat(text, system=system).model_copy(update={"model": model}))).content

    assert await content("go", system="You are planner.") == "plan step 1"
    assert await content("go") == "from the global queue"
    urgent = await client.chat(chat("this is urgent", tools=True))
    assert [c.arguments for c in urgent.tool_calls] == ['{"label": "a"}', "{}"]
    assert await content("go", model="tiny") == "tiny model"
    assert await content("go", system="You are planner.") == "plan step 2"
    assert await content("go", system="You are planner.") == "default for 2 messages"
    assert scripted_llm.pending == 0
    assert [r.system for r in await scripted_llm.wait_for_requests_async(6)][:2] == [
        "You are planner.",
        "You are writer.",
    ]


async def test_pool_without_base_url_explains_what_to_set() -> None:
    pool = LLMPool(Settings(model="m"))
    with pytest.raises(LLMUnavailable, match=r"set MCP_LETTA_LLM_BASE_URL .*localhost:11434/v1.*MCP_LETTA_MODEL"):
        pool.client_for(None)
    with pytest.raises(LLMUnavailable, match="set MCP_LETTA_MODEL or the agent's model"):
        LLMPool(Settings(llm_base_url="http://localhost:11434/v1")).client_for(None)


async def test_pool_with_only_an_api_key_uses_openai() -> None:
    pool = LLMPool(Settings(llm_api_key=KEY, model="gpt-4o-mini"))
    client, model = pool.client_for(None)
    assert isinstance(client, OpenAIClient)
    assert (client.base_url, model) == ("https://api.openai.com/v1", "gpt-4o-mini")
    await pool.aclose()


async def test_agent_override_of_base_url_and_model_picks_another_client(
    scripted_llm: ScriptedLLM,
) -> None:
    with ScriptedLLM() as other:
        scripted_llm.echo()
        other.echo()
        pool = LLMPool(Settings(llm_base_url=scripted_llm.base_url + "/", llm_api_key=KEY, model="default-m"))
        shared, model = pool.client_for(None)
        assert pool.client_for(ModelSettings(temperature=0.1))[0] is shared and model == "default-m"
        own, own_model = pool.client_for(ModelSettings(base_url=other.base_url, model="agent-m"))
        assert own is not shared and own_model == "agent-m"
        await own.chat(chat().model_copy(update={"model": own_model}))
        await shared.chat(chat().model_copy(update={"model": model}))
        await pool.aclose()
        [to_other] = other.requests
        [to_default] = scripted_llm.requests
    assert to_other.body["model"] == "agent-m" and to_default.body["model"] == "default-m"
    # The configured key belongs to the configured endpoint; another host never receives it.
    assert to_default.headers["authorization"] == f"Bearer {KEY}"
    assert "authorization" not in to_other.headers


async def test_scripted_server_runs_as_a_subprocess() -> None:
    command = [sys.executable, "-m", "mcp_letta.testing", "--port", "0", "--echo", "--delay-ms", "5"]
    async with await anyio.open_process(command) as process:
        assert process.stderr is not None and process.stdout is not None
        ready = b""
        while not ready.endswith(b"\n"):
            ready += await process.stderr.receive()
        base_url = ready.decode().strip().rsplit(" ", 1)[-1]
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
        llm_client = OpenAIClient(base_url, None, max_retries=0)
        assert (await llm_client.chat(chat("from a subprocess"))).content == "echo: from a subprocess"
        await llm_client.aclose()
        process.terminate()
        assert await process.wait() == 0
        with pytest.raises(anyio.EndOfStream):
            await process.stdout.receive()  # nothing was printed to stdout


async def test_cached_prompt_tokens_are_read_from_openai_and_llama_cpp_answers(
    scripted_llm: ScriptedLLM,
    client: OpenAIClient,
) -> None:
    def answer(**extra: Any) -> dict[str, Any]:
        return {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}], **extra}

    usage = {"prompt_tokens": 1500, "completion_tokens": 5, "total_tokens": 1505}
    scripted_llm.raw(answer(usage={**usage, "prompt_tokens_details": {"cached_tokens": 1280}}))  # OpenAI, vLLM
    scripted_llm.raw(answer(usage=usage, timings={"cache_n": 1450, "prompt_n": 50}))  # llama.cpp's llama-server
    scripted_llm.raw(answer(usage=usage))  # a server that says nothing of its cache
    got = [(await client.chat(chat())).usage for _ in range(3)]
    assert [u.cached_tokens for u in got] == [1280, 1450, 0]
    assert {u.prompt_tokens for u in got} == {1500}

"""Test helpers for code that uses mcp-letta: ``ScriptedLLM``, a real OpenAI-compatible server on 127.0.0.1.

Point agents (or ``OpenAIClient``) at ``llm.base_url`` and script what the "model" answers::

    with ScriptedLLM() as llm:
        llm.tool_call("memory_insert", {"label": "human", "new_string": "likes tea"}).reply("Noted.")
        ...  # run the agent; llm.requests holds what it sent

``python -m mcp_letta.testing --echo --delay-ms 100`` serves one in its own process (the benchmarks' LLM).
"""

from mcp_letta.testing._scripted_llm import RecordedRequest, Response, Route, ScriptedLLM, echo, message_text

__all__ = ["RecordedRequest", "Response", "Route", "ScriptedLLM", "echo", "message_text"]

"""The start-up baseline: a bare ``MCPServer`` with one tool, served over stdio.

``python bench/bare_server.py`` is what ``bench.startup`` compares ``python -m mcp_letta`` against:
the cost of the SDK and the interpreter with nothing of ours on top.
"""

from mcp.server.mcpserver import MCPServer

server = MCPServer("bare")


@server.tool()
def echo(text: str) -> str:
    """Return ``text`` unchanged."""
    return text


if __name__ == "__main__":
    server.run()

"""The MCP surface: the server, its tools, resources and notifications."""

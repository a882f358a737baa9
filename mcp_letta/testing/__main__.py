"""``python -m mcp_letta.testing``: a ``ScriptedLLM`` in its own process, serving until SIGINT/SIGTERM."""

import sys

from mcp_letta.testing._scripted_llm import main

sys.exit(main())

"""``python -m mcp_letta`` is the ``mcp-letta`` command."""

import sys

from mcp_letta.cli import main

sys.exit(main())

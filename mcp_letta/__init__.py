"""mcp-letta: stateful Letta-style agents published to any MCP host as tools.

The whole public API is here: ``AgentHub`` (the async façade), the models it returns, the errors it
raises, and ``Settings``.
"""

from mcp_letta.config import Settings
from mcp_letta.errors import (
    Cancelled,
    Conflict,
    Deadlock,
    Invalid,
    LettaError,
    LimitExceeded,
    LLMUnavailable,
    NotFound,
    ReadOnly,
    Timeout,
    VersionConflict,
)
from mcp_letta.hub import AgentHub, Change
from mcp_letta.models import (
    Agent,
    Block,
    BlockChange,
    BlockSpec,
    Message,
    ModelSettings,
    NewMessage,
    Passage,
    ToolCall,
)

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentHub",
    "Block",
    "BlockChange",
    "BlockSpec",
    "Cancelled",
    "Change",
    "Conflict",
    "Deadlock",
    "Invalid",
    "LLMUnavailable",
    "LettaError",
    "LimitExceeded",
    "Message",
    "ModelSettings",
    "NewMessage",
    "NotFound",
    "Passage",
    "ReadOnly",
    "Settings",
    "Timeout",
    "ToolCall",
    "VersionConflict",
    "__version__",
]

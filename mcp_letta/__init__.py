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
    AgentMetrics,
    Block,
    BlockChange,
    BlockSpec,
    BroadcastResult,
    Message,
    Metrics,
    ModelSettings,
    NewMessage,
    Page,
    PairMetrics,
    Passage,
    PipelineResult,
    Run,
    RunStep,
    RunUsage,
    StageResult,
    StepEvent,
    ToolCall,
)

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentHub",
    "AgentMetrics",
    "Block",
    "BlockChange",
    "BlockSpec",
    "BroadcastResult",
    "Cancelled",
    "Change",
    "Conflict",
    "Deadlock",
    "Invalid",
    "LLMUnavailable",
    "LettaError",
    "LimitExceeded",
    "Message",
    "Metrics",
    "ModelSettings",
    "NewMessage",
    "NotFound",
    "Page",
    "PairMetrics",
    "Passage",
    "PipelineResult",
    "ReadOnly",
    "Run",
    "RunStep",
    "RunUsage",
    "Settings",
    "StageResult",
    "StepEvent",
    "Timeout",
    "ToolCall",
    "VersionConflict",
    "__version__",
]

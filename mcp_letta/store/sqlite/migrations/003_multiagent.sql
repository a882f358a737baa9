-- 003: multi-agent messaging. A run now records whether the run that sent it is blocked waiting on it
-- (the wait-for graph that refuses deadlocks, read by every process), how deeply it is nested in
-- synchronous waits, and where its reply goes when it ends. Agents can be attached to other agents
-- as tools (ask_<name>).

-- 1 while the run named by parent_run_id is blocked waiting on this run (send-and-wait, broadcast).
ALTER TABLE runs ADD COLUMN waited INTEGER NOT NULL DEFAULT 0;
-- Synchronous waits above this run: 0 for a message from the host or an asynchronous one.
ALTER TABLE runs ADD COLUMN depth INTEGER NOT NULL DEFAULT 0;
-- Where the reply goes when the run ends: 'host' (the host inbox), an agent id (delivered to that
-- agent as a new incoming message, i.e. a new run), or NULL (fetched by run id only).
ALTER TABLE runs ADD COLUMN reply_to TEXT;
-- Host inbox: 1 once check_replies has handed the reply out.
ALTER TABLE runs ADD COLUMN reply_read INTEGER NOT NULL DEFAULT 0;

CREATE INDEX runs_host_inbox ON runs(reply_to, reply_read, finished_at) WHERE reply_to = 'host';

-- Agent B attached to agent A as a tool: A's LLM sees ask_<B's name>(message). Read when a run of A
-- starts, so an attachment made by any process is seen by the next run.
CREATE TABLE agent_tools (
    agent_id      TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    tool_agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    position      INTEGER NOT NULL,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (agent_id, tool_agent_id),
    CHECK (agent_id != tool_agent_id)
) WITHOUT ROWID;
CREATE INDEX agent_tools_by_tool ON agent_tools(tool_agent_id);

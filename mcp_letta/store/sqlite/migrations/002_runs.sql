-- 002: runs (one message to an agent and what it did about it), their steps, and the processes
-- that execute them. Leases and heartbeats live here, not in memory, because several processes
-- (one per MCP host window) share the file and must agree on who runs what.

CREATE TABLE runs (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,  -- FIFO order, across processes
    id                TEXT NOT NULL UNIQUE,
    agent_id          TEXT NOT NULL,  -- no foreign key: a run stays on record after its agent is deleted
    agent_name        TEXT NOT NULL,
    status            TEXT NOT NULL
                      CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled', 'interrupted')),
    input             TEXT NOT NULL,
    role              TEXT NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'system')),
    sender            TEXT,
    parent_run_id     TEXT,
    reply             TEXT,
    error             TEXT,
    stop_reason       TEXT,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens      INTEGER NOT NULL DEFAULT 0,
    owner             TEXT NOT NULL,  -- the process (processes.id) that executes it, or will
    lease_until       REAL,           -- unix time; a running run whose lease passed has lost its process
    cancel_requested  INTEGER NOT NULL DEFAULT 0,
    created_at        TEXT NOT NULL,
    started_at        TEXT,
    finished_at       TEXT
);
CREATE INDEX runs_by_agent ON runs(agent_id, status, seq);
CREATE INDEX runs_by_status ON runs(status, seq);
CREATE INDEX runs_by_parent ON runs(parent_run_id) WHERE parent_run_id IS NOT NULL;

-- One row per completed step, written in the same transaction as the step's messages.
CREATE TABLE run_steps (
    run_id            TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    idx               INTEGER NOT NULL,
    tool_calls        TEXT NOT NULL DEFAULT '[]',
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens      INTEGER NOT NULL DEFAULT 0,
    started_at        TEXT NOT NULL,
    finished_at       TEXT NOT NULL,
    PRIMARY KEY (run_id, idx)
) WITHOUT ROWID;

-- Live processes using this file. A process heartbeats every few seconds; one whose heartbeat is
-- stale (or whose pid is gone, on the same host) is dead, and its queued runs are adopted.
CREATE TABLE processes (
    id         TEXT PRIMARY KEY,  -- Database.origin
    pid        INTEGER NOT NULL,
    host       TEXT NOT NULL,
    started_at TEXT NOT NULL,
    heartbeat  REAL NOT NULL
) WITHOUT ROWID;

-- The runtime loads an agent's context window (and checks it is unchanged) on every run it starts.
CREATE INDEX messages_in_context ON messages(agent_id, in_context, seq);

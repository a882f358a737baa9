-- 002: runs outlive their process (SQLite's 005). A running run whose process stopped goes back to the
-- queue and the next process resumes it from its last committed step; a message an agent's tool call sends
-- is keyed by that call, so a resumed run that makes the call again finds the run it sent.

-- Times the run went back to the queue after it had started (0: it never had to be resumed).
ALTER TABLE runs ADD COLUMN resumes INTEGER NOT NULL DEFAULT 0;
-- Of those, times its process died without handing it back: a run that keeps taking its process down is
-- not resumed for ever.
ALTER TABLE runs ADD COLUMN crashes INTEGER NOT NULL DEFAULT 0;
-- The tool call of the parent run that sent this message ('<step>.<position>'); NULL if not sent by one.
ALTER TABLE runs ADD COLUMN call_id TEXT;

CREATE UNIQUE INDEX runs_by_call ON runs(parent_run_id, call_id, agent_id) WHERE call_id IS NOT NULL;

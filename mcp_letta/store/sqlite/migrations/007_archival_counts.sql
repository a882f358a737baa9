-- 007: how many passages each agent has, kept as passages are stored and deleted. Every prompt shows the
-- count; counting an agent's passages read its whole index (linear in its archival memory, per prompt).
CREATE TABLE archival_counts (
    agent_id TEXT PRIMARY KEY REFERENCES agents(id) ON DELETE CASCADE,
    passages INTEGER NOT NULL
);
INSERT INTO archival_counts(agent_id, passages) SELECT agent_id, count(*) FROM passages GROUP BY agent_id;

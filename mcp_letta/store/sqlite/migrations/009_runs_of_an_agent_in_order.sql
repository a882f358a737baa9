-- 009: an agent's runs in queue order, whatever their status. Listing them (newest or oldest first, in any
-- status) read every run of the agent through runs_by_agent (agent_id, status, seq) and sorted them.
CREATE INDEX runs_of_agent ON runs(agent_id, seq);

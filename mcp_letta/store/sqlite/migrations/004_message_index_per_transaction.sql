-- 004: messages are added to the search index once per transaction, just before it commits
-- (store.memory.index_new_messages), no longer by a trigger per row. FTS5 flushes its pending index
-- at every SAVEPOINT, and the runtime commits many agents' writes together, each in a savepoint: the
-- trigger wrote one index segment per message, and merging them cost more than the rest of the insert.
DROP TRIGGER messages_ai;

-- Messages with seq <= indexed_through are in messages_fts; the ones after are not yet.
CREATE TABLE search_progress (
    name            TEXT PRIMARY KEY,
    indexed_through INTEGER NOT NULL
);
INSERT INTO search_progress(name, indexed_through) VALUES ('messages', (SELECT coalesce(max(seq), 0) FROM messages));

-- Only an indexed message can be taken out of the index (a message deleted in the transaction that
-- added it was never in it).
DROP TRIGGER messages_ad;
CREATE TRIGGER messages_ad AFTER DELETE ON messages
WHEN old.seq <= (SELECT indexed_through FROM search_progress WHERE name = 'messages')
BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.seq, old.content);
END;

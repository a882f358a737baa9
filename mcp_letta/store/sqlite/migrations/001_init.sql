-- 001: agents, blocks, block history, archival passages, messages, and the cross-process change log.

CREATE TABLE agents (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL COLLATE NOCASE UNIQUE,
    description    TEXT,
    system         TEXT NOT NULL,
    agent_type     TEXT NOT NULL DEFAULT 'letta_v1_agent',
    model_settings TEXT NOT NULL DEFAULT '{}',
    metadata       TEXT NOT NULL DEFAULT '{}',
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE TABLE agent_tags (
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    tag      TEXT NOT NULL,
    PRIMARY KEY (agent_id, tag)
) WITHOUT ROWID;
CREATE INDEX agent_tags_by_tag ON agent_tags(tag);

CREATE TABLE blocks (
    id             TEXT PRIMARY KEY,
    label          TEXT NOT NULL,
    value          TEXT NOT NULL,
    char_limit     INTEGER NOT NULL,
    description    TEXT,
    read_only      INTEGER NOT NULL DEFAULT 0,
    metadata       TEXT NOT NULL DEFAULT '{}',
    version        INTEGER NOT NULL DEFAULT 1,
    owner_agent_id TEXT,           -- set when the block was created as part of an agent
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    updated_by     TEXT
);
CREATE INDEX blocks_by_label ON blocks(label);

-- label is copied here so that "a label is unique per agent" is a constraint, not a hope.
CREATE TABLE agent_blocks (
    agent_id TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    block_id TEXT NOT NULL REFERENCES blocks(id) ON DELETE CASCADE,
    label    TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (agent_id, block_id),
    UNIQUE (agent_id, label)
) WITHOUT ROWID;
CREATE INDEX agent_blocks_by_block ON agent_blocks(block_id);

CREATE TABLE block_history (
    id        INTEGER PRIMARY KEY,
    block_id  TEXT NOT NULL REFERENCES blocks(id) ON DELETE CASCADE,
    version   INTEGER NOT NULL,
    writer    TEXT,
    op        TEXT NOT NULL,
    old_value TEXT,
    new_value TEXT NOT NULL,
    at        TEXT NOT NULL
);
CREATE INDEX block_history_by_block ON block_history(block_id, version);

CREATE TABLE passages (
    pk         INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    agent_id   TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    text       TEXT NOT NULL,
    tags       TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL
);
CREATE INDEX passages_by_agent ON passages(agent_id, pk);

CREATE TABLE passage_tags (
    passage_pk INTEGER NOT NULL REFERENCES passages(pk) ON DELETE CASCADE,
    agent_id   TEXT NOT NULL,
    tag        TEXT NOT NULL,
    PRIMARY KEY (passage_pk, tag)
) WITHOUT ROWID;
CREATE INDEX passage_tags_by_tag ON passage_tags(agent_id, tag);

CREATE VIRTUAL TABLE passages_fts USING fts5(
    text, content='passages', content_rowid='pk', tokenize='porter unicode61'
);
CREATE TRIGGER passages_ai AFTER INSERT ON passages BEGIN
    INSERT INTO passages_fts(rowid, text) VALUES (new.pk, new.text);
END;
CREATE TRIGGER passages_ad AFTER DELETE ON passages BEGIN
    INSERT INTO passages_fts(passages_fts, rowid, text) VALUES ('delete', old.pk, old.text);
END;

CREATE TABLE messages (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    agent_id     TEXT NOT NULL REFERENCES agents(id) ON DELETE CASCADE,
    role         TEXT NOT NULL,
    content      TEXT NOT NULL,
    name         TEXT,
    tool_calls   TEXT,
    tool_call_id TEXT,
    run_id       TEXT,
    sender       TEXT,
    in_context   INTEGER NOT NULL DEFAULT 1,
    created_at   TEXT NOT NULL
);
CREATE INDEX messages_by_agent ON messages(agent_id, seq);

CREATE VIRTUAL TABLE messages_fts USING fts5(
    content, content='messages', content_rowid='seq', tokenize='porter unicode61'
);
CREATE TRIGGER messages_ai AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts(rowid, content) VALUES (new.seq, new.content);
END;
CREATE TRIGGER messages_ad AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts(messages_fts, rowid, content) VALUES ('delete', old.seq, old.content);
END;

-- Every committed change appends a row here so other processes on the same file can tell what
-- changed after PRAGMA data_version says something did.
CREATE TABLE changes (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    kind   TEXT NOT NULL,
    ref    TEXT NOT NULL,
    at     REAL NOT NULL
);

-- The durable task queue; same meaning as PostgreSQL's 0007. The `tasks` table of 0001 was
-- never written to and is rebuilt (SQLite cannot change a CHECK in place).
DROP TABLE tasks;

CREATE TABLE tasks (
    id               TEXT PRIMARY KEY,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    status           TEXT NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    project_id       TEXT REFERENCES projects (id) ON DELETE CASCADE,
    api_key_id       TEXT REFERENCES api_keys (id) ON DELETE SET NULL,
    owner            TEXT NOT NULL DEFAULT '',
    owner_role       TEXT NOT NULL DEFAULT 'user' CHECK (owner_role IN ('admin', 'user')),
    prompt           TEXT NOT NULL,
    models           TEXT NOT NULL,
    max_tokens       INTEGER NOT NULL CHECK (max_tokens > 0),
    attempts         INTEGER NOT NULL DEFAULT 0,
    cancel_requested BOOLEAN NOT NULL DEFAULT 0,
    lease_owner      TEXT,
    lease_expires_at TEXT,
    error            TEXT,
    created_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    updated_at       TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    started_at       TEXT,
    finished_at      TEXT
);
CREATE INDEX tasks_claim_idx ON tasks (status, lease_expires_at, created_at);
CREATE INDEX tasks_project_idx ON tasks (project_id, id);

CREATE TABLE task_results (
    task_id           TEXT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    model             TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('succeeded', 'failed', 'cancelled')),
    text              TEXT,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd          TEXT NOT NULL DEFAULT '0',
    latency_ms        INTEGER,
    error_type        TEXT,
    error             TEXT,
    request_id        TEXT,
    created_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    UNIQUE (task_id, model)
);

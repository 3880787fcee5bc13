-- The usage table's primary key now leads with created_at, so it is also the (created_at)
-- index DESIGN §5 asks for, and the separate one goes: every usage row was written into one
-- B-tree more than it needed (about 2,700 of SQLite's instructions a row). The key stays
-- unique per (id, created_at), as on PostgreSQL, and replayed rows still meet it in
-- ON CONFLICT DO NOTHING. SQLite cannot change a primary key in place: the table is rebuilt.
CREATE TABLE llm_usage_logs_new (
    id                 TEXT NOT NULL,
    request_id         TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    llm_model_id       TEXT REFERENCES llm_models(id) ON DELETE SET NULL,
    provider_id        TEXT REFERENCES llm_providers(id) ON DELETE SET NULL,
    project_id         TEXT REFERENCES projects(id) ON DELETE SET NULL,
    api_key_id         TEXT REFERENCES api_keys(id) ON DELETE SET NULL,
    model_name         TEXT NOT NULL DEFAULT '',
    endpoint           TEXT NOT NULL,
    stream             INTEGER NOT NULL DEFAULT 0,
    status_code        INTEGER NOT NULL,
    error_type         TEXT,
    input_tokens       INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens  INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens      INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens   INTEGER NOT NULL DEFAULT 0,
    raw_usage          TEXT,
    usage_source       TEXT NOT NULL DEFAULT 'provider' CHECK (usage_source IN ('provider', 'estimated', 'none')),
    cache_hit          INTEGER NOT NULL DEFAULT 0,
    cost_usd           TEXT NOT NULL DEFAULT '0',
    latency_ms         INTEGER NOT NULL DEFAULT 0,
    ttft_ms            INTEGER,
    upstream_ms        INTEGER,
    attempts           INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (created_at, id)
);
INSERT INTO llm_usage_logs_new SELECT * FROM llm_usage_logs;
DROP TABLE llm_usage_logs;
ALTER TABLE llm_usage_logs_new RENAME TO llm_usage_logs;
CREATE INDEX llm_usage_logs_project_idx ON llm_usage_logs (project_id, created_at);
CREATE INDEX llm_usage_logs_model_idx ON llm_usage_logs (llm_model_id, created_at);

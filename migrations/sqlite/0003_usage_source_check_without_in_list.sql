-- The same usage_source rule, written as comparisons. SQLite evaluates a CHECK with an IN
-- list of three or more values by building a temporary B-tree of the list, for every row
-- inserted: about 9,000 instructions a row, a third of SQLite's whole insert. Comparisons
-- cost a few dozen. SQLite cannot change a CHECK in place: the table is rebuilt once.
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
    usage_source       TEXT NOT NULL DEFAULT 'provider' CHECK (usage_source = 'provider' OR usage_source = 'estimated' OR usage_source = 'none'),
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

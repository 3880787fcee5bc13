-- A capability flag nobody set is unknown (NULL), not false: only an explicit false keeps a
-- request that needs the capability away from a model. Rows the config sync wrote from an
-- unset flag become NULL at the next sync; rows the admin API wrote keep their values.
-- model_type also takes the seeds' 'llm', read as 'chat'.
-- SQLite cannot drop NOT NULL or change a CHECK in place: the table is rebuilt. `Db::migrate`
-- runs SQLite migrations with foreign keys off, so dropping the old table leaves the usage
-- rows' references to it alone (with them on, the drop would set every llm_model_id to NULL).
CREATE TABLE llm_models_new (
    id                           TEXT PRIMARY KEY,
    provider_id                  TEXT NOT NULL REFERENCES llm_providers(id) ON DELETE CASCADE,
    model_id                     TEXT NOT NULL,
    name                         TEXT NOT NULL,
    display_name                 TEXT NOT NULL,
    model_type                   TEXT NOT NULL DEFAULT 'chat' CHECK (model_type IN ('chat', 'llm', 'vlm', 'embedding')),
    family                       TEXT,
    version                      TEXT,
    tier                         TEXT,
    context_window               INTEGER CHECK (context_window > 0),
    max_output_tokens            INTEGER CHECK (max_output_tokens > 0),
    supports_streaming           INTEGER,
    supports_json                INTEGER,
    supports_function_calling    INTEGER,
    supports_vision              INTEGER,
    supports_audio               INTEGER,
    supports_system_prompt       INTEGER,
    cost_input_per_million       TEXT NOT NULL DEFAULT '0' CHECK (CAST(cost_input_per_million AS REAL) >= 0),
    cost_output_per_million      TEXT NOT NULL DEFAULT '0' CHECK (CAST(cost_output_per_million AS REAL) >= 0),
    -- NULL means "same as the input price"
    cost_cache_read_per_million  TEXT CHECK (CAST(cost_cache_read_per_million AS REAL) >= 0),
    cost_cache_write_per_million TEXT CHECK (CAST(cost_cache_write_per_million AS REAL) >= 0),
    parameters                   TEXT NOT NULL DEFAULT '{}',
    rate_limits                  TEXT NOT NULL DEFAULT '{}',
    capabilities                 TEXT NOT NULL DEFAULT '{}',
    metadata                     TEXT NOT NULL DEFAULT '{}',
    status                       TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive', 'deprecated')),
    is_default                   INTEGER NOT NULL DEFAULT 0,
    priority                     INTEGER NOT NULL DEFAULT 0,
    weight                       INTEGER NOT NULL DEFAULT 1 CHECK (weight >= 0),
    release_date                 TEXT,
    deprecation_date             TEXT,
    typical_latency_ms           INTEGER,
    managed_by                   TEXT NOT NULL DEFAULT 'api' CHECK (managed_by IN ('config', 'api')),
    created_at                   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    updated_at                   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    deleted_at                   TEXT,
    UNIQUE (provider_id, model_id)
);

INSERT INTO llm_models_new SELECT * FROM llm_models;
DROP TABLE llm_models;
ALTER TABLE llm_models_new RENAME TO llm_models;
CREATE UNIQUE INDEX llm_models_one_default_per_provider ON llm_models (provider_id)
    WHERE is_default = 1 AND deleted_at IS NULL;
CREATE INDEX llm_models_provider_id_idx ON llm_models (provider_id);
CREATE INDEX llm_models_status_idx ON llm_models (status);
CREATE INDEX llm_models_name_idx ON llm_models (name);

-- model_id is the provider's own id and usage history refers to it: never rewritten in place.
CREATE TRIGGER llm_models_model_id_immutable BEFORE UPDATE OF model_id ON llm_models
    WHEN NEW.model_id <> OLD.model_id
BEGIN
    SELECT RAISE(ABORT, 'llm_models.model_id is immutable');
END;

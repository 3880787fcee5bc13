-- The admin API: providers are soft-deleted like models, the rules the admin API's refusals
-- rest on are kept here (so they hold against concurrent writers), and every admin change is
-- recorded in the audit log. The same meaning as migrations/postgres/0005_admin.sql.

-- A deleted provider keeps its row: usage history refers to it. Its name is free again, so
-- the name is unique among live providers only. SQLite cannot drop a column's UNIQUE in
-- place: the table is rebuilt (`Db::migrate` runs this with foreign keys off, so the models'
-- and usage rows' references to it are left alone).
CREATE TABLE llm_providers_new (
    id                    TEXT PRIMARY KEY,
    name                  TEXT NOT NULL,
    display_name          TEXT NOT NULL,
    api                   TEXT NOT NULL DEFAULT 'openai'
                          CHECK (api IN ('openai', 'azure', 'anthropic', 'gemini', 'mock')),
    base_url              TEXT NOT NULL DEFAULT '',
    -- an `env:NAME` reference, `config` (the key is in config.toml) or a sealed key
    api_key_ref           TEXT,
    api_version           TEXT,
    max_parallel_requests INTEGER NOT NULL DEFAULT 1 CHECK (max_parallel_requests >= 0),
    requests_per_minute   INTEGER NOT NULL DEFAULT 60 CHECK (requests_per_minute >= 0),
    tokens_per_minute     INTEGER NOT NULL DEFAULT 0 CHECK (tokens_per_minute >= 0),
    queue_timeout_ms      INTEGER NOT NULL DEFAULT 0 CHECK (queue_timeout_ms >= 0),
    timeouts              TEXT NOT NULL DEFAULT '{}',
    is_enabled            INTEGER NOT NULL DEFAULT 1,
    description           TEXT,
    managed_by            TEXT NOT NULL DEFAULT 'api' CHECK (managed_by IN ('config', 'api')),
    created_at            TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    updated_at            TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
    deleted_at            TEXT
);
INSERT INTO llm_providers_new SELECT *, NULL FROM llm_providers;
DROP TABLE llm_providers;
ALTER TABLE llm_providers_new RENAME TO llm_providers;
CREATE UNIQUE INDEX llm_providers_live_name ON llm_providers (name) WHERE deleted_at IS NULL;
-- Dropping the old table dropped its triggers: the registry version's (0007), made again.
CREATE TRIGGER llm_providers_registry_version_insert AFTER INSERT ON llm_providers
BEGIN UPDATE registry_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER llm_providers_registry_version_update AFTER UPDATE ON llm_providers
BEGIN UPDATE registry_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER llm_providers_registry_version_delete AFTER DELETE ON llm_providers
BEGIN UPDATE registry_version SET version = version + 1 WHERE id = 1; END;

-- Deleting a provider deletes its models (softly: they keep their usage history).
CREATE TRIGGER llm_providers_delete_models AFTER UPDATE OF deleted_at ON llm_providers
    WHEN OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL
BEGIN
    UPDATE llm_models SET deleted_at = NEW.deleted_at, status = 'inactive', is_default = 0,
        updated_at = NEW.deleted_at
    WHERE provider_id = NEW.id AND deleted_at IS NULL;
END;

-- A live model needs a live provider, and stays at the provider it was created at (its
-- `provider/model_id` is its identity, as model_id alone is).
CREATE TRIGGER llm_models_provider_immutable BEFORE UPDATE OF provider_id ON llm_models
    WHEN NEW.provider_id <> OLD.provider_id
BEGIN
    SELECT RAISE(ABORT, 'llm_models.provider_id is immutable');
END;
CREATE TRIGGER llm_models_live_provider_insert BEFORE INSERT ON llm_models
    WHEN NEW.deleted_at IS NULL AND EXISTS (
        SELECT 1 FROM llm_providers WHERE id = NEW.provider_id AND deleted_at IS NOT NULL)
BEGIN
    SELECT RAISE(ABORT, 'llm_models.provider_id: the provider is deleted');
END;
CREATE TRIGGER llm_models_live_provider_update BEFORE UPDATE ON llm_models
    WHEN NEW.deleted_at IS NULL AND EXISTS (
        SELECT 1 FROM llm_providers WHERE id = NEW.provider_id AND deleted_at IS NOT NULL)
BEGIN
    SELECT RAISE(ABORT, 'llm_models.provider_id: the provider is deleted');
END;

-- Who changed what through the admin API, and when. `before` and `after` are the rows as
-- the API shows them: secrets are never in them.
CREATE TABLE audit_log (
    id          TEXT PRIMARY KEY,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL CHECK (action IN ('create', 'update', 'delete', 'revoke')),
    resource    TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    before      TEXT,
    after       TEXT
);
CREATE INDEX audit_log_resource_idx ON audit_log (resource, id);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, id);

-- The admin API: providers are soft-deleted like models, the rules the admin API's refusals
-- rest on are kept here (so they hold against concurrent writers), and every admin change is
-- recorded in the audit log.

-- A deleted provider keeps its row: usage history refers to it. Its name is free again, so
-- the name is unique among live providers only.
ALTER TABLE llm_providers ADD COLUMN deleted_at TIMESTAMPTZ;
ALTER TABLE llm_providers DROP CONSTRAINT llm_providers_name_key;
CREATE UNIQUE INDEX llm_providers_live_name ON llm_providers (name) WHERE deleted_at IS NULL;

-- Deleting a provider deletes its models (softly: they keep their usage history).
CREATE FUNCTION llm_providers_delete_models() RETURNS trigger AS $$
BEGIN
    UPDATE llm_models SET deleted_at = NEW.deleted_at, status = 'inactive', is_default = FALSE,
        updated_at = NEW.deleted_at
    WHERE provider_id = NEW.id AND deleted_at IS NULL;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER llm_providers_delete_models AFTER UPDATE OF deleted_at ON llm_providers
    FOR EACH ROW WHEN (OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL)
    EXECUTE FUNCTION llm_providers_delete_models();

-- A live model needs a live provider, and stays at the provider it was created at (its
-- `provider/model_id` is its identity, as model_id alone is).
CREATE FUNCTION llm_models_provider_rules() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.provider_id <> OLD.provider_id THEN
        RAISE EXCEPTION 'llm_models.provider_id is immutable';
    END IF;
    IF NEW.deleted_at IS NULL AND EXISTS (
        SELECT 1 FROM llm_providers WHERE id = NEW.provider_id AND deleted_at IS NOT NULL
    ) THEN
        RAISE EXCEPTION 'llm_models.provider_id: the provider is deleted';
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
CREATE TRIGGER llm_models_provider_rules BEFORE INSERT OR UPDATE ON llm_models
    FOR EACH ROW EXECUTE FUNCTION llm_models_provider_rules();

-- Who changed what through the admin API, and when. `before` and `after` are the rows as
-- the API shows them: secrets are never in them.
CREATE TABLE audit_log (
    id          UUID PRIMARY KEY,
    at          TIMESTAMPTZ NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL CHECK (action IN ('create', 'update', 'delete', 'revoke')),
    resource    TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    before      JSONB,
    after       JSONB
);
CREATE INDEX audit_log_resource_idx ON audit_log (resource, id);
CREATE INDEX audit_log_actor_idx ON audit_log (actor, id);

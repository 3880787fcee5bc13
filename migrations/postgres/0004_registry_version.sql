-- The registry's version: one counter, bumped in the same transaction as every change to
-- llm_providers, llm_models or system_settings, whoever makes it (the config sync, the admin
-- API, or an operator with psql), and announced with NOTIFY tollgate_registry '<version>' when
-- that transaction commits. Each instance LISTENs and also reads the counter every second, so
-- a notification it missed (its LISTEN connection was down) is made up for by the next read.
CREATE TABLE registry_version (
    id      SMALLINT PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
INSERT INTO registry_version (id, version) VALUES (1, 0);

-- BEFORE each statement, so that every transaction that changes the registry takes the
-- counter's row lock before any registry row's: two such transactions then wait for each
-- other in one order and never deadlock.
CREATE FUNCTION registry_version_bump() RETURNS trigger AS $$
DECLARE
    v BIGINT;
BEGIN
    UPDATE registry_version SET version = version + 1 WHERE id = 1 RETURNING version INTO v;
    PERFORM pg_notify('tollgate_registry', v::text);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER llm_providers_registry_version
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON llm_providers
    FOR EACH STATEMENT EXECUTE FUNCTION registry_version_bump();
CREATE TRIGGER llm_models_registry_version
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON llm_models
    FOR EACH STATEMENT EXECUTE FUNCTION registry_version_bump();
CREATE TRIGGER system_settings_registry_version
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON system_settings
    FOR EACH STATEMENT EXECUTE FUNCTION registry_version_bump();

-- Settings the config sync wrote (`[[routes]]` as `route:<name>`): the sync replaces and
-- removes only these, and never touches a setting the admin API wrote.
ALTER TABLE system_settings ADD COLUMN managed_by TEXT NOT NULL DEFAULT 'api'
    CHECK (managed_by IN ('config', 'api'));

COMMENT ON COLUMN llm_providers.api_key_ref IS
    'env:NAME, a key sealed with the master key (sealed:v1:...), or config (the key is written in a config file and kept in that instance''s memory only); never a plaintext key';

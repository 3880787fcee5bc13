-- The registry's version: one counter, bumped in the same transaction as every change to
-- llm_providers, llm_models or system_settings, whoever makes it (the config sync, the admin
-- API, or an operator with sqlite3). Each instance reads it every second and rebuilds its
-- registry when it moved, so several processes may share one database file.
-- A migration that rebuilds one of these tables must create its three triggers again.
CREATE TABLE registry_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO registry_version (id, version) VALUES (1, 0);

CREATE TRIGGER llm_providers_registry_version_insert AFTER INSERT ON llm_providers
BEGIN UPDATE registry_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER llm_providers_registry_version_update AFTER UPDATE ON llm_providers
BEGIN UPDATE registry_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER llm_providers_registry_version_delete AFTER DELETE ON llm_providers
BEGIN UPDATE registry_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER llm_models_registry_version_insert AFTER INSERT ON llm_models
BEGIN UPDATE registry_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER llm_models_registry_version_update AFTER UPDATE ON llm_models
BEGIN UPDATE registry_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER llm_models_registry_version_delete AFTER DELETE ON llm_models
BEGIN UPDATE registry_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER system_settings_registry_version_insert AFTER INSERT ON system_settings
BEGIN UPDATE registry_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER system_settings_registry_version_update AFTER UPDATE ON system_settings
BEGIN UPDATE registry_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER system_settings_registry_version_delete AFTER DELETE ON system_settings
BEGIN UPDATE registry_version SET version = version + 1 WHERE id = 1; END;

-- Settings the config sync wrote (`[[routes]]` as `route:<name>`): the sync replaces and
-- removes only these, and never touches a setting the admin API wrote.
ALTER TABLE system_settings ADD COLUMN managed_by TEXT NOT NULL DEFAULT 'api'
    CHECK (managed_by IN ('config', 'api'));

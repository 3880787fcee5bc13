-- Budgets are enforced: a project's budget covers its whole life (`total`) or each calendar
-- month in UTC (`monthly`). The spend a budget is checked against is read from the hourly
-- roll-up by key or by project, so those reads get indexes of their own (the primary key
-- leads with the hour).
ALTER TABLE projects
    ADD COLUMN budget_period TEXT NOT NULL DEFAULT 'total'
        CHECK (budget_period IN ('total', 'monthly'));
CREATE INDEX llm_usage_hourly_key_idx ON llm_usage_hourly (api_key_id, hour);
CREATE INDEX llm_usage_hourly_project_idx ON llm_usage_hourly (project_id, hour);

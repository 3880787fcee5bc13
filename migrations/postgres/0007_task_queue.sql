-- The durable task queue. The `tasks` table of 0001 was never written to; it is rebuilt with
-- what a shared queue needs: the creator (project, key, principal) whose limits and budgets
-- the calls run under, the lease a worker holds while it runs the task, the attempts made,
-- and a cancel flag any instance may set. Each model's outcome is a row of `task_results`,
-- one per (task, model), so a model that finished is never run again when another worker
-- takes over an expired lease.
DROP TABLE tasks;

CREATE TABLE tasks (
    id               UUID PRIMARY KEY,
    name             TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    status           TEXT NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    project_id       UUID REFERENCES projects (id) ON DELETE CASCADE,
    api_key_id       UUID REFERENCES api_keys (id) ON DELETE SET NULL,
    owner            TEXT NOT NULL DEFAULT '',
    owner_role       TEXT NOT NULL DEFAULT 'user' CHECK (owner_role IN ('admin', 'user')),
    prompt           TEXT NOT NULL,
    models           JSONB NOT NULL,
    max_tokens       BIGINT NOT NULL CHECK (max_tokens > 0),
    attempts         INTEGER NOT NULL DEFAULT 0,
    cancel_requested BOOLEAN NOT NULL DEFAULT false,
    lease_owner      TEXT,
    lease_expires_at TIMESTAMPTZ,
    error            TEXT,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ
);
-- What workers claim: queued tasks, and running ones whose lease expired.
CREATE INDEX tasks_claim_idx ON tasks (status, lease_expires_at, created_at);
-- A project's list, newest first (ids are time-ordered).
CREATE INDEX tasks_project_idx ON tasks (project_id, id);

CREATE TABLE task_results (
    task_id           UUID NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    model             TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('succeeded', 'failed', 'cancelled')),
    text              TEXT,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    cost_usd          NUMERIC(18,10) NOT NULL DEFAULT 0,
    latency_ms        BIGINT,
    error_type        TEXT,
    error             TEXT,
    request_id        TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (task_id, model)
);

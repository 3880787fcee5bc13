-- A capability flag nobody set is unknown (NULL), not false: only an explicit false keeps a
-- request that needs the capability away from a model. Rows the config sync wrote from an
-- unset flag become NULL at the next sync; rows the admin API wrote keep their values.
-- model_type also takes the seeds' 'llm', read as 'chat'.
ALTER TABLE llm_models
    ALTER COLUMN supports_streaming DROP NOT NULL,
    ALTER COLUMN supports_streaming DROP DEFAULT,
    ALTER COLUMN supports_json DROP NOT NULL,
    ALTER COLUMN supports_json DROP DEFAULT,
    ALTER COLUMN supports_function_calling DROP NOT NULL,
    ALTER COLUMN supports_function_calling DROP DEFAULT,
    ALTER COLUMN supports_vision DROP NOT NULL,
    ALTER COLUMN supports_vision DROP DEFAULT,
    ALTER COLUMN supports_audio DROP NOT NULL,
    ALTER COLUMN supports_audio DROP DEFAULT,
    ALTER COLUMN supports_system_prompt DROP NOT NULL,
    ALTER COLUMN supports_system_prompt DROP DEFAULT,
    DROP CONSTRAINT llm_models_model_type_check,
    ADD CONSTRAINT llm_models_model_type_check
        CHECK (model_type IN ('chat', 'llm', 'vlm', 'embedding'));

-- A roll-up sum that overflowed BIGINT (an absurd usage report from a provider) was stored by
-- SQLite as REAL, and every report read from the roll-up failed. Sums now stop at the BIGINT
-- maximum; this turns the REAL values already stored back into integers (CAST saturates at
-- that maximum).
UPDATE llm_usage_hourly SET
    requests = CAST(requests AS INTEGER),
    errors = CAST(errors AS INTEGER),
    input_tokens = CAST(input_tokens AS INTEGER),
    cache_read_tokens = CAST(cache_read_tokens AS INTEGER),
    cache_write_tokens = CAST(cache_write_tokens AS INTEGER),
    output_tokens = CAST(output_tokens AS INTEGER),
    reasoning_tokens = CAST(reasoning_tokens AS INTEGER),
    cost_usd_e10 = CAST(cost_usd_e10 AS INTEGER)
WHERE typeof(requests) = 'real' OR typeof(errors) = 'real' OR typeof(input_tokens) = 'real'
    OR typeof(cache_read_tokens) = 'real' OR typeof(cache_write_tokens) = 'real'
    OR typeof(output_tokens) = 'real' OR typeof(reasoning_tokens) = 'real'
    OR typeof(cost_usd_e10) = 'real';

-- Issue 6, part A: the model registry, the model a conversation picks, who ran each run and with
-- which model, one usage record per ended run (cost in exact decimals), and a log of every tool
-- call. Plain SQL only (PGlite runs it too).

-- The admin registry of models. `id` is what the SDK gets as `model`. Prices are USD per million
-- tokens, all four set or all four null (an unpriced model: its runs cost what Claude Code reports).
CREATE TABLE models (
  id text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$'),
  display_name text NOT NULL CHECK (length(display_name) BETWEEN 1 AND 200),
  provider text NOT NULL CHECK (provider IN ('anthropic', 'bedrock')),
  input_price numeric(14, 6) CHECK (input_price IS NULL OR input_price >= 0),
  output_price numeric(14, 6) CHECK (output_price IS NULL OR output_price >= 0),
  cache_creation_price numeric(14, 6) CHECK (cache_creation_price IS NULL OR cache_creation_price >= 0),
  cache_read_price numeric(14, 6) CHECK (cache_read_price IS NULL OR cache_read_price >= 0),
  CHECK (
    (input_price IS NULL AND output_price IS NULL AND cache_creation_price IS NULL AND cache_read_price IS NULL)
    OR (input_price IS NOT NULL AND output_price IS NOT NULL AND cache_creation_price IS NOT NULL
      AND cache_read_price IS NOT NULL)
  ),
  status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- The model a conversation picked (null: the tenant's default, else the configured default).
ALTER TABLE conversations ADD COLUMN model_id text REFERENCES models (id);

-- The model a run used (null when none was configured: Claude Code's own default) and who ran it.
ALTER TABLE runs ADD COLUMN model_id text;
ALTER TABLE runs ADD COLUMN executor_user_id text CHECK (executor_user_id IS NULL OR length(executor_user_id) BETWEEN 1 AND 200);
ALTER TABLE runs ADD COLUMN executor_name text;
ALTER TABLE runs ADD COLUMN executor_email text;

-- One record per ended run (completed, failed or cancelled), written in the transaction that stores
-- the run's done event. No key to conversations or runs: billing outlives a deleted conversation.
CREATE TABLE usage_records (
  run_id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  conversation_id uuid NOT NULL,
  model_id text,
  executor_user_id text,
  executor_name text,
  executor_email text,
  status text NOT NULL CHECK (status IN ('completed', 'failed', 'cancelled')),
  input_tokens bigint NOT NULL CHECK (input_tokens >= 0),
  output_tokens bigint NOT NULL CHECK (output_tokens >= 0),
  cache_creation_input_tokens bigint NOT NULL CHECK (cache_creation_input_tokens >= 0),
  cache_read_input_tokens bigint NOT NULL CHECK (cache_read_input_tokens >= 0),
  total_tokens bigint NOT NULL CHECK (total_tokens >= 0),
  cost_usd numeric(20, 8) NOT NULL CHECK (cost_usd >= 0),
  -- 'model_prices': computed from the registry's prices; 'reported': Claude Code's own figure.
  cost_source text NOT NULL CHECK (cost_source IN ('model_prices', 'reported')),
  duration_ms bigint NOT NULL CHECK (duration_ms >= 0),
  turn_count integer NOT NULL CHECK (turn_count >= 0),
  started_at timestamptz NOT NULL,
  ended_at timestamptz NOT NULL
);
CREATE INDEX usage_records_tenant_ended_idx ON usage_records (tenant_id, ended_at DESC, run_id DESC);
CREATE INDEX usage_records_tenant_user_idx ON usage_records (tenant_id, executor_user_id, ended_at);
CREATE INDEX usage_records_tenant_model_idx ON usage_records (tenant_id, model_id, ended_at);
CREATE INDEX usage_records_conversation_idx ON usage_records (conversation_id, ended_at);

-- Every tool call of the agent: inserted with its tool_call event, completed by its tool_result.
CREATE TABLE tool_calls (
  run_id uuid NOT NULL,
  tool_use_id text NOT NULL CHECK (length(tool_use_id) BETWEEN 1 AND 200),
  conversation_id uuid NOT NULL,
  tenant_id uuid NOT NULL,
  -- The seq of the tool_call event (the list's order and cursor).
  call_seq bigint NOT NULL,
  name text NOT NULL,
  input jsonb NOT NULL,
  -- The sub-agent call (Task/Agent tool_use id) this call was made inside; null on the main thread.
  parent_tool_use_id text,
  output_summary text,
  output_truncated boolean NOT NULL DEFAULT false,
  is_error boolean,
  started_at timestamptz NOT NULL,
  ended_at timestamptz,
  duration_ms bigint CHECK (duration_ms IS NULL OR duration_ms >= 0),
  PRIMARY KEY (run_id, tool_use_id),
  FOREIGN KEY (run_id, conversation_id) REFERENCES runs (id, conversation_id) ON DELETE CASCADE
);
CREATE INDEX tool_calls_conversation_seq_idx ON tool_calls (conversation_id, call_seq);

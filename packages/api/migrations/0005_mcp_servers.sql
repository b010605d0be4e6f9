-- The tenant's MCP server registry and per-conversation enablement (issue 6).
-- A server is a stdio command Claude Code runs inside the sandbox, or a remote streamable-HTTP
-- server reached through hakod's egress proxy. `enabled` is the tenant default; a conversation
-- may override it (conversation_mcp_servers). env and headers values are write-only on the API.
-- Tenant settings used to carry stdio servers (settings.mcpServers): they move here, enabled,
-- and the settings key is removed, so the registry is the only place MCP servers live.

CREATE TABLE mcp_servers (
  id uuid PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  -- The tool prefix mcp__{name}__; unique per tenant regardless of case.
  name text NOT NULL CHECK (name ~ '^[A-Za-z0-9_-]{1,64}$'),
  type text NOT NULL CHECK (type IN ('stdio', 'http')),
  -- stdio: the program and its arguments (a JSON array of strings) and environment (an object).
  command text,
  args jsonb NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(args) = 'array'),
  env jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(env) = 'object'),
  -- http: the server's URL and the headers sent with every request (an object).
  url text,
  headers jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(headers) = 'object'),
  enabled boolean NOT NULL DEFAULT true,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CHECK ((type = 'stdio') = (command IS NOT NULL)),
  CHECK ((type = 'http') = (url IS NOT NULL)),
  -- The target of the overrides' (server, tenant) key: an override's tenant is its server's.
  UNIQUE (id, tenant_id)
);
CREATE UNIQUE INDEX mcp_servers_tenant_name_idx ON mcp_servers (tenant_id, lower(name));

CREATE TABLE conversation_mcp_servers (
  conversation_id uuid NOT NULL,
  server_id uuid NOT NULL,
  tenant_id uuid NOT NULL,
  enabled boolean NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (conversation_id, server_id),
  FOREIGN KEY (conversation_id, tenant_id) REFERENCES conversations (id, tenant_id) ON DELETE CASCADE,
  FOREIGN KEY (server_id, tenant_id) REFERENCES mcp_servers (id, tenant_id) ON DELETE CASCADE
);
CREATE INDEX conversation_mcp_servers_server_idx ON conversation_mcp_servers (server_id);

-- Settings' stdio servers become registry rows (a name that differs only in case from an earlier
-- one is dropped: the old settings allowed both, the registry does not).
INSERT INTO mcp_servers (id, tenant_id, name, type, command, args, env, enabled)
SELECT gen_random_uuid(), t.id, s.key, 'stdio', s.value ->> 'command',
       COALESCE(s.value -> 'args', '[]'::jsonb), COALESCE(s.value -> 'env', '{}'::jsonb), true
FROM tenants t, jsonb_each(t.settings -> 'mcpServers') AS s (key, value)
WHERE jsonb_typeof(t.settings -> 'mcpServers') = 'object'
  AND s.key ~ '^[A-Za-z0-9_-]{1,64}$'
  AND jsonb_typeof(s.value -> 'command') = 'string'
ORDER BY t.id, s.key
ON CONFLICT DO NOTHING;

UPDATE tenants SET settings = settings - 'mcpServers' WHERE settings ? 'mcpServers';

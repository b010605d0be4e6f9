-- Tenant skill packages (issue 6). The files live in the object store as one normalised tar per
-- version at object_key (skills/{tenant_id}/{name}/{version id}.tar); this row is what readers
-- see, so a replace uploads the new object first, then swaps the row, then removes the old object.
CREATE TABLE skills (
  tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
  name text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,63}$'),
  description text NOT NULL CHECK (length(description) BETWEEN 1 AND 1024),
  -- Goes up by one on every replace.
  version integer NOT NULL DEFAULT 1 CHECK (version >= 1),
  -- sha256 of the normalised tar (lowercase hex).
  sha256 text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  size_bytes bigint NOT NULL CHECK (size_bytes >= 0),
  object_key text NOT NULL,
  -- [{"path": "SKILL.md", "size": 123, "sha256": "…"}, …] in path order.
  files jsonb NOT NULL CHECK (jsonb_typeof(files) = 'array'),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, name)
);

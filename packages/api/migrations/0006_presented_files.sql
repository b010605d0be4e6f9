-- File versions and presented files (issue 6). Plain SQL only (it also runs on PGlite).

-- Every version a registered file had: one row each time its content changed (an upload, an
-- attachment, or a run's sync-back), kept after the file itself is changed again or deleted.
-- Only the metadata is kept: the object store holds the current content alone.
CREATE TABLE conversation_file_versions (
  conversation_id uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
  path text NOT NULL CHECK (
    length(path) BETWEEN 1 AND 4096
    AND left(path, 1) <> '/'
    AND path <> '.hako'
    AND left(path, 6) <> '.hako/'
  ),
  version integer NOT NULL CHECK (version >= 1),
  size bigint NOT NULL CHECK (size >= 0),
  sha256 text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  mime_type text NOT NULL,
  source text NOT NULL CHECK (source IN ('user_upload', 'ai_created', 'ai_modified')),
  -- The run that wrote it (its sync-back, or an attachment of its execute); null for an upload.
  run_id uuid REFERENCES runs (id) ON DELETE SET NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (conversation_id, path, version)
);

-- Files registered before this migration: their current version is the first one recorded.
INSERT INTO conversation_file_versions (conversation_id, path, version, size, sha256, mime_type, source, created_at)
SELECT conversation_id, path, version, size, sha256, mime_type, source, updated_at FROM conversation_files;

-- Files the agent presented to the user (the hako MCP server's present_files tool), marked when
-- the run that presented them ended and its sync-back registered them. Deleting the file removes
-- the mark; changing it keeps the mark (the listing shows the current version).
CREATE TABLE presented_files (
  conversation_id uuid NOT NULL,
  path text NOT NULL,
  -- The file's version when it was (last) presented.
  version integer NOT NULL CHECK (version >= 1),
  description text CHECK (description IS NULL OR length(description) <= 2000),
  run_id uuid REFERENCES runs (id) ON DELETE SET NULL,
  presented_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (conversation_id, path),
  FOREIGN KEY (conversation_id, path) REFERENCES conversation_files (conversation_id, path) ON DELETE CASCADE
);
CREATE INDEX presented_files_order_idx ON presented_files (conversation_id, presented_at);

-- Conversations of issue 6: the calling application's user, archiving, and a delete in progress.
-- Plain SQL (PGlite runs it too).

-- The application's user the conversation belongs to (the seed's user_id); list filters by it.
ALTER TABLE conversations
  ADD COLUMN user_id text CHECK (user_id IS NULL OR length(user_id) BETWEEN 1 AND 200);

-- Set while archived: kept with all its data, hidden from the default list, refuses executes
-- and uploads.
ALTER TABLE conversations ADD COLUMN archived_at timestamptz;

-- Set when a DELETE began (sandbox, spool and S3 objects go first, the rows last): from then on
-- the conversation answers CONVERSATION_NOT_FOUND to everything but a DELETE, which finishes it.
ALTER TABLE conversations ADD COLUMN deleting_at timestamptz;

CREATE INDEX conversations_tenant_user_created_idx
  ON conversations (tenant_id, user_id, created_at DESC, id DESC)
  WHERE user_id IS NOT NULL;

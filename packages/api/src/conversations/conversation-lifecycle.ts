/**
 * Archiving and deleting a conversation: both hold the conversation's lock (the one an execute
 * holds), so neither happens during a run and no run starts during them.
 *
 * Archive: archived_at is set, then the conversation's sandboxes are destroyed (its workspace is
 * in S3 already: every run syncs it back before it releases the lock). A failure after the first
 * step leaves an archived conversation whose sandbox ends by its idle timeout, or by archiving it
 * again.
 *
 * Delete, in an order a retry can always finish: (1) the conversation is marked deleting (from
 * then on it is CONVERSATION_NOT_FOUND to everything but DELETE); (2) its sandboxes are destroyed;
 * (3) its local spool of changes not yet in S3 is dropped, so nothing uploads them again; (4) its
 * objects under `workspaces/{tenant}/{conversation}/` are deleted; (5) its rows go (files,
 * events, runs and the manifest by cascade). The rows go last: whatever fails, the conversation
 * is still there for the next DELETE, and no S3 object is ever left without rows that name it.
 */
import { AppError, isAppError } from '@hako/core';
import type { Logger } from '@hako/core';
import type { Conversation, LockManager, ObjectStore } from '../types.js';
import { withConversationLock } from '../execute/conversation-lock.js';
import { workspacePrefix } from '../workspace/paths.js';

/** Conversation resources outside PostgreSQL and S3 (hakod sandboxes, the local spool). */
export interface ConversationResources {
  /** Destroys every sandbox serving the conversation and forgets the recorded one. Idempotent. */
  releaseSandboxes(tenantId: string, conversationId: string): Promise<void>;
  /**
   * Drops the conversation's spooled workspace changes that have not reached S3. Throws
   * (CONVERSATION_LOCKED) when another process is uploading them right now.
   */
  discardSpool(conversationId: string): Promise<void>;
}

/** What archive and delete need from the repositories. */
export interface LifecycleStore {
  /** The conversation; CONVERSATION_NOT_FOUND when it is not the tenant's (or is being deleted). */
  get(tenantId: string, id: string): Promise<Conversation>;
  setArchived(tenantId: string, id: string, archived: boolean): Promise<Conversation>;
  /** Marks it deleting; false when there is no such conversation of the tenant. */
  beginDelete(tenantId: string, id: string): Promise<boolean>;
  /** Whether its delete began (and its rows are still there). */
  isDeleting(tenantId: string, id: string): Promise<boolean>;
  /** Deletes its rows (only once marked deleting). */
  purge(tenantId: string, id: string): Promise<boolean>;
}

export interface LifecycleDeps {
  store: LifecycleStore;
  objects: ObjectStore;
  locks: LockManager;
  resources: ConversationResources;
  logger: Logger;
  /** How long to wait for an upload's or a delete's short hold on the lock (not a run's). */
  lockWaitMs: number;
}

function locked(what: string): AppError {
  return new AppError(
    'CONVERSATION_LOCKED',
    `a run is in progress on this conversation; ${what} it after the run sent its done event`,
  );
}

/** Runs `fn` holding the conversation's lock (withConversationLock); `what` names the action in its refusal. */
function withLock<T>(
  deps: LifecycleDeps,
  conv: Pick<Conversation, 'id' | 'status'>,
  what: string,
  fn: () => Promise<T>,
): Promise<T> {
  const refused = (): AppError => locked(what);
  return withConversationLock(deps.locks, conv, deps.lockWaitMs, { running: refused, busy: refused }, fn);
}

/**
 * Archives the conversation and releases its sandboxes; answers it archived. Archiving an
 * archived conversation releases its sandboxes again. CONVERSATION_LOCKED during a run.
 */
export async function archiveConversation(
  deps: LifecycleDeps,
  tenantId: string,
  id: string,
): Promise<Conversation> {
  const conv = await deps.store.get(tenantId, id);
  return withLock(deps, conv, 'archive', async () => {
    // A run that started between the read and the lock has ended by now (it held the lock).
    const archived = await deps.store.setArchived(tenantId, id, true);
    await deps.resources.releaseSandboxes(tenantId, id);
    deps.logger.info({ tenantId, conversationId: id }, 'conversation archived');
    return archived;
  });
}

/** Unarchives the conversation (it takes executes and uploads again); answers it. */
export async function unarchiveConversation(
  deps: LifecycleDeps,
  tenantId: string,
  id: string,
): Promise<Conversation> {
  const unarchived = await deps.store.setArchived(tenantId, id, false);
  deps.logger.info({ tenantId, conversationId: id }, 'conversation unarchived');
  return unarchived;
}

/**
 * Deletes the conversation with its sandboxes, spool, S3 workspace and rows (see the module
 * comment for the order). CONVERSATION_NOT_FOUND when it is not the tenant's; CONVERSATION_LOCKED
 * during a run. A DELETE that failed midway is finished by the next one.
 */
export async function deleteConversation(deps: LifecycleDeps, tenantId: string, id: string): Promise<void> {
  // A conversation whose delete began is not found by get(): the retry finishes it.
  const conv = await deps.store.get(tenantId, id).catch(async (err: unknown) => {
    if (
      isAppError(err) &&
      err.code === 'CONVERSATION_NOT_FOUND' &&
      (await deps.store.isDeleting(tenantId, id))
    ) {
      return { id, status: 'idle' as const };
    }
    throw err;
  });
  await withLock(deps, conv, 'delete', async () => {
    if (!(await deps.store.beginDelete(tenantId, id))) {
      throw new AppError('CONVERSATION_NOT_FOUND', `Conversation ${id} does not exist for this tenant`);
    }
    await deps.resources.releaseSandboxes(tenantId, id);
    await deps.resources.discardSpool(id);
    const objects = await deps.objects.deletePrefix(workspacePrefix(tenantId, id));
    await deps.store.purge(tenantId, id);
    deps.logger.info({ tenantId, conversationId: id, objects }, 'conversation deleted');
  });
}

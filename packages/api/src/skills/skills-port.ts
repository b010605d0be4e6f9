/** The execute flow's SkillsPort on the skills table, the object store and the sandbox's hakod. */
import type { Logger } from '@hako/core';
import type { AgentClient } from '@hako/proto';
import type { SandboxTarget, SkillsPort } from '../execute/execute-run.js';
import type { SkillRepository } from '../repositories/skills.js';
import type { ObjectStore } from '../types.js';
import { SkillSync } from './skill-sync.js';

export function skillsPort(deps: {
  skills: Pick<SkillRepository, 'list'>;
  store: ObjectStore;
  logger: Logger;
  clientOf: (target: SandboxTarget) => AgentClient;
}): SkillsPort {
  const sync = new SkillSync({
    store: deps.store,
    logger: deps.logger,
    listSkills: (tenantId) => deps.skills.list(tenantId),
  });
  return {
    names: async (tenantId) => (await deps.skills.list(tenantId)).map((s) => s.name),
    sync: (target, tenant) =>
      sync.ensure({
        client: deps.clientOf(target),
        ownerId: tenant.id,
        sandboxId: target.sandboxId,
        tenantId: tenant.id,
      }),
  };
}

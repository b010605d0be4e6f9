/**
 * A tenant's skills in the object store and in sandboxes.
 *
 * Object store: one normalised tar per skill version at `skills/{tenant}/{name}/{version id}.tar`
 * (skillObjectKey); the skills row names the current one.
 *
 * Sandbox: `/skills/{tenant}` (hakod's read-only /skills tree, written with WriteFiles target
 * SKILLS, which replaces the directory whole) holds each skill's folder `{name}/…` and hako's
 * `.claude-plugin/`: `plugin.json` makes the directory a local Claude Code plugin whose skills are
 * the folders at its root (the options builder loads it with Options.plugins; nothing the agent
 * writes is ever loaded), and `hako-skills.json` records the fingerprint of what was written, so
 * ensureSkills() skips a sandbox that already matches the tenant's current skills.
 */
import { createHash, randomUUID } from 'node:crypto';
import tarStream from 'tar-stream';
import { AppError, isAppError } from '@hako/core';
import type { Logger } from '@hako/core';
import { readFilesTar, writeFilesTar } from '@hako/agentd';
import { FilesTarget } from '@hako/proto';
import type { AgentClient } from '@hako/proto';
import type { ObjectStore } from '../types.js';
import type { Skill } from '../repositories/skills.js';
import { packFiles, packToBuffer, readStoredSkill } from './skill-package.js';

/** Where every sandbox sees its tenant's skills. */
export function sandboxSkillsDir(tenantId: string): string {
  return `/skills/${tenantId}`;
}

/** The plugin name Claude Code shows the tenant's skills under (`hako:pdf`). */
export const SKILLS_PLUGIN_NAME = 'hako';
const MARKER_PATH = '.claude-plugin/hako-skills.json';
/** Bumped when the layout written into sandboxes changes, so every sandbox is rewritten. */
const LAYOUT_VERSION = 1;

/** The object key of one stored skill version. */
export function skillObjectKey(tenantId: string, name: string, versionId: string = randomUUID()): string {
  return `skills/${tenantId}/${name}/${versionId}.tar`;
}

/** What a sandbox's /skills/{tenant} must hold for these skills: a stable digest of them. */
export function skillsFingerprint(skills: readonly Pick<Skill, 'name' | 'version' | 'sha256'>[]): string {
  const parts = [...skills]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((s) => [s.name, s.version, s.sha256]);
  return createHash('sha256')
    .update(JSON.stringify([LAYOUT_VERSION, parts]))
    .digest('hex');
}

export interface SkillSyncDeps {
  readonly store: ObjectStore;
  readonly logger: Logger;
  /** The tenant's current skills. */
  readonly listSkills: (tenantId: string) => Promise<Skill[]>;
  /** Deadline of each ReadFiles / WriteFiles call (default 60 s). */
  readonly callTimeoutMs?: number;
}

export interface SkillSyncResult {
  /** false when the sandbox already held these skills. */
  readonly changed: boolean;
  readonly skills: number;
  readonly bytes: number;
}

export class SkillSync {
  /** The last tar built per tenant (tenants' skills change rarely; sandboxes are created often). */
  private readonly built = new Map<string, { fingerprint: string; tar: Buffer }>();

  constructor(private readonly d: SkillSyncDeps) {}

  /**
   * Makes the sandbox's /skills/{tenant} match the tenant's current skills: reads the marker and,
   * when it differs, writes the whole directory (one WriteFiles, swapped in atomically by hakod).
   */
  async ensure(args: {
    client: AgentClient;
    ownerId: string;
    sandboxId: string;
    tenantId: string;
  }): Promise<SkillSyncResult> {
    const skills = await this.d.listSkills(args.tenantId);
    const fingerprint = skillsFingerprint(skills);
    const timeoutMs = this.d.callTimeoutMs ?? 60_000;
    const current = await this.readMarker(args, timeoutMs);
    if (current === fingerprint) return { changed: false, skills: skills.length, bytes: 0 };
    const tar = await this.buildTar(args.tenantId, skills, fingerprint);
    await writeFilesTar(
      args.client,
      {
        ownerId: args.ownerId,
        sandboxId: args.sandboxId,
        destDir: args.tenantId,
        target: FilesTarget.FILES_TARGET_SKILLS,
      },
      tar,
      { timeoutMs },
    );
    this.d.logger.debug(
      { tenantId: args.tenantId, sandboxId: args.sandboxId, skills: skills.length, bytes: tar.length },
      'skills synced into the sandbox',
    );
    return { changed: true, skills: skills.length, bytes: tar.length };
  }

  private async readMarker(
    args: { client: AgentClient; ownerId: string; sandboxId: string; tenantId: string },
    timeoutMs: number,
  ): Promise<string | undefined> {
    let tar: Buffer;
    try {
      tar = await readFilesTar(
        args.client,
        {
          ownerId: args.ownerId,
          sandboxId: args.sandboxId,
          paths: [`${args.tenantId}/${MARKER_PATH}`],
          target: FilesTarget.FILES_TARGET_SKILLS,
        },
        { timeoutMs },
      );
    } catch (err) {
      if (isAppError(err) && err.code === 'FILE_NOT_FOUND') return undefined;
      throw err;
    }
    const files = await readStoredSkill(tar).catch(() => []);
    const text = files[0]?.data.toString('utf8');
    if (text === undefined) return undefined;
    try {
      const v = (JSON.parse(text) as { fingerprint?: unknown }).fingerprint;
      return typeof v === 'string' ? v : undefined;
    } catch {
      return undefined;
    }
  }

  /** The directory's tar: every skill's files under `{name}/`, and hako's plugin files. */
  private async buildTar(tenantId: string, skills: readonly Skill[], fingerprint: string): Promise<Buffer> {
    const cached = this.built.get(tenantId);
    if (cached?.fingerprint === fingerprint) return cached.tar;
    const pack = tarStream.pack();
    const plugin = {
      name: SKILLS_PLUGIN_NAME,
      description: "The tenant's skills, uploaded through hako's skills API.",
      skills: './',
    };
    packFiles(pack, [
      {
        path: '.claude-plugin/plugin.json',
        data: Buffer.from(`${JSON.stringify(plugin)}\n`),
        executable: false,
      },
      { path: MARKER_PATH, data: Buffer.from(`${JSON.stringify({ fingerprint })}\n`), executable: false },
    ]);
    for (const s of skills) {
      let stored: Buffer;
      try {
        stored = await this.d.store.get(s.objectKey);
      } catch (err) {
        throw new AppError('STORAGE_FAILED', `reading skill ${s.name} from the object store failed`, {
          cause: err,
        });
      }
      packFiles(pack, await readStoredSkill(stored), `${s.name}/`);
    }
    pack.finalize();
    const tar = await packToBuffer(pack);
    this.built.set(tenantId, { fingerprint, tar });
    if (this.built.size > 256) this.built.delete(this.built.keys().next().value as string);
    return tar;
  }
}

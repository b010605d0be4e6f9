import { randomBytes } from 'node:crypto';
import { AppError } from '@hako/core';

/** Every name hako gives a host resource starts with this, then the env. */
export const NAME_PREFIX = 'hako';
/** OCI annotation (and label) that marks what hako created. */
export const LABEL_CREATED_BY = 'hako.created-by';
export const CREATED_BY_VALUE = 'hakod';
export const LABEL_ENV = 'hako.env';

const ID_RE = /^[a-z0-9]{8,32}$/;

/** A fresh sandbox id: 12 lowercase base32-ish chars. */
export function newSandboxId(): string {
  return randomBytes(8).toString('hex').slice(0, 12);
}

export function assertSandboxId(id: string): void {
  if (!ID_RE.test(id)) throw new AppError('INVALID_ARGUMENT', `bad sandbox id "${id}" (8-32 of [a-z0-9])`);
}

/** `hako-{env}-{id}`: the runtime container name, netns name, cgroup leaf and quota directory. */
export function resourceName(env: string, id: string): string {
  return `${NAME_PREFIX}-${env}-${id}`;
}

/** The prefix that marks this env's resources. */
export function envPrefix(env: string): string {
  return `${NAME_PREFIX}-${env}-`;
}

/** Parses `hako-{env}-{id}` back into its id, or undefined when the name is not this env's. */
export function idFromName(env: string, name: string): string | undefined {
  const p = envPrefix(env);
  if (!name.startsWith(p)) return undefined;
  const id = name.slice(p.length);
  return ID_RE.test(id) ? id : undefined;
}

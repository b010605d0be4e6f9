/**
 * A tenant's skill package as uploaded: one folder with `SKILL.md` (YAML frontmatter with a
 * `description`, and a `name` that must match the skill's) and any other files, sent as a tar,
 * optionally gzip-compressed. The folder may be the archive's root (`SKILL.md`, `scripts/x.py`) or
 * its only top-level directory (`pdf/SKILL.md`, as `tar -cf - pdf` makes).
 *
 * Everything is checked before anything is stored, and the first problem is a SKILL_INVALID naming
 * the offending entry: sizes (the body, each file, the sum), the file count, path names (no
 * absolute path, `..`, `.`, empty segment, control character, backslash, duplicate, over-long
 * name or depth), entry types (regular files and directories only: no symlink, hard link, device
 * or FIFO), and SKILL.md with its description. The accepted package is normalised into a tar of
 * its files only (sorted, root-owned, mode 0644 or 0755, mtime 0) whose sha256 names the version.
 */
import { createHash } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import tarStream from 'tar-stream';
import { AppError } from '@hako/core';

const MIB = 1024 * 1024;

/** A skill's name: also its folder under /skills/{tenant} and its path in the API. */
export const SKILL_NAME_RE = /^[a-z0-9][a-z0-9-]{0,63}$/;

/**
 * Names a skill may not take: the folders a Claude Code plugin reads at its root (the tenant's
 * skills directory is loaded as a plugin, so a skill named `hooks` would be read as plugin hooks).
 */
export const RESERVED_SKILL_NAMES: ReadonlySet<string> = new Set([
  'agents',
  'bin',
  'commands',
  'hooks',
  'lsp',
  'mcp',
  'monitors',
  'output-styles',
  'routines',
  'settings',
  'skills',
  'workflows',
]);

export interface SkillLimits {
  /** Largest request body (the tar or tar.gz as sent). */
  maxBodyBytes: number;
  /** Largest sum of the files' sizes. */
  maxTotalBytes: number;
  /** Largest single file. */
  maxFileBytes: number;
  /** Most files. */
  maxFiles: number;
  /** Most skills per tenant. */
  maxSkills: number;
  /** Largest sum of all of a tenant's skills (the sandbox receives them in one transfer). */
  maxTenantBytes: number;
}

export const DEFAULT_SKILL_LIMITS: SkillLimits = {
  maxBodyBytes: 20 * MIB,
  maxTotalBytes: 20 * MIB,
  maxFileBytes: 10 * MIB,
  maxFiles: 500,
  maxSkills: 100,
  maxTenantBytes: 100 * MIB,
};

/** Longest path inside a skill, in UTF-8 bytes, and most directory levels. */
const MAX_PATH_BYTES = 512;
const MAX_SEGMENT_BYTES = 255;
const MAX_DEPTH = 16;
// C0 controls, DEL and C1 controls
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f]/;

export interface SkillPackageFile {
  /** Relative to the skill's folder. */
  path: string;
  data: Buffer;
  size: number;
  sha256: string;
  executable: boolean;
}

export interface SkillPackage {
  /** The frontmatter's name (the caller checks it against the path's), or undefined. */
  frontmatterName: string | undefined;
  description: string;
  /** In path order. */
  files: SkillPackageFile[];
  /** The normalised tar of the files. */
  tar: Buffer;
  /** sha256 of `tar`. */
  sha256: string;
  /** Sum of the file sizes. */
  sizeBytes: number;
}

function invalid(message: string, entry?: string): AppError {
  return new AppError('SKILL_INVALID', message, entry === undefined ? undefined : { details: { entry } });
}

function shown(name: string): string {
  const s = name.length > 200 ? `${name.slice(0, 200)}…` : name;
  return JSON.stringify(s);
}

/** Splits an entry name into segments; SKILL_INVALID naming it when it is not a plain relative path. */
function entrySegments(raw: string): string[] {
  let name = raw;
  while (name.startsWith('./')) name = name.slice(2);
  if (name.endsWith('/')) name = name.slice(0, -1);
  const why = (reason: string): AppError =>
    invalid(
      `tar entry ${shown(raw)} ${reason}; paths must be relative and plain, such as "scripts/run.py"`,
      raw,
    );
  if (name === '' || name === '.') return [];
  if (raw.startsWith('/')) throw why('is absolute');
  if (CONTROL_RE.test(name)) throw why('contains a control character');
  if (name.includes('\\')) throw why('contains a backslash');
  if (Buffer.byteLength(name, 'utf8') > MAX_PATH_BYTES) throw why(`is longer than ${MAX_PATH_BYTES} bytes`);
  const parts = name.split('/');
  for (const p of parts) {
    if (p === '') throw why('has an empty segment');
    if (p === '.' || p === '..') throw why(`has a "${p}" segment`);
    if (Buffer.byteLength(p, 'utf8') > MAX_SEGMENT_BYTES)
      throw why(`has a segment longer than ${MAX_SEGMENT_BYTES} bytes`);
  }
  if (parts.length > MAX_DEPTH) throw why(`is nested deeper than ${MAX_DEPTH} levels`);
  return parts;
}

interface RawEntry {
  parts: string[];
  raw: string;
  data: Buffer;
  mode: number;
}

/** The tar's files and directories, each checked; a gzip body is uncompressed first. */
async function readEntries(
  body: Buffer,
  limits: SkillLimits,
): Promise<{ files: RawEntry[]; dirs: string[][] }> {
  if (body.length === 0) throw invalid('the body is empty; send the skill folder as a tar (or tar.gz)');
  if (body.length > limits.maxBodyBytes)
    throw invalid(`the package is ${body.length} bytes, over the ${limits.maxBodyBytes}-byte limit`);
  let tar = body;
  if (body[0] === 0x1f && body[1] === 0x8b) {
    try {
      // the tar of maxTotalBytes of files plus its headers; more is refused, not inflated
      tar = gunzipSync(body, { maxOutputLength: limits.maxTotalBytes + (limits.maxFiles + 64) * 1536 });
    } catch (err) {
      throw invalid(
        `the gzip body could not be uncompressed within the limits (${(err as Error).message}); send at most ${limits.maxTotalBytes} bytes of files`,
      );
    }
  }
  const files: RawEntry[] = [];
  const dirs: string[][] = [];
  const seen = new Set<string>();
  let total = 0;
  const extract = tarStream.extract();
  let failure: AppError | undefined;
  const done = new Promise<void>((resolve, reject) => {
    extract.on('entry', (header, stream, next) => {
      stream.on('error', () => undefined); // destroyed with the extractor when an entry is refused
      const fail = (e: AppError): void => {
        failure ??= e;
        stream.resume();
        extract.destroy(e);
      };
      try {
        const raw = header.name;
        const type = header.type as string | null;
        if (type !== 'file' && type !== 'contiguous-file' && type !== 'directory') {
          throw invalid(
            `tar entry ${shown(raw)} is a ${type ?? 'entry of unknown type'}; a skill holds only regular files and directories (no symlinks, hard links or devices)`,
            raw,
          );
        }
        const parts = entrySegments(raw);
        const key = parts.join('/');
        if (type === 'directory') {
          if (parts.length > 0) {
            if (seen.has(key) && !dirs.some((d) => d.join('/') === key))
              throw invalid(`tar entry ${shown(raw)} is a directory and a file`, raw);
            if (!seen.has(key)) dirs.push(parts);
            seen.add(key);
          }
          stream.resume();
          stream.on('end', () => next());
          return;
        }
        if (parts.length === 0) throw invalid(`tar entry ${shown(raw)} is a file without a name`, raw);
        if (seen.has(key)) throw invalid(`tar entry ${shown(raw)} appears twice`, raw);
        seen.add(key);
        const size = header.size ?? 0;
        if (size > limits.maxFileBytes)
          throw invalid(
            `${shown(raw)} is ${size} bytes, over the ${limits.maxFileBytes}-byte limit for one file`,
            raw,
          );
        total += size;
        if (total > limits.maxTotalBytes)
          throw invalid(`the files total over ${limits.maxTotalBytes} bytes (at ${shown(raw)})`, raw);
        if (files.length + 1 > limits.maxFiles)
          throw invalid(`the package has more than ${limits.maxFiles} files (at ${shown(raw)})`, raw);
        const chunks: Buffer[] = [];
        stream.on('data', (c: unknown) => chunks.push(c as Buffer));
        stream.on('end', () => {
          files.push({ parts, raw, data: Buffer.concat(chunks), mode: header.mode ?? 0o644 });
          next();
        });
      } catch (err) {
        fail(err as AppError);
      }
    });
    extract.on('finish', () => resolve());
    extract.on('error', (err) => reject(failure ?? err));
  });
  extract.end(tar);
  try {
    await done;
  } catch (err) {
    if (err instanceof AppError) throw err;
    throw invalid(
      `the body is not a valid tar archive (${(err as Error).message}); send the skill folder as a tar or tar.gz`,
    );
  }
  // a path used as both a file and a directory (a/b a file, a/b/c another)
  const filePaths = new Set(files.map((f) => f.parts.join('/')));
  for (const f of files) {
    for (let i = 1; i < f.parts.length; i++) {
      const prefix = f.parts.slice(0, i).join('/');
      if (filePaths.has(prefix))
        throw invalid(`tar entry ${shown(f.raw)} is inside a file ${shown(prefix)}`, f.raw);
    }
  }
  return { files, dirs };
}

/**
 * The frontmatter of SKILL.md: `name` and `description` (plain, quoted, or `>` / `|` block
 * scalars). SKILL_INVALID when it is missing or has no description.
 */
export function parseSkillFrontmatter(text: string): { name: string | undefined; description: string } {
  const src = text.replace(/^\uFEFF/, '').replace(/\r\n/g, '\n');
  const m = /^---\n([\s\S]*?)\n---(?:\n|$)/.exec(src);
  if (!m) {
    throw invalid(
      'SKILL.md must begin with YAML frontmatter between "---" lines, with a description (and a name)',
      'SKILL.md',
    );
  }
  const lines = (m[1] ?? '').split('\n');
  const fields: Record<string, string> = {};
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] as string;
    const kv = /^([A-Za-z_][A-Za-z0-9_-]*):[ \t]*(.*)$/.exec(line);
    if (!kv) continue;
    const key = kv[1] as string;
    let value = (kv[2] as string).trim();
    if (/^[>|][+-]?$/.test(value)) {
      const folded = value.startsWith('>');
      const block: string[] = [];
      while (
        i + 1 < lines.length &&
        (/^\s+\S/.test(lines[i + 1] as string) || (lines[i + 1] as string).trim() === '')
      ) {
        block.push((lines[++i] as string).trim());
      }
      value = (folded ? block.join(' ') : block.join('\n')).trim();
    } else if (
      (value.startsWith('"') && value.endsWith('"') && value.length >= 2) ||
      (value.startsWith("'") && value.endsWith("'") && value.length >= 2)
    ) {
      const q = value[0];
      value = value.slice(1, -1);
      value = q === '"' ? value.replace(/\\(["\\])/g, '$1').replace(/\\n/g, '\n') : value.replace(/''/g, "'");
    } else {
      value = value.replace(/\s+#.*$/, '');
    }
    fields[key] = value;
  }
  const description = (fields.description ?? '').trim();
  if (description === '') {
    throw invalid(
      'SKILL.md frontmatter has no description; Claude Code needs one to offer the skill',
      'SKILL.md',
    );
  }
  if (description.length > 1024)
    throw invalid('SKILL.md frontmatter description is over 1024 characters', 'SKILL.md');
  const name = fields.name?.trim();
  return { name: name === undefined || name === '' ? undefined : name, description };
}

/** Packs files (sorted, root-owned, mode 0644/0755, mtime 0) under `prefix` into `pack`. */
export function packFiles(
  pack: tarStream.Pack,
  files: readonly Pick<SkillPackageFile, 'path' | 'data' | 'executable'>[],
  prefix = '',
): void {
  for (const f of files) {
    pack.entry(
      {
        name: `${prefix}${f.path}`,
        size: f.data.length,
        mode: f.executable ? 0o755 : 0o644,
        uid: 0,
        gid: 0,
        mtime: new Date(0),
        type: 'file',
      },
      f.data,
    );
  }
}

/** Collects a finalized pack into one Buffer. */
export async function packToBuffer(pack: tarStream.Pack): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/**
 * Validates an uploaded package (see the module comment) and normalises it. `name` is the skill's
 * name from the path; a frontmatter name must equal it. SKILL_INVALID on any problem.
 */
export async function parseSkillPackage(
  body: Buffer,
  name: string,
  limits: SkillLimits = DEFAULT_SKILL_LIMITS,
): Promise<SkillPackage> {
  const { files } = await readEntries(body, limits);
  // the folder itself may be the archive's only top-level directory
  let list = files;
  if (!files.some((f) => f.parts.length === 1 && f.parts[0] === 'SKILL.md')) {
    const tops = new Set(files.map((f) => f.parts[0]));
    const top = [...tops][0];
    if (tops.size === 1 && top !== undefined && files.every((f) => f.parts.length > 1)) {
      list = files.map((f) => ({ ...f, parts: f.parts.slice(1) }));
    }
  }
  const skillMd = list.find((f) => f.parts.length === 1 && f.parts[0] === 'SKILL.md');
  if (skillMd === undefined) {
    throw invalid(
      'the package has no SKILL.md at its root (or in its only top-level folder); a skill is a folder with SKILL.md',
      'SKILL.md',
    );
  }
  const text = skillMd.data.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(skillMd.data))
    throw invalid('SKILL.md is not UTF-8 text', 'SKILL.md');
  const fm = parseSkillFrontmatter(text);
  if (fm.name !== undefined && fm.name !== name) {
    throw invalid(
      `SKILL.md names the skill ${shown(fm.name)} but it is uploaded as ${shown(name)}; use the same name in both`,
      'SKILL.md',
    );
  }
  const out: SkillPackageFile[] = list
    .map((f) => ({
      path: f.parts.join('/'),
      data: f.data,
      size: f.data.length,
      sha256: createHash('sha256').update(f.data).digest('hex'),
      executable: (f.mode & 0o111) !== 0,
    }))
    .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const pack = tarStream.pack();
  packFiles(pack, out);
  pack.finalize();
  const tar = await packToBuffer(pack);
  return {
    frontmatterName: fm.name,
    description: fm.description,
    files: out,
    tar,
    sha256: createHash('sha256').update(tar).digest('hex'),
    sizeBytes: out.reduce((n, f) => n + f.size, 0),
  };
}

/** The files of a stored (normalised) skill tar, in order. */
export async function readStoredSkill(tar: Buffer): Promise<SkillPackageFile[]> {
  const { files } = await readEntries(tar, {
    ...DEFAULT_SKILL_LIMITS,
    maxBodyBytes: Number.MAX_SAFE_INTEGER,
    maxTotalBytes: Number.MAX_SAFE_INTEGER,
    maxFileBytes: Number.MAX_SAFE_INTEGER,
    maxFiles: Number.MAX_SAFE_INTEGER,
  });
  return files.map((f) => ({
    path: f.parts.join('/'),
    data: f.data,
    size: f.data.length,
    sha256: '',
    executable: (f.mode & 0o111) !== 0,
  }));
}

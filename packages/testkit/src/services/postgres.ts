import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access, chown, mkdir, mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { AppError, silentLogger } from '@hako/core';
import type { Logger } from '@hako/core';
import {
  lookupUser,
  startOnFreePort,
  removeDir,
  runUndo,
  serviceEnv,
  spawnService,
  waitForService,
} from './service-process.js';
import type { RunAs } from './service-process.js';

const execFileAsync = promisify(execFile);

/** Where Debian's postgresql-<version> packages put the server binaries. */
const DEBIAN_POSTGRES_DIR = '/usr/lib/postgresql';
const READY_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 10_000;
const PORT_ATTEMPTS = 3;

/**
 * Server settings for a throwaway test database: nothing is made durable (the data directory is
 * deleted at stop), no background work, small memory.
 */
const TEST_SETTINGS: Readonly<Record<string, string>> = {
  listen_addresses: '127.0.0.1',
  fsync: 'off',
  synchronous_commit: 'off',
  full_page_writes: 'off',
  wal_level: 'minimal',
  max_wal_senders: '0',
  max_wal_size: '1GB',
  checkpoint_timeout: '1h',
  autovacuum: 'off',
  jit: 'off',
  shared_buffers: '32MB',
  huge_pages: 'off',
  max_connections: '100',
  logging_collector: 'off',
  log_min_messages: 'warning',
  log_checkpoints: 'off',
};

/** Trust for the owner's socket and 127.0.0.1; nothing else may connect. */
const PG_HBA = 'local all all trust\nhost all all 127.0.0.1/32 trust\n';

export interface StartPostgresOptions {
  /** Gets the server's log lines at debug level. Default: silent. */
  readonly logger?: Logger;
  /** PostgreSQL's bin directory. Default: the newest /usr/lib/postgresql/<version>/bin. */
  readonly binDir?: string;
}

/** A private PostgreSQL server for one test file. */
export interface PostgresService {
  /** postgres://postgres@127.0.0.1:<port>/hako: the superuser, trust auth, database `hako`. */
  readonly url: string;
  readonly port: number;
  /** The temporary directory holding the data directory and the unix socket; stop() removes it. */
  readonly dir: string;
  /**
   * Shuts the server down (fast shutdown: open connections are terminated) and removes `dir`.
   * Idempotent: later calls return the first call's promise.
   */
  stop(): Promise<void>;
}

/**
 * Finds the newest Debian PostgreSQL server installation: /usr/lib/postgresql/<version>/bin with
 * initdb and postgres in it. Throws HOST_PREREQUISITE_MISSING when there is none.
 */
export async function findPostgresBinDir(root: string = DEBIAN_POSTGRES_DIR): Promise<string> {
  let entries: string[] = [];
  try {
    entries = await readdir(root);
  } catch {
    // no installation at all
  }
  const versions = entries.filter((e) => /^\d+(\.\d+)?$/.test(e)).sort((a, b) => Number(b) - Number(a));
  for (const version of versions) {
    const bin = join(root, version, 'bin');
    try {
      await access(join(bin, 'initdb'), constants.X_OK);
      await access(join(bin, 'postgres'), constants.X_OK);
      return bin;
    } catch {
      // an incomplete or removed version; try the next
    }
  }
  throw new AppError(
    'HOST_PREREQUISITE_MISSING',
    `no PostgreSQL server in ${root}/<version>/bin (initdb and postgres); install the Debian package postgresql (bash scripts/setup does)`,
  );
}

/**
 * Starts a private PostgreSQL server on 127.0.0.1 and a random port: a fresh data directory from
 * initdb in a temporary directory, trust auth, no durability, and an empty database `hako`. As root
 * the server runs as the `postgres` user (initdb refuses root). Everything is removed again when
 * the start fails.
 */
export async function startPostgres(options: StartPostgresOptions = {}): Promise<PostgresService> {
  const logger = options.logger ?? silentLogger();
  const binDir = options.binDir ?? (await findPostgresBinDir());
  const runAs = process.getuid?.() === 0 ? await lookupUser('postgres') : undefined;

  const dir = await mkdtemp(join(tmpdir(), 'hako-pg-'));
  const undo: (() => Promise<void>)[] = [() => removeDir(dir)];
  try {
    const dataDir = join(dir, 'data');
    const socketDir = join(dir, 'run');
    await mkdir(socketDir, { mode: 0o700 });
    if (runAs) {
      await chown(dir, runAs.uid, runAs.gid);
      await chown(socketDir, runAs.uid, runAs.gid);
    }
    await initDataDir(binDir, dataDir, runAs);
    await writeFile(join(dataDir, 'pg_hba.conf'), PG_HBA);

    const { proc, port } = await startOnFreePort({
      attempts: PORT_ATTEMPTS,
      undo,
      bindError: /could not bind|Address already in use/i,
      spawn: (port) =>
        spawnService({
          name: 'postgres',
          command: join(binDir, 'postgres'),
          args: serverArgs(dataDir, socketDir, port),
          env: serviceEnv(),
          runAs,
          parentDeathSignal: 'SIGINT',
          logger,
        }),
      stop: (p) => p.stop('SIGINT', STOP_GRACE_MS),
      ready: async (p, port) => {
        const version = await waitForService(p, `PostgreSQL on 127.0.0.1:${port}`, READY_TIMEOUT_MS, () =>
          withClient(port, async (client) => {
            const { rows } = await client.query<{ v: string }>('SHOW server_version_num');
            return Number(rows[0]?.v ?? 0);
          }),
        );
        // FILE_COPY copies template1's files instead of WAL-logging every page: faster with fsync off.
        const strategy = version >= 150000 ? ' STRATEGY FILE_COPY' : '';
        await withClient(port, (client) => client.query(`CREATE DATABASE hako${strategy}`));
      },
    });

    const url = `postgres://postgres@127.0.0.1:${port}/hako`;
    logger.debug({ url, dir, pid: proc.pid }, 'test PostgreSQL started');
    let stopping: Promise<void> | undefined;
    return {
      url,
      port,
      dir,
      stop: () => (stopping ??= runUndo('PostgreSQL', undo)),
    };
  } catch (err) {
    await runUndo('PostgreSQL', undo).catch((undoErr: unknown) => {
      logger.warn({ err: undoErr }, 'cleaning up a failed PostgreSQL start failed');
    });
    throw err;
  }
}

async function initDataDir(binDir: string, dataDir: string, runAs: RunAs | undefined): Promise<void> {
  const args = [
    '-D',
    dataDir,
    '-U',
    'postgres',
    '-A',
    'trust',
    '-E',
    'UTF8',
    '--locale=C.UTF-8',
    '--no-sync',
  ];
  try {
    await execFileAsync(join(binDir, 'initdb'), args, {
      env: serviceEnv(),
      ...(runAs ? { uid: runAs.uid, gid: runAs.gid } : {}),
      maxBuffer: 4 * 1024 * 1024,
    });
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr?.trim();
    throw new AppError('INTERNAL', `initdb -D ${dataDir} failed: ${stderr || (err as Error).message}`, {
      cause: err,
    });
  }
}

function serverArgs(dataDir: string, socketDir: string, port: number): string[] {
  const args = ['-D', dataDir, '-p', String(port), '-k', socketDir];
  for (const [name, value] of Object.entries(TEST_SETTINGS)) args.push('-c', `${name}=${value}`);
  return args;
}

/** Runs `fn` on a fresh superuser connection to the `postgres` database (connect throws while the server starts). */
async function withClient<T>(port: number, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', database: 'postgres' });
  // A failed connect also emits 'error'; the rejected connect() already reports it.
  client.on('error', () => undefined);
  try {
    await client.connect();
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

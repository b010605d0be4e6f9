/**
 * `hako certs init`: a private CA and the server and client certificates for hakod's mTLS, made
 * with the host's openssl (ECDSA P-256, SHA-256). The files land in a fresh temporary directory
 * next to the target and are renamed into place only when all of them exist, so a failure leaves
 * the target as it was. Keys are 0600.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rename, rm, stat, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { isIP } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { AppError } from '@hako/core';

/** The files `certs init` writes (hakod reads the same names from AGENT_TLS_DIR). */
export const TLS_FILES = {
  ca: 'ca.pem',
  caKey: 'ca-key.pem',
  server: 'server.pem',
  serverKey: 'server-key.pem',
  client: 'client.pem',
  clientKey: 'client-key.pem',
} as const;

export interface CertsInitOptions {
  readonly dir: string;
  /** Extra names and addresses for the server certificate (besides localhost, 127.0.0.1, ::1, the host name). */
  readonly hosts: readonly string[];
  readonly days: number;
  /** Replace files that exist. */
  readonly force: boolean;
}

const NAME_RE =
  /^(?=.{1,253}$)([A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*$/;

/** subjectAltName entries for the server: DNS names and IPs, de-duplicated, validated. */
export function serverAltNames(extra: readonly string[], host: string = hostname()): string[] {
  const names = ['localhost', host, ...extra];
  const out: string[] = [];
  for (const n of names) {
    const v = n.trim();
    if (v === '') continue;
    let entry: string;
    if (isIP(v)) entry = `IP:${v}`;
    else if (NAME_RE.test(v)) entry = `DNS:${v.toLowerCase()}`;
    else throw new AppError('INVALID_ARGUMENT', `--host "${n}" is neither a DNS name nor an IP address`);
    if (!out.includes(entry)) out.push(entry);
  }
  for (const ip of ['IP:127.0.0.1', 'IP:::1']) if (!out.includes(ip)) out.push(ip);
  return out;
}

function openssl(args: readonly string[], cwd: string): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    execFile('openssl', args, { cwd }, (err, _out, stderr) => {
      if (!err) return resolvePromise();
      const notFound = (err as NodeJS.ErrnoException).code === 'ENOENT';
      reject(
        new AppError(
          notFound ? 'HOST_PREREQUISITE_MISSING' : 'TLS_GENERATION_FAILED',
          notFound
            ? 'openssl is not installed (apt-get install -y openssl)'
            : `openssl ${args[0] ?? ''} failed: ${(stderr || err.message).trim()}`,
          { cause: err },
        ),
      );
    });
  });
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

/** Writes the CA, server and client material into `opts.dir`; returns the paths written. */
export async function certsInit(opts: CertsInitOptions): Promise<string[]> {
  if (!Number.isInteger(opts.days) || opts.days < 1 || opts.days > 3650) {
    throw new AppError('INVALID_ARGUMENT', `--days must be a whole number from 1 to 3650, not ${opts.days}`);
  }
  const altNames = serverAltNames(opts.hosts);
  const dir = resolve(opts.dir);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const present: string[] = [];
  for (const f of Object.values(TLS_FILES)) if (await exists(join(dir, f))) present.push(f);
  if (present.length > 0 && !opts.force) {
    throw new AppError(
      'TLS_FILES_EXIST',
      `${dir} already holds ${present.join(', ')}; pass --force to replace them (clients holding the old CA stop trusting the server)`,
    );
  }
  const tmp = await mkdtemp(join(dirname(dir), `.hako-certs-${randomBytes(3).toString('hex')}-`));
  try {
    await chmod(tmp, 0o700);
    const days = String(opts.days);
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
    await writeFile(
      join(tmp, 'server.ext'),
      `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n` +
        `extendedKeyUsage=serverAuth\nsubjectAltName=${altNames.join(',')}\n`,
    );
    await writeFile(
      join(tmp, 'client.ext'),
      'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n',
    );
    await openssl(
      [
        'req',
        '-x509',
        ...ec,
        '-keyout',
        TLS_FILES.caKey,
        '-out',
        TLS_FILES.ca,
        '-days',
        days,
        '-sha256',
        '-subj',
        '/CN=hako CA',
        '-addext',
        'basicConstraints=critical,CA:TRUE,pathlen:0',
        '-addext',
        'keyUsage=critical,keyCertSign,cRLSign',
      ],
      tmp,
    );
    for (const [name, cn] of [
      ['server', 'hakod'],
      ['client', 'hako-client'],
    ] as const) {
      await openssl(
        ['req', '-new', ...ec, '-keyout', `${name}-key.pem`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`],
        tmp,
      );
      await openssl(
        [
          'x509',
          '-req',
          '-in',
          `${name}.csr`,
          '-CA',
          TLS_FILES.ca,
          '-CAkey',
          TLS_FILES.caKey,
          '-CAcreateserial',
          '-out',
          `${name}.pem`,
          '-days',
          days,
          '-sha256',
          '-extfile',
          `${name}.ext`,
        ],
        tmp,
      );
    }
    const written: string[] = [];
    for (const f of Object.values(TLS_FILES)) {
      await chmod(join(tmp, f), f.endsWith('-key.pem') ? 0o600 : 0o644);
      await rename(join(tmp, f), join(dir, f));
      written.push(join(dir, f));
    }
    return written;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

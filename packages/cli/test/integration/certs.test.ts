/**
 * `hako certs init` through the real CLI: the files, their modes, the chain and SANs as openssl
 * reads them, and a real mTLS handshake with Node's TLS: the client certificate is required and
 * must come from this CA.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, createServer } from 'node:tls';
import type { TLSSocket } from 'node:tls';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { serverAltNames } from '../../src/certs.js';

const HAKO = fileURLToPath(new URL('../../bin/hako.js', import.meta.url));

function hako(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [HAKO, ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function withDir(fn: (dir: string) => Promise<void> | void): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hako-certs-'));
    try {
      await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

/** Connects to an mTLS server made from `tls` and reports whether the handshake was accepted. */
async function handshake(
  serverTls: string,
  client: { ca: Buffer; cert?: Buffer; key?: Buffer },
): Promise<{ ok: boolean; peerCN?: string; error?: string }> {
  const read = (f: string): Buffer => readFileSync(join(serverTls, f));
  const server = createServer(
    {
      ca: read('ca.pem'),
      cert: read('server.pem'),
      key: read('server-key.pem'),
      requestCert: true,
      rejectUnauthorized: true,
    },
    (s) => s.end(`hello ${(s.getPeerCertificate().subject as { CN?: string } | undefined)?.CN ?? '?'}\n`),
  );
  server.on('tlsClientError', () => undefined);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  try {
    return await new Promise((resolve) => {
      const sock: TLSSocket = connect({ host: '127.0.0.1', port, servername: 'localhost', ...client });
      let data = '';
      sock.setEncoding('utf8');
      sock.on('data', (d: string) => (data += d));
      sock.on('end', () =>
        resolve(
          data.startsWith('hello ')
            ? { ok: true, peerCN: data.slice(6).trim() }
            : { ok: false, error: 'closed' },
        ),
      );
      sock.on('error', (e: Error) => resolve({ ok: false, error: e.message }));
    });
  } finally {
    server.close();
  }
}

test(
  'certs init writes the CA, server and client files with private keys 0600, verified by openssl',
  withDir((dir) => {
    const tls = join(dir, 'tls');
    const r = hako(['certs', 'init', '--dir', tls, '--host', 'hakod.internal', '--host', '10.9.8.7']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readdirSync(tls).sort(), [
      'ca-key.pem',
      'ca.pem',
      'client-key.pem',
      'client.pem',
      'server-key.pem',
      'server.pem',
    ]);
    for (const f of ['ca-key.pem', 'client-key.pem', 'server-key.pem'])
      assert.equal(statSync(join(tls, f)).mode & 0o777, 0o600, f);
    assert.equal(statSync(tls).mode & 0o077, 0, 'the directory is private');
    assert.equal(readdirSync(dir).length, 1, 'no temporary directory is left next to it');
    const verify = execFileSync(
      'openssl',
      ['verify', '-CAfile', join(tls, 'ca.pem'), join(tls, 'server.pem'), join(tls, 'client.pem')],
      { encoding: 'utf8' },
    );
    assert.match(verify, /server\.pem: OK/);
    assert.match(verify, /client\.pem: OK/);
    const server = execFileSync(
      'openssl',
      ['x509', '-in', join(tls, 'server.pem'), '-noout', '-ext', 'subjectAltName,extendedKeyUsage'],
      { encoding: 'utf8' },
    );
    for (const want of [
      'DNS:localhost',
      'DNS:hakod.internal',
      'IP Address:10.9.8.7',
      'IP Address:127.0.0.1',
      'TLS Web Server Authentication',
    ]) {
      assert.ok(server.includes(want), `${want} missing from:\n${server}`);
    }
    const client = execFileSync(
      'openssl',
      ['x509', '-in', join(tls, 'client.pem'), '-noout', '-ext', 'extendedKeyUsage'],
      { encoding: 'utf8' },
    );
    assert.match(client, /TLS Web Client Authentication/);
  }),
);

test(
  "mTLS with the files: this CA's client is accepted; no client cert, or one from another CA, is refused",
  withDir(async (dir) => {
    const a = join(dir, 'a');
    const b = join(dir, 'b');
    assert.equal(hako(['certs', 'init', '--dir', a]).code, 0);
    assert.equal(hako(['certs', 'init', '--dir', b]).code, 0);
    const read = (d: string, f: string): Buffer => readFileSync(join(d, f));
    const good = await handshake(a, {
      ca: read(a, 'ca.pem'),
      cert: read(a, 'client.pem'),
      key: read(a, 'client-key.pem'),
    });
    assert.deepEqual(good, { ok: true, peerCN: 'hako-client' });
    const none = await handshake(a, { ca: read(a, 'ca.pem') });
    assert.equal(none.ok, false, 'a client without a certificate must be refused');
    const foreign = await handshake(a, {
      ca: read(a, 'ca.pem'),
      cert: read(b, 'client.pem'),
      key: read(b, 'client-key.pem'),
    });
    assert.equal(foreign.ok, false, 'a client certificate from another CA must be refused');
    // and the client refuses a server whose certificate another CA signed
    const wrongServer = await handshake(b, {
      ca: read(a, 'ca.pem'),
      cert: read(b, 'client.pem'),
      key: read(b, 'client-key.pem'),
    });
    assert.equal(wrongServer.ok, false);
    assert.match(wrongServer.error ?? '', /self[- ]signed|unable to verify|certificate/i);
  }),
);

test(
  'existing files are kept unless --force; bad flags exit 2 with usage',
  withDir((dir) => {
    const tls = join(dir, 'tls');
    assert.equal(hako(['certs', 'init', '--dir', tls]).code, 0);
    const before = readFileSync(join(tls, 'ca.pem'), 'utf8');
    const again = hako(['certs', 'init', '--dir', tls]);
    assert.equal(again.code, 125);
    assert.match(again.stderr, /^hako: \[TLS_FILES_EXIST\] .*--force/m);
    assert.equal(readFileSync(join(tls, 'ca.pem'), 'utf8'), before, 'nothing replaced without --force');
    const forced = hako(['certs', 'init', '--dir', tls, '--force']);
    assert.equal(forced.code, 0, forced.stderr);
    assert.notEqual(readFileSync(join(tls, 'ca.pem'), 'utf8'), before);
    writeFileSync(join(dir, 'keep'), '');
    for (const args of [
      [],
      ['init'],
      ['init', '--dir', tls, '--days', 'soon'],
      ['init', '--dir', tls, '--host', 'no spaces'],
      ['rotate', '--dir', tls],
    ]) {
      const r = hako(['certs', ...args]);
      assert.equal(r.code, 2, `${JSON.stringify(args)}: ${r.stderr}`);
      assert.match(r.stderr, /usage: hako certs init/);
    }
  }),
);

test('server names: localhost, the host name, extras; IPs as IP entries; loopback always; junk refused', () => {
  assert.deepEqual(serverAltNames(['Node-1.Example', '192.0.2.1', 'localhost'], 'box'), [
    'DNS:localhost',
    'DNS:box',
    'DNS:node-1.example',
    'IP:192.0.2.1',
    'IP:127.0.0.1',
    'IP:::1',
  ]);
  assert.throws(() => serverAltNames(['a b'], 'box'), /neither a DNS name nor an IP/);
  assert.throws(() => serverAltNames(['-x.example'], 'box'), /neither/);
});

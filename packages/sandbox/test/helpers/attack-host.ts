/**
 * Host-side pieces of the security suite: listeners that record who connected (so a test can prove
 * an attack never arrived), commands run as an unprivileged host user (the positive controls that
 * show an attack works where the sandbox's protection is absent), and small host facts.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { readFileSync, statfsSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createTcpServer } from 'node:net';
import type { AddressInfo, Server, Socket } from 'node:net';
import { networkInterfaces } from 'node:os';

/** A listening socket that remembers the address of every peer that reached it. */
export interface Trap {
  readonly port: number;
  readonly peers: string[];
  close(): Promise<void>;
}

async function listen(server: Server, host: string, port: number): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port, ipv6Only: false }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

function closer(server: Server): () => Promise<void> {
  return () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      (server as Server & { closeAllConnections?: () => void }).closeAllConnections?.();
    });
}

/** A TCP listener on host:port (0: any free port) that greets every peer with `banner`. */
export async function tcpTrap(host: string, banner = 'hako-trap', port = 0): Promise<Trap> {
  const peers: string[] = [];
  const sockets = new Set<Socket>();
  const server = createTcpServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    peers.push(s.remoteAddress ?? '?');
    s.end(`${banner}\n`);
  });
  const bound = await listen(server, host, port);
  const close = closer(server);
  return {
    port: bound,
    peers,
    close: async () => {
      for (const s of sockets) s.destroy();
      await close();
    },
  };
}

/** An HTTP server on host:port answering every request 200 with `body`. */
export async function httpTrap(host: string, body: string, port = 0): Promise<Trap> {
  const peers: string[] = [];
  const server = createHttpServer((req, res) => {
    peers.push(req.socket.remoteAddress ?? '?');
    res.writeHead(200, { 'content-type': 'text/plain', connection: 'close' });
    res.end(`${body}\n`);
  });
  const bound = await listen(server, host, port);
  return { port: bound, peers, close: closer(server) };
}

/** A UDP socket on every host address (v4 and v6) that records the sender of every datagram. */
export async function udpTrap(): Promise<Trap> {
  const peers: string[] = [];
  const sock = createSocket({ type: 'udp6', ipv6Only: false });
  sock.on('message', (_msg, rinfo) => peers.push(rinfo.address));
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(0, '::', () => resolve());
  });
  return {
    port: sock.address().port,
    peers,
    close: () => new Promise<void>((resolve) => sock.close(() => resolve())),
  };
}

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs a command on the host as `uid`:`uid` with no supplementary groups and no capabilities, and
 * without the sandbox (no seccomp, no namespaces): what an ordinary user could do.
 */
export function runAsUser(
  uid: number,
  cmd: string,
  args: readonly string[],
  timeoutMs = 20_000,
): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(
      cmd,
      [...args],
      {
        uid,
        gid: uid,
        cwd: '/',
        timeout: timeoutMs,
        env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LANG: 'C.UTF-8' },
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** Runs a command on the host as root (the test's own user). */
export function runHost(cmd: string, args: readonly string[], timeoutMs = 20_000): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(cmd, [...args], { timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** The host's addresses outside loopback and hako bridges (family 4 or 6, link-local excluded). */
export function hostAddresses(family: 4 | 6, exclude: readonly string[] = []): string[] {
  const out: string[] = [];
  for (const [name, addrs] of Object.entries(networkInterfaces())) {
    if (exclude.includes(name)) continue;
    for (const a of addrs ?? []) {
      if (a.internal || (family === 4 ? a.family !== 'IPv4' : a.family !== 'IPv6')) continue;
      if (a.address.startsWith('fe80:')) continue;
      out.push(a.address);
    }
  }
  return out;
}

/** The IPv6 link-local address of interface `name`, if it has one. */
export function linkLocal(name: string): string | undefined {
  return networkInterfaces()[name]?.find((a) => a.family === 'IPv6' && a.address.startsWith('fe80:'))
    ?.address;
}

export function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** Bytes available to root on the filesystem holding `path`. */
export function freeBytes(path: string): number {
  const s = statfsSync(path);
  return s.bfree * s.bsize;
}

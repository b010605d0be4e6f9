// The API commands' argument parsing, usage texts and output formats, without a server: every
// --help answers 0 on stdout, every usage mistake answers 2 naming it, and MAIN_USAGE lists every
// command main() dispatches.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { main } from '../../src/main.js';
import { MAIN_USAGE } from '../../src/usage.js';
import type { CliIo } from '../../src/cli-io.js';
import { UsageError } from '../../src/flags.js';
import { parseTenants, readSettings, formatTenant } from '../../src/commands/tenants.js';
import { parseKeys } from '../../src/commands/keys.js';
import { formatConversationTable, parseConversations } from '../../src/commands/conversations.js';
import { eventJson, parseExec } from '../../src/commands/exec.js';
import { agentTarget, parseSandboxes, sandboxToJson } from '../../src/commands/sandboxes.js';

function captureIo(): CliIo & { out: () => string; err: () => string } {
  let out = '';
  let err = '';
  return {
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s) },
    onInterrupt: () => () => undefined,
    out: () => out,
    err: () => err,
  };
}

/** Nothing listens here: a command that tried the network would fail with ECONNREFUSED, not 0/2. */
const OFFLINE = { HAKO_API_URL: 'http://127.0.0.1:1', HAKO_API_KEY: 'k', HAKO_ADMIN_TOKEN: 'a' };

test('MAIN_USAGE names every command main() dispatches, and main dispatches every command it names', () => {
  const src = readFileSync(fileURLToPath(new URL('../../src/main.ts', import.meta.url)), 'utf8');
  const dispatched = [...src.matchAll(/case '([a-z-]+)':/g)].map((m) => m[1] ?? '');
  const listed = [...MAIN_USAGE.matchAll(/^ {2}([a-z]+)/gm)].map((m) => m[1] ?? '');
  for (const c of ['tenants', 'keys', 'conversations', 'exec', 'sandboxes', 'up', 'demo']) {
    assert.ok(listed.includes(c), `MAIN_USAGE lists ${c}`);
  }
  for (const c of listed) {
    assert.ok(dispatched.includes(c), `main dispatches ${c}`);
  }
});

test('--help on every API command and subcommand prints its usage on stdout and answers 0', async () => {
  const cases: [string[], RegExp][] = [
    [['tenants', '--help'], /hako tenants create NAME/],
    [['tenants', 'create', '--help'], /Creates a tenant named NAME/],
    [['tenants', 'get', '-h'], /Shows the tenant ID/],
    [['keys', '--help'], /only time the key is shown/],
    [['keys', 'create', '--help'], /export HAKO_API_KEY=/],
    [['conversations', '--help'], /hako conversations list/],
    [['conversations', 'list', '--help'], /--before ID/],
    [['conversations', 'create', '-h'], /--no-workspace/],
    [['exec', '--help'], /Ctrl-C stops the run/],
    [['sandboxes', '--help'], /--owner ID/],
    [['sandboxes', 'list', '--help'], /HAKO_TLS_DIR/],
    [['help'], /commands:/],
  ];
  for (const [argv, expected] of cases) {
    const io = captureIo();
    assert.equal(await main(argv, OFFLINE, io), 0, argv.join(' '));
    assert.match(io.out(), expected, argv.join(' '));
    assert.equal(io.err(), '', argv.join(' '));
  }
});

test('usage mistakes answer 2 and say what is wrong, then the usage', async () => {
  const cases: [string[], RegExp][] = [
    [['tenants'], /missing subcommand/],
    [['tenants', 'delete', 'x'], /unknown subcommand "delete"/],
    [['tenants', 'create'], /missing NAME/],
    [['tenants', 'create', 'a', 'b'], /NAME is one argument/],
    [['tenants', 'create', 'a', '--settings', '[1]'], /must be a JSON object/],
    [['tenants', 'create', 'a', '--settings', '{nope'], /--settings is not JSON/],
    [['tenants', 'create', 'a', '--settings', '@/nonexistent/x.json'], /cannot read \/nonexistent\/x.json/],
    [['tenants', 'get'], /missing ID/],
    [['tenants', 'get', 'x', '--settings', '{}'], /--settings is for create/],
    [['keys', 'create'], /missing TENANT_ID/],
    [['keys', 'create', 'a', 'b'], /one TENANT_ID at a time/],
    [['keys', 'create', 'a', '--bogus'], /unknown flag --bogus/],
    [['conversations', 'list', '--limit', '0'], /--limit must be a whole number from 1 to 500/],
    [['conversations', 'list', '--title', 'x'], /--title is not a flag of list/],
    [['conversations', 'create', 'My title'], /a title is --title "My title"/],
    [['exec'], /missing CONVERSATION and PROMPT/],
    [['exec', 'c'], /missing PROMPT/],
    [['exec', 'c', 'write', 'hello'], /PROMPT is one argument: quote it \("write hello"\)/],
    [['exec', 'c', '  '], /PROMPT is empty/],
    [['sandboxes', 'list'], /--owner is required/],
    [['sandboxes', 'list', '--owner', 't', '--label', 'x'], /expected K=V/],
    [['frobnicate'], /unknown command "frobnicate"/],
    [[], /commands:/],
  ];
  for (const [argv, expected] of cases) {
    const io = captureIo();
    assert.equal(await main(argv, OFFLINE, io), 2, argv.join(' '));
    assert.match(io.err(), expected, argv.join(' '));
    assert.match(io.err(), /\nusage: hako /, argv.join(' ') || '(nothing)');
    assert.equal(io.out(), '', argv.join(' '));
  }
});

test('parsers: flags land where they belong', () => {
  assert.deepEqual(parseTenants(['create', 'acme corp', '--json', '--settings', '{}']), {
    kind: 'create',
    name: 'acme corp',
    settings: '{}',
    json: true,
  });
  assert.deepEqual(parseTenants(['get', 'abc']), { kind: 'get', id: 'abc', json: false });
  assert.deepEqual(parseKeys(['create', 't1', '--json']), { kind: 'create', tenantId: 't1', json: true });
  assert.deepEqual(parseConversations(['ls', '--limit=20', '--before', 'c9']), {
    kind: 'list',
    limit: 20,
    before: 'c9',
    json: false,
  });
  assert.deepEqual(parseConversations(['create', '--title', 'T', '--no-workspace', '--json']), {
    kind: 'create',
    title: 'T',
    workspaceEnabled: false,
    json: true,
  });
  assert.deepEqual(parseConversations(['create']), {
    kind: 'create',
    title: undefined,
    workspaceEnabled: true,
    json: false,
  });
  assert.deepEqual(parseExec(['c1', 'do it', '--json']), {
    kind: 'exec',
    conversationId: 'c1',
    prompt: 'do it',
    json: true,
  });
  // A prompt that starts with a dash goes after --.
  assert.deepEqual(parseExec(['c1', '--', '-v is verbose?']), {
    kind: 'exec',
    conversationId: 'c1',
    prompt: '-v is verbose?',
    json: false,
  });
  assert.deepEqual(parseSandboxes(['list', '--owner', 't1', '--label', 'hako.conversation=c=1']), {
    kind: 'list',
    ownerId: 't1',
    labels: { 'hako.conversation': 'c=1' },
    json: false,
  });
  assert.throws(() => parseExec(['c1']), UsageError);
});

test('--settings reads JSON inline or from @FILE', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'hako-cli-'));
  try {
    const file = join(dir, 's.json');
    writeFileSync(file, '{"limits":{"cpus":2}}\n');
    assert.deepEqual(await readSettings(`@${file}`), { limits: { cpus: 2 } });
    assert.deepEqual(await readSettings('{"egress_allow":["pypi.org:443"]}'), {
      egress_allow: ['pypi.org:443'],
    });
    await assert.rejects(readSettings('@'), /file name is missing/);
    await assert.rejects(readSettings('null'), /must be a JSON object/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('hakod target: AGENT_ADDRESS over HAKO_AGENT over the default; TLS dir from HAKO_TLS_DIR or HAKO_HOME', () => {
  assert.deepEqual(agentTarget({ HOME: '/home/u' }), {
    address: '127.0.0.1:7443',
    tlsDir: '/home/u/.hako/tls',
    insecure: false,
    token: undefined,
  });
  assert.equal(agentTarget({ HAKO_AGENT: 'h:1', AGENT_ADDRESS: 'a:2' }).address, 'a:2');
  assert.equal(agentTarget({ HAKO_AGENT: 'h:1' }).address, 'h:1');
  assert.equal(agentTarget({ HAKO_HOME: '/srv/hako' }).tlsDir, '/srv/hako/tls');
  assert.equal(
    agentTarget({ HAKO_HOME: '/srv/hako', HAKO_TLS_DIR: '~/certs', HOME: '/r' }).tlsDir,
    '/r/certs',
  );
  const insecure = agentTarget({ AGENT_INSECURE: '1', AGENT_AUTH_TOKEN: 'tok' });
  assert.equal(insecure.insecure, true);
  assert.equal(insecure.tlsDir, undefined);
  assert.equal(insecure.token, 'tok');
});

test('output formats: tenant, conversation table, sandbox JSON, exec JSON lines', () => {
  const tenant = formatTenant({
    id: 't1',
    name: 'acme',
    settings: { limits: { cpus: 1 } },
    created_at: '2025-01-01T00:00:00.000Z',
  });
  assert.match(tenant, /^id {8}t1\nname {6}acme\n/);
  assert.match(tenant, /settings\n {2}\{\n {4}"limits": \{/);

  const table = formatConversationTable([
    {
      id: 'c-1',
      title: null,
      workspace_enabled: false,
      session_id: null,
      context_tokens: 12,
      context_limit: 200000,
      status: 'idle',
      created_at: '2025-01-01T12:00:00.000Z',
      updated_at: '2025-01-02T13:45:10.000Z',
    },
  ]);
  const [head, row] = table.trimEnd().split('\n');
  assert.match(head ?? '', /^ID +STATUS +CONTEXT +UPDATED \(UTC\) +TITLE$/);
  assert.match(row ?? '', /^c-1 +idle +12\/200000 +2025-01-02 13:45 +- \(no workspace\)$/);

  const sb = sandboxToJson({
    id: 'abcdef123456',
    ownerId: 't1',
    image: 'host',
    imageDigest: '',
    labels: { a: 'b' },
    state: 2,
    limits: undefined,
    network: 2,
    ipAddress: '10.0.0.2',
    createdAtMs: Date.UTC(2025, 0, 1),
    lastActiveAtMs: 0,
    expiresAtMs: 0,
    fromPool: false,
    upstreams: ['anthropic'],
  });
  assert.equal(sb.state, 'running');
  assert.equal(sb.network, 'egress');
  assert.equal(sb.created_at, '2025-01-01T00:00:00.000Z');
  assert.equal(sb.last_active_at, null);

  assert.deepEqual(
    JSON.parse(eventJson({ id: '3', event: 'done', data: { type: 'done', seq: 3, status: 'completed' } })),
    {
      type: 'done',
      seq: 3,
      status: 'completed',
    },
  );
  assert.equal(
    (JSON.parse(eventJson({ id: undefined, event: 'odd', data: { x: 1 } })) as { type: string }).type,
    'odd',
  );
});

// Attachments and presented files on the whole stack (PostgreSQL, Redis, S3, hakod with real
// sandboxes, a hako-api process, the real Claude Code and the scripted model):
// - a multipart execute places its files in the workspace before the agent starts: the agent's
//   Bash `cat`s them (in a new sandbox, then in the reused one), they are listed as user_upload
//   and stored in S3;
// - the agent presents a file with the in-process `hako` MCP server's present_files (the tenant
//   has a non-empty allowlist): it is listed by GET .../files/presented; a second run changes it
//   (version 2) and presents a path that does not exist, which its done event reports;
//   GET .../file-versions/report.md lists versions 1 and 2 with their runs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import pg from 'pg';
import { S3_CLIENT_COMPAT } from '@hako/testkit';
import { parseSse, startStack } from '../helpers/stack.js';
import type { Stack } from '../helpers/stack.js';
import { callApi as call } from '../helpers/http-call.js';

const SMALL_DISK = 128 * 2 ** 20;
let stack: Stack | undefined;
const S = (): Stack => {
  if (!stack) throw new Error('the stack did not start');
  return stack;
};

async function tenantKey(
  base: string,
  settings: Record<string, unknown>,
): Promise<{ id: string; key: string }> {
  const s = S();
  const t = await call(base, s.adminToken, 'POST', '/v1/tenants', {
    name: `t-${randomBytes(3).toString('hex')}`,
    settings: { limits: { memory_bytes: 1024 ** 3, disk_bytes: SMALL_DISK }, ...settings },
  });
  assert.equal(t.status, 201, t.text);
  const k = await call(base, s.adminToken, 'POST', `/v1/tenants/${String(t.json.id)}/api-keys`);
  assert.equal(k.status, 201, k.text);
  return { id: String(t.json.id), key: String(k.json.key) };
}

function form(requestData: unknown, files: { name: string; content: string; type: string }[]): FormData {
  const f = new FormData();
  f.append('request_data', JSON.stringify(requestData));
  for (const file of files) f.append('files[]', new Blob([file.content], { type: file.type }), file.name);
  return f;
}

function outputs(events: ReturnType<typeof parseSse>): string {
  return events
    .filter((e) => e.event === 'tool_result')
    .map((e) => String(e.data.output))
    .join('\n');
}

before(async () => {
  stack = await startStack({ script: { turns: [{ text: 'idle' }] } });
});

after(async () => {
  await stack?.close();
});

test('a multipart execute places its files in the workspace before the agent starts, as user uploads', async () => {
  const s = S();
  const base = s.apis[0]!.url;
  const { id: tenantId, key } = await tenantKey(base, {});
  const conv = await call(base, key, 'POST', '/v1/conversations', {});
  assert.equal(conv.status, 201, conv.text);
  const id = String(conv.json.id);
  const secret = `attached-${randomBytes(6).toString('hex')}`;

  s.model.setScript({
    turns: [
      { tool: 'Bash', input: { command: 'cat data/input.txt; echo; cat notes.md' } },
      { text: 'read them' },
    ],
  });
  const r1 = await call(
    base,
    key,
    'POST',
    `/v1/conversations/${id}/execute`,
    form({ user_input: 'read the attachments', executor: { user_id: 'u-1', name: 'Ada' } }, [
      { name: 'data/input.txt', content: `${secret}\n`, type: 'text/plain' },
      { name: 'notes.md', content: '# notes-content\n', type: 'text/markdown' },
    ]),
  );
  assert.equal(r1.status, 200, r1.text);
  const ev1 = parseSse(r1.text);
  const done1 = ev1.at(-1)!;
  assert.equal(done1.event, 'done');
  assert.equal(done1.data.status, 'completed', JSON.stringify(done1.data));
  const steps = ev1
    .filter((e) => e.event === 'progress')
    .map((e) => `${String(e.data.step)}:${String(e.data.status)}`);
  assert.ok(steps.includes('attachments:done'), steps.join(','));
  const placed = ev1.find(
    (e) => e.event === 'progress' && e.data.step === 'attachments' && e.data.status === 'done',
  );
  assert.equal(placed?.data.files, 2);
  // placed before the agent started
  assert.ok(placed !== undefined && ev1.indexOf(placed) < ev1.findIndex((e) => e.event === 'tool_call'));
  const out1 = outputs(ev1);
  assert.match(out1, new RegExp(secret), out1);
  assert.match(out1, /# notes-content/);

  const files = await call(base, key, 'GET', `/v1/conversations/${id}/files`);
  assert.equal(files.status, 200, files.text);
  const list = files.json.files as { path: string; source: string; mime_type: string; version: number }[];
  const input = list.find((f) => f.path === 'data/input.txt');
  assert.equal(input?.source, 'user_upload', files.text);
  assert.equal(input?.version, 1, 'the sync-back found it unchanged');
  assert.equal(list.find((f) => f.path === 'notes.md')?.source, 'user_upload');

  const s3 = new S3Client({
    endpoint: s.s3.endpoint,
    region: s.s3.region,
    credentials: { accessKeyId: s.s3.accessKeyId, secretAccessKey: s.s3.secretAccessKey },
    ...S3_CLIENT_COMPAT,
  });
  try {
    const obj = await s3.send(
      new GetObjectCommand({ Bucket: s.s3.bucket, Key: `workspaces/${tenantId}/${id}/data/input.txt` }),
    );
    assert.equal(await obj.Body?.transformToString(), `${secret}\n`);
  } finally {
    s3.destroy();
  }

  // The second execute reuses the sandbox: its attachment is written there too.
  s.model.setScript({ turns: [{ tool: 'Bash', input: { command: 'cat second.txt' } }, { text: 'ok' }] });
  const r2 = await call(
    base,
    key,
    'POST',
    `/v1/conversations/${id}/execute`,
    form({ prompt: 'read the second one' }, [
      { name: 'second.txt', content: 'second-content\n', type: 'text/plain' },
    ]),
  );
  assert.equal(r2.status, 200, r2.text);
  const ev2 = parseSse(r2.text);
  const sandbox = ev2.find(
    (e) => e.event === 'progress' && e.data.step === 'sandbox' && e.data.status === 'done',
  );
  assert.equal(sandbox?.data.created, false, 'the sandbox was reused');
  assert.match(outputs(ev2), /second-content/);
  assert.equal(ev2.at(-1)?.data.status, 'completed');

  // An invalid file refuses the whole execute before the stream, storing nothing.
  const bad = await call(
    base,
    key,
    'POST',
    `/v1/conversations/${id}/execute`,
    form({ prompt: 'never runs' }, [
      { name: 'fine.txt', content: 'fine', type: 'text/plain' },
      { name: '../escape.txt', content: 'x', type: 'text/plain' },
    ]),
  );
  assert.equal(bad.status, 400, bad.text);
  assert.equal(bad.json.code, 'FILE_PATH_INVALID');
  const after = await call(base, key, 'GET', `/v1/conversations/${id}/files`);
  assert.ok(!(after.json.files as { path: string }[]).some((f) => f.path === 'fine.txt'), after.text);
  const db = new pg.Client({ connectionString: s.databaseUrl });
  await db.connect();
  try {
    const runs = await db.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM runs WHERE conversation_id = $1',
      [id],
    );
    assert.equal(runs.rows[0]?.n, 2, 'the refused execute created no run');
  } finally {
    await db.end();
  }
});

test('the agent presents files with the in-process hako MCP server; versions are listed', async () => {
  const s = S();
  const base = s.apis[0]!.url;
  // A non-empty allowlist: the hako tool is still offered and allowed.
  const { key } = await tenantKey(base, { allowed_tools: ['Bash', 'Read'] });
  const conv = await call(base, key, 'POST', '/v1/conversations', {});
  const id = String(conv.json.id);

  const before = s.model.requests.length;
  s.model.setScript({
    turns: [
      { tool: 'Bash', input: { command: "printf '# Report v1\\n' > report.md" } },
      {
        tool: 'mcp__hako__present_files',
        input: { paths: ['/workspace/report.md'], description: 'The quarterly report' },
      },
      { text: 'presented' },
    ],
  });
  const r1 = await call(base, key, 'POST', `/v1/conversations/${id}/execute`, { prompt: 'write the report' });
  assert.equal(r1.status, 200, r1.text);
  const ev1 = parseSse(r1.text);
  const done1 = ev1.at(-1)!.data;
  assert.equal(done1.status, 'completed', JSON.stringify(done1));
  const presentResult = ev1.find(
    (e) => e.event === 'tool_result' && String(e.data.output).includes('Marked for the user'),
  );
  assert.ok(presentResult, `present_files ran in the API process: ${outputs(ev1)}`);
  assert.equal(presentResult.data.is_error, false);
  assert.deepEqual(done1.presented_files, ['report.md']);
  assert.deepEqual(done1.presented_missing, []);
  const offered = s.model.requests
    .slice(before)
    .filter((r) => r.kind === 'main')
    .some((r) =>
      ((r.body as { tools?: { name?: string }[] }).tools ?? []).some(
        (t) => t.name === 'mcp__hako__present_files',
      ),
    );
  assert.ok(offered, 'Claude Code offered mcp__hako__present_files to the model');

  const p1 = await call(base, key, 'GET', `/v1/conversations/${id}/files/presented`);
  assert.equal(p1.status, 200, p1.text);
  const l1 = p1.json.files as Record<string, unknown>[];
  assert.equal(l1.length, 1, p1.text);
  assert.equal(l1[0]!.path, 'report.md');
  assert.equal(l1[0]!.version, 1);
  assert.equal(l1[0]!.description, 'The quarterly report');
  assert.equal(l1[0]!.size, '# Report v1\n'.length);
  const run1 = String(l1[0]!.run_id);

  // The second run changes it and presents a path that does not exist: reported in done.
  s.model.setScript({
    turns: [
      { tool: 'Bash', input: { command: "printf '# Report v2, longer\\n' > report.md" } },
      { tool: 'mcp__hako__present_files', input: { paths: ['report.md', 'missing.md'] } },
      { text: 'updated' },
    ],
  });
  const r2 = await call(base, key, 'POST', `/v1/conversations/${id}/execute`, {
    prompt: 'update the report',
  });
  assert.equal(r2.status, 200, r2.text);
  const done2 = parseSse(r2.text).at(-1)!.data;
  assert.equal(done2.status, 'completed', JSON.stringify(done2));
  assert.deepEqual(done2.presented_files, ['report.md']);
  assert.deepEqual(done2.presented_missing, ['missing.md']);

  const p2 = await call(base, key, 'GET', `/v1/conversations/${id}/files/presented`);
  const l2 = p2.json.files as Record<string, unknown>[];
  assert.equal(l2.length, 1, p2.text);
  assert.equal(l2[0]!.version, 2);
  assert.equal(l2[0]!.presented_version, 2);
  assert.equal(
    l2[0]!.description,
    'The quarterly report',
    'a mark without a description keeps the earlier one',
  );
  const run2 = String(l2[0]!.run_id);
  assert.notEqual(run1, run2);

  const v = await call(base, key, 'GET', `/v1/conversations/${id}/file-versions/report.md`);
  assert.equal(v.status, 200, v.text);
  const versions = v.json.versions as Record<string, unknown>[];
  assert.deepEqual(
    versions.map((x) => [x.version, x.source, x.run_id, x.current, x.size]),
    [
      [1, 'ai_created', run1, false, '# Report v1\n'.length],
      [2, 'ai_modified', run2, true, '# Report v2, longer\n'.length],
    ],
  );
  const download = await call(base, key, 'GET', `/v1/conversations/${id}/files/report.md`);
  assert.equal(download.text, '# Report v2, longer\n');

  // Another tenant sees none of it.
  const other = await tenantKey(base, {});
  for (const path of [
    `/v1/conversations/${id}/files/presented`,
    `/v1/conversations/${id}/file-versions/report.md`,
  ]) {
    const r = await call(base, other.key, 'GET', path);
    assert.equal(r.status, 404, r.text);
    assert.equal(r.json.code, 'CONVERSATION_NOT_FOUND');
  }
});

test('an upload or delete between runs survives the next run (the live sandbox is released, the workspace restored)', async () => {
  const s = S();
  const base = s.apis[0]!.url;
  const { key } = await tenantKey(base, {});
  const conv = await call(base, key, 'POST', '/v1/conversations', {});
  assert.equal(conv.status, 201, conv.text);
  const id = String(conv.json.id);

  // run 1 leaves a live sandbox and an agent-written file
  s.model.setScript({
    turns: [{ tool: 'Bash', input: { command: 'echo from-agent > agent.txt' } }, { text: 'ok' }],
  });
  const r1 = await call(base, key, 'POST', `/v1/conversations/${id}/execute`, { prompt: 'write agent.txt' });
  assert.equal(parseSse(r1.text).at(-1)?.data.status, 'completed', r1.text);

  // between runs: an upload, and a delete of the agent's file
  const token = `between-${randomBytes(6).toString('hex')}`;
  const up = await fetch(`${base}/v1/conversations/${id}/files?path=between.txt`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'text/plain' },
    body: `${token}\n`,
  });
  assert.equal(up.status, 201, await up.text());
  const del = await call(base, key, 'DELETE', `/v1/conversations/${id}/files/agent.txt`);
  assert.equal(del.status, 204, del.text);

  // run 2 sees the upload and not the deleted file; its sync-back keeps both changes
  s.model.setScript({
    turns: [
      { tool: 'Bash', input: { command: 'cat between.txt; ls agent.txt 2>&1 || true' } },
      { text: 'ok' },
    ],
  });
  const r2 = await call(base, key, 'POST', `/v1/conversations/${id}/execute`, { prompt: 'look' });
  const ev2 = parseSse(r2.text);
  assert.equal(ev2.at(-1)?.data.status, 'completed', r2.text);
  const out = outputs(ev2);
  assert.match(out, new RegExp(token), out);
  assert.match(out, /No such file/, out);
  const files = await call(base, key, 'GET', `/v1/conversations/${id}/files`);
  const paths = (files.json.files as { path: string; source: string }[]).map((f) => `${f.path}:${f.source}`);
  assert.ok(paths.includes('between.txt:user_upload'), paths.join(','));
  assert.ok(!paths.some((p) => p.startsWith('agent.txt:')), paths.join(','));
});

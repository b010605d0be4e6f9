// The whole product end to end: private PostgreSQL, Redis and S3 servers, hakod (mTLS, real
// sandboxes, the credential-injecting upstream to the scripted model), two hako-api processes.
// A real Claude Code session runs inside the conversation's sandbox; the test asserts the event
// stream, the file in S3 and in conversation_files, 409 on a concurrent execute (from the other
// API process), a resumed second execute that sees the file, tenant isolation, replay with
// Last-Event-ID, and that no secret of the API or hakod is visible to the agent.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3';
import pg from 'pg';
import { S3_CLIENT_COMPAT } from '@hako/testkit';
import { parseSse, startStack } from '../helpers/stack.js';
import type { Stack } from '../helpers/stack.js';
import { callApi as call } from '../helpers/http-call.js';

// The test host's workspace budget is 2 GiB: tenants here take 128 MiB workspaces.
const SMALL_DISK = 128 * 2 ** 20;
let stack: Stack | undefined;
const S = (): Stack => {
  if (!stack) throw new Error('the stack did not start');
  return stack;
};

const firstScript = {
  turns: [
    { tool: 'Bash', input: { command: 'echo hello-from-agent > note.txt && ls' } },
    {
      tool: 'Bash',
      input: { command: "sleep 2; env; cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'" },
    },
    { text: 'wrote note.txt' },
  ],
};
const secondScript = {
  turns: [{ tool: 'Bash', input: { command: 'cat note.txt' } }, { text: 'read it back' }],
};

before(async () => {
  stack = await startStack({ apiProcesses: 2, script: firstScript });
});

after(async () => {
  await stack?.close();
});

test('a conversation runs the agent in its sandbox, end to end, across two API processes', async () => {
  const s = S();
  const [a, b] = [s.apis[0]!.url, s.apis[1]!.url];
  const admin = s.adminToken;
  const t1 = await call(a, admin, 'POST', '/v1/tenants', {
    name: 'acme',
    settings: { limits: { memory_bytes: 1024 ** 3, disk_bytes: SMALL_DISK } },
  });
  assert.equal(t1.status, 201, t1.text);
  const key1 = await call(a, admin, 'POST', `/v1/tenants/${String(t1.json.id)}/api-keys`);
  assert.equal(key1.status, 201, key1.text);
  const k1 = String(key1.json.key);
  const t2 = await call(b, admin, 'POST', '/v1/tenants', {
    name: 'other',
    settings: { limits: { disk_bytes: SMALL_DISK } },
  });
  const k2 = String((await call(b, admin, 'POST', `/v1/tenants/${String(t2.json.id)}/api-keys`)).json.key);

  const conv = await call(a, k1, 'POST', '/v1/conversations', {});
  assert.equal(conv.status, 201, conv.text);
  const id = String(conv.json.id);

  // The first execute on API A; while it runs, API B refuses a second one on the conversation.
  const first = call(a, k1, 'POST', `/v1/conversations/${id}/execute`, { prompt: 'write a note' });
  let locked: Awaited<ReturnType<typeof call>> | undefined;
  for (let i = 0; i < 100 && locked?.status !== 409; i++) {
    await new Promise((r) => setTimeout(r, 200));
    locked = await call(b, k1, 'POST', `/v1/conversations/${id}/execute`, { prompt: 'again' });
  }
  assert.equal(locked?.status, 409, locked?.text);
  assert.equal(locked?.json.code, 'CONVERSATION_LOCKED');
  assert.match(locked?.headers.get('content-type') ?? '', /application\/problem\+json/);

  const r1 = await first;
  assert.equal(r1.status, 200, r1.text);
  const events = parseSse(r1.text);
  const types = events.map((e) => e.event);
  const order = ['init', 'tool_call', 'tool_result', 'assistant', 'done'].map((t) => types.indexOf(t));
  assert.ok(
    order.every((i) => i >= 0),
    `missing events in ${types.join(',')}`,
  );
  assert.deepEqual(
    [...order].sort((x, y) => x - y),
    order,
    `order: ${types.join(',')}`,
  );
  assert.equal(types.at(-1), 'done');
  const ids = events.map((e) => e.id);
  assert.ok(
    ids.every((v, i) => i === 0 || v > ids[i - 1]!),
    'ids increase',
  );
  assert.ok(events.every((e) => e.data.seq === e.id && typeof e.data.timestamp === 'string'));
  assert.ok(types.includes('title') && types.includes('progress') && types.includes('context_status'));
  const toolCall = events.find((e) => e.event === 'tool_call')!;
  assert.equal(toolCall.data.name, 'Bash');
  assert.ok(toolCall.data.sdk_message, 'events carry the SDK message');
  const done = events.at(-1)!.data;
  assert.equal(done.status, 'completed', JSON.stringify(done));
  assert.equal(done.result, 'wrote note.txt');
  const usage = done.usage as Record<string, number>;
  assert.ok((usage.input_tokens ?? 0) > 0 && (usage.output_tokens ?? 0) > 0);
  assert.ok(typeof done.session_id === 'string' && done.session_id !== '');

  // No secret reached the agent: the env dump of every process in the sandbox holds none.
  const dump = events
    .filter((e) => e.event === 'tool_result')
    .map((e) => String(e.data.output))
    .join('\n');
  assert.match(dump, /ANTHROPIC_BASE_URL=/, 'the env dump ran');
  for (const secret of [
    s.modelKey,
    ...Object.values(s.apiSecrets),
    s.adminToken,
    k1,
    s.databaseUrl,
    s.redisUrl,
  ]) {
    assert.ok(!dump.includes(secret), `a secret leaked into the sandbox: ${secret.slice(0, 12)}…`);
  }
  assert.doesNotMatch(dump, /S3_SECRET_ACCESS_KEY|DATABASE_URL|REDIS_URL|HAKO_ADMIN_TOKEN/);
  // The scripted model saw the real key: hakod's proxy injected it on the way out.
  assert.ok(s.model.requests.length > 0);
  assert.ok(s.model.requests.every((r) => r.headers['x-api-key'] === s.modelKey));

  // The file is in S3 and registered, readable through the other API process.
  const s3 = new S3Client({
    endpoint: s.s3.endpoint,
    region: s.s3.region,
    credentials: { accessKeyId: s.s3.accessKeyId, secretAccessKey: s.s3.secretAccessKey },
    ...S3_CLIENT_COMPAT,
  });
  try {
    const obj = await s3.send(
      new GetObjectCommand({ Bucket: s.s3.bucket, Key: `workspaces/${String(t1.json.id)}/${id}/note.txt` }),
    );
    assert.equal(await obj.Body?.transformToString(), 'hello-from-agent\n');
  } finally {
    s3.destroy();
  }
  const files = await call(b, k1, 'GET', `/v1/conversations/${id}/files`);
  assert.equal(files.status, 200, files.text);
  const list = (files.json.files ?? files.json.items) as { path: string; source: string; sha256: string }[];
  const note = list.find((f) => f.path === 'note.txt');
  assert.ok(note, files.text);
  assert.equal(note.source, 'ai_created');
  assert.ok(!list.some((f) => f.path.startsWith('.hako/')), 'agent state is never listed');
  const db = new pg.Client({ connectionString: s.databaseUrl });
  await db.connect();
  try {
    const row = await db.query<{ size: string; mime_type: string }>(
      'SELECT size, mime_type FROM conversation_files WHERE conversation_id = $1 AND path = $2',
      [id, 'note.txt'],
    );
    assert.equal(Number(row.rows[0]?.size), 'hello-from-agent\n'.length);
    assert.equal(row.rows[0]?.mime_type, 'text/plain');
  } finally {
    await db.end();
  }
  const download = await call(b, k1, 'GET', `/v1/conversations/${id}/files/note.txt`);
  assert.equal(download.text, 'hello-from-agent\n');

  // Tenant isolation: the other tenant sees nothing of it.
  for (const path of [
    `/v1/conversations/${id}`,
    `/v1/conversations/${id}/files`,
    `/v1/conversations/${id}/events`,
  ]) {
    const r = await call(b, k2, 'GET', path);
    assert.equal(r.status, 404, `${path}: ${r.text}`);
  }
  assert.equal((await call(b, k2, 'POST', `/v1/conversations/${id}/execute`, { prompt: 'x' })).status, 404);

  // Replay from the other process, resumed after an event id.
  const mid = events[Math.floor(events.length / 2)]!.id;
  const replay = parseSse(
    (await call(b, k1, 'GET', `/v1/conversations/${id}/events`, undefined, { 'last-event-id': String(mid) }))
      .text,
  );
  assert.deepEqual(
    replay.map((e) => e.id),
    events.filter((e) => e.id > mid).map((e) => e.id),
  );

  // A second execute, on API B, resumes the session in the (reused) sandbox and sees the file.
  s.model.setScript(secondScript);
  const r2 = await call(b, k1, 'POST', `/v1/conversations/${id}/execute`, { prompt: 'read the note' });
  const ev2 = parseSse(r2.text);
  assert.equal(ev2.at(-1)?.data.status, 'completed', r2.text.slice(-2000));
  assert.ok(ev2[0]!.id > events.at(-1)!.id, 'seq continues across runs');
  const out2 = ev2.find((e) => e.event === 'tool_result');
  assert.match(String(out2?.data.output), /hello-from-agent/);
  assert.equal(
    ev2.find((e) => e.event === 'init')?.data.session_id,
    done.session_id,
    'the session was resumed',
  );
  const conv2 = await call(a, k1, 'GET', `/v1/conversations/${id}`);
  assert.equal(conv2.json.title, 'write a note');
});

test('a client that disconnects cancels its run: done cancelled is stored and the lock is free', async () => {
  const s = S();
  const a = s.apis[0]!.url;
  const t = await call(a, s.adminToken, 'POST', '/v1/tenants', {
    name: 'cancel',
    settings: { limits: { disk_bytes: SMALL_DISK } },
  });
  const key = String(
    (await call(a, s.adminToken, 'POST', `/v1/tenants/${String(t.json.id)}/api-keys`)).json.key,
  );
  const id = String((await call(a, key, 'POST', '/v1/conversations', {})).json.id);
  s.model.setScript({
    turns: [{ tool: 'Bash', input: { command: 'sleep 60; echo late > late.txt' } }, { text: 'too late' }],
  });
  const abort = new AbortController();
  const res = await fetch(`${a}/v1/conversations/${id}/execute`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'sleep a while' }),
    signal: abort.signal,
  });
  assert.equal(res.status, 200);
  let seen = '';
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    seen += Buffer.from(chunk).toString('utf8');
    if (seen.includes('event: tool_call')) break;
  }
  assert.match(seen, /event: tool_call/);
  abort.abort();

  // The run ends by itself (the SDK's grace period, then a kill in the sandbox).
  let events: ReturnType<typeof parseSse> = [];
  for (let i = 0; i < 60 && events.at(-1)?.event !== 'done'; i++) {
    await new Promise((r) => setTimeout(r, 500));
    events = parseSse((await call(a, key, 'GET', `/v1/conversations/${id}/events`)).text);
  }
  const done = events.at(-1);
  assert.equal(done?.event, 'done', events.map((e) => e.event).join(','));
  assert.equal(done?.data.status, 'cancelled');
  assert.ok(events.some((e) => e.event === 'error' && e.data.code === 'RUN_CANCELLED'));
  // The lock was released: the next execute runs (and the killed sleep never wrote its file).
  s.model.setScript({
    turns: [{ tool: 'Bash', input: { command: 'ls; pgrep -c sleep || true' } }, { text: 'ok' }],
  });
  const next = await call(a, key, 'POST', `/v1/conversations/${id}/execute`, { prompt: 'again' });
  assert.equal(next.status, 200, next.text);
  const ev = parseSse(next.text);
  assert.equal(ev.at(-1)?.data.status, 'completed');
  const out = String(ev.find((e) => e.event === 'tool_result')?.data.output);
  assert.doesNotMatch(out, /late\.txt/);
  assert.match(out, /^0$/m, 'no sleep of the cancelled run is left in the sandbox');
});

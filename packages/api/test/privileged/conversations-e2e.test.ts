// Conversations on the whole stack (hakod with real sandboxes, a hako-api process, PostgreSQL,
// Redis, S3, the scripted model): the message history of two real executes with tool calls, the
// title from the first exchange and a PATCHed title that a run never overwrites, archive (sandbox
// released, execute and upload refused with CONVERSATION_ARCHIVED, the workspace back after
// unarchive), and delete (no sandbox, no S3 object, no row left; refused during a run).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { S3Client, ListObjectsV2Command } from '@aws-sdk/client-s3';
import { S3_CLIENT_COMPAT } from '@hako/testkit';
import { titleFromPrompt } from '../../src/execute/execute-run.js';
import { CONVERSATION_LABEL } from '../../src/nodes/conversation-sandbox.js';
import { parseSse, startStack } from '../helpers/stack.js';
import type { Stack } from '../helpers/stack.js';
import { callApi as call } from '../helpers/http-call.js';
import type { ApiAnswer } from '../helpers/http-call.js';

const SMALL_DISK = 128 * 2 ** 20;
let stack: Stack | undefined;
const S = (): Stack => {
  if (!stack) throw new Error('the stack did not start');
  return stack;
};

const writeScript = {
  turns: [
    {
      text: 'I will write the file.',
      tool: 'Bash',
      input: { command: 'echo one > one.txt && echo written' },
    },
    { text: 'wrote one.txt' },
  ],
};
const readScript = {
  turns: [{ tool: 'Bash', input: { command: 'cat one.txt' } }, { text: 'it says one' }],
};

async function execute(
  base: string,
  key: string,
  id: string,
  prompt: string,
): Promise<ReturnType<typeof parseSse>> {
  const r = await call(base, key, 'POST', `/v1/conversations/${id}/execute`, { prompt });
  assert.equal(r.status, 200, r.text);
  const events = parseSse(r.text);
  assert.equal(events.at(-1)?.data.status, 'completed', r.text.slice(-2000));
  return events;
}

async function objectKeys(s: Stack, prefix: string): Promise<string[]> {
  const client = new S3Client({
    endpoint: s.s3.endpoint,
    region: s.s3.region,
    credentials: { accessKeyId: s.s3.accessKeyId, secretAccessKey: s.s3.secretAccessKey },
    ...S3_CLIENT_COMPAT,
  });
  try {
    const r = await client.send(new ListObjectsV2Command({ Bucket: s.s3.bucket, Prefix: prefix }));
    return (r.Contents ?? []).map((o) => o.Key ?? '');
  } finally {
    client.destroy();
  }
}

async function sandboxesOf(s: Stack, tenantId: string, conversationId: string): Promise<string[]> {
  const list = await s.agent.manager.listSandboxes(tenantId, { [CONVERSATION_LABEL]: conversationId });
  return list.map((x) => x.id);
}

async function rowCounts(db: pg.Client, conversationId: string): Promise<number[]> {
  const out: number[] = [];
  for (const [table, col] of [
    ['conversations', 'id'],
    ['runs', 'conversation_id'],
    ['conversation_events', 'conversation_id'],
    ['conversation_files', 'conversation_id'],
    ['workspace_objects', 'conversation_id'],
  ] as const) {
    const r = await db.query<{ n: string }>(`SELECT count(*) AS n FROM ${table} WHERE ${col} = $1`, [
      conversationId,
    ]);
    out.push(Number(r.rows[0]?.n ?? 0));
  }
  return out;
}

before(async () => {
  stack = await startStack({ script: writeScript });
});

after(async () => {
  await stack?.close();
});

test(
  'messages, title, archive and delete of conversations that really ran',
  { timeout: 600_000 },
  async () => {
    const s = S();
    const api = s.apis[0]!.url;
    const t = await call(api, s.adminToken, 'POST', '/v1/tenants', {
      name: 'conversations',
      settings: { limits: { memory_bytes: 1024 ** 3, disk_bytes: SMALL_DISK } },
    });
    assert.equal(t.status, 201, t.text);
    const tenantId = String(t.json.id);
    const key = String((await call(api, s.adminToken, 'POST', `/v1/tenants/${tenantId}/api-keys`)).json.key);
    const db = new pg.Client({ connectionString: s.databaseUrl });
    await db.connect();
    try {
      const conv = await call(api, key, 'POST', '/v1/conversations', { user_id: 'alice' });
      assert.equal(conv.status, 201, conv.text);
      const id = String(conv.json.id);
      assert.equal(conv.json.title, null);

      // Two executes with tool calls: the first one titles the conversation.
      const prompt1 = 'Please   write one.txt\nwith the word one in it';
      s.model.setScript(writeScript);
      const ev1 = await execute(api, key, id, prompt1);
      const titleEvent = ev1.find((e) => e.event === 'title');
      assert.equal(titleEvent?.data.title, titleFromPrompt(prompt1));
      assert.equal(titleFromPrompt(prompt1), 'Please write one.txt');
      assert.equal(
        (await call(api, key, 'GET', `/v1/conversations/${id}`)).json.title,
        'Please write one.txt',
      );
      s.model.setScript(readScript);
      const ev2 = await execute(api, key, id, 'read it back');
      assert.equal(
        ev2.find((e) => e.event === 'title'),
        undefined,
        'only the first exchange titles',
      );
      assert.equal(
        (await call(api, key, 'GET', `/v1/conversations/${id}`)).json.title,
        'Please write one.txt',
      );

      // The history: both prompts and the agent's answers, in order, as Messages API blocks.
      const history = await call(api, key, 'GET', `/v1/conversations/${id}/messages`);
      assert.equal(history.status, 200, history.text);
      assert.equal(history.json.next_cursor, null);
      type Msg = { run_id: string; role: string; content: Record<string, unknown>[] };
      const msgs = history.json.messages as Msg[];
      const run1 = String(ev1[0]!.data.run_id);
      const run2 = String(ev2[0]!.data.run_id);
      const flat = msgs.flatMap((m) =>
        m.content.map((b) => {
          const what =
            b.type === 'text'
              ? String(b.text)
              : b.type === 'tool_use'
                ? `${String(b.name)} ${JSON.stringify(b.input)}`
                : b.type === 'tool_result'
                  ? String(b.content).trim()
                  : String(b.type);
          return `${m.run_id === run1 ? 1 : m.run_id === run2 ? 2 : '?'} ${m.role} ${String(b.type)}: ${what}`;
        }),
      );
      const expected = [
        `1 user text: ${prompt1}`,
        '1 assistant text: I will write the file.',
        '1 assistant tool_use: Bash {"command":"echo one > one.txt && echo written"}',
        '1 tool tool_result: written',
        '1 assistant text: wrote one.txt',
        '2 user text: read it back',
        '2 assistant tool_use: Bash {"command":"cat one.txt"}',
        '2 tool tool_result: one',
        '2 assistant text: it says one',
      ];
      // Claude Code may add thinking blocks; everything else is exactly the exchange.
      assert.deepEqual(
        flat.filter((l) => !/ (thinking|redacted_thinking):/.test(l)),
        expected,
        flat.join('\n'),
      );
      const toolUse = msgs.flatMap((m) => m.content).find((b) => b.type === 'tool_use')!;
      const toolResult = msgs.flatMap((m) => m.content).find((b) => b.type === 'tool_result')!;
      assert.equal(toolResult.tool_use_id, toolUse.id, 'a result names its call');
      // Paged one message at a time, the same history.
      const paged: Msg[] = [];
      let cursor: string | null = null;
      do {
        const q: string = cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`;
        const r = await call(api, key, 'GET', `/v1/conversations/${id}/messages?limit=1${q}`);
        assert.equal(r.status, 200, r.text);
        paged.push(...(r.json.messages as Msg[]));
        cursor = r.json.next_cursor as string | null;
      } while (cursor !== null && paged.length <= msgs.length);
      assert.deepEqual(paged, msgs);

      // A title PATCHed while a run is in progress is not replaced when the run ends.
      const other = await call(api, key, 'POST', '/v1/conversations', {});
      const otherId = String(other.json.id);
      s.model.setScript({
        turns: [{ tool: 'Bash', input: { command: 'sleep 3; echo two > two.txt' } }, { text: 'slept' }],
      });
      const running = call(api, key, 'POST', `/v1/conversations/${otherId}/execute`, {
        prompt: 'sleep then write',
      });
      let state: ApiAnswer | undefined;
      for (let i = 0; i < 100 && state?.json.status !== 'running'; i++) {
        await new Promise((r) => setTimeout(r, 100));
        state = await call(api, key, 'GET', `/v1/conversations/${otherId}`);
      }
      assert.equal(state?.json.status, 'running');
      const patched = await call(api, key, 'PATCH', `/v1/conversations/${otherId}`, {
        title: 'My own title',
      });
      assert.equal(patched.status, 200, patched.text);
      // Delete and archive are refused while it runs.
      const delLocked = await call(api, key, 'DELETE', `/v1/conversations/${otherId}`);
      assert.equal(delLocked.status, 409, delLocked.text);
      assert.equal(delLocked.json.code, 'CONVERSATION_LOCKED');
      const archLocked = await call(api, key, 'POST', `/v1/conversations/${otherId}/archive`);
      assert.equal(archLocked.status, 409);
      assert.equal(archLocked.json.code, 'CONVERSATION_LOCKED');
      const r3 = await running;
      assert.equal(parseSse(r3.text).at(-1)?.data.status, 'completed', r3.text.slice(-2000));
      assert.equal(parseSse(r3.text).find((e) => e.event === 'title')?.data.title, 'sleep then write');
      const afterRun = await call(api, key, 'GET', `/v1/conversations/${otherId}`);
      assert.equal(afterRun.json.title, 'My own title');
      assert.equal(afterRun.json.archived, false);

      // Archive: the sandbox goes, the data stays, executes and uploads are refused before any stream.
      assert.ok((await sandboxesOf(s, tenantId, id)).length > 0, 'the conversation has a sandbox');
      const archived = await call(api, key, 'POST', `/v1/conversations/${id}/archive`);
      assert.equal(archived.status, 200, archived.text);
      assert.equal(archived.json.archived, true);
      assert.deepEqual(await sandboxesOf(s, tenantId, id), [], 'archive released the sandbox');
      const refused = await call(api, key, 'POST', `/v1/conversations/${id}/execute`, { prompt: 'more' });
      assert.equal(refused.status, 409, refused.text);
      assert.equal(refused.json.code, 'CONVERSATION_ARCHIVED');
      assert.match(refused.headers.get('content-type') ?? '', /application\/problem\+json/);
      const upload = await fetch(`${api}/v1/conversations/${id}/files?path=x.txt`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'text/plain' },
        body: 'x',
      });
      assert.equal(upload.status, 409);
      assert.equal(((await upload.json()) as { code: string }).code, 'CONVERSATION_ARCHIVED');
      const listed = await call(api, key, 'GET', '/v1/conversations?user_id=alice');
      assert.deepEqual(listed.json.conversations, [], 'hidden from the default list');
      const archivedList = await call(api, key, 'GET', '/v1/conversations?status=archived');
      assert.deepEqual(
        (archivedList.json.conversations as { id: string }[]).map((c) => c.id),
        [id],
      );
      assert.equal(
        (await call(api, key, 'GET', `/v1/conversations/${id}/messages`)).json.messages instanceof Array,
        true,
      );

      // Unarchived, it runs again in a new sandbox restored from S3 (the data was kept).
      assert.equal((await call(api, key, 'POST', `/v1/conversations/${id}/unarchive`)).status, 200);
      s.model.setScript(readScript);
      const ev3 = await execute(api, key, id, 'read it again');
      assert.equal(
        ev3.find((e) => e.event === 'progress' && e.data.step === 'sandbox' && e.data.status === 'done')?.data
          .created,
        true,
      );
      assert.equal(String(ev3.find((e) => e.event === 'tool_result')?.data.output).trim(), 'one');

      // Delete: no sandbox, no object, no row of it; the other conversation is untouched.
      const prefix = `workspaces/${tenantId}/${id}/`;
      assert.ok((await objectKeys(s, prefix)).includes(`${prefix}one.txt`));
      assert.ok((await sandboxesOf(s, tenantId, id)).length > 0);
      const otherKeys = await objectKeys(s, `workspaces/${tenantId}/${otherId}/`);
      assert.ok(otherKeys.includes(`workspaces/${tenantId}/${otherId}/two.txt`));
      const otherRows = await rowCounts(db, otherId);
      const otherSandboxes = await sandboxesOf(s, tenantId, otherId);
      const del = await call(api, key, 'DELETE', `/v1/conversations/${id}`);
      assert.equal(del.status, 204, del.text);
      assert.deepEqual(await objectKeys(s, prefix), []);
      assert.deepEqual(await rowCounts(db, id), [0, 0, 0, 0, 0]);
      assert.deepEqual(await sandboxesOf(s, tenantId, id), []);
      const gone = await call(api, key, 'GET', `/v1/conversations/${id}`);
      assert.equal(gone.status, 404);
      assert.equal(gone.json.code, 'CONVERSATION_NOT_FOUND');
      assert.deepEqual(await objectKeys(s, `workspaces/${tenantId}/${otherId}/`), otherKeys);
      assert.deepEqual(await rowCounts(db, otherId), otherRows);
      assert.deepEqual(await sandboxesOf(s, tenantId, otherId), otherSandboxes);
      assert.equal((await call(api, key, 'GET', `/v1/conversations/${otherId}`)).json.title, 'My own title');
    } finally {
      await db.end();
    }
  },
);

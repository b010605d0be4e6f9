// The scripted model's Bedrock mode, offline: requests signed by hakod's own upstream signer
// (@smithy/signature-v4 inside authorizeUpstreamRequest) are answered with the script framed as an
// AWS event stream; unsigned, wrongly signed or tampered requests are refused. The verifier is an
// independent node:crypto implementation, so agreeing with smithy is itself the check.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { request } from 'node:http';
import { authorizeUpstreamRequest, resolveUpstreams } from '../../../sandbox/src/upstreams.js';
import {
  bedrockStreamEvents,
  decodeEventStream,
  encodeEventStreamMessage,
  startScriptedModel,
} from '../../src/index.js';
import type { BedrockCredentials } from '../../src/index.js';

const MODEL_ID = 'us.anthropic.claude-sonnet-4-5-20250929-v1:0';

function creds(): BedrockCredentials {
  return {
    region: 'eu-west-3',
    accessKeyId: `AKIA${randomBytes(8).toString('hex').toUpperCase()}`,
    secretAccessKey: randomBytes(20).toString('base64'),
    sessionToken: `token-${randomBytes(12).toString('hex')}`,
  };
}

/** Signs like hakod's proxy does (with `secret`, possibly the wrong one) and sends it. */
async function send(
  url: string,
  c: BedrockCredentials,
  opts: {
    path: string;
    method?: string;
    body?: string;
    secret?: string;
    tamper?: boolean;
    unsigned?: boolean;
  },
): Promise<{ status: number; headers: Record<string, unknown>; body: Buffer }> {
  const method = opts.method ?? 'POST';
  const body = Buffer.from(opts.body ?? '', 'utf8');
  const upstream = resolveUpstreams({
    bedrock: { ...c, secretAccessKey: opts.secret ?? c.secretAccessKey, endpoint: url },
  }).get('bedrock')!;
  const q = opts.path.indexOf('?');
  const signed = await authorizeUpstreamRequest(upstream, {
    method,
    path: q < 0 ? opts.path : opts.path.slice(0, q),
    query: q < 0 ? '' : opts.path.slice(q),
    headers: [
      ['content-type', 'application/json'],
      ['anthropic-beta', 'claude-code-20250219'],
    ],
    body,
  });
  const headers = opts.unsigned
    ? signed.headers.filter(([n]) => n.toLowerCase() !== 'authorization')
    : signed.headers;
  const sent = opts.tamper ? Buffer.from(`${opts.body} `) : body;
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: u.hostname,
        port: u.port,
        method,
        path: signed.path,
        headers: Object.fromEntries(
          headers.map(([n, v]) => [n, n.toLowerCase() === 'content-length' ? String(sent.length) : v]),
        ),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
        );
      },
    );
    req.on('error', reject);
    req.end(sent);
  });
}

const BODY = JSON.stringify({
  anthropic_version: 'bedrock-2023-05-31',
  max_tokens: 128000,
  messages: [{ role: 'user', content: [{ type: 'text', text: 'list the files' }] }],
  tools: [{ name: 'Bash', description: 'run a command', input_schema: { type: 'object' } }],
  system: [{ type: 'text', text: 'You are Claude Code.' }],
});

test('event-stream framing: prelude and message CRCs, string headers, round trip', () => {
  const m = encodeEventStreamMessage({ ':event-type': 'chunk', a: 'b' }, Buffer.from('{"x":1}'));
  assert.equal(m.readUInt32BE(0), m.length);
  const [d] = decodeEventStream(m);
  assert.deepEqual(d!.headers, { ':event-type': 'chunk', a: 'b' });
  assert.equal(d!.payload.toString(), '{"x":1}');
  const broken = Buffer.from(m);
  broken[broken.length - 6] = broken[broken.length - 6]! ^ 1;
  assert.throws(() => decodeEventStream(broken), /bad message CRC/);
});

test('bedrock mode: a request signed by hakod’s signer is answered with the script as an event stream', async () => {
  const c = creds();
  const model = await startScriptedModel({
    script: { turns: [{ tool: 'Bash', input: { command: 'ls -la' } }, { text: 'done' }] },
    bedrock: c,
  });
  try {
    const res = await send(model.url, c, {
      path: `/model/${MODEL_ID}/invoke-with-response-stream`,
      body: BODY,
    });
    assert.equal(res.status, 200, res.body.toString());
    assert.equal(res.headers['content-type'], 'application/vnd.amazon.eventstream');
    const frames = decodeEventStream(res.body);
    assert.ok(frames.length > 3);
    for (const f of frames) {
      assert.deepEqual(f.headers, {
        ':event-type': 'chunk',
        ':content-type': 'application/json',
        ':message-type': 'event',
      });
    }
    const events = bedrockStreamEvents(res.body);
    assert.equal(events[0]!.type, 'message_start');
    assert.equal((events[0]!.message as { model: string }).model, MODEL_ID);
    assert.equal(events.at(-1)!.type, 'message_stop');
    const start = events.find(
      (e) => e.type === 'content_block_start' && (e.content_block as { type: string }).type === 'tool_use',
    );
    assert.equal((start!.content_block as { name: string }).name, 'Bash');
    const [seen] = model.requests;
    assert.equal(seen!.kind, 'main');
    assert.deepEqual(seen!.bedrock, { modelId: MODEL_ID, signature: 'ok' });
    assert.equal(seen!.path, `/model/${MODEL_ID}/invoke-with-response-stream`);

    // The non-streaming invoke answers the next turn as one JSON message.
    const whole = await send(model.url, c, { path: `/model/${MODEL_ID}/invoke`, body: BODY });
    assert.equal(whole.status, 200);
    const msg = JSON.parse(whole.body.toString()) as { model: string; content: { type: string }[] };
    assert.equal(msg.model, MODEL_ID);

    // ListInferenceProfiles (Claude Code asks at start) is signed too, and answered empty.
    const profiles = await send(model.url, c, {
      method: 'GET',
      path: '/inference-profiles?type=SYSTEM_DEFINED',
    });
    assert.equal(profiles.status, 200, profiles.body.toString());
    assert.deepEqual(JSON.parse(profiles.body.toString()), { inferenceProfileSummaries: [] });
  } finally {
    await model.close();
  }
});

test('bedrock mode: unsigned, wrongly signed and tampered requests are refused with 403', async () => {
  const c = creds();
  const model = await startScriptedModel({ script: { turns: [{ text: 'hi' }] }, bedrock: c });
  try {
    const path = `/model/${MODEL_ID}/invoke-with-response-stream`;
    const cases = [
      { opts: { unsigned: true }, why: /not signed/ },
      { opts: { secret: `${c.secretAccessKey}x` }, why: /signature does not match/ },
      { opts: { tamper: true }, why: /payload hash does not match/ },
    ];
    for (const { opts, why } of cases) {
      const res = await send(model.url, c, { path, body: BODY, ...opts });
      assert.equal(res.status, 403);
      assert.equal(res.headers['x-amzn-errortype'], 'InvalidSignatureException');
      assert.match(res.body.toString(), why);
    }
    assert.deepEqual(
      model.requests.map((r) => r.kind),
      ['unsigned', 'unsigned', 'unsigned'],
    );
    assert.ok(model.requests.every((r) => r.response === undefined));
  } finally {
    await model.close();
  }
});

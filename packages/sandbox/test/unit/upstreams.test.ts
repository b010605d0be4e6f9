import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError } from '@hako/core';
import type { ErrorCode } from '@hako/core';
import {
  UPSTREAM_PLACEHOLDER_KEY,
  authorizeUpstreamRequest,
  bedrockEndpoint,
  parseUpstreamTarget,
  resolveUpstreams,
  upstreamEnv,
  upstreamNames,
} from '../../src/upstreams.js';
import type { UpstreamsConfig } from '../../src/upstreams.js';

const API_KEY = 'sk-ant-real-unit-0123456789';
const AWS_SECRET = 'unit/secret+key/0123456789abcdef';
const CONFIG: UpstreamsConfig = {
  anthropic: { baseUrl: 'https://api.anthropic.com', apiKey: API_KEY },
  bedrock: { region: 'eu-west-3', accessKeyId: 'AKIAUNITTEST', secretAccessKey: AWS_SECRET },
};

function hasCode(code: ErrorCode, text?: RegExp) {
  return (e: unknown): boolean =>
    e instanceof AppError && e.code === code && (text === undefined || text.test(e.message));
}

test('upstreamEnv for anthropic points at the proxy and carries only the placeholder key', () => {
  const env = upstreamEnv(['anthropic'], 'http://10.201.0.1:3128', CONFIG);
  assert.deepEqual(env, {
    ANTHROPIC_BASE_URL: 'http://10.201.0.1:3128/_hako/upstream/anthropic',
    ANTHROPIC_API_KEY: UPSTREAM_PLACEHOLDER_KEY,
    NO_PROXY: '10.201.0.1',
    no_proxy: '10.201.0.1',
  });
  assert.equal(UPSTREAM_PLACEHOLDER_KEY, 'hako-placeholder-key');
});

test("upstreamEnv for bedrock sets Claude Code's Bedrock variables and the configured region", () => {
  const env = upstreamEnv(['bedrock'], 'http://10.201.0.1:3128/', CONFIG);
  assert.deepEqual(env, {
    CLAUDE_CODE_USE_BEDROCK: '1',
    ANTHROPIC_BEDROCK_BASE_URL: 'http://10.201.0.1:3128/_hako/upstream/bedrock',
    CLAUDE_CODE_SKIP_BEDROCK_AUTH: '1',
    AWS_REGION: 'eu-west-3',
    NO_PROXY: '10.201.0.1',
    no_proxy: '10.201.0.1',
  });
});

test('upstreamEnv for both, duplicates collapsed, holds no secret; none gives {}', () => {
  const env = upstreamEnv(['anthropic', 'bedrock', 'anthropic'], 'http://[fd00::1]:3128', CONFIG);
  assert.equal(Object.keys(env).length, 8);
  assert.equal(env.ANTHROPIC_BASE_URL, 'http://[fd00::1]:3128/_hako/upstream/anthropic');
  assert.equal(env.NO_PROXY, 'fd00::1');
  const text = JSON.stringify(env);
  for (const secret of [API_KEY, AWS_SECRET, 'AKIAUNITTEST']) assert.ok(!text.includes(secret), secret);
  assert.deepEqual(upstreamEnv([], 'not even a url', undefined), {});
});

test('unknown names are INVALID_ARGUMENT, unconfigured ones UPSTREAM_NOT_CONFIGURED', () => {
  assert.throws(
    () => upstreamEnv(['openai'], 'http://10.201.0.1:3128', CONFIG),
    hasCode('INVALID_ARGUMENT', /unknown upstream "openai"/),
  );
  assert.throws(
    () => upstreamEnv(['bedrock'], 'http://10.201.0.1:3128', { anthropic: CONFIG.anthropic }),
    hasCode('UPSTREAM_NOT_CONFIGURED', /"bedrock"/),
  );
  assert.throws(() => upstreamNames(['anthropic'], undefined), hasCode('UPSTREAM_NOT_CONFIGURED'));
  assert.throws(() => upstreamNames(['constructor'], CONFIG), hasCode('INVALID_ARGUMENT'));
  assert.deepEqual(upstreamNames(['bedrock', 'bedrock'], CONFIG), ['bedrock']);
  assert.throws(() => upstreamEnv(['anthropic'], '', CONFIG), hasCode('INVALID_ARGUMENT', /not a URL/));
  assert.throws(
    () => upstreamEnv(['anthropic'], 'ftp://10.0.0.1:21', CONFIG),
    hasCode('INVALID_ARGUMENT', /http:\/\/host:port/),
  );
});

test('resolveUpstreams checks base URLs: https anywhere, http only to loopback, nothing extra', () => {
  const ok = resolveUpstreams({
    anthropic: { baseUrl: 'https://gw.example.com:8443/anthropic/', apiKey: API_KEY },
    bedrock: { region: 'us-east-1', accessKeyId: 'AK', secretAccessKey: AWS_SECRET },
  });
  const a = ok.get('anthropic')!;
  assert.equal(a.protocol, 'https:');
  assert.equal(a.hostname, 'gw.example.com');
  assert.equal(a.port, 8443);
  assert.equal(a.host, 'gw.example.com:8443');
  assert.equal(a.basePath, '/anthropic');
  const b = ok.get('bedrock')!;
  assert.equal(b.host, 'bedrock-runtime.us-east-1.amazonaws.com');
  assert.equal(b.port, 443);
  assert.equal(b.basePath, '');
  assert.equal(
    bedrockEndpoint({ region: 'us-east-1', accessKeyId: 'a', secretAccessKey: 'b' }),
    'https://bedrock-runtime.us-east-1.amazonaws.com',
  );
  assert.equal(resolveUpstreams(undefined).size, 0);

  const local = resolveUpstreams({ anthropic: { baseUrl: 'http://[::1]:9000', apiKey: 'k' } }).get(
    'anthropic',
  )!;
  assert.equal(local.hostname, '::1');
  assert.equal(local.port, 9000);
  assert.equal(resolveUpstreams({ anthropic: { baseUrl: 'http://127.0.0.5', apiKey: 'k' } }).size, 1);

  const bad = (anthropic: { baseUrl: string; apiKey: string }, re: RegExp): void =>
    assert.throws(() => resolveUpstreams({ anthropic }), hasCode('CONFIG_INVALID', re));
  bad({ baseUrl: 'http://api.anthropic.com', apiKey: 'k' }, /plain http to a non-loopback/);
  bad({ baseUrl: 'http://10.0.0.1:80', apiKey: 'k' }, /plain http/);
  bad({ baseUrl: 'https://api.anthropic.com/?x=1', apiKey: 'k' }, /query/);
  bad({ baseUrl: 'https://u:p@api.anthropic.com', apiKey: 'k' }, /credentials/);
  bad({ baseUrl: 'api.anthropic.com', apiKey: 'k' }, /not a URL/);
  bad({ baseUrl: 'ftp://api.anthropic.com', apiKey: 'k' }, /https/);
  bad({ baseUrl: 'https://api.anthropic.com', apiKey: '' }, /apiKey is empty/);
  assert.throws(
    () => resolveUpstreams({ bedrock: { region: 'Mars 1', accessKeyId: 'AK', secretAccessKey: AWS_SECRET } }),
    hasCode('CONFIG_INVALID', /region/),
  );
  assert.throws(
    () => resolveUpstreams({ bedrock: { region: 'us-east-1', accessKeyId: 'AK', secretAccessKey: ' ' } }),
    (e: unknown) =>
      hasCode('CONFIG_INVALID', /secretAccessKey/)(e) && !(e as Error).message.includes(AWS_SECRET),
  );
});

test('parseUpstreamTarget splits name, path and query and refuses what could climb out', () => {
  assert.equal(parseUpstreamTarget('/v1/messages'), undefined);
  assert.equal(parseUpstreamTarget('/_hako/upstreams/anthropic/v1'), undefined);
  assert.deepEqual(parseUpstreamTarget('/_hako/upstream/anthropic/v1/messages?beta=true'), {
    ok: true,
    name: 'anthropic',
    path: '/v1/messages',
    query: '?beta=true',
  });
  assert.deepEqual(parseUpstreamTarget('/_hako/upstream/bedrock'), {
    ok: true,
    name: 'bedrock',
    path: '/',
    query: '',
  });
  assert.deepEqual(parseUpstreamTarget('/_hako/upstream/bedrock/model/a.b-v1%3A0/invoke'), {
    ok: true,
    name: 'bedrock',
    path: '/model/a.b-v1%3A0/invoke',
    query: '',
  });
  const refused = (target: string, re: RegExp): void => {
    const r = parseUpstreamTarget(target);
    assert.ok(r && !r.ok && re.test(r.reason), `${target}: ${JSON.stringify(r)}`);
  };
  refused('/_hako/upstream/anthropic/../../admin', /"\." or "\.\."/);
  refused('/_hako/upstream/anthropic/v1/%2E%2e/x', /"\." or "\.\."/);
  refused('/_hako/upstream/anthropic/./v1', /"\." or "\.\."/);
  refused('/_hako/upstream/anthropic@evil.example:80/v1', /not an upstream name/);
  refused('/_hako/upstream//v1', /not an upstream name/);
  refused('/_hako/upstream/anthropic/v1 x', /escaped/);
  refused('/_hako/upstream/anthropic/v1?a=<b>', /query/);
});

test('authorizeUpstreamRequest drops sandbox credentials and sets the real key for anthropic', async () => {
  const up = resolveUpstreams({
    anthropic: { baseUrl: 'https://gw.example.com/base/', apiKey: API_KEY },
  }).get('anthropic')!;
  const out = await authorizeUpstreamRequest(up, {
    method: 'POST',
    path: '/v1/messages',
    query: '?beta=true',
    headers: [
      ['Host', 'evil.example'],
      ['X-Api-Key', UPSTREAM_PLACEHOLDER_KEY],
      ['Authorization', `Bearer ${UPSTREAM_PLACEHOLDER_KEY}`],
      ['X-Amz-Security-Token', 'planted'],
      ['Content-Length', '999'],
      ['anthropic-version', '2023-06-01'],
    ],
    body: Buffer.from('{"a":1}'),
  });
  assert.equal(out.path, '/base/v1/messages?beta=true');
  assert.deepEqual(out.headers, [
    ['host', 'gw.example.com'],
    ['content-length', '7'],
    ['anthropic-version', '2023-06-01'],
    ['x-api-key', API_KEY],
  ]);
});

test('authorizeUpstreamRequest signs bedrock requests with SigV4 over what is sent', async () => {
  const up = resolveUpstreams({
    bedrock: {
      region: 'eu-west-3',
      accessKeyId: 'AKIAUNITTEST',
      secretAccessKey: AWS_SECRET,
      sessionToken: 'session-token-unit',
    },
  }).get('bedrock')!;
  const out = await authorizeUpstreamRequest(up, {
    method: 'POST',
    path: '/model/anthropic.claude-v1%3A0/invoke',
    query: '?b=2&a=x+y&a=1',
    headers: [
      ['content-type', 'application/json'],
      ['authorization', 'AWS4-HMAC-SHA256 planted'],
      ['x-amz-date', '19990101T000000Z'],
    ],
    body: Buffer.from('{}'),
  });
  assert.equal(out.path, '/model/anthropic.claude-v1%3A0/invoke?b=2&a=x%20y&a=1');
  const h = new Map(out.headers);
  assert.equal(h.get('host'), 'bedrock-runtime.eu-west-3.amazonaws.com');
  assert.equal(h.get('content-length'), '2');
  assert.equal(h.get('x-amz-security-token'), 'session-token-unit');
  assert.notEqual(h.get('x-amz-date'), '19990101T000000Z');
  assert.match(
    h.get('authorization') ?? '',
    /^AWS4-HMAC-SHA256 Credential=AKIAUNITTEST\/\d{8}\/eu-west-3\/bedrock\/aws4_request, SignedHeaders=content-length;content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature=[0-9a-f]{64}$/,
  );
  assert.ok(!JSON.stringify(out.headers).includes(AWS_SECRET));
});

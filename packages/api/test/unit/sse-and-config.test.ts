import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError } from '@hako/core';
import { formatSseEvent, parseLastEventId } from '../../src/sse.js';
import { titleFromPrompt } from '../../src/execute/execute-run.js';
import { apiConfigSchema, expandHome, loadApiConfig, parseNodes } from '../../src/config.js';
import type { StoredEvent } from '../../src/types.js';

const ev = (over: Partial<StoredEvent> = {}): StoredEvent => ({
  conversationId: 'c',
  runId: 'r',
  seq: 7,
  timestamp: '2026-11-23T00:00:00.000Z',
  type: 'assistant',
  data: { text: 'line one\nline two' },
  sdkMessage: { type: 'assistant' },
  ...over,
});

test('an SSE frame has the seq as id, the type as event and one data line of JSON', () => {
  const frame = formatSseEvent(ev());
  const lines = frame.split('\n');
  assert.equal(lines[0], 'id: 7');
  assert.equal(lines[1], 'event: assistant');
  assert.ok(lines[2]?.startsWith('data: '));
  assert.equal(lines[3], '');
  assert.equal(lines[4], '');
  assert.equal(lines.length, 5, 'a newline in the text must not break the frame');
  const data = JSON.parse(lines[2]!.slice(6)) as Record<string, unknown>;
  assert.deepEqual(data, {
    text: 'line one\nline two',
    type: 'assistant',
    seq: 7,
    timestamp: '2026-11-23T00:00:00.000Z',
    run_id: 'r',
    sdk_message: { type: 'assistant' },
  });
});

test('Last-Event-ID: digits only, anything else is 0', () => {
  assert.equal(parseLastEventId('42'), 42);
  assert.equal(parseLastEventId(' 3 '), 3);
  assert.equal(parseLastEventId(['5', '6']), 5);
  for (const bad of [undefined, '', '-1', '1e3', 'abc', '9'.repeat(16)])
    assert.equal(parseLastEventId(bad), 0);
});

test('a title is the first line of the prompt, collapsed and cut at 60 characters', () => {
  assert.equal(titleFromPrompt('  Write   a program\nthat prints'), 'Write a program');
  assert.equal(titleFromPrompt('\n\n'), 'Untitled');
  const long = titleFromPrompt('x'.repeat(100));
  assert.equal(long.length, 60);
  assert.ok(long.endsWith('…'));
});

test('HAKO_NODES: names, addresses, duplicates and bad forms', () => {
  assert.deepEqual(parseNodes('a=127.0.0.1:7443, b=unix:/run/hako/hakod.sock,10.0.0.5:7443'), [
    { name: 'a', address: '127.0.0.1:7443' },
    { name: 'b', address: 'unix:/run/hako/hakod.sock' },
    { name: '10.0.0.5:7443', address: '10.0.0.5:7443' },
  ]);
  assert.throws(() => parseNodes('a=1.2.3.4:1,a=1.2.3.4:2'), /twice/);
  assert.throws(() => parseNodes('a=nohost'), /not host:port/);
  assert.throws(() => parseNodes('a=unix:relative'), /not host:port/);
});

test('api config: required variables, defaults, and CONFIG_INVALID naming the variable', () => {
  const base = {
    HAKO_ADMIN_TOKEN: 'x'.repeat(20),
    DATABASE_URL: 'postgres://u@127.0.0.1/hako',
    REDIS_URL: 'redis://127.0.0.1:6379',
    S3_BUCKET: 'hako',
  };
  const c = loadApiConfig(base);
  assert.equal(c.HAKO_API_LISTEN, '127.0.0.1:8080');
  assert.equal(c.HAKO_LOCK_TTL, 600_000);
  assert.equal(c.HAKO_PING_INTERVAL, 10_000);
  assert.equal(c.S3_FORCE_PATH_STYLE, true);
  assert.deepEqual(c.nodes, [{ name: 'local', address: '127.0.0.1:7443' }]);
  assert.throws(
    () => loadApiConfig({ ...base, HAKO_ADMIN_TOKEN: 'short' }),
    (e: unknown) =>
      e instanceof AppError && e.code === 'CONFIG_INVALID' && /HAKO_ADMIN_TOKEN/.test(e.message),
  );
  assert.throws(
    () => loadApiConfig({ ...base, DATABASE_URL: 'mysql://x' }),
    (e: unknown) => e instanceof AppError && /DATABASE_URL/.test(e.message),
  );
  assert.throws(() => loadApiConfig({ ...base, HAKO_NODES: 'a=bad' }), /HAKO_NODES/);
  for (const [name, field] of Object.entries(apiConfigSchema.shape)) {
    assert.ok(field.description && field.description.length > 10, `${name} is described`);
  }
});

test('embedded engines: DATABASE_URL and REDIS_URL may be unset for one API process, never for more', () => {
  const base = { HAKO_ADMIN_TOKEN: 'x'.repeat(20), S3_BUCKET: 'hako', HOME: '/home/u' };
  const c = loadApiConfig(base);
  assert.equal(c.DATABASE_URL, undefined);
  assert.equal(c.REDIS_URL, undefined);
  assert.equal(c.HAKO_HOME, '/home/u/.hako');
  assert.equal(loadApiConfig({ ...base, DATABASE_URL: '', REDIS_URL: '' }).REDIS_URL, undefined);
  assert.throws(
    () => loadApiConfig({ ...base, HAKO_API_PROCESSES: '2', DATABASE_URL: 'postgres://h/db' }),
    (e: unknown) =>
      e instanceof AppError &&
      e.code === 'CONFIG_INVALID' &&
      /REDIS_URL/.test(e.message) &&
      !/DATABASE_URL/.test(e.message),
  );
  assert.throws(() => loadApiConfig({ ...base, HAKO_API_PROCESSES: '3' }), /REDIS_URL and DATABASE_URL/);
  const two = loadApiConfig({
    ...base,
    HAKO_API_PROCESSES: '2',
    DATABASE_URL: 'postgres://h/db',
    REDIS_URL: 'redis://h',
  });
  assert.equal(two.HAKO_API_PROCESSES, 2);
  assert.equal(expandHome('~', { HOME: '/r' }), '/r');
  assert.equal(expandHome('~/x/y', { HOME: '/r' }), '/r/x/y');
  assert.equal(expandHome('/abs/~', { HOME: '/r' }), '/abs/~');
});

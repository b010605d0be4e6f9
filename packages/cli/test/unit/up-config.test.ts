import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseModel, chooseStorage, resolveHome, withoutModelSecrets } from '../../src/stack-up.js';
import { upConfigSchema } from '../../src/up-config.js';
import { isAppError } from '@hako/core';

const configInvalid = (re: RegExp) => (e: unknown) =>
  isAppError(e) && e.code === 'CONFIG_INVALID' && re.test(e.message);

test('model: scripted without a key or when asked, the real API with a key', () => {
  assert.equal(chooseModel({}), 'scripted');
  assert.equal(chooseModel({ ANTHROPIC_API_KEY: '' }), 'scripted');
  assert.equal(chooseModel({ ANTHROPIC_API_KEY: 'sk-x' }), 'anthropic');
  assert.equal(chooseModel({ ANTHROPIC_API_KEY: 'sk-x', HAKO_MODEL: 'scripted' }), 'scripted');
  assert.equal(chooseModel({ ANTHROPIC_API_KEY: 'sk-x', HAKO_MODEL: 'anthropic' }), 'anthropic');
  assert.throws(() => chooseModel({ HAKO_MODEL: 'anthropic' }), configInvalid(/needs ANTHROPIC_API_KEY/));
  assert.throws(() => chooseModel({ HAKO_MODEL: 'gpt' }), configInvalid(/HAKO_MODEL=gpt/));
});

test('storage: S3 with a bucket, else embedded; an endpoint without a bucket is refused', () => {
  assert.equal(chooseStorage({}), 'embedded');
  assert.equal(chooseStorage({ S3_BUCKET: 'b', S3_ENDPOINT: 'http://s3:9000' }), 's3');
  assert.equal(chooseStorage({ S3_BUCKET: 'b' }), 's3');
  assert.throws(() => chooseStorage({ S3_ENDPOINT: 'http://s3:9000' }), configInvalid(/S3_BUCKET is not/));
});

test('HAKO_HOME: ~ expands to HOME, relative paths become absolute, default ~/.hako', () => {
  assert.equal(resolveHome(undefined, { HOME: '/home/a' }), '/home/a/.hako');
  assert.equal(resolveHome('', { HOME: '/home/a' }), '/home/a/.hako');
  assert.equal(resolveHome('~/x', { HOME: '/home/a' }), '/home/a/x');
  assert.equal(resolveHome('/srv/hako', { HOME: '/home/a' }), '/srv/hako');
  assert.equal(resolveHome('rel', {}), `${process.cwd()}/rel`);
});

test('the environment handed on holds no Anthropic credential', () => {
  const env = withoutModelSecrets({
    PATH: '/bin',
    ANTHROPIC_API_KEY: 'sk-secret',
    ANTHROPIC_AUTH_TOKEN: 't',
    ANTHROPIC_BASE_URL: 'http://x',
    AGENT_UPSTREAM_ANTHROPIC_API_KEY: 'sk-secret-2',
    CLAUDE_CODE_OAUTH_TOKEN: 'o',
    HAKO_HOME: '/h',
    UNSET: undefined,
  });
  assert.deepEqual(env, { PATH: '/bin', HAKO_HOME: '/h' });
});

test('the documented HAKO_MODEL values are exactly the ones hako up accepts', () => {
  const documented = upConfigSchema.shape.HAKO_MODEL.unwrap().options.filter((o) => o !== '');
  for (const v of documented)
    assert.doesNotThrow(() => chooseModel({ HAKO_MODEL: v, ANTHROPIC_API_KEY: 'k' }));
  assert.throws(() => chooseModel({ HAKO_MODEL: 'other' }), { code: 'CONFIG_INVALID' });
  assert.equal(chooseModel({}), 'scripted');
  assert.equal(chooseModel({ ANTHROPIC_API_KEY: 'k' }), 'anthropic');
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError } from '@hako/core';
import {
  agentConfigBaseSchema,
  isLoopbackListen,
  loadAgentConfig,
  parseAgentListen,
} from '../../src/config.js';

const TLS = { AGENT_TLS_DIR: '/etc/hako/tls' };

function configError(env: Record<string, string>): AppError {
  try {
    loadAgentConfig(env);
  } catch (e) {
    assert.ok(e instanceof AppError, String(e));
    assert.equal(e.code, 'CONFIG_INVALID');
    return e;
  }
  assert.fail(`expected CONFIG_INVALID for ${JSON.stringify(env)}`);
}

test('defaults: TLS on 127.0.0.1:7443 from AGENT_TLS_DIR, reflection off, durations in ms, sizes in bytes', () => {
  const c = loadAgentConfig(TLS);
  assert.deepEqual(c.listen, { kind: 'tcp', host: '127.0.0.1', port: 7443 });
  assert.equal(c.plaintext, false);
  assert.deepEqual(c.tls, {
    caPath: '/etc/hako/tls/ca.pem',
    certPath: '/etc/hako/tls/server.pem',
    keyPath: '/etc/hako/tls/server-key.pem',
  });
  assert.equal(c.AGENT_GRPC_REFLECTION, false);
  assert.equal(c.AGENT_AUTH_TOKEN, undefined);
  assert.equal(c.AGENT_METRICS_LISTEN, '127.0.0.1:9464');
  assert.equal(c.AGENT_INVOKE_MAX_RESPONSE_SIZE, 10 * 1024 ** 2);
  assert.equal(c.AGENT_POOL_MIN, 2);
  assert.equal(c.AGENT_POOL_MAX, 10);
  assert.equal(c.AGENT_GC_INTERVAL, 60_000);
  assert.equal(c.AGENT_IDLE_TTL, 3_600_000);
  assert.equal(c.AGENT_SANDBOX_TTL, 8 * 3_600_000);
  assert.equal(c.AGENT_MAX_SANDBOXES, 1000);
  assert.equal(c.AGENT_DEFAULT_CPUS, 1);
  assert.equal(c.AGENT_DEFAULT_MEMORY, 512 * 1024 ** 2);
  assert.equal(c.AGENT_DEFAULT_PIDS, 256);
  assert.equal(c.AGENT_DEFAULT_DISK, 1024 ** 3);
  assert.equal(c.AGENT_DEFAULT_TMP, 64 * 1024 ** 2);
  assert.equal(c.AGENT_MAX_FILE_BYTES, 64 * 1024 ** 2);
  assert.equal(c.AGENT_MAX_TRANSFER_BYTES, 256 * 1024 ** 2);
  assert.equal(c.AGENT_UPSTREAM_ANTHROPIC_URL, 'https://api.anthropic.com');
  // The sandbox host settings come along.
  assert.equal(c.HAKO_ENV, 'dev');
  assert.equal(c.CNI_SUBNET, '10.209.0.0/23');
});

test('TLS is required by default: no TLS files and no plaintext flag is CONFIG_INVALID naming the variables', () => {
  const e = configError({});
  assert.match(e.message, /AGENT_GRPC_CA_CERT_PATH/);
  assert.match(e.message, /AGENT_GRPC_CERT_PATH/);
  assert.match(e.message, /AGENT_GRPC_KEY_PATH/);
  assert.match(e.message, /AGENT_TLS_DIR/);
});

test('explicit seed-system paths win over AGENT_TLS_DIR, file by file', () => {
  const c = loadAgentConfig({ ...TLS, AGENT_GRPC_CERT_PATH: '/other/cert.pem' });
  assert.deepEqual(c.tls, {
    caPath: '/etc/hako/tls/ca.pem',
    certPath: '/other/cert.pem',
    keyPath: '/etc/hako/tls/server-key.pem',
  });
  const seed = loadAgentConfig({
    AGENT_GRPC_CERT_PATH: '/s/c.pem',
    AGENT_GRPC_KEY_PATH: '/s/k.pem',
    AGENT_GRPC_CA_CERT_PATH: '/s/ca.pem',
  });
  assert.deepEqual(seed.tls, { caPath: '/s/ca.pem', certPath: '/s/c.pem', keyPath: '/s/k.pem' });
  // Two of three is not enough.
  const e = configError({ AGENT_GRPC_CERT_PATH: '/s/c.pem', AGENT_GRPC_KEY_PATH: '/s/k.pem' });
  assert.match(e.message, /AGENT_GRPC_CA_CERT_PATH/);
  assert.doesNotMatch(e.message, /AGENT_GRPC_KEY_PATH:/);
});

test('plaintext is refused off loopback (0.0.0.0, ::, a LAN address, a host name), with either flag', () => {
  for (const listen of ['0.0.0.0:7443', '[::]:7443', '10.0.0.5:7443', 'hakod.internal:7443']) {
    for (const flag of ['AGENT_INSECURE', 'AGENT_GRPC_TLS_DISABLED']) {
      for (const v of ['1', 'true']) {
        const e = configError({ AGENT_LISTEN: listen, [flag]: v });
        assert.match(e.message, new RegExp(`${flag}: plaintext gRPC is allowed only`), `${listen} ${flag}`);
      }
    }
  }
});

test('plaintext is accepted on 127.0.0.1, 127.x, ::1, localhost and a unix socket; no TLS files needed', () => {
  for (const listen of [
    '127.0.0.1:7443',
    '127.8.9.10:0',
    '[::1]:7443',
    'localhost:7443',
    'unix:/run/hako/hakod.sock',
  ]) {
    const c = loadAgentConfig({ AGENT_LISTEN: listen, AGENT_INSECURE: '1' });
    assert.equal(c.plaintext, true, listen);
    assert.equal(c.tls, undefined, listen);
  }
  const seed = loadAgentConfig({ AGENT_GRPC_TLS_DISABLED: 'true' });
  assert.equal(seed.plaintext, true);
  // Plaintext flags set to off leave TLS required.
  configError({ AGENT_INSECURE: '0', AGENT_GRPC_TLS_DISABLED: 'false' });
});

test('flags take only 0/1/true/false; reflection is on only when asked', () => {
  assert.equal(loadAgentConfig({ ...TLS, AGENT_GRPC_REFLECTION: '1' }).AGENT_GRPC_REFLECTION, true);
  assert.equal(loadAgentConfig({ ...TLS, AGENT_GRPC_REFLECTION: 'false' }).AGENT_GRPC_REFLECTION, false);
  assert.match(configError({ ...TLS, AGENT_GRPC_REFLECTION: 'yes' }).message, /AGENT_GRPC_REFLECTION/);
  assert.match(configError({ AGENT_INSECURE: 'on' }).message, /AGENT_INSECURE/);
});

test('AGENT_LISTEN forms and AGENT_METRICS_LISTEN', () => {
  assert.deepEqual(parseAgentListen('unix:/run/x.sock'), { kind: 'unix', path: '/run/x.sock' });
  assert.deepEqual(parseAgentListen('[::1]:1'), { kind: 'tcp', host: '::1', port: 1 });
  assert.deepEqual(parseAgentListen('0.0.0.0:7443'), { kind: 'tcp', host: '0.0.0.0', port: 7443 });
  for (const bad of ['7443', 'unix:relative.sock', '1.2.3.4:70000', 'a b:1', '[zz]:1', '']) {
    assert.throws(() => parseAgentListen(bad), Error, bad);
    assert.match(configError({ ...TLS, AGENT_LISTEN: bad }).message, /AGENT_LISTEN/, bad);
  }
  assert.equal(isLoopbackListen(parseAgentListen('[::ffff:127.0.0.1]:1')), true);
  assert.equal(isLoopbackListen(parseAgentListen('128.0.0.1:1')), false);
  assert.equal(loadAgentConfig({ ...TLS, AGENT_METRICS_LISTEN: '' }).AGENT_METRICS_LISTEN, '');
  assert.match(configError({ ...TLS, AGENT_METRICS_LISTEN: 'unix:/x' }).message, /AGENT_METRICS_LISTEN/);
});

test('token, pool, sizes, durations and upstream credentials are validated', () => {
  assert.equal(
    loadAgentConfig({ ...TLS, AGENT_AUTH_TOKEN: 'a'.repeat(32) }).AGENT_AUTH_TOKEN,
    'a'.repeat(32),
  );
  assert.equal(loadAgentConfig({ ...TLS, AGENT_AUTH_TOKEN: '' }).AGENT_AUTH_TOKEN, undefined);
  assert.match(configError({ ...TLS, AGENT_AUTH_TOKEN: 'short' }).message, /AGENT_AUTH_TOKEN: at least 16/);
  assert.match(configError({ ...TLS, AGENT_AUTH_TOKEN: 'has spaces in it ok?' }).message, /AGENT_AUTH_TOKEN/);
  assert.match(configError({ ...TLS, AGENT_POOL_MIN: '5', AGENT_POOL_MAX: '3' }).message, /AGENT_POOL_MIN/);
  assert.match(
    configError({ ...TLS, AGENT_POOL_MAX: '20', AGENT_MAX_SANDBOXES: '10' }).message,
    /AGENT_POOL_MAX/,
  );
  assert.match(
    configError({ ...TLS, AGENT_DEFAULT_MEMORY: 'lots' }).message,
    /AGENT_DEFAULT_MEMORY: not a size/,
  );
  assert.match(
    configError({ ...TLS, AGENT_GC_INTERVAL: 'soon' }).message,
    /AGENT_GC_INTERVAL: not a duration/,
  );
  assert.equal(loadAgentConfig({ ...TLS, AGENT_DEFAULT_CPUS: '0.5' }).AGENT_DEFAULT_CPUS, 0.5);
  assert.match(configError({ ...TLS, AGENT_DEFAULT_CPUS: '0' }).message, /AGENT_DEFAULT_CPUS/);
  const bedrock = {
    ...TLS,
    AGENT_UPSTREAM_BEDROCK_REGION: 'us-east-1',
    AGENT_UPSTREAM_BEDROCK_ACCESS_KEY_ID: 'AKIAEXAMPLE',
    AGENT_UPSTREAM_BEDROCK_SECRET_ACCESS_KEY: 'secret',
  };
  assert.equal(loadAgentConfig(bedrock).AGENT_UPSTREAM_BEDROCK_REGION, 'us-east-1');
  assert.match(
    configError({ ...bedrock, AGENT_UPSTREAM_BEDROCK_SECRET_ACCESS_KEY: '' }).message,
    /AGENT_UPSTREAM_BEDROCK_SECRET_ACCESS_KEY/,
  );
  assert.match(
    configError({ ...bedrock, AGENT_UPSTREAM_BEDROCK_REGION: '' }).message,
    /AGENT_UPSTREAM_BEDROCK_REGION/,
  );
  assert.match(
    configError({ ...TLS, AGENT_UPSTREAM_ANTHROPIC_URL: 'ftp://x' }).message,
    /AGENT_UPSTREAM_ANTHROPIC_URL/,
  );
});

test('every variable is described (the docs are generated from the descriptions)', () => {
  for (const [name, field] of Object.entries(agentConfigBaseSchema.shape)) {
    assert.ok((field.description ?? '').length > 10, `${name} has no description`);
  }
});

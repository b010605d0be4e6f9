import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError, silentLogger } from '@hako/core';
import type { ErrorCode } from '@hako/core';
import {
  RegistryClient,
  formatReference,
  isLoopbackHost,
  isPullableReference,
  manifestKind,
  parseImageReference,
  parseWwwAuthenticate,
  selectIndexManifest,
} from '../../src/registry-client.js';

const HEX = 'a'.repeat(64);
const HEX2 = 'b'.repeat(64);
const HEX3 = 'c'.repeat(64);

function throwsCode(fn: () => unknown, code: ErrorCode, re?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof AppError, `expected AppError ${code}, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (re) assert.match(err.message, re);
    return true;
  });
}

test('references: host:port/repo:tag, digests, default tag', () => {
  assert.deepEqual(parseImageReference('127.0.0.1:5000/test/img:v1'), {
    registry: '127.0.0.1:5000',
    apiHost: '127.0.0.1:5000',
    repository: 'test/img',
    tag: 'v1',
    digest: undefined,
  });
  assert.deepEqual(parseImageReference('127.0.0.1:5000/test/img'), {
    registry: '127.0.0.1:5000',
    apiHost: '127.0.0.1:5000',
    repository: 'test/img',
    tag: 'latest',
    digest: undefined,
  });
  const pinned = parseImageReference(`ghcr.io/org/team/tool@sha256:${HEX}`);
  assert.equal(pinned.registry, 'ghcr.io');
  assert.equal(pinned.repository, 'org/team/tool');
  assert.equal(pinned.tag, undefined);
  assert.equal(pinned.digest, `sha256:${HEX}`);
  const both = parseImageReference(`localhost:5000/a/b:1.2.3@sha256:${HEX}`);
  assert.equal(both.tag, '1.2.3');
  assert.equal(both.digest, `sha256:${HEX}`);
  assert.equal(formatReference(both), `localhost:5000/a/b:1.2.3@sha256:${HEX}`);
  assert.equal(parseImageReference('localhost/x').registry, 'localhost');
  assert.equal(parseImageReference('[::1]:5000/x/y:t').apiHost, '[::1]:5000');
  assert.equal(parseImageReference('my.registry.example/x__y/a-b.c_d:T_1').repository, 'x__y/a-b.c_d');
});

test('references: Docker Hub defaults (docker.io, library/, registry-1.docker.io)', () => {
  assert.deepEqual(parseImageReference('alpine'), {
    registry: 'docker.io',
    apiHost: 'registry-1.docker.io',
    repository: 'library/alpine',
    tag: 'latest',
    digest: undefined,
  });
  const org = parseImageReference('docker.io/bitnami/redis:7');
  assert.equal(org.repository, 'bitnami/redis');
  assert.equal(org.apiHost, 'registry-1.docker.io');
  assert.equal(parseImageReference('library/debian:12').repository, 'library/debian');
  assert.equal(parseImageReference('docker.io/ubuntu').repository, 'library/ubuntu');
});

test('references: malformed ones are INVALID_ARGUMENT and say why', () => {
  throwsCode(() => parseImageReference(''), 'INVALID_ARGUMENT');
  throwsCode(() => parseImageReference('Upper/case'), 'INVALID_ARGUMENT', /repository/);
  throwsCode(() => parseImageReference('127.0.0.1:5000/img@sha512:abcd'), 'INVALID_ARGUMENT', /sha256/);
  throwsCode(() => parseImageReference('127.0.0.1:5000/img@sha256:ABC'), 'INVALID_ARGUMENT', /digest/);
  throwsCode(() => parseImageReference('127.0.0.1:99999/img'), 'INVALID_ARGUMENT', /host/);
  throwsCode(() => parseImageReference('bad_host.example:80/img'), 'INVALID_ARGUMENT', /host/);
  throwsCode(() => parseImageReference('127.0.0.1:5000/a//b'), 'INVALID_ARGUMENT');
  throwsCode(() => parseImageReference('127.0.0.1:5000/img:bad+tag'), 'INVALID_ARGUMENT', /tag/);
  throwsCode(() => parseImageReference('127.0.0.1:5000/'), 'INVALID_ARGUMENT');
  throwsCode(() => parseImageReference('img:'), 'INVALID_ARGUMENT');
});

test('pullable references name their registry host; local names and digests do not', () => {
  for (const r of [
    '127.0.0.1:5000/test/img:tag',
    'localhost/x',
    'ghcr.io/org/img',
    `registry.example.com:8443/a/b@sha256:${HEX}`,
    '[::1]:5000/x',
  ]) {
    assert.equal(isPullableReference(r), true, r);
  }
  for (const r of [
    'host',
    'alpine',
    'my-image:1',
    'library/alpine:3',
    `sha256:${HEX}`,
    'ghcr.io/Bad/Upper',
    '127.0.0.1:5000/img:bad+tag',
  ]) {
    assert.equal(isPullableReference(r), false, r);
  }
});

test('loopback hosts, and which registries are spoken to over plain http', () => {
  for (const h of ['localhost', 'localhost:5000', '127.0.0.1', '127.9.8.7:80', '[::1]:5000', '::1'])
    assert.equal(isLoopbackHost(h), true, h);
  for (const h of ['10.0.0.1:5000', 'example.com', '128.0.0.1', 'localhost.example.com', '[::2]:5000'])
    assert.equal(isLoopbackHost(h), false, h);
  const client = new RegistryClient({
    logger: silentLogger(),
    insecureRegistries: ['registry.lan:5000', 'other.lan'],
  });
  try {
    assert.equal(client.allowsPlainHttp('127.0.0.1:41234'), true);
    assert.equal(client.allowsPlainHttp('registry.lan:5000'), true);
    assert.equal(client.allowsPlainHttp('registry.lan:6000'), false, 'the listed port only');
    assert.equal(client.allowsPlainHttp('other.lan:1234'), true, 'a bare host allows every port');
    assert.equal(client.allowsPlainHttp('ghcr.io'), false);
  } finally {
    client.close();
  }
});

test('WWW-Authenticate: Bearer with quoted commas, several challenges, escapes, bare tokens', () => {
  assert.deepEqual(
    parseWwwAuthenticate(
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push"',
    ),
    [
      {
        scheme: 'bearer',
        params: {
          realm: 'https://auth.docker.io/token',
          service: 'registry.docker.io',
          scope: 'repository:samalba/my-app:pull,push',
        },
      },
    ],
  );
  assert.deepEqual(
    parseWwwAuthenticate('Basic realm="Registry Realm", Bearer realm="http://x/t", Service=s1'),
    [
      { scheme: 'basic', params: { realm: 'Registry Realm' } },
      { scheme: 'bearer', params: { realm: 'http://x/t', service: 's1' } },
    ],
  );
  assert.deepEqual(parseWwwAuthenticate('Bearer realm="a\\"b" , error=invalid_token'), [
    { scheme: 'bearer', params: { realm: 'a"b', error: 'invalid_token' } },
  ]);
  assert.deepEqual(parseWwwAuthenticate(''), []);
  assert.deepEqual(parseWwwAuthenticate('Negotiate'), [{ scheme: 'negotiate', params: {} }]);
});

function indexDoc(mediaType?: string): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      ...(mediaType ? { mediaType } : {}),
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: `sha256:${HEX}`,
          size: 10,
          platform: { os: 'linux', architecture: 'arm64', variant: 'v8' },
        },
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: `sha256:${HEX3}`,
          size: 12,
          platform: { os: 'unknown', architecture: 'unknown' },
          annotations: { 'vnd.docker.reference.type': 'attestation-manifest' },
        },
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: `sha256:${HEX2}`,
          size: 11,
          platform: { os: 'linux', architecture: 'amd64' },
        },
      ],
    }),
  );
}

test('platform selection from an index picks the host platform, never an attestation', () => {
  const amd = selectIndexManifest(indexDoc(), { os: 'linux', architecture: 'amd64' }, 'index');
  assert.equal(amd.digest, `sha256:${HEX2}`);
  assert.equal(amd.size, 11);
  const arm = selectIndexManifest(indexDoc(), { os: 'linux', architecture: 'arm64' }, 'index');
  assert.equal(arm.digest, `sha256:${HEX}`);
  throwsCode(
    () => selectIndexManifest(indexDoc(), { os: 'linux', architecture: 's390x' }, 'index of x'),
    'IMAGE_INVALID',
    /no linux\/s390x manifest.*linux\/arm64\/v8.*linux\/amd64/,
  );
});

test('manifest kind: Content-Type, then the document media type, then its shape', () => {
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, config: {}, layers: [] }));
  assert.equal(manifestKind(indexDoc(), 'application/vnd.oci.image.index.v1+json', 'm'), 'index');
  assert.equal(
    manifestKind(indexDoc(), 'application/vnd.docker.distribution.manifest.list.v2+json; charset=x', 'm'),
    'index',
  );
  assert.equal(
    manifestKind(indexDoc('application/vnd.oci.image.index.v1+json'), 'application/json', 'm'),
    'index',
  );
  assert.equal(manifestKind(indexDoc(), undefined, 'm'), 'index');
  assert.equal(
    manifestKind(manifest, 'application/vnd.docker.distribution.manifest.v2+json', 'm'),
    'manifest',
  );
  assert.equal(manifestKind(manifest, undefined, 'm'), 'manifest');
  const schema1 = Buffer.from(JSON.stringify({ schemaVersion: 1, fsLayers: [] }));
  throwsCode(
    () => manifestKind(schema1, 'application/vnd.docker.distribution.manifest.v1+prettyjws', 'manifest of x'),
    'IMAGE_INVALID',
    /schema 1/,
  );
  throwsCode(() => manifestKind(Buffer.from('{'), undefined, 'manifest of x'), 'IMAGE_INVALID', /JSON/);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { renderConfigDocs } from '../../../../scripts/gen-config-docs.js';

test('docs/configuration.md is generated from the schema and up to date', () => {
  const current = readFileSync(new URL('../../../../docs/configuration.md', import.meta.url), 'utf8');
  assert.equal(current, renderConfigDocs(), 'stale: run `npm run docs:gen`');
  assert.match(current, /`CNI_SUBNET`/);
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError } from '@hako/core';
import { checkMcpEgress, checkMcpServerName, egressCoversUrl } from '../../src/mcp/mcp-server-definition.js';

test("a remote MCP server's host:port is covered by hakod's allowlist rules, without DNS", () => {
  const covers = (allow: string[], url: string): boolean => egressCoversUrl(allow, url).covered;
  assert.equal(covers(['mcp.example.com:443'], 'https://mcp.example.com/mcp'), true, 'https defaults to 443');
  assert.equal(covers(['mcp.example.com:443'], 'http://mcp.example.com/mcp'), false, 'http defaults to 80');
  assert.equal(
    covers(['MCP.example.com:443'], 'https://mcp.EXAMPLE.com./mcp'),
    true,
    'names compare as hakod does',
  );
  assert.equal(covers(['*.example.com:443'], 'https://a.b.example.com/mcp'), true);
  assert.equal(
    covers(['*.example.com:443'], 'https://example.com/mcp'),
    false,
    'a wildcard never covers its suffix',
  );
  assert.equal(covers(['mcp.example.com:*'], 'http://mcp.example.com:8080/'), true);
  assert.equal(covers(['127.0.0.1:8123'], 'http://127.0.0.1:8123/mcp'), true);
  assert.equal(
    covers(['127.0.0.1:8123'], 'http://localhost:8123/mcp'),
    false,
    'an IP entry covers only that IP',
  );
  assert.equal(
    covers(['localhost:8123'], 'http://127.0.0.1:8123/mcp'),
    false,
    'a name entry never covers an IP literal',
  );
  assert.equal(covers(['[::1]:8080'], 'http://[::1]:8080/mcp'), true);
  assert.equal(covers(['[::1]:8080'], 'http://[0:0::1]:8080/mcp'), true, 'IPv6 in canonical form');
  assert.equal(
    covers(['not an entry', 'mcp.example.com:443'], 'https://mcp.example.com/'),
    true,
    'a bad entry covers nothing',
  );
  assert.equal(covers([], 'https://mcp.example.com/'), false);
  assert.deepEqual(egressCoversUrl([], 'https://[::1]/x'), { covered: false, hostPort: '[::1]:443' });
});

test('checkMcpEgress: stdio always passes; http outside the allowlist is MCP_SERVER_EGRESS_DENIED naming host:port', () => {
  checkMcpEgress({ type: 'stdio', command: 'x', args: [], env: {} }, []);
  assert.throws(
    () =>
      checkMcpEgress({ type: 'http', url: 'https://far.example.com:8443/mcp', headers: {} }, [
        'far.example.com:443',
      ]),
    (e: unknown) =>
      e instanceof AppError &&
      e.code === 'MCP_SERVER_EGRESS_DENIED' &&
      /far\.example\.com:8443/.test(e.message),
  );
});

test('server names: the tool prefix pattern, hako reserved regardless of case', () => {
  for (const ok of ['a', 'github', 'my_server-2', 'x'.repeat(64)]) checkMcpServerName(ok);
  for (const bad of ['', 'x'.repeat(65), 'has space', 'dot.name', 'slash/name', 'hako', 'Hako']) {
    assert.throws(
      () => checkMcpServerName(bad),
      (e: unknown) => e instanceof AppError && e.code === 'MCP_SERVER_INVALID',
      bad,
    );
  }
});

/**
 * A minimal remote MCP server speaking the streamable HTTP transport (JSON answers, no SSE
 * stream) on the host's loopback, for tests: one tool, `echo`, which answers its `text` argument
 * with a marker. Records every request it receives (method, path, headers, JSON-RPC body).
 */
import { createServer } from 'node:http';
import type { IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface McpHttpRequest {
  readonly method: string;
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  /** The parsed JSON-RPC body (undefined for a request without one). */
  readonly body: unknown;
}

export interface McpHttpServer {
  /** `http://127.0.0.1:PORT/mcp`. */
  readonly url: string;
  readonly port: number;
  readonly requests: McpHttpRequest[];
  close(): Promise<void>;
}

interface RpcMessage {
  jsonrpc?: string;
  id?: string | number;
  method?: string;
  params?: Record<string, unknown>;
}

/** Starts the server on 127.0.0.1 (a free port); `marker` goes into every tool answer. */
export async function startMcpHttpServer(marker: string): Promise<McpHttpServer> {
  const requests: McpHttpRequest[] = [];
  const answer = (m: RpcMessage): Record<string, unknown> => {
    switch (m.method ?? '') {
      case 'initialize':
        return {
          protocolVersion: m.params?.protocolVersion ?? '2025-06-18',
          capabilities: { tools: {} },
          serverInfo: { name: 'remote-probe', version: '1' },
        };
      case 'tools/list':
        return {
          tools: [
            {
              name: 'echo',
              description: 'Echoes its text',
              inputSchema: { type: 'object', properties: { text: { type: 'string' } } },
            },
          ],
        };
      case 'tools/call': {
        const args = (m.params?.arguments ?? {}) as { text?: string };
        return { content: [{ type: 'text', text: `${marker}:${args.text ?? ''}` }] };
      }
      default:
        return {};
    }
  };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown;
      try {
        body = text === '' ? undefined : JSON.parse(text);
      } catch {
        body = text;
      }
      requests.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, body });
      if (req.method !== 'POST') {
        res.writeHead(405, { allow: 'POST' }).end();
        return;
      }
      const batch = Array.isArray(body) ? (body as RpcMessage[]) : [body as RpcMessage];
      const replies = batch
        .filter((m) => m?.id !== undefined)
        .map((m) => ({ jsonrpc: '2.0', id: m.id, result: answer(m) }));
      if (replies.length === 0) {
        res.writeHead(202).end();
        return;
      }
      const out = Array.isArray(body) ? replies : replies[0];
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(out));
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/mcp`,
    port,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

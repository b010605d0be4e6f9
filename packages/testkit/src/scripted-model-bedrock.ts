// Bedrock runtime wire shapes for the scripted model's Bedrock mode: which paths are model
// invocations, the AWS event-stream framing InvokeModelWithResponseStream answers with (each
// Anthropic stream event wrapped as a `chunk` event whose payload is `{"bytes": base64(event)}`),
// and a SigV4 check written from the AWS specification with node:crypto alone, so a test proves
// the request was signed with the credentials it expects (and not merely "signed").
import { createHash, createHmac } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { crc32 } from 'node:zlib';

/** AWS credentials the fake Bedrock runtime accepts; requests signed with anything else are refused. */
export interface BedrockCredentials {
  readonly region: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  /** When set, the request must carry it as a signed `x-amz-security-token`. */
  readonly sessionToken?: string | undefined;
}

/** A model invocation path: `/model/{modelId}/invoke` or `/model/{modelId}/invoke-with-response-stream`. */
export interface BedrockInvocation {
  readonly modelId: string;
  readonly stream: boolean;
}

const INVOKE_RE = /^\/model\/([^/]+)\/(invoke|invoke-with-response-stream)$/;

/** The invocation a path names, or undefined when it is not one. The model id is percent-decoded. */
export function parseBedrockInvocation(path: string): BedrockInvocation | undefined {
  const m = INVOKE_RE.exec(path);
  if (!m) return undefined;
  let modelId: string;
  try {
    modelId = decodeURIComponent(m[1]!);
  } catch {
    return undefined;
  }
  return { modelId, stream: m[2] === 'invoke-with-response-stream' };
}

const STRING_HEADER = 7;

/**
 * One AWS event-stream message: prelude (total length, headers length, prelude CRC32), headers
 * (string-valued), payload, message CRC32. All integers big-endian.
 */
export function encodeEventStreamMessage(headers: Readonly<Record<string, string>>, payload: Buffer): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of Object.entries(headers)) {
    const n = Buffer.from(name, 'utf8');
    const v = Buffer.from(value, 'utf8');
    const h = Buffer.alloc(1 + n.length + 1 + 2 + v.length);
    h.writeUInt8(n.length, 0);
    n.copy(h, 1);
    h.writeUInt8(STRING_HEADER, 1 + n.length);
    h.writeUInt16BE(v.length, 2 + n.length);
    v.copy(h, 4 + n.length);
    parts.push(h);
  }
  const headerBytes = Buffer.concat(parts);
  const total = 12 + headerBytes.length + payload.length + 4;
  const prelude = Buffer.alloc(12);
  prelude.writeUInt32BE(total, 0);
  prelude.writeUInt32BE(headerBytes.length, 4);
  prelude.writeUInt32BE(crc32(prelude.subarray(0, 8)), 8);
  const body = Buffer.concat([prelude, headerBytes, payload]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body), 0);
  return Buffer.concat([body, crc]);
}

/** An Anthropic stream event as Bedrock streams it: a `chunk` event carrying the JSON in base64. */
export function bedrockChunk(event: Record<string, unknown>): Buffer {
  const bytes = Buffer.from(JSON.stringify(event), 'utf8').toString('base64');
  return encodeEventStreamMessage(
    { ':event-type': 'chunk', ':content-type': 'application/json', ':message-type': 'event' },
    Buffer.from(JSON.stringify({ bytes }), 'utf8'),
  );
}

/** A decoded event-stream message (what a Bedrock client reads). */
export interface EventStreamMessage {
  headers: Record<string, string>;
  payload: Buffer;
}

/**
 * Splits an event-stream body into messages, checking both CRCs and the lengths. Throws on a
 * malformed stream (only string headers are understood: the ones Bedrock sends).
 */
export function decodeEventStream(data: Buffer): EventStreamMessage[] {
  const out: EventStreamMessage[] = [];
  let at = 0;
  while (at < data.length) {
    if (data.length - at < 16) throw new Error(`event stream: ${data.length - at} trailing bytes`);
    const total = data.readUInt32BE(at);
    const headersLength = data.readUInt32BE(at + 4);
    if (data.readUInt32BE(at + 8) !== crc32(data.subarray(at, at + 8)))
      throw new Error('event stream: bad prelude CRC');
    if (total < 16 + headersLength || at + total > data.length)
      throw new Error('event stream: bad message length');
    const msg = data.subarray(at, at + total);
    if (msg.readUInt32BE(total - 4) !== crc32(msg.subarray(0, total - 4)))
      throw new Error('event stream: bad message CRC');
    const headers: Record<string, string> = {};
    let h = 12;
    while (h < 12 + headersLength) {
      const nameLength = msg.readUInt8(h);
      const name = msg.toString('utf8', h + 1, h + 1 + nameLength);
      const type = msg.readUInt8(h + 1 + nameLength);
      if (type !== STRING_HEADER) throw new Error(`event stream: header ${name} has type ${type}`);
      const valueLength = msg.readUInt16BE(h + 2 + nameLength);
      headers[name] = msg.toString('utf8', h + 4 + nameLength, h + 4 + nameLength + valueLength);
      h += 4 + nameLength + valueLength;
    }
    out.push({ headers, payload: Buffer.from(msg.subarray(12 + headersLength, total - 4)) });
    at += total;
  }
  return out;
}

/** The Anthropic events inside a Bedrock response stream (the base64 `bytes` of each chunk). */
export function bedrockStreamEvents(data: Buffer): Record<string, unknown>[] {
  return decodeEventStream(data)
    .filter((m) => m.headers[':event-type'] === 'chunk')
    .map((m) => {
      const { bytes } = JSON.parse(m.payload.toString('utf8')) as { bytes: string };
      return JSON.parse(Buffer.from(bytes, 'base64').toString('utf8')) as Record<string, unknown>;
    });
}

/** RFC 3986: unreserved characters stay, everything else is %XX (upper case). */
function uriEncode(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function hmac(key: string | Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data, 'utf8').digest();
}

const AUTH_RE =
  /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/;

/**
 * Verifies a request's SigV4 signature (service `bedrock`) as AWS would: the scope names the
 * expected key, region and service; x-amz-date is within 5 minutes; the payload hash matches the
 * body; host and x-amz-date (and the session token, when expected) are signed; and the signature
 * recomputed from the received method, path (each segment URI-encoded, as AWS does for
 * non-S3 services), query, signed headers and body equals the one sent. Returns 'ok' or why not.
 */
export function verifyBedrockSigV4(
  req: {
    readonly method: string;
    readonly path: string;
    readonly query: string;
    readonly headers: IncomingHttpHeaders;
    readonly body: Buffer;
  },
  creds: BedrockCredentials,
  now: number = Date.now(),
): string {
  const auth = String(req.headers.authorization ?? '');
  if (auth === '') return 'no authorization header (the request is not signed)';
  const m = AUTH_RE.exec(auth);
  if (!m) return `malformed authorization header`;
  const [, keyId, day, region, service, signedList, signature] = m;
  if (keyId !== creds.accessKeyId) return 'signed with an unknown access key';
  if (region !== creds.region || service !== 'bedrock') return `wrong credential scope ${region}/${service}`;
  const amzDate = String(req.headers['x-amz-date'] ?? '');
  const d = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate);
  if (!d || !amzDate.startsWith(day!)) return `bad x-amz-date "${amzDate}"`;
  const signedAt = Date.UTC(+d[1]!, +d[2]! - 1, +d[3]!, +d[4]!, +d[5]!, +d[6]!);
  if (Math.abs(now - signedAt) > 5 * 60_000) return 'request time too skewed';
  const payloadHash = sha256Hex(req.body);
  const claimed = req.headers['x-amz-content-sha256'];
  if (claimed !== undefined && claimed !== payloadHash) return 'payload hash does not match the body';
  const signed = signedList!.split(';');
  const required = [
    'host',
    'x-amz-date',
    ...(creds.sessionToken === undefined ? [] : ['x-amz-security-token']),
  ];
  for (const name of required) if (!signed.includes(name)) return `${name} is not signed`;
  if (creds.sessionToken !== undefined && req.headers['x-amz-security-token'] !== creds.sessionToken)
    return 'wrong session token';
  const canonicalHeaders: string[] = [];
  for (const name of [...signed].sort()) {
    const v = req.headers[name];
    if (v === undefined) return `signed header ${name} is missing`;
    const value = Array.isArray(v) ? v.join(',') : v;
    canonicalHeaders.push(`${name}:${value.trim().replace(/\s+/g, ' ')}\n`);
  }
  const segments = req.path.split('/').map((s) => uriEncode(s));
  const params = [...new URLSearchParams(req.query)].map(([k, v]) => [uriEncode(k), uriEncode(v)] as const);
  params.sort(([ak, av], [bk, bv]) => (ak < bk ? -1 : ak > bk ? 1 : av < bv ? -1 : av > bv ? 1 : 0));
  const canonicalRequest = [
    req.method,
    segments.join('/'),
    params.map(([k, v]) => `${k}=${v}`).join('&'),
    canonicalHeaders.join(''),
    [...signed].sort().join(';'),
    payloadHash,
  ].join('\n');
  const scope = `${day}/${region}/${service}/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256Hex(canonicalRequest)].join('\n');
  let key = hmac(`AWS4${creds.secretAccessKey}`, day!);
  for (const part of [region, service, 'aws4_request']) key = hmac(key, part);
  const expected = createHmac('sha256', key).update(stringToSign, 'utf8').digest('hex');
  return expected === signature ? 'ok' : 'signature does not match';
}

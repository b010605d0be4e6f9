/**
 * Keeps docs/grpc-api.md true: every RPC (as a heading, in proto order), message, enum, enum value
 * and field of hako/agent/v1/agent.proto is named in it, and every error code it names with a
 * status exists in ERROR_CODES with that gRPC status. The error table must account for every code
 * in ERROR_CODES (answered over gRPC, or listed as not answered).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ERROR_CODES, GrpcStatus } from '@hako/core';

const ROOT = fileURLToPath(new URL('../../../../', import.meta.url));
const PROTO = readFileSync(`${ROOT}packages/proto/hako/agent/v1/agent.proto`, 'utf8');
const DOC = readFileSync(`${ROOT}docs/grpc-api.md`, 'utf8');

// ------------------------------------------------------------------------------ proto parsing

interface ProtoBlock {
  readonly kind: 'message' | 'enum';
  readonly name: string;
  readonly body: string;
}

/** The proto without comments. */
function stripComments(src: string): string {
  return src.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/[^\n]*/g, '');
}

const SRC = stripComments(PROTO);

function rpcs(): { name: string; request: string; response: string }[] {
  const out: { name: string; request: string; response: string }[] = [];
  const re = /\brpc\s+(\w+)\s*\(\s*(?:stream\s+)?([\w.]+)\s*\)\s*returns\s*\(\s*(?:stream\s+)?([\w.]+)\s*\)/g;
  for (const m of SRC.matchAll(re)) out.push({ name: m[1]!, request: m[2]!, response: m[3]! });
  return out;
}

/** Top-level messages and enums with their bodies (a body holds at most one level of `oneof {}`). */
function blocks(): ProtoBlock[] {
  const out: ProtoBlock[] = [];
  const re = /^\s*(message|enum)\s+(\w+)\s*\{/gm;
  for (const m of SRC.matchAll(re)) {
    let depth = 1;
    let i = m.index + m[0].length;
    const start = i;
    for (; i < SRC.length && depth > 0; i++) {
      if (SRC[i] === '{') depth++;
      else if (SRC[i] === '}') depth--;
    }
    out.push({ kind: m[1] as 'message' | 'enum', name: m[2]!, body: SRC.slice(start, i - 1) });
  }
  return out;
}

/** A message's fields: name and type (the value type for maps). */
function fields(body: string): { name: string; type: string }[] {
  const re =
    /^\s*(?:repeated\s+|optional\s+)?(map\s*<\s*\w+\s*,\s*([\w.]+)\s*>|[\w.]+)\s+(\w+)\s*=\s*\d+\s*;/gm;
  return [...body.matchAll(re)].map((m) => ({ name: m[3]!, type: m[2] ?? m[1]! }));
}

function enumValues(body: string): string[] {
  return [...body.matchAll(/^\s*([A-Z][A-Z0-9_]*)\s*=\s*\d+\s*;/gm)].map((m) => m[1]!);
}

// ------------------------------------------------------------------------------ doc parsing

function mentioned(name: string): boolean {
  return DOC.includes(`\`${name}\``);
}

/** The text under a heading, up to the next heading of the same or a higher level. */
function section(heading: string): string {
  const level = /^#+/.exec(heading)![0].length;
  const lines = DOC.split('\n');
  const start = lines.indexOf(heading);
  assert.ok(start >= 0, `docs/grpc-api.md has no heading "${heading}"`);
  const out: string[] = [];
  for (const line of lines.slice(start + 1)) {
    const h = /^(#+)\s/.exec(line);
    if (h && h[1]!.length <= level) break;
    out.push(line);
  }
  return out.join('\n');
}

/** Rows `| `CODE` | `STATUS` | …` of the tables in `text` that come before any sub-heading. */
function tableRows(text: string, stopAtSubheading: boolean): [string, string][] {
  const rows: [string, string][] = [];
  for (const line of text.split('\n')) {
    if (stopAtSubheading && /^#+\s/.test(line)) break;
    const m = /^\|\s*`([A-Z][A-Z0-9_]*)`\s*\|\s*`([A-Z_]+)`\s*\|/.exec(line);
    if (m) rows.push([m[1]!, m[2]!]);
  }
  return rows;
}

/** Every "`CODE` (`STATUS`)" pair in the prose (per-RPC error lists). */
function prosePairs(): [string, string][] {
  return [...DOC.matchAll(/`([A-Z][A-Z0-9_]*)`\s+\(`([A-Z_]+)`/g)].map((m) => [m[1]!, m[2]!]);
}

const statusNames = new Set(Object.keys(GrpcStatus));
function isCode(c: string): c is keyof typeof ERROR_CODES {
  return Object.prototype.hasOwnProperty.call(ERROR_CODES, c);
}

// ------------------------------------------------------------------------------ tests

test('the proto parses into the service this doc describes', () => {
  const names = rpcs().map((r) => r.name);
  // guards against a parser that silently finds nothing
  assert.equal(names.length, (SRC.match(/\brpc\s/g) ?? []).length, 'an rpc line did not parse');
  assert.ok(names.length >= 16, `found only ${names.length} rpcs`);
  for (const n of ['CreateSandbox', 'Exec', 'WriteFiles', 'InvokeWorker', 'GetNodeInfo'])
    assert.ok(names.includes(n), n);
  const b = blocks();
  assert.ok(b.some((x) => x.kind === 'enum' && x.name === 'ExitReason'));
  const start = b.find((x) => x.name === 'ExecStart');
  assert.deepEqual(
    fields(start!.body).map((f) => f.name),
    ['owner_id', 'sandbox_id', 'argv', 'env', 'cwd', 'user', 'stdin', 'timeout_ms'],
  );
  const create = b.find((x) => x.name === 'CreateSandboxRequest');
  assert.ok(fields(create!.body).some((f) => f.name === 'labels' && f.type === 'string'));
});

test('every rpc has its own heading, in proto order', () => {
  const headings = [...DOC.matchAll(/^### (\w+)\s*$/gm)].map((m) => m[1]!);
  const names = rpcs().map((r) => r.name);
  for (const n of names) assert.ok(headings.includes(n), `docs/grpc-api.md needs a "### ${n}" section`);
  const order = headings.filter((h) => names.includes(h));
  assert.deepEqual(order, names, 'the rpc sections must follow the order of the proto');
});

test('every message, enum, enum value and field of the proto is named in the doc', () => {
  const missing: string[] = [];
  for (const b of blocks()) {
    if (!mentioned(b.name)) missing.push(`${b.kind} ${b.name}`);
    if (b.kind === 'enum') {
      for (const v of enumValues(b.body)) if (!mentioned(v)) missing.push(`value ${b.name}.${v}`);
    } else {
      for (const f of fields(b.body)) if (!mentioned(f.name)) missing.push(`field ${b.name}.${f.name}`);
    }
  }
  assert.deepEqual(missing, [], 'name these in docs/grpc-api.md (in backticks)');
});

test('every error code the doc gives a status for has that status in ERROR_CODES', () => {
  const pairs = [...tableRows(section('## Error codes'), false), ...prosePairs()];
  assert.ok(pairs.length > 40, `found only ${pairs.length} code/status pairs`);
  const wrong: string[] = [];
  for (const [code, st] of pairs) {
    if (!statusNames.has(st)) wrong.push(`${code}: "${st}" is not a gRPC status name`);
    else if (!isCode(code)) wrong.push(`${code} is not in ERROR_CODES`);
    else if (ERROR_CODES[code].grpc !== st)
      wrong.push(`${code} is documented as ${st} but ERROR_CODES says ${ERROR_CODES[code].grpc}`);
  }
  assert.deepEqual(wrong, []);
});

test('the error table accounts for every code, and the per-rpc lists only use answered codes', () => {
  const answered = tableRows(section('## Error codes'), true).map(([c]) => c);
  const notAnswered = tableRows(section('### Codes not answered over gRPC'), false).map(([c]) => c);
  assert.ok(answered.length > 30);
  assert.deepEqual(
    answered.filter((c) => notAnswered.includes(c)),
    [],
    'a code is either answered over gRPC or not',
  );
  const listed = new Set([...answered, ...notAnswered]);
  assert.deepEqual(
    Object.keys(ERROR_CODES).filter((c) => !listed.has(c)),
    [],
    'add these codes to the "Error codes" table of docs/grpc-api.md (or to "Codes not answered over gRPC")',
  );
  assert.equal(new Set(answered).size, answered.length, 'a code is listed twice');
  const unknownInProse = prosePairs()
    .map(([c]) => c)
    .filter((c) => !answered.includes(c));
  assert.deepEqual(unknownInProse, [], 'codes named in the rpc sections must be in the "Error codes" table');
});

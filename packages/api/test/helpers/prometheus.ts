// A strict reader of the Prometheus text exposition format (0.0.4) for tests: every line must be
// a HELP, a TYPE or a sample of a declared family, label values well escaped, values numbers;
// histograms must have increasing `le` buckets ending at +Inf equal to their _count.
import assert from 'node:assert/strict';

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface Exposition {
  readonly types: ReadonlyMap<string, string>;
  readonly samples: readonly Sample[];
  /** The value of `name` with exactly these labels (others unset); undefined when absent. */
  value(name: string, labels?: Record<string, string>): number | undefined;
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const LABEL = '[a-zA-Z_][a-zA-Z0-9_]*';
// Values are floats as Go's ParseFloat reads them: Inf and NaN in any case (prom-client writes Nan).
const VALUE = '(?:[+-]?(?:\\d+(?:\\.\\d*)?|\\.\\d+)(?:[eE][+-]?\\d+)?|[+-]?(?:Inf|Infinity)|NaN)';
const SAMPLE_RE = new RegExp(`^(${NAME})(?:\\{(.*)\\})? (${VALUE})(?: (-?\\d+))?$`, 'i');
const LABEL_RE = new RegExp(`^(${LABEL})="((?:[^"\\\\\\n]|\\\\[\\\\"n])*)"(?:,|$)`);
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

function parseLabels(text: string, line: string): Record<string, string> {
  const labels: Record<string, string> = {};
  let rest = text;
  while (rest !== '') {
    const m = LABEL_RE.exec(rest);
    assert.ok(m, `bad labels in: ${line}`);
    assert.ok(!(m[1]! in labels), `repeated label ${m[1]} in: ${line}`);
    labels[m[1]!] = m[2]!.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
    rest = rest.slice(m[0].length);
  }
  return labels;
}

function familyOf(name: string, types: ReadonlyMap<string, string>): string | undefined {
  if (types.has(name)) return name;
  for (const suffix of ['_bucket', '_sum', '_count', '_created']) {
    if (name.endsWith(suffix)) {
      const base = name.slice(0, -suffix.length);
      const t = types.get(base);
      if (t === 'histogram' || t === 'summary') return base;
    }
  }
  return undefined;
}

/** Parses `text`, failing the test at the first line that is not valid exposition format. */
export function parseExposition(text: string): Exposition {
  assert.ok(text.endsWith('\n'), 'the exposition ends with a newline');
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const samples: Sample[] = [];
  const seen = new Set<string>();
  for (const line of text.slice(0, -1).split('\n')) {
    if (line.startsWith('# HELP ')) {
      const m = new RegExp(`^# HELP (${NAME}) (.*)$`).exec(line);
      assert.ok(m, `bad HELP: ${line}`);
      assert.ok(!helps.has(m[1]!), `second HELP for ${m[1]}`);
      helps.add(m[1]!);
      continue;
    }
    if (line.startsWith('# TYPE ')) {
      const m = new RegExp(`^# TYPE (${NAME}) (\\w+)$`).exec(line);
      assert.ok(m && TYPES.has(m[2]!), `bad TYPE: ${line}`);
      assert.ok(!types.has(m[1]!), `second TYPE for ${m[1]}`);
      types.set(m[1]!, m[2]!);
      continue;
    }
    assert.ok(!line.startsWith('#') || line.startsWith('# '), `bad comment: ${line}`);
    // Empty lines are allowed and ignored (prom-client separates families with one).
    if (line.startsWith('#') || line === '') continue;
    const m = SAMPLE_RE.exec(line);
    assert.ok(m, `bad sample line: ${JSON.stringify(line)}`);
    const name = m[1]!;
    assert.ok(familyOf(name, types) !== undefined, `sample of an undeclared family: ${line}`);
    const labels = parseLabels(m[2] ?? '', line);
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    assert.ok(!seen.has(key), `repeated series: ${line}`);
    seen.add(key);
    const raw = m[3]!;
    const value = /inf(inity)?$/i.test(raw)
      ? raw.startsWith('-')
        ? -Infinity
        : Infinity
      : /nan/i.test(raw)
        ? Number.NaN
        : Number(raw);
    samples.push({ name, labels, value });
  }
  checkHistograms(types, samples);
  return {
    types,
    samples,
    value(name, labels = {}) {
      const want = Object.entries(labels).sort();
      const s = samples.find(
        (x) => x.name === name && JSON.stringify(Object.entries(x.labels).sort()) === JSON.stringify(want),
      );
      return s?.value;
    },
  };
}

function checkHistograms(types: ReadonlyMap<string, string>, samples: readonly Sample[]): void {
  for (const [family, type] of types) {
    if (type !== 'histogram') continue;
    const groups = new Map<string, Sample[]>();
    for (const s of samples.filter((x) => x.name === `${family}_bucket`)) {
      const { le, ...rest } = s.labels;
      assert.ok(le !== undefined, `${family}_bucket without le`);
      const key = JSON.stringify(Object.entries(rest).sort());
      groups.set(key, [...(groups.get(key) ?? []), s]);
    }
    for (const [key, buckets] of groups) {
      const les = buckets.map((b) => (b.labels.le === '+Inf' ? Infinity : Number(b.labels.le)));
      for (let i = 1; i < les.length; i++) assert.ok(les[i]! > les[i - 1]!, `${family} le increases`);
      assert.equal(les.at(-1), Infinity, `${family}${key} ends with +Inf`);
      for (let i = 1; i < buckets.length; i++)
        assert.ok(buckets[i]!.value >= buckets[i - 1]!.value, `${family}${key} buckets are cumulative`);
      const labels = Object.fromEntries(JSON.parse(key) as [string, string][]);
      const count = samples.find(
        (x) =>
          x.name === `${family}_count` &&
          JSON.stringify(Object.entries(x.labels).sort()) === JSON.stringify(Object.entries(labels).sort()),
      );
      assert.equal(count?.value, buckets.at(-1)!.value, `${family}${key}: +Inf bucket equals _count`);
    }
  }
}

/** A small, strict flag parser: the CLI contract needs exact errors and `--` / first-positional handling. */

export interface FlagSpec {
  readonly type: 'string' | 'boolean';
  readonly multiple?: boolean;
  readonly short?: string;
}

export type FlagValues = Record<string, string | boolean | string[] | undefined>;

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export interface Parsed {
  readonly flags: FlagValues;
  /** Arguments after `--`, or from the first non-flag argument on when `stopAtPositional`. */
  readonly rest: string[];
}

export function parseFlags(
  argv: readonly string[],
  specs: Readonly<Record<string, FlagSpec>>,
  opts: { stopAtPositional: boolean },
): Parsed {
  const flags: FlagValues = {};
  const shorts = new Map(Object.entries(specs).flatMap(([k, s]) => (s.short ? [[s.short, k] as const] : [])));
  const rest: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    if (a === '--') {
      rest.push(...argv.slice(i + 1));
      break;
    }
    if (!a.startsWith('-') || a === '-') {
      if (opts.stopAtPositional) {
        rest.push(...argv.slice(i));
        break;
      }
      rest.push(a);
      continue;
    }
    let name: string;
    let inline: string | undefined;
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      name = eq === -1 ? a.slice(2) : a.slice(2, eq);
      inline = eq === -1 ? undefined : a.slice(eq + 1);
    } else {
      const long = shorts.get(a.slice(1));
      if (!long) throw new UsageError(`unknown flag ${a}`);
      name = long;
    }
    const spec = specs[name];
    if (!spec) throw new UsageError(`unknown flag --${name}`);
    let value: string | boolean;
    if (spec.type === 'boolean') {
      if (inline !== undefined) throw new UsageError(`--${name} takes no value`);
      value = true;
    } else {
      if (inline !== undefined) value = inline;
      else {
        const next = argv[i + 1];
        if (next === undefined || next === '--') throw new UsageError(`--${name} needs a value`);
        value = next;
        i++;
      }
    }
    if (spec.multiple) {
      const prev = flags[name];
      flags[name] = [...(Array.isArray(prev) ? prev : []), String(value)];
    } else {
      if (flags[name] !== undefined) throw new UsageError(`--${name} given twice`);
      flags[name] = value;
    }
  }
  return { flags, rest };
}

export function str(f: FlagValues, k: string): string | undefined {
  const v = f[k];
  return typeof v === 'string' ? v : undefined;
}

export function list(f: FlagValues, k: string): string[] {
  const v = f[k];
  return Array.isArray(v) ? v : [];
}

/**
 * Fails when relative imports between the TypeScript sources form a cycle (CONVENTIONS: no import
 * cycles). Reads every `.ts` file under the given roots (default: packages/<name>/src), follows
 * relative imports and re-exports (`./x.js` is the file `./x.ts`; type-only imports count too, as
 * they tie modules together just as much), and prints each cycle found.
 *
 *   node --import tsx scripts/check-cycles.ts [ROOT...]     exit 0: none, 1: cycles, 2: bad input
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

/** Every `.ts` file under `dir` (not `.d.ts`), skipping node_modules and dist. */
export function sourceFiles(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) {
      if (e.name !== 'node_modules' && e.name !== 'dist') out.push(...sourceFiles(p));
    } else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** The file a relative specifier names, or undefined (a package import, or nothing there). */
export function resolveRelative(from: string, spec: string): string | undefined {
  if (!spec.startsWith('./') && !spec.startsWith('../')) return undefined;
  const base = resolve(dirname(from), spec);
  const candidates = [base.replace(/\.js$/, '.ts'), `${base}.ts`, join(base, 'index.ts')];
  return candidates.find((c) => existsSync(c) && statSync(c).isFile());
}

/** Module graph: file -> the files it imports. */
export function importGraph(files: readonly string[]): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  for (const f of files) {
    const info = ts.preProcessFile(readFileSync(f, 'utf8'), true, true);
    const deps = info.importedFiles
      .map((i) => resolveRelative(f, i.fileName))
      .filter((d): d is string => d !== undefined);
    graph.set(f, [...new Set(deps)]);
  }
  return graph;
}

/** Strongly connected components with more than one file, or a file importing itself (Tarjan). */
export function findCycles(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const cycles: string[][] = [];
  const visit = (v: string): void => {
    idx.set(v, index);
    low.set(v, index);
    index++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!idx.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v) ?? 0, low.get(w) ?? 0));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v) ?? 0, idx.get(w) ?? 0));
      }
    }
    if (low.get(v) === idx.get(v)) {
      const scc: string[] = [];
      let w: string | undefined;
      do {
        w = stack.pop();
        if (w === undefined) break;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (graph.get(v) ?? []).includes(v)) cycles.push(scc.sort());
    }
  };
  for (const v of graph.keys()) if (!idx.has(v)) visit(v);
  return cycles;
}

function main(argv: string[]): number {
  const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
  const roots =
    argv.length > 0
      ? argv.map((a) => resolve(a))
      : readdirSync(join(repo, 'packages'))
          .map((p) => join(repo, 'packages', p, 'src'))
          .filter((p) => existsSync(p));
  for (const r of roots) {
    if (!existsSync(r) || !statSync(r).isDirectory()) {
      process.stderr.write(`check-cycles: ${r} is not a directory\n`);
      return 2;
    }
  }
  const graph = importGraph(roots.flatMap(sourceFiles));
  const cycles = findCycles(graph);
  for (const c of cycles) {
    process.stderr.write(`import cycle: ${c.map((f) => relative(repo, f)).join(' <-> ')}\n`);
  }
  if (cycles.length > 0) return 1;
  process.stdout.write(`check-cycles: no import cycles among ${graph.size} files\n`);
  return 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = main(process.argv.slice(2));
}

/**
 * `npm run bench -- sandbox`: what one sandboxed `true` costs through hako, next to baselines
 * measured in the same run (interleaved, round by round, because the machine is noisy):
 *
 * - oneshot / oneshot_egress: SandboxHost.runOnce() from this process (what hakod pays), network
 *   none, and egress with an allowlist entry; the host is wired by the CLI's wireSandboxHost() in a
 *   throw-away environment (own HAKO_ENV, state and run dirs, bridge, subnet, proxy ports) that is
 *   torn down at the end.
 * - cli: the whole `node packages/cli/bin/hako.js sandbox run -- true` process (the built dist);
 *   cli_version (`hako --version`) and node (`node -e 0`) split off its start-up.
 * - spawn, runc/crun, podman, srt/srt_cli: see sandbox-baselines.ts.
 * - profile: prepare() / runPrepared() / destroy() and every driver call, timed from outside.
 *
 * The last line of stdout is one JSON object with every p50 (`--json` prints only that line).
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { CleanupStack, EGRESS_POOL_DEFAULT, chooseRuntime, detectCgroupLayout } from '@hako/sandbox';
import type { CgroupLayout, RunOptions, RunResult, SandboxHost, SandboxOptions } from '@hako/sandbox';
import { wireSandboxHost } from '../packages/cli/src/wire.js';
import type { Wired } from '../packages/cli/src/wire.js';
import { parseSandboxRun } from '../packages/cli/src/commands/sandbox-run.js';
import { HAKO_BIN, REPO_ROOT, createTestHost } from '../packages/sandbox/test/helpers/test-host.js';
import type { TestHost } from '../packages/sandbox/test/helpers/test-host.js';
import { jsonLine } from './lib/json.js';
import type { JsonValue } from './lib/json.js';
import { timeCommand, versionOf } from './lib/proc.js';
import { runInterleavedWithProgress } from './lib/rounds.js';
import type { BenchCase, CaseOutcome } from './lib/rounds.js';
import { ratio, round2, summarize } from './lib/stats.js';
import type { Summary } from './lib/stats.js';
import { fmtMs, fmtRatio, renderTable } from './lib/table.js';
import {
  isUnavailable,
  makeBusyboxRootfs,
  podmanCase,
  runtimeCases,
  spawnCase,
  srtCases,
} from './sandbox-baselines.js';
import type { Built } from './sandbox-baselines.js';
import { PHASES, PHASE_LABEL, ProfileRecorder, summarizeProfiles } from './sandbox-profile.js';
import type { IterationProfile, ProfileSummary } from './sandbox-profile.js';

/** What `--only` accepts. */
export const SANDBOX_SELECTORS = [
  'oneshot',
  'egress',
  'cli',
  'spawn',
  'runtime',
  'podman',
  'srt',
  'profile',
] as const;
export type SandboxSelector = (typeof SANDBOX_SELECTORS)[number];

export interface SandboxBenchOptions {
  readonly n: number;
  readonly warmup: number;
  /** Undefined: everything. */
  readonly only: ReadonlySet<SandboxSelector> | undefined;
  /** Print only the JSON line (no table, no progress). */
  readonly json: boolean;
}

/** Rows of the main table, in order: key, label, the --only selector that runs it. */
const ROWS: readonly { key: string; label: string; selector: SandboxSelector }[] = [
  { key: 'oneshot', label: 'oneshot: library, network none', selector: 'oneshot' },
  { key: 'oneshot_bg', label: '  background work it left (untimed above)', selector: 'oneshot' },
  { key: 'oneshot_egress', label: 'oneshot: library, egress + allow', selector: 'egress' },
  { key: 'oneshot_egress_bg', label: '  background work it left (untimed above)', selector: 'egress' },
  { key: 'cli', label: 'cli: hako sandbox run -- true', selector: 'cli' },
  { key: 'cli_version', label: 'cli: hako --version (start-up)', selector: 'cli' },
  { key: 'node', label: 'node -e 0 (bare start-up)', selector: 'cli' },
  { key: 'spawn', label: 'spawn: child_process true', selector: 'spawn' },
  { key: 'runc', label: 'runtime: runc run (busybox)', selector: 'runtime' },
  { key: 'crun', label: 'runtime: crun run (busybox)', selector: 'runtime' },
  { key: 'podman', label: 'podman run --rm (busybox)', selector: 'podman' },
  { key: 'srt', label: 'srt: library wrap + run', selector: 'srt' },
  { key: 'srt_cli', label: 'srt: CLI process', selector: 'srt' },
];

/** The rows measured through hako itself (they need the throw-away hako host). */
const HAKO_ROWS: readonly [string, SandboxSelector][] = [
  ['oneshot', 'oneshot'],
  ['oneshot_egress', 'egress'],
  ['cli', 'cli'],
];

const PROFILE_MODES = ['none', 'egress'] as const;
type ProfileMode = (typeof PROFILE_MODES)[number];

const TARGET_ONESHOT_MS = 40;
const TARGET_EGRESS_MS = 60;
const TARGET_PODMAN_RATIO = 0.3;

function sandboxOptions(argv: string[]): SandboxOptions {
  const req = parseSandboxRun([...argv, '--', 'true']);
  if (req === 'help') throw new Error('unreachable: parseSandboxRun returned help');
  return req.options;
}

/** Run options that keep the runtime's stderr for the error message. */
function runOptions(stderr: string[]): RunOptions {
  return {
    stdio: ['ignore', 'ignore', 'pipe'],
    timeoutMs: 60_000,
    onSpawn: (child) => {
      child.stderr?.setEncoding('utf8').on('data', (d: string) => stderr.push(d));
    },
  };
}

function checkRun(r: RunResult, stderr: string[]): void {
  if (r.exitCode === 0) return;
  const err = stderr.join('').trim().slice(-1000);
  throw new Error(
    `sandbox exited ${r.exitCode} (${r.outcome})${r.message ? `: ${r.message}` : ''}${err ? `; stderr: ${err}` : ''}`,
  );
}

/**
 * One sandboxed `true` through the library, timed from a settled host: the background work the
 * previous iteration left (spare workspace volumes refilled, removed ones unmounted) is finished
 * before the clock starts, as on a host that is not saturated. How long that work took after this
 * iteration is pushed to `background` (its own row), so the cost is shown, not hidden.
 */
function oneshotCase(
  name: string,
  host: SandboxHost,
  options: SandboxOptions,
  background: number[],
): BenchCase {
  return {
    name,
    critical: true,
    iterate: async (warmup) => {
      const stderr: string[] = [];
      await host.settled();
      const started = performance.now();
      const r = await host.runOnce(options, ['true'], runOptions(stderr));
      const ms = performance.now() - started;
      checkRun(r, stderr);
      const bgStart = performance.now();
      await host.settled();
      if (!warmup) background.push(performance.now() - bgStart);
      return ms;
    },
  };
}

function profileCase(
  mode: ProfileMode,
  host: SandboxHost,
  options: SandboxOptions,
  rec: ProfileRecorder,
  into: IterationProfile[],
): BenchCase {
  return {
    name: `profile_${mode}`,
    critical: true,
    iterate: async (warmup) => {
      const stderr: string[] = [];
      await host.settled();
      rec.begin();
      let p: IterationProfile;
      try {
        const sb = await host.prepare(options, ['true']);
        rec.markRun();
        const r = await host.runPrepared(sb, runOptions(stderr));
        p = rec.end();
        checkRun(r, stderr);
      } catch (err) {
        rec.abort();
        throw err;
      }
      if (!warmup) into.push(p);
      return p.total;
    },
  };
}

/** The CLI's start-up alone (`hako --version`) and node's own (`node -e 0`), to split the cli row. */
function startupCases(): BenchCase[] {
  return [
    {
      name: 'cli_version',
      critical: false,
      iterate: () => timeCommand(process.execPath, [HAKO_BIN, '--version']),
    },
    { name: 'node', critical: false, iterate: () => timeCommand(process.execPath, ['-e', '0']) },
  ];
}

function cliCase(th: TestHost): BenchCase {
  return {
    name: 'cli',
    critical: true,
    iterate: () =>
      timeCommand(process.execPath, [HAKO_BIN, 'sandbox', 'run', '--', 'true'], {
        env: th.env,
        timeoutMs: 120_000,
      }),
  };
}

/** packages/x/src files newer than their dist output: the cli row measures the built dist. */
async function staleDist(): Promise<string[]> {
  const stale: string[] = [];
  for (const pkg of ['core', 'sandbox', 'cli']) {
    const base = join(REPO_ROOT, 'packages', pkg);
    const files = await readdir(join(base, 'src'), { recursive: true }).catch(() => [] as string[]);
    for (const f of files) {
      if (!f.endsWith('.ts') || f.endsWith('.d.ts')) continue;
      const src = await stat(join(base, 'src', f));
      const dist = await stat(join(base, 'dist', f.replace(/\.ts$/, '.js'))).catch(() => undefined);
      if (!dist || dist.mtimeMs < src.mtimeMs) stale.push(`packages/${pkg}/src/${f}`);
    }
  }
  return stale;
}

async function hostFacts(layout: CgroupLayout): Promise<Record<string, JsonValue>> {
  const [runc, crun, podman, podmanRuntime, bwrap] = await Promise.all([
    versionOf('runc'),
    versionOf('crun'),
    versionOf('podman'),
    versionOf('podman', ['info', '--format', '{{.Host.OCIRuntime.Name}}']),
    versionOf('bwrap'),
  ]);
  return {
    kernel: os.release(),
    cpus: os.cpus().length,
    node: process.version,
    cgroup_mode: layout.mode,
    cgroup_unified_controllers: layout.unifiedControllers,
    runc: runc ?? null,
    crun: crun ?? null,
    podman: podman ?? null,
    podman_runtime: podmanRuntime ?? null,
    bwrap: bwrap ?? null,
  };
}

function profileJson(s: ProfileSummary | undefined): JsonValue {
  if (!s) return null;
  const steps: Record<string, number> = {};
  for (const st of s.steps) steps[`${st.phase} ${st.name}`] = round2(st.mean);
  return {
    iterations: s.iterations,
    total_mean_ms: round2(s.total),
    prepare_mean_ms: round2(s.phases.prepare),
    run_mean_ms: round2(s.phases.run),
    destroy_mean_ms: round2(s.phases.destroy),
    host_code_mean_ms: {
      prepare: round2(s.hostCode.prepare),
      run: round2(s.hostCode.run),
      destroy: round2(s.hostCode.destroy),
    },
    steps_mean_ms: steps,
  };
}

function renderProfile(title: string, s: ProfileSummary): string {
  const share = (ms: number): string => `${((ms / s.total) * 100).toFixed(0)}%`;
  const rows: string[][] = [];
  for (const p of PHASES) {
    rows.push([PHASE_LABEL[p], fmtMs(s.phases[p]), '', share(s.phases[p])]);
    for (const st of s.steps.filter((x) => x.phase === p)) {
      rows.push([`  ${st.name}`, fmtMs(st.mean), fmtMs(st.p50), share(st.mean)]);
    }
    rows.push(['  (outside driver calls)', fmtMs(s.hostCode[p]), '', share(s.hostCode[p])]);
  }
  rows.push(['total', fmtMs(s.total), '', '100%']);
  return `${title}, mean of ${s.iterations} iterations (driver calls may overlap)\n${renderTable(
    [
      { header: 'phase / step' },
      { header: 'mean ms', align: 'right' },
      { header: 'p50 ms', align: 'right' },
      { header: 'share', align: 'right' },
    ],
    rows,
  )}`;
}

function truncate(s: string, max: number): string {
  const one = s.replace(/\s+/g, ' ');
  return one.length > max ? `${one.slice(0, max - 1)}…` : one;
}

/** Runs the sandbox bench; resolves to the process exit code. */
export async function sandboxBench(opts: SandboxBenchOptions): Promise<number> {
  const progress = (msg: string): void => {
    if (!opts.json) process.stderr.write(`bench: ${msg}\n`);
  };
  const want = (s: SandboxSelector): boolean => !opts.only || opts.only.has(s);
  const tag = randomBytes(3).toString('hex');
  const cleanup = new CleanupStack();
  const abort = new AbortController();
  const onSignal = (): void => abort.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const cases: BenchCase[] = [];
  const unavailable = new Map<string, string>();
  const setupFailures: string[] = [];
  /** hako rows that never ran because the host could not be set up. */
  const setupFailed = new Map<string, string>();
  const profiles: Record<ProfileMode, IterationProfile[]> = { none: [], egress: [] };
  /** Per one-shot row: how long the background work after each measured iteration took. */
  const background = { oneshot_bg: [] as number[], oneshot_egress_bg: [] as number[] };
  let outcomes = new Map<string, CaseOutcome>();
  let th: TestHost | undefined;
  let wired: Wired | undefined;
  let facts: Record<string, JsonValue> = {};
  let cgroupMode = '?';
  let hakoRuntime: string | undefined;
  let stale: string[] = [];
  let instrumentMissing: string[] = [];
  const loadStart = os.loadavg()[0] ?? 0;
  const add = (b: Built): void => {
    if (isUnavailable(b)) unavailable.set(b.name, b.reason);
    else cases.push(b);
  };
  let cleanupErrors: string[] = [];
  let leftovers: string[] = [];

  try {
    const layout = await detectCgroupLayout();
    cgroupMode = layout.mode;
    facts = await hostFacts(layout);
    const workDir = await mkdtemp(join(os.tmpdir(), `hako-bench-${tag}-`));
    cleanup.push('bench work dir', () => rm(workDir, { recursive: true, force: true }));

    // ---------------------------------------------------------------- hako
    const needHako = want('oneshot') || want('egress') || want('cli') || want('profile');
    if (needHako) {
      stale = want('cli') ? await staleDist() : [];
      try {
        const host = createTestHost();
        th = host;
        cleanup.push('test host teardown', () => host.teardown());
        progress(`hako env ${host.hakoEnv}: wiring the host (state ${host.stateDir})`);
        // as hakod wires its host: egress identities kept ready (what hakod pays)
        const w = await wireSandboxHost(host.env, { egressPool: EGRESS_POOL_DEFAULT });
        wired = w;
        cleanup.push('hako host gc and close', async () => {
          const report = await w.host.gc({ dryRun: false });
          await w.close();
          if (report.failed.length > 0) {
            throw new Error(
              `gc failed: ${report.failed.map((f) => `${f.name}: ${f.errors.join(', ')}`).join('; ')}`,
            );
          }
        });
        await w.host.init();
        hakoRuntime = w.runtimeName;
      } catch (err) {
        const msg = `setting up the hako host: ${(err as Error).message}`;
        setupFailures.push(msg);
        for (const [key, sel] of HAKO_ROWS) if (want(sel)) setupFailed.set(key, msg);
      }
    }
    if (!hakoRuntime) hakoRuntime = (await chooseRuntime('auto', layout).catch(() => undefined))?.name;
    if (wired && th) {
      const none = sandboxOptions([]);
      const egress = sandboxOptions(['--network', 'egress', '--allow', 'example.com:443']);
      if (want('oneshot')) cases.push(oneshotCase('oneshot', wired.host, none, background.oneshot_bg));
      if (want('egress'))
        cases.push(oneshotCase('oneshot_egress', wired.host, egress, background.oneshot_egress_bg));
      if (want('cli')) cases.push(cliCase(th), ...startupCases());
      if (want('profile')) {
        const rec = new ProfileRecorder();
        rec.instrument(wired.host);
        instrumentMissing = rec.missing;
        cases.push(profileCase('none', wired.host, none, rec, profiles.none));
        cases.push(profileCase('egress', wired.host, egress, rec, profiles.egress));
      }
    }

    // ---------------------------------------------------------------- baselines
    if (want('spawn')) add(spawnCase());
    if (want('runtime') || want('podman')) {
      const rootfs = await makeBusyboxRootfs(join(workDir, 'bundle')).catch((e: unknown) => e as Error);
      if (want('runtime')) for (const b of await runtimeCases(workDir, rootfs, tag, layout, cleanup)) add(b);
      if (want('podman')) add(await podmanCase(workDir, rootfs, tag, cleanup));
    }
    if (want('srt')) for (const b of await srtCases(workDir, cleanup)) add(b);

    outcomes = await runInterleavedWithProgress(
      cases,
      { n: opts.n, warmup: opts.warmup, signal: abort.signal },
      progress,
    );
  } catch (err) {
    setupFailures.push((err as Error).message);
  } finally {
    progress('cleaning up');
    cleanupErrors = (await cleanup.run()).map(
      (e) => `${e.message}${e.cause ? `: ${(e.cause as Error).message}` : ''}`,
    );
    leftovers = th?.leftovers() ?? [];
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  const loadEnd = os.loadavg()[0] ?? 0;

  // ---------------------------------------------------------------- results
  const summaries = new Map<string, Summary | undefined>();
  const failed = new Map<string, string>(setupFailed);
  for (const [name, o] of outcomes) {
    summaries.set(name, summarize(o.samples));
    if (o.error !== undefined) failed.set(name, o.error);
  }
  for (const [name, samples] of Object.entries(background)) summaries.set(name, summarize(samples));
  const p50 = (key: string): number | null => summaries.get(key)?.p50 ?? null;
  const runtimeKey = hakoRuntime === 'crun' || hakoRuntime === 'runc' ? hakoRuntime : 'runc';
  const oneshotP50 = p50('oneshot');
  const ratios = {
    oneshot_podman: ratio(oneshotP50, p50('podman')),
    cli_podman: ratio(p50('cli'), p50('podman')),
    oneshot_spawn: ratio(oneshotP50, p50('spawn')),
    oneshot_runtime: ratio(oneshotP50, p50(runtimeKey)),
    oneshot_srt: ratio(oneshotP50, p50('srt')),
  };
  const egressP50 = p50('oneshot_egress');
  const cliP50 = p50('cli');
  const podmanP50 = p50('podman');
  const targets: { key: string; text: string; ok: boolean | null; got: string }[] = [
    {
      key: 'oneshot_p50_le_40ms',
      text: `one-shot (network none) p50 <= ${TARGET_ONESHOT_MS} ms`,
      ok: oneshotP50 === null ? null : oneshotP50 <= TARGET_ONESHOT_MS,
      got: `${fmtMs(oneshotP50)} ms`,
    },
    {
      key: 'egress_p50_le_60ms',
      text: `one-shot (egress) p50 <= ${TARGET_EGRESS_MS} ms`,
      ok: egressP50 === null ? null : egressP50 <= TARGET_EGRESS_MS,
      got: `${fmtMs(egressP50)} ms`,
    },
    {
      key: 'oneshot_le_0_3x_podman',
      text: `one-shot p50 <= ${TARGET_PODMAN_RATIO}x podman p50`,
      ok: ratios.oneshot_podman === null ? null : ratios.oneshot_podman <= TARGET_PODMAN_RATIO,
      got: fmtRatio(ratios.oneshot_podman),
    },
    {
      key: 'cli_lt_podman',
      text: 'cli p50 < podman p50',
      ok: cliP50 === null || podmanP50 === null ? null : cliP50 < podmanP50,
      got: `${fmtMs(cliP50)} vs ${fmtMs(podmanP50)} ms`,
    },
  ];
  const profileSummaries: Record<ProfileMode, ProfileSummary | undefined> = {
    none: summarizeProfiles(profiles.none),
    egress: summarizeProfiles(profiles.egress),
  };
  const criticalFailures = [
    ...setupFailures,
    ...cases.filter((c) => c.critical && failed.has(c.name)).map((c) => `${c.name}: ${failed.get(c.name)}`),
  ];

  // ---------------------------------------------------------------- human output
  if (!opts.json) {
    const lines: string[] = [];
    lines.push(
      `hako sandbox bench: n=${opts.n} (+${opts.warmup} warm-up, interleaved), hako runtime ${hakoRuntime ?? '?'}, ` +
        `cgroup ${cgroupMode}, kernel ${os.release()}, ${os.cpus().length} cpus, ` +
        `load ${loadStart.toFixed(2)} -> ${loadEnd.toFixed(2)}`,
      '',
    );
    const rows: string[][] = [];
    for (const r of ROWS) {
      if (!want(r.selector)) continue;
      const s = summaries.get(r.key);
      const note =
        unavailable.get(r.key) ?? failed.get(r.key) ?? (r.key === hakoRuntime ? "hako's runtime" : '');
      rows.push([
        r.label,
        String(s?.n ?? 0),
        fmtMs(s?.p50),
        fmtMs(s?.p95),
        fmtMs(s?.mean),
        fmtMs(s?.min),
        fmtMs(s?.max),
        truncate(note, 110),
      ]);
    }
    lines.push(
      renderTable(
        [
          { header: 'name' },
          { header: 'n', align: 'right' },
          { header: 'p50', align: 'right' },
          { header: 'p95', align: 'right' },
          { header: 'mean', align: 'right' },
          { header: 'min', align: 'right' },
          { header: 'max', align: 'right' },
          { header: 'note' },
        ],
        rows,
      ),
      '',
      `ratios of p50: oneshot/podman ${fmtRatio(ratios.oneshot_podman)}, cli/podman ${fmtRatio(ratios.cli_podman)}, ` +
        `oneshot/spawn ${fmtRatio(ratios.oneshot_spawn)}, oneshot/runtime(${runtimeKey}) ${fmtRatio(ratios.oneshot_runtime)}, ` +
        `oneshot/srt ${fmtRatio(ratios.oneshot_srt)}`,
      '',
      'targets:',
    );
    for (const t of targets) {
      lines.push(`  ${t.ok === null ? 'SKIP' : t.ok ? 'PASS' : 'MISS'}  ${t.text}: ${t.got}`);
    }
    for (const m of PROFILE_MODES) {
      const s = profileSummaries[m];
      if (s) lines.push('', renderProfile(`profile: one-shot, network ${m}`, s));
    }
    if (instrumentMissing.length > 0) {
      lines.push(`profile: driver calls not reachable (phase totals only): ${instrumentMissing.join(', ')}`);
    }
    const notes: string[] = [];
    if (stale.length > 0) {
      notes.push(
        `the cli row runs packages/cli/bin/hako.js, i.e. the built dist, which is older than ${stale.length} ` +
          `source file(s) (${stale.slice(0, 4).join(', ')}${stale.length > 4 ? ', …' : ''}): npm run build`,
      );
    }
    for (const f of setupFailures) notes.push(`FAILED: ${f}`);
    for (const f of criticalFailures.filter((x) => !setupFailures.includes(x))) notes.push(`FAILED: ${f}`);
    for (const e of cleanupErrors) notes.push(`cleanup error: ${e}`);
    if (leftovers.length > 0) notes.push(`left behind after teardown: ${leftovers.join('; ')}`);
    if (abort.signal.aborted) notes.push('interrupted: results cover the rounds completed');
    if (notes.length > 0) lines.push('', ...notes.map((n) => `note: ${n}`));
    lines.push('');
    process.stdout.write(`${lines.join('\n')}\n`);
  }

  // ---------------------------------------------------------------- JSON (last line)
  const results: Record<string, JsonValue> = {};
  for (const r of ROWS) {
    const s = summaries.get(r.key);
    results[r.key] = s ? { ...s } : null;
  }
  const skipped = ROWS.filter((r) => !want(r.selector)).map((r) => r.key);
  const out: Record<string, JsonValue> = {
    bench: 'sandbox',
    n: opts.n,
    warmup: opts.warmup,
    runtime: hakoRuntime ?? null,
    oneshot_p50_ms: oneshotP50,
    oneshot_p95_ms: summaries.get('oneshot')?.p95 ?? null,
    oneshot_background_p50_ms: p50('oneshot_bg'),
    oneshot_egress_p50_ms: egressP50,
    oneshot_egress_background_p50_ms: p50('oneshot_egress_bg'),
    oneshot_egress_p95_ms: summaries.get('oneshot_egress')?.p95 ?? null,
    cli_p50_ms: cliP50,
    cli_version_p50_ms: p50('cli_version'),
    node_p50_ms: p50('node'),
    spawn_p50_ms: p50('spawn'),
    runtime_p50_ms: p50(runtimeKey),
    runc_p50_ms: p50('runc'),
    crun_p50_ms: p50('crun'),
    podman_p50_ms: podmanP50,
    srt_p50_ms: p50('srt'),
    srt_cli_p50_ms: p50('srt_cli'),
    ratios,
    targets: Object.fromEntries(targets.map((t) => [t.key, t.ok])),
    results,
    unavailable: Object.fromEntries(unavailable),
    failed: Object.fromEntries(failed),
    skipped,
    profile: { none: profileJson(profileSummaries.none), egress: profileJson(profileSummaries.egress) },
    host: { ...facts, loadavg_start: loadStart, loadavg_end: loadEnd },
    cli_dist_stale: stale,
    setup_failures: setupFailures,
    cleanup_errors: cleanupErrors,
    leftovers,
    interrupted: abort.signal.aborted,
  };
  process.stdout.write(`${jsonLine(out)}\n`);
  if (abort.signal.aborted) return 130;
  return criticalFailures.length > 0 ? 1 : 0;
}

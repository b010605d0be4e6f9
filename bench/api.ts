/**
 * `npm run bench -- api`: hako-api end to end against the same agent session run directly.
 *
 * The whole stack runs on this machine (startStack: private PostgreSQL, Redis, s3rver, the
 * scripted model, hakod in-process with real sandboxes, API_PROCESSES hako-api processes). One
 * tenant with an API key; every execute goes over HTTP and is read as SSE until `done`.
 *
 * - direct: the scripted two-turn session (a Bash turn `echo hi > a.txt`, then a text turn) run by
 *   the Claude Agent SDK on the host, unsandboxed (runDirect), against the stack's scripted model,
 *   in a fresh temp cwd; then a second prompt resuming that session in the same cwd (direct_resume).
 * - hako: the same session via `POST /v1/conversations/{id}/execute` on a NEW conversation (so it
 *   includes sandbox creation and the workspace restore), then a second execute on the same
 *   conversation (warm sandbox, resumed session). The sandbox is destroyed afterwards (untimed),
 *   so each round starts cold and the host's workspace volume never fills.
 *   direct and hako run in interleaved rounds (bench/lib/rounds.ts); the first rounds are warm-up.
 * - concurrent: CONCURRENT new conversations executed at once (spread over the API processes),
 *   then the same CONCURRENT sessions run directly at once (the baseline of the same load).
 * - workspace: a conversation whose workspace holds FILE_COUNT small files uploaded through the
 *   files API (one at a time); RESTORE_SAMPLES executes that each restore it into a new sandbox
 *   (the sandbox is destroyed between them; the `workspace_restore` progress events, timed by
 *   their server timestamps; restore_1000_files_ms is their median: the first restores exactly
 *   FILE_COUNT files, later ones also the few files of the agent's state under .hako/), each
 *   after the bench itself listed and downloaded the same objects from S3 (the floor); then an
 *   execute whose Bash turn changes one file: the `workspace_sync done` event's `uploaded`,
 *   checked against what reached S3 (s3rver's object files, api-s3.ts) and against the files API
 *   (one file's version went up).
 *
 * Each execute is split into phases by its events' server timestamps (api-client.ts). The last
 * line of stdout is one JSON object (`--json` prints only that line).
 */
import { existsSync, readdirSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { callUnary, createAgentClient } from '@hako/agentd';
import type { AgentClient } from '@hako/proto';
import { runDirect } from '@hako/testkit';
import type { ScriptInput } from '@hako/testkit';
import { startStack } from '../packages/api/test/helpers/stack.js';
import type { Stack } from '../packages/api/test/helpers/stack.js';
import { cgroupRoots } from '../packages/sandbox/test/helpers/test-host.js';
import {
  PHASE_KEYS,
  callOk,
  executePhases,
  executeProblem,
  executeStream,
  progressEvent,
  text,
  uploadFile,
} from './api-client.js';
import type { ExecutePhases, ExecuteResult } from './api-client.js';
import { DEFAULT_RESTORE_CONCURRENCY } from '../packages/api/src/workspace/restore.js';
import { diffSnapshots, downloadAll, snapshotObjects } from './api-s3.js';
import { jsonLine } from './lib/json.js';
import type { JsonValue } from './lib/json.js';
import { runInterleavedWithProgress } from './lib/rounds.js';
import type { BenchCase, CaseOutcome } from './lib/rounds.js';
import { ratio, summarize } from './lib/stats.js';
import type { Summary } from './lib/stats.js';
import { fmtMs, fmtRatio, renderTable } from './lib/table.js';

export interface ApiBenchOptions {
  /** Measured interleaved rounds of the direct and hako cases. */
  readonly n: number;
  readonly warmup: number;
  /** Print only the JSON line. */
  readonly json: boolean;
}

export const API_DEFAULT_N = 10;
export const API_DEFAULT_WARMUP = 2;

const API_PROCESSES = 2;
const CONCURRENT = 20;
const FILE_COUNT = 1000;
const FILE_DIRS = 10;
const FILE_BYTES = 200;
/**
 * Uploads to one conversation commit under the conversation's lock one at a time (a waiter gives
 * up after 30 s with 409 CONVERSATION_LOCKED): sent in parallel they only queue, so the bench
 * sends them one after another.
 */
const UPLOAD_CONCURRENCY = 1;
/** Restores of the file conversation (its sandbox destroyed between them). */
const RESTORE_SAMPLES = 3;
const TARGET_RATIO = 1.5;

const MIB = 1024 ** 2;
/**
 * The tenant: run slots and a request rate the bench cannot hit; 2 CPUs per sandbox, so the
 * sandboxed Claude Code has the host's two cores like the direct run (the product default is 1);
 * a small disk quota, since every sandbox's quota counts against the test host's 2 GiB volume.
 */
const TENANT_LIMITS = {
  cpus: 2,
  memory_bytes: 512 * MIB,
  disk_bytes: 64 * MIB,
  concurrent_runs: CONCURRENT + 5,
  requests_per_minute: 10_000,
} as const;

const SESSION_RESULT = 'wrote a.txt';
const SESSION_SCRIPT: ScriptInput = {
  turns: [{ tool: 'Bash', input: { command: 'echo hi > a.txt' } }, { text: SESSION_RESULT }],
};
const PROMPT = 'write hi to a.txt';
const PROMPT_AGAIN = 'write hi to a.txt again';

const COUNT_RESULT = 'counted the files';
const COUNT_SCRIPT: ScriptInput = {
  turns: [{ tool: 'Bash', input: { command: 'find data -type f | wc -l' } }, { text: COUNT_RESULT }],
};
const CHANGED_PATH = 'data/d05/f0500.txt';
const CHANGE_RESULT = 'changed one file';
const CHANGE_SCRIPT: ScriptInput = {
  turns: [{ tool: 'Bash', input: { command: `echo changed >> ${CHANGED_PATH}` } }, { text: CHANGE_RESULT }],
};

function errText(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown };
  const msg = typeof e?.message === 'string' ? e.message : String(err);
  return typeof e?.code === 'string' ? `${e.code}: ${msg}` : msg;
}

function truncate(s: string, max: number): string {
  const one = s.replace(/\s+/g, ' ');
  return one.length > max ? `${one.slice(0, max - 1)}…` : one;
}

function verdict(ok: boolean | null): string {
  return ok === null ? 'skip' : ok ? 'pass' : 'MISS';
}

function filePath(i: number): string {
  return `data/d${String(Math.floor(i / (FILE_COUNT / FILE_DIRS))).padStart(2, '0')}/f${String(i).padStart(4, '0')}.txt`;
}

function fileContent(i: number): Buffer {
  const head = `file ${i} of the api bench `;
  return Buffer.from(`${head.padEnd(FILE_BYTES - 1, '.')}\n`);
}

/** Runs fn(0..count-1), at most `concurrency` at once; the first failure is thrown after all stop. */
async function withConcurrency(
  count: number,
  concurrency: number,
  fn: (i: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  let error: unknown;
  const worker = async (): Promise<void> => {
    while (error === undefined && next < count) {
      const i = next++;
      try {
        await fn(i);
      } catch (err) {
        error ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, () => worker()));
  if (error !== undefined) throw error instanceof Error ? error : new Error(errText(error));
}

/** p50 of each phase over the executes. */
function phaseP50(list: readonly ExecutePhases[]): Record<string, number | null> {
  const out: Record<string, number | null> = {};
  for (const k of PHASE_KEYS) {
    out[k] = summarize(list.map((p) => p[k]).filter((x) => Number.isFinite(x)))?.p50 ?? null;
  }
  return out;
}

/** A file as the files API lists it (the fields the bench reads). */
interface WireFile {
  path: string;
  source: string;
  version: number;
  sha256: string;
}

interface DirectRecord {
  ms: number;
  firstModelMs: number;
  modelRequests: number;
}

/** Why a direct run did not end as the session script says (undefined when it did). */
function directProblem(r: Awaited<ReturnType<typeof runDirect>>): string | undefined {
  const res = r.result;
  if (!res) return 'the direct run ended without a result';
  if (res.subtype !== 'success' || res.result !== SESSION_RESULT) {
    return `the direct run ended with ${res.subtype}: ${JSON.stringify('result' in res ? res.result : '')}`;
  }
  if (!r.sessionId) return 'the direct run reported no session id';
  return undefined;
}

interface DirectConcurrent {
  wallMs: number;
  runs: Summary | undefined;
  errors: string[];
}

interface ConcurrentResult {
  wallMs: number;
  /** The same sessions run directly at once, right after (baseline). */
  direct: DirectConcurrent | undefined;
  runs: Summary | undefined;
  firstEvent: Summary | undefined;
  phases: Record<string, number | null>;
  sandboxP95: number | null;
  errors: string[];
}

interface WorkspaceResult {
  uploadMs: number;
  /** Before each restore: the same objects downloaded straight from S3 by the bench (the floor). */
  downloads: { ms: number; objects: number; bytes: number }[];
  restores: { ms: number; files: number; bytes: number }[];
  countOutput: string;
  /** The sync-back after the first restore: objects written that are not agent state. */
  firstSyncUploaded: number | null;
  firstSyncWorkspaceWritten: number;
  changeUploaded: number | null;
  changeDeleted: number | null;
  changeUnchanged: number | null;
  workspaceWritten: string[];
  stateWritten: string[];
  deletedObjects: string[];
  filesChanged: { path: string; source: string; version: number }[];
  warm: boolean;
}

/** CONCURRENT direct sessions at once, each in its own temp cwd. */
async function directConcurrent(modelUrl: string): Promise<DirectConcurrent> {
  const cwds: string[] = [];
  try {
    for (let i = 0; i < CONCURRENT; i++) cwds.push(await mkdtemp(join(os.tmpdir(), 'hako-bench-direct-')));
    const t = performance.now();
    const results = await Promise.all(
      cwds.map((cwd) => {
        const t1 = performance.now();
        return runDirect({ prompt: PROMPT, cwd, modelUrl, timeoutMs: 300_000 }).then(
          (r) => ({ ms: performance.now() - t1, problem: directProblem(r) }),
          (err: unknown) => ({ ms: NaN, problem: errText(err) }),
        );
      }),
    );
    const wallMs = performance.now() - t;
    return {
      wallMs,
      runs: summarize(results.filter((r) => r.problem === undefined).map((r) => r.ms)),
      errors: results.flatMap((r) => (r.problem === undefined ? [] : [r.problem])),
    };
  } finally {
    await Promise.all(cwds.map((cwd) => rm(cwd, { recursive: true, force: true })));
  }
}

/** Runs the api bench; resolves to the process exit code. */
export async function apiBench(opts: ApiBenchOptions): Promise<number> {
  const progress = (msg: string): void => {
    if (!opts.json) process.stderr.write(`bench: ${msg}\n`);
  };
  const abort = new AbortController();
  const onSignal = (): void => abort.abort();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const loadStart = os.loadavg();
  const failures: string[] = [];
  const notes: string[] = [];
  let cleanupErrors: string[] = [];
  let leftovers: string[] = [];
  let stack: Stack | undefined;
  let hakod: AgentClient | undefined;
  let stackStartMs = NaN;
  let outcomes = new Map<string, CaseOutcome>();
  const cases: BenchCase[] = [];

  const direct: DirectRecord[] = [];
  const directResume: DirectRecord[] = [];
  const cold: ExecuteResult[] = [];
  const warm: ExecuteResult[] = [];
  const coldPhases: ExecutePhases[] = [];
  const warmPhases: ExecutePhases[] = [];
  const hakoModelRequests: number[] = [];
  /** `uploaded` of each run's workspace_sync done event (the agent's state under .hako/ and a.txt). */
  const coldUploaded: number[] = [];
  const warmUploaded: number[] = [];
  let warmNotWarm = 0;
  let concurrent: ConcurrentResult | undefined;
  let workspace: WorkspaceResult | undefined;
  let sandboxesBeforeClose: number | undefined;
  let checkLeftovers: (() => string[]) | undefined;

  try {
    progress(
      `starting the stack: PostgreSQL, Redis, s3rver, scripted model, hakod, ${API_PROCESSES} hako-api`,
    );
    const t0 = performance.now();
    stack = await startStack({ apiProcesses: API_PROCESSES, script: SESSION_SCRIPT });
    stackStartMs = performance.now() - t0;
    const s = stack;
    const apiUrl = (i: number): string => s.apis[i % s.apis.length]?.url ?? '';
    hakod = createAgentClient({ address: s.agent.address, tls: { dir: s.pkiDir } });
    const client = hakod;
    const agentEnv = {
      env: s.agent.config.HAKO_ENV,
      stateDir: s.agent.config.HAKO_STATE_DIR,
      runDir: s.agent.config.HAKO_RUN_DIR,
    };

    const tenant = await callOk(apiUrl(0), s.adminToken, 'POST', '/v1/tenants', 201, {
      name: 'bench',
      settings: { limits: TENANT_LIMITS },
    });
    const tenantId = String(tenant.id);
    const key = String(
      (await callOk(apiUrl(0), s.adminToken, 'POST', `/v1/tenants/${tenantId}/api-keys`, 201)).key,
    );
    const newConversation = async (api: string): Promise<string> =>
      String((await callOk(api, key, 'POST', '/v1/conversations', 201, {})).id);
    const destroySandbox = async (r: ExecuteResult): Promise<void> => {
      const id = progressEvent(r, 'sandbox', 'done')?.data.sandbox_id;
      if (typeof id !== 'string') return;
      await callUnary(client, 'destroySandbox', { ownerId: tenantId, sandboxId: id }, { timeoutMs: 60_000 });
    };
    /** Receive times of the scripted model's requests since the last call (sequential phases only). */
    const takeModelTimes = (): number[] => s.model.requests.splice(0).map((r) => r.receivedAt);

    // ------------------------------------------------------------ direct vs hako, interleaved
    s.model.setScript(SESSION_SCRIPT);
    takeModelTimes();
    const runDirectOnce = async (
      cwd: string,
      prompt: string,
      resume?: string,
    ): Promise<DirectRecord & { sessionId: string }> => {
      takeModelTimes();
      const startWall = Date.now();
      const t = performance.now();
      const r = await runDirect({
        prompt,
        cwd,
        modelUrl: s.model.url,
        timeoutMs: 120_000,
        ...(resume ? { resume } : {}),
      });
      const ms = performance.now() - t;
      const times = takeModelTimes();
      const problem = directProblem(r);
      if (problem) throw new Error(problem);
      return {
        ms,
        firstModelMs: times.length > 0 ? Math.min(...times) - startWall : NaN,
        modelRequests: times.length,
        sessionId: r.sessionId ?? '',
      };
    };
    let hakoRound = 0;
    cases.push(
      {
        name: 'direct',
        critical: true,
        iterate: async (isWarmup) => {
          const cwd = await mkdtemp(join(os.tmpdir(), 'hako-bench-direct-'));
          try {
            const first = await runDirectOnce(cwd, PROMPT);
            const wrote = await readFile(join(cwd, 'a.txt'), 'utf8');
            if (wrote !== 'hi\n') throw new Error(`the direct run left a.txt = ${JSON.stringify(wrote)}`);
            const again = await runDirectOnce(cwd, PROMPT_AGAIN, first.sessionId);
            if (!isWarmup) {
              direct.push(first);
              directResume.push(again);
            }
            return first.ms;
          } finally {
            await rm(cwd, { recursive: true, force: true });
          }
        },
      },
      {
        name: 'hako',
        critical: true,
        iterate: async (isWarmup) => {
          const api = apiUrl(hakoRound++);
          const conv = await newConversation(api);
          takeModelTimes();
          const c = await executeStream(api, key, conv, PROMPT);
          const coldTimes = takeModelTimes();
          let w: ExecuteResult | undefined;
          try {
            let problem = executeProblem(c, SESSION_RESULT);
            if (problem) throw new Error(`cold execute: ${problem}`);
            if (progressEvent(c, 'sandbox', 'done')?.data.created !== true) {
              throw new Error('the execute on a new conversation did not create a sandbox');
            }
            w = await executeStream(api, key, conv, PROMPT_AGAIN);
            problem = executeProblem(w, SESSION_RESULT);
            if (problem) throw new Error(`warm execute: ${problem}`);
          } finally {
            // untimed; a sandbox a failed destroy leaves is counted before teardown
            const last = w && progressEvent(w, 'sandbox', 'done') ? w : c;
            await destroySandbox(last).catch(() => undefined);
          }
          const warmTimes = takeModelTimes();
          if (!isWarmup) {
            cold.push(c);
            warm.push(w);
            coldPhases.push(executePhases(c, coldTimes));
            warmPhases.push(executePhases(w, warmTimes));
            hakoModelRequests.push(coldTimes.length);
            coldUploaded.push(Number(progressEvent(c, 'workspace_sync', 'done')?.data.uploaded));
            warmUploaded.push(Number(progressEvent(w, 'workspace_sync', 'done')?.data.uploaded));
            if (progressEvent(w, 'sandbox', 'done')?.data.created !== false) warmNotWarm++;
          }
          return c.wallMs;
        },
      },
    );
    outcomes = await runInterleavedWithProgress(
      cases,
      { n: opts.n, warmup: opts.warmup, signal: abort.signal },
      progress,
    );

    // ------------------------------------------------------------ concurrent
    if (!abort.signal.aborted) {
      progress(`concurrent: ${CONCURRENT} new conversations executed at once`);
      const convs: string[] = [];
      for (let i = 0; i < CONCURRENT; i++) convs.push(await newConversation(apiUrl(i)));
      const t = performance.now();
      const results = await Promise.all(
        convs.map((conv, i) =>
          executeStream(apiUrl(i), key, conv, PROMPT).then(
            (r) => ({ r, problem: executeProblem(r, SESSION_RESULT) }),
            (err: unknown) => ({ r: undefined, problem: errText(err) }),
          ),
        ),
      );
      const wallMs = performance.now() - t;
      takeModelTimes();
      const ok = results.filter((x) => x.problem === undefined && x.r !== undefined).map((x) => x.r!);
      const phases = ok.map((r) => executePhases(r, []));
      concurrent = {
        wallMs,
        runs: summarize(ok.map((r) => r.wallMs)),
        firstEvent: summarize(ok.map((r) => r.firstEventMs)),
        phases: phaseP50(phases),
        sandboxP95: summarize(phases.map((p) => p.sandbox))?.p95 ?? null,
        errors: results.flatMap((x) => (x.problem === undefined ? [] : [x.problem])),
        direct: undefined,
      };
      for (const x of results) if (x.r) await destroySandbox(x.r).catch(() => undefined);
      if (!abort.signal.aborted) {
        progress(`concurrent: the same ${CONCURRENT} sessions run directly at once (baseline)`);
        concurrent.direct = await directConcurrent(s.model.url);
        takeModelTimes();
      }
    }

    // ------------------------------------------------------------ workspace: restore, sync-back
    if (!abort.signal.aborted) {
      const api = apiUrl(0);
      const conv = await newConversation(api);
      progress(
        `workspace: uploading ${FILE_COUNT} files through the files API, ${UPLOAD_CONCURRENCY} at a time`,
      );
      const tu = performance.now();
      await withConcurrency(FILE_COUNT, UPLOAD_CONCURRENCY, (i) =>
        uploadFile(api, key, conv, filePath(i), fileContent(i)),
      );
      const uploadMs = performance.now() - tu;
      const prefix = `workspaces/${tenantId}/${conv}/`;
      const snap = (): ReturnType<typeof snapshotObjects> => snapshotObjects(s.s3.dir, s.s3.bucket, prefix);
      const isState = (k: string): boolean => k.slice(prefix.length).startsWith('.hako/');
      s.model.setScript(COUNT_SCRIPT);
      const restores: WorkspaceResult['restores'] = [];
      const downloads: WorkspaceResult['downloads'] = [];
      let countOutput = '';
      let firstSyncUploaded: number | null = null;
      let firstSyncWorkspaceWritten = 0;
      let last: ExecuteResult | undefined;
      for (let k = 0; k < RESTORE_SAMPLES && !abort.signal.aborted; k++) {
        progress(
          `workspace: execute ${k + 1}/${RESTORE_SAMPLES} restoring ${FILE_COUNT} files into a new sandbox`,
        );
        if (last) await destroySandbox(last);
        downloads.push(await downloadAll(s.s3, prefix, DEFAULT_RESTORE_CONCURRENCY));
        const before = k === 0 ? await snap() : undefined;
        const r = await executeStream(api, key, conv, 'count the files');
        last = r;
        const problem = executeProblem(r, COUNT_RESULT);
        if (problem) throw new Error(`workspace restore execute ${k + 1}: ${problem}`);
        const started = progressEvent(r, 'workspace_restore', 'started');
        const done = progressEvent(r, 'workspace_restore', 'done');
        if (!started || !done)
          throw new Error('the execute on a new sandbox sent no workspace_restore events');
        restores.push({
          ms: done.ts - started.ts,
          files: Number(done.data.files),
          bytes: Number(done.data.bytes),
        });
        countOutput = text(r.events.find((e) => e.event === 'tool_result')?.data.output).trim();
        if (countOutput !== String(FILE_COUNT)) {
          throw new Error(
            `the agent counted ${JSON.stringify(countOutput)} files in data/, expected ${FILE_COUNT}`,
          );
        }
        if (before) {
          const diff = diffSnapshots(before, await snap());
          firstSyncWorkspaceWritten = diff.written.filter((x) => !isState(x)).length;
          const sync = progressEvent(r, 'workspace_sync', 'done');
          firstSyncUploaded = sync ? Number(sync.data.uploaded) : null;
        }
      }
      takeModelTimes();
      if (!abort.signal.aborted && last) {
        progress(`workspace: an execute that changes ${CHANGED_PATH} (warm sandbox)`);
        s.model.setScript(CHANGE_SCRIPT);
        const listFiles = async (): Promise<Map<string, WireFile>> => {
          const body = await callOk(api, key, 'GET', `/v1/conversations/${conv}/files`, 200);
          const files = (body.files ?? []) as WireFile[];
          return new Map(files.map((f) => [f.path, f]));
        };
        const filesBefore = await listFiles();
        const before = await snap();
        const r = await executeStream(api, key, conv, 'change one file');
        const after = await snap();
        const filesAfter = await listFiles();
        takeModelTimes();
        await destroySandbox(r.status === 200 ? r : last);
        const problem = executeProblem(r, CHANGE_RESULT);
        if (problem) throw new Error(`workspace change execute: ${problem}`);
        const diff = diffSnapshots(before, after);
        const sync = progressEvent(r, 'workspace_sync', 'done');
        const filesChanged = [...filesAfter.values()]
          .filter((f) => {
            const b = filesBefore.get(f.path);
            return !b || b.version !== f.version || b.sha256 !== f.sha256;
          })
          .map((f) => ({ path: f.path, source: f.source, version: f.version }));
        workspace = {
          uploadMs,
          downloads,
          restores,
          countOutput,
          firstSyncUploaded,
          firstSyncWorkspaceWritten,
          changeUploaded: sync ? Number(sync.data.uploaded) : null,
          changeDeleted: sync ? Number(sync.data.deleted) : null,
          changeUnchanged: sync ? Number(sync.data.unchanged) : null,
          workspaceWritten: diff.written.filter((x) => !isState(x)).map((x) => x.slice(prefix.length)),
          stateWritten: diff.written.filter(isState).map((x) => x.slice(prefix.length)),
          deletedObjects: diff.deleted.map((x) => x.slice(prefix.length)),
          filesChanged,
          warm: progressEvent(r, 'sandbox', 'done')?.data.created === false,
        };
      }
    }
    sandboxesBeforeClose = await callUnary(client, 'getNodeInfo', {}, { timeoutMs: 10_000 })
      .then((i) => i.sandboxes)
      .catch(() => undefined);
    // what close() must leave behind: nothing of the stack's hako environment
    checkLeftovers = (): string[] => {
      const left: string[] = [];
      if (existsSync(agentEnv.stateDir)) left.push(`dir ${agentEnv.stateDir}`);
      if (existsSync(agentEnv.runDir)) left.push(`dir ${agentEnv.runDir}`);
      if (existsSync('/run/netns')) {
        for (const n of readdirSync('/run/netns'))
          if (n.startsWith(`hako-${agentEnv.env}-`)) left.push(`netns ${n}`);
      }
      for (const root of cgroupRoots()) {
        const p = join(root, 'hako', agentEnv.env);
        if (existsSync(p)) left.push(`cgroup ${p}`);
      }
      return left;
    };
  } catch (err) {
    failures.push(errText(err));
  } finally {
    progress('cleaning up');
    hakod?.close();
    if (stack) {
      await stack.close().catch((err: unknown) => {
        const errs = err instanceof AggregateError ? err.errors : [err];
        cleanupErrors = errs.map(errText);
      });
    }
    if (checkLeftovers) leftovers = checkLeftovers();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  const loadEnd = os.loadavg();

  // ---------------------------------------------------------------- results
  const failed = new Map<string, string>();
  for (const [name, o] of outcomes) if (o.error !== undefined) failed.set(name, o.error);
  const criticalFailures = [
    ...failures,
    ...cases.filter((c) => c.critical && failed.has(c.name)).map((c) => `${c.name}: ${failed.get(c.name)}`),
  ];
  const directS = summarize(direct.map((d) => d.ms));
  const directResumeS = summarize(directResume.map((d) => d.ms));
  const coldS = summarize(cold.map((r) => r.wallMs));
  const warmS = summarize(warm.map((r) => r.wallMs));
  const firstS = summarize(cold.map((r) => r.firstEventMs));
  const firstWarmS = summarize(warm.map((r) => r.firstEventMs));
  const directFirstModel = summarize(direct.map((d) => d.firstModelMs).filter(Number.isFinite))?.p50 ?? null;
  const directResumeFirstModel =
    summarize(directResume.map((d) => d.firstModelMs).filter(Number.isFinite))?.p50 ?? null;
  const directRequests = summarize(direct.map((d) => d.modelRequests))?.p50 ?? null;
  const hakoRequests = summarize(hakoModelRequests)?.p50 ?? null;
  const coldUploadedP50 = summarize(coldUploaded.filter(Number.isFinite))?.p50 ?? null;
  const warmUploadedP50 = summarize(warmUploaded.filter(Number.isFinite))?.p50 ?? null;
  const coldP = phaseP50(coldPhases);
  const warmP = phaseP50(warmPhases);
  const ratioCold = ratio(coldS?.p50, directS?.p50);
  const ratioWarm = ratio(warmS?.p50, directS?.p50);
  const ratioWarmResume = ratio(warmS?.p50, directResumeS?.p50);
  const restoreS = workspace ? summarize(workspace.restores.map((r) => r.ms)) : undefined;
  const downloadS = workspace ? summarize(workspace.downloads.map((r) => r.ms)) : undefined;
  const changedUploads = workspace ? workspace.workspaceWritten.length : null;
  const stateUploads = workspace ? workspace.stateWritten.length : null;
  const syncVerified = workspace
    ? workspace.workspaceWritten.length === 1 &&
      workspace.workspaceWritten[0] === CHANGED_PATH &&
      workspace.deletedObjects.length === 0 &&
      workspace.changeUploaded === workspace.workspaceWritten.length + workspace.stateWritten.length &&
      workspace.filesChanged.length === 1 &&
      workspace.filesChanged[0]?.path === CHANGED_PATH &&
      workspace.filesChanged[0]?.source === 'ai_modified'
    : null;

  const targets: { key: string; text: string; got: string; ok: boolean | null }[] = [
    {
      key: 'ratio_le_1_5',
      text: `hako/direct p50 <= ${TARGET_RATIO}`,
      got: fmtRatio(ratioCold),
      ok: ratioCold === null ? null : ratioCold <= TARGET_RATIO,
    },
    {
      key: 'concurrent_errors_zero',
      text: `${CONCURRENT} executes at once without an error`,
      got: concurrent ? `${concurrent.errors.length} errors` : '-',
      ok: concurrent ? concurrent.errors.length === 0 : null,
    },
    {
      key: 'sync_back_one_upload',
      text: `one changed file of ${FILE_COUNT} costs one upload (checked in S3)`,
      got: changedUploads === null ? '-' : `${changedUploads} workspace object(s) written`,
      ok: syncVerified,
    },
  ];

  // guards: what makes these numbers less trustworthy, said next to them
  const cpus = os.cpus().length;
  if ((loadStart[0] ?? 0) > cpus * 0.5) {
    notes.push(
      `the machine was busy at the start (1-min load ${(loadStart[0] ?? 0).toFixed(2)} on ${cpus} cpus); rerun on a quiet machine`,
    );
  }
  for (const [name, s] of [
    ['direct', directS],
    ['hako cold', coldS],
    ['hako warm', warmS],
  ] as const) {
    if (s && s.n >= 3 && s.p95 > 2 * s.p50) {
      notes.push(`${name}: p95 ${fmtMs(s.p95)} ms is over twice its p50 ${fmtMs(s.p50)} ms (noisy)`);
    }
  }
  if (warmNotWarm > 0) notes.push(`${warmNotWarm} second execute(s) created a sandbox: not warm`);
  if (directRequests !== null && hakoRequests !== null && directRequests !== hakoRequests) {
    notes.push(
      `model requests per session differ: direct ${directRequests}, hako ${hakoRequests} (p50), so the sessions are not the same work`,
    );
  }
  if (workspace && workspace.firstSyncWorkspaceWritten > 0) {
    notes.push(
      `the sync-back after the first restore wrote ${workspace.firstSyncWorkspaceWritten} workspace object(s) the agent did not change`,
    );
  }
  if (workspace && !workspace.warm) notes.push('the change execute did not reuse the sandbox');
  if (concurrent?.direct && concurrent.direct.errors.length > 0) {
    notes.push(
      `concurrent direct baseline: first error: ${truncate(concurrent.direct.errors[0] ?? '', 300)}`,
    );
  }
  if (concurrent && concurrent.errors.length > 0) {
    notes.push(`concurrent: first error: ${truncate(concurrent.errors[0] ?? '', 300)}`);
  }
  if (sandboxesBeforeClose !== undefined && sandboxesBeforeClose > 0) {
    notes.push(
      `${sandboxesBeforeClose} sandbox(es) were still alive before teardown (close() destroyed them)`,
    );
  }

  // ---------------------------------------------------------------- human output
  if (!opts.json) {
    const lines: string[] = [];
    lines.push(
      `hako api bench: ${API_PROCESSES} hako-api processes, hakod in-process, PostgreSQL, Redis, s3rver and the ` +
        `scripted model on this host; n=${opts.n} (+${opts.warmup} warm-up, interleaved); tenant sandboxes ` +
        `${TENANT_LIMITS.cpus} cpus, ${TENANT_LIMITS.memory_bytes / MIB} MiB, disk ${TENANT_LIMITS.disk_bytes / MIB} MiB; ` +
        `kernel ${os.release()}, ${cpus} cpus, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, ` +
        `load ${(loadStart[0] ?? 0).toFixed(2)} -> ${(loadEnd[0] ?? 0).toFixed(2)}; stack start ${fmtMs(stackStartMs / 1000)} s`,
      '',
    );
    const row = (label: string, s: Summary | undefined, note = ''): string[] => [
      label,
      String(s?.n ?? 0),
      fmtMs(s?.p50),
      fmtMs(s?.p95),
      fmtMs(s?.min),
      fmtMs(s?.max),
      truncate(note, 100),
    ];
    lines.push(
      renderTable(
        [
          { header: 'session (Bash turn + text turn)' },
          { header: 'n', align: 'right' },
          { header: 'p50 ms', align: 'right' },
          { header: 'p95 ms', align: 'right' },
          { header: 'min', align: 'right' },
          { header: 'max', align: 'right' },
          { header: 'note' },
        ],
        [
          row('direct: SDK on the host, new session', directS, failed.get('direct') ?? ''),
          row('direct: second prompt, resumed session', directResumeS),
          row('hako: execute on a new conversation', coldS, failed.get('hako') ?? ''),
          row('hako: second execute, warm sandbox', warmS),
          row('hako: request -> first event (new conv.)', firstS),
          row('hako: request -> first event (warm)', firstWarmS),
        ],
      ),
      '',
      `ratios of p50: hako/direct ${fmtRatio(ratioCold)} (target <= ${TARGET_RATIO}), warm/direct ${fmtRatio(ratioWarm)}, ` +
        `warm/direct resumed ${fmtRatio(ratioWarmResume)}`,
      '',
    );
    const phaseLabels: Record<(typeof PHASE_KEYS)[number], string> = {
      admission: 'request -> sandbox step (auth, lock, slot, run row)',
      sandbox: 'sandbox: create or reuse',
      restore: 'workspace restore',
      agent: 'agent (Claude Code in the sandbox)',
      agent_to_first_model: '  of which: start -> first model request',
      model_to_agent_end: '  of which: last model request -> agent end',
      sync: 'workspace sync-back',
      finish: 'sync done -> done received (final tx)',
      total: 'total, client wall',
    };
    const directCol: Partial<Record<(typeof PHASE_KEYS)[number], number | null>> = {
      agent: directS?.p50 ?? null,
      agent_to_first_model: directFirstModel,
      total: directS?.p50 ?? null,
    };
    const resumeCol: Partial<Record<(typeof PHASE_KEYS)[number], number | null>> = {
      agent: directResumeS?.p50 ?? null,
      agent_to_first_model: directResumeFirstModel,
      total: directResumeS?.p50 ?? null,
    };
    lines.push(
      'where the time goes (p50 of each phase, ms; server event timestamps; phases p50 need not add up):',
      renderTable(
        [
          { header: 'phase' },
          { header: 'hako new', align: 'right' },
          { header: 'hako warm', align: 'right' },
          { header: `concurrent ${CONCURRENT}`, align: 'right' },
          { header: 'direct', align: 'right' },
          { header: 'direct resumed', align: 'right' },
        ],
        PHASE_KEYS.map((k) => [
          phaseLabels[k],
          fmtMs(coldP[k]),
          fmtMs(warmP[k]),
          fmtMs(concurrent?.phases[k]),
          fmtMs(directCol[k]),
          fmtMs(resumeCol[k]),
        ]),
      ),
      `model requests per session (p50): direct ${directRequests ?? '-'}, hako ${hakoRequests ?? '-'}; ` +
        `objects uploaded by the sync-back (p50): new ${coldUploadedP50 ?? '-'}, warm ${warmUploadedP50 ?? '-'}`,
      '',
    );
    const cap: string[][] = [];
    if (concurrent) {
      cap.push(
        [`${CONCURRENT} executes at once: wall, ms`, String(CONCURRENT), fmtMs(concurrent.wallMs), ''],
        [
          '  per execute p50 / p95, ms',
          String(concurrent.runs?.n ?? 0),
          `${fmtMs(concurrent.runs?.p50)} / ${fmtMs(concurrent.runs?.p95)}`,
          '',
        ],
        [
          '  request -> first event p50, ms',
          String(concurrent.firstEvent?.n ?? 0),
          fmtMs(concurrent.firstEvent?.p50),
          '',
        ],
        [
          '  sandbox create p50 / p95, ms',
          String(concurrent.runs?.n ?? 0),
          `${fmtMs(concurrent.phases.sandbox)} / ${fmtMs(concurrent.sandboxP95)}`,
          '',
        ],
        ['  errors', String(CONCURRENT), String(concurrent.errors.length), verdict(targets[1]?.ok ?? null)],
        [
          `${CONCURRENT} direct sessions at once (baseline): wall, ms`,
          String(CONCURRENT),
          fmtMs(concurrent.direct?.wallMs),
          '',
        ],
        [
          '  per session p50 / p95, ms',
          String(concurrent.direct?.runs?.n ?? 0),
          `${fmtMs(concurrent.direct?.runs?.p50)} / ${fmtMs(concurrent.direct?.runs?.p95)}`,
          '',
        ],
        ['  errors', String(CONCURRENT), String(concurrent.direct?.errors.length ?? '-'), ''],
        ['  wall ratio hako/direct', '', fmtRatio(ratio(concurrent.wallMs, concurrent.direct?.wallMs)), ''],
      );
    }
    if (workspace) {
      cap.push(
        [
          `upload ${FILE_COUNT} files (files API, ${UPLOAD_CONCURRENCY} at a time), ms`,
          String(FILE_COUNT),
          fmtMs(workspace.uploadMs),
          '',
        ],
        [
          `restore into a new sandbox, p50 ms (files: ${workspace.restores.map((r) => r.files).join(', ')})`,
          String(workspace.restores.length),
          fmtMs(restoreS?.p50),
          '',
        ],
        ['  each restore, ms', '', workspace.restores.map((r) => fmtMs(r.ms)).join(', '), ''],
        [
          `  floor: list + GET of the same objects, ${DEFAULT_RESTORE_CONCURRENCY} at a time, p50 ms`,
          String(workspace.downloads.length),
          fmtMs(downloadS?.p50),
          '',
        ],
        [
          'sync-back after the first restore: uploaded (event)',
          '1',
          String(workspace.firstSyncUploaded ?? '-'),
          '',
        ],
        [
          '  of which restored files written again (S3)',
          '1',
          String(workspace.firstSyncWorkspaceWritten),
          '',
        ],
        ['change 1 file: uploaded (workspace_sync event)', '1', String(workspace.changeUploaded ?? '-'), ''],
        [
          '  workspace objects written (S3 data dir)',
          '1',
          `${changedUploads} ${workspace.workspaceWritten.join(' ')}`,
          verdict(syncVerified),
        ],
        ['  agent state (.hako/) objects written (S3)', '1', String(stateUploads), ''],
        ['  objects deleted (S3)', '1', String(workspace.deletedObjects.length), ''],
        [
          '  files API: changed files',
          '1',
          workspace.filesChanged.map((f) => `${f.path} ${f.source} v${f.version}`).join(', ') || '0',
          '',
        ],
      );
    }
    if (cap.length > 0) {
      lines.push(
        renderTable(
          [
            { header: 'concurrency and workspace' },
            { header: 'n', align: 'right' },
            { header: 'value', align: 'right' },
            { header: 'result' },
          ],
          cap,
        ),
        '',
      );
    }
    lines.push('targets:');
    for (const t of targets) lines.push(`  ${verdict(t.ok).toUpperCase().padEnd(4)}  ${t.text}: ${t.got}`);
    const all = [
      ...notes,
      ...criticalFailures.map((f) => `FAILED: ${f}`),
      ...cleanupErrors.map((e) => `cleanup error: ${e}`),
      ...(leftovers.length > 0 ? [`WARNING: left behind after teardown: ${leftovers.join('; ')}`] : []),
      ...(abort.signal.aborted ? ['interrupted: results cover what was completed'] : []),
    ];
    if (all.length > 0) lines.push('', ...all.map((x) => `note: ${x}`));
    lines.push('');
    process.stdout.write(`${lines.join('\n')}\n`);
  } else if (leftovers.length > 0) {
    process.stderr.write(`bench: WARNING: left behind after teardown: ${leftovers.join('; ')}\n`);
  }

  // ---------------------------------------------------------------- JSON (last line)
  const sum = (s: Summary | undefined): JsonValue => (s ? { ...s } : null);
  const out: Record<string, JsonValue> = {
    bench: 'api',
    n: opts.n,
    warmup: opts.warmup,
    api_processes: API_PROCESSES,
    direct_p50_ms: directS?.p50 ?? null,
    direct_p95_ms: directS?.p95 ?? null,
    direct_resume_p50_ms: directResumeS?.p50 ?? null,
    hako_p50_ms: coldS?.p50 ?? null,
    hako_p95_ms: coldS?.p95 ?? null,
    hako_warm_p50_ms: warmS?.p50 ?? null,
    hako_warm_p95_ms: warmS?.p95 ?? null,
    ratio: ratioCold,
    ratio_warm: ratioWarm,
    ratio_warm_vs_direct_resume: ratioWarmResume,
    first_event_p50_ms: firstS?.p50 ?? null,
    first_event_warm_p50_ms: firstWarmS?.p50 ?? null,
    concurrent: CONCURRENT,
    concurrent_errors: concurrent ? concurrent.errors.length : null,
    concurrent_wall_ms: concurrent?.wallMs ?? null,
    concurrent_p50_ms: concurrent?.runs?.p50 ?? null,
    concurrent_p95_ms: concurrent?.runs?.p95 ?? null,
    concurrent_first_event_p50_ms: concurrent?.firstEvent?.p50 ?? null,
    concurrent_sandbox_p50_ms: concurrent?.phases.sandbox ?? null,
    concurrent_sandbox_p95_ms: concurrent?.sandboxP95 ?? null,
    concurrent_error_samples: concurrent ? concurrent.errors.slice(0, 5) : [],
    concurrent_direct_wall_ms: concurrent?.direct?.wallMs ?? null,
    concurrent_direct_p50_ms: concurrent?.direct?.runs?.p50 ?? null,
    concurrent_direct_p95_ms: concurrent?.direct?.runs?.p95 ?? null,
    concurrent_direct_errors: concurrent?.direct ? concurrent.direct.errors.length : null,
    concurrent_wall_ratio: ratio(concurrent?.wallMs, concurrent?.direct?.wallMs),
    restore_1000_files_ms: restoreS?.p50 ?? null,
    restore_samples_ms: workspace ? workspace.restores.map((r) => r.ms) : [],
    restore_files: workspace ? workspace.restores.map((r) => r.files) : [],
    restore_bytes: workspace ? workspace.restores.map((r) => r.bytes) : [],
    restore_s3_get_floor_p50_ms: downloadS?.p50 ?? null,
    restore_s3_get_floor_samples_ms: workspace ? workspace.downloads.map((r) => r.ms) : [],
    upload_1000_files_ms: workspace?.uploadMs ?? null,
    first_sync_uploaded: workspace?.firstSyncUploaded ?? null,
    first_sync_restored_files_rewritten: workspace?.firstSyncWorkspaceWritten ?? null,
    sync_back_uploaded: workspace?.changeUploaded ?? null,
    sync_back_changed_uploads: changedUploads,
    sync_back_state_uploads: stateUploads,
    sync_back_deleted: workspace ? workspace.deletedObjects.length : null,
    sync_back_files_changed: workspace ? workspace.filesChanged.length : null,
    sync_back_verified: syncVerified,
    phases_p50_ms: {
      hako: coldP,
      hako_warm: warmP,
      concurrent: concurrent?.phases ?? null,
      direct: { agent_to_first_model: directFirstModel, total: directS?.p50 ?? null },
      direct_resume: { agent_to_first_model: directResumeFirstModel, total: directResumeS?.p50 ?? null },
    },
    model_requests_p50: { direct: directRequests, hako: hakoRequests },
    sync_uploaded_p50: { hako: coldUploadedP50, hako_warm: warmUploadedP50 },
    results: {
      direct: sum(directS),
      direct_resume: sum(directResumeS),
      hako: sum(coldS),
      hako_warm: sum(warmS),
      first_event: sum(firstS),
      first_event_warm: sum(firstWarmS),
      concurrent: sum(concurrent?.runs),
      restore: sum(restoreS),
    },
    tenant_limits: { ...TENANT_LIMITS },
    targets: Object.fromEntries(targets.map((t) => [t.key, t.ok])),
    pass: targets.every((t) => t.ok === true),
    notes,
    failed: Object.fromEntries(failed),
    failures: criticalFailures,
    host: {
      kernel: os.release(),
      cpus,
      memory_gib: os.totalmem() / 2 ** 30,
      node: process.version,
      loadavg_start: loadStart,
      loadavg_end: loadEnd,
      stack_start_ms: stackStartMs,
    },
    sandboxes_before_close: sandboxesBeforeClose ?? null,
    cleanup_errors: cleanupErrors,
    leftovers,
    interrupted: abort.signal.aborted,
  };
  process.stdout.write(`${jsonLine(out)}\n`);
  if (abort.signal.aborted) return 130;
  return criticalFailures.length > 0 ? 1 : 0;
}

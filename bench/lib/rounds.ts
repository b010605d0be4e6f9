/**
 * Interleaved measurement: every round runs one iteration of every case, each round starting at a
 * different case, so slow drifts of a noisy machine hit all cases alike. The first rounds are
 * warm-up and are not recorded.
 */

export interface BenchCase {
  readonly name: string;
  /** A failure of a critical case (hako's own measurements) makes the bench exit non-zero. */
  readonly critical: boolean;
  /** One iteration; resolves to its duration in ms. `warmup`: this one is not recorded. */
  iterate(warmup: boolean): Promise<number>;
}

export interface CaseOutcome {
  readonly samples: number[];
  /** Why the case stopped early (it is not run again after its first failure). */
  error: string | undefined;
}

export interface RoundOptions {
  readonly n: number;
  readonly warmup: number;
  /** Stops between iterations once aborted (Ctrl-C); what was measured so far is kept. */
  readonly signal?: AbortSignal | undefined;
  readonly onRound?: ((round: number, total: number) => void) | undefined;
}

export async function runInterleaved(
  cases: readonly BenchCase[],
  opts: RoundOptions,
): Promise<Map<string, CaseOutcome>> {
  const out = new Map<string, CaseOutcome>(cases.map((c) => [c.name, { samples: [], error: undefined }]));
  const total = opts.warmup + opts.n;
  for (let round = 0; round < total; round++) {
    if (opts.signal?.aborted) break;
    opts.onRound?.(round, total);
    for (let k = 0; k < cases.length; k++) {
      if (opts.signal?.aborted) break;
      const c = cases[(round + k) % cases.length];
      if (!c) continue;
      const o = out.get(c.name);
      if (!o || o.error !== undefined) continue;
      try {
        const ms = await c.iterate(round < opts.warmup);
        if (round >= opts.warmup) o.samples.push(ms);
      } catch (err) {
        o.error = `${round < opts.warmup ? 'warm-up' : 'iteration'} ${round + 1}: ${(err as Error).message}`;
      }
    }
  }
  return out;
}

/** runInterleaved() with a progress line before it starts and every 10 rounds. */
export async function runInterleavedWithProgress(
  cases: readonly BenchCase[],
  opts: Omit<RoundOptions, 'onRound'>,
  progress: (msg: string) => void,
): Promise<Map<string, CaseOutcome>> {
  const started = performance.now();
  progress(
    `measuring ${cases.map((c) => c.name).join(', ')}: ${opts.warmup} warm-up + ${opts.n} rounds, interleaved`,
  );
  return runInterleaved(cases, {
    ...opts,
    onRound: (round, total) => {
      if (round > 0 && round % 10 === 0)
        progress(`round ${round}/${total} (${((performance.now() - started) / 1000).toFixed(0)} s)`);
    },
  });
}

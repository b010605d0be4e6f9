import type { EnvRecord } from '@hako/core';
import { parseFlags, UsageError } from '../flags.js';
import { wireSandboxHost } from '../wire.js';
import { printError } from '../output.js';

export async function gc(argv: readonly string[], env: EnvRecord): Promise<number> {
  let flags;
  try {
    flags = parseFlags(
      argv,
      { 'dry-run': { type: 'boolean' }, json: { type: 'boolean' } },
      { stopAtPositional: false },
    ).flags;
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`hako gc: ${e.message}\nusage: hako gc [--dry-run] [--json]\n`);
      return 2;
    }
    throw e;
  }
  const dryRun = flags['dry-run'] === true;
  const wired = await wireSandboxHost(env).catch((e: unknown) => e as Error);
  if (wired instanceof Error) return printError(wired);
  try {
    const report = await wired.host.gc({ dryRun, dropSpares: true });
    if (flags.json === true) {
      process.stdout.write(`${JSON.stringify({ dryRun, ...report })}\n`);
    } else {
      const verb = dryRun ? 'would remove' : 'removed';
      for (const r of report.removed) process.stdout.write(`${verb} ${r.name} (${r.kinds.join(', ')})\n`);
      for (const f of report.failed) process.stdout.write(`FAILED ${f.name}: ${f.errors.join('; ')}\n`);
      for (const k of report.kept) process.stdout.write(`kept ${k} (its owner is alive)\n`);
      if (report.spares > 0) process.stdout.write(`${verb} ${report.spares} spare workspace volume(s)\n`);
      if (report.removed.length + report.failed.length + report.spares === 0)
        process.stdout.write('nothing to collect\n');
    }
    return report.failed.length === 0 ? 0 : 1;
  } catch (e) {
    return printError(e as Error);
  } finally {
    await wired.close();
  }
}

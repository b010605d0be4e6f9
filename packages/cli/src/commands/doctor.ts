import type { EnvRecord } from '@hako/core';
import { runHostChecks } from '@hako/sandbox';
import { loadConfig } from '../wire.js';
import { parseFlags, UsageError } from '../flags.js';

export async function doctor(argv: readonly string[], env: EnvRecord): Promise<number> {
  let json = false;
  try {
    json = parseFlags(argv, { json: { type: 'boolean' } }, { stopAtPositional: false }).flags.json === true;
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`hako doctor: ${e.message}\nusage: hako doctor [--json]\n`);
      return 2;
    }
    throw e;
  }
  const config = loadConfig(env);
  const checks = await runHostChecks({
    stateDir: config.HAKO_STATE_DIR,
    pluginDirs: config.CNI_PLUGIN_DIRS.split(':').filter(Boolean),
  });
  const failedRequired = checks.filter((c) => c.required && !c.ok);
  if (json) {
    process.stdout.write(`${JSON.stringify({ ok: failedRequired.length === 0, checks })}\n`);
  } else {
    const width = Math.max(...checks.map((c) => c.name.length));
    for (const c of checks) {
      const status = c.ok ? 'OK     ' : c.required ? 'MISSING' : 'absent ';
      process.stdout.write(`${status}  ${c.name.padEnd(width)}  ${c.detail}\n`);
      if (!c.ok && c.fix) process.stdout.write(`${' '.repeat(9 + width)}  fix: ${c.fix}\n`);
    }
    process.stdout.write(
      failedRequired.length === 0
        ? '\nhako doctor: every required prerequisite is present\n'
        : `\nhako doctor: ${failedRequired.length} required prerequisite(s) missing\n`,
    );
  }
  return failedRequired.length === 0 ? 0 : 1;
}

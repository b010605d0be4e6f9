import type { AppError } from '@hako/core';
import { toAppError } from '@hako/core';

interface Step {
  readonly name: string;
  readonly undo: () => Promise<void> | void;
  readonly concurrent: boolean;
}

/**
 * A sandbox's undo steps. Each resource pushes its undo right after it is acquired; run() pops them
 * in reverse order, runs every one even when some fail, and returns the failures (never swallows).
 * Adjacent steps pushed with `concurrent` (resources that do not depend on each other) run
 * together; any other step waits for everything above it and blocks everything below it.
 */
export class CleanupStack {
  private steps: Step[] = [];

  push(name: string, undo: () => Promise<void> | void, opts: { concurrent?: boolean } = {}): void {
    this.steps.push({ name, undo, concurrent: opts.concurrent ?? false });
  }

  get size(): number {
    return this.steps.length;
  }

  names(): string[] {
    return this.steps.map((s) => s.name);
  }

  async run(): Promise<AppError[]> {
    const errors: AppError[] = [];
    const attempt = async (step: Step): Promise<void> => {
      try {
        await step.undo();
      } catch (err) {
        errors.push(toAppError(err, 'SANDBOX_CLEANUP_FAILED', `cleanup step "${step.name}"`));
      }
    };
    while (this.steps.length > 0) {
      const batch: Step[] = [];
      const first = this.steps.pop();
      if (!first) break;
      batch.push(first);
      while (first.concurrent && this.steps.at(-1)?.concurrent) batch.push(this.steps.pop() as Step);
      await Promise.all(batch.map(attempt));
    }
    return errors;
  }
}

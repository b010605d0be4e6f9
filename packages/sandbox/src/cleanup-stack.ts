import type { AppError } from '@hako/core';
import { toAppError } from '@hako/core';

interface Step {
  readonly name: string;
  readonly undo: () => Promise<void> | void;
}

/**
 * A sandbox's undo steps. Each resource pushes its undo right after it is acquired; run() pops them
 * in reverse order, runs every one even when some fail, and returns the failures (never swallows).
 */
export class CleanupStack {
  private steps: Step[] = [];

  push(name: string, undo: () => Promise<void> | void): void {
    this.steps.push({ name, undo });
  }

  get size(): number {
    return this.steps.length;
  }

  names(): string[] {
    return this.steps.map((s) => s.name);
  }

  async run(): Promise<AppError[]> {
    const errors: AppError[] = [];
    while (this.steps.length > 0) {
      const step = this.steps.pop();
      if (!step) break;
      try {
        await step.undo();
      } catch (err) {
        const e = toAppError(err, 'SANDBOX_CLEANUP_FAILED', `cleanup step "${step.name}"`);
        errors.push(e);
      }
    }
    return errors;
  }
}

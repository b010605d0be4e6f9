/**
 * Starts background work when the foreground has been quiet: poke() on every piece of foreground
 * activity (a create, a remove) moves the start to `quietMs` later, but never beyond `maxDeferMs`
 * after the first poke, so steady load still gets its background work done. flush() starts what
 * is pending at once (a process on its way out, or a caller that waits for the background).
 *
 * Why: forking mkfs, mount, umount or a CNI plugin next to a sandbox being created slowed the
 * kernel's cgroup and mount work of that create severalfold on a 2-core host.
 */
export class QuietTimer {
  private timer: NodeJS.Timeout | undefined;
  /** When the first poke of the pending batch came (undefined: nothing pending). */
  private since: number | undefined;

  constructor(
    private readonly start: () => void,
    private readonly quietMs = 100,
    private readonly maxDeferMs = 1000,
  ) {}

  /** Foreground activity: (re)arms the timer. The timer does not keep the process alive. */
  poke(): void {
    const now = Date.now();
    const since = (this.since ??= now);
    if (this.timer) clearTimeout(this.timer);
    const delay = Math.max(0, Math.min(this.quietMs, since + this.maxDeferMs - now));
    this.timer = setTimeout(() => this.fire(), delay).unref();
  }

  /** Whether a start is pending. */
  get pending(): boolean {
    return this.timer !== undefined;
  }

  /** Starts the pending work now; false when nothing was pending. */
  flush(): boolean {
    if (!this.timer) return false;
    this.fire();
    return true;
  }

  private fire(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.since = undefined;
    this.start();
  }
}

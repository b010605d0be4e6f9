/**
 * Server-Sent Events framing for stored agent events, and a writer on a raw Node response that
 * respects backpressure and notices a client that went away.
 */
import type { ServerResponse } from 'node:http';
import type { StoredEvent } from './types.js';

/** The JSON an event carries in `data:`: its own fields plus seq, timestamp, run_id, sdk_message. */
export function eventPayload(ev: StoredEvent): Record<string, unknown> {
  return {
    ...ev.data,
    type: ev.type,
    seq: ev.seq,
    timestamp: ev.timestamp,
    run_id: ev.runId,
    ...(ev.sdkMessage === undefined ? {} : { sdk_message: ev.sdkMessage }),
  };
}

/** One SSE frame: `id` (the seq), `event` (the type), one `data` line of JSON. */
export function formatSseEvent(ev: StoredEvent): string {
  // JSON.stringify never emits a raw newline, so one data line is always enough.
  return `id: ${ev.seq}\nevent: ${ev.type}\ndata: ${JSON.stringify(eventPayload(ev))}\n\n`;
}

/** Parses a Last-Event-ID header (or `after` query value): a non-negative integer, else 0. */
export function parseLastEventId(value: string | string[] | undefined): number {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined || !/^\d{1,15}$/.test(v.trim())) return 0;
  return Number(v.trim());
}

/** Writes SSE frames to a response; `closed` turns true (and onClose fires) when the client leaves. */
export class SseWriter {
  private isClosed = false;
  private readonly closeListeners: (() => void)[] = [];

  constructor(private readonly res: ServerResponse) {
    res.on('close', () => this.markClosed());
  }

  /** Sends the status line and headers; call once before write(). */
  open(): void {
    this.res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    // A comment line makes proxies and clients see the stream start at once.
    this.res.write(': hako\n\n');
  }

  get closed(): boolean {
    return this.isClosed;
  }

  onClose(fn: () => void): void {
    if (this.isClosed) fn();
    else this.closeListeners.push(fn);
  }

  /** Writes one event; resolves when the socket took it (backpressure), at once if closed. */
  async write(ev: StoredEvent): Promise<void> {
    if (this.isClosed) return;
    if (this.res.write(formatSseEvent(ev))) return;
    await new Promise<void>((resolve) => {
      const done = (): void => {
        this.res.off('drain', done);
        this.res.off('close', done);
        resolve();
      };
      this.res.on('drain', done);
      this.res.on('close', done);
    });
  }

  /** Ends the stream (idempotent). */
  end(): void {
    if (!this.res.writableEnded) this.res.end();
  }

  private markClosed(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    for (const fn of this.closeListeners.splice(0)) fn();
  }
}

import type { LogCursor } from '../store/types.js';
import type { EventStore, RecordedEvent } from './event-store.js';

export interface ProjectionOptions {
  /** Only events of streams whose names start with this (e.g. `'user/'`). */
  streamPrefix?: string;
  /** Fold one event into the view. Called once per event, each stream in version order; an event it throws on is skipped. */
  apply: (event: RecordedEvent) => void;
  /** Pause between polls once caught up. Default 100 ms. */
  pollMs?: number;
  /** Events per read. Default 1000. */
  batchSize?: number;
  /** Called when a poll fails (the store is unreachable; polling goes on) or `apply` throws. */
  onError?: (error: unknown) => void;
}

/**
 * An eventually consistent read model: tails the store-wide event log from the beginning
 * and folds every event into an in-memory view, on every node that runs it.
 *
 * Lag: an event shows up at most about one `pollMs` after its append committed, plus one
 * read; on PostgreSQL also no earlier than every transaction that was already running when
 * it committed has ended (that is what makes the log gap-free; see PostgresStore.readEventLog).
 */
export class Projection {
  private cursor: LogCursor | null = null;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private stopped = true;
  private applied = 0;
  private lastCaughtUp = 0;

  constructor(
    private readonly events: EventStore,
    private readonly options: ProjectionOptions,
  ) {}

  /** Events folded in so far. */
  get eventsApplied(): number {
    return this.applied;
  }

  /** `performance.now()` of the last poll that found the log drained (0: never yet). */
  get caughtUpAt(): number {
    return this.lastCaughtUp;
  }

  /** Start polling in the background. */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.schedule(0);
  }

  /** Stop polling; resolves once a read in progress has finished. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.running?.catch(() => {});
  }

  /** Read and fold until the log is drained once (the view then includes every append committed before the call). */
  async catchUp(): Promise<void> {
    while (this.running) await this.running.catch(() => {});
    const run = this.drain();
    this.running = run;
    try {
      await run;
    } finally {
      if (this.running === run) this.running = null;
    }
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.catchUp().then(
        () => this.schedule(this.options.pollMs ?? 100),
        (error: unknown) => {
          this.options.onError?.(error);
          this.schedule(Math.max(500, this.options.pollMs ?? 100));
        },
      );
    }, delayMs);
    this.timer.unref();
  }

  private async drain(): Promise<void> {
    const limit = this.options.batchSize ?? 1000;
    for (;;) {
      const page = await this.events.readLog(this.cursor, { limit, streamPrefix: this.options.streamPrefix });
      for (const event of page.events) {
        try {
          this.options.apply(event);
        } catch (error) {
          // Skipped, not retried: re-reading the page would fold its other events twice.
          this.options.onError?.(error);
        }
        this.applied++;
      }
      this.cursor = page.cursor;
      if (page.events.length < limit) {
        this.lastCaughtUp = performance.now();
        return;
      }
    }
  }
}

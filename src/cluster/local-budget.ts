/**
 * Fairness between local calls and socket I/O.
 *
 * A call this node owns is answered from memory: it completes as a chain of microtasks and
 * never returns to the event loop. A caller that issues local calls back to back (or many
 * callers resumed together) can keep the loop in one microtask drain for a long time, and
 * replies from peers that arrive meanwhile wait unread in the socket: the remote calls make
 * the latency tail. So each turn of the event loop runs at most `budget` local calls at once;
 * the next ones wait in a FIFO that is released from a `setImmediate` (the check phase, after
 * the loop has polled sockets), in full: no call waits more than one turn, and the local calls
 * they lead to count against the new turn's budget.
 *
 * Adaptive: the budget only applies while a reply from a peer is awaited (`awaiting` > 0).
 * With nothing to be fair to (one caller, a single node, a burst of only local calls) local
 * calls run at once as before.
 *
 * Order: once one call waits, every later local call queues behind it, so calls issued in
 * order reach the entity host in that order (its per-entity turn order is unchanged). The
 * owner check, the deadline and the fence are all the host's, made when the call reaches it.
 */
export class LocalBudget {
  /** Local calls admitted since the last check phase. */
  private used = 0;
  private waiting: (() => void)[] = [];
  private scheduled = false;
  /** Calls that had to wait for a later turn of the event loop (for stats and tests). */
  deferred = 0;
  /** Remote calls of this node waiting for their reply (kept by the router). */
  awaiting = 0;

  private readonly enabled: boolean;

  /**
   * `budget`: local calls run at once per turn of the event loop while a reply is awaited
   * (0: every one of them waits for the next turn); negative or Infinity turns this off.
   */
  constructor(private readonly budget: number) {
    this.enabled = budget >= 0 && Number.isFinite(budget);
  }

  /**
   * Null when the call may run now; otherwise a promise that resolves when it may. (A null
   * instead of a resolved promise keeps the common path free of an extra microtask.)
   */
  admit(): Promise<void> | null {
    if (!this.enabled) return null;
    if (this.waiting.length === 0) {
      if (this.awaiting === 0) return null;
      if (this.used < this.budget) {
        this.used++;
        this.schedule();
        return null;
      }
    }
    this.schedule();
    this.deferred++;
    return new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  /** The counter is per turn of the event loop: reset (and the queue served) in the check phase. */
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(this.release);
  }

  /**
   * Check phase: a new turn's budget, and every call that waited is released now. None waits
   * more than one turn; the local calls they lead to count against the new budget and, beyond
   * it, wait for the next turn, so the loop polls sockets between two portions.
   */
  private readonly release = (): void => {
    this.scheduled = false;
    this.used = 0;
    const waiting = this.waiting;
    if (waiting.length === 0) return;
    this.waiting = [];
    for (const resolve of waiting) resolve();
  };
}

/**
 * Per-peer batching of published messages. Everything published to one peer in the same
 * synchronous run goes out as few frames (`maxItems` messages each), in publish order, so a
 * burst costs one MessagePack encode and one dispatch per batch instead of per message.
 */
export type BatchSender = (peer: string, batch: unknown[]) => void;

export class Outbox {
  /** peer → flat [topic, message, topic, message, …] */
  private readonly pending = new Map<string, unknown[]>();
  private scheduled = false;

  constructor(
    private readonly sendBatch: BatchSender,
    private readonly maxItems = 512,
  ) {}

  add(peer: string, topic: string, message: unknown): void {
    let batch = this.pending.get(peer);
    if (batch === undefined) {
      batch = [];
      this.pending.set(peer, batch);
    }
    batch.push(topic, message);
    if (batch.length >= this.maxItems * 2) {
      this.pending.delete(peer);
      this.sendBatch(peer, batch);
    } else if (!this.scheduled) {
      this.scheduled = true;
      queueMicrotask(this.flush);
    }
  }

  /** Send everything pending now. */
  readonly flush = (): void => {
    this.scheduled = false;
    if (this.pending.size === 0) return;
    const all = [...this.pending];
    this.pending.clear();
    for (const [peer, batch] of all) this.sendBatch(peer, batch);
  };

  /** Discard what is pending for `peer` (its connection dropped). */
  drop(peer: string): void {
    this.pending.delete(peer);
  }

  clear(): void {
    this.pending.clear();
  }
}

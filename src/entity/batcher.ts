/**
 * Group commit: requests submitted in the same tick go to the store as one batch.
 * While `maxInFlight` batches are being committed, new requests wait and pile up
 * into the next batch, so a busy node makes fewer, larger transactions.
 * Each request's promise settles with its own result, never before the batch is done.
 */
export class TickBatcher<Req, Res> {
  private pending: Req[] = [];
  private waiters: { resolve: (value: Res) => void; reject: (error: unknown) => void }[] = [];
  private inFlight = 0;
  private scheduled = false;

  constructor(
    private readonly run: (requests: Req[]) => Promise<Res[]>,
    private readonly maxInFlight: number,
    private readonly maxBatch: number,
  ) {}

  submit(request: Req): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      this.pending.push(request);
      this.waiters.push({ resolve, reject });
      this.schedule();
    });
  }

  get queued(): number {
    return this.pending.length;
  }

  private schedule(): void {
    if (this.scheduled || this.inFlight >= this.maxInFlight) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    while (this.pending.length > 0 && this.inFlight < this.maxInFlight) {
      const requests = this.pending.splice(0, this.maxBatch);
      const waiters = this.waiters.splice(0, requests.length);
      this.inFlight++;
      this.run(requests)
        .then(
          (results) => {
            for (let i = 0; i < waiters.length; i++) waiters[i]!.resolve(results[i] as Res);
          },
          (error: unknown) => {
            for (const waiter of waiters) waiter.reject(error);
          },
        )
        .finally(() => {
          this.inFlight--;
          if (this.pending.length > 0) this.schedule();
        });
    }
  }
}

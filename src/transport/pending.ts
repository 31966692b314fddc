/**
 * One outstanding `Mesh.request`. It first waits for a connection to its peer (if there is none
 * yet), then sits in that connection's table under a request id until the answer, the deadline
 * or the connection's end settles it. One timer covers both phases.
 */
export class PendingRequest {
  readonly peer: string;
  readonly timeoutMs: number;
  /** The request body until it is written, then dropped so it can be collected. */
  body: unknown;
  /** Whether the request was written to a connection (so the peer may have seen it). */
  sent = false;
  /** Request id on the connection it was written to (0 while unsent). */
  id = 0;
  /** The connection holding it in its table once sent, so a timeout can remove it there. */
  owner: { forget(request: PendingRequest): void } | null = null;
  done = false;
  private readonly timer: NodeJS.Timeout;
  private readonly resolveFn: (value: unknown) => void;
  private readonly rejectFn: (err: Error) => void;

  constructor(
    peer: string,
    body: unknown,
    timeoutMs: number,
    resolve: (value: unknown) => void,
    reject: (err: Error) => void,
    onTimeout: (request: PendingRequest) => void,
  ) {
    this.peer = peer;
    this.body = body;
    this.timeoutMs = timeoutMs;
    this.resolveFn = resolve;
    this.rejectFn = reject;
    // Passing `this` as the timer argument avoids a closure per request.
    this.timer = setTimeout(onTimeout, timeoutMs, this);
  }

  resolve(value: unknown): void {
    if (this.done) return;
    this.done = true;
    this.owner = null;
    clearTimeout(this.timer);
    this.body = undefined;
    this.resolveFn(value);
  }

  reject(err: Error): void {
    if (this.done) return;
    this.done = true;
    this.owner = null;
    clearTimeout(this.timer);
    this.body = undefined;
    this.rejectFn(err);
  }
}

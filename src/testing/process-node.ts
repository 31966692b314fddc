import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { IpcEvent, IpcNodeConfig, IpcRequest, IpcResponse, TryCallResult } from './ipc-protocol.js';
import { stopProcess } from './process-stopped.js';

/**
 * Parent side of an IPC-driven node process (see ipc-node.ts): start it, call entities
 * from inside it, inject faults, and kill, pause, resume or stop it like a real process.
 */

export class IpcCallError extends Error {
  constructor(
    readonly code: string,
    message: string,
    /** The error's details as the node raised it (e.g. `maybeApplied`, `retryAfterMs`). */
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'IpcCallError';
  }
}

type Pending = { resolve: (value: unknown) => void; reject: (error: unknown) => void };

/** Options of a call made inside the node: its deadline and its idempotency key (CallOptions). */
export interface ProcessCallOptions {
  timeoutMs?: number;
  idempotencyKey?: string;
}
type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

// Under vitest this module runs from its TypeScript source; the child always runs the build.
const entryPath = fileURLToPath(
  import.meta.url.endsWith('.ts')
    ? new URL('../../dist/src/testing/ipc-node.js', import.meta.url)
    : new URL('./ipc-node.js', import.meta.url),
);

export class ProcessNode {
  private child: ChildProcess | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private exitPromise: Promise<number | null> | null = null;
  private stderrTail: string[] = [];
  incarnation: number | null = null;
  pid = 0;

  constructor(
    readonly config: IpcNodeConfig,
    private readonly env: Record<string, string> = {},
    /** Extra Node.js flags for the child (for example ['--cpu-prof']). */
    private readonly execArgv: string[] = [],
  ) {}

  get name(): string {
    return this.config.name;
  }

  get running(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Fork the process and wait until it reports ready (or fails to start). */
  async start(timeoutMs = 20_000): Promise<void> {
    const child = fork(entryPath, [], {
      env: {
        ...process.env,
        CONCORD_LOG_LEVEL: process.env.CONCORD_LOG_LEVEL ?? 'warn',
        ...this.env,
        CONCORD_IPC_CONFIG: JSON.stringify(this.config),
      },
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      serialization: 'advanced',
      execArgv: [...process.execArgv, ...this.execArgv],
    });
    this.child = child;
    this.pid = child.pid ?? 0;
    this.stderrTail = [];
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      this.stderrTail.push(chunk);
      if (this.stderrTail.length > 50) this.stderrTail.shift();
      if (process.env.CONCORD_TEST_VERBOSE) process.stderr.write(`[${this.name}] ${chunk}`);
    });
    this.exitPromise = new Promise((resolve) => {
      child.once('exit', (code) => {
        for (const pending of this.pending.values()) pending.reject(new IpcCallError('EXITED', `${this.name} exited`));
        this.pending.clear();
        resolve(code);
      });
    });
    child.on('message', (message: IpcEvent | IpcResponse) => {
      if ('id' in message) {
        const pending = this.pending.get(message.id);
        if (!pending) return;
        this.pending.delete(message.id);
        if (message.ok) pending.resolve(message.value);
        else pending.reject(new IpcCallError(message.error.code, message.error.message, message.error.details));
      }
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${this.name} not ready after ${timeoutMs} ms\n${this.logTail()}`)),
        timeoutMs,
      );
      const onMessage = (message: IpcEvent | IpcResponse) => {
        if ('type' in message && message.type === 'ready') {
          clearTimeout(timer);
          child.off('message', onMessage);
          this.incarnation = message.incarnation;
          resolve();
        } else if ('type' in message && message.type === 'start-failed') {
          clearTimeout(timer);
          child.off('message', onMessage);
          reject(new IpcCallError(message.error.code, message.error.message));
        }
      };
      child.on('message', onMessage);
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`${this.name} exited during start (code ${code}, signal ${signal})\n${this.logTail()}`));
      });
    });
  }

  request(request: DistributiveOmit<IpcRequest, 'id'>): Promise<unknown> {
    const child = this.child;
    if (!child?.connected) return Promise.reject(new IpcCallError('EXITED', `${this.name} is not running`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      child.send({ ...request, id } as IpcRequest);
    });
  }

  /**
   * `node.callByName(kind, entityId, handler, message, options)` inside the node process.
   * `options` is the call's timeout in ms, or `{ timeoutMs, idempotencyKey }`. Rejects with an
   * IpcCallError carrying the error's code (use tryCall for the whole error).
   */
  call(
    kind: string,
    entityId: string,
    handler: string,
    message?: unknown,
    options?: number | ProcessCallOptions,
  ): Promise<unknown> {
    return this.request({ op: 'call', kind, entityId, handler, message, ...callOptions(options) });
  }

  /**
   * Call the way a careful client does: retry after `UNAVAILABLE` (certainly not applied) — after
   * its `retryAfterMs` when the node said, capped at 100 ms — and after an unknown outcome
   * (`TIMEOUT`, a store write that failed) only when the call has an idempotency key, which makes
   * the retry safe. Gives up with the last error after `giveUpMs`.
   */
  async callUntilServed(
    kind: string,
    entityId: string,
    handler: string,
    message?: unknown,
    options: ProcessCallOptions = {},
    giveUpMs = 15_000,
  ): Promise<unknown> {
    const giveUpAt = performance.now() + giveUpMs;
    for (;;) {
      try {
        return await this.call(kind, entityId, handler, message, options);
      } catch (error) {
        if (!(error instanceof IpcCallError) || performance.now() > giveUpAt) throw error;
        const unknown = error.details['maybeApplied'] === true;
        if (error.code !== 'UNAVAILABLE' && !(unknown && options.idempotencyKey !== undefined)) throw error;
        const hint = Number(error.details['retryAfterMs']);
        await new Promise((resolve) => setTimeout(resolve, Number.isFinite(hint) ? Math.min(100, hint) : 20));
      }
    }
  }

  /** Like call, but the outcome comes back as a value: the reply, or the error with its details (maybeApplied…). */
  tryCall(
    kind: string,
    entityId: string,
    handler: string,
    message?: unknown,
    options?: number | ProcessCallOptions,
  ): Promise<TryCallResult> {
    return this.request({
      op: 'try-call',
      kind,
      entityId,
      handler,
      message,
      ...callOptions(options),
    }) as Promise<TryCallResult>;
  }

  status(): Promise<Record<string, unknown>> {
    return this.request({ op: 'status' }) as Promise<Record<string, unknown>>;
  }

  faults(change: { dropTo?: string[]; allow?: string[] | 'all'; cutStore?: boolean }): Promise<unknown> {
    return this.request({ op: 'faults', ...change });
  }

  /** SIGKILL: no cleanup, no handoff; the lease must run out. */
  async kill(): Promise<void> {
    this.child?.kill('SIGKILL');
    await this.exitPromise;
  }

  /** SIGSTOP; resolves once every thread of the process has stopped (see waitUntilStopped). */
  async pause(): Promise<void> {
    await stopProcess(this.child);
  }

  resume(): void {
    this.child?.kill('SIGCONT');
  }

  /** SIGTERM: graceful leave; resolves with the exit code. */
  async stop(timeoutMs = 15_000): Promise<number | null> {
    if (!this.running) return this.exitPromise;
    this.child?.kill('SIGTERM');
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), timeoutMs);
    const code = await this.exitPromise;
    clearTimeout(timer);
    return code;
  }

  waitExit(): Promise<number | null> {
    return this.exitPromise ?? Promise.resolve(null);
  }

  logTail(): string {
    return this.stderrTail.join('').slice(-4000);
  }
}

function callOptions(options: number | ProcessCallOptions | undefined): ProcessCallOptions {
  if (options === undefined) return {};
  if (typeof options === 'number') return { timeoutMs: options };
  const out: ProcessCallOptions = {};
  if (options.timeoutMs !== undefined) out.timeoutMs = options.timeoutMs;
  if (options.idempotencyKey !== undefined) out.idempotencyKey = options.idempotencyKey;
  return out;
}

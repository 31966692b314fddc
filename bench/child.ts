import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type {
  ActivateResult,
  BenchEvent,
  BenchNodeConfig,
  BenchRequestBody,
  BenchResponse,
  CpuSample,
  LoadResult,
  MemorySample,
  NodeStatus,
  StoreOps,
} from './protocol.js';

/** Parent side of a bench node process (bench-node.ts): start, drive, kill -9 or stop it. */

// Under vitest this module may run from source; the child always runs the build.
const entryPath = fileURLToPath(
  import.meta.url.endsWith('.ts')
    ? new URL('../dist/bench/bench-node.js', import.meta.url)
    : new URL('./bench-node.js', import.meta.url),
);

type Pending = { resolve: (value: unknown) => void; reject: (error: unknown) => void };

export class BenchChild {
  private child: ChildProcess | null = null;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private exited: Promise<void> = Promise.resolve();
  private stderr = '';
  pid = 0;
  httpUrl: string | null = null;

  constructor(readonly config: BenchNodeConfig) {}

  get name(): string {
    return this.config.name;
  }

  get running(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  async start(timeoutMs = 30_000): Promise<void> {
    const child = fork(entryPath, [], {
      env: {
        ...process.env,
        CONCORD_LOG_LEVEL: process.env['CONCORD_LOG_LEVEL'] ?? 'error',
        CONCORD_BENCH_CONFIG: JSON.stringify(this.config),
      },
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      serialization: 'advanced',
      execArgv: ['--expose-gc', ...(process.env['CONCORD_BENCH_NODE_ARGS']?.split(' ').filter(Boolean) ?? [])],
    });
    this.child = child;
    this.pid = child.pid ?? 0;
    // A send to a process that has just died fails with EPIPE here (and in request's callback).
    child.on('error', () => {});
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      this.stderr = (this.stderr + chunk).slice(-4000);
    });
    this.exited = new Promise((resolve) => {
      child.once('exit', () => {
        for (const pending of this.pending.values()) pending.reject(new Error(`${this.name} exited`));
        this.pending.clear();
        resolve();
      });
    });
    child.on('message', (message: BenchEvent | BenchResponse) => {
      if (!('id' in message)) return;
      const pending = this.pending.get(message.id);
      if (!pending) return;
      this.pending.delete(message.id);
      if (message.ok) pending.resolve(message.value);
      else pending.reject(Object.assign(new Error(message.error.message), { code: message.error.code }));
    });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${this.name} not ready after ${timeoutMs} ms\n${this.stderr}`)),
        timeoutMs,
      );
      child.on('message', (message: BenchEvent | BenchResponse) => {
        if (!('type' in message)) return;
        clearTimeout(timer);
        if (message.type === 'ready') {
          this.httpUrl = message.httpUrl;
          resolve();
        } else reject(new Error(`${this.name} could not start: ${message.message}`));
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`${this.name} exited during start (${code ?? signal})\n${this.stderr}`));
      });
    });
  }

  request(body: BenchRequestBody): Promise<unknown> {
    const child = this.child;
    if (!child?.connected) return Promise.reject(new Error(`${this.name} is not running`));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      child.send({ ...body, id }, (error) => {
        if (!error || !this.pending.delete(id)) return;
        reject(error);
      });
    });
  }

  status(): Promise<NodeStatus> {
    return this.request({ op: 'status' }) as Promise<NodeStatus>;
  }

  cpu(): Promise<CpuSample> {
    return this.request({ op: 'cpu' }) as Promise<CpuSample>;
  }

  storeOps(): Promise<StoreOps> {
    return this.request({ op: 'store-ops' }) as Promise<StoreOps>;
  }

  memory(): Promise<MemorySample> {
    return this.request({ op: 'memory' }) as Promise<MemorySample>;
  }

  call(entityId: string, handler: 'get' | 'set', timeoutMs: number): Promise<unknown> {
    return this.request({ op: 'call', entityId, handler, timeoutMs });
  }

  load(options: Omit<Extract<BenchRequestBody, { op: 'load' }>, 'op'>): Promise<LoadResult> {
    return this.request({ op: 'load', ...options }) as Promise<LoadResult>;
  }

  activate(prefix: string, from: number, count: number, concurrency: number): Promise<ActivateResult> {
    return this.request({ op: 'activate', prefix, from, count, concurrency }) as Promise<ActivateResult>;
  }

  /** SIGKILL: no cleanup, no handoff. */
  async kill(): Promise<void> {
    if (this.running) this.child?.kill('SIGKILL');
    await this.exited;
  }

  /** SIGTERM: a graceful leave (shards handed over); SIGKILL after timeoutMs. */
  async stop(timeoutMs = 15_000): Promise<void> {
    if (!this.running) return this.exited;
    this.child?.kill('SIGTERM');
    const timer = setTimeout(() => this.child?.kill('SIGKILL'), timeoutMs);
    await this.exited;
    clearTimeout(timer);
  }
}

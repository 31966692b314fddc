/**
 * SqliteStore: the asynchronous SQLite Store. The work is done by a SqliteCore running in a
 * worker thread, so that fsync and waits for another process's write lock never block the
 * node's event loop (which must keep renewing its lease and answering peers meanwhile).
 * Requests reach the worker, and are answered, strictly in submission order.
 *
 * Where the core runs:
 * - compiled output (`dist/src/store/sqlite-store.js`): in a worker loaded from the sibling
 *   `sqlite-worker.js`;
 * - TypeScript sources loaded directly (vitest, ts loaders): this module's URL ends in `.ts`
 *   and a plain Worker cannot load `sqlite-worker.ts`, so the core runs in-process instead
 *   (same behaviour, except that SQLite calls block the calling thread);
 * - `{ inProcess: true }` forces the in-process mode anywhere.
 *
 * With a shared writer (`sharedWriter`, see sqlite-writer.ts) a follower's writes go over the
 * writer's socket instead, so they are no longer ordered with the requests its worker answers
 * (a read may overtake a pending write), and writes already pending when a link to the writer
 * comes up may commit after later ones. The entity host never has two writes of one entity in
 * flight, and the PostgreSQL store (a pool) gives no such order either.
 */
import { Worker } from 'node:worker_threads';
import { type ConcordErrorCode, ConfigMismatch, errorFromShape } from '../errors.js';
import { type CoreMethod, SqliteCore } from './sqlite-core.js';
import type { WireError, WorkerInit, WorkerNotice, WorkerRequest, WorkerResponse } from './sqlite-worker.js';
import { type SharedWriterStatus, unknownOutcome, WriterClient } from './sqlite-writer.js';
import type {
  ActivationRequest,
  ActivationResult,
  AppendRequest,
  AppendResult,
  EntityRow,
  EventLogPage,
  EvictionRequest,
  LogCursor,
  NodeList,
  NodeStatus,
  RegisterRequest,
  RegisterResult,
  RenewResult,
  ShardRecord,
  Store,
  StoredEvent,
  StoredIdempotencyKey,
  StoreOptions,
  SuspectRef,
  WriteRequest,
} from './types.js';

export interface SqliteStoreOptions extends StoreOptions {
  /** Run SQLite on the calling thread instead of a worker thread. */
  inProcess?: boolean;
  /**
   * One writer per file (see sqlite-writer.ts): the node processes sharing the file forward
   * their fenced write batches to the one that holds `<file>.writer-lock`, which commits the
   * batches of all of them together (one fsync per commit instead of one per process and
   * commit). Worker mode only (ignored in-process). Default: on, unless the environment
   * variable CONCORD_SQLITE_SHARED_WRITER is `0`.
   */
  sharedWriter?: boolean;
}

/** The default of SqliteStoreOptions.sharedWriter. */
export function sharedWriterDefault(): boolean {
  return process.env['CONCORD_SQLITE_SHARED_WRITER'] !== '0';
}

const RUNNING_FROM_SOURCE = import.meta.url.endsWith('.ts');
const WORKER_URL = new URL('./sqlite-worker.js', import.meta.url);

type Args<M extends CoreMethod> = Parameters<SqliteCore[M]>;
type Result<M extends CoreMethod> = ReturnType<SqliteCore[M]>;

interface CoreRunner {
  call<M extends CoreMethod>(method: M, args: Args<M>): Promise<Result<M>>;
  close(): Promise<void>;
}

export class SqliteStore implements Store {
  readonly backend = 'sqlite' as const;
  /** Whether SQLite runs in a worker thread (false: on the calling thread). */
  readonly usesWorker: boolean;
  /** Whether writes go through the file's shared writer (SqliteStoreOptions.sharedWriter). */
  readonly sharedWriter: boolean;
  /**
   * Without a shared writer each batch takes the file's write lock by itself: one at a time.
   * With one, a batch sent while another commits waits in the writer's queue and joins its
   * next commit, so the writer never idles between commits (W at C = 64: 1.3–1.7× one in flight).
   */
  readonly commitsInFlight: number;
  /** Activations take the file's write lock on this process's own connection: one at a time. */
  readonly activationsInFlight = 1;
  private readonly runner: CoreRunner;
  /** With a shared writer: this process's role, and the client forwarding a follower's writes. */
  private role: 'writer' | 'follower' | undefined;
  private client: WriterClient | undefined;

  /** Opens the file (creating it if missing); call migrate() before anything else. */
  constructor(path: string, options: SqliteStoreOptions = {}) {
    // The callback stays on this thread: the worker gets plain data only.
    const { inProcess, sharedWriter, onSharedWriterRole, ...storeOptions } = options;
    this.onRole = onSharedWriterRole;
    this.usesWorker = !(inProcess ?? RUNNING_FROM_SOURCE);
    this.sharedWriter = this.usesWorker && (sharedWriter ?? sharedWriterDefault());
    this.commitsInFlight = this.sharedWriter ? 4 : 1;
    this.runner = this.usesWorker
      ? new WorkerRunner(path, storeOptions, this.sharedWriter, (notice) => this.onNotice(notice))
      : new InProcessRunner(path, storeOptions);
  }

  private readonly onRole: ((role: 'writer' | 'follower') => void) | undefined;

  /** The worker's role for the shared writer changed (or is first known). */
  private onNotice(notice: WorkerNotice): void {
    if (notice.role !== this.role) this.onRole?.(notice.role);
    this.role = notice.role;
    this.client ??= new WriterClient(
      notice.paths,
      notice.strict,
      (requests, done) => {
        this.runner.call('write', [requests]).then(done, (err: unknown) => {
          done(err instanceof Error ? err : new Error(String(err)));
        });
      },
      ({ token, requests, sentAtWall, done }) => {
        this.runner.call('writeOnce', [token, requests, sentAtWall]).then(done, (err: unknown) => {
          // The writer may still commit its copy later: a re-run that failed leaves the
          // outcome unknown, whatever the error.
          done(
            unknownOutcome(`re-running a write batch the shared SQLite writer did not answer failed (${String(err)})`),
          );
        });
      },
      () => this.role === 'follower',
    );
    if (notice.role === 'writer') this.client.drop();
    else this.client.poke();
  }

  /**
   * With a shared writer: its role ('writer' when this process commits the file's writes,
   * 'follower' when it forwards them, or commits its own while no writer is reachable) and
   * counters; null without a shared writer.
   */
  async sharedWriterStatus(): Promise<SharedWriterStatus | null> {
    if (!(this.runner instanceof WorkerRunner)) return null;
    const status = (await this.runner.call('sharedWriterStatus', [])) as Omit<
      SharedWriterStatus,
      'linked' | 'forwarded' | 'rerun'
    > | null;
    if (status === null) return null;
    return {
      ...status,
      linked: this.client?.linked ?? false,
      forwarded: this.client?.forwarded ?? 0,
      rerun: this.client?.rerun ?? 0,
    };
  }

  migrate(): Promise<void> {
    return this.runner.call('migrate', []);
  }

  async close(): Promise<void> {
    // A follower's forwarded writes are answered first (bounded), then the worker closes.
    await this.client?.stop();
    return this.runner.close();
  }

  now(): Promise<number> {
    return this.runner.call('now', []);
  }

  registerNode(req: RegisterRequest): Promise<RegisterResult> {
    return this.runner.call('registerNode', [req]);
  }

  renewLease(name: string, incarnation: number, ttlMs: number): Promise<RenewResult> {
    return this.runner.call('renewLease', [name, incarnation, ttlMs]);
  }

  setNodeStatus(name: string, incarnation: number, status: NodeStatus, from: readonly NodeStatus[]): Promise<boolean> {
    return this.runner.call('setNodeStatus', [name, incarnation, status, from]);
  }

  reportSuspicions(reporter: string, incarnation: number, suspects: readonly SuspectRef[]): Promise<NodeList> {
    return this.runner.call('reportSuspicions', [reporter, incarnation, suspects]);
  }

  evictMember(request: EvictionRequest): Promise<boolean> {
    return this.runner.call('evictMember', [request]);
  }

  acknowledgeEviction(name: string, incarnation: number): Promise<boolean> {
    return this.runner.call('acknowledgeEviction', [name, incarnation]);
  }

  removeNode(name: string, incarnation: number): Promise<void> {
    return this.runner.call('removeNode', [name, incarnation]);
  }

  listNodes(): Promise<NodeList> {
    return this.runner.call('listNodes', []);
  }

  pruneNodes(graceMs: number): Promise<number> {
    return this.runner.call('pruneNodes', [graceMs]);
  }

  initShards(count: number): Promise<void> {
    return this.runner.call('initShards', [count]);
  }

  listShards(): Promise<ShardRecord[]> {
    return this.runner.call('listShards', []);
  }

  claimShard(shard: number, expectedEpoch: number, owner: string, ownerIncarnation: number): Promise<number | null> {
    return this.runner.call('claimShard', [shard, expectedEpoch, owner, ownerIncarnation]);
  }

  releaseShard(shard: number, epoch: number, owner: string, ownerIncarnation: number): Promise<boolean> {
    return this.runner.call('releaseShard', [shard, epoch, owner, ownerIncarnation]);
  }

  activate(requests: ActivationRequest[]): Promise<ActivationResult[]> {
    return this.runner.call('activate', [requests]);
  }

  write(requests: WriteRequest[]): Promise<boolean[]> {
    const client = this.client;
    if (client === undefined) return this.runner.call('write', [requests]);
    return new Promise((resolve, reject) => {
      client.write(requests, (result) => (result instanceof Error ? reject(result) : resolve(result)));
    });
  }

  readEntity(kind: string, id: string): Promise<EntityRow | null> {
    return this.runner.call('readEntity', [kind, id]);
  }

  readIdempotencyKeys(kind: string, id: string, notBefore: number, limit?: number): Promise<StoredIdempotencyKey[]> {
    return this.runner.call('readIdempotencyKeys', [kind, id, notBefore, limit]);
  }

  readIdempotencyKey(kind: string, id: string, key: string): Promise<StoredIdempotencyKey | null> {
    return this.runner.call('readIdempotencyKey', [kind, id, key]);
  }

  pruneIdempotencyKeys(windowMs: number, limit: number): Promise<number> {
    return this.runner.call('pruneIdempotencyKeys', [windowMs, limit]);
  }

  appendEvents(request: AppendRequest): Promise<AppendResult> {
    return this.runner.call('appendEvents', [request]);
  }

  readEvents(stream: string, fromVersion: number, limit: number): Promise<StoredEvent[]> {
    return this.runner.call('readEvents', [stream, fromVersion, limit]);
  }

  streamVersion(stream: string): Promise<number> {
    return this.runner.call('streamVersion', [stream]);
  }

  readEventLog(cursor: LogCursor | null, limit: number, streamPrefix?: string): Promise<EventLogPage> {
    return this.runner.call('readEventLog', [cursor, limit, streamPrefix]);
  }

  readMeta(key: string): Promise<string | null> {
    return this.runner.call('readMeta', [key]);
  }

  insertMetaIfAbsent(key: string, value: string): Promise<string> {
    return this.runner.call('insertMetaIfAbsent', [key, value]);
  }

  compareAndSetMeta(key: string, expected: string, next: string): Promise<boolean> {
    return this.runner.call('compareAndSetMeta', [key, expected, next]);
  }

  /** The connection's effective `PRAGMA synchronous`: 'FULL' (strict) or 'NORMAL' (relaxed). */
  async synchronousMode(): Promise<string> {
    const level = await this.runner.call('synchronousLevel', []);
    return ['OFF', 'NORMAL', 'FULL', 'EXTRA'][level] ?? String(level);
  }
}

function closedError(): Error {
  return new Error('the SQLite store is closed');
}

/** Runs the core on the calling thread. Each call completes before it returns. */
class InProcessRunner implements CoreRunner {
  private core: SqliteCore | undefined;
  private failure: unknown;

  constructor(path: string, options: StoreOptions) {
    try {
      this.core = new SqliteCore(path, options);
    } catch (err) {
      this.failure = err;
    }
  }

  call<M extends CoreMethod>(method: M, args: Args<M>): Promise<Result<M>> {
    try {
      if (!this.core) throw this.failure;
      const fn = this.core[method] as (...a: Args<M>) => Result<M>;
      return Promise.resolve(fn.apply(this.core, args));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  async close(): Promise<void> {
    this.core?.close();
    this.core = undefined;
    this.failure = closedError();
  }
}

/** Runs the core in a worker thread; see sqlite-worker.ts for the other side. */
class WorkerRunner implements CoreRunner {
  private readonly worker: Worker;
  private readonly pending = new Map<number, { resolve: (value: unknown) => void; reject: (err: unknown) => void }>();
  private readonly exited: Promise<void>;
  private nextId = 1;
  private failure: Error | undefined;
  private closing = false;

  constructor(
    path: string,
    options: StoreOptions,
    sharedWriter: boolean,
    private readonly onNotice: (notice: WorkerNotice) => void,
  ) {
    const init: WorkerInit = { path, options, sharedWriter };
    this.worker = new Worker(WORKER_URL, { workerData: init });
    // An idle store does not keep the process alive; a pending request does.
    this.worker.unref();
    this.worker.on('message', (res: WorkerResponse | WorkerNotice) => {
      if ('notice' in res) this.onNotice(res);
      else this.settle(res);
    });
    this.worker.on('error', (err) => this.fail(err));
    this.exited = new Promise((resolve) => {
      this.worker.once('exit', (code) => {
        this.fail(code === 0 ? closedError() : new Error(`the SQLite worker thread exited with code ${code}`));
        resolve();
      });
    });
  }

  call<M extends CoreMethod>(method: M, args: Args<M>): Promise<Result<M>>;
  call(method: 'sharedWriterStatus', args: []): Promise<unknown>;
  call(method: CoreMethod | 'sharedWriterStatus', args: unknown[]): Promise<unknown> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    const request: WorkerRequest = { id, method, args };
    return new Promise<unknown>((resolve, reject) => {
      if (this.pending.size === 0 && !this.closing) this.worker.ref();
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage(request);
    });
  }

  async close(): Promise<void> {
    // Stay referenced until the thread has exited, or the process could end while close()
    // is still pending.
    this.closing = true;
    this.worker.ref();
    if (!this.failure) {
      // Queued behind every request already submitted, so those finish first.
      await this.call('close', []);
    }
    await this.exited;
  }

  private settle(res: WorkerResponse): void {
    const entry = this.pending.get(res.id);
    if (!entry) return;
    this.pending.delete(res.id);
    if (this.pending.size === 0 && !this.closing) this.worker.unref();
    if (res.ok) entry.resolve(res.value);
    else entry.reject(fromWireError(res.error));
  }

  /** The worker is gone: every pending and later request fails with `err`. */
  private fail(err: Error): void {
    this.failure ??= err;
    for (const entry of this.pending.values()) entry.reject(err);
    this.pending.clear();
  }
}

const BUILTIN_ERRORS: Record<string, new (message: string) => Error> = {
  RangeError,
  TypeError,
};

/** Rebuild an error from the worker: same class for concord errors, same name, message and code. */
function fromWireError(wire: WireError): Error {
  let err: Error;
  if (wire.concord && wire.code === 'CONFIG_MISMATCH') {
    err = new ConfigMismatch(wire.message, wire.details);
  } else if (wire.concord) {
    err = errorFromShape({
      code: wire.code as ConcordErrorCode,
      name: wire.name,
      message: wire.message,
      details: wire.details,
    });
  } else {
    const ErrorClass = BUILTIN_ERRORS[wire.name] ?? Error;
    err = new ErrorClass(wire.message);
    err.name = wire.name;
    if (wire.code !== undefined) Object.assign(err, { code: wire.code });
  }
  if (wire.stack) {
    err.stack = `${err.stack ?? ''}\n    --- in the SQLite worker thread ---\n${wire.stack}`;
  }
  return err;
}

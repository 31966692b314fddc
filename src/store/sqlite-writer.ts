/**
 * SharedWriter: one writer per SQLite file, so that the fenced writes of every node process
 * sharing the file commit together and share one fsync.
 *
 * SharedWriter runs in the SQLite worker thread of each SqliteStore opened with `sharedWriter`,
 * next to that store's SqliteCore: it competes for the writer role and, as the writer, serves
 * the socket and folds. WriterClient runs in the store's main thread: a follower's main thread
 * sends its batches straight to the writer's socket (no hop through its own worker).
 *
 * - Role: the process whose worker holds an exclusive SQLite lock on `<file>.writer-lock` (a
 *   connection in `locking_mode=EXCLUSIVE`; the OS drops it when the process dies, even on
 *   kill -9) is the writer. It listens on the Unix socket `<file>.writer.sock` (mode 0600).
 *   Every other process connects to it and forwards its write batches there (the writer's
 *   own process hands its batches to its worker as before); every other request (reads,
 *   leases, claims, activations…) stays on the process's own connection.
 * - Folding: the writer queues the batches that arrive (its own process's and every
 *   connection's) and commits all the batches queued in one turn of its event loop in ONE
 *   transaction (SqliteCore.writeFolded): one fsync. Every request is still fenced by its own
 *   `UPDATE … WHERE epoch = ? AND version = ?` inside that transaction, each batch in its own
 *   savepoint, and each sender gets its own per-request results, only after the commit.
 * - Forwarding is only an optimisation: a process that has no connection to a writer (none
 *   yet, one just died, the socket path is too long…) commits its batches on its own
 *   connection, exactly as without a shared writer. Both paths are the same fenced
 *   transaction on the same file, so which one a batch takes never matters for correctness.
 * - Every forwarded batch carries a token unique to its sender. The writer records the token
 *   with the batch's results in the batch's own savepoint (concord_writer_batches). A batch
 *   whose answer does not come (the connection closed, no answer within STALL_MS, or the
 *   writer failed it) is re-run by its sender on its own connection (SqliteCore.writeOnce):
 *   one transaction that returns the recorded results if the writer's copy committed, and
 *   otherwise applies the batch and records the token, so that the writer's copy, should it
 *   still come (a paused writer resumes), applies nothing. Exactly one copy applies, and the
 *   caller gets that copy's results: a writer that dies, stalls or pauses costs its
 *   followers STALL_MS, not an "outcome unknown". The sender then commits on its own
 *   connection until it links again (at most every RELINK_AFTER_STALL_MS).
 * - When the writer goes away, the other processes' workers retry the lock every
 *   ELECTION_INTERVAL_MS; one of them becomes the writer, the others connect to it.
 * - A graceful stop hands over: the writer stops accepting, tells every connection `bye`,
 *   keeps committing what they still send until they close (their later writes wait for
 *   that, then go to their own worker, so a process's writes keep their order),
 *   removes the socket file while it still holds the lock, and then releases the lock.
 */

import { randomBytes } from 'node:crypto';
import { chmodSync, realpathSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import Database from 'better-sqlite3';
import { Packr } from 'msgpackr';
import { StoreUnavailable } from '../errors.js';
import { fitsUnixSocketPath } from '../unix-socket-path.js';
import { BATCH_TOKEN_TTL_MS, batchTokenTime, type SqliteCore } from './sqlite-core.js';
import type { WriteRequest } from './types.js';

/** Called once with a batch's per-request results, or with the error that failed it. */
export type WriteDone = (result: boolean[] | Error) => void;

/** A forwarded batch, kept by its sender until the writer answers it. */
export interface SentBatch {
  requests: WriteRequest[];
  token: string;
  /** Date.now() when sent (SqliteCore.writeOnce refuses to re-run a batch too old). */
  sentAtWall: number;
  /** performance.now() when sent (for the stall check). */
  sentAt: number;
  done: WriteDone;
}

/** Re-runs a forwarded batch that its writer did not answer on this process's own connection. */
export type RerunBatch = (batch: SentBatch) => void;

/** 2: batches carry a token (a writer of protocol 1 does not record them, so it is not used). */
const PROTOCOL = 2;
const MAX_FRAME_BYTES = 256 * 1024 * 1024;
/** A writer that has not welcomed a new connection within this long is not used for a while. */
export const FORWARD_TIMEOUT_MS = 5_000;
/**
 * A forwarded batch unanswered for this long is re-run by its sender (see the module comment),
 * and the link is dropped. Far above a commit's normal round trip (well under 10 ms at full
 * load), and under half the default lease, so that a paused writer costs its followers'
 * callers a short wait, not their deadline.
 */
export const STALL_MS = 400;
/** After a stalled or failed link, the sender commits on its own connection for this long. */
const RELINK_AFTER_STALL_MS = 1_000;
/** How often a sender checks its link for a stalled batch, and looks for a writer. */
const CLIENT_TICK_MS = 100;
/** How often a process that is not the writer tries the lock (and to connect, when it has no link). */
export const ELECTION_INTERVAL_MS = 200;
/** How long a stopping writer keeps serving the connections it said `bye` to. */
const HANDOVER_MS = 3_000;

const packr = new Packr({ useRecords: false });
/** Reply id of the writer's answer to a valid hello. */
const WELCOME = -1;

/** `strict`: the sender's writes need power-loss-safe commits (its durability is strict). */
type Hello = { hello: number; file: string; strict: boolean };
/** Sender → writer: a write batch, and its token (unique to the sender; see the module comment). */
type BatchFrame = [id: number, requests: WriteRequest[], token: string];
/** Writer → sender: results, or an error message (the batch failed), a `bye` (id 0) or the welcome (id -1). */
type ReplyFrame = [id: number, results: boolean[] | null, error?: string];

export interface SharedWriterStatus {
  role: 'writer' | 'follower';
  /** A follower with a live connection to the writer. */
  linked: boolean;
  /** Transactions this process committed through the fold, and the batches they held. */
  commits: number;
  batches: number;
  /** Batches this process forwarded to another process's writer. */
  forwarded: number;
  /** Of those, the batches the writer did not answer, re-run on this process's own connection. */
  rerun: number;
  /** Milliseconds spent in the folded transactions. */
  txMs: number;
}

export interface WriterPaths {
  socket: string;
  lock: string;
  /** The database file's real path (the hello names it, so a writer serves only its own file). */
  file: string;
}

/** The socket and lock paths next to `file`, or null when the socket path would be too long. */
export function writerPaths(file: string): WriterPaths | null {
  const real = realpathSync(file);
  const socket = `${real}.writer.sock`;
  if (!fitsUnixSocketPath(socket)) return null;
  return { socket, lock: `${real}.writer-lock`, file: real };
}

function frame(value: unknown): Buffer {
  const body = packr.pack(value);
  const header = Buffer.allocUnsafe(4);
  header.writeUInt32BE(body.length, 0);
  return Buffer.concat([header, body]);
}

/** Splits a byte stream into msgpack frames (4-byte big-endian length, then the body). */
class FrameReader {
  private buffer: Buffer = Buffer.alloc(0);

  constructor(private readonly onFrame: (value: unknown) => void) {}

  /** Throws on a frame longer than MAX_FRAME_BYTES or a body that is not msgpack. */
  push(chunk: Buffer): void {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    let offset = 0;
    while (this.buffer.length - offset >= 4) {
      const length = this.buffer.readUInt32BE(offset);
      if (length > MAX_FRAME_BYTES) throw new Error(`shared writer frame of ${length} bytes`);
      if (this.buffer.length - offset - 4 < length) break;
      const body = this.buffer.subarray(offset + 4, offset + 4 + length);
      offset += 4 + length;
      this.onFrame(packr.unpack(body));
    }
    this.buffer = offset === this.buffer.length ? Buffer.alloc(0) : this.buffer.subarray(offset);
  }
}

/** A forwarded batch whose outcome is not known (its re-run failed). */
export function unknownOutcome(why: string): StoreUnavailable {
  return new StoreUnavailable(`${why}; the forwarded write may or may not have been applied`, { maybeApplied: true });
}

function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/** This process's connection to the writer of another process. */
class Link {
  /** Usable for new batches: connected and not told `bye`. */
  ready = false;
  /** Batches sent and not answered yet, in the order sent. */
  private readonly pending = new Map<number, SentBatch>();
  private nextId = 1;
  private closed = false;
  private byeReceived = false;
  private readonly openedAt = performance.now();

  constructor(
    private readonly socket: Socket,
    /** Told once, when the link closes: `orphaned` are the batches it never answered, in order. */
    private readonly onClosed: (stalled: boolean, orphaned: SentBatch[]) => void,
  ) {
    const reader = new FrameReader((value) => this.reply(value as ReplyFrame));
    socket.on('data', (chunk: Buffer) => {
      try {
        reader.push(chunk);
      } catch {
        socket.destroy();
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => this.close());
  }

  send(requests: WriteRequest[], token: string, sentAtWall: number, done: WriteDone): void {
    const id = this.nextId++;
    // An idle link does not keep the process alive; a batch waiting for its answer does.
    if (this.pending.size === 0) this.socket.ref();
    this.pending.set(id, { requests, token, done, sentAtWall, sentAt: performance.now() });
    this.socket.write(frame([id, requests, token] satisfies BatchFrame));
  }

  get idle(): boolean {
    return this.pending.size === 0;
  }

  /** The writer said `bye`: batches sent are still being answered, none may be sent. */
  get draining(): boolean {
    return this.byeReceived && !this.closed;
  }

  /**
   * Drop the link if its oldest batch has waited longer than STALL_MS (its batches are then
   * re-run), or the welcome longer than FORWARD_TIMEOUT_MS.
   */
  checkTimeout(now: number): void {
    if (!this.ready && !this.byeReceived && now - this.openedAt > FORWARD_TIMEOUT_MS) {
      this.close(true);
      return;
    }
    const oldest = this.pending.values().next();
    if (!oldest.done && now - oldest.value.sentAt > STALL_MS) this.close(true);
  }

  destroy(): void {
    this.socket.destroy();
  }

  private reply([id, results]: ReplyFrame): void {
    if (id === WELCOME) {
      // The writer took this connection on: from now on it answers every batch sent here, or
      // says `bye` first. (Before this, nothing is sent, so a refused connection loses nothing.)
      if (!this.closed && !this.byeReceived) this.ready = true;
      return;
    }
    if (id === 0) {
      this.byeReceived = true;
      // The writer is stopping: send nothing more; close once every batch sent is answered.
      // Until the link has closed, this process's new writes are held behind it
      // (WriterClient.write), so it keeps the process alive even when no batch is pending:
      // an unref'd socket waiting for its 'close' let a script's event loop run dry with a
      // held write unsettled (exit 13).
      this.socket.ref();
      this.ready = false;
      if (this.idle) this.socket.end();
      return;
    }
    const entry = this.pending.get(id);
    if (!entry) return;
    if (!results) {
      // The writer failed the batch (its savepoint or its whole transaction): whether it
      // committed is not known here, so it is re-run like an unanswered one, after every
      // batch sent before it; the link goes, since its later batches may be behind it.
      this.close(true);
      return;
    }
    this.pending.delete(id);
    if (this.pending.size === 0 && !this.byeReceived) this.socket.unref();
    entry.done(results);
    if (!this.ready && this.idle) this.socket.end();
  }

  /** Close; every batch still pending goes back to the sender, in order, to be re-run. */
  private close(stalled = false): void {
    if (this.closed) return;
    this.closed = true;
    this.ready = false;
    this.socket.destroy();
    const orphaned = [...this.pending.values()];
    this.pending.clear();
    this.onClosed(stalled, orphaned);
  }
}

interface QueuedBatch {
  requests: WriteRequest[];
  /** A forwarded batch's token (none for this process's own batches). */
  token?: string;
  done: WriteDone;
  /** Needs a synchronous=FULL commit. */
  strict: boolean;
}
/** How often the writer deletes batch tokens older than BATCH_TOKEN_TTL_MS. */
const PRUNE_INTERVAL_MS = 10_000;

export class SharedWriter {
  private queue: QueuedBatch[] = [];
  private flushScheduled = false;
  private readonly lockDb: Database.Database;
  private holdsLock = false;
  private server: Server | undefined;
  private readonly served = new Set<Socket>();
  private readonly timer: NodeJS.Timeout;
  private stopping = false;
  /** Date.now() of the next prune of old batch tokens. */
  private pruneAt = 0;
  /** Commits made and batches folded into them (for tests and diagnostics). */
  readonly stats = { commits: 0, batches: 0, txMs: 0 };

  constructor(
    private readonly core: SqliteCore,
    private readonly paths: WriterPaths,
    /** This process's durability is strict (its own batches need synchronous=FULL commits). */
    private readonly strict: boolean,
    /** Told when this process becomes the writer. */
    private readonly onWriter: () => void = () => {},
  ) {
    this.lockDb = new Database(paths.lock, { timeout: 0 });
    this.lockDb.pragma('locking_mode = EXCLUSIVE');
    this.timer = setInterval(() => this.elect(), ELECTION_INTERVAL_MS);
    this.timer.unref();
    this.elect();
  }

  /** 'writer' when this process commits the file's forwarded writes, else 'follower'; and the counters. */
  status(): Omit<SharedWriterStatus, 'linked' | 'forwarded' | 'rerun'> {
    return { role: this.holdsLock ? 'writer' : 'follower', ...this.stats };
  }

  /**
   * A write batch this process commits itself: folded with the others' when it is the writer,
   * alone (like a store without a shared writer) when it is not. The main thread forwards the
   * batches of a follower itself (WriterClient); those it sends here are the ones it could not.
   */
  write(requests: WriteRequest[], done: WriteDone): void {
    this.enqueue({ requests, done, strict: this.strict });
  }

  /** Commit the queued batches now: called before any other request of this process, to keep their order. */
  flushNow(): void {
    if (this.queue.length > 0) this.flush();
  }

  /**
   * Stop: a writer hands over (see the module comment). Queued batches are committed first.
   * Idempotent.
   */
  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    clearInterval(this.timer);
    this.flushNow();
    if (this.server) {
      this.server.close();
      const bye = frame([0, null] satisfies ReplyFrame);
      for (const socket of this.served) socket.write(bye);
      const deadline = performance.now() + HANDOVER_MS;
      while (this.served.size > 0 && performance.now() < deadline) await sleep(5);
      this.flushNow();
      for (const socket of this.served) socket.destroy();
      this.server = undefined;
    }
    if (this.holdsLock) {
      // Still holding the lock: the socket file cannot be a newer writer's.
      removeSocketFile(this.paths.socket);
    }
    this.lockDb.close();
    this.holdsLock = false;
  }

  private enqueue(batch: QueuedBatch): void {
    this.queue.push(batch);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // After the I/O phase: every batch that arrived meanwhile (from the socket or this
    // process) is queued by then and joins the same transaction. A commit does not wait for
    // more: the nodes keep several batches in flight (Store.commitsInFlight), so what arrives
    // during a commit joins the next one. (Waiting up to 1 ms for the senders of the last
    // commit, as this did before, cost more at low load than it gained at high load.)
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.flushScheduled = false;
    const queued = this.queue;
    if (queued.length === 0) return;
    this.queue = [];
    let results: (boolean[] | Error)[];
    const t0 = performance.now();
    try {
      results = this.core.writeFolded(
        queued,
        queued.some((entry) => entry.strict),
      );
    } catch (err) {
      const error = toError(err);
      for (const entry of queued) entry.done(error);
      return;
    }
    this.stats.commits++;
    this.stats.batches += queued.length;
    this.stats.txMs += performance.now() - t0;
    queued.forEach((entry, i) => {
      entry.done(results[i]!);
    });
    this.pruneTokens();
  }

  /** Now and then, delete the batch tokens no re-run can look for any more. */
  private pruneTokens(): void {
    const now = Date.now();
    if (now < this.pruneAt) return;
    this.pruneAt = now + PRUNE_INTERVAL_MS;
    try {
      this.core.pruneBatchTokens(now - BATCH_TOKEN_TTL_MS);
    } catch {
      // Busy or failing: the next prune deletes them.
    }
  }

  private elect(): void {
    if (this.stopping || this.holdsLock) return;
    if (this.tryLock()) this.becomeWriter();
  }

  private tryLock(): boolean {
    try {
      // In locking_mode=EXCLUSIVE the connection keeps the lock after COMMIT, until it closes
      // (or its process dies).
      this.lockDb.exec('BEGIN EXCLUSIVE');
      this.lockDb.exec('COMMIT');
      this.holdsLock = true;
      return true;
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (typeof code === 'string' && code.startsWith('SQLITE_BUSY')) return false;
      throw err;
    }
  }

  private becomeWriter(): void {
    this.onWriter();
    // Holding the lock: a socket file there is a dead writer's.
    removeSocketFile(this.paths.socket);
    const server = createServer((socket) => this.serve(socket));
    server.on('error', () => {
      // Not serving (the others then commit on their own connections); still the lock holder.
      if (this.server === server) this.server = undefined;
    });
    server.listen(this.paths.socket, () => {
      try {
        chmodSync(this.paths.socket, 0o600);
      } catch {
        server.close();
      }
    });
    server.unref();
    this.server = server;
  }

  private serve(socket: Socket): void {
    if (this.stopping) {
      socket.destroy();
      return;
    }
    this.served.add(socket);
    let hello: Hello | undefined;
    const reader = new FrameReader((value) => {
      if (!hello) {
        const first = value as Hello;
        if (first?.hello !== PROTOCOL || first.file !== this.paths.file) throw new Error('bad hello');
        hello = first;
        socket.write(frame([WELCOME, null] satisfies ReplyFrame));
        return;
      }
      const [id, requests, token] = value as BatchFrame;
      if (typeof id !== 'number' || !Array.isArray(requests) || typeof token !== 'string') {
        throw new Error('bad frame');
      }
      this.enqueue({
        requests,
        token,
        // A sender that does not say it is relaxed gets power-loss-safe commits.
        strict: hello.strict !== false,
        done: (result) => {
          if (socket.destroyed) return;
          socket.write(
            frame(result instanceof Error ? ([id, null, result.message] satisfies ReplyFrame) : [id, result]),
          );
        },
      });
    });
    socket.on('data', (chunk: Buffer) => {
      try {
        reader.push(chunk);
      } catch {
        socket.destroy();
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => this.served.delete(socket));
  }
}

/**
 * The sending side, in the thread that submits a process's writes (SqliteStore's main
 * thread): forwards each write batch to the file's writer while linked to one, and hands it
 * to `local` (the process's own SQLite worker) otherwise. Connects while `mayConnect()` says
 * this process is a follower, at most every ELECTION_INTERVAL_MS.
 */
export class WriterClient {
  private link: Link | undefined;
  /** Batches waiting for a draining link to close (then committed locally, in order). */
  private held: { requests: WriteRequest[]; done: WriteDone }[] = [];
  private connecting = false;
  /** No new link before this time (performance.now()). */
  private connectAfter = 0;
  private readonly timer: NodeJS.Timeout;
  private stopped = false;
  /** Batches forwarded to the writer, and those of them re-run on this process's connection. */
  forwarded = 0;
  rerun = 0;
  /**
   * Tokens are `<send time>.<this client's random id>.<sequence>`: unique across processes and
   * restarts, and sorted by age (see batchTokenTime).
   */
  private readonly tokenPrefix = `${randomBytes(9).toString('base64url')}.`;
  private nextToken = 1;

  constructor(
    private readonly paths: WriterPaths,
    private readonly strict: boolean,
    private readonly local: (requests: WriteRequest[], done: WriteDone) => void,
    /** Re-runs a batch the writer did not answer (SqliteCore.writeOnce on this process's connection). */
    private readonly rerunLocally: RerunBatch,
    private readonly mayConnect: () => boolean,
  ) {
    this.timer = setInterval(() => this.tick(), CLIENT_TICK_MS);
    this.timer.unref();
  }

  get linked(): boolean {
    return this.link?.ready === true;
  }

  write(requests: WriteRequest[], done: WriteDone): void {
    if (this.link?.ready) {
      this.forwarded++;
      const sentAt = Date.now();
      this.link.send(requests, `${batchTokenTime(sentAt)}.${this.tokenPrefix}${this.nextToken++}`, sentAt, done);
    } else if (this.link?.draining) {
      // The writer said `bye`: wait until the batches sent to it are answered, so that this
      // process's writes still commit in submission order.
      this.held.push({ requests, done });
    } else {
      // No writer (or not welcomed yet): commit on this process's own connection.
      this.local(requests, done);
    }
  }

  /** Look for a writer now (this process just learnt it is a follower). */
  poke(): void {
    this.tick();
  }

  /** Drop the link: this process became the writer. */
  drop(): void {
    this.link?.destroy();
  }

  /** Wait (bounded) for the forwarded batches to be answered, then close. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.timer);
    const link = this.link;
    if (link) {
      link.ready = false;
      const deadline = performance.now() + FORWARD_TIMEOUT_MS;
      while (!link.idle && performance.now() < deadline) await sleep(5);
      link.destroy();
    }
    for (const entry of this.held.splice(0)) this.local(entry.requests, entry.done);
  }

  private tick(): void {
    if (this.stopped) return;
    this.link?.checkTimeout(performance.now());
    if (this.link || this.connecting || performance.now() < this.connectAfter || !this.mayConnect()) return;
    this.connecting = true;
    const socket = createConnection(this.paths.socket);
    const failed = () => {
      this.connecting = false;
    };
    socket.once('error', failed);
    socket.once('connect', () => {
      socket.off('error', failed);
      this.connecting = false;
      if (this.stopped || !this.mayConnect()) {
        socket.destroy();
        return;
      }
      socket.write(frame({ hello: PROTOCOL, file: this.paths.file, strict: this.strict } satisfies Hello));
      const link = new Link(socket, (stalled, orphaned) => {
        if (this.link === link) this.link = undefined;
        // The unanswered batches first, in the order sent, then those held behind them: one
        // worker queue runs them all in this order, so the process's writes keep theirs.
        this.rerun += orphaned.length;
        for (const batch of orphaned) this.rerunLocally(batch);
        for (const entry of this.held.splice(0)) this.local(entry.requests, entry.done);
        // A writer that stopped answering may still hold the lock: do not forward to it again
        // for a while (commit locally meanwhile).
        if (stalled) this.connectAfter = performance.now() + RELINK_AFTER_STALL_MS;
      });
      // Ready once the writer's welcome arrives.
      this.link = link;
    });
    socket.unref();
  }
}

function removeSocketFile(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Not there.
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

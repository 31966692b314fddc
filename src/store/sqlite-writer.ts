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
 * - A forwarded batch whose answer never comes (the connection closed, or no answer within
 *   FORWARD_TIMEOUT_MS) has an unknown outcome: it may have committed. It fails with
 *   StoreUnavailable (maybeApplied: true), which the entity host treats as "outcome unknown"
 *   (it forgets the entity and re-reads it), never as "not applied".
 * - When the writer goes away, the other processes' workers retry the lock every
 *   ELECTION_INTERVAL_MS; one of them becomes the writer, the others connect to it.
 * - A graceful stop hands over: the writer stops accepting, tells every connection `bye`,
 *   keeps committing what they still send until they close (their later writes wait for
 *   that, then go to their own worker, so a process's writes keep their order),
 *   removes the socket file while it still holds the lock, and then releases the lock.
 */
import { chmodSync, realpathSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import Database from 'better-sqlite3';
import { Packr } from 'msgpackr';
import { StoreUnavailable } from '../errors.js';
import type { SqliteCore } from './sqlite-core.js';
import type { WriteRequest } from './types.js';

/** Called once with a batch's per-request results, or with the error that failed it. */
export type WriteDone = (result: boolean[] | Error) => void;

const PROTOCOL = 1;
/** Longest Unix socket path we use (sun_path is 108 bytes on Linux, 104 on macOS). */
const MAX_SOCKET_PATH = 100;
const MAX_FRAME_BYTES = 256 * 1024 * 1024;
/** A forwarded batch unanswered for this long fails as "outcome unknown", and the link is dropped. */
export const FORWARD_TIMEOUT_MS = 5_000;
/** How often a process that is not the writer tries the lock (and to connect, when it has no link). */
export const ELECTION_INTERVAL_MS = 200;
/** How long a stopping writer keeps serving the connections it said `bye` to. */
const HANDOVER_MS = 3_000;

const packr = new Packr({ useRecords: false });
/** Reply id of the writer's answer to a valid hello. */
const WELCOME = -1;

/** `strict`: the sender's writes need power-loss-safe commits (its durability is strict). */
type Hello = { hello: number; file: string; strict: boolean };
/** Sender → writer: a write batch. */
type BatchFrame = [id: number, requests: WriteRequest[]];
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
  if (Buffer.byteLength(socket) > MAX_SOCKET_PATH) return null;
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

function unknownOutcome(why: string): StoreUnavailable {
  return new StoreUnavailable(`${why}; the forwarded write may or may not have been applied`, { maybeApplied: true });
}

function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/** This process's connection to the writer of another process. */
class Link {
  /** Usable for new batches: connected and not told `bye`. */
  ready = false;
  private readonly pending = new Map<number, { done: WriteDone; sentAt: number }>();
  private nextId = 1;
  private closed = false;
  private byeReceived = false;
  private readonly openedAt = performance.now();

  constructor(
    private readonly socket: Socket,
    private readonly onClosed: (timedOut: boolean) => void,
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
    socket.on('close', () => this.close('the connection to the shared SQLite writer closed'));
  }

  send(requests: WriteRequest[], done: WriteDone): void {
    const id = this.nextId++;
    // An idle link does not keep the process alive; a batch waiting for its answer does.
    if (this.pending.size === 0) this.socket.ref();
    this.pending.set(id, { done, sentAt: performance.now() });
    this.socket.write(frame([id, requests] satisfies BatchFrame));
  }

  get idle(): boolean {
    return this.pending.size === 0;
  }

  /** The writer said `bye`: batches sent are still being answered, none may be sent. */
  get draining(): boolean {
    return this.byeReceived && !this.closed;
  }

  /** Drop the link if its oldest batch (or the welcome) has waited longer than FORWARD_TIMEOUT_MS. */
  checkTimeout(now: number): void {
    if (!this.ready && !this.byeReceived && now - this.openedAt > FORWARD_TIMEOUT_MS) {
      this.close('the shared SQLite writer did not take the connection on', true);
      return;
    }
    const oldest = this.pending.values().next();
    if (!oldest.done && now - oldest.value.sentAt > FORWARD_TIMEOUT_MS) {
      this.close(`the shared SQLite writer did not answer within ${FORWARD_TIMEOUT_MS} ms`, true);
    }
  }

  destroy(): void {
    this.socket.destroy();
  }

  private reply([id, results, error]: ReplyFrame): void {
    if (id === WELCOME) {
      // The writer took this connection on: from now on it answers every batch sent here, or
      // says `bye` first. (Before this, nothing is sent, so a refused connection loses nothing.)
      if (!this.closed && !this.byeReceived) this.ready = true;
      return;
    }
    if (id === 0) {
      this.byeReceived = true;
      // The writer is stopping: send nothing more; close once every batch sent is answered.
      this.ready = false;
      if (this.idle) this.socket.end();
      return;
    }
    const entry = this.pending.get(id);
    if (!entry) return;
    this.pending.delete(id);
    if (this.pending.size === 0) this.socket.unref();
    // An error from the writer: its transaction failed, outcome unknown (as for a local one).
    entry.done(results ?? new StoreUnavailable(`the shared SQLite writer failed the write: ${error ?? 'unknown'}`));
    if (!this.ready && this.idle) this.socket.end();
  }

  /** Every batch still pending may have committed: fail it as "outcome unknown". */
  private close(why: string, timedOut = false): void {
    if (this.closed) return;
    this.closed = true;
    this.ready = false;
    this.socket.destroy();
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const entry of pending) entry.done(unknownOutcome(why));
    this.onClosed(timedOut);
  }
}

interface QueuedBatch {
  requests: WriteRequest[];
  done: WriteDone;
  /** Needs a synchronous=FULL commit. */
  strict: boolean;
  /** Who sent it: LOCAL (this process) or the socket it came on. */
  source: unknown;
}

const LOCAL = Symbol('local');
/**
 * Longest wait of a commit for the senders of the previous one (timers have 1 ms resolution).
 * Worth it: the alternative is a commit of its own, an fsync (~0.8 ms) more.
 */
const GATHER_MS = 1;

export class SharedWriter {
  private queue: QueuedBatch[] = [];
  private flushScheduled = false;
  /** Set while a commit waits for the senders of the last one (see enqueue). */
  private gatherTimer: NodeJS.Timeout | undefined;
  /** The senders (LOCAL or a socket) whose batches were in the last commit. */
  private lastSources = new Set<unknown>();
  private readonly lockDb: Database.Database;
  private holdsLock = false;
  private server: Server | undefined;
  private readonly served = new Set<Socket>();
  private readonly timer: NodeJS.Timeout;
  private stopping = false;
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
  status(): Omit<SharedWriterStatus, 'linked' | 'forwarded'> {
    return { role: this.holdsLock ? 'writer' : 'follower', ...this.stats };
  }

  /**
   * A write batch this process commits itself: folded with the others' when it is the writer,
   * alone (like a store without a shared writer) when it is not. The main thread forwards the
   * batches of a follower itself (WriterClient); those it sends here are the ones it could not.
   */
  write(requests: WriteRequest[], done: WriteDone): void {
    this.enqueue({ requests, done, strict: this.strict, source: LOCAL });
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
    if (this.gatherTimer !== undefined) {
      // Gathering: commit as soon as every expected sender is in (after this I/O phase).
      if (this.missingSender()) return;
      clearTimeout(this.gatherTimer);
      this.gatherTimer = undefined;
      this.flushScheduled = false;
    }
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // After the I/O phase: every batch that arrived meanwhile (from the socket or this
    // process) is queued by then and joins the same transaction.
    setImmediate(() => {
      if (!this.flushScheduled || this.gatherTimer !== undefined) return;
      if (this.missingSender()) {
        // A sender of the last commit has not sent its next batch yet: it usually does within
        // a hop, so wait for it (at most GATHER_MS; the poll wakes on its frame) rather than
        // alternate one commit per process, which is what taking turns on the lock does.
        this.gatherTimer = setTimeout(() => {
          this.gatherTimer = undefined;
          this.flushScheduled = false;
          this.flush();
        }, GATHER_MS);
        return;
      }
      this.flushScheduled = false;
      this.flush();
    });
  }

  /** A sender whose batch was in the last commit, still connected, with nothing queued. */
  private missingSender(): boolean {
    for (const source of this.lastSources) {
      if (source !== LOCAL && (source as Socket).destroyed) continue;
      if (!this.queue.some((entry) => entry.source === source)) return true;
    }
    return false;
  }

  private flush(): void {
    if (this.gatherTimer !== undefined) {
      clearTimeout(this.gatherTimer);
      this.gatherTimer = undefined;
    }
    this.flushScheduled = false;
    const queued = this.queue;
    if (queued.length === 0) return;
    this.queue = [];
    let results: (boolean[] | Error)[];
    const t0 = performance.now();
    try {
      results = this.core.writeFolded(
        queued.map((entry) => entry.requests),
        queued.some((entry) => entry.strict),
      );
    } catch (err) {
      const error = toError(err);
      for (const entry of queued) entry.done(error);
      return;
    }
    this.lastSources = new Set(queued.map((entry) => entry.source));
    this.stats.commits++;
    this.stats.batches += queued.length;
    this.stats.txMs += performance.now() - t0;
    queued.forEach((entry, i) => {
      entry.done(results[i]!);
    });
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
      const [id, requests] = value as BatchFrame;
      if (typeof id !== 'number' || !Array.isArray(requests)) throw new Error('bad frame');
      this.enqueue({
        requests,
        source: socket,
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
  /** Batches forwarded to the writer. */
  forwarded = 0;

  constructor(
    private readonly paths: WriterPaths,
    private readonly strict: boolean,
    private readonly local: (requests: WriteRequest[], done: WriteDone) => void,
    private readonly mayConnect: () => boolean,
  ) {
    this.timer = setInterval(() => this.tick(), ELECTION_INTERVAL_MS);
    this.timer.unref();
  }

  get linked(): boolean {
    return this.link?.ready === true;
  }

  write(requests: WriteRequest[], done: WriteDone): void {
    if (this.link?.ready) {
      this.forwarded++;
      this.link.send(requests, done);
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
      const link = new Link(socket, (timedOut) => {
        if (this.link === link) this.link = undefined;
        for (const entry of this.held.splice(0)) this.local(entry.requests, entry.done);
        // A writer that stopped answering may still hold the lock: do not forward to it again
        // for a while (commit locally meanwhile).
        if (timedOut) this.connectAfter = performance.now() + FORWARD_TIMEOUT_MS;
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

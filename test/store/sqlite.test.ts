/**
 * SQLite backend: the conformance suite twice — in-process (the TypeScript sources, as vitest
 * loads them) and in worker threads (the store transpiled to JavaScript, as it ships) — plus
 * what is specific to SQLite: the worker protocol, lock waits, pragmas, separate processes.
 */
import { type ChildProcess, fork } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import Database from 'better-sqlite3';
import { Packr } from 'msgpackr';
import ts from 'typescript';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigMismatch, StoreUnavailable } from '../../src/errors.js';
import { MIGRATIONS } from '../../src/store/migrations.js';
import { openStore } from '../../src/store/open.js';
import { BatchSuperseded, batchTokenTime, RERUN_WINDOW_MS, SqliteCore } from '../../src/store/sqlite-core.js';
import { SqliteStore, type SqliteStoreOptions } from '../../src/store/sqlite-store.js';
import { STALL_MS } from '../../src/store/sqlite-writer.js';
import type { Store, StoreOptions, WriteRequest } from '../../src/store/types.js';
import { tempDir, tempSqliteUrl } from '../support/tmp.js';
import { type ConformanceTarget, storeConformance } from './conformance.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

type SqliteStoreClass = new (path: string, options?: SqliteStoreOptions) => SqliteStore;

/**
 * Transpile src/store/*.ts and the leaf modules it imports to JavaScript in a temporary directory (with
 * node_modules linked in), so that SqliteStore can start real worker threads and separate
 * processes can open the store without a TypeScript loader.
 */
function compileStore(): string {
  const out = tempDir('concord-compiled-');
  const sources = [
    'src/errors.ts',
    'src/unix-socket-path.ts',
    ...readdirSync(join(ROOT, 'src/store')).map((f) => `src/store/${f}`),
  ];
  for (const file of sources.filter((f) => f.endsWith('.ts'))) {
    const { outputText } = ts.transpileModule(readFileSync(join(ROOT, file), 'utf8'), {
      fileName: file,
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
    });
    const target = join(out, file.replace(/\.ts$/, '.js'));
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, outputText);
  }
  writeFileSync(join(out, 'package.json'), '{ "type": "module" }\n');
  symlinkSync(join(ROOT, 'node_modules'), join(out, 'node_modules'), 'dir');
  return out;
}

const compiledDir = compileStore();
const compiled = (await import(pathToFileURL(join(compiledDir, 'src/store/sqlite-store.js')).href)) as {
  SqliteStore: SqliteStoreClass;
};
const compiledErrors = (await import(pathToFileURL(join(compiledDir, 'src/errors.js')).href)) as {
  ConfigMismatch: typeof ConfigMismatch;
};

function sqliteTarget(makeStore: (path: string, options?: StoreOptions) => SqliteStore): ConformanceTarget {
  return {
    freshDatabase: async () => tempSqliteUrl().slice('sqlite:'.length),
    connect: makeStore,
    async durabilityOf(store) {
      const mode = await (store as SqliteStore).synchronousMode();
      if (mode === 'FULL') return 'strict';
      if (mode === 'NORMAL') return 'relaxed';
      throw new Error(`unexpected PRAGMA synchronous = ${mode}`);
    },
    async migrationVersions(path) {
      const db = new Database(path, { readonly: true });
      try {
        return db.prepare('SELECT version FROM concord_migrations ORDER BY version').pluck().all() as number[];
      } finally {
        db.close();
      }
    },
  };
}

storeConformance(
  'sqlite (in-process)',
  sqliteTarget((path, options) => new SqliteStore(path, { ...options, inProcess: true })),
);

storeConformance(
  'sqlite (worker threads, shared writer)',
  sqliteTarget((path, options) => new compiled.SqliteStore(path, { ...options, sharedWriter: true })),
);

storeConformance(
  'sqlite (worker threads, no shared writer)',
  sqliteTarget((path, options) => {
    const store = new compiled.SqliteStore(path, { ...options, sharedWriter: false });
    if (!store.usesWorker) throw new Error('expected the compiled store to use a worker thread');
    return store;
  }),
);

describe('SqliteStore specifics', () => {
  const stores: Store[] = [];
  const raws: Database.Database[] = [];
  afterAll(async () => {
    for (const raw of raws) if (raw.open) raw.close();
    await Promise.all(stores.map((s) => s.close().catch(() => {})));
  });

  async function workerStore(path = tempSqliteUrl().slice('sqlite:'.length), options?: StoreOptions) {
    const store = new compiled.SqliteStore(path, options);
    stores.push(store);
    await store.migrate();
    return { store, path };
  }

  function rawConnection(path: string): Database.Database {
    const raw = new Database(path, { timeout: 0 });
    raws.push(raw);
    return raw;
  }

  it('runs in-process when loaded from the TypeScript sources, in a worker when compiled', () => {
    const path = tempSqliteUrl().slice('sqlite:'.length);
    const fromSource = new SqliteStore(path);
    const fromCompiled = new compiled.SqliteStore(path);
    const forced = new compiled.SqliteStore(path, { inProcess: true });
    stores.push(fromSource, fromCompiled, forced);
    expect(fromSource.usesWorker).toBe(false);
    expect(fromCompiled.usesWorker).toBe(true);
    expect(forced.usesWorker).toBe(false);
  });

  it('shares one writer per file by default, CONCORD_SQLITE_SHARED_WRITER=0 turns it off; only with it 4 write batches in flight; activations one at a time either way', async () => {
    const path = tempSqliteUrl().slice('sqlite:'.length);
    const saved = process.env['CONCORD_SQLITE_SHARED_WRITER'];
    let shared: InstanceType<typeof compiled.SqliteStore>;
    let alone: InstanceType<typeof compiled.SqliteStore>;
    try {
      delete process.env['CONCORD_SQLITE_SHARED_WRITER'];
      shared = new compiled.SqliteStore(path);
      process.env['CONCORD_SQLITE_SHARED_WRITER'] = '0';
      alone = new compiled.SqliteStore(path);
    } finally {
      if (saved === undefined) delete process.env['CONCORD_SQLITE_SHARED_WRITER'];
      else process.env['CONCORD_SQLITE_SHARED_WRITER'] = saved;
    }
    stores.push(shared, alone);
    expect([shared.sharedWriter, shared.commitsInFlight, shared.activationsInFlight]).toEqual([true, 4, 1]);
    expect([alone.sharedWriter, alone.commitsInFlight, alone.activationsInFlight]).toEqual([false, 1, 1]);
    await shared.migrate();
    expect((await shared.sharedWriterStatus())?.role).toBe('writer');
    expect(await alone.sharedWriterStatus()).toBeNull();
  });

  it('answers requests strictly in submission order', async () => {
    const { store } = await workerStore();
    await store.activate([{ kind: 'k', id: 'a', epoch: 1, initialState: '0' }]);
    // 200 un-awaited writes, each expecting the version the previous one wrote.
    const pending = Array.from({ length: 200 }, (_, v) =>
      store.write([{ kind: 'k', id: 'a', epoch: 1, expectedVersion: v, newVersion: v + 1, state: String(v + 1) }]),
    );
    const reads = store.readEntity('k', 'a');
    expect((await Promise.all(pending)).flat().every(Boolean)).toBe(true);
    expect(await reads).toMatchObject({ version: 200, state: '200' });
  });

  it('errors cross the thread boundary with their class, name, message and code', async () => {
    const { store } = await workerStore();
    await store.initShards(4);
    const mismatch = await store.initShards(5).catch((err: unknown) => err);
    expect(mismatch).toBeInstanceOf(compiledErrors.ConfigMismatch);
    expect(mismatch).toMatchObject({ name: 'ConfigMismatch', code: 'CONFIG_MISMATCH', details: { recorded: 4 } });

    const range = await store.initShards(0).catch((err: unknown) => err);
    expect(range).toBeInstanceOf(RangeError);

    // A fractional ttl makes a non-integer lease: STRICT tables refuse it.
    const sqliteError = await store
      .registerNode({ name: 'n', address: 'a', httpAddress: null, ttlMs: 0.5 })
      .catch((err: unknown) => err);
    expect(sqliteError).toBeInstanceOf(Error);
    expect(sqliteError).toMatchObject({ name: 'SqliteError', code: 'SQLITE_CONSTRAINT_DATATYPE' });
    expect((sqliteError as Error).stack).toContain('in the SQLite worker thread');

    // The in-process mode throws the original errors.
    const local = new SqliteStore(tempSqliteUrl().slice('sqlite:'.length), { inProcess: true });
    stores.push(local);
    await local.migrate();
    await local.initShards(4);
    await expect(local.initShards(5)).rejects.toBeInstanceOf(ConfigMismatch);
  });

  it('keeps the event loop free while waiting for another connection’s write lock', async () => {
    const { store, path } = await workerStore();
    await store.activate([{ kind: 'k', id: 'a', epoch: 1, initialState: '0' }]);
    const raw = rawConnection(path);
    raw.exec('BEGIN IMMEDIATE');
    let settled = false;
    const write = store
      .write([{ kind: 'k', id: 'a', epoch: 1, expectedVersion: 0, newVersion: 1, state: '1' }])
      .finally(() => {
        settled = true;
      });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 10);
    await new Promise((r) => setTimeout(r, 400));
    clearInterval(timer);
    expect(settled).toBe(false);
    expect(ticks).toBeGreaterThanOrEqual(20);
    raw.exec('COMMIT');
    expect(await write).toEqual([true]);
  });

  it('gives up with SQLITE_BUSY after the 5 s busy timeout', { timeout: 20_000 }, async () => {
    const { store, path } = await workerStore();
    const raw = rawConnection(path);
    raw.exec('BEGIN IMMEDIATE');
    const started = Date.now();
    const err = await store.registerNode({ name: 'n', address: 'a', httpAddress: null, ttlMs: 1000 }).catch((e) => e);
    const waited = Date.now() - started;
    raw.exec('ROLLBACK');
    expect(err).toMatchObject({ code: 'SQLITE_BUSY' });
    expect(waited).toBeGreaterThanOrEqual(4_500);
    expect(waited).toBeLessThan(10_000);
    // The store is usable again once the lock is released.
    expect((await store.registerNode({ name: 'n', address: 'a', httpAddress: null, ttlMs: 1000 })).ok).toBe(true);
  });

  it('close() finishes queued requests, ends the worker, and later calls reject', async () => {
    const { store } = await workerStore();
    const queued = store.activate([{ kind: 'k', id: 'a', epoch: 1, initialState: '"queued"' }]);
    await store.close();
    expect(await queued).toEqual([{ ok: true, state: '"queued"', version: 0 }]);
    await expect(store.now()).rejects.toThrow(/closed/);
    await store.close();
  });

  it('an unopenable file surfaces as a rejected call, not a crash', async () => {
    const dir = tempDir();
    const store = new compiled.SqliteStore(join(dir, 'missing-dir', 'x.db'));
    stores.push(store);
    await expect(store.migrate()).rejects.toThrow(/directory does not exist/);
    await expect(store.now()).rejects.toThrow(/directory does not exist/);
  });

  it('uses WAL and sets synchronous by durability', async () => {
    const { store, path } = await workerStore();
    const raw = rawConnection(path);
    expect(raw.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(await store.synchronousMode()).toBe('FULL');
    const relaxed = await workerStore(path, { durability: 'relaxed' });
    expect(await relaxed.store.synchronousMode()).toBe('NORMAL');
  });

  it.each([
    ['', '0'],
    [' (shared writer)', '1'],
  ])(
    'separate processes race on one file%s: migrate once, one name, one claim, no lost update, one append per version',
    {
      timeout: 60_000,
    },
    async (_, sharedWriter) => {
      const path = tempSqliteUrl().slice('sqlite:'.length);
      const script = join(compiledDir, 'race-child.mjs');
      writeFileSync(script, RACE_CHILD);
      const PROCESSES = 4;
      const ROUNDS = 40;
      const children = Array.from({ length: PROCESSES }, (_, i) =>
        fork(script, [path, `proc-${i}`, String(ROUNDS)], {
          execArgv: [],
          env: { ...process.env, CONCORD_SQLITE_SHARED_WRITER: sharedWriter },
          stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        }),
      );
      const exits = children.map((child) => new Promise<number | null>((r) => child.once('exit', r)));
      try {
        // Barrier: every process has migrated before any of them races.
        await Promise.all(children.map((child) => nextMessage(child)));
        const results = children.map((child) => nextMessage(child) as Promise<RaceResult>);
        for (const child of children) child.send('go');
        const outcomes = await Promise.all(results);
        expect(await Promise.all(exits)).toEqual(children.map(() => 0));

        expect(outcomes.filter((o) => o.registered)).toHaveLength(1);
        expect(outcomes.filter((o) => o.claimed)).toHaveLength(1);
        const wins = outcomes.reduce((sum, o) => sum + o.wins, 0);
        expect(wins).toBeGreaterThanOrEqual(ROUNDS);

        const raw = rawConnection(path);
        expect(raw.prepare('SELECT version FROM concord_migrations ORDER BY version').pluck().all()).toEqual(
          MIGRATIONS.map((m) => m.version),
        );
        expect(raw.prepare("SELECT version, state FROM concord_entities WHERE id = 'shared'").get()).toEqual({
          version: wins,
          state: String(wins),
        });
        // Appends at the same expected version from separate processes: exactly one per version.
        expect(outcomes.reduce((sum, o) => sum + o.appended, 0)).toBe(ROUNDS);
        const events = raw
          .prepare("SELECT version, node, data FROM concord_events WHERE stream = 'race' ORDER BY version")
          .all() as {
          version: number;
          node: string;
          data: string;
        }[];
        expect(events.map((e) => e.version)).toEqual(Array.from({ length: ROUNDS }, (_, i) => i + 1));
        for (const [i, outcome] of outcomes.entries()) {
          expect(events.filter((e) => e.node === `proc-${i}` && JSON.parse(e.data) === e.node)).toHaveLength(
            outcome.appended,
          );
        }
      } finally {
        for (const child of children) if (child.exitCode === null) child.kill();
      }
    },
  );
});

/** The child's next IPC message; rejects if it exits first. */
function nextMessage(child: ChildProcess): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null) => reject(new Error(`child exited with code ${code} before answering`));
    child.once('exit', onExit);
    child.once('message', (message) => {
      child.off('exit', onExit);
      resolve(message);
    });
  });
}

interface RaceResult {
  registered: boolean;
  claimed: boolean;
  wins: number;
  /** Appends this process won. */
  appended: number;
}

const RACE_CHILD = `
import { SqliteStore } from './src/store/sqlite-store.js';
const [path, name, rounds] = process.argv.slice(2);
const store = new SqliteStore(path);
await store.migrate();
await store.initShards(4);
await store.activate([{ kind: 'counter', id: 'shared', epoch: 1, initialState: '0' }]);
process.send('ready');
await new Promise((resolve) => process.once('message', resolve));
const shared = await store.registerNode({ name: 'shared-name', address: name, httpAddress: null, ttlMs: 60000 });
const own = await store.registerNode({ name, address: name, httpAddress: null, ttlMs: 60000 });
const claim = await store.claimShard(0, 0, name, own.incarnation);
let wins = 0;
for (let i = 0; i < Number(rounds); i++) {
  const row = await store.readEntity('counter', 'shared');
  const [ok] = await store.write([{ kind: 'counter', id: 'shared', epoch: 1, expectedVersion: row.version,
    newVersion: row.version + 1, state: String(Number(row.state) + 1) }]);
  if (ok) wins++;
}
// Every process appends at expected versions 0, 1, 2, … of one stream: per version, one winner.
let appended = 0;
for (let v = 0; v < Number(rounds); v++) {
  const result = await store.appendEvents({ stream: 'race', expectedVersion: v,
    events: [{ type: 'Won', data: JSON.stringify(name) }], node: name });
  if (result.ok) appended++;
}
await store.close();
process.send({ registered: shared.ok, claimed: claim !== null, wins, appended }, () => process.disconnect());
`;

/** A fenced write of entity `id` (kind `k`) from `expectedVersion` to the next, for the shared-writer tests. */
function write(id: string, epoch: number, expectedVersion: number): WriteRequest {
  return {
    kind: 'k',
    id,
    epoch,
    expectedVersion,
    newVersion: expectedVersion + 1,
    state: JSON.stringify(`${id}@${expectedVersion + 1}`),
  };
}

describe('SqliteStore with a shared writer', () => {
  const stores: SqliteStore[] = [];
  afterAll(async () => {
    await Promise.all(stores.map((s) => s.close().catch(() => {})));
  });

  async function shared(path: string): Promise<SqliteStore> {
    const store = new compiled.SqliteStore(path, { sharedWriter: true });
    stores.push(store);
    await store.migrate();
    return store;
  }

  async function until(check: () => Promise<boolean>, timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error('condition not reached');
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  it('the first store is the writer, the next forwards; each request is fenced alone; the socket is 0600 and goes on close', async () => {
    const path = tempSqliteUrl().slice('sqlite:'.length);
    const writer = await shared(path);
    const follower = await shared(path);
    expect((await writer.sharedWriterStatus())?.role).toBe('writer');
    await until(async () => (await follower.sharedWriterStatus())?.linked === true);
    expect((await follower.sharedWriterStatus())?.role).toBe('follower');
    expect(statSync(`${path}.writer.sock`).mode & 0o777).toBe(0o600);

    await writer.activate(['a', 'b', 'c'].map((id) => ({ kind: 'k', id, epoch: 2, initialState: '0' })));
    // A stale epoch and a stale version are refused, in the same batch as a write that applies.
    expect(await follower.write([write('a', 2, 0), write('b', 1, 0), write('c', 2, 5)])).toEqual([true, false, false]);
    expect(await writer.write([write('b', 2, 0)])).toEqual([true]);
    const status = await follower.sharedWriterStatus();
    expect(status?.forwarded).toBe(1);
    expect(status?.commits).toBe(0);
    expect((await writer.sharedWriterStatus())?.batches).toBe(2);
    expect((await follower.readEntity('k', 'a'))?.version).toBe(1);
    expect((await follower.readEntity('k', 'c'))?.version).toBe(0);

    await writer.close();
    expect(existsSync(`${path}.writer.sock`)).toBe(false);
    // The follower takes over.
    await until(async () => (await follower.sharedWriterStatus())?.role === 'writer');
    expect(await follower.write([write('a', 2, 1)])).toEqual([true]);
    await follower.close();
    expect(existsSync(`${path}.writer.sock`)).toBe(false);
  });

  it('a writer closing under load hands over: every write of the follower is answered, in order, none lost', async () => {
    const path = tempSqliteUrl().slice('sqlite:'.length);
    const writer = await shared(path);
    const follower = await shared(path);
    await until(async () => (await follower.sharedWriterStatus())?.linked === true);
    const ids = Array.from({ length: 16 }, (_, i) => `e${i}`);
    await follower.activate(ids.map((id) => ({ kind: 'k', id, epoch: 1, initialState: '0' })));
    let stop = false;
    const counts = new Map<string, number>();
    const loops = ids.map(async (id) => {
      let v = 0;
      while (!stop) {
        expect(await follower.write([write(id, 1, v)])).toEqual([true]);
        v++;
      }
      counts.set(id, v);
    });
    await new Promise((r) => setTimeout(r, 200));
    const closing = writer.close();
    await closing;
    await new Promise((r) => setTimeout(r, 200));
    stop = true;
    await Promise.all(loops);
    expect((await follower.sharedWriterStatus())?.role).toBe('writer');
    for (const id of ids) expect((await follower.readEntity('k', id))?.version).toBe(counts.get(id));
  });
});

/**
 * A writer driven by hand, for the follower's side of the protocol: it holds the file's writer
 * lock, takes the follower's connection on, and keeps the batches it receives instead of
 * answering them, as a paused writer process would; `commit` then applies them (with their
 * tokens) as the writer would on resuming.
 */
class HandWriter {
  readonly received: { id: number; requests: WriteRequest[]; token: string }[] = [];
  private readonly lock: Database.Database;
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly core: SqliteCore;
  private readonly packr = new Packr({ useRecords: false });

  private constructor(readonly path: string) {
    const real = realpathSync(path);
    this.lock = new Database(`${real}.writer-lock`, { timeout: 0 });
    this.lock.pragma('locking_mode = EXCLUSIVE');
    this.lock.exec('BEGIN EXCLUSIVE');
    this.lock.exec('COMMIT');
    this.core = new SqliteCore(path);
    this.core.migrate();
    this.server = createServer((socket) => {
      this.sockets.add(socket);
      let buffer = Buffer.alloc(0);
      let welcomed = false;
      socket.on('data', (chunk: Buffer) => {
        buffer = Buffer.concat([buffer, chunk]);
        while (buffer.length >= 4 && buffer.length >= 4 + buffer.readUInt32BE(0)) {
          const value = this.packr.unpack(buffer.subarray(4, 4 + buffer.readUInt32BE(0)));
          buffer = buffer.subarray(4 + buffer.readUInt32BE(0));
          if (!welcomed) {
            welcomed = true;
            this.send(socket, [-1, null]);
          } else {
            const [id, requests, token] = value as [number, WriteRequest[], string];
            this.received.push({ id, requests, token });
          }
        }
      });
      socket.on('error', () => {});
    });
  }

  static async start(path: string): Promise<HandWriter> {
    const writer = new HandWriter(path);
    await new Promise<void>((resolve) => writer.server.listen(`${realpathSync(path)}.writer.sock`, resolve));
    return writer;
  }

  private send(socket: Socket, value: unknown): void {
    const body = this.packr.pack(value);
    const header = Buffer.allocUnsafe(4);
    header.writeUInt32BE(body.length, 0);
    socket.write(Buffer.concat([header, body]));
  }

  /** Commit every batch received so far in one fold, as the writer does; answer nobody. */
  commit(): (boolean[] | Error)[] {
    const batches = this.received.splice(0);
    return this.core.writeFolded(batches.map(({ requests, token }) => ({ requests, token })));
  }

  close(): void {
    for (const socket of this.sockets) socket.destroy();
    this.server.close();
    this.core.close();
    this.lock.close();
  }
}

describe('shared writer: a batch the writer does not answer is re-run by its sender, and applies once', () => {
  const stores: SqliteStore[] = [];
  const writers: HandWriter[] = [];
  afterAll(async () => {
    for (const writer of writers) writer.close();
    await Promise.all(stores.map((s) => s.close().catch(() => {})));
  });

  async function linkedFollower(): Promise<{ follower: SqliteStore; writer: HandWriter; path: string }> {
    const path = tempSqliteUrl().slice('sqlite:'.length);
    const seed = new SqliteCore(path);
    seed.migrate();
    seed.close();
    const writer = await HandWriter.start(path);
    writers.push(writer);
    const follower = new compiled.SqliteStore(path, { sharedWriter: true });
    stores.push(follower);
    await follower.migrate();
    const deadline = Date.now() + 5000;
    while ((await follower.sharedWriterStatus())?.linked !== true) {
      if (Date.now() > deadline) throw new Error('the follower did not link to the hand writer');
      await new Promise((r) => setTimeout(r, 20));
    }
    await follower.activate(['a', 'b', 'c'].map((id) => ({ kind: 'k', id, epoch: 2, initialState: '0' })));
    return { follower, writer, path };
  }

  it('a writer that never answers: the batch is re-run on the follower after the stall bound; the copy the writer commits later applies nothing', async () => {
    const { follower, writer } = await linkedFollower();
    const t0 = performance.now();
    const results = await follower.write([write('a', 2, 0), write('b', 1, 0)]);
    const waited = performance.now() - t0;
    expect(results).toEqual([true, false]);
    expect(writer.received).toHaveLength(1);
    expect(waited).toBeGreaterThanOrEqual(STALL_MS);
    expect(waited).toBeLessThan(STALL_MS + 1500);
    const status = await follower.sharedWriterStatus();
    expect(status).toMatchObject({ forwarded: 1, rerun: 1, linked: false });
    // The writer "resumes" and commits its copy: superseded, nothing applied twice.
    const [late] = writer.commit();
    expect(late).toBeInstanceOf(BatchSuperseded);
    expect(await follower.readEntity('k', 'a')).toMatchObject({ version: 1, state: JSON.stringify('a@1') });
    expect((await follower.readEntity('k', 'b'))?.version).toBe(0);
    // Meanwhile the follower commits on its own connection, at once.
    const t1 = performance.now();
    expect(await follower.write([write('a', 2, 1)])).toEqual([true]);
    expect(performance.now() - t1).toBeLessThan(STALL_MS);
  });

  it('a writer that commits but never answers: the re-run reports the results of the committed copy, not a fence refusal', async () => {
    const { follower, writer } = await linkedFollower();
    const pending = follower.write([write('a', 2, 0), write('c', 2, 7)]);
    const deadline = Date.now() + 2000;
    while (writer.received.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    // Committed by the writer before the follower gives up on it (the answer is lost).
    expect(writer.commit()).toEqual([[true, false]]);
    // A plain re-run would now see version 1 and report `false` for a write that applied.
    expect(await pending).toEqual([true, false]);
    expect(await follower.readEntity('k', 'a')).toMatchObject({ version: 1, state: JSON.stringify('a@1') });
    expect((await follower.sharedWriterStatus())?.rerun).toBe(1);
  });

  it('a batch too old to re-run fails as outcome unknown; old tokens are pruned', () => {
    const path = tempSqliteUrl().slice('sqlite:'.length);
    const core = new SqliteCore(path);
    core.migrate();
    try {
      core.activate([{ kind: 'k', id: 'a', epoch: 1, initialState: '0' }]);
      let error: unknown;
      try {
        core.writeOnce(`${batchTokenTime(Date.now())}.t.1`, [write('a', 1, 0)], Date.now() - RERUN_WINDOW_MS - 1000);
      } catch (err) {
        error = err;
      }
      expect(error).toBeInstanceOf(StoreUnavailable);
      expect((error as StoreUnavailable).details?.['maybeApplied']).toBe(true);
      expect(core.readEntity('k', 'a')?.version).toBe(0);
      // A fresh one applies once; the same token again returns the recorded results.
      const sentAt = Date.now();
      const token = `${batchTokenTime(sentAt)}.t.2`;
      expect(core.writeOnce(token, [write('a', 1, 0)], sentAt)).toEqual([true]);
      expect(core.writeOnce(token, [write('a', 1, 0)], sentAt)).toEqual([true]);
      expect(core.readEntity('k', 'a')?.version).toBe(1);
      // The writer's copy of it, later, applies nothing.
      expect(core.writeFolded([{ requests: [write('a', 1, 0)], token }])[0]).toBeInstanceOf(BatchSuperseded);
      expect(core.readEntity('k', 'a')?.version).toBe(1);
      // Tokens go by their send time.
      expect(core.pruneBatchTokens(sentAt - 1)).toBe(0);
      expect(core.pruneBatchTokens(sentAt + 1)).toBe(1);
    } finally {
      core.close();
    }
  });
});

describe('openStore (sqlite)', () => {
  const stores: Store[] = [];
  afterAll(async () => {
    await Promise.all(stores.map((s) => s.close()));
  });

  it('creates missing parent directories and migrates', async () => {
    const file = join(tempDir(), 'a', 'b', 'concord.db');
    const store = await openStore(`sqlite:${file}`);
    stores.push(store);
    expect(store.backend).toBe('sqlite');
    expect(existsSync(file)).toBe(true);
    await store.initShards(2);
    expect(await store.listShards()).toHaveLength(2);
  });

  it('resolves relative paths against the working directory', async () => {
    const dir = tempDir();
    const cwd = process.cwd();
    process.chdir(dir);
    try {
      const store = await openStore('sqlite:data/concord.db', { durability: 'relaxed' });
      stores.push(store);
    } finally {
      process.chdir(cwd);
    }
    expect(existsSync(join(dir, 'data', 'concord.db'))).toBe(true);
  });

  it('refuses in-memory databases and unknown schemes with clear errors', async () => {
    await expect(openStore('sqlite::memory:')).rejects.toThrow(/share the store through a file/);
    await expect(openStore('sqlite:')).rejects.toThrow(/give a path/);
    await expect(openStore('mysql://localhost/db')).rejects.toThrow(/unsupported store URL scheme "mysql:"/);
    await expect(openStore('concord.db')).rejects.toThrow(/use sqlite:PATH, postgres:\/\/ or postgresql:\/\//);
  });
});

describe('migrations list', () => {
  it('has strictly increasing versions starting at 1, each with SQL for both backends', async () => {
    // Not necessarily contiguous: version 3 is reserved (another branch), and migrate()
    // applies whichever listed versions a database has not recorded.
    expect(MIGRATIONS[0]?.version).toBe(1);
    MIGRATIONS.forEach((m, i) => {
      if (i > 0) expect(m.version).toBeGreaterThan(MIGRATIONS[i - 1]!.version);
      expect(m.sqlite.trim()).not.toBe('');
      expect(m.postgres.trim()).not.toBe('');
    });
  });
});

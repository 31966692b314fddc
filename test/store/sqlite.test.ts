/**
 * SQLite backend: the conformance suite twice — in-process (the TypeScript sources, as vitest
 * loads them) and in worker threads (the store transpiled to JavaScript, as it ships) — plus
 * what is specific to SQLite: the worker protocol, lock waits, pragmas, separate processes.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import Database from 'better-sqlite3';
import ts from 'typescript';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigMismatch } from '../../src/errors.js';
import { MIGRATIONS } from '../../src/store/migrations.js';
import { openStore } from '../../src/store/open.js';
import { SqliteStore, type SqliteStoreOptions } from '../../src/store/sqlite-store.js';
import type { Store, StoreOptions } from '../../src/store/types.js';
import { tempDir, tempSqliteUrl } from '../support/tmp.js';
import { type ConformanceTarget, storeConformance } from './conformance.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

type SqliteStoreClass = new (path: string, options?: SqliteStoreOptions) => SqliteStore;

/**
 * Transpile src/errors.ts and src/store/*.ts to JavaScript in a temporary directory (with
 * node_modules linked in), so that SqliteStore can start real worker threads and separate
 * processes can open the store without a TypeScript loader.
 */
function compileStore(): string {
  const out = tempDir('concord-compiled-');
  const sources = ['src/errors.ts', ...readdirSync(join(ROOT, 'src/store')).map((f) => `src/store/${f}`)];
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
  'sqlite (worker threads)',
  sqliteTarget((path, options) => {
    const store = new compiled.SqliteStore(path, options);
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

  const write = (id: string, epoch: number, expectedVersion: number) => ({
    kind: 'k',
    id,
    epoch,
    expectedVersion,
    newVersion: expectedVersion + 1,
    state: JSON.stringify(`${id}@${expectedVersion + 1}`),
  });

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

/**
 * One writer per SQLite file (CONCORD_SQLITE_SHARED_WRITER=1): real node processes on one
 * file, the follower forwarding its fenced writes over the writer's Unix socket.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { shardOf } from '../../src/cluster/hash.js';
import { SqliteStore } from '../../src/store/sqlite-store.js';
import { IpcCallError, ProcessNode } from '../../src/testing/process-node.js';
import { eventually, idsOwnedBy, nodeConfig, sleep, status, waitForStableOwnership } from '../support/cluster.js';
import { tempSqliteUrl } from '../support/tmp.js';

const SHARED = { CONCORD_SQLITE_SHARED_WRITER: '1' };

interface RegisterReply {
  value: string | null;
  version: number;
}

const started: ProcessNode[] = [];
afterEach(async () => {
  const nodes = started.splice(0);
  for (const node of nodes) node.resume();
  await Promise.all(nodes.map((node) => (node.running ? node.kill() : Promise.resolve())));
});

async function startShared(store: string, name: string, leaseTtlMs = 1500): Promise<ProcessNode> {
  const node = new ProcessNode(nodeConfig({ store, nodes: 2, leaseTtlMs }, name), SHARED);
  started.push(node);
  await node.start();
  return node;
}

/** The pid holding the writer lock of `file` (from /proc/locks), or null. */
function writerPid(file: string): number | null {
  const lockFile = `${file}.writer-lock`;
  if (!existsSync(lockFile)) return null;
  const inode = String(statSync(lockFile).ino);
  for (const line of readFileSync('/proc/locks', 'utf8').split('\n')) {
    const fields = line.trim().split(/\s+/);
    const at = fields.indexOf('POSIX');
    if (at < 0 || fields[at + 2] !== 'WRITE') continue;
    if (fields[at + 4]?.split(':')[2] === inode) return Number(fields[at + 3]);
  }
  return null;
}

/** A direct (in-process, not shared) connection to the file, for checks. */
async function direct(url: string): Promise<SqliteStore> {
  const store = new SqliteStore(url.slice('sqlite:'.length), { inProcess: true, sharedWriter: false });
  await store.migrate();
  return store;
}

describe.skipIf(process.platform !== 'linux')('shared SQLite writer (real processes)', () => {
  it('writes of both nodes land, and a stale owner writing through the writer is refused by the fence', {
    timeout: 60_000,
  }, async () => {
    const url = tempSqliteUrl();
    const file = url.slice('sqlite:'.length);
    const a = await startShared(url, 'n1');
    const b = await startShared(url, 'n2');
    await waitForStableOwnership([a, b], 256);
    // n1 opened the file first: it is the writer, n2 forwards to it.
    expect(writerPid(file)).toBe(a.pid);
    expect(existsSync(`${file}.writer.sock`)).toBe(true);
    expect(statSync(`${file}.writer.sock`).mode & 0o777).toBe(0o600);

    const ofA = await idsOwnedBy(a, 'register', 5);
    const ofB = await idsOwnedBy(b, 'register', 5);
    for (const id of [...ofA, ...ofB]) {
      expect(await b.call('register', id, 'set', `first-${id}`)).toEqual({ value: `first-${id}`, version: 1 });
      expect(await a.call('register', id, 'set', `second-${id}`)).toEqual({ value: `second-${id}`, version: 2 });
    }
    const check = await direct(url);
    try {
      for (const id of [...ofA, ...ofB]) {
        const row = await check.readEntity('register', id);
        expect(row?.version).toBe(2);
        expect(JSON.parse(row!.state)).toEqual({ value: `second-${id}` });
      }
    } finally {
      await check.close();
    }

    // The stale owner is the follower: its write, paused mid-turn, goes through the writer
    // after its shard has been claimed by the writer's node, and the fence refuses it there.
    const target = (await idsOwnedBy(b, 'register', 6)).at(-1)!;
    expect(await a.call('register', target, 'set', 'v1')).toEqual({ value: 'v1', version: 1 });
    const inFlight = b.call('register', target, 'slowSet', { value: 'stale-write', delayMs: 300 }, 15_000);
    await sleep(100);
    await b.pause();
    await sleep(2600); // past b's lease: a may claim its shards now
    expect(await a.call('register', target, 'set', 'v2', 10_000)).toEqual({ value: 'v2', version: 2 });
    b.resume();
    const write = await inFlight.then(
      (value) => value as RegisterReply,
      () => null,
    );
    expect((await status(b)).host.fenced).toBeGreaterThanOrEqual(1);
    // If the call succeeded it was retried at the new owner, ordered after v2.
    if (write) expect(write).toEqual({ value: 'stale-write', version: 3 });
    const after = await direct(url);
    try {
      const row = await after.readEntity('register', target);
      expect(row?.version).toBe(write ? 3 : 2);
      expect(JSON.parse(row!.state)).toEqual({ value: write ? 'stale-write' : 'v2' });
    } finally {
      await after.close();
    }
  });

  it("a paused writer holds up the follower's writes for the stall bound only: they are re-run on its own connection, and the writer's copies apply nothing after SIGCONT", {
    timeout: 60_000,
  }, async () => {
    const url = tempSqliteUrl();
    const file = url.slice('sqlite:'.length);
    // A lease longer than the pause: n1 stays a member; only its writer role is in question.
    const a = await startShared(url, 'n1', 6000);
    const b = await startShared(url, 'n2', 6000);
    await waitForStableOwnership([a, b], 256);
    expect(writerPid(file)).toBe(a.pid);

    // 8 callers through n2 on n2's own entities, each writing 1, 2, 3 …; n1 commits them.
    const ids = await idsOwnedBy(b, 'register', 8);
    const acks = new Map<string, { version: number; startedAt: number; endedAt: number }[]>();
    const failures: string[] = [];
    let stop = false;
    const callers = ids.map(async (id) => {
      const mine: { version: number; startedAt: number; endedAt: number }[] = [];
      acks.set(id, mine);
      for (let k = 1; !stop; k++) {
        const startedAt = performance.now();
        try {
          const reply = (await b.call('register', id, 'set', String(k), 5000)) as RegisterReply;
          expect(reply.value).toBe(String(k));
          mine.push({ version: reply.version, startedAt, endedAt: performance.now() });
        } catch (error) {
          failures.push(error instanceof IpcCallError ? `${error.code}: ${error.message}` : String(error));
        }
        await sleep(5);
      }
    });
    await sleep(1000);

    // Pause n1 at a moment it does not hold the file's write lock (pausing it mid-commit
    // would stop every writer of the file, with or without a shared writer).
    const probe = new Database(file, { timeout: 0 });
    let pausedAt = 0;
    for (let tries = 0; tries < 50 && pausedAt === 0; tries++) {
      await a.pause();
      try {
        probe.exec('BEGIN IMMEDIATE');
        probe.exec('ROLLBACK');
        pausedAt = performance.now();
      } catch {
        a.resume();
        await sleep(10);
      }
    }
    probe.close();
    expect(pausedAt).toBeGreaterThan(0);
    await sleep(2500);
    a.resume();
    const resumedAt = performance.now();
    await sleep(1000);
    stop = true;
    await Promise.all(callers);

    expect(failures).toEqual([]);
    const all = [...acks.values()].flat();
    // While n1 stayed paused, n2's writes went on, on its own connection.
    const duringPause = all.filter((ack) => ack.startedAt > pausedAt + 1000 && ack.endedAt < resumedAt);
    expect(duringPause.length).toBeGreaterThan(20);
    // The calls caught by the pause waited for the stall bound, not for the pause to end.
    const longest = Math.max(...all.map((ack) => ack.endedAt - ack.startedAt));
    expect(longest).toBeLessThan(1500);

    // Every acknowledged write applied once: the versions step by exactly one, and the row is
    // the last acknowledged write, after n1 resumed and committed what it had been sent.
    const check = await direct(url);
    try {
      for (const id of ids) {
        const mine = acks.get(id)!;
        mine.forEach((ack, i) => {
          expect(ack.version).toBe(i + 1);
        });
        const row = (await check.readEntity('register', id))!;
        expect(row.version).toBe(mine.length);
        expect(JSON.parse(row.state)).toEqual({ value: String(mine.length) });
      }
    } finally {
      await check.close();
    }
    console.log(
      `writer paused 2.5 s: ${all.length} writes, ${duringPause.length} during the pause, longest call ${longest.toFixed(0)} ms`,
    );
  });

  it('kill -9 of the writer under write load: every acknowledged write is there, no stale write, the other node takes over', {
    timeout: 60_000,
  }, async () => {
    const url = tempSqliteUrl();
    const file = url.slice('sqlite:'.length);
    const a = await startShared(url, 'n1');
    const b = await startShared(url, 'n2');
    await waitForStableOwnership([a, b], 256);
    expect(writerPid(file)).toBe(a.pid);

    // 32 callers through the follower n2, each writing 1, 2, 3 … to its own entity; half of
    // the entities are owned by n1 (the writer), half by n2 (whose writes n1 commits).
    const ids = [...(await idsOwnedBy(a, 'register', 16)), ...(await idsOwnedBy(b, 'register', 16))];
    /** Per entity: acknowledged writes, each with the attempts since the previous ack that may have applied. */
    const acked = new Map<string, { k: number; version: number; maybe: number }[]>();
    const codes = new Map<string, number>();
    const attempted = new Map<string, number>();
    let killedAt = Number.POSITIVE_INFINITY;
    const ackedAfterKill = new Set<string>();
    let errors = 0;
    let stop = false;
    const callers = ids.map(async (id) => {
      const acks: { k: number; version: number; maybe: number }[] = [];
      acked.set(id, acks);
      let maybe = 0;
      for (let k = 1; !stop; k++) {
        attempted.set(id, k);
        const startedAt = performance.now();
        try {
          const reply = (await b.call('register', id, 'set', String(k), 3000)) as RegisterReply;
          expect(reply.value).toBe(String(k));
          acks.push({ k, version: reply.version, maybe });
          maybe = 0;
          // Only a call made after n1 was gone proves that n2 serves the entity now (a call
          // made just before may still have been answered by n1).
          if (startedAt > killedAt) ackedAfterKill.add(id);
        } catch (error) {
          if (!(error instanceof IpcCallError)) throw error;
          errors++;
          codes.set(error.code, (codes.get(error.code) ?? 0) + 1);
          // Only an error that says so may have applied the write.
          if (error.details['maybeApplied'] !== false) maybe++;
          await sleep(20);
        }
      }
    });

    await sleep(1500);
    const before = [...acked.values()].reduce((n, acks) => n + acks.length, 0);
    expect(before).toBeGreaterThan(50);
    await a.kill();
    killedAt = performance.now();
    // n2 takes the lock at once (its link closed), and n1's shards after n1's lease ran out.
    await eventually(async () => expect(writerPid(file)).toBe(b.pid), 10_000);
    await eventually(async () => expect(ackedAfterKill.size).toBe(ids.length), 20_000, 100);
    stop = true;
    await Promise.all(callers);

    const check = await direct(url);
    try {
      const shards = await check.listShards();
      for (const id of ids) {
        const acks = acked.get(id)!;
        // Between two acknowledged writes the version grew by one, plus at most one for each
        // attempt whose error said it may have applied: a write reported as not applied never was.
        for (let i = 1; i < acks.length; i++) {
          const grew = acks[i]!.version - acks[i - 1]!.version;
          expect(grew).toBeGreaterThanOrEqual(1);
          expect(grew).toBeLessThanOrEqual(1 + acks[i]!.maybe);
        }
        const last = acks.at(-1)!;
        const row = (await check.readEntity('register', id))!;
        const stored = Number(JSON.parse(row.state).value);
        // The last acknowledged write is there, or a later one whose outcome was unknown.
        expect(stored).toBeGreaterThanOrEqual(last.k);
        expect(stored).toBeLessThanOrEqual(attempted.get(id)!);
        if (stored === last.k) expect(row.version).toBe(last.version);
        else expect(row.version).toBeGreaterThan(last.version);
        // No stale owner wrote: the row carries the epoch of its shard's current owner (n2,
        // which claimed n1's shards), never an older one after n2 wrote it.
        const shard = shards[shardOf('register', id, 256)]!;
        expect(shard.owner).toBe('n2');
        expect(row.epoch).toBe(shard.epoch);
      }
    } finally {
      await check.close();
    }
    // The cluster still serves writes (n2 is the writer now).
    expect(await b.call('register', ids[0]!, 'get', undefined, 5000)).toBeTruthy();
    expect(errors).toBeLessThan(5000);
    console.log(`writer killed: ${before} acks before, errors by code ${JSON.stringify(Object.fromEntries(codes))}`);
  });
});

// Usage: node bench/store-writes.mjs 0|1 (1: CONCORD shared writer on). DUR=relaxed for relaxed durability.
// Two processes x 32 closed-loop callers, each writing its own entities through a per-process
// TickBatcher (as the entity host does), on one SQLite file; prints total ops/s.
import { fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// DIST: the build to measure (default: this checkout's dist).
const DIST = process.env.DIST ?? new URL('../dist', import.meta.url).pathname;
if (process.argv[2] === 'child') {
  const { SqliteStore } = await import(`${DIST}/src/store/sqlite-store.js`);
  const { TickBatcher } = await import(`${DIST}/src/entity/batcher.js`);
  const [, , , file, name, secs, shared] = process.argv;
  const store = new SqliteStore(file, { sharedWriter: shared === '1', durability: process.env.DUR ?? 'strict' });
  await store.migrate();
  const ids = Array.from({ length: 32 }, (_, i) => `${name}-${i}`);
  await store.activate(ids.map((id) => ({ kind: 'k', id, epoch: 1, initialState: '0' })));
  let commits = 0;
  const batcher = new TickBatcher(
    (r) => {
      commits++;
      return store.write(r);
    },
    1, // one batch in flight per process, as the entity host on SQLite
    1024,
  );
  process.send('ready');
  await new Promise((r) => process.once('message', r));
  let ops = 0;
  let stop = false;
  setTimeout(() => {
    stop = true;
  }, Number(secs) * 1000);
  const t0 = performance.now();
  await Promise.all(
    ids.map(async (id) => {
      for (let v = 0; !stop; v++) {
        if (
          !(await batcher.submit({
            kind: 'k',
            id,
            epoch: 1,
            expectedVersion: v,
            newVersion: v + 1,
            state: JSON.stringify({ v }),
          }))
        )
          throw new Error('fenced');
        ops++;
      }
    }),
  );
  const secsTaken = (performance.now() - t0) / 1000;
  const st = shared === '1' ? await store.sharedWriterStatus() : null;
  await store.close();
  process.send({ ops, secsTaken, commits, st }, () => process.exit(0));
} else {
  const shared = process.argv[2] ?? '0';
  const dir = mkdtempSync(join(tmpdir(), 'writer-ab-'));
  const file = join(dir, 'db');
  const kids = ['a', 'b'].map((n) => fork(new URL(import.meta.url).pathname, ['child', file, n, '5', shared]));
  await Promise.all(kids.map((k) => new Promise((r) => k.once('message', r))));
  const done = kids.map((k) => new Promise((r) => k.once('message', r)));
  for (const k of kids) k.send('go');
  const res = await Promise.all(done);
  const total = res.reduce((s, r) => s + r.ops / r.secsTaken, 0);
  console.log(
    `shared=${shared} dist=${DIST} ops/s=${Math.round(total)} ${JSON.stringify(res.map((r) => ({ batches: r.commits, st: r.st, secs: r.secsTaken.toFixed(1) })))}`,
  );
  rmSync(dir, { recursive: true, force: true });
}

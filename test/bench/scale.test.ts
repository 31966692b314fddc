/**
 * `concord bench --only scale` end to end with a small cluster (5 node processes, --tiny: a
 * 2 s idle window) on each store: the row is there, every figure is present and sane (every
 * shard owned, the maps agreed after the join and the leave, the failover completed, the idle
 * store traffic counted by kind), and every node process was a child of the bench process.
 * Timings are not asserted (the machine is shared and small).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { runBenchReport } from '../support/bench.js';
import { createTestDatabase, dropTestDatabase } from '../support/pg.js';

const NODES = 5;

async function scaleOnStore(store: string, backend: 'sqlite' | 'postgres'): Promise<void> {
  const { report, markdown, ...ran } = await runBenchReport(
    ['--tiny', '--only', 'scale', '--scale-nodes', String(NODES), '--store', store],
    50_000,
  );

  expect(report.scale).toHaveLength(1);
  const row = report.scale[0]!;
  expect(row.error).toBeNull();
  expect(row.store).toBe(backend);
  expect(row.nodes).toBe(NODES);
  // Started, every shard owned, then placed and agreed (in that order).
  expect(row.processesUpMs).toBeGreaterThan(0);
  expect(row.ownedMs).toBeGreaterThanOrEqual(row.processesUpMs);
  expect(row.settledMs).toBeGreaterThanOrEqual(row.ownedMs);
  expect(row.startClaims).toBeGreaterThanOrEqual(256);
  // Idle: every node renews its lease and reads the map and the membership; nothing is claimed.
  const q = row.storeOpsPerNodePerSecond;
  expect(q.lease).toBeGreaterThan(0.5);
  expect(q.shardMap).toBeGreaterThan(0.5);
  expect(q.membership).toBeGreaterThan(0.5);
  expect(q.claims).toBe(0);
  expect(row.clusterStoreOpsPerSecond).toBeGreaterThan(NODES);
  expect(row.storeOpsPerSecondByOp['renewLease']).toBeGreaterThan(0);
  expect(row.rssMiBPerNode).toBeGreaterThan(10);
  expect(row.rssMiBMax).toBeGreaterThanOrEqual(row.rssMiBPerNode);
  if (backend === 'postgres') {
    expect(row.storeConnections).toBeGreaterThanOrEqual(NODES);
    expect(row.storeConnections).toBeLessThanOrEqual(NODES * 4);
  } else expect(row.storeConnections).toBeNull();
  // Join, leave and failover all completed (a timeout would have failed the run).
  for (const ms of [row.joinAgreedMs, row.leaveAgreedMs, row.failoverMs]) {
    expect(Number.isFinite(ms)).toBe(true);
    expect(ms).toBeGreaterThan(0);
  }
  expect(row.failoverShards).toBeGreaterThan(0);

  expect(markdown).toContain('#### Scale: many node processes on one machine');
  expect(markdown).toMatch(new RegExp(`^\\| ${backend} \\| ${NODES} \\|`, 'm'));
  expect(markdown).not.toContain('#### Throughput and latency');
  // Every node process (the joiner too) was a child of the bench process.
  expect(report.processes).toHaveLength(NODES + 1);
  for (const p of report.processes) expect(p.ppid, p.name).toBe(ran.pid);
}

describe('concord bench --only scale', () => {
  const databases: string[] = [];
  afterAll(async () => {
    for (const url of databases) await dropTestDatabase(url);
  });

  it(`runs ${NODES} nodes on SQLite`, async () => {
    await scaleOnStore('sqlite', 'sqlite');
  }, 60_000);

  it(`runs ${NODES} nodes on PostgreSQL`, async () => {
    const url = await createTestDatabase();
    databases.push(url);
    // A pool of 4 per node (the store URL's max): the test server is shared with the other test files.
    await scaleOnStore(`${url}?max=4`, 'postgres');
  }, 60_000);
});

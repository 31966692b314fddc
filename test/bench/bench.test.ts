/**
 * `concord bench` runs end to end on each store (a very short run: --tiny, two
 * concurrencies on SQLite, one on PostgreSQL): its table has a row for every system × driver × workload × C and for every
 * extra figure, the baselines ran as children of the same bench process, and the JSON parses.
 * The numbers themselves are not asserted (this machine is shared and small).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { runBenchReport } from '../support/bench.js';
import { createTestDatabase, dropTestDatabase } from '../support/pg.js';

const SYSTEM_LABELS = ['concord', 'naive per-node cache', 'store on every call', 'concord + `concord-cluster/client`'];
/** Systems measured with the HTTP driver only. */
const HTTP_ONLY_LABELS = new Set(['concord + `concord-cluster/client`']);
/** Two concurrencies on SQLite; one on PostgreSQL, to keep CI inside its time. */
const CONCURRENCIES: Record<'sqlite' | 'postgres', number[]> = { sqlite: [1, 16], postgres: [16] };

async function benchOnStore(store: string, backend: 'sqlite' | 'postgres'): Promise<void> {
  const CONCURRENCY = CONCURRENCIES[backend];
  const { report, markdown, ...ran } = await runBenchReport(
    ['--tiny', '--store', store, '--concurrency', CONCURRENCY.join(',')],
    110_000,
  );
  expect(ran.stdout).toContain(markdown.trim());

  // Every throughput row, for concord and both baselines, in the table and the JSON.
  const rows = markdown.split('\n').filter((line) => /^\| (sqlite|postgres|—) \|/.test(line));
  for (const system of SYSTEM_LABELS) {
    for (const driver of ['library API', 'HTTP']) {
      if (HTTP_ONLY_LABELS.has(system) && driver !== 'HTTP') continue;
      for (const workload of ['R', 'M', 'W']) {
        for (const c of CONCURRENCY) {
          const match = rows.filter((line) => {
            const cells = line.split('|').map((cell) => cell.trim());
            return (
              // 'concord' exactly: the client's label starts with it too.
              (system === 'concord' ? cells[2] === system : cells[2]!.startsWith(system)) &&
              cells[3] === driver &&
              cells[4] === workload &&
              cells[5] === String(c)
            );
          });
          expect(match, `${system} ${driver} ${workload} C=${c}`).toHaveLength(1);
        }
      }
    }
  }
  // Three systems × two drivers, and the client's HTTP rows.
  expect(report.throughput).toHaveLength((3 * 2 + 1) * 3 * CONCURRENCY.length);
  for (const row of report.throughput) {
    expect(row.store).toBe(row.system === 'naive' ? null : backend);
    if (row.workload !== 'R') expect(row.durability).toBeTruthy();
    expect(row.cpu.length).toBeGreaterThanOrEqual(2);
  }
  // Write figures carry their durability in the table.
  expect(markdown).toContain('crash + power loss');
  expect(markdown).toContain('#### Durability of the write figures');

  // The extra figures and the targets.
  expect(report.activations).toHaveLength(2);
  expect(report.memory).toHaveLength(2);
  expect(report.failover).toHaveLength(1);
  expect(report.pauses.map((p) => p.event)).toEqual(['join', 'leave']);
  expect(report.partitions).toHaveLength(1);
  const cut = report.partitions[0]!;
  expect(cut.runs).toHaveLength(1);
  expect(cut.runs[0]!.evictedMs).toBeGreaterThan(0);
  expect(cut.runs[0]!.servedMs).toBeGreaterThanOrEqual(cut.runs[0]!.evictedMs);
  for (const figure of [
    'cut off from the others',
    'cold activations/s',
    'memory per active idle entity',
    'failover after kill -9',
    'join',
    'graceful leave',
  ]) {
    expect(markdown).toContain(figure);
  }
  expect(report.targets.length).toBeGreaterThanOrEqual(8);
  expect(markdown).toContain('| figure | target | measured | met |');
  expect(report.machine.cores).toBeGreaterThan(0);
  expect(report.command).toContain('bench --tiny');

  // Baselines ran in the same process tree: every node process is a child of the bench process.
  expect(report.benchPid).toBe(ran.pid);
  const systems = new Set(report.processes.map((p) => p.system));
  expect([...systems].sort()).toEqual(['concord', 'naive', 'store-call']);
  for (const p of report.processes) expect(p.ppid, `${p.system} ${p.name}`).toBe(ran.pid);
  const pids = new Set(report.processes.map((p) => p.pid));
  for (const row of report.throughput) for (const pid of row.pids) expect(pids.has(pid)).toBe(true);
}

describe('concord bench', () => {
  const databases: string[] = [];
  afterAll(async () => {
    for (const url of databases) await dropTestDatabase(url);
  });

  it('runs every row on SQLite', async () => {
    await benchOnStore('sqlite', 'sqlite');
  }, 120_000);

  it('runs every row on PostgreSQL', async () => {
    const url = await createTestDatabase();
    databases.push(url);
    await benchOnStore(url, 'postgres');
  }, 120_000);
});

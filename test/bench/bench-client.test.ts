/**
 * `concord bench --system concord+client` on its own (a very short run): the bench starts a
 * concord cluster for it, and the client's rows (HTTP driver only, keyed writes included) come
 * out in the table and the JSON without errors. The numbers are not asserted.
 */
import { expect, it } from 'vitest';
import { runBenchReport } from '../support/bench.js';

it('runs the concord+client rows on their own cluster', async () => {
  const { report, ...ran } = await runBenchReport(
    [
      '--tiny',
      '--store',
      'sqlite',
      '--system',
      'concord+client',
      '--driver',
      'api,http',
      '--only',
      'throughput',
      '--workload',
      'R,W,WK',
      '--concurrency',
      '4',
    ],
    50_000,
  );
  // HTTP only: no library-API rows for the client.
  expect(report.throughput.map((r) => `${r.system} ${r.driver} ${r.workload}`)).toEqual([
    'concord+client http R',
    'concord+client http W',
    'concord+client http WK',
  ]);
  for (const row of report.throughput) {
    expect(row.store).toBe('sqlite');
    expect(row.errors, JSON.stringify(row.raw.errorCodes)).toBe(0);
    expect(row.opsPerSecond).toBeGreaterThan(0);
    expect(row.cpu.map((c) => c.process)).toEqual(['n1', 'n2', 'load generator']);
    // Every call went straight to its owner: none sent blind, none answered MOVED.
    expect(row.raw.client).toMatchObject({ undirected: 0, moved: 0 });
    expect(row.raw.client!.calls).toBeGreaterThan(0);
  }
  expect(ran.stdout).toContain('| sqlite | concord + `concord-cluster/client` | HTTP | WK | 4 |');
  expect(report.processes.map((p) => p.system)).toEqual(['concord', 'concord']);
}, 60_000);

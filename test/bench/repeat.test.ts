/**
 * `concord bench --repeat N`: each throughput row measured N times on the same cluster and
 * reported as the median run with the range. The row arithmetic is checked on rows made here;
 * the command end to end on a real 2-node SQLite cluster (a --tiny run of one row).
 */
import { describe, expect, it } from 'vitest';
import { medianOfRuns } from '../../bench/throughput.js';
import type { ThroughputRow } from '../../bench/types.js';
import { runBenchReport } from '../support/bench.js';

function run(opsPerSecond: number, p99Ms: number, extra: Partial<ThroughputRow> = {}): ThroughputRow {
  return {
    store: 'sqlite',
    system: 'concord',
    driver: 'api',
    workload: 'W',
    concurrency: 64,
    opsPerSecond,
    p50Ms: p99Ms / 4,
    p90Ms: p99Ms / 2,
    p99Ms,
    maxMs: p99Ms * 3,
    errors: 0,
    cpu: [{ process: 'n1', cpuSecondsPer10k: opsPerSecond / 1e6 }],
    durability: 'crash + power loss',
    vsNaive: null,
    vsStoreCall: null,
    pids: [1, 2],
    raw: { p50: 0, p90: 0, p99: 0, max: 0, ops: opsPerSecond, errors: 0, errorCodes: {}, durationMs: 1000 },
    ...extra,
  };
}

describe('medianOfRuns', () => {
  it('returns a single run as it is, without a list of runs', () => {
    const only = run(50_000, 2);
    expect(medianOfRuns([only])).toBe(only);
  });

  it('takes the median run of an odd number, and the median of each percentile on its own', () => {
    const row = medianOfRuns([run(60_000, 1.2), run(40_000, 3.5), run(52_000, 2.9)]);
    expect(row.opsPerSecond).toBe(52_000);
    // The median run's CPU and histogram, not another run's.
    expect(row.cpu[0]!.cpuSecondsPer10k).toBe(0.052);
    expect(row.raw.ops).toBe(52_000);
    // p99s 1.2, 3.5, 2.9: their median, whichever run each came from.
    expect(row.p99Ms).toBe(2.9);
    expect(row.p50Ms).toBe(2.9 / 4);
    // max over every run.
    expect(row.maxMs).toBe(3.5 * 3);
    expect(row.runs).toEqual([60_000, 40_000, 52_000]);
  });

  it('takes the less flattering middle value of an even number: the lower ops/s, the higher p99', () => {
    const row = medianOfRuns([run(70_000, 1), run(50_000, 2), run(56_000, 1.5), run(30_000, 4)]);
    expect(row.opsPerSecond).toBe(50_000);
    // p99s 1, 1.5, 2, 4: the higher of the middle two.
    expect(row.p99Ms).toBe(2);
    expect(row.runs).toEqual([70_000, 50_000, 56_000, 30_000]);
  });

  it('adds up the errors of every run, by code', () => {
    const failing = (ops: number, errors: number, code: string) =>
      run(ops, 1, {
        errors,
        raw: { p50: 0, p90: 0, p99: 0, max: 0, ops, errors, errorCodes: { [code]: errors }, durationMs: 1000 },
      });
    const row = medianOfRuns([failing(10, 2, 'Timeout'), failing(20, 1, 'Unavailable'), failing(30, 3, 'Timeout')]);
    expect(row.errors).toBe(6);
    expect(row.raw.errorCodes).toEqual({ Timeout: 5, Unavailable: 1 });
  });

  it('refuses an empty list', () => {
    expect(() => medianOfRuns([])).toThrow(RangeError);
  });
});

describe('concord bench --repeat', () => {
  it('measures a row three times on one cluster and reports the median with the range', async () => {
    const { report, ...ran } = await runBenchReport(
      [
        '--tiny',
        '--only',
        'throughput',
        '--store',
        'sqlite',
        '--system',
        'concord',
        '--driver',
        'api',
        '--workload',
        'W',
        '--concurrency',
        '16',
        '--repeat',
        '3',
      ],
      60_000,
    );
    expect(report.throughput).toHaveLength(1);
    const row = report.throughput[0]!;
    expect(row.runs).toHaveLength(3);
    for (const ops of row.runs!) expect(ops).toBeGreaterThan(0);
    // The row's ops/s is the middle of the three runs.
    expect(row.opsPerSecond).toBe([...row.runs!].sort((a, b) => a - b)[1]);
    // Each run was measured (and logged) on its own, then the median.
    for (const n of [1, 2, 3]) expect(ran.stderr).toContain(`(run ${n}/3)`);
    expect(ran.stderr).toContain('median of 3:');
    const fmt = (n: number) => n.toLocaleString('en-US', { maximumFractionDigits: 0 });
    const range = `(median of 3: ${fmt(Math.min(...row.runs!))}–${fmt(Math.max(...row.runs!))})`;
    // In the table, in the W target and in the header.
    expect(ran.stdout).toContain(`| ${fmt(row.opsPerSecond)} ${range} |`);
    expect(ran.stdout).toMatch(/W ops\/s .*\| >= 55,000 \| [\d,]+ \(median of 3: /);
    expect(ran.stdout).toContain('each row the median of 3 runs');
  }, 70_000);
});

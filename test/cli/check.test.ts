/**
 * `concord check` on CI: for each fault kind, on one store or both, a short randomized run under
 * that fault must be judged linearizable (exit 0, report written); and the uncoordinated
 * baseline (`--ownership none`) must be caught (exit 1) — the judge has teeth.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type Backend, backends, freshStoreUrl } from '../support/cluster.js';
import { tempDir } from '../support/tmp.js';
import { runCli, startCliCluster, stopAll } from './harness.js';

/**
 * Which fault runs on which store, and for how long (s). Partition runs on both stores (its
 * availability after the detection bound is asserted on each); kill, pause and a cut store
 * on one each, to keep CI inside its time limit (`concord check --faults …` runs the
 * full matrix by hand). 9 s fits one 3 s window between two quiet spells; a partition window
 * is 7 s.
 */
const RUNS: Record<Backend, { fault: 'kill' | 'pause' | 'partition' | 'store'; seconds: number }[]> = {
  sqlite: [
    { fault: 'store', seconds: 9 },
    { fault: 'partition', seconds: 12 },
  ],
  postgres: [
    { fault: 'kill', seconds: 9 },
    { fault: 'pause', seconds: 9 },
    { fault: 'partition', seconds: 12 },
  ],
};

interface Report {
  verdict: string;
  operations: number;
  checkerMs: number;
  faults: { kind: string }[];
  availability: {
    inFaults: { share: number; operations: number };
    afterDetection: { share: number; operations: number };
    outsideFaults: { share: number };
  };
  detectionBoundMs: number;
  keys: { ok: boolean | 'unknown' }[];
}

async function check(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number | null; report: Report; stdout: string; stderr: string }> {
  const dir = tempDir('check-');
  const child = runCli(['check', '--report-dir', dir, '--keys', '6', '--clients', '8', ...args], { env });
  const { code } = await child.exited;
  const report = JSON.parse(readFileSync(join(dir, 'report.json'), 'utf8')) as Report;
  const html = readFileSync(join(dir, 'report.html'), 'utf8');
  expect(html).toContain('<html');
  return { code, report, stdout: child.stdout(), stderr: child.stderr() };
}

describe.each(backends)('concord check (%s)', (backend: Backend) => {
  it.each(RUNS[backend])(
    'a run under $fault faults is linearizable',
    async ({ fault, seconds }) => {
      const store = await freshStoreUrl(backend);
      const { code, report, stdout } = await check(['--store', store, '--seconds', String(seconds), '--faults', fault]);
      console.log(
        `[check ${backend} ${fault}] ${report.operations} ops, availability in faults ${(report.availability.inFaults.share * 100).toFixed(1)}% of ${report.availability.inFaults.operations} (after the ${report.detectionBoundMs} ms detection bound ${(report.availability.afterDetection.share * 100).toFixed(1)}% of ${report.availability.afterDetection.operations}), outside ${(report.availability.outsideFaults.share * 100).toFixed(1)}%, checker ${report.checkerMs.toFixed(0)} ms`,
      );
      expect(stdout).toContain('verdict: LINEARIZABLE');
      expect(report.verdict).toBe('linearizable');
      expect(code).toBe(0);
      expect(report.faults.length).toBeGreaterThanOrEqual(1);
      expect(report.faults.every((f) => f.kind === fault)).toBe(true);
      expect(report.operations).toBeGreaterThan(200);
      expect(report.keys.every((k) => k.ok === true)).toBe(true);
      if (fault === 'partition') {
        // Once the detection bound has passed, the connected nodes serve the cut-off node's
        // entities and the clients (routing by /readyz) no longer send to it.
        expect(report.availability.afterDetection.operations).toBeGreaterThan(100);
        expect(report.availability.afterDetection.share).toBeGreaterThanOrEqual(0.9);
      }
    },
    90_000,
  );
});

describe('concord check has teeth', () => {
  it('reports a violation for the uncoordinated baseline (--ownership none), exit 1, and keeps its files', async () => {
    const tmp = tempDir('check-tmp-');
    const { code, report, stdout, stderr } = await check(
      ['--ownership', 'none', '--seconds', '5', '--faults', 'none'],
      {
        TMPDIR: tmp,
      },
    );
    expect(report.verdict).toBe('not linearizable');
    expect(stdout).toContain('verdict: NOT LINEARIZABLE');
    expect(report.keys.some((k) => k.ok === false)).toBe(true);
    expect(code).toBe(1);
    // A failed check keeps the cluster's temporary directory, with the node logs, and says where.
    const kept = /kept the cluster's files \(store, node logs\) in (\S+)/.exec(stderr)?.[1];
    expect(kept?.startsWith(tmp)).toBe(true);
    expect(readdirSync(kept!).sort()).toEqual(expect.arrayContaining(['n1.log', 'n2.log', 'n3.log']));
  }, 60_000);

  it('checks running nodes given by --urls (no faults there), and refuses faults for them', async () => {
    const nodes = await startCliCluster({ store: await freshStoreUrl('sqlite'), nodes: 2 });
    try {
      const urls = nodes.map((n) => n.url).join(',');
      const { code, report } = await check(['--urls', urls, '--seconds', '3']);
      expect(report.verdict).toBe('linearizable');
      expect(report.faults).toEqual([]);
      expect(report.operations).toBeGreaterThan(100);
      expect(code).toBe(0);

      const refused = runCli(['check', '--urls', urls, '--faults', 'partition']);
      expect((await refused.exited).code).not.toBe(0);
      expect(refused.stderr()).toContain('with --urls use --faults none');
    } finally {
      await stopAll(nodes);
    }
  }, 60_000);

  it('refuses bad flags with a clear message and exit status', async () => {
    const child = runCli(['check', '--faults', 'meteor']);
    const { code } = await child.exited;
    expect(code).not.toBe(0);
    expect(child.stderr()).toContain('unknown fault "meteor"');
  });
});

/**
 * What `concord check` tells its user: only the faults actually injected, a run too short for its
 * fault schedule said so, operations of unknown outcome counted (not keys), percentages that are
 * not exactly 100 never shown as 100.0, every operation's status code in the report's history,
 * a legend that names what the timeline draws, and no temporary directory left behind.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { firstWindows } from '../../src/testing/check/faults.js';
import { formatPercent } from '../../src/testing/check/format.js';
import { renderHtmlReport } from '../../src/testing/check/report-html.js';
import type { CheckRunReport } from '../../src/testing/check/run.js';
import { checkHistory, formatReport, type HistoryEntry } from '../../src/testing/checker/index.js';
import { tempDir } from '../support/tmp.js';
import { runCli } from './harness.js';

describe('check output, piece by piece', () => {
  it('percentages: one decimal, never 100.0 unless exactly 100, never 0.0 unless exactly 0', () => {
    expect(formatPercent(1)).toBe('100.0');
    expect(formatPercent(0)).toBe('0.0');
    expect(formatPercent(0.5)).toBe('50.0');
    expect(formatPercent(1310 / 1311)).toBe('99.9');
    expect(formatPercent(2620 / 2621)).toBe('99.96');
    expect(formatPercent(99_999 / 100_000)).toBe('99.999');
    expect(formatPercent(1 / 5000)).toBe('0.02');
  });

  it('the fault schedule: when each kind gets its first window', () => {
    expect(firstWindows(['kill', 'partition'], 2500, { kill: 3000, partition: 7000 })).toEqual([
      { kind: 'kill', startsAtMs: 2500 },
      { kind: 'partition', startsAtMs: 8000 },
    ]);
  });

  const history: HistoryEntry[] = [
    {
      key: 'k',
      client: 1,
      op: 'write',
      value: 'a',
      invokedAt: 0,
      completedAt: 5,
      outcome: 'ok',
      status: 200,
      result: { state: 'a', version: 1 },
    },
    {
      key: 'k',
      client: 2,
      op: 'write',
      value: 'b',
      invokedAt: 6,
      completedAt: null,
      answeredAt: 3006,
      outcome: 'info',
      status: 'timeout',
    },
    { key: 'k', client: 3, op: 'read', invokedAt: 7, completedAt: null, answeredAt: 9, outcome: 'info', status: 504 },
    { key: 'k', client: 1, op: 'write', value: 'c', invokedAt: 10, completedAt: 11, outcome: 'fail', status: 503 },
    {
      key: 'j',
      client: 1,
      op: 'read',
      invokedAt: 12,
      completedAt: 13,
      outcome: 'ok',
      status: 200,
      result: { state: 'initialized', version: 0 },
    },
  ];

  it('the console counts operations of unknown outcome and calls keys without a verdict undecided', () => {
    const report = formatReport(checkHistory(history));
    expect(report).toMatch(
      /^Linearizability: OK — 2 key\(s\), 5 operation\(s\) \(2 with unknown outcome\), keys: 0 not linearizable, 0 undecided/,
    );
    expect(report).toMatch(/ k +4 ops +2 unknown outcome/);
  });

  it('report.html: status codes in the history, the legend names every colour it draws, injected faults only', () => {
    const result = checkHistory(history);
    const report = {
      verdict: 'linearizable',
      startedAt: new Date(0).toISOString(),
      options: { nodes: 3, seconds: 4, faults: ['kill', 'partition'], keys: 2, clients: 3 },
      operations: history.length,
      durationMs: 4000,
      checkerMs: 1,
      faults: [{ kind: 'kill', node: 'n2', start: 2500, end: 6000 }],
      faultsNotInjected: ['partition'],
      secondsForEveryFault: 9,
      outcomes: { ok: 2, failed: 1, unknown: 2 },
      availability: {
        inFaults: { operations: 0, succeeded: 0, share: 1 },
        afterDetection: { operations: 0, succeeded: 0, share: 1 },
        outsideFaults: { operations: 5, succeeded: 2, share: 0.4 },
        overall: { operations: 5, succeeded: 2, share: 0.4 },
      },
      detectionBoundMs: 3000,
      keys: [],
      history,
      result,
    } as unknown as CheckRunReport;
    const html = renderHtmlReport(report);
    expect(html).toContain('faults injected: kill ×1 (asked for but not injected: partition');
    expect(html).not.toMatch(/faults injected: kill, partition/);
    // Every operation's answer is in its tooltip; the timed-out write is drawn until the client gave up.
    for (const status of ['200', 'timeout', '504', '503'])
      expect(html).toMatch(new RegExp(`<title>client \\d [^<]*: ${status}`));
    expect(html).toContain('(3000.0 ms)');
    // Colours drawn = colours in the legend.
    const legend = html.slice(
      html.indexOf('<p class="legend">'),
      html.indexOf('</p>', html.indexOf('<p class="legend">')),
    );
    const legendColours = new Set([...legend.matchAll(/background:(#[0-9a-f]{6})/g)].map((m) => m[1]));
    const svg = html.slice(html.indexOf('<svg'));
    const drawn = new Set([...svg.matchAll(/fill="(#[0-9a-f]{6})"/g)].map((m) => m[1]));
    expect([...drawn].every((colour) => legendColours.has(colour))).toBe(true);
    expect(legend).toContain('503 not applied');
    expect(legend).toContain('504');
    // No operations inside fault windows: no percentage at all, not "100.0 %".
    expect(html).not.toContain('100.0 %');
  });
});

describe('concord check, a run too short for its fault schedule', () => {
  it('says so before and after, reports status codes, and leaves no temporary directory', async () => {
    const tmp = tempDir('check-tmp-');
    const reports = tempDir('check-report-');
    const check = runCli(
      [
        'check',
        '--nodes',
        '2',
        '--seconds',
        '4',
        '--faults',
        'kill,partition',
        '--keys',
        '3',
        '--clients',
        '4',
        '--report-dir',
        reports,
      ],
      { env: { TMPDIR: tmp } },
    );
    const { code } = await check.exited;
    const out = check.stdout();
    expect(code, out + check.stderr()).toBe(0);
    expect(out).toContain(
      'note: 4 s is too short for the fault schedule: partition would start at 8.0 s; --seconds 9 or more injects every kind once',
    );
    expect(out).toMatch(
      /^faults: kill ×1 \(not injected: partition — the run ended before its turn; --seconds 9 or more injects every kind\)$/m,
    );
    expect(out).toMatch(/^operations: \d+ in [\d.]+ s \(\d+ ok, \d+ definitely failed, \d+ with unknown outcome\)/m);
    expect(out).not.toMatch(/100\.0%(?! of)/);
    const report = JSON.parse(readFileSync(join(reports, 'report.json'), 'utf8')) as {
      faults: { kind: string }[];
      faultsNotInjected: string[];
      history: { status?: unknown }[];
    };
    expect(report.faults.map((f) => f.kind)).toEqual(['kill']);
    expect(report.faultsNotInjected).toEqual(['partition']);
    expect(report.history.every((e) => typeof e.status === 'number' || typeof e.status === 'string')).toBe(true);
    // The cluster's SQLite store lived in a temporary directory, gone now.
    expect(readdirSync(tmp)).toEqual([]);
  }, 60_000);
});

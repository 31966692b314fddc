import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { type Command, InvalidArgumentError, Option } from 'commander';
import { FAULT_KINDS, type FaultKind } from '../testing/check/faults.js';
import { formatPercent } from '../testing/check/format.js';
import { type Availability, type CheckRunReport, runCheck } from '../testing/check/run.js';
import { type OwnershipMode, ownershipOption, parsePositiveInt, redactUrl } from './options.js';

/**
 * `concord check`: a consistency check under injected faults. Starts a local cluster (or
 * targets running nodes with --urls), drives a randomized HTTP workload on the entity
 * routes while faults come and go, judges the history with the linearizability checker,
 * prints the verdict and writes report.json and report.html. Exit status: 0 only for a
 * history proved linearizable; 1 for a violation; 2 when the checker could not decide or
 * the run could not be made.
 */

interface CheckFlags {
  nodes: number;
  store?: string;
  seconds: number;
  faults: FaultKind[];
  keys: number;
  clients: number;
  urls?: string[];
  ownership: OwnershipMode;
  reportDir: string;
  opTimeout: number;
  keepFiles: 'on-failure' | 'always' | 'never';
}

function parseFaults(value: string): FaultKind[] {
  if (value.trim() === '' || value.trim() === 'none') return [];
  const kinds = value.split(',').map((k) => k.trim());
  for (const kind of kinds) {
    if (!(FAULT_KINDS as readonly string[]).includes(kind)) {
      throw new InvalidArgumentError(`unknown fault "${kind}"; choose from ${FAULT_KINDS.join(', ')} (or none)`);
    }
  }
  return [...new Set(kinds)] as FaultKind[];
}

function parseUrls(value: string): string[] {
  const urls = value
    .split(',')
    .map((u) => u.trim().replace(/\/+$/, ''))
    .filter((u) => u.length > 0);
  for (const url of urls) {
    if (!/^https?:\/\/[^/]+$/.test(url))
      throw new InvalidArgumentError(`"${url}" is not a node base URL (http://host:port)`);
  }
  if (urls.length === 0) throw new InvalidArgumentError('give at least one URL');
  return urls;
}

export function registerCheckCommand(program: Command): void {
  program
    .command('check')
    .description('run a consistency check against a cluster under injected faults and print a verdict')
    .addOption(new Option('--nodes <n>', 'nodes of the local cluster').argParser(parsePositiveInt).default(3))
    .addOption(
      new Option(
        '--store <url>',
        "store of the local cluster (default: a fresh SQLite file; a store used before needs its cluster's CONCORD_SECRET)",
      ),
    )
    .addOption(new Option('--seconds <s>', 'length of the workload').argParser(parsePositiveInt).default(60))
    .addOption(
      new Option('--faults <list>', `comma-separated: ${FAULT_KINDS.join(', ')}, or none`)
        .argParser(parseFaults)
        .default([...FAULT_KINDS], FAULT_KINDS.join(',')),
    )
    .addOption(new Option('--keys <n>', 'entities the workload uses').argParser(parsePositiveInt).default(10))
    .addOption(new Option('--clients <n>', 'concurrent HTTP clients').argParser(parsePositiveInt).default(16))
    .addOption(
      new Option(
        '--urls <list>',
        'comma-separated base URLs of running nodes to check instead of starting a cluster (with --faults none)',
      ).argParser(parseUrls),
    )
    .addOption(ownershipOption())
    .addOption(new Option('--report-dir <dir>', 'where report.json and report.html go').default('.concord/check'))
    .addOption(
      new Option(
        '--keep-files <when>',
        "keep the local cluster's temporary directory (its SQLite store, the node logs): on-failure prints where",
      )
        .choices(['on-failure', 'always', 'never'])
        .default('on-failure'),
    )
    .addOption(
      new Option('--op-timeout <ms>', 'client timeout of one operation (its outcome is then unknown)')
        .argParser(parsePositiveInt)
        .default(3000),
    )
    .addHelpText(
      'after',
      '\nExit status: 0 linearizable, 1 a violation was found, 2 undecided or the run failed.\n`--ownership none` runs the uncoordinated baseline, which the checker must catch.',
    )
    .action(async (flags: CheckFlags, command: Command) => {
      if (flags.nodes > 9) command.error('error: --nodes: at most 9 in a local check');
      if (flags.nodes < 2 && !flags.urls) command.error('error: --nodes: a check needs at least 2 nodes');
      // Running nodes get no faults unless asked (and then the check refuses, below).
      if (flags.urls && command.getOptionValueSource('faults') === 'default') flags.faults = [];
      if (flags.urls && flags.faults.length > 0) {
        command.error(
          'error: faults are injected only into the cluster `concord check` starts; with --urls use --faults none',
        );
      }
      if (flags.urls && flags.ownership === 'none') {
        command.error('error: --ownership applies to the cluster `concord check` starts, not to --urls');
      }
      const reportDir = resolve(flags.reportDir);
      await mkdir(reportDir, { recursive: true });
      const nodeArgs = flags.ownership === 'none' ? ['--ownership', 'none'] : [];
      let report: CheckRunReport;
      try {
        report = await runCheck({
          nodes: flags.nodes,
          store: flags.store,
          seconds: flags.seconds,
          faults: flags.faults,
          keys: flags.keys,
          clients: flags.clients,
          urls: flags.urls,
          nodeArgs,
          // A store used before remembers its cluster's secret: reuse it from the environment.
          secret: process.env['CONCORD_SECRET'] || undefined,
          reportDir,
          opTimeoutMs: flags.opTimeout,
          keepFiles: flags.keepFiles,
          log: (line) => process.stdout.write(`${line}\n`),
        });
      } catch (error) {
        process.stderr.write(`concord check: ${error instanceof Error ? error.message : String(error)}\n`);
        process.exitCode = 2;
        return;
      }
      process.stdout.write(summary(report, flags, reportDir));
      process.exitCode = report.verdict === 'linearizable' ? 0 : report.verdict === 'not linearizable' ? 1 : 2;
    });
}

function percent(a: Availability): string {
  return a.operations === 0 ? 'no operations' : `${formatPercent(a.share)}% of ${a.operations}`;
}

function summary(report: CheckRunReport, flags: CheckFlags, reportDir: string): string {
  const target = flags.urls
    ? flags.urls.join(', ')
    : `${flags.nodes} nodes on ${flags.store ? redactUrl(flags.store) : 'a fresh SQLite store'}${flags.ownership === 'none' ? ', ownership none' : ''}`;
  const byKind = new Map<string, number>();
  for (const f of report.faults) byKind.set(f.kind, (byKind.get(f.kind) ?? 0) + 1);
  const notInjected =
    report.faultsNotInjected.length === 0
      ? ''
      : ` (not injected: ${report.faultsNotInjected.join(', ')} — the run ended before its turn; --seconds ${report.secondsForEveryFault} or more injects every kind)`;
  const { ok, failed, unknown } = report.outcomes;
  const lines = [
    '',
    `verdict: ${report.verdict.toUpperCase()}`,
    `cluster: ${target}`,
    `operations: ${report.operations} in ${(report.durationMs / 1000).toFixed(1)} s (${ok} ok, ${failed} definitely failed, ${unknown} with unknown outcome), checked in ${report.checkerMs.toFixed(0)} ms`,
    `faults: ${report.faults.length === 0 ? 'none' : [...byKind].map(([k, n]) => `${k} ×${n}`).join(', ')}${notInjected}`,
    `availability (operations that succeeded): inside fault windows ${percent(report.availability.inFaults)} (after the ${(report.detectionBoundMs / 1000).toFixed(1)} s detection bound: ${percent(report.availability.afterDetection)}), outside ${percent(report.availability.outsideFaults)}`,
    `keys: ${report.keys.filter((k) => k.ok === true).length} linearizable, ${report.keys.filter((k) => k.ok === false).length} violated, ${report.keys.filter((k) => k.ok === 'unknown').length} undecided`,
    `report: ${reportDir}/report.json, ${reportDir}/report.html`,
    '',
  ];
  return lines.join('\n');
}

import { writeFileSync } from 'node:fs';
import { type Command, InvalidArgumentError, Option } from 'commander';
import type { SystemKind } from '../../bench/protocol.js';
import { renderMarkdown } from '../../bench/report.js';
import { runBench } from '../../bench/run.js';
import {
  type BenchOptions,
  DEFAULT_SECTIONS,
  type Driver,
  type Scale,
  SECTIONS,
  type Section,
  SYSTEMS,
  WORKLOADS,
  type Workload,
} from '../../bench/types.js';
import { parsePositiveInt, redactUrl } from './options.js';

/**
 * `concord bench`: concord and its two baselines (the naive per-node cache and the store on
 * every call) in one run on this machine, printed as a Markdown table (and JSON).
 */

interface BenchFlags {
  workload: Workload[];
  store: string[];
  nodes: number;
  entities: number;
  concurrency: number[];
  seconds?: number;
  warmup?: number;
  repeat: number;
  driver: Driver[];
  system: SystemKind[];
  durability: 'strict' | 'relaxed';
  quick?: boolean;
  tiny?: boolean;
  tls?: boolean;
  only?: Section[];
  scaleNodes?: number[];
  scaleLease?: number;
  json?: string;
  markdown?: string;
}

function listOf<T extends string>(allowed: readonly T[]): (value: string) => T[] {
  return (value) => {
    const items = value
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    for (const item of items) {
      if (!allowed.includes(item as T))
        throw new InvalidArgumentError(`must be a comma-separated list of ${allowed.join(', ')}`);
    }
    if (items.length === 0) throw new InvalidArgumentError('must not be empty');
    return items as T[];
  };
}

function positiveList(value: string): number[] {
  return value.split(',').map((s) => parsePositiveInt(s.trim()));
}

function seconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('must be a positive number of seconds');
  return n;
}

function storeList(value: string): string[] {
  const items = value
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const item of items) {
    if (item !== 'sqlite' && item !== 'postgres' && !/^postgres(ql)?:\/\//.test(item)) {
      throw new InvalidArgumentError(
        'must be sqlite, postgres (embedded, throwaway) or a postgres:// URL, comma-separated',
      );
    }
  }
  return items;
}

export function registerBenchCommand(program: Command): void {
  program
    .command('bench')
    .description('run the benchmark suite (concord and its baselines) and print a table')
    .addOption(
      new Option(
        '--workload <list>',
        'R (100% get), M (90% get), W (100% set), WK (W with a fresh idempotency key per set; concord only)',
      )
        .argParser(listOf(WORKLOADS))
        .default(['R', 'M', 'W'], 'R,M,W'),
    )
    .addOption(
      new Option(
        '--store <list>',
        'sqlite, postgres (a throwaway embedded server) or a postgres:// URL whose role may CREATE DATABASE',
      )
        .argParser(storeList)
        .default(['sqlite', 'postgres'], 'sqlite,postgres'),
    )
    .addOption(new Option('--nodes <n>', 'node processes per cluster').argParser(parsePositiveInt).default(2))
    .addOption(new Option('--entities <n>', 'entities the load spreads over').argParser(parsePositiveInt).default(1000))
    .addOption(
      new Option('--concurrency <list>', 'concurrent callers').argParser(positiveList).default([1, 16, 64], '1,16,64'),
    )
    .addOption(new Option('--seconds <s>', 'measured seconds per row (default 5; --quick 0.6)').argParser(seconds))
    .addOption(
      new Option('--warmup <s>', 'warm-up seconds before each row (default 1; --quick 0.3)').argParser(seconds),
    )
    .addOption(
      new Option(
        '--repeat <n>',
        'measure each throughput row n times (each with its warm-up) and report the median with the range',
      )
        .argParser(parsePositiveInt)
        .default(1),
    )
    .addOption(
      new Option('--driver <list>', 'api (library calls inside node 1), http (autocannon against all nodes)')
        .argParser(listOf(['api', 'http'] as const))
        .default(['api', 'http'], 'api,http'),
    )
    .addOption(
      new Option(
        '--system <list>',
        'concord, concord+client (concord through concord-cluster/client; HTTP rows only), store-call (store on every call), naive (`--ownership none`)',
      )
        .argParser(listOf(SYSTEMS))
        .default([...SYSTEMS], SYSTEMS.join(',')),
    )
    .addOption(
      new Option('--durability <mode>', 'strict (survives power loss) or relaxed (survives process crashes)')
        .choices(['strict', 'relaxed'])
        .default('strict'),
    )
    .addOption(
      new Option('--quick', 'a short run of every row (smaller activation and memory counts, 3 failover runs)'),
    )
    .addOption(new Option('--tiny', "an even shorter run, for the bench command's own test").hideHelp())
    .addOption(
      new Option('--only <list>', `sections to run: ${SECTIONS.join(', ')} (default: all but scale)`).argParser(
        listOf(SECTIONS),
      ),
    )
    .addOption(
      new Option(
        '--scale-nodes <list>',
        'cluster sizes of the scale section (default 8,16,32; --quick 4,8,16)',
      ).argParser(positiveList),
    )
    .addOption(
      new Option('--scale-lease <ms>', "lease ttl of the scale section's nodes (default: the node's, 1500)").argParser(
        parsePositiveInt,
      ),
    )
    .addOption(new Option('--tls', "mutual TLS 1.3 between concord's nodes (makes a throwaway CA; needs openssl)"))
    .addOption(new Option('--json <file>', 'also write the full results as JSON'))
    .addOption(new Option('--markdown <file>', 'also write the Markdown table to a file'))
    .action(async (flags: BenchFlags) => {
      const scale: Scale = flags.tiny ? 'tiny' : flags.quick ? 'quick' : 'full';
      const options: BenchOptions = {
        workloads: flags.workload,
        stores: flags.store,
        nodes: flags.nodes,
        entities: flags.entities,
        concurrency: flags.concurrency,
        seconds: flags.seconds ?? (scale === 'full' ? 5 : scale === 'quick' ? 0.6 : 0.15),
        warmupSeconds: flags.warmup ?? (scale === 'full' ? 1 : scale === 'quick' ? 0.3 : 0.1),
        repeat: flags.repeat,
        drivers: flags.driver,
        systems: flags.system,
        durability: flags.durability,
        tls: flags.tls === true,
        scale,
        sections: flags.only ?? [...DEFAULT_SECTIONS],
        ...(flags.scaleNodes ? { scaleNodes: flags.scaleNodes } : {}),
        ...(flags.scaleLease ? { scaleLeaseMs: flags.scaleLease } : {}),
        command: `concord ${process.argv.slice(2).map(redactUrl).join(' ')}`,
        log: (line) => process.stderr.write(`${line}\n`),
      };
      const report = await runBench(options);
      const markdown = renderMarkdown(report);
      process.stdout.write(`${markdown}\n`);
      if (flags.json) writeFileSync(flags.json, `${JSON.stringify(report, null, 2)}\n`);
      if (flags.markdown) writeFileSync(flags.markdown, `${markdown}\n`);
    });
}

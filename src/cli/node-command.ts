import { type Command, Option } from 'commander';
import type { Durability } from '../store/types.js';
import {
  DEFAULT_STORE,
  type OwnershipMode,
  ownershipOption,
  parsePort,
  parsePortOrZero,
  parsePositiveInt,
  resolveStore,
} from './options.js';
import { type NodeRunConfig, runNode } from './run-node.js';

/** `concord node`: start one node process (a ConcordNode and its HTTP API). */

interface NodeFlags {
  name: string;
  httpPort: number;
  clusterPort: number;
  host: string;
  advertiseHost?: string;
  store?: string;
  ownership: OwnershipMode;
  callTimeout?: number;
  leaseTtl?: number;
  durability?: Durability;
  idempotencyWindow?: number;
  app: string[];
}

export function registerNodeCommand(program: Command): void {
  program
    .command('node')
    .description('start one node process; it joins whatever cluster shares its store')
    .addOption(
      new Option('--name <name>', 'unique node name ([A-Za-z0-9_.-], up to 64)')
        .env('CONCORD_NODE_NAME')
        .makeOptionMandatory(),
    )
    .addOption(
      new Option('--http-port <port>', 'port of the HTTP API')
        .env('CONCORD_HTTP_PORT')
        .argParser(parsePort)
        .makeOptionMandatory(),
    )
    .addOption(
      new Option('--store <url>', `sqlite:PATH or postgres://… (else DATABASE_URL, else ${DEFAULT_STORE})`).env(
        'CONCORD_STORE',
      ),
    )
    .addOption(
      new Option('--cluster-port <port>', 'port of the peer transport (0: any free port)')
        .env('CONCORD_CLUSTER_PORT')
        .argParser(parsePortOrZero)
        .default(0),
    )
    .addOption(new Option('--host <host>', 'interface both ports bind to').env('CONCORD_HOST').default('127.0.0.1'))
    .addOption(
      new Option(
        '--advertise-host <host>',
        'host other nodes and clients reach this node at (default: --host, or the hostname for 0.0.0.0)',
      ).env('CONCORD_ADVERTISE_HOST'),
    )
    .addOption(ownershipOption())
    .addOption(
      new Option('--call-timeout <ms>', 'deadline of one entity call, retries included (default 5000)')
        .env('CONCORD_CALL_TIMEOUT_MS')
        .argParser(parsePositiveInt),
    )
    .addOption(
      new Option('--lease-ttl <ms>', 'membership lease; failover after a crash takes about this long (default 1500)')
        .env('CONCORD_LEASE_TTL_MS')
        .argParser(parsePositiveInt),
    )
    .addOption(
      new Option(
        '--durability <mode>',
        "'strict' (survives power loss, default) or 'relaxed' (survives process crashes)",
      )
        .choices(['strict', 'relaxed'])
        .env('CONCORD_DURABILITY'),
    )
    .addOption(
      new Option(
        '--idempotency-window <ms>',
        'how long idempotency keys are remembered at least (store clock; default 86400000, 24 h)',
      )
        .env('CONCORD_IDEMPOTENCY_WINDOW_MS')
        .argParser(parsePositiveInt),
    )
    .addOption(
      new Option(
        '--app <module>',
        'load an application module (ConcordApps and/or entity definitions); repeatable. Env: CONCORD_APPS, comma-separated',
      )
        .argParser((value: string, previous: string[] | undefined) => [...(previous ?? []), value])
        .default([] as string[], 'none'),
    )
    .addHelpText(
      'after',
      '\nEnvironment: CONCORD_SECRET (required: the cluster secret, the same on every node; never a flag, so it stays out of `ps`).\nThe node is ready when GET /readyz answers 200; SIGTERM or SIGINT stops it gracefully (its entities move to the other nodes).',
    )
    .action(async (flags: NodeFlags, command: Command) => {
      const secret = process.env['CONCORD_SECRET'];
      if (flags.ownership === 'single' && !secret) {
        command.error(
          'error: CONCORD_SECRET is not set. Every node of a cluster needs the same secret, e.g.\n  export CONCORD_SECRET=$(openssl rand -hex 24)',
        );
      }
      const config: NodeRunConfig = {
        name: flags.name,
        httpPort: flags.httpPort,
        clusterPort: flags.clusterPort,
        host: flags.host,
        advertiseHost: flags.advertiseHost,
        store: resolveStore(flags.store),
        secret: secret ?? '',
        ownership: flags.ownership,
        callTimeoutMs: flags.callTimeout,
        leaseTtlMs: flags.leaseTtl,
        durability: flags.durability,
        idempotencyWindowMs: flags.idempotencyWindow,
        appModules: flags.app.length > 0 ? flags.app : splitList(process.env['CONCORD_APPS']),
        exitWithParent: process.env['CONCORD_EXIT_WITH_PARENT'] === '1',
      };
      await runNode(config);
    });
}

function splitList(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item.length > 0);
}

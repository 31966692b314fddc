import { type Command, InvalidArgumentError, Option } from 'commander';
import { isWeakSecret, MIN_SECRET_BYTES } from '../cluster/secret-check.js';
import type { Durability } from '../store/types.js';
import type { MeshTlsOptions } from '../transport/tls.js';
import { CertsError, readPemOption } from './certs.js';
import {
  DEFAULT_STORE,
  DEMO_WEAK_SECRET_ENV,
  LOG_LEVELS,
  type OwnershipMode,
  ownershipOption,
  parseNonNegativeInt,
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
  advertisePort?: number;
  store?: string;
  ownership: OwnershipMode;
  callTimeout?: number;
  leaseTtl?: number;
  suspicionTimeout?: number;
  durability?: Durability;
  idempotencyWindow?: number;
  drainDelay?: number;
  logLevel?: string;
  demoControls?: boolean;
  httpMaxHeaderBytes?: number;
  httpHeadersTimeout?: number;
  httpRequestTimeout?: number;
  httpKeepAliveTimeout?: number;
  httpMaxConnectionsPerAddress?: number;
  trustProxy?: string;
  expose?: Record<string, true | string[]>;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
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
    .addOption(
      new Option(
        '--advertise-port <port>',
        'cluster port other nodes dial, when a port mapping or proxy sits in between (default: the bound --cluster-port)',
      )
        .env('CONCORD_ADVERTISE_PORT')
        .argParser(parsePort),
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
        '--suspicion-timeout <ms>',
        'a member unreachable this long is suspected and, once the members that reach each other agree, evicted (default: the lease ttl)',
      )
        .env('CONCORD_SUSPICION_TIMEOUT_MS')
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
    .addOption(new Option('--demo-controls', 'set by `concord demo` for its own nodes').hideHelp())
    .addOption(
      new Option('--log-level <level>', 'JSON logs on stderr from this level up (default info)')
        .choices(LOG_LEVELS)
        .env('CONCORD_LOG_LEVEL'),
    )
    .addOption(
      new Option(
        '--drain-delay <ms>',
        'on SIGTERM, keep serving on open connections this long after /readyz turned 503, so load balancers notice first (default 500)',
      )
        .env('CONCORD_DRAIN_DELAY_MS')
        .argParser(parseNonNegativeInt),
    )
    .addOption(
      new Option('--http-max-header-bytes <n>', 'largest request line + headers; larger → 431 (default 16384)')
        .env('CONCORD_HTTP_MAX_HEADER_BYTES')
        .argParser(parsePositiveInt),
    )
    .addOption(
      new Option('--http-headers-timeout <ms>', 'request headers must arrive within this; else 408 (default 10000)')
        .env('CONCORD_HTTP_HEADERS_TIMEOUT_MS')
        .argParser(parsePositiveInt),
    )
    .addOption(
      new Option('--http-request-timeout <ms>', 'a whole request must arrive within this; else 408 (default 30000)')
        .env('CONCORD_HTTP_REQUEST_TIMEOUT_MS')
        .argParser(parsePositiveInt),
    )
    .addOption(
      new Option('--http-keep-alive-timeout <ms>', 'idle keep-alive connections close after this (default 72000)')
        .env('CONCORD_HTTP_KEEP_ALIVE_TIMEOUT_MS')
        .argParser(parsePositiveInt),
    )
    .addOption(
      new Option(
        '--http-max-connections-per-address <n>',
        'open HTTP connections allowed from one client address, more are answered 429 (default 256; 0: no limit)',
      )
        .env('CONCORD_HTTP_MAX_CONNECTIONS_PER_ADDRESS')
        .argParser(parseNonNegativeInt),
    )
    .addOption(
      new Option(
        '--trust-proxy <proxies>',
        "believe X-Forwarded-For from these proxies for the client address: 'true' (any), or comma-separated addresses/CIDRs (default: none)",
      ).env('CONCORD_TRUST_PROXY'),
    )
    .addOption(
      new Option(
        '--expose <list>',
        "entity handlers outside clients may call (POST /entity-calls, concord-cluster/client) beyond those the definitions expose: comma-separated 'kind' (every handler) or 'kind/handler' (default: none)",
      )
        .env('CONCORD_EXPOSE')
        .argParser(parseExpose),
    )
    .addOption(
      new Option(
        '--tls-cert <file>',
        "this node's certificate (PEM) for mutual TLS 1.3 between nodes; with --tls-key and --tls-ca (see `concord certs`)",
      ).env('CONCORD_TLS_CERT'),
    )
    .addOption(new Option('--tls-key <file>', "the certificate's private key (PEM)").env('CONCORD_TLS_KEY'))
    .addOption(
      new Option('--tls-ca <file>', 'the cluster CA (PEM): peers must present a certificate it signed').env(
        'CONCORD_TLS_CA',
      ),
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
      '\nEnvironment: CONCORD_SECRET (required: the cluster secret, the same on every node, at least 16 bytes, e.g. `openssl rand -hex 24`; never a flag, so it stays out of `ps`).\nCONCORD_SECRET_PREVIOUS: the previous secret, only while rotating it (see the README).\nCONCORD_TLS_CERT, CONCORD_TLS_KEY, CONCORD_TLS_CA: a file path, or the PEM text itself.\nThe node is ready when GET /readyz answers 200; SIGTERM or SIGINT stops it gracefully (its entities move to the other nodes).',
    )
    .action(async (flags: NodeFlags, command: Command) => {
      const secret = process.env['CONCORD_SECRET'];
      const previousSecret = process.env['CONCORD_SECRET_PREVIOUS'] || undefined;
      const exitWithParent = process.env['CONCORD_EXIT_WITH_PARENT'] === '1';
      // Only `concord demo` sets this, for its own children (they exit with the demo).
      const allowWeakSecret = exitWithParent && process.env[DEMO_WEAK_SECRET_ENV] === '1';
      if (flags.ownership === 'single' && !secret) {
        command.error(
          'error: CONCORD_SECRET is not set. Every node of a cluster needs the same secret, e.g.\n  export CONCORD_SECRET=$(openssl rand -hex 24)',
        );
      }
      if (flags.ownership === 'single' && secret && isWeakSecret(secret) && !allowWeakSecret) {
        const bytes = Buffer.byteLength(secret, 'utf8');
        command.error(
          `error: CONCORD_SECRET is too short (${bytes} byte${bytes === 1 ? '' : 's'}; at least ${MIN_SECRET_BYTES} are required, ` +
            'since anyone who can read the store could otherwise guess it offline). Make a strong one, the same on every node:\n' +
            '  export CONCORD_SECRET=$(openssl rand -hex 24)\n' +
            'To replace the secret of a running cluster, see "Rotating the secret" in the README.',
        );
      }
      let tls: MeshTlsOptions | undefined;
      const tlsFlags = [flags.tlsCert, flags.tlsKey, flags.tlsCa];
      if (tlsFlags.some((value) => value !== undefined && value !== '')) {
        if (!tlsFlags.every((value) => value !== undefined && value !== '')) {
          command.error(
            'error: TLS needs all three of --tls-cert, --tls-key and --tls-ca (or CONCORD_TLS_CERT, CONCORD_TLS_KEY, CONCORD_TLS_CA)',
          );
        }
        try {
          tls = {
            cert: readPemOption(flags.tlsCert!, 'the TLS certificate (--tls-cert)'),
            key: readPemOption(flags.tlsKey!, 'the TLS key (--tls-key)'),
            ca: readPemOption(flags.tlsCa!, 'the TLS CA (--tls-ca)'),
          };
        } catch (error) {
          if (error instanceof CertsError) command.error(`error: ${error.message}`);
          throw error;
        }
      }
      const config: NodeRunConfig = {
        name: flags.name,
        httpPort: flags.httpPort,
        clusterPort: flags.clusterPort,
        host: flags.host,
        advertiseHost: flags.advertiseHost,
        advertisePort: flags.advertisePort,
        store: resolveStore(flags.store),
        secret: secret ?? '',
        previousSecret,
        allowWeakSecret,
        ownership: flags.ownership,
        callTimeoutMs: flags.callTimeout,
        leaseTtlMs: flags.leaseTtl,
        suspicionTimeoutMs: flags.suspicionTimeout,
        durability: flags.durability,
        idempotencyWindowMs: flags.idempotencyWindow,
        drainDelayMs: flags.drainDelay,
        logLevel: flags.logLevel,
        // Only `concord demo`'s children, which have its IPC channel, get the fault buttons.
        demoControls: flags.demoControls === true && exitWithParent,
        tls,
        httpLimits: {
          ...(flags.httpMaxHeaderBytes === undefined ? {} : { maxHeaderBytes: flags.httpMaxHeaderBytes }),
          ...(flags.httpHeadersTimeout === undefined ? {} : { headersTimeoutMs: flags.httpHeadersTimeout }),
          ...(flags.httpRequestTimeout === undefined ? {} : { requestTimeoutMs: flags.httpRequestTimeout }),
          ...(flags.httpKeepAliveTimeout === undefined ? {} : { keepAliveTimeoutMs: flags.httpKeepAliveTimeout }),
          ...(flags.httpMaxConnectionsPerAddress === undefined
            ? {}
            : { maxConnectionsPerAddress: flags.httpMaxConnectionsPerAddress }),
        },
        trustProxy: parseTrustProxy(flags.trustProxy),
        exposedEntities: flags.expose,
        appModules: flags.app.length > 0 ? flags.app : splitList(process.env['CONCORD_APPS']),
        exitWithParent,
      };
      await runNode(config);
    });
}

function parseTrustProxy(value: string | undefined): boolean | string[] | undefined {
  if (value === undefined || value.trim() === '' || value.trim() === 'false') return undefined;
  if (value.trim() === 'true') return true;
  return splitList(value);
}

/** `counter,orders/get,orders/pay` → { counter: true, orders: ['get', 'pay'] }. */
export function parseExpose(value: string): Record<string, true | string[]> {
  const exposed: Record<string, true | string[]> = {};
  for (const item of splitList(value)) {
    const slash = item.indexOf('/');
    if (slash < 0) {
      exposed[item] = true;
      continue;
    }
    const kind = item.slice(0, slash);
    const handler = item.slice(slash + 1);
    if (!kind || !handler) throw new InvalidArgumentError(`"${item}" is not kind or kind/handler`);
    const current = exposed[kind];
    if (current !== true) exposed[kind] = [...(current ?? []), handler];
  }
  return exposed;
}

function splitList(value: string | undefined): string[] {
  return (value ?? '')
    .split(',')
    .map((item) => item.trim())
    .filter((item) => item.length > 0);
}

import { InvalidArgumentError, Option } from 'commander';

/**
 * Option parsers and the options `concord node` and `concord demo` share. Every node
 * option has an environment equivalent (commander's `.env()`): the flag wins, then the
 * variable, then the default.
 */

export const DEFAULT_STORE = 'sqlite:./.concord/concord.db';

/**
 * Set by `concord demo` for its children, together with CONCORD_EXIT_WITH_PARENT: they accept
 * a short CONCORD_SECRET that the user gave the demo (with a warning). Not for anything else.
 */
export const DEMO_WEAK_SECRET_ENV = 'CONCORD_DEMO_ALLOW_WEAK_SECRET';
export const OWNERSHIP_MODES = ['single', 'none'] as const;
export type OwnershipMode = (typeof OWNERSHIP_MODES)[number];

export function parsePort(value: string): number {
  const port = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new InvalidArgumentError('must be a port number (1-65535)');
  }
  return port;
}

/** Like parsePort, but 0 (pick a free port) is allowed. */
export function parsePortOrZero(value: string): number {
  if (value.trim() === '0') return 0;
  return parsePort(value);
}

export function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 1) {
    throw new InvalidArgumentError('must be a positive whole number');
  }
  return n;
}

/** pino's levels, for --log-level / CONCORD_LOG_LEVEL. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

export function parseNonNegativeInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < 0) {
    throw new InvalidArgumentError('must be a whole number (0 or more)');
  }
  return n;
}

export function ownershipOption(): Option {
  return new Option(
    '--ownership <mode>',
    "'single' (concord: one owner per entity) or 'none' (the uncoordinated baseline: every node keeps its own in-memory copy; for teaching and benchmarks only)",
  )
    .choices(OWNERSHIP_MODES)
    .default('single')
    .env('CONCORD_OWNERSHIP');
}

/** The store a node uses: --store, else CONCORD_STORE (via commander), else DATABASE_URL, else the default. */
export function resolveStore(flagOrEnv: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  return flagOrEnv ?? env['DATABASE_URL'] ?? DEFAULT_STORE;
}

/** A store URL with its password hidden, for printing. */
export function redactUrl(url: string): string {
  return url.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
}

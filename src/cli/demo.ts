import { type ChildProcess, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isWeakSecret, MIN_SECRET_BYTES } from '../cluster/secret-check.js';
import { generateSecret } from '../runtime/node.js';
import { DEMO_WEAK_SECRET_ENV, type OwnershipMode, redactUrl } from './options.js';
import { portIsFree } from './ports.js';

/**
 * `concord demo`: spawn N `concord node` children on one store, wait until every
 * `/readyz` answers 200, print the URLs, and on Ctrl-C stop them all (SIGTERM, then
 * SIGKILL after a timeout). Children run in their own process group (Ctrl-C reaches only
 * this parent, which stops them in order) and watch their IPC channel to this process:
 * if the parent dies, even by SIGKILL, the channel closes and they stop by themselves.
 *
 * The cluster secret is CONCORD_SECRET when set (a short one is accepted, with a warning),
 * else one the demo generated for this store earlier, else a new one (see demoSecret).
 */

export interface DemoOptions {
  nodes: number;
  store: string;
  basePort: number;
  ownership: OwnershipMode;
}

const HOST = '127.0.0.1';
const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;
const CLI_PATH = fileURLToPath(new URL('./main.js', import.meta.url));
/** Per-node settings a child must not inherit from the demo's environment. */
const NODE_SPECIFIC_ENV = ['CONCORD_NODE_NAME', 'CONCORD_HTTP_PORT', 'CONCORD_CLUSTER_PORT', 'CONCORD_ADVERTISE_HOST'];

interface Child {
  name: string;
  url: string;
  process: ChildProcess;
  exited: Promise<number | null>;
  exitCode: number | null | undefined;
}

/** Runs the demo until it is stopped; resolves with the exit status. */
export async function runDemo(options: DemoOptions): Promise<number> {
  const ports = Array.from({ length: options.nodes }, (_, i) => options.basePort + i);
  const taken: number[] = [];
  for (const port of ports) if (!(await portIsFree(port, HOST))) taken.push(port);
  if (taken.length > 0) {
    process.stderr.write(
      `concord demo: port${taken.length > 1 ? 's' : ''} ${taken.join(', ')} on ${HOST} already in use; ` +
        'stop whatever uses them or pick other ports with --base-port. Nothing was started.\n',
    );
    return 1;
  }

  let secret: DemoSecret;
  try {
    secret = await demoSecret(options);
  } catch (error) {
    process.stderr.write(`concord demo: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
  if (secret.weak) {
    process.stderr.write(
      `concord demo: warning: CONCORD_SECRET is shorter than ${MIN_SECRET_BYTES} bytes. The demo's nodes accept it, ` +
        `but \`concord node\` refuses it; make a strong one with: openssl rand -hex 24\n`,
    );
  }
  const children = ports.map((port, i) => spawnChild(`node-${i + 1}`, port, secret, options));
  let stopping: Promise<number> | null = null;
  let stopRequested!: () => void;
  const stopSignal = new Promise<'stop'>((resolve) => {
    stopRequested = () => resolve('stop');
  });
  const stop = (): Promise<number> => {
    if (!stopping) {
      stopping = stopAll(children);
      stopRequested();
    }
    return stopping;
  };
  let signals = 0;
  const onSignal = () => {
    signals++;
    if (signals === 1) {
      process.stdout.write(`\nstopping ${children.length} nodes…\n`);
      void stop();
    } else {
      // A second Ctrl-C: do not wait for graceful handoffs.
      for (const child of children) child.process.kill('SIGKILL');
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const started = await waitAllReady(children, () => stopping !== null);
  if (stopping) return stopping;
  if (!started.ok) {
    process.stderr.write(`concord demo: ${started.reason}; stopping the others.\n`);
    await stop();
    return 1;
  }

  printBanner(children, options, secret);
  // A child that dies on its own takes the demo down: a partial demo would mislead.
  const died = Promise.race(children.map((c) => c.exited.then(() => c)));
  const outcome = await Promise.race([died, stopSignal]);
  if (outcome === 'stop' || stopping) return stop();
  process.stderr.write(`concord demo: ${outcome.name} exited (code ${outcome.exitCode}); stopping the others.\n`);
  await stop();
  return 1;
}

interface DemoSecret {
  secret: string;
  /** Shorter than MIN_SECRET_BYTES (only a secret the user gave can be). */
  weak: boolean;
  /** Where a generated secret is kept, for later demos on the same store; null when the user gave it. */
  file: string | null;
}

/**
 * The demo's cluster secret: CONCORD_SECRET when the user set it (even a short one), else the
 * one a demo generated earlier for this store (the store remembers its cluster's secret, so a
 * new one would be refused), else a new strong one, kept in a file readable by the user only:
 * next to a SQLite store (`PATH.secret`), or under ./.concord/ for another store.
 */
async function demoSecret(options: DemoOptions): Promise<DemoSecret> {
  if (options.ownership === 'none') return { secret: generateSecret(), weak: false, file: null }; // nothing shared
  const given = process.env['CONCORD_SECRET'];
  if (given) return { secret: given, weak: isWeakSecret(given), file: null };
  const file = options.store.startsWith('sqlite:')
    ? `${resolve(options.store.slice('sqlite:'.length))}.secret`
    : resolve('.concord', `demo-${createHash('sha256').update(options.store).digest('hex').slice(0, 16)}.secret`);
  try {
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, `${generateSecret()}\n`, { flag: 'wx', mode: 0o600 });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new Error(`could not keep the demo's secret in ${file}: ${(error as Error).message}`);
    }
  }
  const secret = (await readFile(file, 'utf8')).trim();
  if (secret === '') throw new Error(`${file} is empty; delete it to have a new secret generated`);
  return { secret, weak: isWeakSecret(secret), file };
}

function spawnChild(name: string, port: number, secret: DemoSecret, options: DemoOptions): Child {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const key of NODE_SPECIFIC_ENV) delete env[key];
  delete env[DEMO_WEAK_SECRET_ENV];
  Object.assign(env, {
    CONCORD_SECRET: secret.secret,
    CONCORD_EXIT_WITH_PARENT: '1',
    CONCORD_LOG_LEVEL: process.env['CONCORD_LOG_LEVEL'] ?? 'warn',
    ...(secret.weak ? { [DEMO_WEAK_SECRET_ENV]: '1' } : {}),
  });
  const args = [CLI_PATH, 'node', '--name', name, '--http-port', String(port), '--host', HOST];
  args.push('--store', options.store, '--ownership', options.ownership, '--cluster-port', '0');
  const child = spawn(process.execPath, args, {
    env,
    // stdout: the demo prints its own summary; stderr: the nodes' warnings go to the terminal.
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    detached: true,
  });
  const entry: Child = {
    name,
    url: `http://${HOST}:${port}`,
    process: child,
    exitCode: undefined,
    exited: new Promise((resolve) => {
      child.once('exit', (code) => {
        entry.exitCode = code;
        resolve(code);
      });
      child.once('error', () => {
        entry.exitCode = null;
        resolve(null);
      });
    }),
  };
  return entry;
}

async function waitAllReady(
  children: Child[],
  stopped: () => boolean,
): Promise<{ ok: true } | { ok: false; reason: string }> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  const pending = new Set(children);
  while (pending.size > 0) {
    if (stopped()) return { ok: false, reason: 'stopped' };
    for (const child of pending) {
      if (child.exitCode !== undefined) return { ok: false, reason: `${child.name} exited before it was ready` };
      if (await isReady(child.url)) pending.delete(child);
    }
    if (Date.now() > deadline) {
      return {
        ok: false,
        reason: `${[...pending].map((c) => c.name).join(', ')} not ready after ${READY_TIMEOUT_MS} ms`,
      };
    }
    if (pending.size > 0) await sleep(100);
  }
  return { ok: true };
}

async function isReady(url: string): Promise<boolean> {
  try {
    const response = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(1000) });
    await response.arrayBuffer();
    return response.status === 200;
  } catch {
    return false;
  }
}

function printBanner(children: Child[], options: DemoOptions, secret: DemoSecret): void {
  const first = children[0]!;
  const lines = [
    `concord demo: ${children.length} nodes ready (store ${options.ownership === 'none' ? 'none: ownership none, nodes will DISAGREE' : redactUrl(options.store)})`,
    ...children.map((c) => `  ${c.name}  ${c.url}  (pid ${c.process.pid})`),
    ...(options.ownership === 'single' && secret.file !== null
      ? [
          `cluster secret: kept in ${relativeToCwd(secret.file)} (CONCORD_SECRET=$(cat ${relativeToCwd(secret.file)}) to add a node)`,
        ]
      : []),
    `dashboard: ${first.url}/`,
    'try:',
    `  curl ${first.url}/entities/entity_1`,
    `  curl -X PUT -H 'content-type: application/json' -d '{"state":"working"}' ${first.url}/entities/entity_1`,
    `  curl ${(children[1] ?? first).url}/entities/entity_1`,
    'Ctrl-C stops every node.',
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

/** SIGTERM every child, wait, SIGKILL the ones still running after the timeout. */
async function stopAll(children: Child[]): Promise<number> {
  const running = children.filter((c) => c.exitCode === undefined);
  for (const child of running) child.process.kill('SIGTERM');
  const timer = setTimeout(() => {
    for (const child of children) if (child.exitCode === undefined) child.process.kill('SIGKILL');
  }, STOP_TIMEOUT_MS);
  const codes = await Promise.all(running.map((c) => c.exited));
  clearTimeout(timer);
  const clean = codes.every((code) => code === 0);
  process.stdout.write(clean ? 'all nodes stopped.\n' : `nodes stopped (exit codes ${codes.join(', ')}).\n`);
  return clean ? 0 : 1;
}

function relativeToCwd(file: string): string {
  const rel = relative(process.cwd(), file);
  return rel.startsWith('..') || isAbsolute(rel) ? file : `./${rel}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
